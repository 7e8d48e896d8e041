//! TLS, end to end: server links between the daemons over TLS (with
//! certificates generated for the test), and a TLS client port beside
//! TeamTalk's plain one.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use daemons::conf::Conf;
use daemons::db_proxy::{self, DbProxyConfig};
use daemons::http_msg;
use daemons::login::{self, LoginConfig};
use daemons::msg::{self, MsgConfig};
use daemons::password::{HashParams, md5_hex};
use daemons::route::{self, RouteConfig};
use daemons::store::{NewUser, SqliteStore, Store, StoreOptions};
use teamtalk_conn::tls::rustls::pki_types::ServerName;
use teamtalk_conn::tls::rustls::{ClientConnection, StreamOwned};
use teamtalk_conn::tls::testing::TestPki;
use teamtalk_proto::pb::im::base_define::ClientType;
use teamtalk_proto::pb::im::login::ImLoginReq;
use teamtalk_proto::{Command, Message, PduCodec};

fn store(dir: &std::path::Path) -> Arc<dyn Store> {
    let s = SqliteStore::open_with(
        dir,
        StoreOptions {
            hash_params: HashParams::INSECURE_FAST,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    for name in ["alice", "bob"] {
        let u = NewUser {
            name: name.into(),
            nick: name.into(),
            ..NewUser::default()
        };
        s.add_user(&u, &md5_hex(b"pw")).unwrap();
    }
    Arc::new(s)
}

#[test]
fn links_and_a_client_port_over_tls() {
    let pki = TestPki::generate();
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path();
    for (name, pem) in [
        ("ca.pem", pki.ca_pem()),
        ("server.pem", pki.server_cert_pem()),
        ("server.key", pki.server_key_pem()),
    ] {
        std::fs::write(files.join(name), pem).unwrap();
    }
    let server_tls = pki.server_config(false);

    // Every server port speaks TLS only.
    let mut db_cfg = DbProxyConfig::new("127.0.0.1:0".parse().unwrap());
    db_cfg.peer_tls = Some(Arc::clone(&server_tls));
    let db = db_proxy::spawn(db_cfg, store(&files.join("data"))).unwrap();
    // route_server reads its keys from its conf (the `PeerTls` prefix).
    let route_conf = Conf::parse_str(
        &format!(
            "ListenIP=127.0.0.1\nListenMsgPort=0\nPeerTlsCertFile={}\nPeerTlsKeyFile={}\n",
            files.join("server.pem").display(),
            files.join("server.key").display(),
        ),
        "routeserver.conf",
    )
    .unwrap();
    let route_cfg = RouteConfig::from_conf(&route_conf).unwrap();
    assert!(route_cfg.peer_tls.is_some(), "PeerTls* keys read");
    let route = route::spawn(route_cfg).unwrap();
    let mut login_cfg = LoginConfig::loopback();
    login_cfg.peer_tls = Some(Arc::clone(&server_tls));
    let login_server = login::spawn(login_cfg).unwrap();

    // msg_server reads its TLS keys from its conf, as an operator writes
    // them: links verified against the CA, a TLS client port beside 8000.
    let conf = Conf::parse_str(
        &format!(
            "ListenIP=127.0.0.1\nListenPort=0\nDBServerIP1=127.0.0.1\nDBServerPort1={}\n\
             LoginServerIP1=127.0.0.1\nLoginServerPort1={}\nRouteServerIP1=127.0.0.1\n\
             RouteServerPort1={}\nMaxConnCnt=100\nTlsListenPort=0\nTlsCertFile={}\n\
             TlsKeyFile={}\nLinkTlsCaFile={}\nLinkTlsServerName=localhost\n",
            db.addr().port(),
            login_server.msg_server_addr().port(),
            route.addr().port(),
            files.join("server.pem").display(),
            files.join("server.key").display(),
            files.join("ca.pem").display(),
        ),
        "msgserver.conf",
    )
    .unwrap();
    let cfg = MsgConfig::from_conf(&conf).unwrap();
    let m = msg::spawn(cfg).unwrap();
    let deadline = daemons::clock::now() + Duration::from_secs(20);
    while login_server.msg_servers().is_empty() {
        assert!(
            daemons::clock::now() < deadline,
            "links over TLS never came up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A TLS client logs in on the TLS port (the second listener).
    let tls_port = m.addrs()[1];
    let client_tls = pki.client_config(&pki, false);
    let conn =
        ClientConnection::new(client_tls, ServerName::try_from("localhost").unwrap()).unwrap();
    let sock = TcpStream::connect(tls_port).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    let login = ImLoginReq {
        user_name: "alice".into(),
        password: md5_hex(b"pw"),
        online_status: 1,
        client_type: ClientType::Windows as i32,
        client_version: None,
    };
    tls.write_all(&Command::LoginReqUserlogin.pdu(1, &login).to_bytes())
        .unwrap();
    let mut codec = PduCodec::default();
    let mut buf = BytesMut::new();
    let reply = loop {
        if let Some(p) = codec.decode(&mut buf).unwrap() {
            break p;
        }
        let mut chunk = [0u8; 4096];
        let n = tls.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before the login reply");
        buf.extend_from_slice(&chunk[..n]);
    };
    let Ok(Message::LoginResUserlogin(res)) = Message::decode(&reply) else {
        panic!("{reply:?}")
    };
    assert_eq!(res.result_code, 0, "logged in over TLS through TLS links");

    // http_msg_server's links too, from its conf: a back-office request
    // goes through db_proxy and route_server over TLS.
    let conf = Conf::parse_str(
        &format!(
            "ListenIP=127.0.0.1\nListenPort=0\nDBServerIP1=127.0.0.1\nDBServerPort1={}\n\
             RouteServerIP1=127.0.0.1\nRouteServerPort1={}\nAppKey=k\n\
             LinkTlsCaFile={}\nLinkTlsServerName=localhost\n",
            db.addr().port(),
            route.addr().port(),
            files.join("ca.pem").display(),
        ),
        "httpmsgserver.conf",
    )
    .unwrap();
    let cfg = http_msg::HttpMsgConfig::from_conf(&conf).unwrap();
    assert!(cfg.link_tls.is_some(), "LinkTls* keys read");
    let h = http_msg::spawn(cfg).unwrap();
    let body = serde_json::json!({"req_user_id": 0, "app_key": "k", "group_name": "tls",
        "group_type": 1, "group_avatar": "", "user_id_list": [1, 2]});
    let deadline = daemons::clock::now() + Duration::from_secs(20);
    let answer = loop {
        let (status, answer) = common::post(h.addr(), "/query/CreateGroup", &body);
        // 10: no db_proxy link up yet.
        if status == 200 && answer["error_code"] == 0 {
            break answer;
        }
        assert!(
            daemons::clock::now() < deadline,
            "no group over TLS links: {status} {answer}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        answer["group_id"].as_u64().is_some_and(|g| g > 0),
        "{answer}"
    );

    // Plain TCP on the TeamTalk port is unchanged.
    let mut plain = daemons::client::Client::connect(m.addrs()[0], common::T).unwrap();
    plain
        .login("bob", "pw", ClientType::Windows, common::T)
        .expect("plain login");

    // Plain TeamTalk bytes on the TLS port get no reply: the connection is
    // closed (after a TLS alert), never served in the clear.
    let mut raw = TcpStream::connect(tls_port).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(&Command::LoginReqUserlogin.pdu(2, &login).to_bytes())
        .unwrap();
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(
        PduCodec::default()
            .decode(&mut BytesMut::from(&got[..]))
            .map_or(true, |p| p.is_none()),
        "no TeamTalk PDU answered in the clear: {got:?}"
    );
}
