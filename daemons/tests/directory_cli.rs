//! `teamtalk user …` and `teamtalk dept …` as an operator runs them: the
//! binary against a data directory, alone and beside a running system
//! whose db_proxy caches verified logins.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use daemons::password::HashParams;
use daemons::system::{self, SystemConfig};

fn teamtalk(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_teamtalk"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("TEAMTALK_DATA_DIR")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// Runs a command that must succeed; returns its stdout.
fn ok(data_dir: &Path, args: &[&str]) -> String {
    let out = teamtalk(data_dir, args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Runs a command that must fail; returns its stderr.
fn refused(data_dir: &Path, args: &[&str]) -> String {
    let out = teamtalk(data_dir, args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} succeeded: {err}");
    err
}

#[test]
fn commands_on_a_missing_store_say_so_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("teamtalk-data");
    for args in [
        &["user", "list"][..],
        &["dept", "list"],
        &["user", "add", "alice", "--password", "pw"],
        &["user", "passwd", "alice", "--password", "pw"],
        &["user", "del", "alice"],
        &["dept", "add", "sales"],
        &["group", "list"],
    ] {
        let err = refused(&data, args);
        assert!(err.contains("no store at"), "{args:?}: {err}");
        assert!(err.contains(&data.display().to_string()), "{args:?}: {err}");
        assert!(err.contains("--create"), "{args:?} says how: {err}");
        assert!(!data.exists(), "{args:?} created {}", data.display());
    }
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    for args in [
        &["user", "list"][..],
        &["user", "add", "x", "--password", "p", "--create"],
    ] {
        let err = refused(&file, args);
        assert!(err.contains("not a directory"), "{args:?}: {err}");
    }
}

#[test]
fn the_directory_is_administered_and_bad_input_refused_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ok(d, &["dept", "add", "sales", "--create"]);
    assert!(out.contains("added department sales"), "{out}");
    ok(d, &["dept", "add", "tools", "--parent", "sales"]);
    let err = refused(d, &["dept", "add", "sales"]);
    assert!(err.contains("already taken"), "{err}");

    for (args, why) in [
        (&["user", "add", "", "--password", "pw"][..], "empty"),
        (&["user", "add", "al ice", "--password", "pw"], "space"),
        (&["user", "add", "bell\u{7}", "--password", "pw"], "control"),
        (
            &["user", "add", "alice", "--password", ""],
            "password is empty",
        ),
        (
            &[
                "user",
                "add",
                "alice",
                "--password",
                "pw",
                "--dept",
                "nowhere",
            ],
            "no department \"nowhere\"",
        ),
        (
            &[
                "user",
                "add",
                "alice",
                "--password",
                "pw",
                "--nick",
                &"n".repeat(33),
            ],
            "at most 32",
        ),
    ] {
        let err = refused(d, args);
        assert!(err.contains(why), "{args:?}: {err}");
    }
    let out = ok(
        d,
        &[
            "user",
            "add",
            "alice",
            "--password",
            "pw",
            "--nick",
            "Alice",
            "--dept",
            "sales",
        ],
    );
    assert!(out.contains("added user alice"), "{out}");
    ok(d, &["user", "add", "bob", "--password", "pw"]);
    let err = refused(d, &["user", "add", "bob", "--password", "pw"]);
    assert!(err.contains("bob"), "the name is taken: {err}");

    let out = ok(d, &["dept", "list"]);
    assert!(out.contains("sales") && out.contains("tools"), "{out}");
    assert!(out.contains("2 departments"), "{out}");

    let out = ok(d, &["user", "disable", "alice"]);
    assert!(out.contains("disabled alice"), "{out}");
    let out = ok(d, &["user", "list"]);
    let alice = out.lines().find(|l| l.contains("alice")).unwrap();
    assert!(alice.ends_with("disabled"), "{out}");
    ok(d, &["user", "enable", "alice"]);
    let out = ok(d, &["user", "list"]);
    assert!(out.lines().all(|l| !l.ends_with("disabled")), "{out}");
    assert!(out.contains("2 users"), "{out}");

    let err = refused(d, &["user", "passwd", "carol", "--password", "x"]);
    assert!(err.contains("no user \"carol\""), "{err}");
    let err = refused(d, &["user", "passwd", "alice", "--password", ""]);
    assert!(err.contains("password is empty"), "{err}");

    let err = refused(d, &["dept", "del", "sales"]);
    assert!(err.contains("not empty"), "{err}");
    let out = ok(d, &["dept", "rename", "sales", "Sales"]);
    assert!(out.contains("renamed department sales"), "{out}");
    let out = ok(d, &["user", "del", "alice"]);
    assert!(out.contains("deleted user alice"), "{out}");
    let err = refused(d, &["user", "del", "alice"]);
    assert!(err.contains("no user"), "{err}");
    ok(d, &["dept", "del", "tools"]);
    ok(d, &["dept", "del", "Sales"]);
    let out = ok(d, &["dept", "list"]);
    assert!(out.contains("0 departments"), "{out}");
}

/// The stored password hash of `name`, read from the SQLite file.
fn stored_hash(data_dir: &Path, name: &str) -> String {
    let db = rusqlite::Connection::open(data_dir.join("teamtalk.sqlite3")).unwrap();
    db.query_row("SELECT password FROM user WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .unwrap()
}

#[test]
fn the_argon2_cost_of_new_passwords_is_the_operators_choice() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &[
            "user",
            "add",
            "alice",
            "--password",
            "pw",
            "--create",
            "--argon2-memory-kib",
            "64",
            "--argon2-passes",
            "1",
        ],
    );
    assert!(
        stored_hash(d, "alice").starts_with("$argon2id$v=19$m=64,t=1,p=1$"),
        "{}",
        stored_hash(d, "alice")
    );
    ok(
        d,
        &[
            "user",
            "passwd",
            "alice",
            "--password",
            "pw2",
            "--argon2-memory-kib",
            "128",
            "--argon2-passes",
            "3",
        ],
    );
    assert!(stored_hash(d, "alice").starts_with("$argon2id$v=19$m=128,t=3,p=1$"));
    // One setting alone keeps the other's default (2 passes).
    ok(
        d,
        &[
            "user",
            "seed",
            "--prefix",
            "s",
            "--count",
            "2",
            "--password",
            "pw",
            "--argon2-memory-kib",
            "32",
        ],
    );
    assert!(stored_hash(d, "s2").starts_with("$argon2id$v=19$m=32,t=2,p=1$"));
    // Without them: OWASP's 19 MiB and 2 passes.
    ok(d, &["user", "add", "bob", "--password", "pw"]);
    assert!(stored_hash(d, "bob").starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    // Out of range: refused before anything is stored.
    for args in [
        &[
            "user",
            "add",
            "carol",
            "--password",
            "pw",
            "--argon2-memory-kib",
            "4",
        ][..],
        &[
            "user",
            "add",
            "carol",
            "--password",
            "pw",
            "--argon2-passes",
            "0",
        ],
        &[
            "user",
            "add",
            "carol",
            "--password",
            "pw",
            "--argon2-passes",
            "65",
        ],
    ] {
        let err = refused(d, args);
        assert!(err.contains("--argon2-"), "{args:?}: {err}");
    }
    // Through a running system's admin API the system's own cost
    // applies: asking for another is refused, not silently ignored.
    let err = refused(
        d,
        &[
            "user",
            "add",
            "carol",
            "--password",
            "pw",
            "--argon2-passes",
            "1",
            "--admin",
            "http://127.0.0.1:9",
        ],
    );
    assert!(err.contains("admin API"), "{err}");
    let out = ok(d, &["user", "list"]);
    assert!(!out.contains("carol"), "{out}");
}

/// Whether `user` logs in with `password` through the running system.
fn logs_in(http: &str, user: &str, password: &str) -> bool {
    Command::new(env!("CARGO_BIN_EXE_teamtalk"))
        .args([
            "chat",
            "--login",
            http,
            "--user",
            user,
            "--password",
            password,
        ])
        .arg("--unread")
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn password_changes_and_disabling_bite_at_once_in_a_running_system() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut cfg = SystemConfig::ephemeral(d, 1);
    cfg.hash_params = HashParams::INSECURE_FAST;
    let sys = system::start(cfg).unwrap();
    assert!(sys.wait_ready(Duration::from_secs(10)));
    let http = sys.http_addr().to_string();

    ok(d, &["user", "add", "alice", "--password", "old"]);
    // The first login fills db_proxy's credential cache.
    assert!(logs_in(&http, "alice", "old"));
    assert!(logs_in(&http, "alice", "old"), "again, from the cache");

    ok(d, &["user", "passwd", "alice", "--password", "new"]);
    assert!(
        !logs_in(&http, "alice", "old"),
        "the cached password is refused"
    );
    assert!(logs_in(&http, "alice", "new"));

    ok(d, &["user", "disable", "alice"]);
    assert!(!logs_in(&http, "alice", "new"), "disabled");
    ok(d, &["user", "enable", "alice"]);
    assert!(logs_in(&http, "alice", "new"), "enabled again");

    ok(d, &["user", "del", "alice"]);
    assert!(!logs_in(&http, "alice", "new"), "deleted");
}
