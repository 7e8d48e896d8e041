//! The admin endpoint end to end: `/metrics` counters move when a message
//! flows, `/healthz` fails while db_proxy_server is down and recovers when
//! it is back. Plain std `TcpStream` HTTP, as a scraper would.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use daemons::client::{Client, ClientError};
use daemons::password::{HashParams, md5_hex};
use daemons::store::NewUser;
use daemons::system::{self, SystemConfig};
use teamtalk_proto::pb::im::base_define::ClientType;
use teamtalk_proto::pb::im::message::ImMsgData;
use teamtalk_proto::{Command, Message};

const T: Duration = Duration::from_secs(10);

/// `(status code, body)` of `GET path`.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    common::http_exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    )
}

/// Sum of the samples of `name` whose labels include every pair of `want`
/// (`None` when there is no such sample).
fn value(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, v) = line.rsplit_once(' ').expect("sample line");
        let (n, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let pairs: Vec<(&str, &str)> = labels
            .split("\",")
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once("=\"").expect("label pair");
                (k, v.trim_end_matches('"'))
            })
            .collect();
        if want.iter().all(|w| pairs.contains(w)) {
            *found.get_or_insert(0.0) += v.parse::<f64>().expect("a number");
        }
    }
    found
}

/// Asserts that the samples of `name` matching `labels` add up to at
/// least `min`.
fn at_least(text: &str, name: &str, labels: &[(&str, &str)], min: f64) {
    let v = value(text, name, labels).unwrap_or(0.0);
    assert!(v >= min, "{name}{labels:?} = {v} < {min}\n{text}");
}

/// Polls `check` every 50 ms until it holds, at most `limit`.
fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = daemons::clock::now() + limit;
    while !check() {
        assert!(
            daemons::clock::now() < deadline,
            "not within {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(to: u32, body: &str) -> ImMsgData {
    ImMsgData {
        from_user_id: 0,
        to_session_id: to,
        msg_id: 0,
        create_time: 0,
        msg_type: 1,
        msg_data: Bytes::copy_from_slice(body.as_bytes()),
        attach_data: None,
        dedupe_key: None,
        duplicate: None,
    }
}

#[test]
fn metrics_move_with_a_message_and_healthz_follows_db_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = SystemConfig::ephemeral(dir.path(), 1);
    cfg.hash_params = HashParams::INSECURE_FAST;
    cfg.link_timers = Some((Duration::from_millis(200), Duration::from_secs(8)));
    let mut sys = system::start(cfg).expect("system starts");
    assert!(sys.wait_ready(T), "msg_server registered");
    let admin = sys
        .admin_addr()
        .expect("ephemeral systems serve an admin port");
    let store = sys.store();
    for name in ["alice", "bob"] {
        let user = NewUser {
            name: name.into(),
            nick: name.into(),
            ..NewUser::default()
        };
        store
            .add_user(&user, &md5_hex(b"secret"))
            .expect("add user");
    }
    let bob_id = store
        .verify_login("bob", &md5_hex(b"secret"))
        .expect("store")
        .expect("bob")
        .id;

    eventually(Duration::from_secs(15), "healthy at start", || {
        get(admin, "/healthz") == (200, "ok\n".to_owned())
    });
    let (code, before) = get(admin, "/metrics");
    assert_eq!(code, 200);
    let msg = [("daemon", "msg_server")];
    let db = [("daemon", "db_proxy_server")];
    let stored_before = value(&before, "teamtalk_db_messages_stored_total", &db).expect("stored");
    let data_in = |t: &str| {
        value(
            t,
            "teamtalk_pdus_in_total",
            &[
                ("daemon", "msg_server"),
                ("peer", "client"),
                ("command", "CID_MSG_DATA"),
            ],
        )
        .unwrap_or(0.0)
    };
    let data_in_before = data_in(&before);
    for kind in ["db", "login", "route"] {
        assert_eq!(
            value(&before, "teamtalk_msg_link_up", &[("kind", kind)]),
            Some(1.0),
            "{kind} link up:\n{before}"
        );
    }

    // A refused login is counted under its result code.
    let mut mallory = Client::connect(sys.msg_addrs()[0], T).expect("connect");
    match mallory.login("alice", "wrong", ClientType::Windows, T) {
        Err(ClientError::LoginRefused { .. }) => {}
        other => panic!("wrong password accepted: {other:?}"),
    }

    let mut alice = Client::connect(sys.msg_addrs()[0], T).expect("connect");
    alice
        .login("alice", "secret", ClientType::Windows, T)
        .expect("alice logs in");
    let mut bob = Client::connect(sys.msg_addrs()[0], T).expect("connect");
    bob.login("bob", "secret", ClientType::Windows, T)
        .expect("bob logs in");
    let ack = alice
        .request(
            Command::MsgData,
            &text(bob_id, "hi"),
            Command::MsgDataAck,
            T,
        )
        .expect("ack");
    assert!(matches!(ack, Message::MsgDataAck(_)));
    bob.wait_command(Command::MsgData, T)
        .expect("bob receives it");

    // The application counters are published once a second.
    let mut after = String::new();
    eventually(Duration::from_secs(15), "messages_acked reaches 1", || {
        after = get(admin, "/metrics").1;
        value(&after, "teamtalk_msg_messages_acked_total", &msg) >= Some(1.0)
    });
    assert!(value(&after, "teamtalk_db_messages_stored_total", &db).unwrap() > stored_before);
    assert!(data_in(&after) > data_in_before);
    at_least(
        &after,
        "teamtalk_pdus_out_total",
        &[("peer", "client"), ("command", "CID_MSG_DATA_ACK")],
        1.0,
    );
    at_least(
        &after,
        "teamtalk_pdus_in_total",
        &[("daemon", "db_proxy_server"), ("command", "CID_MSG_DATA")],
        1.0,
    );
    at_least(&after, "teamtalk_msg_logins_ok_total", &msg, 2.0);
    at_least(
        &after,
        "teamtalk_msg_logins_refused_total",
        &[("reason", "REFUSE_REASON_DB_VALIDATE_FAILED")],
        1.0,
    );
    at_least(&after, "teamtalk_db_logins_failed_total", &db, 1.0);
    at_least(&after, "teamtalk_db_store_latency_seconds_count", &db, 1.0);
    // The message (and the logins before it) waited in the store lane's
    // queue and for db_proxy's reply: both measured.
    at_least(&after, "teamtalk_db_store_wait_seconds_count", &db, 1.0);
    at_least(
        &after,
        "teamtalk_msg_upstream_reply_seconds_count",
        &[("daemon", "msg_server"), ("kind", "db")],
        3.0,
    );
    at_least(
        &after,
        "teamtalk_connections_open",
        &[("daemon", "msg_server"), ("side", "clients")],
        2.0,
    );
    // One msg_server: http_msg_server's link to route_server is not one.
    assert_eq!(
        value(&after, "teamtalk_route_msg_servers", &[]),
        Some(1.0),
        "{after}"
    );
    at_least(&after, "teamtalk_login_msg_servers", &[], 1.0);
    at_least(&after, "teamtalk_healthy", &[], 4.0);

    // db_proxy_server goes away: unhealthy, and the msg_server notices its
    // link is down.
    sys.stop_db();
    eventually(
        Duration::from_secs(15),
        "healthz 503 naming the db link",
        || {
            let (code, body) = get(admin, "/healthz");
            code == 503
                && body.contains("db_proxy_server")
                && body.contains("msg_server")
                && body.contains("no db_proxy_server link up")
        },
    );
    let down = get(admin, "/metrics").1;
    assert_eq!(
        value(&down, "teamtalk_msg_link_up", &[("kind", "db")]),
        Some(0.0)
    );
    assert_eq!(value(&down, "teamtalk_healthy", &db), Some(0.0));
    at_least(
        &down,
        "teamtalk_closes_total",
        &[("daemon", "msg_server"), ("side", "links")],
        1.0,
    );

    sys.restart_db().expect("db_proxy restarts");
    eventually(Duration::from_secs(30), "healthy again", || {
        get(admin, "/healthz").0 == 200
    });
    sys.shutdown();
}

#[test]
fn a_single_daemon_serves_its_own_admin_port() {
    let mut cfg = daemons::route::RouteConfig::loopback();
    cfg.admin = Some("127.0.0.1:0".parse().unwrap());
    let route = daemons::route::spawn(cfg).expect("route_server starts");
    let admin = route.admin_addr().expect("admin port");
    assert_eq!(get(admin, "/healthz"), (200, "ok\n".to_owned()));
    let (code, body) = get(admin, "/metrics");
    assert_eq!(code, 200);
    let instance = route.addr().to_string();
    assert_eq!(
        value(
            &body,
            "teamtalk_route_msg_servers",
            &[("daemon", "route_server"), ("instance", &instance)]
        ),
        Some(0.0)
    );
    assert!(body.contains("# TYPE teamtalk_connections_open gauge\n"));
    assert_eq!(get(admin, "/nope").0, 404);
    route.stop();
    assert!(
        TcpStream::connect(admin).is_err(),
        "admin port closed on shutdown"
    );
}

/// `teamtalk up` without a push sink: push_server runs, but no msg_server
/// links to it, so messages cost no push lookups that could only end in
/// "no sink" (they halved a 500-member group's deliveries per second).
#[test]
fn a_system_without_a_push_sink_does_not_link_msg_servers_to_push_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = SystemConfig::ephemeral(dir.path(), 2);
    cfg.hash_params = HashParams::INSECURE_FAST;
    let sys = system::start(cfg).expect("system starts");
    assert!(sys.wait_ready(T), "msg_servers registered");
    let admin = sys.admin_addr().expect("admin port");
    let peers = |text: &str, daemon: &str| {
        value(
            text,
            "teamtalk_connections_open",
            &[("daemon", daemon), ("side", "peers")],
        )
    };
    // The msg_servers' other optional link, to file_server, is up...
    eventually(Duration::from_secs(15), "file_server links up", || {
        peers(&get(admin, "/metrics").1, "file_server") == Some(2.0)
    });
    // ...and none goes to push_server.
    let text = get(admin, "/metrics").1;
    assert_eq!(peers(&text, "push_server"), Some(0.0), "{text}");
}
