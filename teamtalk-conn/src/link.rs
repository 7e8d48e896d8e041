//! [`Link`]: an outbound server-to-server connection that keeps itself up.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use teamtalk_proto::{Command, DEFAULT_MAX_PDU_LEN, Pdu};
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::error::{CloseReason, SendError};
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
        }
    }

    /// Replaces the reconnect schedule (e.g. [`Backoff::teamtalk`]).
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
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
    /// [`CloseReason::ConnectTimedOut`]); a retry is scheduled.
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
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
            State::Connecting | State::Backoff => return Err(SendError::NotConnected),
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
            State::Connecting => self.out.push(Output::Close),
            State::Backoff => {}
        }
        debug!(addr = %self.cfg.addr, "link closed locally");
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
        debug!(addr = %self.cfg.addr, "link up");
        self.state = State::Up;
        self.cfg.backoff.reset();
        self.wire.reset();
        self.timers.clear(Timer::Connect);
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
        match reason {
            CloseReason::TimedOut | CloseReason::PeerClosed => {
                debug!(addr = %self.cfg.addr, %reason, "link down");
            }
            _ => warn!(addr = %self.cfg.addr, %reason, "link down"),
        }
        self.wire.reset();
        self.out.push(Output::Close);
        self.out.event(LinkEvent::Down(reason));
        self.back_off();
    }

    /// A connect attempt failed: back off.
    fn attempt_failed(&mut self, reason: CloseReason) {
        debug!(addr = %self.cfg.addr, %reason, "link connect failed");
        self.out.push(Output::Close);
        self.out.event(LinkEvent::Unreachable(reason));
        self.back_off();
    }

    fn back_off(&mut self) {
        let delay = self.cfg.backoff.next_delay();
        debug!(addr = %self.cfg.addr, ?delay, "link backing off");
        self.state = State::Backoff;
        self.timers.clear_all();
        self.timers.set(Timer::Backoff, self.now + delay);
    }

    fn on_received(&mut self, data: &[u8]) {
        self.wire.receive(data);
        self.timers
            .set(Timer::Idle, self.now + self.cfg.idle_timeout);
        loop {
            match self.wire.next_pdu() {
                Ok(Some(pdu)) => {
                    if !pdu.is(Command::OtherHeartbeat.key()) {
                        self.out.event(LinkEvent::Pdu(pdu));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.go_down(CloseReason::Frame(e));
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
                Timer::Login | Timer::Request | Timer::Logout => {}
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
            (State::Up, Input::Received(_, data)) => self.on_received(data),
            (State::Up, Input::Closed(_)) => self.go_down(CloseReason::PeerClosed),
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
        if self.state != State::Up {
            return;
        }
        self.tick(now);
        self.wire.set_backlog(bytes);
        if self.wire.over_cap() {
            self.go_down(CloseReason::SendBufferFull);
        }
        self.fire_timers();
    }
}
