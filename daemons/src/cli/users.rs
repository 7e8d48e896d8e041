//! `teamtalk user …` and `teamtalk dept …`: the directory, on the store.
//!
//! They open the same SQLite database the db_proxy_server uses. SQLite in
//! WAL mode lets them write while the system runs; a busy database is
//! waited on, not failed. A running db_proxy sees every change at the next
//! login: a changed password or a disabled user is refused at once, though
//! db_proxy remembers verified logins (its credential cache checks the
//! stored credential's stamp on every hit, `crate::db_proxy::credcache`).
//!
//! Where the store is: `--data-dir`, else `$TEAMTALK_DATA_DIR`, else
//! `./teamtalk-data`, for every command ([`super::default_data_dir`]). Each
//! command logs the database file it opened. None of them creates a store
//! unless asked (`--create` on `user add`, `user seed` and `dept add`): a
//! user added to a new empty store beside the real one would never log in.
//! Listings open the store read-only, so they work on a store this process
//! may not write.
//!
//! The operations themselves live in [`crate::store::directory`], where
//! the admin API calls them too; this module adds [`open`] (the data
//! directory and its access) and the command's output.

use std::io::Write;
use std::path::Path;

use tracing::info;

use crate::password::HashParams;
use crate::store::directory::{self, DirectoryError};
use crate::store::{OpenMode, SqliteStore, Store, StoreError, StoreOptions};

/// What went wrong with a directory command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersError {
    /// The operation refused or the store failed.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl From<StoreError> for UsersError {
    fn from(e: StoreError) -> Self {
        Self::Directory(e.into())
    }
}

/// How a command uses the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Reads only: opened read-only.
    Read,
    /// Writes to an existing store.
    Write,
    /// Writes, creating the store when there is none (`--create`).
    Create,
}

/// Opens the store in `data_dir` for `access` and logs the database file
/// (made absolute, so a relative `--data-dir` says where it really is).
///
/// # Errors
/// [`StoreError::NoStore`] when there is none and `access` does not
/// create one; [`StoreError::NotADirectory`],
/// [`StoreError::PermissionDenied`] and database failures.
pub fn open(data_dir: &Path, access: Access) -> Result<SqliteStore, StoreError> {
    open_with(data_dir, access, HashParams::RECOMMENDED)
}

/// As [`open`], hashing the passwords it sets at `hash_params`' cost.
///
/// # Errors
/// As [`open`].
pub fn open_with(
    data_dir: &Path,
    access: Access,
    hash_params: HashParams,
) -> Result<SqliteStore, StoreError> {
    let mode = match access {
        Access::Read => OpenMode::ReadOnly,
        Access::Write => OpenMode::Existing,
        Access::Create => OpenMode::Create,
    };
    let options = StoreOptions {
        hash_params,
        ..StoreOptions::default()
    };
    let store = SqliteStore::open_mode(data_dir, options, mode)?;
    if let Some(path) = store.path() {
        let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let access = match access {
            Access::Read => "read-only",
            Access::Write | Access::Create => "read-write",
        };
        info!(path = %shown.display(), access, "store");
    }
    Ok(store)
}

/// Writes the directory as a table: id, name, nick, department, state
/// (disabled users included).
///
/// # Errors
/// Store or output errors.
pub fn print_users(store: &dyn Store, out: &mut dyn Write) -> Result<usize, UsersError> {
    let users = store.all_users()?;
    writeln!(
        out,
        "{:>8}  {:<24} {:<24} {:>6}  state",
        "id", "name", "nick", "dept"
    )?;
    for u in &users {
        let state = if directory::is_disabled(u) {
            "disabled"
        } else {
            "active"
        };
        writeln!(
            out,
            "{:>8}  {:<24} {:<24} {:>6}  {state}",
            u.id, u.name, u.nick, u.dept_id
        )?;
    }
    Ok(users.len())
}

/// Writes the departments (deleted ones left out) as a table: id, name,
/// parent.
///
/// # Errors
/// Store or output errors.
pub fn print_depts(store: &dyn Store, out: &mut dyn Write) -> Result<usize, UsersError> {
    let all = directory::departments(store)?;
    writeln!(out, "{:>8}  {:<24} {:>8}", "id", "name", "parent")?;
    for d in &all {
        writeln!(out, "{:>8}  {:<24} {:>8}", d.id, d.name, d.parent_id)?;
    }
    Ok(all.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::md5_hex;
    use crate::store::directory::{add_dept, add_user, seed_users, set_disabled};

    #[test]
    fn users_and_departments_round_trip_through_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), Access::Create).unwrap();
        let dept = add_dept(&store, "engineering", None).unwrap();
        let id = add_user(&store, "alice", "pw", Some("Alice"), Some("engineering")).unwrap();
        assert_eq!(seed_users(&store, "load", 3, "pw", false).unwrap().len(), 3);
        assert_eq!(seed_users(&store, "fast", 2, "pw", true).unwrap().len(), 2);
        set_disabled(&store, "load2", true).unwrap();
        drop(store);
        let store = open(dir.path(), Access::Read).unwrap();
        let mut out = Vec::new();
        assert_eq!(print_users(&store, &mut out).unwrap(), 6);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("alice") && text.contains("Alice") && text.contains("load3"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.contains("load2") && l.ends_with("disabled")),
            "{text}"
        );
        let alice = store
            .verify_login("alice", &md5_hex(b"pw"))
            .unwrap()
            .unwrap();
        assert_eq!((alice.id, alice.dept_id), (id, dept));
        let mut out = Vec::new();
        assert_eq!(print_depts(&store, &mut out).unwrap(), 1);
        assert!(String::from_utf8(out).unwrap().contains("engineering"));
    }

    #[test]
    fn commands_do_not_create_a_store_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("teamtalk-data");
        for access in [Access::Read, Access::Write] {
            let e = open(&data, access).unwrap_err();
            let text = e.to_string();
            assert!(text.contains("no store at"), "{text}");
            assert!(text.contains(&data.display().to_string()), "{text}");
        }
        assert!(!data.exists());
        open(&data, Access::Create).unwrap();
        open(&data, Access::Write).expect("exists now");
        open(&data, Access::Read).expect("exists now");

        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        for access in [Access::Read, Access::Write, Access::Create] {
            let text = open(&file, access).unwrap_err().to_string();
            assert!(text.contains("not a directory"), "{text}");
        }
    }
}
