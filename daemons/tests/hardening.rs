//! One client against everyone else: a burst that used to overflow the
//! shared db_proxy link, and a frozen db_proxy that used to leave requests
//! unanswered and resends stored twice.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use daemons::client::Client;
use daemons::login::{self, LoginConfig};
use daemons::msg::{self, MsgConfig};
use daemons::password::{HashParams, md5_hex};
use daemons::route::{self, RouteConfig};
use daemons::store::{NewUser, SqliteStore, Store, StoreOptions};
use teamtalk_proto::Command as Cmd;
use teamtalk_proto::pb::im::base_define::ClientType;
use teamtalk_proto::pb::im::message::ImMsgData;

fn data(to: u32, body: Bytes, client_time: u32) -> ImMsgData {
    ImMsgData {
        from_user_id: 0,
        to_session_id: to,
        msg_id: 0,
        create_time: client_time,
        msg_type: 1,
        msg_data: body,
        attach_data: None,
        dedupe_key: None,
        duplicate: None,
    }
}

#[test]
fn a_16_mb_burst_from_one_client_never_cuts_the_db_link_for_others() {
    let w = world();
    let bob_id = w.user_id("bob");
    let (mut alice, _) = RawClient::login(w.msg(0), "alice");
    let mut carol = w.login(0, "carol", ClientType::Windows);

    // 256 messages of 64 KB in one write, as in the finding.
    let body = Bytes::from(vec![b'x'; 64 << 10]);
    let mut wire = Vec::new();
    for seq in 1..=256u16 {
        // Distinct client times: 256 messages, not one message resent.
        let m = data(bob_id, body.clone(), u32::from(seq));
        wire.extend_from_slice(&Cmd::MsgData.pdu(seq, &m).to_bytes());
    }
    alice.write(&wire);

    // Meanwhile another user's requests are served.
    let id = send(&mut carol, bob_id, "not held up");
    assert!(id > 0);

    // Every message of the burst gets its ack.
    let mut acked = 0;
    while acked < 256 {
        let p = alice.next_pdu();
        assert!(!p.is(Cmd::OtherRequestFailed.key()), "refused: {p:?}");
        if p.is(Cmd::MsgDataAck.key()) {
            acked += 1;
        }
    }
    // The link was never closed for it: nothing failed, nothing stale.
    let stats = w.sys.msg_servers()[0]
        .inspect(daemons::msg::MsgApp::stats)
        .unwrap();
    assert_eq!((stats.stale_replies, stats.duplicates), (0, 0), "{stats:?}");
    assert!(stats.messages_acked >= 257, "{stats:?}");
    let id2 = send(&mut carol, bob_id, "still fine");
    assert!(id2 > id);
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Killed, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.0.id().to_string())
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -{sig}");
}

fn start_db(dir: &Path, port: u16) -> Killed {
    let conf = dir.join("dbproxyserver.conf");
    std::fs::write(
        &conf,
        format!(
            "ListenIP=127.0.0.1\nListenPort={port}\nDataDir={}\n",
            dir.join("data").display()
        ),
    )
    .expect("write conf");
    Killed(
        Command::new(env!("CARGO_BIN_EXE_db_proxy_server"))
            .current_dir(dir)
            .arg("-c")
            .arg(&conf)
            .spawn()
            .expect("start db_proxy_server"),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn login(addr: SocketAddr, name: &str) -> Client {
    let deadline = daemons::clock::now() + Duration::from_secs(30);
    loop {
        let mut c = Client::connect(addr, T).expect("connect");
        match c.login(name, "pw", ClientType::Windows, T) {
            Ok(_) => return c,
            Err(e) => {
                assert!(daemons::clock::now() < deadline, "cannot log in: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[test]
fn a_frozen_db_proxy_gets_every_request_answered_and_resends_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let (alice_id, bob_id) = {
        let store = SqliteStore::open_with(
            dir.path().join("data"),
            StoreOptions {
                hash_params: HashParams::INSECURE_FAST,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let add = |name: &str| {
            let u = NewUser {
                name: name.into(),
                nick: name.into(),
                ..NewUser::default()
            };
            store.add_user(&u, &md5_hex(b"pw")).unwrap()
        };
        (add("alice"), add("bob"))
    };
    let db_port = free_port();
    let db = start_db(dir.path(), db_port);
    let route = route::spawn(RouteConfig::loopback()).unwrap();
    let login_server = login::spawn(LoginConfig::loopback()).unwrap();
    let mut cfg = MsgConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        SocketAddr::from(([127, 0, 0, 1], db_port)),
        login_server.msg_server_addr(),
        route.addr(),
    );
    // A frozen peer is declared dead after 2 s of silence.
    cfg.link_timers = Some((Duration::from_millis(200), Duration::from_secs(2)));
    let m = msg::spawn(cfg).unwrap();

    let mut alice = login(m.addr(), "alice");
    signal(&db, "STOP");
    // Twelve messages into the frozen db_proxy (fewer than a session's
    // PDU credit of 16, so msg_server reads them all).
    let messages: Vec<ImMsgData> = (0..12)
        .map(|i| data(bob_id, Bytes::from(format!("frozen {i}")), 1_000 + i))
        .collect();
    for msg in &messages {
        alice.send(Cmd::MsgData, msg).unwrap();
    }
    // Every one is answered (IMRequestFailed: the ack cannot say
    // "failed"), none acked, once the link is declared dead.
    let mut failed = 0;
    while failed < 12 {
        let p = alice
            .wait_for(Duration::from_secs(10), "answer", |p| {
                p.is(Cmd::OtherRequestFailed.key()) || p.is(Cmd::MsgDataAck.key())
            })
            .expect("answered while db_proxy is frozen");
        assert!(
            p.is(Cmd::OtherRequestFailed.key()),
            "acked without a store: {p:?}"
        );
        failed += 1;
    }
    // A new login is refused with a reason, not cut off.
    let mut late = Client::connect(m.addr(), T).unwrap();
    let err = late
        .login("bob", "pw", ClientType::Windows, Duration::from_secs(14))
        .expect_err("no db_proxy, no login");
    assert!(
        err.to_string().contains("3") || err.to_string().to_lowercase().contains("db"),
        "{err}"
    );

    // db_proxy wakes up and stores what it had buffered; the client comes
    // back and resends all twelve, exactly as before.
    signal(&db, "CONT");
    let mut alice = login(m.addr(), "alice");
    for msg in &messages {
        alice.send(Cmd::MsgData, msg).unwrap();
    }
    for _ in 0..12 {
        alice
            .wait_for(T, "ack", |p| p.is(Cmd::MsgDataAck.key()))
            .expect("acked after the thaw");
    }
    // Each message is in the history once.
    let mut bob = login(m.addr(), "bob");
    let history = history(&mut bob, alice_id);
    for i in 0..12 {
        let body = format!("frozen {i}");
        let n = history.iter().filter(|(_, _, b)| *b == body).count();
        assert_eq!(n, 1, "{body:?} stored {n} times");
    }
    drop(db);
}
