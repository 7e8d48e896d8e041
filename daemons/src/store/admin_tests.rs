//! The administration's side of the store: passwords, statuses, deletion,
//! credential stamps, unique department names (migration 5), and how a
//! data directory is opened (existing only, read-only, not a directory,
//! permission denied).

use std::sync::Arc;

use super::*;
use crate::password::{HashParams, md5_hex};

fn options() -> StoreOptions {
    StoreOptions {
        hash_params: HashParams::INSECURE_FAST,
        clock: Arc::new(|| 1_000),
    }
}

fn user(name: &str) -> NewUser {
    NewUser {
        name: name.to_owned(),
        nick: name.to_owned(),
        ..NewUser::default()
    }
}

fn pw(text: &str) -> String {
    md5_hex(text.as_bytes())
}

#[test]
fn the_stamp_moves_with_each_password_set_and_only_then() {
    let store = SqliteStore::open_in_memory(options()).unwrap();
    let id = store.add_user(&user("alice"), &pw("one")).unwrap();
    let first = store.check_login("alice", &pw("one")).unwrap().unwrap();
    assert_eq!(first.user.id, id);
    let read = store.user_with_credential(id).unwrap().unwrap();
    assert_eq!(read, first, "a login and a read by id agree");
    assert!(store.user_with_credential(99).unwrap().is_none());

    // A profile change leaves the credential alone.
    store.update_sign_info(id, "hi").unwrap();
    let after_sign = store.user_with_credential(id).unwrap().unwrap();
    assert_eq!(after_sign.credential, first.credential);

    assert!(store.set_password(id, &pw("two")).unwrap());
    let second = store.user_with_credential(id).unwrap().unwrap().credential;
    assert_ne!(second, first.credential);
    assert!(store.verify_login("alice", &pw("one")).unwrap().is_none());
    assert_eq!(
        store
            .check_login("alice", &pw("two"))
            .unwrap()
            .map(|c| c.credential),
        Some(second)
    );
    // The same password again: a new salt, so a new stamp.
    assert!(store.set_password(id, &pw("two")).unwrap());
    assert_ne!(
        store.user_with_credential(id).unwrap().unwrap().credential,
        second
    );
    assert!(!store.set_password(99, &pw("x")).unwrap(), "no such user");
}

#[test]
fn a_teamtalk_password_is_replaced_by_an_argon2_one() {
    let store = SqliteStore::open_in_memory(options()).unwrap();
    let ids = store.seed_teamtalk_users("old", 1, &pw("one")).unwrap();
    assert!(store.verify_login("old1", &pw("one")).unwrap().is_some());
    assert!(store.set_password(ids[0], &pw("two")).unwrap());
    assert!(store.verify_login("old1", &pw("one")).unwrap().is_none());
    assert!(store.verify_login("old1", &pw("two")).unwrap().is_some());
    let salt: Option<String> = store
        .lock()
        .query_row("SELECT salt FROM user WHERE id = ?1", [ids[0]], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(salt, None, "Argon2 form now");
}

#[test]
fn a_disabled_user_cannot_log_in_and_is_still_listed_for_the_admin() {
    let store = SqliteStore::open_in_memory(options()).unwrap();
    let id = store.add_user(&user("alice"), &pw("pw")).unwrap();
    store.add_user(&user("bob"), &pw("pw")).unwrap();
    assert!(store.set_user_status(id, USER_STATUS_DEPARTED).unwrap());
    assert!(store.verify_login("alice", &pw("pw")).unwrap().is_none());
    assert_eq!(
        store.user_by_name("alice").unwrap().map(|u| u.status),
        Some(USER_STATUS_DEPARTED)
    );
    assert_eq!(store.users_updated_since(0).unwrap().len(), 1);
    assert_eq!(store.all_users().unwrap().len(), 2);
    assert!(store.set_user_status(id, 0).unwrap());
    assert!(store.verify_login("alice", &pw("pw")).unwrap().is_some());
    assert!(!store.set_user_status(99, 0).unwrap());
    assert!(store.user_by_name("nobody").unwrap().is_none());
}

#[test]
fn deleting_a_user_takes_them_out_of_groups_and_frees_the_name() {
    let store = SqliteStore::open_in_memory(options()).unwrap();
    let a = store.add_user(&user("a"), &pw("pw")).unwrap();
    let b = store.add_user(&user("b"), &pw("pw")).unwrap();
    let g = store
        .create_group(&NewGroup {
            name: "team".into(),
            avatar: String::new(),
            creator: a,
            group_type: GroupType::Normal,
            members: vec![b],
        })
        .unwrap();
    let msg = NewMessage {
        from: b,
        to: a,
        session_type: SessionType::Single,
        msg_type: 1,
        create_time: 1,
        data: b"hi".to_vec(),
        dedupe_key: None,
    };
    store.store_message(&msg).unwrap();
    store.set_device_token(b, 0x11, "token").unwrap();

    assert!(store.delete_user(b).unwrap());
    assert!(!store.delete_user(b).unwrap(), "already gone");
    assert!(store.verify_login("b", &pw("pw")).unwrap().is_none());
    let after = store.group(g.id).unwrap().unwrap();
    assert_eq!(after.member_ids(), vec![a]);
    assert_eq!(after.version, g.version + 1, "members' clients refetch");
    assert!(store.device_tokens(&[b]).unwrap().is_empty());
    assert!(store.recent_sessions(b, 0).unwrap().is_empty());
    // What they sent stays in the peer's history.
    assert_eq!(store.message_list(a, b, 0, 10).unwrap().len(), 1);
    let again = store.add_user(&user("b"), &pw("pw")).unwrap();
    assert_ne!(again, b, "ids are not reused");
}

#[test]
fn department_names_are_unique() {
    let store = SqliteStore::open_in_memory(options()).unwrap();
    store.add_department("sales", 0, 0).unwrap();
    let e = store.add_department("sales", 0, 0).unwrap_err();
    assert!(
        matches!(&e, StoreError::DeptNameTaken(n) if n == "sales"),
        "{e}"
    );
    assert!(e.is_refusal());
    store.add_department("Sales", 0, 0).expect("another name");
}

#[test]
fn migration_5_renames_duplicate_departments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
        for step in &super::sqlite::MIGRATIONS[..4] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        conn.execute_batch(
            "INSERT INTO department (name, status, created, updated) VALUES
                 ('sales', 0, 1, 1), ('dev', 0, 1, 1), ('sales', 0, 1, 1), ('dev', 1, 1, 1)",
        )
        .unwrap();
    }
    let store = SqliteStore::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.schema_version().unwrap(), 5);
    let names: Vec<String> = store
        .departments_updated_since(0)
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    // A deleted department keeps its name: it is no duplicate.
    assert_eq!(names, ["sales", "dev", "sales #3", "dev"]);
    assert!(matches!(
        store.add_department("dev", 0, 0),
        Err(StoreError::DeptNameTaken(_))
    ));
}

#[test]
fn existing_mode_does_not_create_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nowhere");
    for mode in [OpenMode::Existing, OpenMode::ReadOnly] {
        let e = SqliteStore::open_mode(&data, options(), mode).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, StoreError::NoStore { .. }), "{text}");
        assert!(
            text.contains(&data.join(DB_FILE_NAME).display().to_string()),
            "says where it looked: {text}"
        );
        assert!(text.contains("--create"), "says how to make one: {text}");
    }
    assert!(!data.exists(), "nothing was created");
    // An empty directory has no store either.
    let e = SqliteStore::open_mode(dir.path(), options(), OpenMode::Existing).unwrap_err();
    assert!(matches!(e, StoreError::NoStore { .. }), "{e}");
    SqliteStore::open_mode(&data, options(), OpenMode::Create).unwrap();
    SqliteStore::open_mode(&data, options(), OpenMode::Existing).expect("there now");
}

#[test]
fn a_file_as_data_directory_is_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, "x").unwrap();
    for (path, mode) in [
        (file.clone(), OpenMode::Create),
        (file.clone(), OpenMode::Existing),
        (file.clone(), OpenMode::ReadOnly),
        (file.join("below"), OpenMode::Create),
    ] {
        let e = SqliteStore::open_mode(&path, options(), mode).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, StoreError::NotADirectory { .. }), "{text}");
        assert!(text.contains("not a directory"), "{text}");
    }
}

#[test]
fn read_only_mode_reads_and_never_writes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open_with(dir.path(), options()).unwrap();
        store.add_user(&user("alice"), &pw("pw")).unwrap();
    }
    let ro = SqliteStore::open_mode(dir.path(), options(), OpenMode::ReadOnly).unwrap();
    assert_eq!(ro.path(), Some(dir.path().join(DB_FILE_NAME).as_path()));
    assert_eq!(ro.all_users().unwrap().len(), 1);
    assert!(ro.add_department("x", 0, 0).is_err());
    assert_eq!(ro.departments_updated_since(0).unwrap().len(), 0);
}

/// A store file this process may not write: opening it for writing names
/// the file and says "permission denied"; read-only mode still lists it.
/// The file is made unwritable with its mode bits, or (for the superuser,
/// whom mode bits do not stop) the immutable attribute when `chattr` can
/// set it; where neither works, the error mapping alone is checked.
#[test]
fn an_unwritable_store_says_permission_denied_with_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open_with(dir.path(), options()).unwrap();
        store.add_user(&user("alice"), &pw("pw")).unwrap();
    }
    let file = dir.path().join(DB_FILE_NAME);
    let writable = || std::fs::OpenOptions::new().write(true).open(&file).is_ok();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
    let mut immutable = false;
    if writable() {
        immutable = std::process::Command::new("chattr")
            .arg("+i")
            .arg(&file)
            .status()
            .is_ok_and(|s| s.success());
    }
    let unwritable = !writable();
    let result = unwritable.then(|| {
        let write = SqliteStore::open_mode(dir.path(), options(), OpenMode::Existing)
            .map(|_| ())
            .unwrap_err();
        let read = SqliteStore::open_mode(dir.path(), options(), OpenMode::ReadOnly)
            .and_then(|s| s.all_users())
            .map(|u| u.len());
        (write, read)
    });
    if immutable {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&file)
            .status();
    }
    if let Some((write, read)) = result {
        let text = write.to_string();
        assert!(
            matches!(write, StoreError::PermissionDenied { .. }),
            "{text}"
        );
        assert!(text.contains("permission denied"), "{text}");
        assert!(text.contains(&file.display().to_string()), "{text}");
        assert_eq!(read.unwrap(), 1, "read-only mode lists it");
    }
    // The mapping itself, as SQLite reports a write to a read-only file.
    let readonly = rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
        None,
    );
    let e = super::sqlite::open_error(&file, "x", readonly);
    let text = e.to_string();
    assert!(
        text.contains("permission denied") && text.contains(&file.display().to_string()),
        "{text}"
    );
}

#[test]
fn departments_are_renamed_and_deleted_only_when_empty() {
    let store = SqliteStore::open_in_memory(options()).unwrap();
    let sales = store.add_department("sales", 0, 0).unwrap();
    let dev = store.add_department("dev", 0, 0).unwrap();
    let sub = store.add_department("dev-tools", 0, dev).unwrap();

    assert!(store.rename_department(sales, "Sales").unwrap());
    assert!(matches!(
        store.rename_department(sales, "dev"),
        Err(StoreError::DeptNameTaken(n)) if n == "dev"
    ));
    assert!(!store.rename_department(999, "x").unwrap());

    let mut u = user("alice");
    u.dept_id = sales;
    let alice = store.add_user(&u, &pw("pw")).unwrap();
    let e = store.delete_department(sales).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::DeptNotEmpty {
                users: 1,
                children: 0,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.is_refusal());
    let e = store.delete_department(dev).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::DeptNotEmpty {
                users: 0,
                children: 1,
                ..
            }
        ),
        "{e}"
    );

    assert!(store.delete_department(sub).unwrap());
    assert!(!store.delete_department(sub).unwrap(), "deleted already");
    assert!(!store.rename_department(sub, "y").unwrap(), "deleted");
    assert!(store.delete_department(dev).unwrap(), "empty now");
    assert!(store.delete_user(alice).unwrap());
    assert!(store.delete_department(sales).unwrap());

    // Clients syncing incrementally see the deletions; the names are free.
    let all = store.departments_updated_since(0).unwrap();
    assert_eq!(all.len(), 3);
    assert!(
        all.iter().all(|d| d.status == DEPT_STATUS_DELETED),
        "{all:?}"
    );
    store
        .add_department("dev", 0, 0)
        .expect("the name is free again");
    assert!(!store.delete_department(999).unwrap());
}
