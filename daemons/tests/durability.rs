//! Nothing acknowledged is lost: db_proxy_server runs as its own process
//! and is killed with SIGKILL in the middle of a conversation; every
//! message a client got an ack for is in the history after a restart; on
//! the embedded SQLite store and on MariaDB + Redis (`.ci/services`).

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use bytes::Bytes;
use daemons::client::Client;
use daemons::login::{self, LoginConfig};
use daemons::msg::{self, MsgConfig};
use daemons::password::{HashParams, md5_hex};
use daemons::route::{self, RouteConfig};
use daemons::store::mysql_redis::testing;
use daemons::store::{MysqlStore, NewUser, SqliteStore, Store, StoreOptions};
use teamtalk_proto::pb::im::base_define::ClientType;
use teamtalk_proto::pb::im::message::{ImGetMsgListReq, ImMsgData};
use teamtalk_proto::{Command as Cmd, Message};

const T: Duration = Duration::from_secs(10);

/// A port the kernel just handed out and released, for a child process
/// that must come back on the same address after being killed.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Kills the child process when dropped, so a failing assertion does not
/// leave a db_proxy_server running.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts db_proxy_server on `port`; its store is SQLite in `dir/data`,
/// or what `store_keys` names (TeamTalk's DBInstances and CacheInstances).
fn start_db(dir: &Path, port: u16, store_keys: &str) -> Killed {
    let conf = dir.join("dbproxyserver.conf");
    std::fs::write(
        &conf,
        format!(
            "ListenIP=127.0.0.1\nListenPort={port}\nDataDir={}\n{store_keys}",
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

fn msg_data(to: u32, n: u32) -> ImMsgData {
    ImMsgData {
        from_user_id: 0,
        to_session_id: to,
        msg_id: 0,
        create_time: 0,
        msg_type: 1,
        msg_data: Bytes::from(format!("message {n}")),
        attach_data: None,
        dedupe_key: None,
        duplicate: None,
    }
}

/// Logs in, retrying while msg_server's links come up.
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

fn add_users(store: &dyn Store) -> (u32, u32) {
    let add = |name: &str| {
        let u = NewUser {
            name: name.into(),
            nick: name.into(),
            ..NewUser::default()
        };
        store.add_user(&u, &md5_hex(b"pw")).unwrap()
    };
    (add("alice"), add("bob"))
}

fn fast() -> StoreOptions {
    StoreOptions {
        hash_params: HashParams::INSECURE_FAST,
        ..StoreOptions::default()
    }
}

#[test]
fn sigkill_of_db_proxy_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let users = {
        let store = SqliteStore::open_with(dir.path().join("data"), fast()).unwrap();
        add_users(&store)
    };
    burst_kill_restart(dir.path(), users, "");
}

/// The same on MariaDB + Redis: db_proxy_server selects them by TeamTalk's
/// own conf keys.
#[test]
fn sigkill_of_db_proxy_on_mysql_loses_no_acknowledged_message() {
    let Some(config) = testing::fresh_config() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let users = add_users(&MysqlStore::open(&config, fast()).unwrap());
    burst_kill_restart(dir.path(), users, &testing::conf_keys(&config));
}

/// Pipelines a burst from alice to bob, kills db_proxy_server in the middle
/// of the acks, restarts it and checks every acked message is in bob's
/// history.
fn burst_kill_restart(dir: &Path, (alice_id, bob_id): (u32, u32), store_keys: &str) {
    let db_port = free_port();
    let mut db = start_db(dir, db_port, store_keys);
    let route = route::spawn(RouteConfig::loopback()).unwrap();
    let login_server = login::spawn(LoginConfig::loopback()).unwrap();
    let mut cfg = MsgConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        SocketAddr::from(([127, 0, 0, 1], db_port)),
        login_server.msg_server_addr(),
        route.addr(),
    );
    cfg.link_timers = Some((Duration::from_millis(200), Duration::from_secs(8)));
    let msg = msg::spawn(cfg).unwrap();

    let mut alice = login(msg.addr(), "alice");
    // Pipeline a burst, then kill db_proxy while acks are still coming.
    let mut seqs = Vec::new();
    for n in 0..200 {
        seqs.push(alice.send(Cmd::MsgData, &msg_data(bob_id, n)).unwrap());
    }
    let mut acked = Vec::new();
    while acked.len() < 50 {
        let p = alice
            .wait_for(T, "ack", |p| p.is(Cmd::MsgDataAck.key()))
            .expect("first acks");
        if let Ok(Message::MsgDataAck(a)) = Message::decode(&p) {
            acked.push(a.msg_id);
        }
    }
    db.0.kill().expect("SIGKILL db_proxy_server");
    db.0.wait().expect("reaped");
    // Acks already in flight may still arrive; they count too.
    while let Ok(p) = alice.wait_for(Duration::from_millis(300), "ack", |p| {
        p.is(Cmd::MsgDataAck.key())
    }) {
        if let Ok(Message::MsgDataAck(a)) = Message::decode(&p) {
            acked.push(a.msg_id);
        }
    }

    let _db = start_db(dir, db_port, store_keys);
    let mut bob = login(msg.addr(), "bob");
    let req = ImGetMsgListReq {
        user_id: 0,
        session_type: 1,
        session_id: alice_id,
        msg_id_begin: 0,
        msg_cnt: 200,
        attach_data: None,
    };
    let Message::MsgListResponse(history) = bob
        .request(Cmd::MsgListRequest, &req, Cmd::MsgListResponse, T)
        .unwrap()
    else {
        panic!("no history")
    };
    let stored: std::collections::HashSet<u32> =
        history.msg_list.iter().map(|m| m.msg_id).collect();
    for id in &acked {
        assert!(
            stored.contains(id),
            "acked msg_id {id} lost; stored {} messages",
            stored.len()
        );
    }
    assert!(acked.len() >= 50);
}
