//! [`Link`]: an outbound server-to-server connection that keeps itself up.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use teamtalk_proto::{Command, DEFAULT_MAX_PDU_LEN, Pdu};
use tracing::{debug, warn};

use crate::auth::{self, ClusterAuth, Initiator, PeerAuth, Rejection};
use crate::backoff::Backoff;
use crate::error::{AuthFailure, CloseReason, SendError};
use crate::machine::{Input, Machine, Output};
use crate::timers::{Timer, TimerTable};
use crate::wire::{Outbox, Wire, input_kind};
use crate::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_TX_BYTES, SERVER_HEARTBEAT_INTERVAL, SERVER_TIMEOUT,
};

/// Settings of one [`Link`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkConfig {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Send a heartbeat when nothing was sent for this long
    /// ([`SERVER_HEARTBEAT_INTERVAL`], 5 s).
    pub heartbeat_interval: Duration,
    /// Drop the connection when nothing was received for this long
    /// ([`SERVER_TIMEOUT`], 30 s).
    pub idle_timeout: Duration,
    /// Give up a connect attempt after this long. TeamTalk has none and
    /// relies on the kernel's (minutes); a black-holed peer would stall
    /// the link that long.
    pub connect_timeout: Duration,
    /// Reconnect schedule.
    pub backoff: Backoff,
    /// Largest PDU accepted or sent, header included.
    pub max_frame_len: u32,
    /// Cap on bytes not yet accepted by the socket; beyond it the
    /// connection closes with [`CloseReason::SendBufferFull`].
    pub max_tx_bytes: usize,
    /// `Some`: after every connect, run the link-authentication handshake
    /// (see [`crate::auth`]) before the greeting and before
    /// [`LinkEvent::Up`]; the peer must prove it holds the cluster secret
    /// within [`ClusterAuth::timeout`]. `None` (the default): TeamTalk's
    /// unauthenticated links, the only kind a C++ TeamTalk server accepts.
    pub auth: Option<ClusterAuth>,
}

impl LinkConfig {
    /// TeamTalk's timers, a 5 s connect timeout and our default jittered
    /// backoff seeded from `addr` (links to different peers spread out;
    /// give links to the same peer different seeds with
    /// [`Backoff::default_jittered`]).
    #[must_use]
    pub fn new(addr: SocketAddr) -> Self {
        let mut h = DefaultHasher::new();
        addr.hash(&mut h);
        Self {
            addr,
            heartbeat_interval: SERVER_HEARTBEAT_INTERVAL,
            idle_timeout: SERVER_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            backoff: Backoff::default_jittered(h.finish()),
            max_frame_len: DEFAULT_MAX_PDU_LEN,
            max_tx_bytes: DEFAULT_MAX_TX_BYTES,
            auth: None,
        }
    }

    /// Replaces the reconnect schedule (e.g. [`Backoff::teamtalk`]).
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Authenticates every connection of the link with `auth`.
    #[must_use]
    pub fn with_auth(mut self, auth: ClusterAuth) -> Self {
        self.auth = Some(auth);
        self
    }
}

/// Where a [`Link`] is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkState {
    /// A connect is in flight and must complete by `deadline`.
    Connecting {
        /// When the attempt times out.
        deadline: Instant,
    },
    /// Connected, running the link-authentication handshake, which must
    /// complete by `deadline`. PDUs cannot be sent yet.
    Authenticating {
        /// When the handshake times out.
        deadline: Instant,
    },
    /// Connected; PDUs can be sent.
    Up,
    /// Waiting before the next connect attempt.
    Backoff {
        /// When the next attempt starts.
        until: Instant,
    },
    /// Closed for good by [`Link::close`].
    Closed,
}

/// What a [`Link`] tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkEvent {
    /// Connected, greeting queued; [`Link::send`] works from now on.
    Up,
    /// A connection that was up went down; a reconnect is scheduled
    /// (unless the application closed the link).
    Down(CloseReason),
    /// A connect attempt failed ([`CloseReason::ConnectFailed`] or
    /// [`CloseReason::ConnectTimedOut`]), or the connection closed during
    /// the authentication handshake, before it was up
    /// ([`CloseReason::AuthFailed`], [`CloseReason::Unauthenticated`] when
    /// the peer does not speak the handshake, [`CloseReason::PeerClosed`],
    /// …); a retry is scheduled.
    Unreachable(CloseReason),
    /// A PDU from the peer (heartbeats are consumed by the link).
    Pdu(Pdu),
}

/// An outbound server-to-server connection.
///
/// msg_server keeps one to every db_proxy, login_server, route_server,
/// file_server and push_server. The life cycle:
///
/// ```text
/// new ─▶ Connecting ──Connected──▶ Up ──idle 30 s | peer closed | bad frame | send cap──▶ Backoff
///          │   ▲                    └─ nothing sent for 5 s: send a heartbeat, stay Up      │
///          │   └────────────────────────── backoff elapsed ─────────────────────────────────┘
///          └─ connect failed | 5 s connect timeout ──▶ Backoff
/// ```
///
/// With [`LinkConfig::auth`] set, `Connected` leads to `Authenticating`
/// instead: the link sends its hello, checks the peer's challenge, sends
/// its proof and only then its greeting, and raises [`LinkEvent::Up`]. A
/// peer that fails, refuses, sends anything else or is silent past the
/// auth timeout closes the attempt with [`LinkEvent::Unreachable`] and the
/// usual backoff (which is reset only by a link that came up, so a
/// misconfigured peer is retried ever more slowly).
///
/// On every successful connect the link sends its *greeting* (see
/// [`Link::set_greeting`]) before anything else, then raises
/// [`LinkEvent::Up`]. That is where msg_server's registration to
/// login_server (`CID_OTHER_MSG_SERV_INFO`) or its online-user snapshot to
/// route_server belongs: it is re-sent after every reconnect without the
/// application having to remember.
#[derive(Debug)]
pub struct Link {
    cfg: LinkConfig,
    state: State,
    now: Instant,
    timers: TimerTable,
    wire: Wire,
    out: Outbox<LinkEvent>,
    /// Encoded greeting PDUs, sent first on every connect.
    greeting: Bytes,
    /// The handshake in progress (state `Authenticating`).
    initiator: Option<Initiator>,
    /// Failed connect attempts are logged at WARN from the first one, but
    /// at most one line per [`FAILURE_LOG_EVERY`] while the peer stays
    /// unreachable (the backoff alone would still log every few seconds).
    failure_log_next: Option<Instant>,
    /// Attempts failed since the last WARN line.
    failures_held_back: u32,
}

/// At most one "connect failed" WARN line per this long, per link.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Authenticating,
    Up,
    Backoff,
    Closed,
}

impl Link {
    /// Creates a link; the first drain asks the driver to connect.
    #[must_use]
    pub fn new(cfg: LinkConfig, now: Instant) -> Self {
        let wire = Wire::new(cfg.max_frame_len, cfg.max_tx_bytes);
        let mut link = Self {
            cfg,
            state: State::Backoff,
            now,
            timers: TimerTable::default(),
            wire,
            out: Outbox::default(),
            greeting: Bytes::new(),
            initiator: None,
            failure_log_next: None,
            failures_held_back: 0,
        };
        link.start_connect();
        link
    }

    /// The peer's address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.cfg.addr
    }

    /// Where the link is in its life cycle.
    #[must_use]
    pub fn state(&self) -> LinkState {
        match self.state {
            State::Connecting => LinkState::Connecting {
                deadline: self.timers.get(Timer::Connect).unwrap_or(self.now),
            },
            State::Authenticating => LinkState::Authenticating {
                deadline: self.timers.get(Timer::Auth).unwrap_or(self.now),
            },
            State::Up => LinkState::Up,
            State::Backoff => LinkState::Backoff {
                until: self.timers.get(Timer::Backoff).unwrap_or(self.now),
            },
            State::Closed => LinkState::Closed,
        }
    }

    /// Whether [`Link::send`] would be accepted.
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// Whether the current connection's peer proved itself:
    /// [`PeerAuth::NotRequired`] without [`LinkConfig::auth`],
    /// [`PeerAuth::Authenticated`] while up with it, [`PeerAuth::Pending`]
    /// otherwise.
    #[must_use]
    pub fn peer_auth(&self) -> PeerAuth {
        match (&self.cfg.auth, self.state) {
            (None, _) => PeerAuth::NotRequired,
            (Some(_), State::Up) => PeerAuth::Authenticated,
            (Some(_), _) => PeerAuth::Pending,
        }
    }

    /// Queues `pdu` for the peer. Follow with a drain.
    ///
    /// Sending counts as activity at the time of the last input (the
    /// machine has no clock), so a heartbeat may occasionally go out
    /// although the application sent something moments ago, but one is
    /// never skipped.
    ///
    /// # Errors
    /// [`SendError::NotConnected`] unless [`LinkEvent::Up`] was raised and
    /// no `Down` since: TeamTalk drops such PDUs too, and only the
    /// application knows whether to retry. [`SendError::TooLarge`] for a
    /// PDU over the frame limit. [`SendError::BufferFull`] when the peer
    /// reads too slowly: the link then goes down and reconnects.
    pub fn send(&mut self, pdu: &Pdu) -> Result<(), SendError> {
        match self.state {
            State::Up => {}
            State::Closed => return Err(SendError::Closed),
            State::Connecting | State::Authenticating | State::Backoff => {
                return Err(SendError::NotConnected);
            }
        }
        match self.wire.queue(pdu) {
            Ok(()) => {
                self.sent();
                Ok(())
            }
            Err(SendError::BufferFull) => {
                self.go_down(CloseReason::SendBufferFull);
                Err(SendError::BufferFull)
            }
            Err(e) => Err(e),
        }
    }

    /// Sets the PDUs sent automatically, in order, at the start of every
    /// connection, before [`LinkEvent::Up`] is raised. Takes effect at
    /// the next connect; an empty list sends nothing.
    ///
    /// # Errors
    /// [`SendError::TooLarge`] when a PDU is over the frame limit; the
    /// previous greeting is kept.
    pub fn set_greeting(&mut self, pdus: &[Pdu]) -> Result<(), SendError> {
        let max = self.wire.max_frame_len();
        let mut buf = BytesMut::new();
        for pdu in pdus {
            let len = pdu.wire_len();
            if u32::try_from(len).map_or(true, |l| l > max) {
                return Err(SendError::TooLarge { len, max });
            }
            pdu.encode(&mut buf);
        }
        self.greeting = buf.freeze();
        Ok(())
    }

    /// Closes the link for good: the socket (if any) is shut after what was
    /// queued, and the machine finishes. Follow with a drain.
    pub fn close(&mut self) {
        match self.state {
            State::Closed => return,
            State::Up => {
                self.out.flush(&mut self.wire);
                self.out.push(Output::Close);
                self.out.event(LinkEvent::Down(CloseReason::Local));
            }
            State::Connecting | State::Authenticating => self.out.push(Output::Close),
            State::Backoff => {}
        }
        debug!(addr = %self.cfg.addr, "link closed locally");
        self.initiator = None;
        self.wire.reset();
        self.state = State::Closed;
        self.timers.clear_all();
        self.out.finish();
    }

    fn sent(&mut self) {
        self.timers
            .set(Timer::Heartbeat, self.now + self.cfg.heartbeat_interval);
    }

    fn start_connect(&mut self) {
        debug!(addr = %self.cfg.addr, "link connecting");
        self.state = State::Connecting;
        self.timers
            .set(Timer::Connect, self.now + self.cfg.connect_timeout);
        self.out.push(Output::Connect(self.cfg.addr));
    }

    fn on_connected(&mut self) {
        self.wire.reset();
        self.timers.clear(Timer::Connect);
        let Some(auth) = &self.cfg.auth else {
            self.go_up();
            return;
        };
        debug!(addr = %self.cfg.addr, "link connected, authenticating");
        let initiator = Initiator::new(auth.nonces.next());
        let hello = initiator.hello(&auth.key);
        self.timers.set(Timer::Auth, self.now + auth.timeout);
        self.state = State::Authenticating;
        self.initiator = Some(initiator);
        // Not `sent()`: no heartbeat is due before the handshake is over.
        if self.wire.queue(&hello).is_err() {
            self.attempt_failed(CloseReason::SendBufferFull);
        }
    }

    /// One PDU while authenticating: the peer's challenge (or refusal).
    fn on_handshake(&mut self, pdu: &Pdu) {
        let (Some(auth), Some(initiator)) = (&self.cfg.auth, self.initiator.take()) else {
            return;
        };
        match initiator.on_challenge(&auth.key, pdu) {
            Ok(proof) => {
                debug!(addr = %self.cfg.addr, key_id = %auth.key.id_hex(), "link authenticated");
                if self.wire.queue(&proof).is_err() {
                    self.attempt_failed(CloseReason::SendBufferFull);
                    return;
                }
                self.timers.clear(Timer::Auth);
                self.go_up();
            }
            Err(rejection) => self.refuse(rejection),
        }
    }

    /// The handshake failed: tell the peer why (if it is to be told),
    /// close, back off.
    fn refuse(&mut self, rejection: Rejection) {
        if let Some(notify) = &rejection.notify
            && self.wire.queue(notify).is_ok()
        {
            self.out.flush(&mut self.wire);
        }
        self.attempt_failed(rejection.reason);
    }

    /// The connection is usable: send the greeting, raise `Up`.
    fn go_up(&mut self) {
        debug!(addr = %self.cfg.addr, "link up");
        self.state = State::Up;
        self.cfg.backoff.reset();
        self.timers
            .set(Timer::Idle, self.now + self.cfg.idle_timeout);
        self.sent();
        if !self.greeting.is_empty() && self.wire.queue_encoded(&self.greeting).is_err() {
            // Only possible with a greeting larger than max_tx_bytes.
            self.go_down(CloseReason::SendBufferFull);
            return;
        }
        self.out.event(LinkEvent::Up);
    }

    /// The connection that was up is gone: close it and back off.
    fn go_down(&mut self, reason: CloseReason) {
        self.wire.reset();
        self.out.push(Output::Close);
        self.out.event(LinkEvent::Down(reason));
        let retry_in = self.back_off();
        warn!(addr = %self.cfg.addr, %reason, ?retry_in, "link down; reconnecting");
        // The outage starts now: its first failed attempt is worth a line.
        self.failure_log_next = None;
        self.failures_held_back = 0;
    }

    /// A connect attempt (or its handshake) failed: back off.
    fn attempt_failed(&mut self, reason: CloseReason) {
        self.wire.reset();
        self.initiator = None;
        self.out.push(Output::Close);
        self.out.event(LinkEvent::Unreachable(reason));
        let retry_in = self.back_off();
        if self.failure_log_next.is_some_and(|next| self.now < next) {
            self.failures_held_back = self.failures_held_back.saturating_add(1);
            debug!(addr = %self.cfg.addr, %reason, ?retry_in, "link connect failed");
            return;
        }
        self.failure_log_next = Some(self.now + FAILURE_LOG_EVERY);
        let held_back = std::mem::take(&mut self.failures_held_back);
        match reason {
            CloseReason::AuthFailed(_) | CloseReason::Unauthenticated(_) => {
                warn!(addr = %self.cfg.addr, %reason, ?retry_in, held_back,
                    "link refused (is the cluster secret the same on both ends?); retrying");
            }
            _ => {
                warn!(addr = %self.cfg.addr, %reason, ?retry_in, held_back, "link connect failed; retrying")
            }
        }
    }

    /// Schedules the next connect attempt; returns how far away it is.
    fn back_off(&mut self) -> Duration {
        let delay = self.cfg.backoff.next_delay();
        self.state = State::Backoff;
        self.timers.clear_all();
        self.timers.set(Timer::Backoff, self.now + delay);
        delay
    }

    fn on_received(&mut self, data: &[u8]) {
        self.wire.receive(data);
        self.timers
            .set(Timer::Idle, self.now + self.cfg.idle_timeout);
        loop {
            match self.wire.next_pdu() {
                Ok(Some(pdu)) => match self.state {
                    State::Authenticating => self.on_handshake(&pdu),
                    State::Up if self.cfg.auth.is_some() && auth::is_handshake(pdu.key()) => {
                        self.go_down(auth::after_handshake(&pdu));
                    }
                    State::Up => {
                        if !pdu.is(Command::OtherHeartbeat.key()) {
                            self.out.event(LinkEvent::Pdu(pdu));
                        }
                    }
                    State::Connecting | State::Backoff | State::Closed => break,
                },
                Ok(None) => break,
                Err(e) => {
                    let reason = CloseReason::Frame(e);
                    if self.state == State::Authenticating {
                        self.attempt_failed(reason);
                    } else {
                        self.go_down(reason);
                    }
                    break;
                }
            }
        }
    }

    fn fire_timers(&mut self) {
        while let Some(timer) = self.timers.pop_expired(self.now) {
            match timer {
                Timer::Connect => self.attempt_failed(CloseReason::ConnectTimedOut),
                Timer::Backoff => self.start_connect(),
                Timer::Heartbeat => {
                    let hb = Pdu::new(Command::OtherHeartbeat.key(), 0, Bytes::new());
                    match self.wire.queue(&hb) {
                        Ok(()) => self.sent(),
                        Err(_) => self.go_down(CloseReason::SendBufferFull),
                    }
                }
                Timer::Idle => self.go_down(CloseReason::TimedOut),
                Timer::Auth => self.attempt_failed(CloseReason::AuthFailed(AuthFailure::TimedOut)),
                Timer::Login
                | Timer::Header
                | Timer::Body
                | Timer::Send
                | Timer::Request
                | Timer::Logout => {}
            }
        }
    }

    /// Advances the clock; time never goes backwards, whatever the driver
    /// passes.
    fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn buffered(&self) -> (usize, usize, usize) {
        let (rx, tx) = self.wire.buffered();
        (rx, tx, self.out.len())
    }
}

impl Machine for Link {
    type Event = LinkEvent;

    fn handle_input(&mut self, input: Input<'_>) {
        if self.state == State::Closed {
            return;
        }
        self.tick(input.now());
        match (self.state, input) {
            (State::Connecting, Input::Connected(_)) => self.on_connected(),
            (State::Connecting, Input::ConnectFailed(_) | Input::Closed(_)) => {
                self.attempt_failed(CloseReason::ConnectFailed);
            }
            (State::Up | State::Authenticating, Input::Received(_, data)) => {
                self.on_received(data);
            }
            (State::Up, Input::Closed(_)) => self.go_down(CloseReason::PeerClosed),
            (State::Authenticating, Input::Closed(_)) => {
                self.attempt_failed(CloseReason::PeerClosed);
            }
            (_, Input::Timeout(_)) => {}
            (state, input) => {
                // Leftovers of a socket we already gave up on.
                let input = input_kind(&input);
                debug!(addr = %self.cfg.addr, ?state, input, "stale input ignored");
            }
        }
        self.fire_timers();
    }

    fn poll_output(&mut self) -> Output<LinkEvent> {
        let next = self.timers.next();
        let now = self.now;
        self.out.poll(&mut self.wire, || {
            Output::Timeout(next.unwrap_or(now + SERVER_TIMEOUT))
        })
    }

    fn set_backlog(&mut self, now: Instant, bytes: usize) {
        if !matches!(self.state, State::Up | State::Authenticating) {
            return;
        }
        self.tick(now);
        self.wire.set_backlog(bytes);
        if self.wire.over_cap() {
            if self.state == State::Up {
                self.go_down(CloseReason::SendBufferFull);
            } else {
                self.attempt_failed(CloseReason::SendBufferFull);
            }
        }
        self.fire_timers();
    }

    fn transport_failed(&mut self, now: Instant, reason: CloseReason) {
        self.tick(now);
        match self.state {
            // TLS on a connect that has not reached `Up` yet (the wrapper
            // reports `Connected` only after the handshake).
            State::Connecting | State::Authenticating => self.attempt_failed(reason),
            State::Up => self.go_down(reason),
            State::Backoff | State::Closed => {}
        }
        self.fire_timers();
    }
}
