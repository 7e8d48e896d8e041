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
//! The operations take any [`Store`] (as `super::groups` does), so the
//! admin API can call them; the `print_*` functions and [`open`] add the
//! command's output and the data directory.

use std::io::Write;
use std::path::Path;

use tracing::info;

use crate::password::md5_hex;
use crate::rules::sizing::MAX_CREDENTIAL_LEN;
use crate::store::{
    DeptId, NewUser, OpenMode, SqliteStore, Store, StoreError, StoreOptions, USER_STATUS_DEPARTED,
    User, UserId,
};

/// What went wrong with a directory command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersError {
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `--dept` names no department.
    #[error("no department {0:?} (see `teamtalk dept list`; add one with `teamtalk dept add`)")]
    NoSuchDept(String),
    /// No user by this name or id.
    #[error("no user {0:?} (see `teamtalk user list`)")]
    NoSuchUser(String),
    /// A user name that clients could not type or servers would refuse.
    #[error("user name {name:?} refused: {why}")]
    BadName {
        /// The name as given.
        name: String,
        /// Why.
        why: &'static str,
    },
    /// Another value the command refuses.
    #[error("{0}")]
    Invalid(&'static str),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
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
    let mode = match access {
        Access::Read => OpenMode::ReadOnly,
        Access::Write => OpenMode::Existing,
        Access::Create => OpenMode::Create,
    };
    let store = SqliteStore::open_mode(data_dir, StoreOptions::default(), mode)?;
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

/// Checks a new user's login name: not empty, no spaces or control
/// characters (a client's login box cannot carry them, and a name that
/// looks like another in a listing misleads), at most
/// [`MAX_CREDENTIAL_LEN`] bytes (db_proxy refuses longer ones).
///
/// # Errors
/// [`UsersError::BadName`] saying why.
pub fn check_name(name: &str) -> Result<(), UsersError> {
    let bad = |why| {
        Err(UsersError::BadName {
            name: name.to_owned(),
            why,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_CREDENTIAL_LEN {
        return bad("longer than 256 bytes");
    }
    if name.chars().any(char::is_whitespace) {
        return bad("contains a space");
    }
    if name.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    Ok(())
}

/// Checks a password given in plain text: not empty.
///
/// # Errors
/// [`UsersError::Invalid`].
pub fn check_password(password: &str) -> Result<(), UsersError> {
    if password.is_empty() {
        return Err(UsersError::Invalid("the password is empty"));
    }
    Ok(())
}

/// Resolves `--dept`: a department name, or an id that exists; `None`
/// means 0 (no department).
///
/// # Errors
/// [`UsersError::NoSuchDept`].
pub fn dept_id(store: &dyn Store, dept: Option<&str>) -> Result<DeptId, UsersError> {
    let Some(dept) = dept else { return Ok(0) };
    let all = store.departments_updated_since(0)?;
    all.iter()
        .find(|d| d.name == dept)
        .or_else(|| {
            dept.parse::<DeptId>()
                .ok()
                .and_then(|id| all.iter().find(|d| d.id == id))
        })
        .map(|d| d.id)
        .ok_or_else(|| UsersError::NoSuchDept(dept.to_owned()))
}

/// A user named by login name, or else by id.
///
/// # Errors
/// [`UsersError::NoSuchUser`].
pub fn find_user(store: &dyn Store, who: &str) -> Result<User, UsersError> {
    if let Some(u) = store.user_by_name(who)? {
        return Ok(u);
    }
    who.parse::<UserId>()
        .ok()
        .and_then(|id| store.users_by_ids(&[id]).ok()?.into_iter().next())
        .ok_or_else(|| UsersError::NoSuchUser(who.to_owned()))
}

/// Adds one user; returns its id. The password is given in plain text and
/// stored as an Argon2id hash of its md5hex (what clients send).
///
/// # Errors
/// [`UsersError`] for a refused name or password, an unknown department,
/// and store failures (e.g. the name is taken).
pub fn add_user(
    store: &dyn Store,
    name: &str,
    password: &str,
    nick: Option<&str>,
    dept: Option<&str>,
) -> Result<UserId, UsersError> {
    check_name(name)?;
    check_password(password)?;
    if nick.is_some_and(|n| n.chars().any(char::is_control)) {
        return Err(UsersError::Invalid("the nick contains a control character"));
    }
    let user = NewUser {
        name: name.to_owned(),
        nick: nick.unwrap_or(name).to_owned(),
        dept_id: dept_id(store, dept)?,
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
    store: &dyn Store,
    prefix: &str,
    count: u32,
    password: &str,
    teamtalk_form: bool,
) -> Result<Vec<UserId>, UsersError> {
    check_name(prefix)?;
    check_password(password)?;
    let md5 = md5_hex(password.as_bytes());
    Ok(if teamtalk_form {
        store.seed_teamtalk_users(prefix, count, &md5)?
    } else {
        store.seed_users(prefix, count, &md5)?
    })
}

/// Sets a user's password; returns the user.
///
/// # Errors
/// [`UsersError::NoSuchUser`], an empty password, store failures.
pub fn set_password(store: &dyn Store, who: &str, password: &str) -> Result<User, UsersError> {
    check_password(password)?;
    let user = find_user(store, who)?;
    if !store.set_password(user.id, &md5_hex(password.as_bytes()))? {
        return Err(UsersError::NoSuchUser(who.to_owned()));
    }
    Ok(user)
}

/// Disables (`on`) or enables a user's login; returns the user as it was.
/// Disabled is TeamTalk's "departed" status: the login is refused and the
/// user leaves the full directory clients download.
///
/// # Errors
/// [`UsersError::NoSuchUser`], store failures.
pub fn set_disabled(store: &dyn Store, who: &str, on: bool) -> Result<User, UsersError> {
    let user = find_user(store, who)?;
    let status = if on { USER_STATUS_DEPARTED } else { 0 };
    if !store.set_user_status(user.id, status)? {
        return Err(UsersError::NoSuchUser(who.to_owned()));
    }
    Ok(user)
}

/// Deletes a user; returns the user as it was.
///
/// # Errors
/// [`UsersError::NoSuchUser`], store failures.
pub fn delete_user(store: &dyn Store, who: &str) -> Result<User, UsersError> {
    let user = find_user(store, who)?;
    if !store.delete_user(user.id)? {
        return Err(UsersError::NoSuchUser(who.to_owned()));
    }
    Ok(user)
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
        "{:>8}  {:<24} {:<24} {:>6}  {}",
        "id", "name", "nick", "dept", "state"
    )?;
    for u in &users {
        let state = if u.status == USER_STATUS_DEPARTED {
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

/// Adds a department; returns its id.
///
/// # Errors
/// An empty name or one with control characters, a parent that does not
/// exist, a name taken, store failures.
pub fn add_dept(store: &dyn Store, name: &str, parent: DeptId) -> Result<DeptId, UsersError> {
    if name.trim().is_empty() {
        return Err(UsersError::Invalid("the department name is empty"));
    }
    if name.chars().any(char::is_control) {
        return Err(UsersError::Invalid(
            "the department name contains a control character",
        ));
    }
    if parent != 0
        && !store
            .departments_updated_since(0)?
            .iter()
            .any(|d| d.id == parent)
    {
        return Err(UsersError::NoSuchDept(parent.to_string()));
    }
    Ok(store.add_department(name, 0, parent)?)
}

/// Writes the departments as a table: id, name, parent.
///
/// # Errors
/// Store or output errors.
pub fn print_depts(store: &dyn Store, out: &mut dyn Write) -> Result<usize, UsersError> {
    let all = store.departments_updated_since(0)?;
    writeln!(out, "{:>8}  {:<24} {:>8}", "id", "name", "parent")?;
    for d in &all {
        writeln!(out, "{:>8}  {:<24} {:>8}", d.id, d.name, d.parent_id)?;
    }
    Ok(all.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(dir: &Path) -> SqliteStore {
        open(dir, Access::Create).unwrap()
    }

    #[test]
    fn users_and_departments_round_trip_through_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let store = created(dir.path());
        let dept = add_dept(&store, "engineering", 0).unwrap();
        let id = add_user(&store, "alice", "pw", Some("Alice"), Some("engineering")).unwrap();
        let ids = seed_users(&store, "load", 3, "pw", false).unwrap();
        assert_eq!(ids.len(), 3);
        let fast = seed_users(&store, "fast", 2, "pw", true).unwrap();
        assert_eq!(fast.len(), 2);
        drop(store);
        let store = open(dir.path(), Access::Read).unwrap();
        let mut out = Vec::new();
        assert_eq!(print_users(&store, &mut out).unwrap(), 6);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("alice") && text.contains("Alice") && text.contains("load3"),
            "{text}"
        );
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
        let mut out = Vec::new();
        assert_eq!(print_depts(&store, &mut out).unwrap(), 1);
        assert!(String::from_utf8(out).unwrap().contains("engineering"));
    }

    #[test]
    fn bad_names_passwords_and_departments_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = created(dir.path());
        let dept = add_dept(&store, "sales", 0).unwrap();
        for (name, why) in [
            ("", "empty"),
            ("al ice", "space"),
            ("tab\there", "space"),
            ("bell\u{7}", "control"),
            ("nbsp\u{a0}x", "space"),
        ] {
            let e = add_user(&store, name, "pw", None, None).unwrap_err();
            assert!(matches!(e, UsersError::BadName { .. }), "{name:?}: {e}");
            assert!(e.to_string().contains(why), "{name:?}: {e}");
        }
        let long = "x".repeat(MAX_CREDENTIAL_LEN + 1);
        assert!(add_user(&store, &long, "pw", None, None).is_err());
        let e = add_user(&store, "bob", "", None, None).unwrap_err();
        assert!(e.to_string().contains("password is empty"), "{e}");
        for unknown in ["nowhere", "99"] {
            let e = add_user(&store, "bob", "pw", None, Some(unknown)).unwrap_err();
            assert!(matches!(e, UsersError::NoSuchDept(_)), "{unknown}: {e}");
        }
        assert!(add_user(&store, "bob", "pw", None, Some("sales")).is_ok());
        let by_id = add_user(&store, "carol", "pw", None, Some(&dept.to_string())).unwrap();
        assert_eq!(store.users_by_ids(&[by_id]).unwrap()[0].dept_id, dept);
        assert!(store.all_users().unwrap().len() == 2, "nothing else added");

        let e = add_dept(&store, "sales", 0).unwrap_err();
        assert!(e.to_string().contains("already taken"), "{e}");
        assert!(add_dept(&store, " ", 0).is_err());
        assert!(matches!(
            add_dept(&store, "sub", 42),
            Err(UsersError::NoSuchDept(_))
        ));
        assert!(add_dept(&store, "sub", dept).is_ok());
        assert!(seed_users(&store, "a b", 2, "pw", false).is_err());
    }

    #[test]
    fn passwd_disable_enable_and_del_by_name_or_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = created(dir.path());
        let id = add_user(&store, "alice", "old", None, None).unwrap();
        add_user(&store, "bob", "pw", None, None).unwrap();
        let ok = |pw: &str| {
            store
                .verify_login("alice", &md5_hex(pw.as_bytes()))
                .unwrap()
        };

        assert_eq!(set_password(&store, "alice", "new").unwrap().id, id);
        assert!(ok("old").is_none());
        assert!(ok("new").is_some());
        assert!(set_password(&store, "alice", "").is_err());
        set_password(&store, &id.to_string(), "newer").unwrap();
        assert!(ok("newer").is_some());

        set_disabled(&store, "alice", true).unwrap();
        assert!(ok("newer").is_none());
        let mut out = Vec::new();
        print_users(&store, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.lines()
                .any(|l| l.contains("alice") && l.ends_with("disabled")),
            "{text}"
        );
        set_disabled(&store, "alice", false).unwrap();
        assert!(ok("newer").is_some());

        assert_eq!(delete_user(&store, "alice").unwrap().id, id);
        assert!(ok("newer").is_none());
        for gone in ["alice", "12345"] {
            assert!(matches!(
                delete_user(&store, gone),
                Err(UsersError::NoSuchUser(_))
            ));
            assert!(set_password(&store, gone, "x").is_err());
            assert!(set_disabled(&store, gone, true).is_err());
        }
        assert_eq!(store.all_users().unwrap().len(), 1);
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
