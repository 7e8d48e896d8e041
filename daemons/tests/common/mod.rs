//! What the end-to-end tests share: a running system with three users,
//! and the client steps they repeat.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use bytes::Bytes;
use daemons::client::{Client, ClientError};
use daemons::password::{HashParams, md5_hex};
use daemons::store::NewUser;
use daemons::system::{self, RunningSystem, SystemConfig};
use teamtalk_proto::pb::im::base_define::ClientType;
use teamtalk_proto::pb::im::buddy::ImUsersStatReq;
use teamtalk_proto::pb::im::message::{ImGetMsgListReq, ImMsgData, ImUnreadMsgCntReq};
use teamtalk_proto::{Command, Message};

pub const T: Duration = Duration::from_secs(10);

pub struct World {
    pub sys: RunningSystem,
    _dir: tempfile::TempDir,
}

pub fn world() -> World {
    // Quick heartbeats from msg_server; the idle timeout stays above the
    // 5 s at which the other daemons send theirs (they do not echo ours),
    // or every link would time out between two of them and reconnect.
    world_with(|cfg| {
        cfg.link_timers = Some((Duration::from_millis(200), Duration::from_secs(8)));
    })
}

/// [`world`] with its configuration adjusted by `tune` before the start.
///
/// With `TEAMTALK_TEST_STORE=mysql` the system keeps its data in MariaDB +
/// Redis (`.ci/services`, a database of its own per world) instead of
/// SQLite: the same client suite runs on both stores.
pub fn world_with(tune: impl FnOnce(&mut SystemConfig)) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = SystemConfig::ephemeral(dir.path(), 2);
    cfg.hash_params = HashParams::INSECURE_FAST;
    if std::env::var("TEAMTALK_TEST_STORE").is_ok_and(|v| v == "mysql") {
        cfg.mysql = daemons::store::mysql_redis::testing::fresh_config();
    }
    tune(&mut cfg);
    let sys = system::start(cfg).expect("system starts");
    assert!(
        sys.wait_ready(T),
        "msg_servers registered with login_server"
    );
    let store = sys.store();
    for name in ["alice", "bob", "carol"] {
        let user = NewUser {
            name: name.into(),
            nick: name.to_uppercase(),
            ..NewUser::default()
        };
        store
            .add_user(&user, &md5_hex(b"secret"))
            .expect("add user");
    }
    World { sys, _dir: dir }
}

impl World {
    pub fn msg(&self, i: usize) -> std::net::SocketAddr {
        self.sys.msg_addrs()[i]
    }

    pub fn login(&self, i: usize, name: &str, ct: ClientType) -> Client {
        let mut c = Client::connect(self.msg(i), T).expect("connect");
        c.login(name, "secret", ct, T).expect("login");
        let me = c.user_id().expect("user id");
        sync_route(&mut c, me);
        c
    }

    pub fn user_id(&self, name: &str) -> u32 {
        self.sys
            .store()
            .verify_login(name, &md5_hex(b"secret"))
            .expect("store")
            .expect("user exists")
            .id
    }
}

pub fn text(to: u32, body: &str) -> ImMsgData {
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

/// Sends a message and waits for its ack; returns the server's msg_id.
pub fn send(c: &mut Client, to: u32, body: &str) -> u32 {
    let reply = c
        .request(Command::MsgData, &text(to, body), Command::MsgDataAck, T)
        .expect("ack");
    let Message::MsgDataAck(ack) = reply else {
        panic!("not an ack: {reply:?}")
    };
    assert_eq!(ack.session_id, to);
    ack.msg_id
}

/// A round trip through route_server on this client's msg_server link.
/// route_server reads that link in order, so once the answer is back it
/// has also seen the presence update of this client's login: a relay to
/// this user from another msg_server cannot race it any more.
pub fn sync_route(c: &mut Client, user: u32) {
    let req = ImUsersStatReq {
        user_id: 0,
        user_id_list: vec![user],
        attach_data: None,
    };
    c.request(
        Command::BuddyListUsersStatusRequest,
        &req,
        Command::BuddyListUsersStatusResponse,
        T,
    )
    .expect("users status answered by route_server");
}

/// Reads until the server closes the connection (other PDUs, such as
/// presence notices, may come first).
pub fn closed(c: &mut Client) -> bool {
    loop {
        match c.recv(T) {
            Err(ClientError::Closed) => return true,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return false,
        }
    }
}

pub fn receive(c: &mut Client) -> ImMsgData {
    match c.wait_command(Command::MsgData, T).expect("delivery") {
        Message::MsgData(m) => m,
        other => panic!("{other:?}"),
    }
}

pub fn history(c: &mut Client, peer: u32) -> Vec<(u32, u32, String)> {
    let req = ImGetMsgListReq {
        user_id: 0,
        session_type: 1,
        session_id: peer,
        msg_id_begin: 0,
        msg_cnt: 100,
        attach_data: None,
    };
    let Message::MsgListResponse(rsp) = c
        .request(Command::MsgListRequest, &req, Command::MsgListResponse, T)
        .expect("history")
    else {
        panic!()
    };
    rsp.msg_list
        .into_iter()
        .map(|m| {
            (
                m.msg_id,
                m.from_session_id,
                String::from_utf8_lossy(&m.msg_data).into_owned(),
            )
        })
        .collect()
}

pub fn unread(c: &mut Client) -> (u32, Vec<(u32, u32)>) {
    let Message::MsgUnreadCntResponse(rsp) = c
        .request(
            Command::MsgUnreadCntRequest,
            &ImUnreadMsgCntReq {
                user_id: 0,
                attach_data: None,
            },
            Command::MsgUnreadCntResponse,
            T,
        )
        .expect("unread")
    else {
        panic!()
    };
    let per = rsp
        .unreadinfo_list
        .iter()
        .map(|u| (u.session_id, u.unread_cnt))
        .collect();
    (rsp.total_cnt, per)
}

/// A client on a raw socket, for what the client machine would not send:
/// bursts in one write, frames it would never build.
pub struct RawClient {
    stream: std::net::TcpStream,
    codec: teamtalk_proto::PduCodec,
    buf: bytes::BytesMut,
}

impl RawClient {
    /// Connects and logs in as `name` (password `secret`); the user id.
    pub fn login(addr: std::net::SocketAddr, name: &str) -> (Self, u32) {
        let stream = std::net::TcpStream::connect_timeout(&addr, T).expect("connect");
        stream.set_read_timeout(Some(T)).expect("timeout");
        let mut c = Self {
            stream,
            codec: teamtalk_proto::PduCodec::default(),
            buf: bytes::BytesMut::new(),
        };
        let req = teamtalk_proto::pb::im::login::ImLoginReq {
            user_name: name.into(),
            password: daemons::password::md5_hex(b"secret"),
            online_status: 1,
            client_type: ClientType::Windows as i32,
            client_version: None,
        };
        c.write(&Command::LoginReqUserlogin.pdu(1, &req).to_bytes());
        let p = c.next_pdu();
        let Ok(Message::LoginResUserlogin(res)) = Message::decode(&p) else {
            panic!("login answer: {p:?}")
        };
        assert_eq!(res.result_code, 0, "{res:?}");
        let id = res.user_info.expect("user info").user_id;
        (c, id)
    }

    /// Writes `bytes` in one call.
    pub fn write(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).expect("write");
    }

    /// The next PDU from the server (within [`T`]).
    pub fn next_pdu(&mut self) -> teamtalk_proto::Pdu {
        use std::io::Read;
        loop {
            if let Some(p) = self.codec.decode(&mut self.buf).expect("framing") {
                return p;
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "closed by the server");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Sends one HTTP/1.1 `request` (head and body, the connection closed
/// after it) to `addr`; the answer's status and body.
pub fn http_exchange(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, T).expect("connect");
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status");
    (status, body.to_owned())
}

/// POSTs `body` and returns the status and the JSON answer.
pub fn post(
    addr: std::net::SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let body = body.to_string();
    let (status, json) = http_exchange(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    (status, serde_json::from_str(&json).expect("JSON"))
}
