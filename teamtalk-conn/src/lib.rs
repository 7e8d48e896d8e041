//! Sans-IO TeamTalk connections: every timing and gating rule of a
//! TeamTalk connection, with no sockets, no threads and no clock.
//!
//! # Why sans-IO
//!
//! The rules that decide when a TeamTalk connection sends a heartbeat,
//! gives up on a silent peer, reconnects, or throws out a client that did
//! not log in are where the C++ daemons hide their subtle behaviour (and
//! bugs). Here they are plain state machines: bytes and the current time
//! go in, bytes and deadlines come out. The same machine then runs under
//! the blocking mio reactor and the tokio adapter of `teamtalk-net`, and
//! tests run hours of virtual time in milliseconds. Reading the clock is
//! forbidden in this crate by a clippy lint (`clippy.toml`:
//! `disallowed-methods`).
//!
//! # The driving contract
//!
//! Every machine implements [`Machine`] (the style of `str0m` and
//! `quinn-proto`):
//!
//! 1. Feed one [`Input`] with [`Machine::handle_input`]: bytes received,
//!    connected, connect failed, peer closed, or a deadline reached. Each
//!    carries the current [`Instant`](std::time::Instant). Inputs never
//!    return errors; failures become events carrying a [`CloseReason`].
//! 2. Then **drain**: call [`Machine::poll_output`] until it returns
//!    [`Output::Timeout`] (the next deadline) or [`Output::Finished`] (drop
//!    the machine). Along the way it hands out bytes to transmit
//!    ([`Output::Transmit`], in order), a connect to start
//!    ([`Output::Connect`]), a socket to shut after flushing
//!    ([`Output::Close`]) and application events ([`Output::Event`]).
//! 3. Application calls (`send`, `accept_login`, `close`, …) are
//!    mutations too: drain after them. Calls that arm a deadline (a
//!    [`Client`]'s requests, login and logout) take the current time as
//!    inputs do.
//! 4. Call back with [`Input::Timeout`] when the deadline passes. Waking
//!    early is harmless. A deadline returned is always strictly later than
//!    the time of the last input, so a driver never spins.
//! 5. The driver owns the socket's write queue and reports its size with
//!    [`Machine::set_backlog`]; a machine whose unsent bytes exceed its
//!    `max_tx_bytes` closes with [`CloseReason::SendBufferFull`], so a peer
//!    that stops reading costs bounded memory.
//! 6. Machines read no OS randomness either. Link authentication (below)
//!    needs a fresh nonce per handshake: it calls the [`NonceSource`] in
//!    its [`ClusterAuth`], which the driver builds around the OS generator
//!    (`getrandom`) and tests build around a seeded one
//!    (`fuzzing::seeded_nonces`). The source is called synchronously,
//!    once per handshake, from inside [`Machine::handle_input`].
//! 7. After each drain the driver asks [`Machine::wants_read`]; while it
//!    is `false` the driver does not read the socket (the bytes wait in
//!    the kernel and the peer's TCP window closes), and it reads again as
//!    soon as it turns `true`. This is read backpressure on one peer: a
//!    [`Session`] stops reading on [`Session::pause_reading`] or when its
//!    PDU credit ([`Session::set_pdu_credit`]) is used up, raises no PDU
//!    event meanwhile, keeps what it had received for after the resume,
//!    and does not count the pause against the peer's idle timeout.
//!
//! A machine that emitted `Close` has given up on the current socket, even
//! when the driver reported the failure itself (closing a dead socket is a
//! no-op). A [`Link`] then connects again after its backoff; a [`Session`]
//! finishes.
//!
//! # Example: a client session through login, in virtual time
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use bytes::Bytes;
//! use teamtalk_conn::{
//!     CloseReason, Input, Login, Machine, Output, Session, SessionConfig, SessionEvent,
//! };
//! use teamtalk_proto::{Command, Pdu};
//!
//! /// One drain: what a driver does after every mutation.
//! fn drain(s: &mut Session, wire: &mut Vec<u8>, events: &mut Vec<SessionEvent>) -> Option<Instant> {
//!     loop {
//!         match s.poll_output() {
//!             Output::Transmit(bytes) => wire.extend_from_slice(&bytes),
//!             Output::Event(e) => events.push(e),
//!             Output::Close | Output::Connect(_) => {}
//!             Output::Timeout(deadline) => return Some(deadline),
//!             Output::Finished => return None,
//!         }
//!     }
//! }
//! let (mut wire, mut events) = (Vec::new(), Vec::new());
//!
//! // The driver reads its clock once per wake-up; any Instant will do here.
//! let t0 = Instant::now();
//! let secs = |s| t0 + Duration::from_secs(s);
//! let mut s = Session::new(SessionConfig::client(), "192.0.2.7:50000".parse()?, t0);
//! // Nothing happens yet: the first deadline is the 15 s login limit.
//! assert_eq!(drain(&mut s, &mut wire, &mut events), Some(secs(15)));
//!
//! // At 1 s the client sends its login request; the session asks the app.
//! let login = Pdu::new(Command::LoginReqUserlogin.key(), 1, Bytes::from_static(b"\x0a\x01u"));
//! s.handle_input(Input::Received(secs(1), &login.to_bytes()));
//! drain(&mut s, &mut wire, &mut events);
//! assert_eq!(events, [SessionEvent::LoginRequest(login)]);
//!
//! // The app checked the password: accept an iOS client (0x11) and reply.
//! s.accept_login(42, 0x11)?;
//! let reply = Pdu::new(Command::LoginReqUserlogin.key(), 1, Bytes::new());
//! s.send(&reply)?;
//! // Logged-in mobile clients may stay silent for 300 s.
//! assert_eq!(drain(&mut s, &mut wire, &mut events), Some(secs(301)));
//! assert_eq!(s.login(), Login::LoggedIn { user_id: 42, client_type: 0x11 });
//! assert_eq!(wire, reply.to_bytes());
//!
//! // A heartbeat at 100 s is echoed byte for byte and pushes the deadline.
//! let hb = Pdu::new(Command::OtherHeartbeat.key(), 9, Bytes::new()).to_bytes();
//! wire.clear();
//! s.handle_input(Input::Received(secs(100), &hb));
//! assert_eq!(drain(&mut s, &mut wire, &mut events), Some(secs(400)));
//! assert_eq!(wire, hb);
//!
//! // Then silence: at the deadline the session closes and finishes.
//! events.clear();
//! s.handle_input(Input::Timeout(secs(400)));
//! assert_eq!(drain(&mut s, &mut wire, &mut events), None);
//! assert_eq!(events, [SessionEvent::Closed(CloseReason::TimedOut)]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Example: a bot on the client side, against a scripted server
//!
//! [`Client`] is the other end: what a TeamTalk client does. This bot logs
//! in and greets user 3; the "server" is a function answering the bot's
//! PDUs, and time is virtual.
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use bytes::BytesMut;
//! use teamtalk_conn::{Client, ClientConfig, ClientEvent, Credentials, Input, Machine, Output};
//! use teamtalk_proto::command::CommandMessage;
//! use teamtalk_proto::pb::im::base_define::{ClientType, UserInfo};
//! use teamtalk_proto::pb::im::login::ImLoginRes;
//! use teamtalk_proto::pb::im::message::{ImMsgData, ImMsgDataAck};
//! use teamtalk_proto::{Message, Pdu, PduCodec};
//!
//! /// The scripted server: accepts any login as user 7, acks every message.
//! fn server(pdu: &Pdu) -> Option<Pdu> {
//!     match Message::decode(pdu).ok()? {
//!         Message::LoginReqUserlogin(_) => {
//!             let user = UserInfo { user_id: 7, ..UserInfo::default() };
//!             let res = ImLoginRes { user_info: Some(user), ..ImLoginRes::default() };
//!             Some(res.to_pdu(pdu.seq()))
//!         }
//!         Message::MsgData(m) => {
//!             let ack = ImMsgDataAck { user_id: 7, session_id: m.to_session_id, msg_id: 1, session_type: 1 };
//!             Some(ack.to_pdu(pdu.seq()))
//!         }
//!         _ => None,
//!     }
//! }
//!
//! let t0 = Instant::now();
//! let cfg = ClientConfig::new(Credentials::new("bot", "pw", ClientType::Windows))
//!     .with_msg_server("127.0.0.1:8000".parse()?);
//! let mut bot = Client::new(cfg, t0);
//! let mut now = t0;
//! let mut log = Vec::new();
//! bot.handle_input(Input::Connected(now)); // the connect succeeds at once
//! loop {
//!     // Drain: bytes go to the scripted server, events to the bot's logic.
//!     let (mut wire, mut events) = (BytesMut::new(), Vec::new());
//!     loop {
//!         match bot.poll_output() {
//!             Output::Transmit(bytes) => wire.extend_from_slice(&bytes),
//!             Output::Event(e) => events.push(e),
//!             Output::Connect(_) | Output::Close => {}
//!             Output::Timeout(_) | Output::Finished => break,
//!         }
//!     }
//!     // The server's answers arrive 1 ms later.
//!     now += Duration::from_millis(1);
//!     let mut answers = Vec::new();
//!     while let Some(pdu) = PduCodec::default().decode(&mut wire)? {
//!         answers.extend(server(&pdu));
//!     }
//!     let mut called = false;
//!     for event in events {
//!         if let ClientEvent::LoggedIn(_) = event {
//!             let hello = ImMsgData { from_user_id: 7, to_session_id: 3, msg_type: 1,
//!                 msg_data: "hello".into(), ..ImMsgData::default() };
//!             bot.request_message(now, &hello)?;
//!             called = true;
//!         }
//!         log.push(event);
//!     }
//!     if answers.is_empty() && !called {
//!         break;
//!     }
//!     for answer in answers {
//!         bot.handle_input(Input::Received(now, &answer.to_bytes()));
//!     }
//! }
//! assert!(matches!(log[..], [
//!     ClientEvent::LoggedIn(_),
//!     ClientEvent::Reply { .. },
//! ]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The [`client`] module documents the life cycle and has a longer bot
//! that echoes messages; `daemons/examples/echo_bot.rs` runs one over real
//! sockets on `teamtalk-net`'s reactor.
//!
//! # Machines and pure pieces
//!
//! - [`Link`]: an outbound server-to-server connection that connects,
//!   authenticates (optionally), greets, heartbeats, times out and
//!   reconnects with a [`Backoff`].
//! - [`Session`]: an accepted connection, either a client behind the login
//!   gate or a server peer (optionally required to authenticate).
//! - [`auth`]: link authentication, a mutual HMAC-SHA256 challenge-response
//!   over a shared cluster secret ([`ClusterKey`]) that [`Link`] and
//!   server-peer [`Session`]s run before any other PDU when their config
//!   has a [`ClusterAuth`]. A failure closes with
//!   [`CloseReason::AuthFailed`]; a peer that sends anything else first,
//!   with [`CloseReason::Unauthenticated`]. A session can admit peers that
//!   do not speak it (C++ TeamTalk daemons) through
//!   [`SessionConfig::allow_unauthenticated`], and tells the application
//!   how each peer got in ([`SessionEvent::Admitted`],
//!   [`Session::peer_auth`]).
//! - [`Client`]: the client side: login_server assignment (asked of the
//!   application), connect, login, heartbeats, silence detection,
//!   reconnects, requests matched to replies by seq, kicks, logout.
//! - [`LoadTable`]: login_server's least-loaded msg_server choice (answers
//!   in flight counted until their login is reported) and its
//!   `/msg_server` JSON.
//! - [`Presence`]: the one-PC-plus-one-mobile multi-login policy.
//! - [`HttpConn`] (module [`http`]): a server-side HTTP/1.1 connection
//!   with header, body, idle and send deadlines, body limits, chunked
//!   bodies and keep-alive, for every HTTP endpoint of the daemons.
//! - [`Tls`]: any of the machines above over TLS (see below).
//!
//! # TLS
//!
//! [`Tls`] wraps any machine (`Tls<Session>`, `Tls<Link>`, or an HTTP
//! connection machine) and runs it over TLS with rustls's sans-IO
//! connection API, keeping the machine's events and application calls
//! (reached through `Deref`). Received bytes are decrypted before the
//! inner machine sees them, and what it transmits is encrypted. The
//! client side starts a fresh handshake on every `Connected` and reports
//! `Connected` to the inner machine only once the server's certificate
//! is verified. Failures close with [`CloseReason::Tls`] carrying a
//! [`TlsError`]; a handshake that does not complete within
//! [`DEFAULT_HANDSHAKE_TIMEOUT`] is one of them. Plain TCP stays the
//! default: TeamTalk clients cannot speak TLS. rustls uses its `ring`
//! crypto provider for randomness and the wall clock for certificate
//! validity; the machine's own timing still comes only from its inputs.
//! Building configs from PEM files needs the file system and so lives in
//! the daemons (`daemons::tls`).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//!
//! use bytes::Bytes;
//! use teamtalk_conn::tls::rustls::pki_types::{PrivatePkcs8KeyDer, ServerName};
//! use teamtalk_conn::tls::rustls::{ClientConfig, RootCertStore, ServerConfig};
//! use teamtalk_conn::tls::crypto_provider;
//! use teamtalk_conn::{
//!     Input, Link, LinkConfig, LinkEvent, Machine, Output, Session, SessionConfig,
//!     SessionEvent, Tls,
//! };
//! use teamtalk_proto::{Command, Pdu};
//!
//! // A self-signed certificate, trusted by the client as its only root.
//! let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
//! let key = PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
//! let server_config = ServerConfig::builder_with_provider(crypto_provider())
//!     .with_safe_default_protocol_versions()?
//!     .with_no_client_auth()
//!     .with_single_cert(vec![cert.cert.der().clone()], key.into())?;
//! let mut roots = RootCertStore::empty();
//! roots.add(cert.cert.der().clone())?;
//! let client_config = ClientConfig::builder_with_provider(crypto_provider())
//!     .with_safe_default_protocol_versions()?
//!     .with_root_certificates(roots)
//!     .with_no_client_auth();
//!
//! // A TLS link and the TLS server-peer session it reaches: the same
//! // machines as in plain TCP, wrapped.
//! let t0 = Instant::now();
//! let addr = "127.0.0.1:10600".parse()?;
//! let name = ServerName::try_from("localhost")?;
//! let link = Link::new(LinkConfig::new(addr), t0);
//! let mut link = Tls::client(Arc::new(client_config), name, link, t0);
//! let session = Session::new(SessionConfig::server_peer(), addr, t0);
//! let mut server = Tls::server(Arc::new(server_config), session, t0);
//!
//! /// One drain: bytes to `wire`, events to `events`.
//! fn drain<M: Machine>(m: &mut M, wire: &mut Vec<u8>, events: &mut Vec<M::Event>) {
//!     loop {
//!         match m.poll_output() {
//!             Output::Transmit(bytes) => wire.extend_from_slice(&bytes),
//!             Output::Event(e) => events.push(e),
//!             Output::Connect(_) | Output::Close => {}
//!             Output::Timeout(_) | Output::Finished => return,
//!         }
//!     }
//! }
//! let (mut to_server, mut to_link) = (Vec::new(), Vec::new());
//! let (mut link_events, mut server_events) = (Vec::new(), Vec::new());
//! drain(&mut link, &mut to_server, &mut link_events); // asks to connect
//! drain(&mut server, &mut to_link, &mut server_events);
//!
//! // The TCP connect completed: the link starts its handshake. Carry the
//! // bytes back and forth until both sides are quiet.
//! link.handle_input(Input::Connected(t0));
//! drain(&mut link, &mut to_server, &mut link_events);
//! while !to_server.is_empty() || !to_link.is_empty() {
//!     server.handle_input(Input::Received(t0, &std::mem::take(&mut to_server)));
//!     drain(&mut server, &mut to_link, &mut server_events);
//!     link.handle_input(Input::Received(t0, &std::mem::take(&mut to_link)));
//!     drain(&mut link, &mut to_server, &mut link_events);
//! }
//! assert_eq!(link_events, [LinkEvent::Up]);
//!
//! // Application calls reach the inner machine; the wire carries records.
//! let pdu = Pdu::new(Command::MsgData.key(), 1, Bytes::from_static(b"secret"));
//! link.send(&pdu)?;
//! drain(&mut link, &mut to_server, &mut link_events);
//! assert!(!to_server.windows(6).any(|w| w == b"secret"));
//! server.handle_input(Input::Received(t0, &to_server));
//! drain(&mut server, &mut to_link, &mut server_events);
//! assert_eq!(server_events, [SessionEvent::Pdu(pdu)]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Timers
//!
//! | constant | value | TeamTalk name | applies to |
//! |---|---|---|---|
//! | [`SERVER_HEARTBEAT_INTERVAL`] | 5 s | `SERVER_HEARTBEAT_INTERVAL` | links and server-peer sessions send a heartbeat when nothing was sent this long |
//! | [`SERVER_TIMEOUT`] | 30 s | `SERVER_TIMEOUT` | links and server-peer sessions close after this long without receiving |
//! | [`CLIENT_TIMEOUT`] | 120 s | `CLIENT_TIMEOUT` | client sessions (PC, or not logged in yet) |
//! | [`MOBILE_CLIENT_TIMEOUT`] | 300 s | `MOBILE_CLIENT_TIMEOUT` | logged-in mobile clients (`client_type & 0x10`) |
//! | [`LOGIN_TIMEOUT`] | 15 s | `TIMEOUT_WATI_LOGIN_RESPONSE` | a client must be logged in this long after connecting |
//! | [`DEFAULT_CONNECT_TIMEOUT`] | 5 s | (none: TeamTalk waits for the kernel) | link connect attempts |
//! | [`DEFAULT_AUTH_TIMEOUT`] ([`ClusterAuth::timeout`]) | 5 s | (ours: TeamTalk has no authentication) | the handshake: from the connect (links), the accept (sessions requiring it) or the hello (sessions that also admit unauthenticated peers); no heartbeat is sent before it completes |
//! | [`TEAMTALK_MIN_RECONNECT`] … [`TEAMTALK_MAX_RECONNECT`] | 4 s … 64 s | `MIN_RECONNECT_CNT`, `MAX_RECONNECT_CNT` | [`Backoff::teamtalk`]: 4, 8, 16, 32, 64, 4, … |
//! | [`DEFAULT_INITIAL_BACKOFF`] … [`DEFAULT_MAX_BACKOFF`] | 1 s … 60 s | (ours) | default [`Backoff::exponential`], jittered to `[d/2, d]`; links and clients |
//! | [`client::DESKTOP_HEARTBEAT_INTERVAL`] | 5 s | Windows client's 5 s heartbeat timer | clients (PC types) send a heartbeat when nothing was sent this long |
//! | [`client::MOBILE_HEARTBEAT_INTERVAL`] | 30 s | iOS client's heartbeat | clients of mobile types |
//! | [`client::CLIENT_SILENCE_TIMEOUT`] | 60 s | the clients' 60 s server check | clients drop a connection after this long without receiving |
//! | [`LOGIN_TIMEOUT`] | 15 s | (the server's login limit) | clients wait this long for the login reply |
//! | [`DEFAULT_CONNECT_TIMEOUT`] | 5 s | (none) | client connect attempts |
//! | [`client::DEFAULT_REQUEST_TIMEOUT`] | 15 s | (ours) | a client request without a reply by then raises `RequestTimedOut` |
//! | [`client::DEFAULT_LOGOUT_TIMEOUT`] | 5 s | (ours) | a client logout waits this long for the answer and the server's close |
//!
//! HTTP connections have their own deadlines (header 10 s, body 30 s,
//! keep-alive idle 15 s, send 30 s): see the [`http`] module.
//!
//! TeamTalk polls these on a 1 s timer, so its deadlines fire up to a second
//! late; ours fire exactly at `last activity + interval`.
#![forbid(unsafe_code)]

use std::time::Duration;

pub mod auth;
mod backoff;
pub mod balance;
pub mod client;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod http;
mod link;
mod machine;
pub mod presence;
mod session;
mod timers;
pub mod tls;
mod wire;
pub mod ws;

#[cfg(test)]
mod tests;

pub use self::http::{
    HttpCloseReason, HttpConfig, HttpConn, HttpEvent, OversizedBody, RespondError,
};
pub use auth::{ClusterAuth, ClusterKey, DEFAULT_AUTH_TIMEOUT, KeyError, NonceSource, PeerAuth};
pub use backoff::{
    Backoff, DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_BACKOFF, TEAMTALK_MAX_RECONNECT,
    TEAMTALK_MIN_RECONNECT,
};
pub use balance::{
    ASSIGNMENT_TTL, LoadTable, MAX_PENDING_ASSIGNMENTS, MsgServerLoad, Refusal, ServiceUrls,
};
pub use client::{
    Client, ClientConfig, ClientEvent, ClientState, ClientStats, Credentials, StopReason,
};
pub use error::{AuthFailure, CloseReason, LoginError, SendError};
pub use link::{Link, LinkConfig, LinkEvent, LinkState};
pub use machine::{Input, Machine, Output};
pub use presence::{ClientClass, Kick, KickReason, Presence};
pub use session::{Heartbeat, Login, Session, SessionConfig, SessionEvent};
pub use tls::{DEFAULT_HANDSHAKE_TIMEOUT, Tls, TlsError};
pub use ws::{Ws, WsConfig, WsError, WsOrigins};

/// Heartbeat period between servers (TeamTalk `SERVER_HEARTBEAT_INTERVAL`).
pub const SERVER_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Silence after which a server-to-server connection is dropped
/// (TeamTalk `SERVER_TIMEOUT`).
pub const SERVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Silence after which a PC client is dropped (TeamTalk `CLIENT_TIMEOUT`).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// Silence after which a mobile client is dropped: phones send heartbeats
/// rarely to save battery (TeamTalk `MOBILE_CLIENT_TIMEOUT`).
pub const MOBILE_CLIENT_TIMEOUT: Duration = Duration::from_secs(300);
/// Time a client has to complete its login (TeamTalk
/// `TIMEOUT_WATI_LOGIN_RESPONSE`).
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Our connect timeout for links; TeamTalk has none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default cap on a connection's unsent bytes: four maximum-size PDUs.
/// TeamTalk's output buffers are unbounded.
pub const DEFAULT_MAX_TX_BYTES: usize = 4 << 20;

/// Whether a TeamTalk `ClientType` is a mobile client (iOS 0x11, Android
/// 0x12): bit 0x10, as TeamTalk's `CHECK_CLIENT_TYPE_MOBILE`.
#[must_use]
pub const fn is_mobile(client_type: u32) -> bool {
    client_type & 0x10 != 0
}
