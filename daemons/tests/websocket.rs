//! Browsers over WebSocket, end to end: `teamtalk up`'s system serves a
//! WebSocket port per msg_server, login_server names it, and a browser's
//! session (one PDU per binary message) chats with TCP clients under the
//! same rules. Then every way a browser can break the rules, each closing
//! only its own connection.

mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use teamtalk_proto::pb::im::base_define::ClientType;
use teamtalk_proto::pb::im::login::ImLoginReq;
use teamtalk_proto::{Command, Message, Pdu};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message as Ws, WebSocket};

/// A browser's WebSocket to `addr`, sending `origin`.
fn open(addr: SocketAddr, origin: &str) -> Result<WebSocket<TcpStream>, tungstenite::Error> {
    let stream = TcpStream::connect_timeout(&addr, T).expect("connect");
    stream.set_read_timeout(Some(T)).expect("timeout");
    let mut req = format!("ws://{addr}/").into_client_request()?;
    req.headers_mut()
        .insert("Origin", HeaderValue::from_str(origin).expect("origin"));
    tungstenite::client(req, stream)
        .map(|(ws, _)| ws)
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => {
                tungstenite::Error::Io(ErrorKind::WouldBlock.into())
            }
        })
}

fn page(w: &World) -> String {
    format!("http://127.0.0.1:{}", w.sys.http_addr().port())
}

fn send_pdu(ws: &mut WebSocket<TcpStream>, pdu: &Pdu) {
    ws.send(Ws::Binary(pdu.to_bytes())).expect("send");
}

/// The next PDU, skipping pings and presence notices until `want`.
fn next_command(ws: &mut WebSocket<TcpStream>, want: Command) -> Message {
    loop {
        match ws.read().expect("read") {
            Ws::Binary(b) => {
                let pdus = teamtalk_proto_pdus(&b);
                assert_eq!(pdus.len(), 1, "one PDU per message");
                let m = Message::decode(&pdus[0]).expect("decodes");
                if m.key() == want.key() {
                    return m;
                }
            }
            Ws::Close(f) => panic!("closed: {f:?}"),
            _ => {}
        }
    }
}

fn teamtalk_proto_pdus(bytes: &[u8]) -> Vec<Pdu> {
    let mut buf = bytes::BytesMut::from(bytes);
    let mut codec = teamtalk_proto::PduCodec::default();
    let mut out = Vec::new();
    while let Some(p) = codec.decode(&mut buf).expect("framing") {
        out.push(p);
    }
    assert!(buf.is_empty());
    out
}

/// Logs in over WebSocket as `name`; the user id.
fn login(ws: &mut WebSocket<TcpStream>, name: &str) -> u32 {
    let req = ImLoginReq {
        user_name: name.into(),
        password: daemons::password::md5_hex(b"secret"),
        online_status: 1,
        client_type: ClientType::Windows as i32,
        client_version: Some("browser".into()),
    };
    send_pdu(ws, &Command::LoginReqUserlogin.pdu(1, &req));
    let Message::LoginResUserlogin(res) = next_command(ws, Command::LoginResUserlogin) else {
        unreachable!()
    };
    assert_eq!(res.result_code, 0, "{res:?}");
    res.user_info.expect("user").user_id
}

/// What the server does once a browser broke a rule: the close code it
/// sent, if any, and that the connection ended.
fn close_code(ws: &mut WebSocket<TcpStream>) -> Option<CloseCode> {
    loop {
        match ws.read() {
            Ok(Ws::Close(f)) => return f.map(|f| f.code),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

#[test]
fn login_server_names_the_websocket_port_and_a_browser_chats_with_tcp_clients() {
    let w = world();
    // A browser asks login_server where to go.
    let http = w.sys.http_addr();
    let body = ureq::get(format!("http://{http}/msg_server?transport=ws"))
        .call()
        .expect("GET /msg_server")
        .into_body()
        .read_to_string()
        .expect("body");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["code"], 0, "{v}");
    let url = v["wsPrior"].as_str().expect("wsPrior");
    let port: u16 = url
        .trim_start_matches("ws://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .expect("a port");
    assert!(
        w.sys.ws_addrs().iter().any(|a| a.port() == port),
        "{url} is a WebSocket port of the system"
    );

    let mut browser = open(SocketAddr::from(([127, 0, 0, 1], port)), &page(&w)).expect("upgrade");
    let alice = login(&mut browser, "alice");
    assert_eq!(alice, w.user_id("alice"));
    // Route knows alice is online before bob sends (see sync_route).
    let req = teamtalk_proto::pb::im::buddy::ImUsersStatReq {
        user_id: 0,
        user_id_list: vec![alice],
        attach_data: None,
    };
    send_pdu(
        &mut browser,
        &Command::BuddyListUsersStatusRequest.pdu(2, &req),
    );
    next_command(&mut browser, Command::BuddyListUsersStatusResponse);

    // A TCP client on the other msg_server writes to the browser.
    let mut bob = w.login(1, "bob", ClientType::Windows);
    let bob_id = w.user_id("bob");
    send(&mut bob, alice, "hello browser");
    let Message::MsgData(m) = next_command(&mut browser, Command::MsgData) else {
        unreachable!()
    };
    assert_eq!(&m.msg_data[..], b"hello browser");
    assert_eq!(m.from_user_id, bob_id);

    // The browser answers; the server sets the sender from the session.
    let mut reply = text(bob_id, "hello tcp");
    reply.from_user_id = 999;
    send_pdu(&mut browser, &Command::MsgData.pdu(3, &reply));
    let Message::MsgDataAck(ack) = next_command(&mut browser, Command::MsgDataAck) else {
        unreachable!()
    };
    assert!(ack.msg_id > 0);
    let got = receive(&mut bob);
    assert_eq!(&got.msg_data[..], b"hello tcp");
    assert_eq!(got.from_user_id, alice, "identity from the session");
}

#[test]
fn a_page_from_another_origin_is_refused() {
    let w = world();
    let err = open(w.sys.ws_addrs()[0], "https://evil.example").expect_err("refused");
    let tungstenite::Error::Http(r) = err else {
        panic!("{err:?}")
    };
    assert_eq!(r.status(), 403);
}

#[test]
fn rule_breakers_are_closed_with_their_code_and_others_keep_chatting() {
    let w = world();
    let addr = w.sys.ws_addrs()[0];
    let origin = page(&w);
    let mut bob = w.login(0, "bob", ClientType::Windows);
    let carol_id = w.user_id("carol");

    // A text message.
    let mut ws = open(addr, &origin).expect("upgrade");
    ws.send(Ws::Text("{\"login\":1}".into())).expect("send");
    assert_eq!(close_code(&mut ws), Some(CloseCode::Unsupported));

    // Two PDUs in one message.
    let mut ws = open(addr, &origin).expect("upgrade");
    let req = ImLoginReq {
        user_name: "alice".into(),
        password: daemons::password::md5_hex(b"secret"),
        online_status: 1,
        client_type: ClientType::Windows as i32,
        client_version: None,
    };
    let one = Command::LoginReqUserlogin.pdu(1, &req).to_bytes();
    let mut two = one.to_vec();
    two.extend_from_slice(&one);
    ws.send(Ws::Binary(Bytes::from(two))).expect("send");
    assert_eq!(close_code(&mut ws), Some(CloseCode::Policy));

    // A PDU split across two messages.
    let mut ws = open(addr, &origin).expect("upgrade");
    ws.send(Ws::Binary(one.slice(..10))).expect("send");
    assert_eq!(close_code(&mut ws), Some(CloseCode::Policy));

    // A message over the 1 MiB PDU limit.
    let mut ws = open(addr, &origin).expect("upgrade");
    let _ = ws.send(Ws::Binary(Bytes::from(vec![0u8; (1 << 20) + 64])));
    assert_eq!(close_code(&mut ws), Some(CloseCode::Size));

    // A command before login (the same gate as TCP): the session closes,
    // and the WebSocket with it.
    let mut ws = open(addr, &origin).expect("upgrade");
    send_pdu(&mut ws, &Command::MsgData.pdu(1, &text(carol_id, "sneaky")));
    assert_eq!(close_code(&mut ws), Some(CloseCode::Normal));

    // Through all of it, a TCP client is served.
    assert!(send(&mut bob, carol_id, "still here") > 0);
}

#[test]
fn a_browser_that_stops_reading_is_cut_off_without_slowing_others() {
    let w = world();
    let addr = w.sys.ws_addrs()[0];
    let mut ws = open(addr, &page(&w)).expect("upgrade");
    let alice = login(&mut ws, "alice");
    // Make sure route knows where alice is before the flood starts.
    let req = teamtalk_proto::pb::im::buddy::ImUsersStatReq {
        user_id: 0,
        user_id_list: vec![alice],
        attach_data: None,
    };
    send_pdu(&mut ws, &Command::BuddyListUsersStatusRequest.pdu(2, &req));
    next_command(&mut ws, Command::BuddyListUsersStatusResponse);

    // bob floods alice with 16 MB she never reads.
    let (mut bob, _) = RawClient::login(w.msg(0), "bob");
    let body = Bytes::from(vec![b'x'; 60 << 10]);
    let mut wire = Vec::new();
    for seq in 1..=280u16 {
        let mut m = text(alice, "");
        m.msg_data = body.clone();
        m.create_time = u32::from(seq);
        wire.extend_from_slice(&Command::MsgData.pdu(seq, &m).to_bytes());
    }
    bob.write(&wire);
    let mut acked = 0;
    while acked < 280 {
        if bob.next_pdu().is(Command::MsgDataAck.key()) {
            acked += 1;
        }
    }
    // Meanwhile carol chats as usual.
    let mut carol = w.login(1, "carol", ClientType::Windows);
    assert!(send(&mut carol, w.user_id("bob"), "unaffected") > 0);

    // alice's session was closed: what she reads ends before 280
    // deliveries.
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut delivered = 0;
    loop {
        match ws.read() {
            Ok(Ws::Binary(b)) => {
                if teamtalk_proto_pdus(&b)[0].is(Command::MsgData.key()) {
                    delivered += 1;
                }
            }
            Ok(Ws::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    assert!(
        delivered < 280,
        "the slow browser was closed ({delivered} delivered)"
    );
}
