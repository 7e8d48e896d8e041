//! route_server over real sockets: raw TCP "msg_servers" speaking PDUs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use daemons::route::{self, RouteConfig};
use teamtalk_proto::pb::im::base_define::{ClientType, MsgType};
use teamtalk_proto::pb::im::buddy::ImUsersStatReq;
use teamtalk_proto::pb::im::message::ImMsgData;
use teamtalk_proto::pb::im::server::{ImOnlineUserInfo, ImUserStatusUpdate};
use teamtalk_proto::{Command, Message, Pdu, PduCodec};

/// A fake msg_server: a blocking socket and a PDU decoder.
struct RawServer {
    stream: TcpStream,
    codec: PduCodec,
    buf: BytesMut,
}

impl RawServer {
    fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        // A safety net against a hung test, not a measurement.
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Self {
            stream,
            codec: PduCodec::default(),
            buf: BytesMut::new(),
        }
    }

    fn send(&mut self, pdu: &Pdu) {
        self.stream.write_all(&pdu.to_bytes()).expect("send");
    }

    /// The next PDU that is not a heartbeat.
    fn recv(&mut self) -> Pdu {
        loop {
            if let Some(pdu) = self.codec.decode(&mut self.buf).expect("valid frames") {
                if !pdu.is(Command::OtherHeartbeat.key()) {
                    return pdu;
                }
                continue;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "route_server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Receives until a PDU of `cmd` arrives; returns it with everything
    /// skipped on the way.
    fn recv_until(&mut self, cmd: Command) -> (Pdu, Vec<Pdu>) {
        let mut skipped = Vec::new();
        loop {
            let pdu = self.recv();
            if pdu.is(cmd.key()) {
                return (pdu, skipped);
            }
            skipped.push(pdu);
        }
    }

    /// Asks for users' status and waits for the answer: proves that
    /// route_server has processed everything this server sent before.
    fn query(&mut self, seq: u16, users: &[u32]) -> (Vec<(u32, i32)>, Vec<Pdu>) {
        let req = ImUsersStatReq {
            user_id: 1,
            user_id_list: users.to_vec(),
            attach_data: Some(Bytes::from_static(b"attach")),
        };
        self.send(&Command::BuddyListUsersStatusRequest.pdu(seq, &req));
        let (rsp, skipped) = self.recv_until(Command::BuddyListUsersStatusResponse);
        assert_eq!(rsp.seq(), seq);
        let Message::BuddyListUsersStatusResponse(rsp) = Message::decode(&rsp).unwrap() else {
            unreachable!()
        };
        assert_eq!(rsp.attach_data.as_deref(), Some(&b"attach"[..]));
        let stats = rsp
            .user_stat_list
            .iter()
            .map(|s| (s.user_id, s.status))
            .collect();
        (stats, skipped)
    }
}

fn snapshot() -> Pdu {
    Command::OtherOnlineUserInfo.pdu(0, &ImOnlineUserInfo::default())
}

fn login(user_id: u32, ct: ClientType) -> Pdu {
    let msg = ImUserStatusUpdate {
        user_status: 1,
        user_id,
        client_type: ct as i32,
    };
    Command::OtherUserStatusUpdate.pdu(0, &msg)
}

fn is_stat_notify(pdu: &Pdu, user: u32, status: i32) -> bool {
    matches!(Message::decode(pdu),
        Ok(Message::BuddyListStatusNotify(n)) if n.user_stat.user_id == user && n.user_stat.status == status)
}

#[test]
fn messages_reach_only_the_recipients_msg_server() {
    let route = route::spawn(RouteConfig::loopback()).expect("route_server starts");

    let mut a = RawServer::connect(route.addr());
    a.send(&snapshot());
    assert_eq!(a.query(1, &[2]).0, [(2, 2)]);

    // User 2 logs in on a PC at msg_server B. The presence notice comes back
    // to everyone, B included: once B has it, route_server knows.
    let mut b = RawServer::connect(route.addr());
    b.send(&snapshot());
    b.send(&login(2, ClientType::Windows));
    let (note, _) = b.recv_until(Command::BuddyListStatusNotify);
    assert!(is_stat_notify(&note, 2, 1));
    let (note, _) = a.recv_until(Command::BuddyListStatusNotify);
    assert!(is_stat_notify(&note, 2, 1));

    let mut c = RawServer::connect(route.addr());
    c.send(&snapshot());
    c.send(&login(3, ClientType::Ios));
    assert_eq!(c.query(2, &[2, 3]).0, [(2, 1), (3, 2)]);

    // User 1 on A writes to user 2.
    let msg = ImMsgData {
        from_user_id: 1,
        to_session_id: 2,
        msg_id: 11,
        create_time: 1_700_000_000,
        msg_type: MsgType::SingleText as i32,
        msg_data: Bytes::from_static(b"ciphertext"),
        attach_data: None,
        dedupe_key: None,
        duplicate: None,
    };
    let sent = Command::MsgData.pdu(0x1234, &msg);
    a.send(&sent);
    let (got, _) = b.recv_until(Command::MsgData);
    assert_eq!(got.to_bytes(), sent.to_bytes(), "relayed byte for byte");

    // A's own answer comes after anything route_server sent A before it; no
    // copy of the message is among them.
    let (stats, skipped) = a.query(3, &[2, 3, 4]);
    assert_eq!(stats, [(2, 1), (3, 2), (4, 2)]);
    assert!(skipped.iter().all(|p| !p.is(Command::MsgData.key())));
    // B had the message, so route_server handled it before C's query: C
    // would have got its copy before this answer.
    let (_, skipped) = c.query(4, &[]);
    assert!(skipped.iter().all(|p| !p.is(Command::MsgData.key())));

    let (servers, users, counters) = route
        .inspect(|app| (app.server_count(), app.user_count(), app.counters()))
        .expect("route_server answers");
    assert_eq!(servers, 3);
    assert_eq!(users, 2);
    assert_eq!(counters.malformed, 0);

    // B goes away: user 2 had the only PC there, so A hears "offline".
    drop(b);
    let (note, _) = a.recv_until(Command::BuddyListStatusNotify);
    assert!(is_stat_notify(&note, 2, 2), "{note:?}");
    assert_eq!(a.query(5, &[2]).0, [(2, 2)]);

    route.stop();
}

#[test]
fn shutdown_closes_msg_server_connections() {
    let route = route::spawn(RouteConfig::loopback()).expect("route_server starts");
    let mut a = RawServer::connect(route.addr());
    a.send(&snapshot());
    a.query(1, &[]);
    route.stop();
    let mut rest = Vec::new();
    // EOF (or a reset) once the reactor is gone, not the read timeout.
    match a.stream.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}
