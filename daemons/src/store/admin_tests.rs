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
        applier_nice: 0,
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

/// A store file this process may not write: opening it for writing names
/// the file and says "permission denied"; read-only mode still lists it.
/// The file is made unwritable with its mode bits, or (for the superuser,
/// whom mode bits do not stop) the immutable attribute when `chattr` can
/// set it; where neither works, the error mapping alone is checked.

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
        .unwrap()
        .query_row("SELECT salt FROM user WHERE id = ?1", [ids[0]], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(salt, None, "Argon2 form now");
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
    assert_eq!(
        store.schema_version().unwrap(),
        SqliteStore::latest_schema_version()
    );
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
