//! [`Session`]: an accepted connection, from a client or a server peer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use teamtalk_proto::{Command, DEFAULT_MAX_PDU_LEN, Pdu};
use tracing::{debug, warn};

use crate::error::{CloseReason, LoginError, SendError};
use crate::machine::{Input, Machine, Output};
use crate::timers::{Timer, TimerTable};
use crate::wire::{Outbox, Wire, input_kind};
use crate::{
    CLIENT_TIMEOUT, DEFAULT_MAX_TX_BYTES, LOGIN_TIMEOUT, MOBILE_CLIENT_TIMEOUT,
    SERVER_HEARTBEAT_INTERVAL, SERVER_TIMEOUT, is_mobile,
};

/// How a session treats heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Heartbeat {
    /// Echo every heartbeat received, byte for byte (client sessions:
    /// clients measure the server's liveness by the echo).
    Echo,
    /// Send our own heartbeat when nothing was sent for this long and
    /// swallow the peer's (server peers).
    Send(Duration),
}

/// Settings of one [`Session`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Heartbeat behaviour.
    pub heartbeat: Heartbeat,
    /// Close when nothing was received for this long (PC clients, not yet
    /// logged-in clients, and server peers).
    pub idle_timeout: Duration,
    /// Idle timeout once a mobile client is logged in.
    pub mobile_idle_timeout: Duration,
    /// `Some`: a client session, gated until the login is accepted, which
    /// must happen within this long. `None`: a server peer, no gate.
    pub login_timeout: Option<Duration>,
    /// Largest PDU accepted or sent, header included.
    pub max_frame_len: u32,
    /// Cap on bytes not yet accepted by the socket; beyond it the session
    /// closes with [`CloseReason::SendBufferFull`].
    pub max_tx_bytes: usize,
}

impl SessionConfig {
    /// A client connection on msg_server: login gate with
    /// [`LOGIN_TIMEOUT`], heartbeat echo, [`CLIENT_TIMEOUT`] /
    /// [`MOBILE_CLIENT_TIMEOUT`].
    #[must_use]
    pub fn client() -> Self {
        Self {
            heartbeat: Heartbeat::Echo,
            idle_timeout: CLIENT_TIMEOUT,
            mobile_idle_timeout: MOBILE_CLIENT_TIMEOUT,
            login_timeout: Some(LOGIN_TIMEOUT),
            max_frame_len: DEFAULT_MAX_PDU_LEN,
            max_tx_bytes: DEFAULT_MAX_TX_BYTES,
        }
    }

    /// A connection from another server: no gate, our own heartbeat every
    /// [`SERVER_HEARTBEAT_INTERVAL`], [`SERVER_TIMEOUT`] idle.
    #[must_use]
    pub fn server_peer() -> Self {
        Self {
            heartbeat: Heartbeat::Send(SERVER_HEARTBEAT_INTERVAL),
            idle_timeout: SERVER_TIMEOUT,
            mobile_idle_timeout: SERVER_TIMEOUT,
            login_timeout: None,
            max_frame_len: DEFAULT_MAX_PDU_LEN,
            max_tx_bytes: DEFAULT_MAX_TX_BYTES,
        }
    }
}

/// Where a session is in its login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Login {
    /// A server peer: no login.
    NotRequired,
    /// No login request yet.
    Awaiting,
    /// [`SessionEvent::LoginRequest`] was raised; waiting for
    /// [`Session::accept_login`] or [`Session::reject_login`].
    Pending,
    /// Accepted.
    LoggedIn {
        /// The user this connection belongs to.
        user_id: u32,
        /// TeamTalk `ClientType` (0x01 Windows, 0x02 Mac, 0x11 iOS,
        /// 0x12 Android).
        client_type: u32,
    },
}

/// What a [`Session`] tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// A client asks to log in. Validate it (typically through db_proxy)
    /// and answer with [`Session::accept_login`] or
    /// [`Session::reject_login`].
    LoginRequest(Pdu),
    /// A PDU from an authorised peer (heartbeats are handled inside).
    Pdu(Pdu),
    /// The session ended; raised exactly once, just before
    /// [`Output::Finished`].
    Closed(CloseReason),
}

/// An accepted connection.
/// peer.
///
/// Client sessions (msg_server's port 8000) are gated: until the
/// application accepts the login, only the login request and heartbeats
/// are allowed, and the login must complete within 15 s. Heartbeats from
/// clients are echoed byte for byte; the session never sends its own. The
/// idle timeout is 120 s, or 300 s once a mobile client (`client_type &
/// 0x10`) is logged in, because phones wake up rarely to save battery.
///
/// Server-peer sessions (route_server's, login_server's and db_proxy's
/// listening side) have no gate, send a heartbeat when nothing was sent
/// for 5 s and close after 30 s of silence, mirroring [`Link`](crate::Link).
///
/// ```text
///            login request         accept_login
/// Awaiting ───────────────▶ Pending ────────────▶ LoggedIn
///    │ other command           │ other command / 2nd login    │ 2nd login
///    ▼                         ▼                              ▼
///  Closed(Unauthenticated)   Closed(Unauthenticated|DuplicateLogin)
///    15 s after accept without LoggedIn: Closed(LoginTimedOut)
/// ```
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    peer: SocketAddr,
    login: Login,
    now: Instant,
    last_rx: Instant,
    timers: TimerTable,
    wire: Wire,
    out: Outbox<SessionEvent>,
}

impl Session {
    /// A session for a connection just accepted from `peer`.
    #[must_use]
    pub fn new(cfg: SessionConfig, peer: SocketAddr, now: Instant) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::Idle, now + cfg.idle_timeout);
        if let Heartbeat::Send(every) = cfg.heartbeat {
            timers.set(Timer::Heartbeat, now + every);
        }
        let login = match cfg.login_timeout {
            Some(limit) => {
                timers.set(Timer::Login, now + limit);
                Login::Awaiting
            }
            None => Login::NotRequired,
        };
        debug!(%peer, ?login, "session opened");
        Self {
            wire: Wire::new(cfg.max_frame_len, cfg.max_tx_bytes),
            cfg,
            peer,
            login,
            now,
            last_rx: now,
            timers,
            out: Outbox::default(),
        }
    }

    /// The peer's address.
    #[must_use]
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Where the login stands.
    #[must_use]
    pub fn login(&self) -> Login {
        self.login
    }

    /// Whether the session has closed (its remaining outputs may still
    /// need draining).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.out.is_finished()
    }

    /// Queues `pdu` for the peer. Follow with a drain.
    ///
    /// Allowed before the login completes, so the application can answer
    /// the login request before or after [`Session::accept_login`].
    ///
    /// # Errors
    /// [`SendError::Closed`] after the session closed,
    /// [`SendError::TooLarge`] for a PDU over the frame limit,
    /// [`SendError::BufferFull`] when the peer reads too slowly (the
    /// session then closes).
    pub fn send(&mut self, pdu: &Pdu) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        match self.wire.queue(pdu) {
            Ok(()) => {
                self.sent();
                Ok(())
            }
            Err(SendError::BufferFull) => {
                self.close_with(CloseReason::SendBufferFull);
                Err(SendError::BufferFull)
            }
            Err(e) => Err(e),
        }
    }

    /// Accepts the pending login: the gate opens and the idle timeout
    /// becomes [`SessionConfig::mobile_idle_timeout`] for mobile
    /// `client_type`s (bit 0x10). Send the login reply with
    /// [`Session::send`]. Follow with a drain.
    ///
    /// # Errors
    /// [`LoginError::Closed`] when the session closed meanwhile (e.g. the
    /// 15 s deadline passed), [`LoginError::NotPending`] when no login
    /// request is waiting.
    pub fn accept_login(&mut self, user_id: u32, client_type: u32) -> Result<(), LoginError> {
        self.check_pending()?;
        debug!(peer = %self.peer, user_id, client_type, "login accepted");
        self.login = Login::LoggedIn {
            user_id,
            client_type,
        };
        self.timers.clear(Timer::Login);
        self.timers
            .set(Timer::Idle, self.last_rx + self.idle_timeout());
        self.fire_timers();
        Ok(())
    }

    /// Refuses the pending login: `reply` (the login response carrying the
    /// refusal code) is sent, then the session closes with
    /// [`CloseReason::LoginRejected`]. Follow with a drain.
    ///
    /// # Errors
    /// As [`Session::accept_login`].
    pub fn reject_login(&mut self, reply: &Pdu) -> Result<(), LoginError> {
        self.check_pending()?;
        if let Err(e) = self.wire.queue(reply) {
            warn!(peer = %self.peer, error = %e, "login refusal not sent");
        }
        self.close_with(CloseReason::LoginRejected);
        Ok(())
    }

    /// Closes the session after what was queued (e.g. a kick notice).
    /// Raises [`SessionEvent::Closed`] with [`CloseReason::Local`]. Follow
    /// with a drain.
    pub fn close(&mut self) {
        if !self.is_closed() {
            self.close_with(CloseReason::Local);
        }
    }

    fn check_pending(&self) -> Result<(), LoginError> {
        if self.is_closed() {
            Err(LoginError::Closed)
        } else if self.login == Login::Pending {
            Ok(())
        } else {
            Err(LoginError::NotPending)
        }
    }

    fn idle_timeout(&self) -> Duration {
        match self.login {
            Login::LoggedIn { client_type, .. } if is_mobile(client_type) => {
                self.cfg.mobile_idle_timeout
            }
            _ => self.cfg.idle_timeout,
        }
    }

    fn sent(&mut self) {
        if let Heartbeat::Send(every) = self.cfg.heartbeat {
            self.timers.set(Timer::Heartbeat, self.now + every);
        }
    }

    fn close_with(&mut self, reason: CloseReason) {
        match reason {
            CloseReason::Unauthenticated(_)
            | CloseReason::DuplicateLogin
            | CloseReason::Frame(_)
            | CloseReason::SendBufferFull => {
                warn!(peer = %self.peer, %reason, "session closed");
            }
            _ => debug!(peer = %self.peer, %reason, "session closed"),
        }
        if reason == CloseReason::SendBufferFull {
            self.wire.clear_tx();
        } else {
            self.out.flush(&mut self.wire);
        }
        self.wire.reset();
        self.timers.clear_all();
        self.out.push(Output::Close);
        self.out.event(SessionEvent::Closed(reason));
        self.out.finish();
    }

    fn on_received(&mut self, data: &[u8]) {
        self.wire.receive(data);
        self.last_rx = self.now;
        self.timers.set(Timer::Idle, self.now + self.idle_timeout());
        while !self.is_closed() {
            match self.wire.next_pdu() {
                Ok(Some(pdu)) => self.on_pdu(pdu),
                Ok(None) => break,
                Err(e) => self.close_with(CloseReason::Frame(e)),
            }
        }
    }

    fn on_pdu(&mut self, pdu: Pdu) {
        let key = pdu.key();
        if key == Command::OtherHeartbeat.key() {
            if self.cfg.heartbeat == Heartbeat::Echo {
                if self.wire.queue(&pdu).is_err() {
                    self.close_with(CloseReason::SendBufferFull);
                } else {
                    self.sent();
                }
            }
            return;
        }
        let is_login = key == Command::LoginReqUserlogin.key();
        match self.login {
            Login::NotRequired => self.out.event(SessionEvent::Pdu(pdu)),
            Login::Awaiting if is_login => {
                debug!(peer = %self.peer, "login requested");
                self.login = Login::Pending;
                self.out.event(SessionEvent::LoginRequest(pdu));
            }
            Login::LoggedIn { .. } if !is_login => self.out.event(SessionEvent::Pdu(pdu)),
            Login::Pending | Login::LoggedIn { .. } if is_login => {
                self.close_with(CloseReason::DuplicateLogin);
            }
            Login::Awaiting | Login::Pending | Login::LoggedIn { .. } => {
                self.close_with(CloseReason::Unauthenticated(key));
            }
        }
    }

    fn fire_timers(&mut self) {
        while let Some(timer) = self.timers.pop_expired(self.now) {
            match timer {
                Timer::Idle => self.close_with(CloseReason::TimedOut),
                Timer::Login => self.close_with(CloseReason::LoginTimedOut),
                Timer::Heartbeat => {
                    let hb = Pdu::new(Command::OtherHeartbeat.key(), 0, Bytes::new());
                    if self.wire.queue(&hb).is_err() {
                        self.close_with(CloseReason::SendBufferFull);
                    } else {
                        self.sent();
                    }
                }
                Timer::Connect | Timer::Backoff | Timer::Request | Timer::Logout => {}
            }
        }
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn buffered(&self) -> (usize, usize, usize) {
        let (rx, tx) = self.wire.buffered();
        (rx, tx, self.out.len())
    }
}

impl Machine for Session {
    type Event = SessionEvent;

    fn handle_input(&mut self, input: Input<'_>) {
        if self.is_closed() {
            return;
        }
        self.now = self.now.max(input.now());
        match input {
            Input::Received(_, data) => self.on_received(data),
            Input::Closed(_) => self.close_with(CloseReason::PeerClosed),
            Input::Timeout(_) => {}
            Input::Connected(_) | Input::ConnectFailed(_) => {
                let input = input_kind(&input);
                debug!(peer = %self.peer, input, "input meaningless for a session ignored");
            }
        }
        self.fire_timers();
    }

    fn poll_output(&mut self) -> Output<SessionEvent> {
        let next = self.timers.next();
        let now = self.now;
        self.out.poll(&mut self.wire, || {
            Output::Timeout(next.unwrap_or(now + SERVER_TIMEOUT))
        })
    }

    fn set_backlog(&mut self, now: Instant, bytes: usize) {
        if self.is_closed() {
            return;
        }
        self.now = self.now.max(now);
        self.wire.set_backlog(bytes);
        if self.wire.over_cap() {
            self.close_with(CloseReason::SendBufferFull);
        }
        self.fire_timers();
    }
}
