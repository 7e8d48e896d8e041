//! [`Client`]: the client side of a TeamTalk connection, as the shipped
//! clients run it.
//!
//! A TeamTalk client asks login_server which msg_server to use (an HTTP
//! `GET /msg_server`), connects there, logs in with the md5hex of its
//! password, sends a heartbeat whenever it has sent nothing for a while,
//! treats a silent server as dead, and starts over after a backoff when
//! the connection is lost. Requests carry a sequence number that the reply
//! echoes. All of that is this machine; the application (a chat program,
//! a bot, a load generator) only sees events.
//!
//! The HTTP exchange is I/O and stays outside: the machine raises
//! [`ClientEvent::AssignmentNeeded`], the application performs the request
//! (or knows the address) and answers with [`Client::assigned`] or
//! [`Client::assignment_failed`]. A client configured with a fixed
//! msg_server ([`ClientConfig::msg_server`]) never asks.
//!
//! ```text
//!            assigned(addr)           Connected           login reply ok
//! Assigning ───────────────▶ Connecting ────────▶ LoggingIn ──────────────▶ Online ──logout()──▶ LoggingOut
//!     ▲                          │                    │ refused: bad         │                      │ reply + server
//!     │                          │ failed / timeout   │ password ─▶ Stopped  │ lost: silence,       │ close, or timeout
//!     └── backoff ◀──────────────┴────────────────────┴──────────────────────┘ peer closed, kick     ▼
//!                                                                                                  Stopped
//! ```
//!
//! # Requests and replies
//!
//! [`Client::request`] gives the PDU the next sequence number (never 0;
//! it wraps) and remembers it with a deadline. TeamTalk answers a request
//! with the next command id of the same service under the same seq
//! (`0x0301` → `0x0302`, `0x0103` → `0x0104`, …); such a PDU raises
//! [`ClientEvent::Reply`]. Every request ends in exactly one of `Reply`,
//! [`ClientEvent::RequestTimedOut`] or [`ClientEvent::RequestFailed`] (the
//! connection went away first): nothing is silently lost. Anything else
//! the server sends (messages, notices, answers to nothing we asked) is a
//! [`ClientEvent::Push`].
//!
//! Application calls that arm a deadline ([`Client::request`],
//! [`Client::logout`], …) take the current time: a machine cannot read
//! the clock, and the time of its last input may be seconds old.
//!
//! # Example: a bot against a scripted server, in virtual time
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use bytes::BytesMut;
//! use teamtalk_conn::client::{Client, ClientConfig, ClientEvent, Credentials};
//! use teamtalk_conn::{Input, Machine, Output};
//! use teamtalk_proto::pb::im::base_define::{ClientType, UserInfo};
//! use teamtalk_proto::pb::im::login::{ImLoginReq, ImLoginRes};
//! use teamtalk_proto::pb::im::message::ImMsgData;
//! use teamtalk_proto::command::CommandMessage;
//! use teamtalk_proto::{Command, Message, Pdu, PduCodec};
//!
//! /// One drain: returns the PDUs written, the events, and the deadline.
//! fn drain(c: &mut Client) -> (Vec<Pdu>, Vec<ClientEvent>, Option<Instant>) {
//!     let (mut wire, mut events) = (BytesMut::new(), Vec::new());
//!     let deadline = loop {
//!         match c.poll_output() {
//!             Output::Transmit(bytes) => wire.extend_from_slice(&bytes),
//!             Output::Event(e) => events.push(e),
//!             Output::Connect(_) | Output::Close => {}
//!             Output::Timeout(t) => break Some(t),
//!             Output::Finished => break None,
//!         }
//!     };
//!     let mut pdus = Vec::new();
//!     while let Some(p) = PduCodec::default().decode(&mut wire).unwrap() {
//!         pdus.push(p);
//!     }
//!     (pdus, events, deadline)
//! }
//! let t0 = Instant::now();
//! let at = |ms| t0 + Duration::from_millis(ms);
//!
//! // The bot: log in as "echo" and send every message back to its sender.
//! let creds = Credentials::new("echo", "secret", ClientType::Windows);
//! let mut cfg = ClientConfig::new(creds);
//! cfg.msg_server = Some("127.0.0.1:8000".parse()?);
//! let mut bot = Client::new(cfg, t0);
//! drain(&mut bot); // Output::Connect(127.0.0.1:8000)
//!
//! // The scripted server accepts the connection: the login request goes out.
//! bot.handle_input(Input::Connected(at(1)));
//! let (sent, _, _) = drain(&mut bot);
//! let Ok(Message::LoginReqUserlogin(req)) = Message::decode(&sent[0]) else { panic!() };
//! assert_eq!(req.user_name, "echo");
//! assert_eq!(req.password, "5ebe2294ecd0e0f08eab7690d2a6ee69"); // md5hex("secret")
//!
//! // It accepts the login.
//! let user = UserInfo { user_id: 7, ..UserInfo::default() };
//! let ok = ImLoginRes { server_time: 1, result_code: 0, user_info: Some(user), ..Default::default() };
//! bot.handle_input(Input::Received(at(2), &ok.to_pdu(sent[0].seq()).to_bytes()));
//! let (_, events, _) = drain(&mut bot);
//! assert!(matches!(&events[..], [ClientEvent::LoggedIn(_)]));
//! assert_eq!(bot.user_id(), Some(7));
//!
//! // A message from user 3 arrives: the machine acks the delivery itself
//! // and hands the message to the bot, which echoes it as a request.
//! let hello = ImMsgData { from_user_id: 3, to_session_id: 7, msg_id: 11, msg_type: 1,
//!     msg_data: "hi".into(), ..Default::default() };
//! bot.handle_input(Input::Received(at(3), &hello.to_pdu(0).to_bytes()));
//! let (sent, events, _) = drain(&mut bot);
//! assert_eq!(sent[0].key(), Command::MsgDataAck.key());
//! for event in events {
//!     if let ClientEvent::Push(pdu) = event
//!         && let Ok(Message::MsgData(m)) = Message::decode(&pdu)
//!     {
//!         let echo = ImMsgData { from_user_id: 7, to_session_id: m.from_user_id, ..m };
//!         bot.request(at(3), &echo.to_pdu(0))?;
//!     }
//! }
//! let (sent, _, deadline) = drain(&mut bot);
//! assert_eq!(sent[0].key(), Command::MsgData.key());
//! // Next wake-up: the heartbeat, 5 s after the last send.
//! assert_eq!(deadline, Some(at(3) + Duration::from_secs(5)));
//!
//! // The server never acks the echo: after 15 s the request times out.
//! bot.handle_input(Input::Timeout(at(3) + Duration::from_secs(15)));
//! let (_, events, _) = drain(&mut bot);
//! assert!(matches!(&events[..], [ClientEvent::RequestTimedOut { .. }]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Over real sockets the same machine runs on `teamtalk-net`'s reactor
//! (`Reactor<Client>`); the daemons crate has a runnable bot built that
//! way (`daemons/examples/echo_bot.rs`).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use md5::{Digest, Md5};
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::base_define::{ClientType, ResultType, UserStatType};
use teamtalk_proto::pb::im::login::{ImKickUser, ImLoginReq, ImLoginRes, ImLogoutReq};
use teamtalk_proto::pb::im::message::{ImMsgData, ImMsgDataAck};
use teamtalk_proto::{Command, CommandKey, DEFAULT_MAX_PDU_LEN, Pdu};
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::error::{CloseReason, SendError};
use crate::machine::{Input, Machine, Output};
use crate::timers::{Timer, TimerTable};
use crate::wire::{Outbox, Wire, input_kind};
use crate::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_TX_BYTES, LOGIN_TIMEOUT, is_mobile};

/// Heartbeat period of TeamTalk's Windows client: it sends one every 5 s.
pub const DESKTOP_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Heartbeat period of TeamTalk's iOS client (30 s): phones save battery.
pub const MOBILE_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// Silence after which TeamTalk's clients treat the server as dead (60 s;
/// the server echoes every heartbeat, so a live one is never that quiet).
pub const CLIENT_SILENCE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time a request waits for its reply.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Default time a logout waits for the server's answer and close.
pub const DEFAULT_LOGOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default cap on requests waiting for a reply.
pub const DEFAULT_MAX_PENDING: usize = 1024;
/// The most requests that can wait at once: one per nonzero seq, less a
/// margin so that a free seq is always found quickly.
const MAX_PENDING_CAP: usize = 60_000;
/// Durations are clamped to at least this, so no deadline equals the
/// input time that armed it (a driver would spin).
const MIN_DURATION: Duration = Duration::from_millis(1);

/// Who logs in, as TeamTalk's `IMLoginReq` carries it.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Credentials {
    /// Login name.
    pub user_name: String,
    /// md5hex of the password (32 lowercase hex digits): TeamTalk clients
    /// never send the password itself.
    pub password_md5: String,
    /// Presence to log in with (`UserStatType`, online by default).
    pub online_status: UserStatType,
    /// Platform presented to the server; mobile types (bit 0x10) change
    /// the server's idle limit and the one-PC-one-phone kick policy.
    pub client_type: ClientType,
    /// Free text the server may log.
    pub client_version: String,
}

impl Credentials {
    /// Credentials from a plain-text password, sent as its md5hex.
    #[must_use]
    pub fn new(user_name: &str, password: &str, client_type: ClientType) -> Self {
        Self::with_md5(user_name, md5_hex(password.as_bytes()), client_type)
    }

    /// Credentials from a password already in md5hex form.
    #[must_use]
    pub fn with_md5(user_name: &str, password_md5: String, client_type: ClientType) -> Self {
        Self {
            user_name: user_name.to_owned(),
            password_md5,
            online_status: UserStatType::UserStatusOnline,
            client_type,
            client_version: concat!("teamtalk-rs ", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }

    fn request(&self) -> ImLoginReq {
        ImLoginReq {
            user_name: self.user_name.clone(),
            password: self.password_md5.clone(),
            online_status: self.online_status as i32,
            client_type: self.client_type as i32,
            client_version: Some(self.client_version.clone()),
        }
    }
}

impl fmt::Debug for Credentials {
    /// Leaves the password out: it is a password equivalent on the wire.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user_name", &self.user_name)
            .field("client_type", &self.client_type)
            .field("online_status", &self.online_status)
            .field("client_version", &self.client_version)
            .finish_non_exhaustive()
    }
}

/// md5hex of `data`, lowercase, as TeamTalk clients send passwords.
#[must_use]
pub fn md5_hex(data: &[u8]) -> String {
    use std::fmt::Write;
    let digest = Md5::digest(data);
    let mut out = String::with_capacity(32);
    for b in digest.iter() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Settings of one [`Client`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Who to log in as. `None`: connect without logging in and raise
    /// [`ClientEvent::Connected`]; the application logs in later with
    /// [`Client::login`] (the blocking client's `connect` then `login`).
    pub credentials: Option<Credentials>,
    /// A fixed msg_server. `None`: before every connect, raise
    /// [`ClientEvent::AssignmentNeeded`] and wait for the application's
    /// answer, as TeamTalk clients ask login_server each time.
    pub msg_server: Option<SocketAddr>,
    /// Give up a connect attempt after this long.
    pub connect_timeout: Duration,
    /// Wait this long for the login reply ([`LOGIN_TIMEOUT`], 15 s: the
    /// server drops a connection that is not logged in by then anyway).
    pub login_timeout: Duration,
    /// Send a heartbeat when nothing was sent for this long
    /// ([`DESKTOP_HEARTBEAT_INTERVAL`] or, for mobile client types,
    /// [`MOBILE_HEARTBEAT_INTERVAL`]).
    pub heartbeat_interval: Duration,
    /// Treat the connection as dead when nothing was received for this long
    /// ([`CLIENT_SILENCE_TIMEOUT`], 60 s).
    pub silence_timeout: Duration,
    /// Default deadline of a request ([`DEFAULT_REQUEST_TIMEOUT`]).
    pub request_timeout: Duration,
    /// How long [`Client::logout`] waits for the answer and the server's
    /// close ([`DEFAULT_LOGOUT_TIMEOUT`]).
    pub logout_timeout: Duration,
    /// Waits between connection attempts (reset by a successful login).
    pub backoff: Backoff,
    /// Reconnect after a loss. Off: the first loss stops the client.
    pub reconnect: bool,
    /// Reconnect after a kick too. Off by default: both of TeamTalk's kick
    /// reasons mean another session of the same user asked this one to
    /// leave (a second login of the same class, or the phone dismissing
    /// the PC), and logging in again would kick that one in turn.
    pub reconnect_after_kick: bool,
    /// Stop when a logout completes (the default). Off: the client stays,
    /// idle and unconnected, after raising [`ClientEvent::LoggedOut`], and
    /// [`Client::login`] signs in again (as the same or another user) on
    /// a new connection, as TeamTalk's clients switch accounts.
    pub stop_after_logout: bool,
    /// Acknowledge every delivered message (`CID_MSG_DATA`) with
    /// `CID_MSG_DATA_ACK`, as TeamTalk clients do; the server counts
    /// unacknowledged deliveries as missed.
    pub ack_deliveries: bool,
    /// Most requests waiting for a reply at once.
    pub max_pending: usize,
    /// Largest PDU accepted or sent, header included.
    pub max_frame_len: u32,
    /// Cap on bytes not yet accepted by the socket; beyond it the
    /// connection is dropped with [`CloseReason::SendBufferFull`].
    pub max_tx_bytes: usize,
}

impl ClientConfig {
    /// TeamTalk's client timers for `credentials`' client type, a
    /// login_server assignment before each connect, reconnects with our
    /// default jittered backoff (seeded from the user name, so many
    /// clients restarting together spread out).
    #[must_use]
    pub fn new(credentials: Credentials) -> Self {
        let mut h = DefaultHasher::new();
        credentials.user_name.hash(&mut h);
        let heartbeat_interval = if is_mobile(credentials.client_type as u32) {
            MOBILE_HEARTBEAT_INTERVAL
        } else {
            DESKTOP_HEARTBEAT_INTERVAL
        };
        Self {
            heartbeat_interval,
            backoff: Backoff::default_jittered(h.finish()),
            credentials: Some(credentials),
            ..Self::without_login()
        }
    }

    /// Settings that connect without logging in (see
    /// [`ClientConfig::credentials`]).
    #[must_use]
    pub fn without_login() -> Self {
        Self {
            credentials: None,
            msg_server: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            login_timeout: LOGIN_TIMEOUT,
            heartbeat_interval: DESKTOP_HEARTBEAT_INTERVAL,
            silence_timeout: CLIENT_SILENCE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            logout_timeout: DEFAULT_LOGOUT_TIMEOUT,
            backoff: Backoff::default_jittered(0),
            reconnect: true,
            reconnect_after_kick: false,
            stop_after_logout: true,
            ack_deliveries: true,
            max_pending: DEFAULT_MAX_PENDING,
            max_frame_len: DEFAULT_MAX_PDU_LEN,
            max_tx_bytes: DEFAULT_MAX_TX_BYTES,
        }
    }

    /// Connects to this msg_server instead of asking for an assignment.
    #[must_use]
    pub fn with_msg_server(mut self, addr: SocketAddr) -> Self {
        self.msg_server = Some(addr);
        self
    }

    /// Replaces the reconnect schedule.
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    fn clamped(mut self) -> Self {
        for d in [
            &mut self.connect_timeout,
            &mut self.login_timeout,
            &mut self.heartbeat_interval,
            &mut self.silence_timeout,
            &mut self.request_timeout,
            &mut self.logout_timeout,
        ] {
            *d = (*d).max(MIN_DURATION);
        }
        self.max_pending = self.max_pending.min(MAX_PENDING_CAP);
        self
    }
}

/// Whether a login refusal is the servers' trouble (retry later) rather
/// than the client's (wrong password, too old a version: retrying cannot
/// help). Unknown codes count as final, so a client never loops on a
/// refusal it does not understand.
#[must_use]
pub fn is_transient_refusal(code: i32) -> bool {
    [
        ResultType::RefuseReasonNoMsgServer,
        ResultType::RefuseReasonMsgServerFull,
        ResultType::RefuseReasonNoDbServer,
        ResultType::RefuseReasonNoLoginServer,
        ResultType::RefuseReasonNoRouteServer,
    ]
    .iter()
    .any(|r| *r as i32 == code)
}

/// Why a [`Client`] stopped for good.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// [`Client::logout`] completed. `clean`: the server answered and
    /// closed the connection itself (so it, not the client, keeps the
    /// socket's TIME_WAIT); otherwise the logout timed out and the client
    /// closed.
    LoggedOut {
        /// Answered and closed by the server.
        clean: bool,
    },
    /// [`Client::close`].
    Closed,
    /// The server refused the login for a reason retrying cannot fix (see
    /// [`is_transient_refusal`]), or reconnecting is off.
    LoginRefused {
        /// `ResultType` code.
        code: i32,
    },
    /// The server kicked the client and [`ClientConfig::reconnect_after_kick`]
    /// is off.
    Kicked {
        /// `KickReasonType` (1 duplicate login, 2 kicked by the phone).
        reason: i32,
    },
    /// The connection was lost and [`ClientConfig::reconnect`] is off.
    Disconnected(CloseReason),
}

/// What a [`Client`] tells the application.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// Which msg_server? Ask login_server (`GET /msg_server`) and answer
    /// with [`Client::assigned`] or [`Client::assignment_failed`].
    AssignmentNeeded,
    /// Connected to this msg_server without credentials:
    /// [`Client::login`] (or [`Client::send`]) may follow. With
    /// credentials the login request goes out at once and the next event
    /// is the login's outcome, so none is raised (one wake-up less per
    /// connection for a driver holding many).
    Connected(SocketAddr),
    /// The server accepted the login: its reply, with the user's
    /// `user_info` and the `server_time`. Requests work from now on.
    LoggedIn(Box<ImLoginRes>),
    /// The server refused the login.
    LoginRefused {
        /// `ResultType` code (6: wrong user name or password).
        code: i32,
        /// `result_string`.
        text: String,
        /// Whether the client will try again after a backoff (only for
        /// [transient](is_transient_refusal) refusals).
        retrying: bool,
    },
    /// The server kicked this client; the client closed the connection.
    Kicked {
        /// `KickReasonType` (1 duplicate login, 2 kicked by the phone; 0
        /// when the notice did not parse).
        reason: i32,
        /// Whether the client will log in again after a backoff.
        reconnecting: bool,
    },
    /// The connection (or the attempt to make one) was lost.
    Disconnected(CloseReason),
    /// The next attempt starts after this wait.
    Reconnecting {
        /// The backoff.
        after: Duration,
    },
    /// The reply to request `seq`.
    Reply {
        /// The request's sequence number.
        seq: u16,
        /// The reply.
        pdu: Pdu,
    },
    /// Request `seq` got no reply in time; a late reply becomes a `Push`.
    RequestTimedOut {
        /// The request's sequence number.
        seq: u16,
        /// The request's command.
        command: CommandKey,
    },
    /// The connection went away before request `seq` was answered.
    RequestFailed {
        /// The request's sequence number.
        seq: u16,
        /// Why the connection went away.
        reason: CloseReason,
    },
    /// A PDU the server sent on its own: a message, a notice, or an answer
    /// no request waits for. Heartbeats, login replies and kicks are
    /// handled inside.
    Push(Pdu),
    /// A logout completed and the client stays
    /// ([`ClientConfig::stop_after_logout`] off): unconnected until
    /// [`Client::login`]. `clean` as in [`StopReason::LoggedOut`].
    LoggedOut {
        /// Answered and closed by the server.
        clean: bool,
    },
    /// The client is done; raised exactly once, just before
    /// [`Output::Finished`].
    Stopped(StopReason),
}

/// Where a [`Client`] is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientState {
    /// Waiting for the application's answer to
    /// [`ClientEvent::AssignmentNeeded`].
    Assigning,
    /// A connect to `addr` is in flight.
    Connecting {
        /// The msg_server.
        addr: SocketAddr,
    },
    /// Connected without credentials, waiting for [`Client::login`].
    Connected,
    /// The login request is sent; waiting for the reply.
    LoggingIn,
    /// Logged in.
    Online,
    /// The logout request is sent.
    LoggingOut,
    /// Waiting before the next attempt.
    Backoff {
        /// When it starts.
        until: Instant,
    },
    /// Logged out and staying, unconnected, until [`Client::login`].
    LoggedOut,
    /// Done.
    Stopped,
}

/// Counters of one client's life, for tools and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Connect attempts started.
    pub connects: u64,
    /// Logins accepted.
    pub logins: u64,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Requests queued (each ends in one of the three next counters, or is
    /// still pending).
    pub requests: u64,
    /// Requests answered.
    pub replies: u64,
    /// Requests that timed out.
    pub timed_out: u64,
    /// Requests failed by a lost connection.
    pub failed: u64,
    /// PDUs raised as [`ClientEvent::Push`].
    pub pushes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Assigning,
    Connecting,
    Connected,
    LoggingIn,
    Online,
    LoggingOut { answered: bool },
    Backoff,
    LoggedOut,
    Stopped,
}

impl State {
    /// A socket is open.
    fn has_socket(self) -> bool {
        matches!(
            self,
            Self::Connected | Self::LoggingIn | Self::Online | Self::LoggingOut { .. }
        )
    }
}

/// A request waiting for its reply.
#[derive(Debug, Clone, Copy)]
struct Pending {
    command: CommandKey,
    deadline: Instant,
}

/// The client side of a TeamTalk connection (see the [module](self) docs).
#[derive(Debug)]
pub struct Client {
    cfg: ClientConfig,
    state: State,
    now: Instant,
    timers: TimerTable,
    wire: Wire,
    out: Outbox<ClientEvent>,
    /// The msg_server of the current or last connection.
    addr: Option<SocketAddr>,
    /// An assignment given ahead, for the next connect.
    next_addr: Option<SocketAddr>,
    last_seq: u16,
    pending: HashMap<u16, Pending>,
    /// `(deadline, seq)` of every pending request, earliest first.
    deadlines: BTreeSet<(Instant, u16)>,
    user_id: Option<u32>,
    stats: ClientStats,
}

impl Client {
    /// Creates a client; the first drain asks for an assignment or
    /// connects.
    #[must_use]
    pub fn new(cfg: ClientConfig, now: Instant) -> Self {
        let cfg = cfg.clamped();
        let wire = Wire::new(cfg.max_frame_len, cfg.max_tx_bytes);
        let mut c = Self {
            cfg,
            state: State::Backoff,
            now,
            timers: TimerTable::default(),
            wire,
            out: Outbox::default(),
            addr: None,
            next_addr: None,
            last_seq: 0,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            user_id: None,
            stats: ClientStats::default(),
        };
        c.start();
        c
    }

    /// Where the client is in its life cycle.
    #[must_use]
    pub fn state(&self) -> ClientState {
        match self.state {
            State::Assigning => ClientState::Assigning,
            State::Connecting => ClientState::Connecting {
                addr: self
                    .addr
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            },
            State::Connected => ClientState::Connected,
            State::LoggingIn => ClientState::LoggingIn,
            State::Online => ClientState::Online,
            State::LoggingOut { .. } => ClientState::LoggingOut,
            State::Backoff => ClientState::Backoff {
                until: self.timers.get(Timer::Backoff).unwrap_or(self.now),
            },
            State::LoggedOut => ClientState::LoggedOut,
            State::Stopped => ClientState::Stopped,
        }
    }

    /// Whether the login is accepted and requests can be sent.
    #[must_use]
    pub fn is_online(&self) -> bool {
        self.state == State::Online
    }

    /// The user id of the last accepted login.
    #[must_use]
    pub fn user_id(&self) -> Option<u32> {
        self.user_id
    }

    /// The msg_server of the current (or last) connection.
    #[must_use]
    pub fn msg_server(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Requests waiting for a reply.
    #[must_use]
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// The application's answer to [`ClientEvent::AssignmentNeeded`]:
    /// connect to `addr`. Given while no assignment is awaited (the
    /// application asked login_server ahead, e.g. before [`Client::login`]
    /// after a logout), it is kept for the next connect, which then asks
    /// for none; a later one replaces it. Ignored once stopped, or when the
    /// msg_server is fixed. Follow with a drain.
    pub fn assigned(&mut self, now: Instant, addr: SocketAddr) {
        self.advance(now);
        match self.state {
            State::Assigning => self.connect(addr),
            State::Stopped => debug!(%addr, "assignment after the client stopped; ignored"),
            _ if self.cfg.msg_server.is_some() => {
                debug!(%addr, "assignment for a client with a fixed msg_server; ignored");
            }
            _ => self.next_addr = Some(addr),
        }
        self.fire_timers();
    }

    /// The application could not get an assignment (login_server
    /// unreachable, or it has no msg_server): back off and ask again.
    /// Ignored when no assignment is awaited. Follow with a drain.
    pub fn assignment_failed(&mut self, now: Instant, reason: &str) {
        self.advance(now);
        if self.state == State::Assigning {
            debug!(reason, "assignment failed");
            self.retry_or_stop(
                self.cfg.reconnect,
                StopReason::Disconnected(CloseReason::ConnectFailed),
            );
        } else {
            debug!(reason, state = ?self.state, "assignment failure not awaited; ignored");
        }
        self.fire_timers();
    }

    /// Sets the credentials and, when connected without them, sends the
    /// login request now; after a logout that kept the client
    /// ([`ClientConfig::stop_after_logout`] off), starts a new connection
    /// (asking for an assignment first, unless the msg_server is fixed).
    /// Otherwise they are used from the next connection on. Follow with a
    /// drain.
    pub fn login(&mut self, now: Instant, credentials: Credentials) {
        self.advance(now);
        self.cfg.credentials = Some(credentials);
        match self.state {
            State::Connected => self.send_login(),
            State::LoggedOut => {
                self.cfg.backoff.reset();
                self.start();
            }
            _ => {}
        }
        self.fire_timers();
    }

    /// Sends `pdu` as a request: it gets the next sequence number and
    /// waits [`ClientConfig::request_timeout`] for its reply. Returns the
    /// seq, which the [`ClientEvent::Reply`],
    /// [`ClientEvent::RequestTimedOut`] or [`ClientEvent::RequestFailed`]
    /// that ends it carries. Follow with a drain.
    ///
    /// # Errors
    /// [`SendError::NotConnected`] (no connection right now),
    /// [`SendError::NotLoggedIn`] (login or logout under way),
    /// [`SendError::Closed`] (stopped), [`SendError::TooManyPending`],
    /// [`SendError::TooLarge`], and [`SendError::BufferFull`] (the
    /// connection is then dropped).
    pub fn request(&mut self, now: Instant, pdu: &Pdu) -> Result<u16, SendError> {
        self.request_with_timeout(now, pdu, self.cfg.request_timeout)
    }

    /// [`Client::request`] for a typed message.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub fn request_message<M: CommandMessage>(
        &mut self,
        now: Instant,
        msg: &M,
    ) -> Result<u16, SendError> {
        self.request(now, &msg.to_pdu(0))
    }

    /// [`Client::request`] with its own deadline.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub fn request_with_timeout(
        &mut self,
        now: Instant,
        pdu: &Pdu,
        timeout: Duration,
    ) -> Result<u16, SendError> {
        self.advance(now);
        self.check_sendable()?;
        if self.pending.len() >= self.cfg.max_pending {
            return Err(SendError::TooManyPending {
                max: self.cfg.max_pending,
            });
        }
        let seq = self.alloc_seq();
        let mut pdu = pdu.clone();
        pdu.header.seq_num = seq;
        self.queue(&pdu)?;
        let deadline = self.now + timeout.max(MIN_DURATION);
        self.pending.insert(
            seq,
            Pending {
                command: pdu.key(),
                deadline,
            },
        );
        self.deadlines.insert((deadline, seq));
        self.stats.requests += 1;
        self.arm_requests();
        self.fire_timers();
        Ok(seq)
    }

    /// Sends `pdu` as it is (its own seq, nothing awaited): acks, read
    /// receipts, notices. Follow with a drain.
    ///
    /// # Errors
    /// As [`Client::request`], except `TooManyPending`.
    pub fn send(&mut self, now: Instant, pdu: &Pdu) -> Result<(), SendError> {
        self.advance(now);
        self.check_sendable()?;
        self.queue(pdu)?;
        self.fire_timers();
        Ok(())
    }

    /// Logs out: sends `CID_LOGIN_REQ_LOGINOUT`, waits for the answer and
    /// for the server to close (at most [`ClientConfig::logout_timeout`]),
    /// then stops with [`StopReason::LoggedOut`] (or raises
    /// [`ClientEvent::LoggedOut`] and stays, see
    /// [`ClientConfig::stop_after_logout`]). Replies to earlier requests
    /// still arrive meanwhile. Not logged in, the client just closes
    /// (a logout that was not clean). Follow with a drain.
    pub fn logout(&mut self, now: Instant) {
        self.advance(now);
        match self.state {
            State::Online => {
                let seq = self.alloc_seq();
                let pdu = ImLogoutReq {}.to_pdu(seq);
                if self.queue(&pdu).is_ok() {
                    debug!(addr = ?self.addr, "logging out");
                    self.state = State::LoggingOut { answered: false };
                    self.timers.clear(Timer::Heartbeat);
                    self.timers
                        .set(Timer::Logout, self.now + self.cfg.logout_timeout);
                }
            }
            State::Stopped | State::LoggingOut { .. } | State::LoggedOut => {}
            _ => self.logged_out(false),
        }
        self.fire_timers();
    }

    /// Stops at once: the socket (if any) is shut after what was queued,
    /// pending requests fail with [`CloseReason::Local`]. Follow with a
    /// drain.
    pub fn close(&mut self) {
        if self.state != State::Stopped {
            self.shut(CloseReason::Local, StopReason::Closed);
        }
    }

    /// Moves the clock to `now` (never backwards) and fires what is due,
    /// before an application call acts: calls that arm deadlines need the
    /// time, which a machine cannot read.
    fn advance(&mut self, now: Instant) {
        if self.state != State::Stopped {
            self.now = self.now.max(now);
            self.fire_timers();
        }
    }

    fn check_sendable(&self) -> Result<(), SendError> {
        match self.state {
            State::Online | State::Connected => Ok(()),
            State::LoggingIn | State::LoggingOut { .. } => Err(SendError::NotLoggedIn),
            State::Assigning | State::Connecting | State::Backoff | State::LoggedOut => {
                Err(SendError::NotConnected)
            }
            State::Stopped => Err(SendError::Closed),
        }
    }

    /// Queues a PDU on the open socket; a full buffer drops the connection.
    fn queue(&mut self, pdu: &Pdu) -> Result<(), SendError> {
        match self.wire.queue(pdu) {
            Ok(()) => {
                self.sent();
                Ok(())
            }
            Err(SendError::BufferFull) => {
                self.lost(CloseReason::SendBufferFull);
                Err(SendError::BufferFull)
            }
            Err(e) => Err(e),
        }
    }

    /// The next free sequence number: never 0, wrapping, never one a
    /// pending request holds.
    fn alloc_seq(&mut self) -> u16 {
        loop {
            self.last_seq = self.last_seq.wrapping_add(1);
            if self.last_seq != 0 && !self.pending.contains_key(&self.last_seq) {
                return self.last_seq;
            }
        }
    }

    fn sent(&mut self) {
        if matches!(
            self.state,
            State::Connected | State::LoggingIn | State::Online
        ) {
            self.timers
                .set(Timer::Heartbeat, self.now + self.cfg.heartbeat_interval);
        }
    }

    fn arm_requests(&mut self) {
        match self.deadlines.first() {
            Some((at, _)) => self.timers.set(Timer::Request, *at),
            None => self.timers.clear(Timer::Request),
        }
    }

    /// Asks for an assignment or connects to the fixed msg_server.
    fn start(&mut self) {
        match self.cfg.msg_server.or_else(|| self.next_addr.take()) {
            Some(addr) => self.connect(addr),
            None => {
                self.state = State::Assigning;
                self.out.event(ClientEvent::AssignmentNeeded);
            }
        }
    }

    fn connect(&mut self, addr: SocketAddr) {
        debug!(%addr, "client connecting");
        self.addr = Some(addr);
        self.state = State::Connecting;
        self.stats.connects += 1;
        self.timers
            .set(Timer::Connect, self.now + self.cfg.connect_timeout);
        self.out.push(Output::Connect(addr));
    }

    fn on_connected(&mut self) {
        let addr = self
            .addr
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        debug!(%addr, "client connected");
        self.wire.reset();
        self.timers.clear(Timer::Connect);
        self.timers
            .set(Timer::Idle, self.now + self.cfg.silence_timeout);
        self.state = State::Connected;
        self.sent();
        if self.cfg.credentials.is_some() {
            self.send_login();
        } else {
            self.out.event(ClientEvent::Connected(addr));
        }
    }

    fn send_login(&mut self) {
        let Some(creds) = &self.cfg.credentials else {
            return;
        };
        let req = creds.request();
        let seq = self.alloc_seq();
        self.state = State::LoggingIn;
        if self.queue(&req.to_pdu(seq)).is_ok() {
            self.timers
                .set(Timer::Login, self.now + self.cfg.login_timeout);
        }
    }

    /// Gives up the current socket (or connect attempt) after a failure.
    fn lost(&mut self, reason: CloseReason) {
        match reason {
            CloseReason::TimedOut
            | CloseReason::PeerClosed
            | CloseReason::ConnectFailed
            | CloseReason::ConnectTimedOut => {
                debug!(addr = ?self.addr, %reason, "client connection lost");
            }
            _ => warn!(addr = ?self.addr, %reason, "client connection lost"),
        }
        if let State::LoggingOut { answered } = self.state {
            // The server closes after answering a logout: that is success.
            return self.logged_out(answered && reason == CloseReason::PeerClosed);
        }
        self.drop_socket(reason);
        self.out.event(ClientEvent::Disconnected(reason));
        self.retry_or_stop(self.cfg.reconnect, StopReason::Disconnected(reason));
    }

    /// Closes the socket (if there is one or a connect is in flight) and
    /// fails every pending request with `reason`.
    fn drop_socket(&mut self, reason: CloseReason) {
        if self.state.has_socket() || self.state == State::Connecting {
            self.out.push(Output::Close);
        }
        self.wire.reset();
        for timer in [
            Timer::Connect,
            Timer::Heartbeat,
            Timer::Idle,
            Timer::Login,
            Timer::Logout,
        ] {
            self.timers.clear(timer);
        }
        self.fail_pending(reason);
    }

    fn fail_pending(&mut self, reason: CloseReason) {
        for (_, seq) in std::mem::take(&mut self.deadlines) {
            if self.pending.remove(&seq).is_some() {
                self.stats.failed += 1;
                self.out.event(ClientEvent::RequestFailed { seq, reason });
            }
        }
        self.pending = HashMap::new();
        self.arm_requests();
    }

    /// Backs off before the next attempt, or stops.
    fn retry_or_stop(&mut self, retry: bool, stop: StopReason) {
        if !retry {
            self.stop(stop);
            return;
        }
        let after = self.cfg.backoff.next_delay();
        debug!(?after, "client backing off");
        self.state = State::Backoff;
        self.timers.set(Timer::Backoff, self.now + after);
        self.out.event(ClientEvent::Reconnecting { after });
    }

    /// A logout is over: close the socket (after what was queued) and stop,
    /// or stay idle when configured to.
    fn logged_out(&mut self, clean: bool) {
        if self.cfg.stop_after_logout {
            return self.shut(CloseReason::Local, StopReason::LoggedOut { clean });
        }
        if self.state.has_socket() {
            self.out.flush(&mut self.wire);
        }
        self.drop_socket(CloseReason::Local);
        debug!(addr = ?self.addr, clean, "client logged out; staying");
        self.state = State::LoggedOut;
        self.timers.clear_all();
        self.out.event(ClientEvent::LoggedOut { clean });
    }

    /// Closes everything and stops.
    fn shut(&mut self, reason: CloseReason, stop: StopReason) {
        if self.state.has_socket() {
            // What was queued (a last ack) goes out before the close.
            self.out.flush(&mut self.wire);
        }
        self.drop_socket(reason);
        self.stop(stop);
    }

    fn stop(&mut self, why: StopReason) {
        debug!(addr = ?self.addr, ?why, "client stopped");
        self.state = State::Stopped;
        self.timers.clear_all();
        self.fail_pending(CloseReason::Local);
        self.out.event(ClientEvent::Stopped(why));
        self.out.finish();
    }

    fn on_received(&mut self, data: &[u8]) {
        self.wire.receive(data);
        self.timers
            .set(Timer::Idle, self.now + self.cfg.silence_timeout);
        while self.state.has_socket() {
            match self.wire.next_pdu() {
                Ok(Some(pdu)) => self.on_pdu(pdu),
                Ok(None) => break,
                Err(e) => self.lost(CloseReason::Frame(e)),
            }
        }
    }

    fn on_pdu(&mut self, pdu: Pdu) {
        let key = pdu.key();
        if key == Command::OtherHeartbeat.key() {
            return;
        }
        if key == Command::LoginResUserlogin.key() && self.state == State::LoggingIn {
            return self.on_login_reply(&pdu);
        }
        if key == Command::LoginResLoginout.key()
            && let State::LoggingOut { answered } = &mut self.state
        {
            *answered = true;
            return;
        }
        if key == Command::LoginKickUser.key() {
            return self.on_kick(&pdu);
        }
        let seq = pdu.seq();
        if let Some(p) = self.pending.get(&seq)
            && is_reply(p.command, key)
        {
            self.deadlines.remove(&(p.deadline, seq));
            self.pending.remove(&seq);
            self.arm_requests();
            self.stats.replies += 1;
            self.out.event(ClientEvent::Reply { seq, pdu });
            return;
        }
        if key == Command::MsgData.key() && self.cfg.ack_deliveries && self.state == State::Online {
            self.ack_delivery(&pdu);
        }
        self.stats.pushes += 1;
        self.out.event(ClientEvent::Push(pdu));
    }

    fn on_login_reply(&mut self, pdu: &Pdu) {
        let Ok(res) = pdu.decode_body::<ImLoginRes>() else {
            return self.lost(CloseReason::Malformed(pdu.key()));
        };
        self.timers.clear(Timer::Login);
        if res.result_code == ResultType::RefuseReasonNone as i32 {
            self.user_id = res.user_info.as_ref().map(|u| u.user_id);
            debug!(addr = ?self.addr, user_id = ?self.user_id, "client logged in");
            self.state = State::Online;
            self.cfg.backoff.reset();
            self.stats.logins += 1;
            self.out.event(ClientEvent::LoggedIn(Box::new(res)));
            return;
        }
        let code = res.result_code;
        let retrying = self.cfg.reconnect && is_transient_refusal(code);
        debug!(addr = ?self.addr, code, retrying, "login refused");
        self.drop_socket(CloseReason::LoginRejected);
        self.out.event(ClientEvent::LoginRefused {
            code,
            text: res.result_string.unwrap_or_default(),
            retrying,
        });
        self.retry_or_stop(retrying, StopReason::LoginRefused { code });
    }

    fn on_kick(&mut self, pdu: &Pdu) {
        let reason = pdu.decode_body::<ImKickUser>().map_or(0, |k| k.kick_reason);
        let reconnecting = self.cfg.reconnect && self.cfg.reconnect_after_kick;
        debug!(addr = ?self.addr, reason, reconnecting, "kicked");
        self.drop_socket(CloseReason::Kicked);
        self.out.event(ClientEvent::Kicked {
            reason,
            reconnecting,
        });
        self.retry_or_stop(reconnecting, StopReason::Kicked { reason });
    }

    /// `CID_MSG_DATA_ACK` for a delivery, under the delivery's seq. Group
    /// messages (type bit 0x10) are acked for the group session.
    fn ack_delivery(&mut self, pdu: &Pdu) {
        let Ok(m) = pdu.decode_body::<ImMsgData>() else {
            return;
        };
        let group = m.msg_type & 0x10 != 0;
        let ack = ImMsgDataAck {
            user_id: self.user_id.unwrap_or(0),
            session_id: if group {
                m.to_session_id
            } else {
                m.from_user_id
            },
            msg_id: m.msg_id,
            session_type: if group { 2 } else { 1 },
        };
        let _ = self.queue(&ack.to_pdu(pdu.seq()));
    }

    fn fire_timers(&mut self) {
        while let Some(timer) = self.timers.pop_expired(self.now) {
            match timer {
                Timer::Connect => {
                    if self.state == State::Connecting {
                        self.lost(CloseReason::ConnectTimedOut);
                    }
                }
                Timer::Backoff => {
                    if self.state == State::Backoff {
                        self.start();
                    }
                }
                Timer::Heartbeat => {
                    let hb = Pdu::new(Command::OtherHeartbeat.key(), 0, Bytes::new());
                    if self.queue(&hb).is_ok() {
                        self.stats.heartbeats += 1;
                    }
                }
                Timer::Idle => self.lost(CloseReason::TimedOut),
                Timer::Login => self.lost(CloseReason::LoginTimedOut),
                Timer::Request => self.expire_requests(),
                Timer::Logout => self.logged_out(false),
                // Server-side timers: never set on a client.
                Timer::Header | Timer::Body | Timer::Send | Timer::Auth => {}
            }
        }
    }

    fn expire_requests(&mut self) {
        while let Some(&(at, seq)) = self.deadlines.first() {
            if at > self.now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(p) = self.pending.remove(&seq) {
                self.stats.timed_out += 1;
                debug!(seq, command = %p.command, "request timed out");
                self.out.event(ClientEvent::RequestTimedOut {
                    seq,
                    command: p.command,
                });
            }
        }
        self.arm_requests();
    }

    /// Moves the sequence counter, to test wrapping.
    #[cfg(test)]
    pub(crate) fn set_last_seq(&mut self, seq: u16) {
        self.last_seq = seq;
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn buffered(&self) -> (usize, usize, usize) {
        let (rx, tx) = self.wire.buffered();
        (rx, tx, self.out.len())
    }

    /// Internal consistency, for tests and fuzzing: the deadline index and
    /// the pending table agree, and stay under the cap.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn check_invariants(&self) {
        assert!(
            self.pending.len() <= self.cfg.max_pending,
            "over max_pending"
        );
        assert_eq!(
            self.pending.len(),
            self.deadlines.len(),
            "index out of step"
        );
        for (at, seq) in &self.deadlines {
            assert_eq!(self.pending.get(seq).map(|p| p.deadline), Some(*at));
        }
        let s = self.stats;
        assert_eq!(
            s.requests,
            s.replies + s.timed_out + s.failed + self.pending.len() as u64,
            "a request did not end exactly once"
        );
        if !self.state.has_socket() {
            assert!(self.pending.is_empty(), "requests pending without a socket");
        }
    }
}

/// Whether `reply` answers a request of `request`: TeamTalk's response is
/// the next command id of the same service.
fn is_reply(request: CommandKey, reply: CommandKey) -> bool {
    request.service_id == reply.service_id
        && request.command_id.checked_add(1) == Some(reply.command_id)
}

impl Machine for Client {
    type Event = ClientEvent;

    fn handle_input(&mut self, input: Input<'_>) {
        if self.state == State::Stopped {
            return;
        }
        self.now = self.now.max(input.now());
        match (self.state, input) {
            (State::Connecting, Input::Connected(_)) => self.on_connected(),
            (State::Connecting, Input::ConnectFailed(_) | Input::Closed(_)) => {
                self.lost(CloseReason::ConnectFailed);
            }
            (s, Input::Received(_, data)) if s.has_socket() => self.on_received(data),
            (s, Input::Closed(_)) if s.has_socket() => self.lost(CloseReason::PeerClosed),
            (_, Input::Timeout(_)) => {}
            (state, input) => {
                let input = input_kind(&input);
                debug!(?state, input, "stale input ignored");
            }
        }
        self.fire_timers();
    }

    fn poll_output(&mut self) -> Output<ClientEvent> {
        let next = self.timers.next();
        let now = self.now;
        self.out.poll(&mut self.wire, || {
            Output::Timeout(next.unwrap_or(now + CLIENT_SILENCE_TIMEOUT))
        })
    }

    fn set_backlog(&mut self, now: Instant, bytes: usize) {
        if !self.state.has_socket() {
            return;
        }
        self.now = self.now.max(now);
        self.wire.set_backlog(bytes);
        if self.wire.over_cap() {
            self.lost(CloseReason::SendBufferFull);
        }
        self.fire_timers();
    }
}
