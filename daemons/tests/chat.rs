//! `teamtalk chat` as a user would run it: two scripted processes against a
//! running system, one sending, one waiting to receive.

use std::process::{Command, Stdio};
use std::time::Duration;

use daemons::password::{HashParams, md5_hex};
use daemons::store::{NewUser, Store};
use daemons::system::{self, SystemConfig};

fn teamtalk() -> Command {
    Command::new(env!("CARGO_BIN_EXE_teamtalk"))
}

#[test]
fn chat_send_reaches_a_second_scripted_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SystemConfig::ephemeral(dir.path(), 2);
    cfg.hash_params = HashParams::INSECURE_FAST;
    let sys = system::start(cfg).unwrap();
    assert!(sys.wait_ready(Duration::from_secs(10)));
    for name in ["alice", "bob"] {
        let user = NewUser {
            name: name.into(),
            nick: name.into(),
            ..NewUser::default()
        };
        sys.store().add_user(&user, &md5_hex(b"secret")).unwrap();
    }
    let http = sys.http_addr().to_string();

    let bob = teamtalk()
        .args([
            "chat",
            "--login",
            &http,
            "--user",
            "bob",
            "--password",
            "secret",
        ])
        .args(["--receive", "1", "--wait-secs", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until bob is online (login_server counts him), then send.
    let deadline = daemons::clock::now() + Duration::from_secs(20);
    while sys.login().total_online() == 0 {
        assert!(daemons::clock::now() < deadline, "bob never logged in");
        std::thread::sleep(Duration::from_millis(20));
    }
    let alice = teamtalk()
        .args([
            "chat",
            "--login",
            &http,
            "--user",
            "alice",
            "--password",
            "secret",
        ])
        .args(["--send", "bob", "hello from alice", "--history", "bob"])
        .output()
        .unwrap();
    let alice_out = String::from_utf8_lossy(&alice.stdout);
    assert!(alice.status.success(), "alice: {alice_out}");
    assert!(alice_out.contains("sent to bob (msg_id 1)"), "{alice_out}");
    assert!(
        alice_out.contains("alice: hello from alice"),
        "history: {alice_out}"
    );

    // On the wire and in the store the text is encoded as TeamTalk clients
    // encode it, so they can read it too.
    let stored = sys.store().message_list(2, 1, 0, 10).unwrap();
    let encoded =
        daemons::client::text::encode("hello from alice", daemons::client::text::DEFAULT_KEY);
    assert_eq!(stored[0].data, encoded.as_bytes());

    let bob = bob.wait_with_output().unwrap();
    let bob_out = String::from_utf8_lossy(&bob.stdout);
    assert!(bob.status.success(), "bob: {bob_out}");
    assert!(bob_out.contains("alice: hello from alice"), "{bob_out}");
}

#[test]
fn chat_with_a_wrong_password_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SystemConfig::ephemeral(dir.path(), 1);
    cfg.hash_params = HashParams::INSECURE_FAST;
    let sys = system::start(cfg).unwrap();
    assert!(sys.wait_ready(Duration::from_secs(10)));
    let out = teamtalk()
        .args(["chat", "--login", &sys.http_addr().to_string()])
        .args(["--user", "nobody", "--password", "x", "--unread"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("login refused: result code 6"), "{err}");
}

/// Runs `teamtalk chat` with `lines` typed on a piped stdin; returns
/// (success, stdout, stderr).
fn interactive(http: &str, user: &str, lines: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = teamtalk()
        .args([
            "chat",
            "--login",
            http,
            "--user",
            user,
            "--password",
            "secret",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn chat_refuses_messaging_oneself_at_once_and_no_failed_request_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SystemConfig::ephemeral(dir.path(), 1);
    cfg.hash_params = HashParams::INSECURE_FAST;
    let sys = system::start(cfg).unwrap();
    assert!(sys.wait_ready(Duration::from_secs(10)));
    let mut ids = Vec::new();
    for (name, nick) in [("alice", "Alice"), ("bob", "Bobby")] {
        let user = NewUser {
            name: name.into(),
            nick: nick.into(),
            ..NewUser::default()
        };
        ids.push(sys.store().add_user(&user, &md5_hex(b"secret")).unwrap());
    }
    let (alice_id, bob_id) = (ids[0], ids[1]);
    let http = sys.http_addr().to_string();

    // Scripted: refused before anything is sent, with a clear line.
    let started = daemons::clock::now();
    let out = teamtalk()
        .args([
            "chat",
            "--login",
            &http,
            "--user",
            "alice",
            "--password",
            "secret",
        ])
        .args(["--send", "ALICE", "hi me"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot send messages to yourself"), "{err}");
    assert!(
        daemons::clock::now() - started < Duration::from_secs(10),
        "refused at once, not after the 10 s reply timeout"
    );

    // bob writes while alice is away; she sees it when she logs in.
    let out = teamtalk()
        .args([
            "chat",
            "--login",
            &http,
            "--user",
            "bob",
            "--password",
            "secret",
        ])
        .args(["--send", "alice", "while you were out"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (ok, out, err) = interactive(
        &http,
        "alice",
        &[
            "@alice hi me",
            &format!("@{alice_id} hi me by id"),
            "@bobby",
            "@nobody hello",
            "/history",
            "/frobnicate",
            "@BOBBY hello bob",
            &format!("/send {bob_id} by id"),
            "/history Bob",
            "/read bob",
            "/logout",
            "",
        ]
        .join("\n"),
    );
    assert!(ok, "{out}{err}");
    // Unread at login, with who wrote the latest.
    assert!(out.contains("1 unread"), "{out}");
    assert!(
        out.contains("bob: 1 (latest from bob: while you were out)"),
        "{out}"
    );
    assert_eq!(
        out.matches("! you cannot send messages to yourself")
            .count(),
        2,
        "{out}"
    );
    assert!(out.contains("! empty message not sent"), "{out}");
    assert!(out.contains("! no user named \"nobody\""), "{out}");
    assert!(out.contains("usage: /history USER"), "{out}");
    assert!(out.contains("unknown command"), "{out}");
    // Names in any case, nicks, ids; the session went on after every refusal.
    assert!(out.contains("sent to bob (msg_id 2)"), "{out}");
    assert!(out.contains("sent to bob (msg_id 3)"), "{out}");
    assert!(out.contains("history with bob"), "{out}");
    assert!(
        out.contains("] alice: hello bob"),
        "history has times: {out}"
    );
    assert!(out.contains("marked 1 messages read"), "{out}");
    assert!(
        !out.contains("alice is online"),
        "no presence line about oneself: {out}"
    );
    let stored = sys.store().message_list(alice_id, alice_id, 0, 10).unwrap();
    assert!(stored.is_empty(), "nothing to oneself was stored");
    let deadline = daemons::clock::now() + Duration::from_secs(10);
    while sys.store().unread_total(alice_id).unwrap() != 0 {
        assert!(
            daemons::clock::now() < deadline,
            "the read ack never landed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
