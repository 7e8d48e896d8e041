//! `teamtalk user …` and `teamtalk dept …`: the directory, on the store.
//!
//! They open the same SQLite database the db_proxy_server uses. SQLite in
//! WAL mode lets them write while the system runs; a busy database is
//! waited on, not failed.

use std::io::Write;
use std::path::Path;

use crate::password::md5_hex;
use crate::store::{NewUser, SqliteStore, Store, StoreError};

/// What went wrong with a directory command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersError {
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `--dept` names no department.
    #[error("no department named {0:?} (see `teamtalk dept add`)")]
    NoSuchDept(String),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// Resolves `--dept`: a department id or a name; `None` means 0 (no department).
fn dept_id(store: &dyn Store, dept: Option<&str>) -> Result<u32, UsersError> {
    let Some(dept) = dept else { return Ok(0) };
    if let Ok(id) = dept.parse::<u32>() {
        return Ok(id);
    }
    store
        .departments_updated_since(0)?
        .into_iter()
        .find(|d| d.name == dept)
        .map(|d| d.id)
        .ok_or_else(|| UsersError::NoSuchDept(dept.to_owned()))
}

/// Adds one user; returns its id. The password is given in plain text and
/// stored as an Argon2id hash of its md5hex (what clients send).
///
/// # Errors
/// [`UsersError`] for store failures (e.g. the name is taken) and unknown
/// departments.
pub fn add_user(
    data_dir: &Path,
    name: &str,
    password: &str,
    nick: Option<&str>,
    dept: Option<&str>,
) -> Result<u32, UsersError> {
    let store = SqliteStore::open(data_dir)?;
    let user = NewUser {
        name: name.to_owned(),
        nick: nick.unwrap_or(name).to_owned(),
        dept_id: dept_id(&store, dept)?,
        ..NewUser::default()
    };
    Ok(store.add_user(&user, &md5_hex(password.as_bytes()))?)
}

/// Adds `count` users named `<prefix><n>` (n from 1) in one transaction,
/// for load tests; returns their ids. `teamtalk_form` stores TeamTalk's
/// salted-MD5 form instead of Argon2id, so that logging in as thousands of
/// distinct users measures the servers rather than the password hash.
///
/// # Errors
/// As [`add_user`].
pub fn seed_users(
    data_dir: &Path,
    prefix: &str,
    count: u32,
    password: &str,
    teamtalk_form: bool,
) -> Result<Vec<u32>, UsersError> {
    seed_users_in(
        &SqliteStore::open(data_dir)?,
        prefix,
        count,
        password,
        teamtalk_form,
    )
}

/// [`seed_users`] into any store.
///
/// # Errors
/// Store errors, a name taken.
pub fn seed_users_in(
    store: &dyn Store,
    prefix: &str,
    count: u32,
    password: &str,
    teamtalk_form: bool,
) -> Result<Vec<u32>, UsersError> {
    let md5 = md5_hex(password.as_bytes());
    Ok(if teamtalk_form {
        store.seed_teamtalk_users(prefix, count, &md5)?
    } else {
        store.seed_users(prefix, count, &md5)?
    })
}

/// Writes the directory as a table: id, name, nick, department.
///
/// # Errors
/// Store or output errors.
pub fn list_users(data_dir: &Path, out: &mut dyn Write) -> Result<usize, UsersError> {
    let store = SqliteStore::open(data_dir)?;
    let users = store.users_updated_since(0)?;
    writeln!(
        out,
        "{:>8}  {:<24} {:<24} {:>6}",
        "id", "name", "nick", "dept"
    )?;
    for u in &users {
        writeln!(
            out,
            "{:>8}  {:<24} {:<24} {:>6}",
            u.id, u.name, u.nick, u.dept_id
        )?;
    }
    Ok(users.len())
}

/// Adds a department; returns its id.
///
/// # Errors
/// Store errors.
pub fn add_dept(data_dir: &Path, name: &str, parent: u32) -> Result<u32, UsersError> {
    let store = SqliteStore::open(data_dir)?;
    Ok(store.add_department(name, 0, parent)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_departments_round_trip_through_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let dept = add_dept(dir.path(), "engineering", 0).unwrap();
        let id = add_user(
            dir.path(),
            "alice",
            "pw",
            Some("Alice"),
            Some("engineering"),
        )
        .unwrap();
        let ids = seed_users(dir.path(), "load", 3, "pw", false).unwrap();
        assert_eq!(ids.len(), 3);
        let fast = seed_users(dir.path(), "fast", 2, "pw", true).unwrap();
        assert_eq!(fast.len(), 2);
        let mut out = Vec::new();
        assert_eq!(list_users(dir.path(), &mut out).unwrap(), 6);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("alice") && text.contains("Alice") && text.contains("load3"),
            "{text}"
        );
        let store = SqliteStore::open(dir.path()).unwrap();
        let alice = store
            .verify_login("alice", &md5_hex(b"pw"))
            .unwrap()
            .unwrap();
        assert_eq!((alice.id, alice.dept_id), (id, dept));
        for name in ["load2", "fast2"] {
            let u = store.verify_login(name, &md5_hex(b"pw")).unwrap();
            assert_eq!(u.map(|u| u.name), Some(name.to_owned()), "{name} logs in");
            assert!(store.verify_login(name, &md5_hex(b"no")).unwrap().is_none());
        }
        assert!(matches!(
            add_user(dir.path(), "bob", "pw", None, Some("nowhere")),
            Err(UsersError::NoSuchDept(_))
        ));
    }
}
