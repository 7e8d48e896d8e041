//! [`Session`]: an accepted connection, from a client or a server peer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use teamtalk_proto::{Command, CommandKey, DEFAULT_MAX_PDU_LEN, Pdu};
use tracing::{debug, warn};

use crate::auth::{self, ClusterAuth, PeerAuth, Rejection, Responder};
use crate::error::{AuthFailure, CloseReason, LoginError, SendError};
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
    /// `Some`: the peer must run the link-authentication handshake (see
    /// [`crate::auth`]) before anything else: the first PDU must be its
    /// hello, and until its proof checks out no [`SessionEvent::Pdu`] is
    /// raised, nothing but the handshake is sent (no heartbeat either) and
    /// any other PDU closes the session. `None` (the default): no
    /// authentication, as TeamTalk.
    pub auth: Option<ClusterAuth>,
    /// With [`SessionConfig::auth`] set, also admit a peer that does not
    /// authenticate: if its first PDU is not a hello, it is let in as
    /// [`PeerAuth::Unauthenticated`] (a C++ TeamTalk daemon, which does not
    /// speak the handshake); if it is a hello, the handshake must succeed.
    /// Decided per session by the daemon from the peer's address
    /// (`AllowUnauthenticatedPeers=`), so clone the port's config and set
    /// it before [`Session::new`]. The auth deadline then starts at the
    /// hello, not at the accept: a silent C++ peer is left to the idle
    /// timeout. Meaningless without `auth`.
    pub allow_unauthenticated: bool,
    /// The command that opens the login gate of a client session:
    /// `CID_LOGIN_REQ_USERLOGIN` (0x0103) on msg_server, `CID_FILE_LOGIN_REQ`
    /// (0x0501) on file_server, whose clients log in to a transfer task
    /// instead. Meaningless without [`SessionConfig::login_timeout`].
    pub login_command: CommandKey,
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
            auth: None,
            allow_unauthenticated: false,
            login_command: Command::LoginReqUserlogin.key(),
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
            auth: None,
            allow_unauthenticated: false,
            login_command: Command::LoginReqUserlogin.key(),
        }
    }

    /// Gates the session on `command` instead of
    /// `CID_LOGIN_REQ_USERLOGIN` (see [`SessionConfig::login_command`]).
    #[must_use]
    pub fn with_login_command(mut self, command: CommandKey) -> Self {
        self.login_command = command;
        self
    }

    /// Requires link authentication with `auth` (see
    /// [`SessionConfig::auth`]).
    #[must_use]
    pub fn with_auth(mut self, auth: ClusterAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Sets [`SessionConfig::allow_unauthenticated`].
    #[must_use]
    pub fn with_unauthenticated_allowed(mut self, allow: bool) -> Self {
        self.allow_unauthenticated = allow;
        self
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
    /// Sessions with [`SessionConfig::auth`] only, raised once, before the
    /// peer's first [`SessionEvent::Pdu`]: the peer is admitted, either
    /// [`PeerAuth::Authenticated`] or, where allowed,
    /// [`PeerAuth::Unauthenticated`]. For counting and logging; the
    /// application may send from now on.
    Admitted(PeerAuth),
    /// The session ended; raised exactly once, just before
    /// [`Output::Finished`].
    Closed(CloseReason),
}

/// An accepted connection: a client or a server peer.
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
/// With [`SessionConfig::auth`], a session answers the link-authentication
/// handshake first (it is the responder), raises
/// [`SessionEvent::Admitted`] when the peer proved itself, and only then
/// delivers PDUs, sends heartbeats and accepts [`Session::send`]:
///
/// ```text
///            hello                     proof ok
/// Pending ─────────▶ challenge sent ───────────▶ Admitted(Authenticated)
///    │ other PDU, allowed peer ───────────────▶ Admitted(Unauthenticated)
///    │ other PDU ─▶ Closed(Unauthenticated)   bad hello/proof ─▶ Closed(AuthFailed)
///    auth timeout without admission ─▶ Closed(AuthFailed(TimedOut))
/// ```
///
/// ```text
///            login request         accept_login
/// Awaiting ───────────────▶ Pending ────────────▶ LoggedIn
///    │ other command           │ other command / 2nd login    │ 2nd login
///    ▼                         ▼                              ▼
///  Closed(Unauthenticated)   Closed(Unauthenticated|DuplicateLogin)
///    15 s after accept without LoggedIn: Closed(LoginTimedOut)
/// ```
///
/// # Read backpressure
///
/// The application can stop the session from reading, so that one peer
/// that floods requests is slowed down by TCP itself instead of filling
/// queues shared with everyone else: [`Session::pause_reading`] and
/// [`Session::resume_reading`] by hand, or a PDU credit
/// ([`Session::set_pdu_credit`], [`Session::grant_pdus`]) at which the
/// session pauses itself. While paused, no PDU event is raised,
/// [`Machine::wants_read`] is `false` (the driver leaves the bytes in the
/// kernel), and the idle deadline is suspended; bytes already received
/// are kept and raised, in order, once reading resumes.
///
/// ```text
///   pause_reading / credit used up        resume_reading / grant_pdus
/// Reading ───────────────────────▶ Paused ──────────────────────────▶ Reading
///  PDU events, idle deadline      no PDU events, idle suspended,   held PDUs raised first,
///                                 bytes received are held          idle counts on
/// ```
#[derive(Debug)]
pub struct Session {
    /// Shared by every session of a listener: a msg_server holds tens of
    /// thousands of sessions, and a copy each would be most of their size.
    cfg: Arc<SessionConfig>,
    peer: PeerAddr,
    login: Login,
    now: Instant,
    /// When the peer was last heard from, moved forward by the time
    /// reading was paused since (so that a pause does not count as the
    /// peer's silence). The idle deadline is this plus the idle timeout.
    last_rx: Instant,
    timers: TimerTable,
    wire: Wire,
    out: Outbox<SessionEvent>,
    auth: AuthState,
    /// [`Session::pause_reading`] was called (and not yet undone).
    paused: bool,
    /// PDU events the session may still raise before it pauses itself
    /// ([`Session::set_pdu_credit`]); `None`: no limit.
    pdu_credit: Option<u32>,
    /// Since when reading is paused (either way) and the idle deadline
    /// suspended.
    paused_since: Option<Instant>,
}

/// A peer's address in 16 bytes rather than a `SocketAddr`'s 32: IPv4
/// inline, IPv6 (rarer, with its flow and scope) boxed. Every session
/// keeps one, and a msg_server has tens of thousands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PeerAddr {
    V4(std::net::SocketAddrV4),
    V6(Box<std::net::SocketAddrV6>),
}

impl From<SocketAddr> for PeerAddr {
    fn from(a: SocketAddr) -> Self {
        match a {
            SocketAddr::V4(v4) => Self::V4(v4),
            SocketAddr::V6(v6) => Self::V6(Box::new(v6)),
        }
    }
}

impl PeerAddr {
    fn get(&self) -> SocketAddr {
        match self {
            Self::V4(v4) => SocketAddr::V4(*v4),
            Self::V6(v6) => SocketAddr::V6(**v6),
        }
    }
}

/// Where a session is in link authentication.
#[derive(Debug)]
enum AuthState {
    /// Waiting for the first PDU (a hello, or anything from an allowed
    /// unauthenticated peer).
    AwaitingHello,
    /// Challenge sent, waiting for the proof.
    /// (Boxed: a session spends its life `Admitted`, and every session's
    /// size would otherwise be that of this rare state.)
    Challenged(Box<Responder>),
    /// Decided: [`PeerAuth::NotRequired`] (no auth configured),
    /// `Authenticated` or `Unauthenticated`.
    Admitted(PeerAuth),
}

impl Session {
    /// A session for a connection just accepted from `peer`.
    #[must_use]
    ///
    /// `cfg` is a [`SessionConfig`] or an `Arc` of one that many sessions
    /// share.
    pub fn new(cfg: impl Into<Arc<SessionConfig>>, peer: SocketAddr, now: Instant) -> Self {
        let cfg = cfg.into();
        let mut timers = TimerTable::default();
        timers.set(Timer::Idle, now + cfg.idle_timeout);
        let auth = match &cfg.auth {
            None => AuthState::Admitted(PeerAuth::NotRequired),
            Some(auth) => {
                if !cfg.allow_unauthenticated {
                    timers.set(Timer::Auth, now + auth.timeout);
                }
                AuthState::AwaitingHello
            }
        };
        if let (Heartbeat::Send(every), AuthState::Admitted(_)) = (cfg.heartbeat, &auth) {
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
            peer: peer.into(),
            login,
            now,
            last_rx: now,
            timers,
            out: Outbox::default(),
            auth,
            paused: false,
            pdu_credit: None,
            paused_since: None,
        }
    }

    /// The peer's address.
    #[must_use]
    pub fn peer(&self) -> SocketAddr {
        self.peer.get()
    }

    /// Where the login stands.
    #[must_use]
    pub fn login(&self) -> Login {
        self.login
    }

    /// Where link authentication stands: [`PeerAuth::NotRequired`] without
    /// [`SessionConfig::auth`], else `Pending` until the peer is admitted,
    /// then `Authenticated` or `Unauthenticated` (see
    /// [`SessionEvent::Admitted`]).
    #[must_use]
    pub fn peer_auth(&self) -> PeerAuth {
        match self.auth {
            AuthState::AwaitingHello | AuthState::Challenged(_) => PeerAuth::Pending,
            AuthState::Admitted(how) => how,
        }
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
    /// [`SendError::NotAuthenticated`] before the peer was admitted (with
    /// [`SessionConfig::auth`]), [`SendError::TooLarge`] for a PDU over the
    /// frame limit, [`SendError::BufferFull`] when the peer reads too
    /// slowly (the session then closes).
    pub fn send(&mut self, pdu: &Pdu) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        if !matches!(self.auth, AuthState::Admitted(_)) {
            return Err(SendError::NotAuthenticated);
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
        debug!(peer = %self.peer(), user_id, client_type, "login accepted");
        self.login = Login::LoggedIn {
            user_id,
            client_type,
        };
        self.timers.clear(Timer::Login);
        self.arm_idle();
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
            warn!(peer = %self.peer(), error = %e, "login refusal not sent");
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

    /// Stops reading the peer's bytes until [`Session::resume_reading`]:
    /// read backpressure on this one connection, for an application that
    /// has as many of the peer's requests in flight as it allows.
    ///
    /// From this call on, no further [`SessionEvent::Pdu`] or
    /// [`SessionEvent::LoginRequest`] is raised, and
    /// [`Machine::wants_read`] is `false`, so the driver stops reading the
    /// socket: the bytes wait in the kernel and the peer's TCP window
    /// closes. Events raised before the call are the application's to
    /// handle: under the drain-after-every-mutation contract they were
    /// all drained already (a caller that pauses in the middle of a drain
    /// still gets the events queued by then). Bytes the session had
    /// received but not yet decoded (the rest of the read that was under
    /// way, a partial PDU) are kept and delivered, in order, after the
    /// resume. Nothing is lost and nothing arrives out of order.
    ///
    /// Pausing is the application's promise to resume: a paused session
    /// has no idle deadline and its driver does not see the peer's close
    /// (see [`Machine::wants_read`]), so one left paused lives on.
    ///
    /// While paused:
    /// - the idle deadline is suspended: the silence is ours, not the
    ///   peer's. On resume it counts again from where it stood (or from a
    ///   full idle timeout, when bytes arrived meanwhile). The login and
    ///   link-authentication deadlines keep running: they bound how long
    ///   a peer not yet admitted may hold a connection.
    /// - heartbeats received are not echoed (they are not read); a server
    ///   peer still gets our own heartbeats. Keep pauses shorter than the
    ///   peer's own timeout.
    /// - [`Session::send`], the login answers and [`Session::close`] work
    ///   as usual.
    ///
    /// `now` is the current time: unlike the other application calls,
    /// pausing and resuming start and stop a clock (the suspended idle
    /// deadline), which must not run on the time of the last input.
    /// Deadlines already due at `now` fire.
    ///
    /// Idempotent. Follow with a drain.
    pub fn pause_reading(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        self.now = self.now.max(now);
        if !self.paused {
            debug!(peer = %self.peer(), "reading paused");
            self.paused = true;
            self.sync_reading();
        }
        self.fire_timers();
    }

    /// Undoes [`Session::pause_reading`]: PDUs received meanwhile are
    /// raised at once (subject to [`Session::set_pdu_credit`]), the idle
    /// deadline runs again, and [`Machine::wants_read`] turns `true`, so
    /// the driver reads the socket again. `now` as for
    /// [`Session::pause_reading`]. Idempotent. Follow with a drain.
    pub fn resume_reading(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        self.now = self.now.max(now);
        if self.paused {
            debug!(peer = %self.peer(), "reading resumed");
            self.paused = false;
            self.process_rx();
        }
        self.fire_timers();
    }

    /// Whether reading is paused, by [`Session::pause_reading`] or because
    /// the PDU credit ([`Session::set_pdu_credit`]) is used up. The
    /// reverse of [`Machine::wants_read`].
    #[must_use]
    pub fn is_reading_paused(&self) -> bool {
        !self.reading()
    }

    /// Limits how many more PDU events the session raises on its own:
    /// each [`SessionEvent::Pdu`] and [`SessionEvent::LoginRequest`] takes
    /// one from `credit`, and when none is left the session pauses reading
    /// by itself, exactly as [`Session::pause_reading`] (same rules for
    /// held bytes, deadlines and heartbeats), until
    /// [`Session::grant_pdus`] gives some back. `None` (the default)
    /// removes the limit.
    ///
    /// This is the race-free form of backpressure for an application on
    /// another thread: the session stops at the limit synchronously, while
    /// an application that counts requests and calls `pause_reading`
    /// itself sees, by the time its pause lands, whatever the driver read
    /// in the meantime. Typical use: a credit of N per client; give one
    /// back when a request is answered, and also for every PDU handled
    /// locally, dropped, or whose request failed or timed out: a credit
    /// that is never given back leaves the session paused for good.
    ///
    /// `now` as for [`Session::pause_reading`]. Follow with a drain (PDUs
    /// held back are raised if the new credit allows).
    pub fn set_pdu_credit(&mut self, now: Instant, credit: Option<u32>) {
        if self.is_closed() {
            return;
        }
        self.now = self.now.max(now);
        self.pdu_credit = credit;
        self.process_rx();
        self.fire_timers();
    }

    /// Adds `n` to the PDU credit (saturating); nothing without a limit.
    /// PDUs held back for want of credit are raised at once, up to the
    /// new credit. `now` as for [`Session::pause_reading`]. Follow with a
    /// drain.
    pub fn grant_pdus(&mut self, now: Instant, n: u32) {
        if self.is_closed() {
            return;
        }
        self.now = self.now.max(now);
        if let Some(credit) = self.pdu_credit.as_mut() {
            *credit = credit.saturating_add(n);
            self.process_rx();
        }
        self.fire_timers();
    }

    /// The PDU events the session may still raise before it pauses
    /// itself; `None` without a limit (see [`Session::set_pdu_credit`]).
    #[must_use]
    pub fn pdu_credit(&self) -> Option<u32> {
        self.pdu_credit
    }

    /// Whether the session decodes PDUs and wants its socket read.
    fn reading(&self) -> bool {
        !self.paused && self.pdu_credit != Some(0)
    }

    /// Suspends the idle deadline when reading just stopped, and restores
    /// it when reading just started again.
    fn sync_reading(&mut self) {
        if self.is_closed() {
            return;
        }
        match (self.reading(), self.paused_since) {
            (false, None) => {
                self.paused_since = Some(self.now);
                self.timers.clear(Timer::Idle);
            }
            (true, Some(since)) => {
                self.paused_since = None;
                // The paused time does not count as silence: the deadline
                // moves by it (and counts afresh from `now` when the peer
                // was heard from while paused).
                let from = since.max(self.last_rx);
                self.last_rx += self.now.saturating_duration_since(from);
                self.arm_idle();
            }
            _ => {}
        }
    }

    /// Sets the idle deadline from `last_rx`, unless reading is paused.
    fn arm_idle(&mut self) {
        if self.paused_since.is_none() {
            self.timers
                .set(Timer::Idle, self.last_rx + self.idle_timeout());
        }
    }

    /// Raises a PDU event, taking one from the credit.
    fn deliver(&mut self, event: SessionEvent) {
        if let Some(credit) = self.pdu_credit.as_mut() {
            *credit = credit.saturating_sub(1);
        }
        self.out.event(event);
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
            | CloseReason::AuthFailed(_)
            | CloseReason::DuplicateLogin
            | CloseReason::Frame(_)
            | CloseReason::SendBufferFull => {
                warn!(peer = %self.peer(), %reason, "session closed");
            }
            _ => debug!(peer = %self.peer(), %reason, "session closed"),
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
        self.arm_idle();
        self.process_rx();
    }

    /// Decodes and handles the PDUs received so far, as long as reading
    /// is on; the rest waits in the receive buffer.
    fn process_rx(&mut self) {
        while !self.is_closed() && self.reading() {
            match self.wire.next_pdu() {
                Ok(Some(pdu)) => self.on_pdu(pdu),
                Ok(None) => break,
                Err(e) => self.close_with(CloseReason::Frame(e)),
            }
        }
        self.sync_reading();
    }

    fn on_pdu(&mut self, pdu: Pdu) {
        let key = pdu.key();
        match self.auth {
            AuthState::AwaitingHello | AuthState::Challenged(_) => {
                self.on_handshake(pdu);
                return;
            }
            AuthState::Admitted(PeerAuth::NotRequired) => {}
            AuthState::Admitted(_) if auth::is_handshake(key) => {
                self.close_with(auth::after_handshake(&pdu));
                return;
            }
            AuthState::Admitted(_) => {}
        }
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
        let is_login = key == self.cfg.login_command;
        match self.login {
            Login::NotRequired => self.deliver(SessionEvent::Pdu(pdu)),
            Login::Awaiting if is_login => {
                debug!(peer = %self.peer(), "login requested");
                self.login = Login::Pending;
                self.deliver(SessionEvent::LoginRequest(pdu));
            }
            Login::LoggedIn { .. } if !is_login => self.deliver(SessionEvent::Pdu(pdu)),
            Login::Pending | Login::LoggedIn { .. } if is_login => {
                self.close_with(CloseReason::DuplicateLogin);
            }
            Login::Awaiting | Login::Pending | Login::LoggedIn { .. } => {
                self.close_with(CloseReason::Unauthenticated(key));
            }
        }
    }

    /// One PDU before the peer is admitted: the handshake (or, from an
    /// allowed peer, the first PDU of an unauthenticated one).
    fn on_handshake(&mut self, pdu: Pdu) {
        // A clone (an Arc and a keyed HMAC state), twice per connection:
        // the handshake below needs `self` mutably.
        let Some(auth) = self.cfg.auth.clone() else {
            return;
        };
        let key = pdu.key();
        match std::mem::replace(&mut self.auth, AuthState::AwaitingHello) {
            AuthState::AwaitingHello => {
                if self.cfg.allow_unauthenticated && key != Command::OtherLinkAuthHello.key() {
                    debug!(peer = %self.peer(), %key, "unauthenticated peer admitted");
                    self.admit(PeerAuth::Unauthenticated);
                    self.on_pdu(pdu);
                    return;
                }
                match Responder::on_hello(&auth.key, &pdu, auth.nonces.next()) {
                    Ok((responder, challenge)) => {
                        if self.timers.get(Timer::Auth).is_none() {
                            self.timers.set(Timer::Auth, self.now + auth.timeout);
                        }
                        self.auth = AuthState::Challenged(Box::new(responder));
                        // Not `send`/`sent()`: no heartbeat is due before
                        // the peer is admitted.
                        if self.wire.queue(&challenge).is_err() {
                            self.close_with(CloseReason::SendBufferFull);
                        }
                    }
                    Err(rejection) => self.refuse(rejection),
                }
            }
            AuthState::Challenged(responder) => match responder.on_proof(&auth.key, &pdu) {
                Ok(()) => {
                    debug!(peer = %self.peer(), key_id = %auth.key.id_hex(), "peer authenticated");
                    self.admit(PeerAuth::Authenticated);
                }
                Err(rejection) => self.refuse(rejection),
            },
            AuthState::Admitted(how) => self.auth = AuthState::Admitted(how),
        }
    }

    /// The peer is in: PDUs flow, our heartbeats start.
    fn admit(&mut self, how: PeerAuth) {
        self.auth = AuthState::Admitted(how);
        self.timers.clear(Timer::Auth);
        self.sent();
        self.out.event(SessionEvent::Admitted(how));
    }

    /// The handshake failed: tell the peer why (if it is to be told), close.
    fn refuse(&mut self, rejection: Rejection) {
        if let Some(notify) = &rejection.notify {
            // Best effort: the session closes either way.
            let _ = self.wire.queue(notify);
        }
        self.close_with(rejection.reason);
    }

    fn fire_timers(&mut self) {
        while let Some(timer) = self.timers.pop_expired(self.now) {
            match timer {
                Timer::Idle => self.close_with(CloseReason::TimedOut),
                Timer::Login => self.close_with(CloseReason::LoginTimedOut),
                Timer::Auth => self.close_with(CloseReason::AuthFailed(AuthFailure::TimedOut)),
                Timer::Heartbeat => {
                    let hb = Pdu::new(Command::OtherHeartbeat.key(), 0, Bytes::new());
                    if self.wire.queue(&hb).is_err() {
                        self.close_with(CloseReason::SendBufferFull);
                    } else {
                        self.sent();
                    }
                }
                Timer::Connect
                | Timer::Backoff
                | Timer::Header
                | Timer::Body
                | Timer::Send
                | Timer::Request
                | Timer::Logout => {}
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
                debug!(peer = %self.peer(), input, "input meaningless for a session ignored");
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

    fn wants_read(&self) -> bool {
        self.reading()
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

    fn transport_failed(&mut self, now: Instant, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        self.now = self.now.max(now);
        self.close_with(reason);
    }
}

#[cfg(test)]
mod peer_addr_tests {
    use super::*;

    #[test]
    fn a_session_gives_its_peer_back_whole() {
        let scoped = SocketAddr::V6(std::net::SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            8000,
            7,
            2,
        ));
        for peer in ["192.0.2.7:40000".parse().unwrap(), scoped] {
            let s = Session::new(SessionConfig::client(), peer, crate::tests::t0());
            assert_eq!(s.peer(), peer);
        }
        assert_eq!(std::mem::size_of::<PeerAddr>(), 16);
    }
}
