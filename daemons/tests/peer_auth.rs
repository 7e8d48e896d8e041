//! Server ports against strangers: what an attacker with a plain TCP
//! client and valid PDUs gets from db_proxy, route_server and
//! login_server's msg_server port (nothing), and the mixed-cluster escape
//! hatch (`AllowUnauthenticatedPeers`).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use daemons::cluster::PeerPolicy;
use daemons::db_proxy::{self, DbProxyConfig};
use daemons::password::{HashParams, md5_hex};
use daemons::store::{NewUser, SqliteStore, Store, StoreOptions};
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::base_define::ClientType;
use teamtalk_proto::pb::im::message::ImMsgData;
use teamtalk_proto::pb::im::server::{
    ImMsgServInfo, ImServerKickUser, ImUserStatusUpdate, ImValidateReq,
};
use teamtalk_proto::{Attach, Command, Pdu, PduCodec};

/// A stranger's raw connection.
struct Stranger {
    sock: TcpStream,
    buf: BytesMut,
    codec: PduCodec,
}

impl Stranger {
    fn connect(addr: SocketAddr) -> Self {
        let sock = TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            sock,
            buf: BytesMut::new(),
            codec: PduCodec::default(),
        }
    }

    fn send(&mut self, pdu: &Pdu) {
        // The server may already have closed: a write error is an answer too.
        let _ = self.sock.write_all(&pdu.to_bytes());
    }

    /// Reads until a PDU with this command arrives.
    fn expect(&mut self, command: Command) -> Pdu {
        loop {
            while let Ok(Some(p)) = self.codec.decode(&mut self.buf) {
                if p.is(command.key()) {
                    return p;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.sock.read(&mut chunk).expect("an answer");
            assert!(n > 0, "closed before {command:?}");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Every PDU the server sends until it closes the connection.
    fn until_closed(&mut self) -> Vec<Pdu> {
        let mut got = Vec::new();
        loop {
            while let Ok(Some(p)) = self.codec.decode(&mut self.buf) {
                got.push(p);
            }
            let mut chunk = [0u8; 4096];
            match self.sock.read(&mut chunk) {
                Ok(0) => return got,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
                Err(e) => panic!("server neither answered nor closed: {e}"),
            }
        }
    }
}

fn validate(user: &str) -> Pdu {
    ImValidateReq {
        user_name: user.into(),
        password: md5_hex(b"secret"),
        attach_data: Some(Attach::handle(1).encode()),
        client_addr: None,
    }
    .to_pdu(1)
}

/// Nothing but the handshake (a refusal, at most) ever comes back.
fn only_handshake(got: &[Pdu]) {
    for p in got {
        assert!(
            p.key().command_id & 0xfff0 == 0x0780,
            "a stranger got {:?}",
            p.key()
        );
    }
}

#[test]
fn strangers_get_nothing_from_db_proxy_route_or_login() {
    let w = world();
    let alice = w.user_id("alice");

    // db_proxy: a password check and a forged message, closed unanswered.
    let mut s = Stranger::connect(w.sys.db_addr());
    s.send(&validate("alice"));
    let forged = ImMsgData {
        from_user_id: alice,
        to_session_id: w.user_id("bob"),
        msg_id: 0,
        create_time: 0,
        msg_type: 1,
        msg_data: Bytes::from_static(b"forged"),
        attach_data: Some(Attach::handle(2).encode()),
        dedupe_key: None,
        duplicate: None,
    };
    s.send(&forged.to_pdu(2));
    only_handshake(&s.until_closed());

    // route_server: announce alice online, kick her; she stays.
    let mut a = w.login(0, "alice", ClientType::Windows);
    let mut s = Stranger::connect(w.sys.route_addr());
    s.send(
        &ImUserStatusUpdate {
            user_status: 1,
            user_id: alice,
            client_type: 1,
        }
        .to_pdu(0),
    );
    s.send(
        &ImServerKickUser {
            user_id: alice,
            client_type: 1,
            reason: 1,
        }
        .to_pdu(0),
    );
    s.send(&forged.to_pdu(0));
    only_handshake(&s.until_closed());
    let id = send(&mut a, w.user_id("carol"), "still logged in");
    assert!(id > 0);

    // login_server: a stranger's registration never reaches clients.
    let mut s = Stranger::connect(w.sys.login().msg_server_addr());
    s.send(
        &ImMsgServInfo {
            ip1: "203.0.113.66".into(),
            ip2: "203.0.113.66".into(),
            port: 8000,
            max_conn_cnt: 1_000_000,
            cur_conn_cnt: 0,
            host_name: "evil".into(),
            ..Default::default()
        }
        .to_pdu(0),
    );
    only_handshake(&s.until_closed());
    let json = w.sys.login().msg_server_json();
    assert!(!json.contains("203.0.113.66"), "{json}");
    assert_eq!(w.sys.login().msg_servers().len(), 2, "only ours");
}

fn store_with_alice(dir: &std::path::Path) -> Arc<dyn Store> {
    let store = SqliteStore::open_with(
        dir,
        StoreOptions {
            hash_params: HashParams::INSECURE_FAST,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let alice = NewUser {
        name: "alice".into(),
        nick: "A".into(),
        ..NewUser::default()
    };
    store.add_user(&alice, &md5_hex(b"secret")).unwrap();
    Arc::new(store)
}

#[test]
fn listed_cpp_peers_skip_authentication_others_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_alice(dir.path());
    let secret = b"0123456789abcdef0123456789abcdef";

    // Secret set, loopback listed: a C++-style peer (no handshake) is served.
    let mut cfg = DbProxyConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.peers = PeerPolicy::with_secret(secret)
        .unwrap()
        .allowing(vec!["127.0.0.0/8".parse().unwrap()]);
    let db = db_proxy::spawn(cfg, Arc::clone(&store)).unwrap();
    let mut s = Stranger::connect(db.addr());
    s.send(&validate("alice"));
    let rsp = s.expect(Command::OtherValidateRsp);
    assert_eq!(rsp.seq(), 1);
    db.stop();

    // Secret set, another network listed: the same peer is closed.
    let mut cfg = DbProxyConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.peers = PeerPolicy::with_secret(secret)
        .unwrap()
        .allowing(vec!["10.0.0.0/8".parse().unwrap()]);
    let db = db_proxy::spawn(cfg, Arc::clone(&store)).unwrap();
    let mut s = Stranger::connect(db.addr());
    s.send(&validate("alice"));
    only_handshake(&s.until_closed());
    db.stop();

    // No secret, a list that does not name us: refused on accept.
    let mut cfg = DbProxyConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.peers = PeerPolicy::open().allowing(vec!["10.0.0.0/8".parse().unwrap()]);
    let db = db_proxy::spawn(cfg, Arc::clone(&store)).unwrap();
    let mut s = Stranger::connect(db.addr());
    s.send(&validate("alice"));
    assert!(s.until_closed().is_empty());
    db.stop();
}

#[test]
fn a_server_port_beyond_loopback_needs_a_secret_or_a_list() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_alice(dir.path());
    let cfg = DbProxyConfig::new("0.0.0.0:0".parse().unwrap());
    let err = db_proxy::spawn(cfg, Arc::clone(&store)).unwrap_err();
    assert!(err.to_string().contains("ClusterSecret"), "{err}");

    let mut cfg = DbProxyConfig::new("0.0.0.0:0".parse().unwrap());
    cfg.peers = PeerPolicy::with_secret(b"0123456789abcdef0123").unwrap();
    db_proxy::spawn(cfg, store)
        .expect("with a secret it starts")
        .stop();
}

#[test]
fn a_msg_server_with_the_wrong_secret_never_links_up() {
    let w = world();
    let mut cfg = daemons::msg::MsgConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        w.sys.db_addr(),
        w.sys.login().msg_server_addr(),
        w.sys.route_addr(),
    );
    cfg.peers = PeerPolicy::with_secret(b"not the cluster's secret at all").unwrap();
    let rogue = daemons::msg::spawn(cfg).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let links_up = rogue
        .inspect(|app| {
            [
                daemons::msg::Upstream::Db,
                daemons::msg::Upstream::Login,
                daemons::msg::Upstream::Route,
            ]
            .iter()
            .filter(|u| app.is_up(**u))
            .count()
        })
        .unwrap();
    assert_eq!(links_up, 0);
    assert_eq!(w.sys.login().msg_servers().len(), 2, "not registered");
    rogue.stop();
}
