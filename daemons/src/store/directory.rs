//! The directory's administration: users and departments as an operator
//! changes them, over any [`Store`].
//!
//! These are the operations behind `teamtalk user …` / `teamtalk dept …`,
//! kept apart from the command's printing so that an HTTP admin handler
//! can call them as they are. Each checks what it is given first (a name
//! clients can type, a password, a nick and department name TeamTalk's
//! own schema can hold), then names users by login name or id and
//! departments by name or id, and returns the record it acted on so the
//! caller can say which.
//!
//! A running db_proxy sees every change at the next login: its credential
//! cache checks the stored credential's stamp on every hit
//! (`crate::db_proxy::credcache`), so a changed password or a disabled user
//! is refused at once, even from another process.

use super::{
    DEPT_STATUS_DELETED, Department, DeptId, NewUser, Store, StoreError, USER_STATUS_DEPARTED,
    User, UserId,
};
use crate::password::md5_hex;
use crate::rules::sizing::MAX_CREDENTIAL_LEN;

/// Longest nick, in characters: TeamTalk's `IMUser.nick` is `varchar(32)`,
/// so a directory made here can be moved to TeamTalk's database.
pub const MAX_NICK_CHARS: usize = 32;
/// Longest department name, in characters (`IMDepart.departName` is
/// `varchar(64)`).
pub const MAX_DEPT_NAME_CHARS: usize = 64;

/// What a directory operation refused, or the store's failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No department by this name or id.
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
    /// Another value refused (password, nick, department name).
    #[error("{0}")]
    Invalid(String),
}

impl DirectoryError {
    /// Whether the request is at fault (an HTTP 4xx), not the store.
    #[must_use]
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Store(e) => e.is_refusal(),
            _ => true,
        }
    }
}

/// Result of a directory operation.
pub type DirectoryResult<T> = Result<T, DirectoryError>;

/// Checks a new user's login name: not empty, no spaces or control
/// characters (a client's login box cannot carry them, and a name that
/// looks like another in a listing misleads), at most
/// [`MAX_CREDENTIAL_LEN`] bytes (db_proxy refuses longer ones).
///
/// # Errors
/// [`DirectoryError::BadName`] saying why.
pub fn check_name(name: &str) -> DirectoryResult<()> {
    let bad = |why| {
        Err(DirectoryError::BadName {
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

/// Checks a password given in plain text: not empty, at most
/// [`MAX_CREDENTIAL_LEN`] bytes.
///
/// # Errors
/// [`DirectoryError::Invalid`].
pub fn check_password(password: &str) -> DirectoryResult<()> {
    if password.is_empty() {
        return Err(DirectoryError::Invalid("the password is empty".into()));
    }
    if password.len() > MAX_CREDENTIAL_LEN {
        return Err(DirectoryError::Invalid(format!(
            "the password is longer than {MAX_CREDENTIAL_LEN} bytes"
        )));
    }
    Ok(())
}

/// Checks a nick: not blank, no control characters, at most
/// [`MAX_NICK_CHARS`] characters.
///
/// # Errors
/// [`DirectoryError::Invalid`].
pub fn check_nick(nick: &str) -> DirectoryResult<()> {
    check_label("nick", nick, MAX_NICK_CHARS)
}

/// Checks a department name: not blank, no control characters, at most
/// [`MAX_DEPT_NAME_CHARS`] characters.
///
/// # Errors
/// [`DirectoryError::Invalid`].
pub fn check_dept_name(name: &str) -> DirectoryResult<()> {
    check_label("department name", name, MAX_DEPT_NAME_CHARS)
}

fn check_label(what: &str, value: &str, max: usize) -> DirectoryResult<()> {
    if value.trim().is_empty() {
        return Err(DirectoryError::Invalid(format!("the {what} is empty")));
    }
    if value.chars().any(char::is_control) {
        return Err(DirectoryError::Invalid(format!(
            "the {what} contains a control character"
        )));
    }
    let n = value.chars().count();
    if n > max {
        return Err(DirectoryError::Invalid(format!(
            "the {what} is {n} characters long; at most {max} fit"
        )));
    }
    Ok(())
}

/// The departments that are not deleted, by id.
///
/// # Errors
/// Store failures.
pub fn departments(store: &dyn Store) -> DirectoryResult<Vec<Department>> {
    let mut all = store.departments_updated_since(0)?;
    all.retain(|d| d.status != DEPT_STATUS_DELETED);
    Ok(all)
}

/// A department named by name, or else by id (deleted ones are not found).
///
/// # Errors
/// [`DirectoryError::NoSuchDept`].
pub fn find_dept(store: &dyn Store, dept: &str) -> DirectoryResult<Department> {
    let mut all = departments(store)?;
    let i = all
        .iter()
        .position(|d| d.name == dept)
        .or_else(|| {
            let id = dept.parse::<DeptId>().ok()?;
            all.iter().position(|d| d.id == id)
        })
        .ok_or_else(|| DirectoryError::NoSuchDept(dept.to_owned()))?;
    Ok(all.swap_remove(i))
}

/// Resolves an optional department (`--dept`); `None` means 0 (none).
///
/// # Errors
/// [`DirectoryError::NoSuchDept`].
pub fn dept_id(store: &dyn Store, dept: Option<&str>) -> DirectoryResult<DeptId> {
    dept.map_or(Ok(0), |d| find_dept(store, d).map(|d| d.id))
}

/// A user named by login name, or else by id (disabled users included).
///
/// # Errors
/// [`DirectoryError::NoSuchUser`].
pub fn find_user(store: &dyn Store, who: &str) -> DirectoryResult<User> {
    if let Some(u) = store.user_by_name(who)? {
        return Ok(u);
    }
    let Ok(id) = who.parse::<UserId>() else {
        return Err(DirectoryError::NoSuchUser(who.to_owned()));
    };
    store
        .users_by_ids(&[id])?
        .into_iter()
        .next()
        .ok_or_else(|| DirectoryError::NoSuchUser(who.to_owned()))
}

/// Adds one user; returns its id. The password is given in plain text and
/// stored as an Argon2id hash of its md5hex (what clients send).
///
/// # Errors
/// A refused name, password or nick, an unknown department, and store
/// failures ([`StoreError::NameTaken`]).
pub fn add_user(
    store: &dyn Store,
    name: &str,
    password: &str,
    nick: Option<&str>,
    dept: Option<&str>,
) -> DirectoryResult<UserId> {
    check_name(name)?;
    check_password(password)?;
    if let Some(nick) = nick {
        check_nick(nick)?;
    }
    let user = NewUser {
        name: name.to_owned(),
        // A long login name is fine; the nick shown for it is cut to fit.
        nick: nick.map_or_else(
            || name.chars().take(MAX_NICK_CHARS).collect(),
            str::to_owned,
        ),
        dept_id: dept_id(store, dept)?,
        ..NewUser::default()
    };
    Ok(store.add_user(&user, &md5_hex(password.as_bytes()))?)
}

/// Adds users `<prefix>1` … `<prefix><count>`, all with one password. With
/// `teamtalk_form` they get TeamTalk's salted-MD5 credentials instead of
/// Argon2id, which makes seeding many cheap and their logins cost no
/// password hash (they keep that form: nothing rehashes at login).
///
/// # Errors
/// As [`add_user`].
pub fn seed_users(
    store: &dyn Store,
    prefix: &str,
    count: u32,
    password: &str,
    teamtalk_form: bool,
) -> DirectoryResult<Vec<UserId>> {
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
/// [`DirectoryError::NoSuchUser`], a refused password, store failures.
pub fn set_password(store: &dyn Store, who: &str, password: &str) -> DirectoryResult<User> {
    check_password(password)?;
    let user = find_user(store, who)?;
    if !store.set_password(user.id, &md5_hex(password.as_bytes()))? {
        return Err(DirectoryError::NoSuchUser(who.to_owned()));
    }
    Ok(user)
}

/// Disables (`on`) or enables a user's login; returns the user as it was.
/// Disabled is TeamTalk's "departed" status: the login is refused and the
/// user leaves the full directory clients download.
///
/// # Errors
/// [`DirectoryError::NoSuchUser`], store failures.
pub fn set_disabled(store: &dyn Store, who: &str, on: bool) -> DirectoryResult<User> {
    let user = find_user(store, who)?;
    let status = if on { USER_STATUS_DEPARTED } else { 0 };
    if !store.set_user_status(user.id, status)? {
        return Err(DirectoryError::NoSuchUser(who.to_owned()));
    }
    Ok(user)
}

/// Whether a user is disabled ([`set_disabled`]).
#[must_use]
pub fn is_disabled(user: &User) -> bool {
    user.status == USER_STATUS_DEPARTED
}

/// Deletes a user; returns the user as it was.
///
/// # Errors
/// [`DirectoryError::NoSuchUser`], store failures.
pub fn delete_user(store: &dyn Store, who: &str) -> DirectoryResult<User> {
    let user = find_user(store, who)?;
    if !store.delete_user(user.id)? {
        return Err(DirectoryError::NoSuchUser(who.to_owned()));
    }
    Ok(user)
}

/// Adds a department under `parent` (a name or id; `None` for a root);
/// returns its id.
///
/// # Errors
/// A refused name, a parent that does not exist, a name taken
/// ([`StoreError::DeptNameTaken`]), store failures.
pub fn add_dept(store: &dyn Store, name: &str, parent: Option<&str>) -> DirectoryResult<DeptId> {
    check_dept_name(name)?;
    let parent = dept_id(store, parent)?;
    Ok(store.add_department(name, 0, parent)?)
}

/// Renames a department (named by name or id); returns it as it was.
///
/// # Errors
/// [`DirectoryError::NoSuchDept`], a refused name, a name taken, store
/// failures.
pub fn rename_dept(store: &dyn Store, dept: &str, name: &str) -> DirectoryResult<Department> {
    check_dept_name(name)?;
    let d = find_dept(store, dept)?;
    if !store.rename_department(d.id, name)? {
        return Err(DirectoryError::NoSuchDept(dept.to_owned()));
    }
    Ok(d)
}

/// Deletes an empty department (named by name or id); returns it as it
/// was.
///
/// # Errors
/// [`DirectoryError::NoSuchDept`], [`StoreError::DeptNotEmpty`], store
/// failures.
pub fn delete_dept(store: &dyn Store, dept: &str) -> DirectoryResult<Department> {
    let d = find_dept(store, dept)?;
    if !store.delete_department(d.id)? {
        return Err(DirectoryError::NoSuchDept(dept.to_owned()));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::HashParams;
    use crate::store::{SqliteStore, StoreOptions};

    fn store() -> SqliteStore {
        SqliteStore::open_in_memory(StoreOptions {
            hash_params: HashParams::INSECURE_FAST,
            ..StoreOptions::default()
        })
        .unwrap()
    }

    #[test]
    fn bad_names_passwords_nicks_and_departments_are_refused() {
        let store = store();
        let dept = add_dept(&store, "sales", None).unwrap();
        for (name, why) in [
            ("", "empty"),
            ("al ice", "space"),
            ("tab\there", "space"),
            ("bell\u{7}", "control"),
            ("nbsp\u{a0}x", "space"),
        ] {
            let e = add_user(&store, name, "pw", None, None).unwrap_err();
            assert!(matches!(e, DirectoryError::BadName { .. }), "{name:?}: {e}");
            assert!(e.to_string().contains(why), "{name:?}: {e}");
            assert!(e.is_refusal());
        }
        let long = "x".repeat(MAX_CREDENTIAL_LEN + 1);
        assert!(add_user(&store, &long, "pw", None, None).is_err());
        assert!(add_user(&store, "bob", &long, None, None).is_err());
        let e = add_user(&store, "bob", "", None, None).unwrap_err();
        assert!(e.to_string().contains("password is empty"), "{e}");
        for nick in ["", "  ", "a\nb"] {
            assert!(
                add_user(&store, "bob", "pw", Some(nick), None).is_err(),
                "{nick:?}"
            );
        }
        let e = add_user(&store, "bob", "pw", Some(&"é".repeat(33)), None).unwrap_err();
        assert!(e.to_string().contains("33 characters"), "{e}");
        for unknown in ["nowhere", "99"] {
            let e = add_user(&store, "bob", "pw", None, Some(unknown)).unwrap_err();
            assert!(matches!(e, DirectoryError::NoSuchDept(_)), "{unknown}: {e}");
        }
        assert!(store.all_users().unwrap().is_empty(), "nothing added");

        add_user(&store, "bob", "pw", Some(&"é".repeat(32)), Some("sales")).unwrap();
        let by_id = add_user(&store, "carol", "pw", None, Some(&dept.to_string())).unwrap();
        assert_eq!(store.users_by_ids(&[by_id]).unwrap()[0].dept_id, dept);
        let e = add_user(&store, "bob", "pw", None, None).unwrap_err();
        assert!(e.is_refusal(), "the name is taken: {e}");
        // A long login name gets a nick that fits.
        let name = "n".repeat(40);
        let id = add_user(&store, &name, "pw", None, None).unwrap();
        assert_eq!(
            store.users_by_ids(&[id]).unwrap()[0].nick.len(),
            MAX_NICK_CHARS
        );

        let e = add_dept(&store, "sales", None).unwrap_err();
        assert!(e.to_string().contains("already taken"), "{e}");
        assert!(add_dept(&store, " ", None).is_err());
        assert!(add_dept(&store, &"d".repeat(65), None).is_err());
        assert!(matches!(
            add_dept(&store, "sub", Some("42")),
            Err(DirectoryError::NoSuchDept(_))
        ));
        assert!(add_dept(&store, "sub", Some("sales")).is_ok());
        assert!(seed_users(&store, "a b", 2, "pw", false).is_err());
    }

    #[test]
    fn passwd_disable_enable_and_del_by_name_or_id() {
        let store = store();
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
        assert!(is_disabled(&find_user(&store, "alice").unwrap()));
        set_disabled(&store, "alice", false).unwrap();
        assert!(ok("newer").is_some());
        assert!(!is_disabled(&find_user(&store, "alice").unwrap()));

        assert_eq!(delete_user(&store, "alice").unwrap().id, id);
        assert!(ok("newer").is_none());
        for gone in ["alice", "12345"] {
            assert!(matches!(
                delete_user(&store, gone),
                Err(DirectoryError::NoSuchUser(_))
            ));
            assert!(set_password(&store, gone, "x").is_err());
            assert!(set_disabled(&store, gone, true).is_err());
        }
        assert_eq!(store.all_users().unwrap().len(), 1);
    }

    #[test]
    fn departments_are_renamed_and_deleted_by_name_or_id() {
        let store = store();
        let sales = add_dept(&store, "sales", None).unwrap();
        add_dept(&store, "dev", None).unwrap();
        assert_eq!(rename_dept(&store, "sales", "Sales").unwrap().id, sales);
        assert!(rename_dept(&store, "sales", "x").is_err(), "renamed");
        assert!(rename_dept(&store, &sales.to_string(), "dev").is_err());
        assert!(rename_dept(&store, "Sales", "").is_err());
        add_user(&store, "alice", "pw", None, Some("Sales")).unwrap();
        let e = delete_dept(&store, "Sales").unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        assert!(e.is_refusal());
        delete_user(&store, "alice").unwrap();
        assert_eq!(delete_dept(&store, "Sales").unwrap().id, sales);
        assert!(matches!(
            delete_dept(&store, "Sales"),
            Err(DirectoryError::NoSuchDept(_))
        ));
        let left: Vec<_> = departments(&store)
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(left, ["dev"]);
        assert!(add_user(&store, "bob", "pw", None, Some("Sales")).is_err());
        add_dept(&store, "Sales", None).expect("the name is free again");
    }
}
