//! No client can hurt another through db_proxy and route_server: real
//! daemons on 127.0.0.1 (port 0), a raw TCP peer speaking PDUs as a
//! msg_server would forward a client's requests.
//!
//! - large messages do not make another user's history unanswerable: the
//!   page stops below the frame limit and the next page follows;
//! - over-large requests (0x0204 with 200,000 ids, 0x020a with 200,000
//!   ids) are answered with a failure, never silence;
//! - megabyte user names are refused and leave nothing behind;
//! - a stranger's wrong passwords do not lock the user out;
//! - a resend is stored once.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use daemons::db_proxy::{self, DbProxyConfig, DbProxyServer};
use daemons::password::{HashParams, md5_hex};
use daemons::route::{self, RouteConfig};
use daemons::rules::sizing::{MAX_FRAME_LEN, PAGE_SLACK};
use daemons::store::{NewUser, SqliteStore, Store, StoreOptions};
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::buddy::{ImUsersInfoReq, ImUsersStatReq};
use teamtalk_proto::pb::im::ext::{ImRequestFailed, RequestFailedCode};
use teamtalk_proto::pb::im::message::{ImGetMsgListReq, ImGetMsgListRsp, ImMsgData};
use teamtalk_proto::pb::im::server::{ImValidateReq, ImValidateRsp};
use teamtalk_proto::{Attach, Command, Pdu, PduCodec};

/// A msg_server's connection, raw.
struct Peer {
    sock: TcpStream,
    buf: BytesMut,
    codec: PduCodec,
}

impl Peer {
    fn connect(addr: SocketAddr) -> Self {
        let sock = TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Self {
            sock,
            buf: BytesMut::new(),
            codec: PduCodec::default(),
        }
    }

    fn send(&mut self, pdu: &Pdu) {
        self.sock.write_all(&pdu.to_bytes()).expect("write");
    }

    /// The next PDU that is not a heartbeat; panics on silence or a close.
    fn next(&mut self) -> Pdu {
        loop {
            while let Some(p) = self.codec.decode(&mut self.buf).expect("frames") {
                if !p.is(Command::OtherHeartbeat.key()) {
                    return p;
                }
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = match self.sock.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    panic!("no answer within 20 s")
                }
                Err(e) => panic!("read: {e}"),
            };
            assert!(n > 0, "closed instead of answering");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn call<Q: CommandMessage>(&mut self, seq: u16, req: &Q) -> Pdu {
        self.send(&req.to_pdu(seq));
        let reply = self.next();
        assert_eq!(reply.seq(), seq, "{:?}", reply.key());
        reply
    }
}

fn attach(n: u32) -> Option<Bytes> {
    Some(Attach::handle(n).encode())
}

struct Db {
    server: DbProxyServer,
    _dir: tempfile::TempDir,
}

/// db_proxy on loopback (no cluster secret needed there) with users u1..u8,
/// password "secret".
fn db_proxy() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_with(
        dir.path(),
        StoreOptions {
            hash_params: HashParams::INSECURE_FAST,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    for i in 1..=8 {
        store
            .add_user(
                &NewUser {
                    name: format!("u{i}"),
                    ..NewUser::default()
                },
                &md5_hex(b"secret"),
            )
            .unwrap();
    }
    let server = db_proxy::spawn(
        DbProxyConfig::new("127.0.0.1:0".parse().unwrap()),
        Arc::new(store) as Arc<dyn Store>,
    )
    .expect("db_proxy starts");
    Db { server, _dir: dir }
}

fn request_failed(reply: &Pdu, request: Command) -> ImRequestFailed {
    assert_eq!(
        reply.key(),
        Command::OtherRequestFailed.key(),
        "answer to {request}"
    );
    let f: ImRequestFailed = reply.decode_body().unwrap();
    let key = request.key();
    assert_eq!(
        (f.service_id, f.command_id),
        (u32::from(key.service_id), u32::from(key.command_id))
    );
    f
}

fn message(from: u32, to: u32, body: Bytes, seq: u32) -> ImMsgData {
    ImMsgData {
        from_user_id: from,
        to_session_id: to,
        msg_id: 0,
        create_time: 1_700_000_000,
        msg_type: 1,
        msg_data: body,
        attach_data: attach(seq),
        dedupe_key: None,
        duplicate: None,
    }
}

/// Finding 1: u5 sends u8 eight messages of 200 KB; u8's history request
/// for 20 used to go unanswered (the reply was over the frame limit and
/// dropped). Now it is answered with what fits, and the next page follows.
#[test]
fn large_messages_do_not_make_another_users_history_unreadable() {
    let db = db_proxy();
    let mut p = Peer::connect(db.server.addr());
    for i in 1..=8u8 {
        let m = message(5, 8, Bytes::from(vec![i; 200_000]), u32::from(i));
        let reply: ImMsgData = p.call(u16::from(i), &m).decode_body().unwrap();
        assert_eq!(reply.msg_id, u32::from(i));
    }
    let history = |p: &mut Peer, seq, begin| {
        let reply = p.call(
            seq,
            &ImGetMsgListReq {
                user_id: 8,
                session_type: 1,
                session_id: 5,
                msg_id_begin: begin,
                msg_cnt: 20,
                attach_data: attach(100),
            },
        );
        assert!(reply.wire_len() <= MAX_FRAME_LEN - PAGE_SLACK);
        let rsp: ImGetMsgListRsp = reply.decode_body().unwrap();
        assert_eq!(rsp.attach_data, attach(100));
        rsp.msg_list.iter().map(|m| m.msg_id).collect::<Vec<_>>()
    };
    let first = history(&mut p, 20, 0);
    assert!(!first.is_empty() && first.len() < 8, "{first:?}");
    assert_eq!(first[0], 8);
    let last = *first.last().unwrap();
    let rest = history(&mut p, 21, last - 1);
    let mut all = first;
    all.extend(rest);
    assert_eq!(
        all,
        (1..=8).rev().collect::<Vec<_>>(),
        "the next page follows"
    );
    db.server.stop();
}

/// Finding 1: 200,000 user ids in one 0x0204 get the failure answer.
#[test]
fn a_users_info_request_with_200000_ids_is_answered_with_a_failure() {
    let db = db_proxy();
    let mut p = Peer::connect(db.server.addr());
    let reply = p.call(
        3,
        &ImUsersInfoReq {
            user_id: 1,
            user_id_list: (1..=200_000).collect(),
            attach_data: attach(7),
        },
    );
    let f = request_failed(&reply, Command::BuddyListUserInfoRequest);
    assert_eq!(
        f.result_code,
        RequestFailedCode::RequestFailedBadRequest as u32
    );
    assert_eq!(f.attach_data, attach(7));
    // The connection still serves.
    let reply = p.call(
        4,
        &ImUsersInfoReq {
            user_id: 1,
            user_id_list: vec![2, 3],
            attach_data: attach(8),
        },
    );
    assert!(reply.is(Command::BuddyListUserInfoResponse.key()));
    db.server.stop();
}

/// Finding 1, route_server: 200,000 ids in one 0x020a get
/// `IMRequestFailed` with the request's attach_data.
#[test]
fn a_users_status_request_with_200000_ids_is_answered_with_a_failure() {
    let route = route::spawn(RouteConfig::loopback()).expect("route_server starts");
    let mut p = Peer::connect(route.addrs()[0]);
    let reply = p.call(
        5,
        &ImUsersStatReq {
            user_id: 1,
            user_id_list: (1..=200_000).collect(),
            attach_data: attach(9),
        },
    );
    let f = request_failed(&reply, Command::BuddyListUsersStatusRequest);
    assert_eq!(f.attach_data, attach(9));
    let reply = p.call(
        6,
        &ImUsersStatReq {
            user_id: 1,
            user_id_list: vec![1, 2],
            attach_data: attach(10),
        },
    );
    assert!(reply.is(Command::BuddyListUsersStatusResponse.key()));
    route.stop();
}

fn validate(name: &str, password: &str, client_addr: Option<&str>, n: u32) -> ImValidateReq {
    ImValidateReq {
        user_name: name.to_owned(),
        password: password.to_owned(),
        attach_data: attach(n),
        client_addr: client_addr.map(str::to_owned),
    }
}

/// Finding 2: 150 logins with distinct 1 MB user names are each refused,
/// and the limiter and the credential cache keep nothing of them.
#[test]
fn megabyte_user_names_are_refused_and_leave_the_tables_empty() {
    let db = db_proxy();
    let mut p = Peer::connect(db.server.addr());
    for i in 0..150u32 {
        let mut name = format!("{i:03}").into_bytes();
        name.resize(1_000_000, b'x');
        let name = String::from_utf8(name).unwrap();
        let seq = u16::try_from(i).unwrap();
        let reply = p.call(
            seq,
            &validate(&name, &md5_hex(b"x"), Some("198.51.100.7:1"), i),
        );
        assert!(reply.wire_len() < 200, "the name is not echoed");
        let rsp: ImValidateRsp = reply.decode_body().unwrap();
        assert_ne!(rsp.result_code, 0);
        assert_eq!(rsp.attach_data, attach(i));
    }
    let (oversized, limiter, cache) = db
        .server
        .inspect(|app| {
            let proxy = app.proxy();
            (
                proxy.stats().logins_oversized,
                proxy.limiter().bytes(),
                proxy.credentials().map_or(0, |c| c.bytes()),
            )
        })
        .unwrap();
    assert_eq!((oversized, limiter, cache), (150, 0, 0));
    // And a real login still works.
    let rsp: ImValidateRsp = p
        .call(
            999,
            &validate("u1", &md5_hex(b"secret"), Some("203.0.113.1:2"), 999),
        )
        .decode_body()
        .unwrap();
    assert_eq!(rsp.result_code, 0);
    db.server.stop();
}

/// Finding 3: eleven wrong passwords from one address do not stop the
/// right password from another.
#[test]
fn a_strangers_wrong_passwords_do_not_lock_the_user_out() {
    let db = db_proxy();
    let mut p = Peer::connect(db.server.addr());
    let stranger = Some("198.51.100.7:40000");
    let mut codes = Vec::new();
    for i in 0..11u16 {
        let rsp: ImValidateRsp = p
            .call(
                i,
                &validate("u3", &md5_hex(b"guess"), stranger, u32::from(i)),
            )
            .decode_body()
            .unwrap();
        codes.push(rsp.result_code);
    }
    assert_eq!(&codes[..5], [1, 1, 1, 1, 1]);
    assert!(codes[5..].iter().all(|&c| c == 1 || c == 6), "{codes:?}");
    assert!(codes.contains(&6), "the stranger is slowed down");
    let rsp: ImValidateRsp = p
        .call(
            50,
            &validate("u3", &md5_hex(b"secret"), Some("203.0.113.9:50000"), 50),
        )
        .decode_body()
        .unwrap();
    assert_eq!(rsp.result_code, 0, "{:?}", rsp.result_string);
    assert_eq!(
        rsp.user_info.map(|u| u.user_real_name).as_deref(),
        Some("u3")
    );
    db.server.stop();
}

/// Finding 4: a message resent with the same dedupe key is stored once,
/// and the resend is answered with the first id.
#[test]
fn a_resent_message_is_stored_once() {
    let db = db_proxy();
    let mut p = Peer::connect(db.server.addr());
    let mut m = message(1, 2, Bytes::from_static(b"hello"), 1);
    m.dedupe_key = Some(Bytes::from_static(&[3; 16]));
    let first: ImMsgData = p.call(1, &m).decode_body().unwrap();
    let again: ImMsgData = p.call(2, &m).decode_body().unwrap();
    assert_eq!((first.msg_id, first.duplicate), (1, None));
    assert_eq!((again.msg_id, again.duplicate), (1, Some(true)));
    let stored = db
        .server
        .inspect(|app| app.proxy().store().latest_msg_id(1, 2).unwrap())
        .unwrap();
    assert_eq!(stored, 1);
    db.server.stop();
}
