//! WebSocket in virtual time: the upgrade, one PDU per binary message both
//! ways, the origin check, and every way a browser can break the rules.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use teamtalk_proto::{Command, Pdu};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Role, WebSocket};

use super::{Drive, heartbeat, login_req, msg, pdus, secs, t0};
use crate::ws::{MAX_HANDSHAKE_BYTES, Pipe, Ws, WsConfig, WsError, WsOrigins};
use crate::{CloseReason, Machine, Output, Session, SessionConfig, SessionEvent};

const PAGE: &str = "http://127.0.0.1:8080";

fn peer() -> SocketAddr {
    "198.51.100.7:52000".parse().unwrap()
}

fn config() -> WsConfig {
    WsConfig::new(WsOrigins::List(Arc::from(vec![PAGE.to_owned()])))
}

fn server(config: WsConfig) -> Drive<Ws<Session>> {
    let t = t0();
    Drive::new(
        Ws::server(config, Session::new(SessionConfig::client(), peer(), t), t),
        t,
    )
}

fn upgrade(origin: Option<&str>) -> String {
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{origin}\r\n"
    )
}

/// The browser's end: tungstenite's client role over a pipe.
struct Browser(WebSocket<Pipe>);

impl Browser {
    fn new() -> Self {
        Self(WebSocket::from_raw_socket(
            Pipe::default(),
            Role::Client,
            None,
        ))
    }

    /// The bytes of one message as a browser sends it (masked).
    fn frame(&mut self, m: Message) -> Vec<u8> {
        self.0.send(m).unwrap();
        self.take()
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::take(self.0.get_mut().outbound_mut())
    }

    /// Every message in what the server transmitted.
    fn read(&mut self, bytes: &[u8]) -> Vec<Message> {
        self.0.get_mut().inbound_mut().extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            match self.0.read() {
                Ok(m) => out.push(m),
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return out;
                }
                Err(tungstenite::Error::ConnectionClosed) => return out,
                Err(e) => panic!("browser could not read: {e}"),
            }
        }
    }
}

/// The server's HTTP answer and the bytes after it.
fn split_response(bytes: &[u8]) -> (String, &[u8]) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete HTTP response")
        + 4;
    (
        String::from_utf8_lossy(&bytes[..end]).into_owned(),
        &bytes[end..],
    )
}

fn closed_reason(d: &Drive<Ws<Session>>) -> Option<CloseReason> {
    d.events().into_iter().find_map(|e| match e {
        SessionEvent::Closed(r) => Some(*r),
        _ => None,
    })
}

fn close_code(messages: &[Message]) -> Option<CloseCode> {
    messages.iter().find_map(|m| match m {
        Message::Close(Some(f)) => Some(f.code),
        _ => None,
    })
}

/// Upgraded, logged in, outputs cleared.
fn open() -> (Drive<Ws<Session>>, Browser) {
    let mut d = server(config());
    d.recv(upgrade(Some(PAGE)).as_bytes());
    let sent = d.transmitted();
    let (head, rest) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(rest.is_empty());
    let mut b = Browser::new();
    d.clear();
    let login = b.frame(Message::Binary(login_req(1).to_bytes()));
    d.recv(&login);
    assert!(matches!(d.events()[..], [SessionEvent::LoginRequest(_)]));
    d.call(|s| s.accept_login(7, 0x01)).unwrap();
    d.clear();
    (d, b)
}

#[test]
fn the_upgrade_answers_101_with_the_rfc_accept_key() {
    let mut d = server(config());
    d.recv(upgrade(Some(PAGE)).as_bytes());
    let sent = d.transmitted();
    let (head, _) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 101"));
    // RFC 6455 section 1.3's example key and answer.
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(d.m.is_open());
}

#[test]
fn a_login_pdu_in_a_binary_message_reaches_the_session_and_the_reply_comes_back_as_one() {
    let mut d = server(config());
    // The request arrives in pieces, as TCP may deliver it.
    let req = upgrade(Some(PAGE));
    for chunk in req.as_bytes().chunks(7) {
        d.recv(chunk);
    }
    d.clear();
    let mut b = Browser::new();
    let login = b.frame(Message::Binary(login_req(3).to_bytes()));
    d.recv(&login);
    let [SessionEvent::LoginRequest(p)] = d.events()[..] else {
        panic!("{:?}", d.events())
    };
    assert_eq!(*p, login_req(3));
    // Two PDUs sent back to back leave as two messages.
    d.call(|s| s.accept_login(7, 0x01)).unwrap();
    d.call(|s| s.send(&msg(0, 20))).unwrap();
    d.call(|s| s.send(&msg(0, 30))).unwrap();
    let got = b.read(&d.transmitted());
    assert_eq!(got.len(), 2, "{got:?}");
    for (m, len) in got.iter().zip([20, 30]) {
        let Message::Binary(bytes) = m else {
            panic!("{m:?}")
        };
        let p = pdus(bytes);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].wire_len(), len + 16);
    }
}

#[test]
fn heartbeats_are_echoed_and_the_idle_timeout_still_closes() {
    let (mut d, mut b) = open();
    let hb = b.frame(Message::Binary(heartbeat(5).to_bytes()));
    d.recv(&hb);
    let got = b.read(&d.transmitted());
    assert_eq!(got, [Message::Binary(heartbeat(5).to_bytes())]);
    d.clear();
    d.advance(secs(121));
    assert_eq!(closed_reason(&d), Some(CloseReason::TimedOut));
    assert!(d.finished());
}

#[test]
fn an_origin_not_listed_is_refused_with_403() {
    let mut d = server(config());
    d.recv(upgrade(Some("https://evil.example")).as_bytes());
    let sent = d.transmitted();
    let (head, _) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(
        closed_reason(&d),
        Some(CloseReason::WebSocket(WsError::Origin))
    );
    assert!(d.finished());
}

#[test]
fn origins_compare_exactly_ignoring_case_and_a_trailing_slash() {
    let list = WsOrigins::List(Arc::from(vec!["https://Chat.example.com/".to_owned()]));
    assert!(list.allows(Some("https://chat.example.com")));
    assert!(list.allows(None), "not a browser");
    assert!(!list.allows(Some("https://chat.example.com.evil.net")));
    assert!(!list.allows(Some("http://chat.example.com")));
    assert!(WsOrigins::Any.allows(Some("https://anything")));
}

#[test]
fn a_request_without_origin_is_accepted() {
    let mut d = server(config());
    d.recv(upgrade(None).as_bytes());
    assert!(d.m.is_open());
}

#[test]
fn a_plain_http_request_gets_400_and_a_close() {
    let mut d = server(config());
    d.recv(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let sent = d.transmitted();
    let (head, _) = split_response(&sent);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(
        closed_reason(&d),
        Some(CloseReason::WebSocket(WsError::BadUpgrade))
    );
}

#[test]
fn an_endless_request_head_is_cut_at_the_limit() {
    let mut d = server(config());
    d.recv(b"GET /ws HTTP/1.1\r\n");
    let filler = format!("X-Filler: {}\r\n", "a".repeat(100));
    let mut fed = 18;
    while !d.finished() {
        d.recv(filler.as_bytes());
        fed += filler.len();
    }
    assert!(fed > MAX_HANDSHAKE_BYTES && fed <= MAX_HANDSHAKE_BYTES + filler.len());
    assert_eq!(
        closed_reason(&d),
        Some(CloseReason::WebSocket(WsError::HandshakeTooLarge))
    );
}

#[test]
fn an_upgrade_not_completed_in_time_closes() {
    let mut d = server(config());
    d.recv(b"GET /ws HTTP/1.1\r\n");
    d.advance(secs(9));
    assert!(!d.finished());
    d.advance(secs(1));
    assert_eq!(
        closed_reason(&d),
        Some(CloseReason::WebSocket(WsError::HandshakeTimedOut))
    );
}

#[test]
fn a_text_message_closes_with_1003() {
    let (mut d, mut b) = open();
    let text = b.frame(Message::Text("hello".into()));
    d.recv(&text);
    assert_eq!(
        close_code(&b.read(&d.transmitted())),
        Some(CloseCode::Unsupported)
    );
    assert_eq!(
        closed_reason(&d),
        Some(CloseReason::WebSocket(WsError::Text))
    );
    assert!(d.finished());
}

#[test]
fn two_pdus_in_one_message_close_with_1008() {
    let (mut d, mut b) = open();
    let mut two = msg(1, 5).to_bytes().to_vec();
    two.extend_from_slice(&msg(2, 5).to_bytes());
    let frame = b.frame(Message::Binary(Bytes::from(two)));
    d.recv(&frame);
    assert_eq!(
        close_code(&b.read(&d.transmitted())),
        Some(CloseCode::Policy)
    );
    assert_eq!(
        closed_reason(&d),
        Some(CloseReason::WebSocket(WsError::NotOnePdu))
    );
    assert!(
        !d.events().iter().any(|e| matches!(e, SessionEvent::Pdu(_))),
        "nothing of it delivered"
    );
}

#[test]
fn a_pdu_split_across_two_messages_closes_with_1008() {
    let (mut d, mut b) = open();
    let bytes = msg(1, 40).to_bytes();
    let first = b.frame(Message::Binary(bytes.slice(..20)));
    d.recv(&first);
    assert_eq!(
        closed_reason(&d),
        Some(CloseReason::WebSocket(WsError::NotOnePdu))
    );
}

#[test]
fn an_oversized_message_closes_with_1009() {
    let mut cfg = config();
    cfg.max_pdu_len = 1024;
    let mut d = server(cfg);
    d.recv(upgrade(Some(PAGE)).as_bytes());
    d.clear();
    let mut b = Browser::new();
    let big = b.frame(Message::Binary(msg(1, 2000).to_bytes()));
    d.recv(&big);
    assert_eq!(close_code(&b.read(&d.transmitted())), Some(CloseCode::Size));
    assert_eq!(
        closed_reason(&d),
        Some(CloseReason::WebSocket(WsError::TooLarge))
    );
}

#[test]
fn a_ping_is_answered_with_a_pong() {
    let (mut d, mut b) = open();
    let ping = b.frame(Message::Ping(Bytes::from_static(b"are you there")));
    d.recv(&ping);
    // tungstenite's client answers pongs itself; read the raw reply.
    let got = b.read(&d.transmitted());
    assert_eq!(got, [Message::Pong(Bytes::from_static(b"are you there"))]);
    assert!(!d.finished());
}

#[test]
fn a_close_from_the_browser_ends_the_session_as_a_peer_close() {
    let (mut d, mut b) = open();
    b.0.close(None).unwrap();
    let close = b.take();
    d.recv(&close);
    assert_eq!(closed_reason(&d), Some(CloseReason::PeerClosed));
    assert!(d.finished());
}

#[test]
fn a_close_the_session_asks_for_sends_a_close_frame() {
    let (mut d, mut b) = open();
    d.call(|s| s.close());
    assert_eq!(
        close_code(&b.read(&d.transmitted())),
        Some(CloseCode::Normal)
    );
    assert!(
        d.outputs.iter().any(|(_, o)| matches!(o, Output::Close)),
        "the driver is told to close"
    );
}

#[test]
fn what_the_driver_has_not_sent_counts_towards_the_session_cap() {
    let (mut d, _b) = open();
    let now = d.now;
    d.call(|w| w.set_backlog(now, usize::MAX / 2));
    // Over the cap: the next send closes the slow browser.
    let _ = d.call(|s| s.send(&msg(0, 10)));
    assert_eq!(closed_reason(&d), Some(CloseReason::SendBufferFull));
}

proptest! {
    /// However TCP splits the upgrade and the messages, the session sees
    /// the same PDUs, in order.
    #[test]
    fn any_split_of_the_stream_delivers_the_same_pdus(
        sizes in prop::collection::vec(0usize..300, 1..8),
        cuts in prop::collection::vec(1usize..64, 1..40),
    ) {
        let mut b = Browser::new();
        let mut stream = upgrade(Some(PAGE)).into_bytes();
        let mut sent = vec![login_req(1)];
        stream.extend(b.frame(Message::Binary(login_req(1).to_bytes())));
        let mut d = server(config());
        let mut pos = 0;
        let mut i = 0;
        while pos < stream.len() {
            let n = cuts[i % cuts.len()].min(stream.len() - pos);
            d.recv(&stream[pos..pos + n]);
            pos += n;
            i += 1;
        }
        d.call(|s| s.accept_login(9, 0x01)).unwrap();
        let mut rest = Vec::new();
        for (k, len) in sizes.iter().enumerate() {
            let p = msg(u16::try_from(k).unwrap() + 2, *len);
            rest.extend(b.frame(Message::Binary(p.to_bytes())));
            sent.push(p);
        }
        let mut pos = 0;
        while pos < rest.len() {
            let n = cuts[i % cuts.len()].min(rest.len() - pos);
            d.recv(&rest[pos..pos + n]);
            pos += n;
            i += 1;
        }
        let got: Vec<Pdu> = d
            .events()
            .into_iter()
            .filter_map(|e| match e {
                SessionEvent::LoginRequest(p) | SessionEvent::Pdu(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        prop_assert_eq!(got, sent);
        prop_assert!(!d.finished());
        let _ = Command::LoginReqUserlogin;
    }
}
