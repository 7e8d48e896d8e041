//! `teamtalk chat` as a user would run it: two scripted processes against a
//! running system, one sending, one waiting to receive.

use std::process::{Command, Stdio};
use std::time::Duration;

use daemons::password::{HashParams, md5_hex};
use daemons::store::NewUser;
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
