//! Step sequences that drive a machine through arbitrary inputs and
//! application calls while checking the contract's invariants. Shared by
//! the proptests and by the cargo-fuzz targets in `teamtalk-conn/fuzz`
//! (feature `fuzzing`).
//!
//! Invariants checked after every step (a violation panics, which is what
//! both proptest and libFuzzer report):
//! - a drain ends (bounded number of outputs);
//! - every `Timeout(t)` has `t >` the time of the last input (never in the
//!   past, and a driver never spins);
//! - every `Transmit` holds whole PDUs;
//! - after `Finished`, nothing but `Finished` ever comes out;
//! - the receive buffer stays below the frame limit, the transmit buffer
//!   within `max_tx_bytes` (while a session's reading is paused, the
//!   receive buffer may also hold the rest of the read under way);
//! - the runner is a driver that honours `Machine::wants_read`: no bytes
//!   are fed while it is `false`. A session raises no PDU event while
//!   paused, and each one it raises under a PDU credit takes exactly one
//!   from it ([`Step::PauseReading`], [`Step::ResumeReading`],
//!   [`Step::Credit`]).
//!
//! For [`HttpConn`] (`run_http`), transmits are checked to
//! form a stream of well-formed HTTP/1.1 responses framed by their
//! `Content-Length`, and after the steps the connection must end up
//! closed or holding a request for the application once every deadline
//! has passed: no byte sequence leaves it stuck.
//!
//! With link authentication on ([`run_auth_link`],
//! [`run_auth_peer_session`]) the runner also plays an honest peer that
//! holds the secret (steps [`Step::AuthHello`] and [`Step::AuthProof`],
//! valid or deliberately wrong: another key, a flipped byte, a replay, a
//! reflection, a refusal), and checks:
//! - nothing but handshake PDUs is transmitted before the peer is admitted
//!   (sessions) or the link is up;
//! - no PDU event before that;
//! - a link comes up only after a genuine challenge on that connection, a
//!   session admits a peer as authenticated only after a genuine proof, and
//!   as unauthenticated only when its config allows it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::ext::{
    ImLinkAuthChallenge, ImLinkAuthHello, ImLinkAuthProof, ImLinkAuthResult,
};
use teamtalk_proto::{Command, CommandKey, Message, Pdu, PduCodec};

use std::collections::BTreeSet;

use teamtalk_proto::pb::im::base_define::{ClientType, UserInfo};
use teamtalk_proto::pb::im::login::{ImKickUser, ImLoginRes, ImLogoutRsp};
use teamtalk_proto::pb::im::message::ImMsgData;

use crate::auth::{Initiator, Responder, is_handshake};
use crate::client::{Client, ClientConfig, ClientEvent, ClientStats, Credentials};
use crate::http::{HttpCloseReason, HttpConfig, HttpConn, HttpEvent};
use crate::{
    Backoff, CloseReason, ClusterAuth, ClusterKey, Input, Link, LinkConfig, LinkEvent, Machine,
    NonceSource, Output, PeerAuth, Session, SessionConfig, SessionEvent,
};

mod tls;

pub use tls::{run_tls_server_bytes, run_tls_session};

/// Frame limit used by the step runners: small, so limits are reached.
pub const MAX_FRAME: u32 = 1024;
/// Send cap used by the step runners: small, so overflow is reached.
pub const MAX_TX: usize = 4096;

/// One thing that happens to a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub enum Step {
    /// Time passes (milliseconds), then the driver reports a timeout.
    Advance(u16),
    /// Raw bytes arrive (anything: partial or broken frames).
    Recv(Vec<u8>),
    /// A well-formed PDU arrives: `kind` picks heartbeat, login request or
    /// another command.
    RecvPdu {
        /// 0 heartbeat, 1 login request, else another command.
        kind: u8,
        /// Sequence number.
        seq: u16,
        /// Body length.
        body_len: u8,
    },
    /// Several well-formed PDUs arrive in one read (`count % 4 + 1` of
    /// them, sequence numbers from `seq`, another command than heartbeat
    /// and login): a PDU credit can run out in the middle.
    RecvBurst {
        /// How many (mod 4, plus one).
        count: u8,
        /// Sequence number of the first.
        seq: u16,
        /// Body length of each.
        body_len: u8,
    },
    /// The connect completed.
    Connected,
    /// The connect failed.
    ConnectFailed,
    /// The peer closed the socket.
    Closed,
    /// The application sends a PDU with this body length.
    Send(u16),
    /// The application accepts the login.
    AcceptLogin {
        /// User id.
        user_id: u32,
        /// Client type.
        client_type: u8,
    },
    /// The application rejects the login.
    RejectLogin,
    /// The application closes the connection.
    Close,
    /// The driver reports this many unsent bytes.
    Backlog(u16),
    /// The application sets a greeting of this many PDUs (links only).
    SetGreeting(u8),
    /// With authentication on, the honest peer speaks first: to a session,
    /// a hello (`0` mod 4 valid, `1` another key, `2` another version, `3`
    /// a replay of an earlier successful hello and proof); to a link, the
    /// answer to its last hello (`0` a genuine challenge, `1` a forged
    /// proof, `2` a replay of an earlier challenge, `3` a refusal).
    AuthHello(u8),
    /// With authentication on, the honest peer's second step: to a
    /// session, the proof for its last challenge (`0` mod 4 genuine, `1` a
    /// flipped byte, `2` the session's own proof reflected, `3` a
    /// refusal); to a link, a refusal at any time.
    AuthProof(u8),
    /// The application pauses reading (sessions).
    PauseReading,
    /// The application resumes reading (sessions).
    ResumeReading,
    /// The application changes the PDU credit (sessions): `0xff` lifts
    /// the limit, `0x80..0xff` sets it to `n % 8`, below `0x80` grants
    /// `n % 8` more.
    Credit(u8),
}

/// The base instant of virtual time for tests and fuzzing: the one place
/// in this crate allowed to read the clock (it is only ever an origin).
#[allow(clippy::disallowed_methods)]
#[must_use]
pub fn t0() -> Instant {
    Instant::now()
}

/// A nonce source for tests and fuzzing: SplitMix64 from `seed`,
/// deterministic, so runs reproduce. Never for production (see
/// [`NonceSource`]).
#[must_use]
pub fn seeded_nonces(seed: u64) -> NonceSource {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
    let state = AtomicU64::new(seed);
    NonceSource::new(move || {
        let mut out = [0; 32];
        for chunk in out.chunks_mut(8) {
            let mut z = state
                .fetch_add(GAMMA, Ordering::Relaxed)
                .wrapping_add(GAMMA);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        out
    })
}

/// The cluster secret of the step runners.
#[must_use]
pub fn test_key() -> ClusterKey {
    ClusterKey::new(b"teamtalk-rs test cluster secret!").unwrap_or_else(|_| unreachable!())
}

/// A secret other than [`test_key`]'s, for impostors.
#[must_use]
pub fn other_key() -> ClusterKey {
    ClusterKey::new(b"an impostor's guess at the secret").unwrap_or_else(|_| unreachable!())
}

/// Authentication with [`test_key`] and nonces seeded with `seed`.
#[must_use]
pub fn test_auth(seed: u64) -> ClusterAuth {
    ClusterAuth::new(test_key(), seeded_nonces(seed))
}

/// A PDU of the step runners' traffic: `kind` 0 heartbeat, 1 login
/// request, 0x80..=0x83 the handshake commands, else a SID_MSG command.
fn pdu(kind: u8, seq: u16, body_len: usize) -> Pdu {
    let key = match kind {
        0 => Command::OtherHeartbeat.key(),
        1 => Command::LoginReqUserlogin.key(),
        0x80..=0x83 => CommandKey::new(7, 0x0700 | u16::from(kind)),
        k => CommandKey::new(3, 0x0300 | u16::from(k)),
    };
    Pdu::new(key, seq, Bytes::from(vec![0x5a; body_len]))
}

/// What a machine's transmits must consist of.
enum Frames {
    /// Whole TeamTalk PDUs, each transmit on its own.
    Pdus(PduCodec),
    /// A stream of HTTP/1.1 responses.
    Http(ResponseStream),
    /// Bytes the checker cannot read (TLS records); the caller checks
    /// them.
    Opaque,
}

/// Drives a machine and checks the invariants after each mutation.
struct Checker {
    now: Instant,
    finished: bool,
    frames: Frames,
}

impl Checker {
    fn new() -> Self {
        Self {
            now: t0(),
            finished: false,
            frames: Frames::Pdus(PduCodec::new(MAX_FRAME)),
        }
    }

    /// Applies the steps every machine understands (inputs and the
    /// driver's backlog report). Returns false for machine-specific steps.
    fn feed<M: Machine>(&mut self, m: &mut M, step: &Step) -> bool {
        let now = self.now;
        match step {
            // A driver honouring backpressure does not read.
            Step::Recv(_) | Step::RecvPdu { .. } | Step::RecvBurst { .. } if !m.wants_read() => {}
            Step::Advance(ms) => m.handle_input(Input::Timeout(self.advance(*ms))),
            Step::Recv(data) => m.handle_input(Input::Received(now, data)),
            Step::RecvPdu {
                kind,
                seq,
                body_len,
            } => {
                let bytes = pdu(*kind, *seq, usize::from(*body_len)).to_bytes();
                m.handle_input(Input::Received(now, &bytes));
            }
            Step::RecvBurst {
                count,
                seq,
                body_len,
            } => {
                let mut bytes = Vec::new();
                for i in 0..=count % 4 {
                    let p = pdu(2, seq.wrapping_add(u16::from(i)), usize::from(*body_len));
                    bytes.extend_from_slice(&p.to_bytes());
                }
                m.handle_input(Input::Received(now, &bytes));
            }
            Step::Connected => m.handle_input(Input::Connected(now)),
            Step::ConnectFailed => m.handle_input(Input::ConnectFailed(now)),
            Step::Closed => m.handle_input(Input::Closed(now)),
            Step::Backlog(n) => m.set_backlog(now, usize::from(*n)),
            _ => return false,
        }
        true
    }

    /// Drains `m`, checking every output, and returns what the peer and
    /// the application saw, in order. Transmits are checked against the
    /// checker's [`Frames`].
    fn drain<M: Machine>(&mut self, m: &mut M) -> Vec<Seen<M::Event>> {
        let mut frames = std::mem::replace(&mut self.frames, Frames::Opaque);
        let seen = self.drain_with(m, |bytes, seen| match &mut frames {
            Frames::Pdus(codec) => {
                let mut buf = BytesMut::from(bytes);
                while let Some(p) = codec.decode(&mut buf).expect("valid frames") {
                    assert!(p.wire_len() <= MAX_FRAME as usize);
                    seen.push(Seen::Sent(p));
                }
                assert!(buf.is_empty(), "transmit with a partial PDU");
            }
            Frames::Http(stream) => stream.push(bytes),
            Frames::Opaque => {}
        });
        self.frames = frames;
        seen
    }

    /// Drains `m`, checking the contract, and hands every transmit to
    /// `on_transmit` (which checks what the bytes must hold and may record
    /// what it saw, in order with the events).
    fn drain_with<M: Machine>(
        &mut self,
        m: &mut M,
        mut on_transmit: impl FnMut(&[u8], &mut Vec<Seen<M::Event>>),
    ) -> Vec<Seen<M::Event>> {
        let mut seen = Vec::new();
        for _ in 0..10_000 {
            let out = m.poll_output();
            if self.finished {
                assert!(matches!(out, Output::Finished), "output after Finished");
                return seen;
            }
            match out {
                Output::Timeout(t) => {
                    assert!(t > self.now, "deadline not after the last input");
                    return seen;
                }
                Output::Finished => {
                    self.finished = true;
                    assert!(matches!(m.poll_output(), Output::Finished));
                    return seen;
                }
                Output::Transmit(bytes) => {
                    assert!(!bytes.is_empty(), "empty transmit");
                    on_transmit(&bytes, &mut seen);
                }
                Output::Connect(_) => seen.push(Seen::Connect),
                Output::Close => {}
                Output::Event(e) => seen.push(Seen::Event(e)),
            }
        }
        panic!("drain did not end");
    }

    /// [`drain`](Self::drain), keeping only the application's events.
    fn drain_events<M: Machine>(&mut self, m: &mut M) -> Vec<M::Event> {
        self.drain(m)
            .into_iter()
            .filter_map(|s| match s {
                Seen::Event(e) => Some(e),
                Seen::Sent(_) | Seen::Connect => None,
            })
            .collect()
    }

    fn advance(&mut self, ms: u16) -> Instant {
        self.now += Duration::from_millis(u64::from(ms));
        self.now
    }
}

/// What a drain showed the peer and the application.
enum Seen<E> {
    /// A PDU transmitted.
    Sent(Pdu),
    /// A connect started (links).
    Connect,
    /// An application event.
    Event(E),
}

/// What a session's receive buffer may hold beyond a partial frame while
/// its reading is paused: the rest of the one read that was under way
/// (the runners' largest single input is well below this).
const HELD_SLACK: usize = 1024;

/// [`check_buffers`] for a session, allowing what a pause holds, and the
/// credit's link to `wants_read`.
fn check_session(s: &Session) {
    let (rx, tx, queued) = s.buffered();
    if s.is_reading_paused() {
        assert!(!s.wants_read(), "paused but wants reads");
        assert!(
            rx < MAX_FRAME as usize + HELD_SLACK,
            "paused rx buffer {rx} holds more than one read"
        );
        check_buffers((0, tx, queued));
    } else {
        check_buffers((rx, tx, queued));
    }
    if s.pdu_credit() == Some(0) {
        assert!(s.is_reading_paused(), "out of credit but reading");
    }
}

/// Applies a backpressure step to a session; false for other steps.
fn backpressure_step(s: &mut Session, now: Instant, step: &Step) -> bool {
    match step {
        Step::PauseReading => s.pause_reading(now),
        Step::ResumeReading => s.resume_reading(now),
        Step::Credit(0xff) => s.set_pdu_credit(now, None),
        Step::Credit(n @ 0x80..) => s.set_pdu_credit(now, Some(u32::from(n % 8))),
        Step::Credit(n) => s.grant_pdus(now, u32::from(n % 8)),
        _ => return false,
    }
    true
}

/// Where a session's reading stood before a step, to check the PDU events
/// of the drain after it.
struct ReadGate {
    paused: bool,
    credit: Option<u32>,
    changed: bool,
}

impl ReadGate {
    fn before(s: &Session, step: &Step) -> Self {
        Self {
            paused: s.is_reading_paused(),
            credit: s.pdu_credit(),
            changed: matches!(
                step,
                Step::PauseReading | Step::ResumeReading | Step::Credit(_)
            ),
        }
    }

    /// No PDU event while paused, and each one takes one credit.
    fn check<'a>(&self, s: &Session, events: impl Iterator<Item = &'a SessionEvent>) {
        let raised = events
            .filter(|e| matches!(e, SessionEvent::Pdu(_) | SessionEvent::LoginRequest(_)))
            .count();
        if self.changed {
            return;
        }
        assert!(
            !self.paused || raised == 0,
            "{raised} PDU events while paused"
        );
        if let (Some(before), Some(after)) = (self.credit, s.pdu_credit()) {
            let taken = usize::try_from(before - after).unwrap_or(usize::MAX);
            assert_eq!(
                taken, raised,
                "credit {before} -> {after} for {raised} events"
            );
        }
    }
}

fn check_buffers((rx, tx, queued): (usize, usize, usize)) {
    assert!(
        rx < MAX_FRAME as usize,
        "rx buffer {rx} over the frame limit"
    );
    assert!(tx <= MAX_TX, "tx buffer {tx} over the cap");
    assert!(queued < 10_000, "output queue grew to {queued}");
}

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10600))
}

/// Runs `steps` against a client [`Session`] (login gate on).
pub fn run_session(steps: &[Step]) {
    run_session_with(SessionConfig::client(), steps);
}

/// Runs `steps` against a server-peer [`Session`].
pub fn run_peer_session(steps: &[Step]) {
    run_session_with(SessionConfig::server_peer(), steps);
}

fn run_session_with(mut cfg: SessionConfig, steps: &[Step]) {
    cfg.max_frame_len = MAX_FRAME;
    cfg.max_tx_bytes = MAX_TX;
    let mut c = Checker::new();
    let mut s = Session::new(cfg, addr(), c.now);
    c.drain(&mut s);
    for step in steps {
        let gate = ReadGate::before(&s, step);
        if !c.feed(&mut s, step) && !backpressure_step(&mut s, c.now, step) {
            match step {
                Step::Send(len) => {
                    let _ = s.send(&pdu(2, 0, usize::from(*len)));
                }
                Step::AcceptLogin {
                    user_id,
                    client_type,
                } => {
                    let _ = s.accept_login(*user_id, u32::from(*client_type));
                }
                Step::RejectLogin => {
                    let _ = s.reject_login(&pdu(1, 0, 4));
                }
                Step::Close => s.close(),
                // Links only; inputs and backlog reports went to `feed`.
                _ => {}
            }
        }
        check_session(&s);
        let seen = c.drain(&mut s);
        gate.check(
            &s,
            seen.iter().filter_map(|x| match x {
                Seen::Event(e) => Some(e),
                Seen::Sent(_) | Seen::Connect => None,
            }),
        );
    }
}

/// Runs `steps` against a [`Link`] (TeamTalk backoff when the first step
/// count is even, jittered otherwise, so both schedules are exercised).
pub fn run_link(steps: &[Step]) {
    let mut cfg = LinkConfig::new(addr());
    cfg.max_frame_len = MAX_FRAME;
    cfg.max_tx_bytes = MAX_TX;
    if steps.len().is_multiple_of(2) {
        cfg.backoff = Backoff::teamtalk();
    }
    let mut c = Checker::new();
    let mut l = Link::new(cfg, c.now);
    c.drain(&mut l);
    for step in steps {
        if !c.feed(&mut l, step) {
            match step {
                Step::Send(len) => {
                    let _ = l.send(&pdu(2, 0, usize::from(*len)));
                }
                Step::Close => l.close(),
                Step::SetGreeting(n) => {
                    let greeting: Vec<Pdu> =
                        (0..*n % 8).map(|i| pdu(9, u16::from(i), 100)).collect();
                    let _ = l.set_greeting(&greeting);
                }
                // Sessions only; inputs and backlog reports went to `feed`.
                _ => {}
            }
        }
        check_buffers(l.buffered());
        c.drain(&mut l);
    }
}

/// A copy of `pdu` with one body byte flipped (the last one, where the
/// proof ends).
fn flipped(pdu: &Pdu) -> Pdu {
    let mut body = pdu.body.to_vec();
    if let Some(last) = body.last_mut() {
        *last ^= 0x01;
    }
    Pdu::new(pdu.key(), pdu.seq(), Bytes::from(body))
}

fn refusal(code: u8) -> Pdu {
    ImLinkAuthResult {
        result_code: u32::from(code),
    }
    .to_pdu(0)
}

/// An honest handshake with a link: it connects, the runner answers its
/// hello with a genuine challenge. Put before arbitrary steps so they
/// also exercise an authenticated connection (a random sequence rarely
/// finds one).
pub const HONEST_LINK_OPENING: [Step; 2] = [Step::Connected, Step::AuthHello(0)];

/// An honest handshake with a session: a genuine hello, then a genuine
/// proof.
pub const HONEST_PEER_OPENING: [Step; 2] = [Step::AuthHello(0), Step::AuthProof(0)];

/// `opening` then `steps`.
#[must_use]
pub fn after(opening: &[Step], steps: &[Step]) -> Vec<Step> {
    opening.iter().chain(steps).cloned().collect()
}

/// How often a run with authentication got through, so tests can check
/// that the runner reaches the success paths, not only the refusals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthRun {
    /// Links up, or peers admitted as authenticated.
    pub authenticated: usize,
    /// Peers admitted as unauthenticated.
    pub unauthenticated: usize,
    /// Connections closed with `AuthFailed` or `Unauthenticated`.
    pub refused: usize,
}

fn is_refusal(reason: CloseReason) -> bool {
    matches!(
        reason,
        CloseReason::AuthFailed(_) | CloseReason::Unauthenticated(_)
    )
}

/// Runs `steps` against a [`Link`] that authenticates with [`test_auth`],
/// the runner answering its hellos as the listening side would.
pub fn run_auth_link(steps: &[Step]) -> AuthRun {
    let auth = test_auth(steps.len() as u64);
    let mut cfg = LinkConfig::new(addr()).with_auth(auth);
    cfg.max_frame_len = MAX_FRAME;
    cfg.max_tx_bytes = MAX_TX;
    let key = test_key();
    let peer_nonces = seeded_nonces(!(steps.len() as u64));
    let mut c = Checker::new();
    let mut l = Link::new(cfg, c.now);
    // The hello of the current connection, the last genuine challenge
    // (for replays), whether the current connection saw a genuine one,
    // and whether the link is up.
    let mut hello: Option<Pdu> = None;
    let mut old_challenge: Option<Pdu> = None;
    let mut genuine = false;
    let mut up = false;
    let mut run = AuthRun::default();
    let mut observe = |seen: Vec<Seen<LinkEvent>>, hello: &mut Option<Pdu>, genuine: &mut bool| {
        for s in seen {
            match s {
                Seen::Connect => {
                    *hello = None;
                    *genuine = false;
                    up = false;
                }
                Seen::Sent(p) => {
                    assert!(up || is_handshake(p.key()), "{} sent before Up", p.key());
                    if p.is(Command::OtherLinkAuthHello.key()) {
                        *hello = Some(p);
                    }
                }
                Seen::Event(LinkEvent::Up) => {
                    assert!(*genuine, "link up without a genuine challenge");
                    up = true;
                    run.authenticated += 1;
                }
                Seen::Event(LinkEvent::Down(reason) | LinkEvent::Unreachable(reason)) => {
                    up = false;
                    *genuine = false;
                    run.refused += usize::from(is_refusal(reason));
                }
                Seen::Event(LinkEvent::Pdu(p)) => {
                    assert!(up, "{} delivered before Up", p.key());
                }
            }
        }
    };
    let seen = c.drain(&mut l);
    observe(seen, &mut hello, &mut genuine);
    for step in steps {
        if !c.feed(&mut l, step) {
            match step {
                Step::Send(len) => {
                    let _ = l.send(&pdu(2, 0, usize::from(*len)));
                }
                Step::Close => l.close(),
                Step::SetGreeting(n) => {
                    let greeting: Vec<Pdu> =
                        (0..*n % 8).map(|i| pdu(9, u16::from(i), 100)).collect();
                    let _ = l.set_greeting(&greeting);
                }
                Step::AuthHello(variant) => {
                    let answer = hello.as_ref().and_then(|h| match variant % 4 {
                        0 => {
                            let (_, challenge) = Responder::on_hello(&key, h, peer_nonces.next())
                                .unwrap_or_else(|e| panic!("our own hello refused: {e:?}"));
                            genuine = true;
                            old_challenge = Some(challenge.clone());
                            Some(challenge)
                        }
                        1 => Some(
                            ImLinkAuthChallenge {
                                nonce: Bytes::copy_from_slice(&peer_nonces.next()),
                                proof: Bytes::copy_from_slice(&peer_nonces.next()),
                            }
                            .to_pdu(0),
                        ),
                        2 => old_challenge.clone(),
                        _ => Some(refusal(*variant)),
                    });
                    if let Some(answer) = answer {
                        l.handle_input(Input::Received(c.now, &answer.to_bytes()));
                    }
                }
                Step::AuthProof(code) => {
                    l.handle_input(Input::Received(c.now, &refusal(*code).to_bytes()));
                }
                // Sessions only; inputs and backlog reports went to `feed`.
                _ => {}
            }
        }
        check_buffers(l.buffered());
        let seen = c.drain(&mut l);
        observe(seen, &mut hello, &mut genuine);
    }
    run
}

/// Runs `steps` against a server-peer [`Session`] that requires
/// authentication with [`test_auth`] (admitting unauthenticated peers when
/// `allow_unauthenticated`), the runner playing a connecting peer.
pub fn run_auth_peer_session(steps: &[Step], allow_unauthenticated: bool) -> AuthRun {
    let mut cfg = SessionConfig::server_peer()
        .with_auth(test_auth(steps.len() as u64))
        .with_unauthenticated_allowed(allow_unauthenticated);
    cfg.max_frame_len = MAX_FRAME;
    cfg.max_tx_bytes = MAX_TX;
    let (key, other) = (test_key(), other_key());
    let peer_nonces = seeded_nonces(!(steps.len() as u64));
    let mut c = Checker::new();
    let mut s = Session::new(cfg, addr(), c.now);
    // The peer's handshake in progress, the session's last challenge, an
    // earlier successful hello and proof (for replays), and whether a
    // genuine proof was delivered.
    let mut initiator: Option<Initiator> = None;
    let mut challenge: Option<Pdu> = None;
    let mut recorded: Option<(Pdu, Pdu)> = None;
    let mut last_hello: Option<Pdu> = None;
    let mut genuine = false;
    let mut admitted = false;
    let mut run = AuthRun::default();
    let mut observe =
        |seen: Vec<Seen<SessionEvent>>, challenge: &mut Option<Pdu>, genuine: bool| {
            for s in seen {
                match s {
                    Seen::Sent(p) => {
                        assert!(
                            admitted || is_handshake(p.key()),
                            "{} sent to a peer not admitted",
                            p.key()
                        );
                        if p.is(Command::OtherLinkAuthChallenge.key()) {
                            *challenge = Some(p);
                        }
                    }
                    Seen::Event(SessionEvent::Admitted(how)) => {
                        assert!(!admitted, "admitted twice");
                        match how {
                            PeerAuth::Authenticated => {
                                assert!(genuine, "admitted without a proof");
                                run.authenticated += 1;
                            }
                            PeerAuth::Unauthenticated => {
                                assert!(allow_unauthenticated);
                                run.unauthenticated += 1;
                            }
                            other => panic!("admitted as {other:?}"),
                        }
                        admitted = true;
                    }
                    Seen::Event(SessionEvent::Closed(reason)) => {
                        run.refused += usize::from(is_refusal(reason));
                    }
                    Seen::Event(SessionEvent::Pdu(p) | SessionEvent::LoginRequest(p)) => {
                        assert!(admitted, "{} delivered before admission", p.key());
                    }
                    Seen::Connect => {}
                }
            }
        };
    let seen = c.drain(&mut s);
    observe(seen, &mut challenge, genuine);
    for step in steps {
        let gate = ReadGate::before(&s, step);
        // The honest peer's bytes are read only when the session wants.
        let reading = s.wants_read();
        if !c.feed(&mut s, step) && !backpressure_step(&mut s, c.now, step) {
            match step {
                Step::Send(len) => {
                    let _ = s.send(&pdu(2, 0, usize::from(*len)));
                }
                Step::Close => s.close(),
                Step::AuthHello(_) | Step::AuthProof(_) if !reading => {}
                Step::AuthHello(variant) => {
                    let init = Initiator::new(peer_nonces.next());
                    let bytes = match variant % 4 {
                        0 => init.hello(&key).to_bytes(),
                        1 => init.hello(&other).to_bytes(),
                        2 => ImLinkAuthHello {
                            version: 2,
                            key_id: Bytes::copy_from_slice(&key.id()),
                            nonce: Bytes::copy_from_slice(&peer_nonces.next()),
                        }
                        .to_pdu(0)
                        .to_bytes(),
                        _ => recorded.as_ref().map_or_else(
                            || init.hello(&key).to_bytes(),
                            |(h, p)| [h.to_bytes(), p.to_bytes()].concat().into(),
                        ),
                    };
                    last_hello = Some(init.hello(&key));
                    initiator = Some(init);
                    s.handle_input(Input::Received(c.now, &bytes));
                }
                Step::AuthProof(variant) => {
                    let proof = match (variant % 4, &initiator, &challenge) {
                        (0 | 1, Some(init), Some(ch)) => {
                            init.on_challenge(&key, ch).ok().map(|proof| {
                                if variant % 4 == 0 {
                                    genuine = true;
                                    if let Some(h) = &last_hello {
                                        recorded = Some((h.clone(), proof.clone()));
                                    }
                                    proof
                                } else {
                                    flipped(&proof)
                                }
                            })
                        }
                        (2, _, Some(ch)) => match Message::decode(ch) {
                            Ok(Message::OtherLinkAuthChallenge(c)) => {
                                Some(ImLinkAuthProof { proof: c.proof }.to_pdu(0))
                            }
                            _ => None,
                        },
                        (3, _, _) => Some(refusal(*variant)),
                        _ => None,
                    };
                    if let Some(proof) = proof {
                        s.handle_input(Input::Received(c.now, &proof.to_bytes()));
                    }
                }
                // Client sessions and links only; inputs and backlog
                // reports went to `feed`.
                _ => {}
            }
        }
        check_session(&s);
        let seen = c.drain(&mut s);
        gate.check(
            &s,
            seen.iter().filter_map(|x| match x {
                Seen::Event(e) => Some(e),
                Seen::Sent(_) | Seen::Connect => None,
            }),
        );
        observe(seen, &mut challenge, genuine);
    }
    run
}

/// Head limit used by the HTTP step runner: small, so it is reached.
pub const HTTP_MAX_HEAD: usize = 1024;
/// Body limit used by the HTTP step runner.
pub const HTTP_MAX_BODY: usize = 4096;
/// Response limit used by the HTTP step runner: above one 64 KiB piece,
/// so large responses are handed out in several.
pub const HTTP_MAX_TX: usize = 200_000;

/// One thing that happens to an HTTP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub enum HttpStep {
    /// Time passes (milliseconds), then the driver reports a timeout.
    Advance(u16),
    /// Raw bytes arrive.
    Recv(Vec<u8>),
    /// A well-formed request arrives in `pieces` reads: `kind` picks the
    /// method, framing and extras (see [`sample_request`]).
    RecvRequest {
        /// Method, framing and extras.
        kind: u8,
        /// Body length (bounded by the runner).
        body_len: u16,
        /// Reads the request is split into.
        pieces: u8,
    },
    /// The application answers the pending request (if any).
    Respond {
        /// Status code (made valid by the runner).
        status: u16,
        /// Body length.
        body_len: u32,
        /// Ask for `Connection: close`.
        close: bool,
    },
    /// The application takes an upgraded connection over.
    TakeUpgrade,
    /// The application closes the connection.
    Close,
    /// The peer closes the socket.
    Closed,
    /// The driver reports this many unsent bytes (modulo twice the cap).
    Backlog(u32),
}

/// A valid request for [`HttpStep::RecvRequest`]: `kind` bits 0-2 pick
/// the method and framing (GET, HEAD, POST with `Content-Length`, POST
/// chunked, POST with `Expect: 100-continue`, an upgrade request, an
/// HTTP/1.0 request, a GET with `Connection: close`).
#[must_use]
pub fn sample_request(kind: u8, body_len: usize) -> Vec<u8> {
    let body = vec![b'b'; body_len];
    let mut out = Vec::new();
    match kind % 8 {
        0 => out.extend_from_slice(b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"),
        1 => out.extend_from_slice(b"HEAD /a HTTP/1.1\r\n\r\n"),
        2 | 4 => {
            let expect = if kind % 8 == 4 {
                "Expect: 100-continue\r\n"
            } else {
                ""
            };
            out.extend_from_slice(
                format!("POST /up HTTP/1.1\r\n{expect}Content-Length: {body_len}\r\n\r\n")
                    .as_bytes(),
            );
            out.extend_from_slice(&body);
        }
        3 => {
            out.extend_from_slice(b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
            for piece in body.chunks(100) {
                out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                out.extend_from_slice(piece);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
        5 => out.extend_from_slice(
            b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        ),
        6 => out.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n"),
        _ => out.extend_from_slice(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"),
    }
    out
}

/// Checks that transmitted bytes are HTTP/1.1 responses, each framed by
/// its `Content-Length` (none for 1xx, 204, 304 or a missing length).
#[derive(Debug, Default)]
struct ResponseStream {
    buf: Vec<u8>,
    body_left: usize,
    switched: bool,
}

impl ResponseStream {
    fn push(&mut self, bytes: &[u8]) {
        assert!(!self.switched, "HTTP bytes after 101 Switching Protocols");
        self.buf.extend_from_slice(bytes);
        loop {
            if self.body_left > 0 {
                let take = self.body_left.min(self.buf.len());
                self.buf.drain(..take);
                self.body_left -= take;
                if self.body_left > 0 {
                    return;
                }
            }
            if self.buf.is_empty() {
                return;
            }
            let k = self.buf.len().min(9);
            assert_eq!(
                &self.buf[..k],
                &b"HTTP/1.1 "[..k],
                "transmit is not an HTTP/1.1 response"
            );
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut fields);
            let n = match resp.parse(&self.buf).expect("well-formed response head") {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial => return,
            };
            let status = resp.code.expect("status");
            let length = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| {
                    std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.parse::<usize>().ok())
                        .expect("numeric content-length")
                });
            let bodiless = (100..200).contains(&status) || status == 204 || status == 304;
            assert!(
                !(bodiless && status != 304 && length.is_some()),
                "length on a {status}"
            );
            self.buf.drain(..n);
            self.body_left = if bodiless { 0 } else { length.unwrap_or(0) };
            if status == 101 {
                self.switched = true;
                assert!(self.buf.is_empty(), "bytes after 101");
                return;
            }
        }
    }
}

/// What a [`run_http`] run amounted to, so tests can check that steps
/// reach the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HttpRun {
    /// Requests delivered.
    pub requests: usize,
    /// Responses accepted by `respond`.
    pub responses: usize,
    /// How the connection closed, if it did.
    pub closed: Option<HttpCloseReason>,
}

/// Runs `steps` against an [`HttpConn`] with small limits, then lets every
/// deadline pass: the connection must be closed, or hold a request for
/// the application.
pub fn run_http(steps: &[HttpStep]) -> HttpRun {
    let cfg = HttpConfig {
        max_head_bytes: HTTP_MAX_HEAD,
        max_headers: 16,
        max_body_bytes: HTTP_MAX_BODY,
        max_tx_bytes: HTTP_MAX_TX,
        max_requests: 5,
        ..HttpConfig::default()
    };
    let mut c = Checker::new();
    c.frames = Frames::Http(ResponseStream::default());
    let mut m = HttpConn::new(cfg, addr(), c.now);
    let mut pending_head: Option<bool> = None;
    let mut closed: Option<HttpCloseReason> = None;
    let (mut requests, mut responses) = (0, 0);
    let mut handle = |events: Vec<HttpEvent>, pending: &mut Option<bool>| {
        for e in events {
            match e {
                HttpEvent::Request(req) => {
                    requests += 1;
                    assert!(pending.is_none(), "a second request before the response");
                    assert!(req.body().len() <= HTTP_MAX_BODY);
                    *pending = Some(req.method() == http::Method::HEAD);
                }
                HttpEvent::Closed(reason) => {
                    assert!(closed.is_none(), "closed twice");
                    closed = Some(reason);
                }
            }
        }
    };
    let events = c.drain_events(&mut m);
    handle(events, &mut pending_head);
    for step in steps {
        let now = c.now;
        match step {
            HttpStep::Advance(ms) => m.handle_input(Input::Timeout(c.advance(*ms))),
            HttpStep::Recv(data) => m.handle_input(Input::Received(now, data)),
            HttpStep::RecvRequest {
                kind,
                body_len,
                pieces,
            } => {
                let bytes = sample_request(*kind, usize::from(*body_len) % (HTTP_MAX_BODY + 200));
                let size = bytes.len().div_ceil(usize::from(*pieces).max(1)).max(1);
                for piece in bytes.chunks(size) {
                    m.handle_input(Input::Received(now, piece));
                    let events = c.drain_events(&mut m);
                    handle(events, &mut pending_head);
                }
            }
            HttpStep::Respond {
                status,
                body_len,
                close,
            } => {
                let status = match status % 6 {
                    0 => 101,
                    1 => 204,
                    2 => 304,
                    3 => 404,
                    4 => 100 + status % 500,
                    _ => 200,
                };
                let len = *body_len as usize % (HTTP_MAX_TX + 1000);
                let body = if pending_head == Some(true) {
                    Bytes::new()
                } else {
                    Bytes::from(vec![b'r'; len])
                };
                let mut resp = http::Response::new(body);
                *resp.status_mut() = http::StatusCode::from_u16(status).expect("valid status");
                if *close {
                    resp.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                if m.respond(resp).is_ok() {
                    pending_head = None;
                    responses += 1;
                }
            }
            HttpStep::TakeUpgrade => {
                if let Some(up) = m.take_upgrade() {
                    assert!(up.received.len() <= HTTP_MAX_HEAD + u16::MAX as usize);
                }
            }
            HttpStep::Close => m.close(),
            HttpStep::Closed => m.handle_input(Input::Closed(now)),
            HttpStep::Backlog(n) => m.set_backlog(now, *n as usize % (2 * HTTP_MAX_TX)),
        }
        let (rx, queued, items) = m.buffered();
        assert!(
            rx <= HTTP_MAX_HEAD + HTTP_MAX_BODY + (1 << 16),
            "rx buffer {rx}"
        );
        assert!(queued <= HTTP_MAX_TX, "queued response bytes {queued}");
        assert!(items < 16, "output queue grew to {items}");
        let events = c.drain_events(&mut m);
        handle(events, &mut pending_head);
    }
    // Liveness: once every deadline has passed, nothing is left hanging.
    for _ in 0..4 {
        if c.finished {
            break;
        }
        m.handle_input(Input::Timeout(c.advance(u16::MAX)));
        let events = c.drain_events(&mut m);
        handle(events, &mut pending_head);
    }
    assert!(
        c.finished || m.is_awaiting_response() || m.is_upgraded(),
        "connection neither closed nor waiting for the application"
    );
    assert_eq!(
        c.finished,
        closed.is_some(),
        "Finished without Closed or the reverse"
    );
    HttpRun {
        requests,
        responses,
        closed,
    }
}

/// One thing that happens to a [`Client`]: the steps every machine takes,
/// plus what a TeamTalk server sends and what a client application calls.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub enum ClientStep {
    /// Inputs, raw bytes, `Send` and `Close` as for every machine.
    Common(Step),
    /// The server answers the login with this result code modulo 8 (0:
    /// accepted; 1 to 7 are TeamTalk's refusals).
    LoginReply(u8),
    /// The server kicks the client with this reason.
    Kick(u8),
    /// The server answers a logout.
    LogoutReply,
    /// A message is delivered (`msg_type`, seq).
    Delivery(u8, u16),
    /// The server answers the `n`-th outstanding request (modulo their
    /// count), with the right or, when `wrong`, a wrong command.
    ReplyTo {
        /// Which request.
        n: u8,
        /// Answer with the request's own command instead of the reply's.
        wrong: bool,
    },
    /// The application sends a request with this body length, with the
    /// default or its own deadline (milliseconds).
    Request(u16, Option<u16>),
    /// The application answers the assignment question.
    Assigned,
    /// The application reports a failed assignment.
    AssignmentFailed,
    /// The application logs in (clients started without credentials).
    Login,
    /// The application logs out.
    Logout,
}

/// Runs `steps` against a [`Client`] and checks, besides the contract:
/// at most `max_pending` requests outstanding, and every request ending
/// in exactly one `Reply`, `RequestTimedOut` or `RequestFailed`, by the
/// end of the run at the latest (the run ends with `close`).
///
/// The step count picks the set-up: a fixed msg_server or an assignment,
/// with or without credentials, TeamTalk or jittered backoff, stopping or
/// staying after a logout. Returns the
/// client's counters, so tests can see how far a run got.
pub fn run_client(steps: &[ClientStep]) -> ClientStats {
    const MAX_PENDING: usize = 8;
    let creds = Credentials::new("alice", "pw", ClientType::Windows);
    let mut cfg = if steps.len().is_multiple_of(3) {
        ClientConfig::without_login()
    } else {
        ClientConfig::new(creds.clone())
    };
    if steps.len().is_multiple_of(2) {
        cfg.msg_server = Some(addr());
        cfg.backoff = Backoff::teamtalk();
    }
    cfg.stop_after_logout = !steps.len().is_multiple_of(5);
    cfg.max_frame_len = MAX_FRAME;
    cfg.max_tx_bytes = MAX_TX;
    cfg.max_pending = MAX_PENDING;
    let mut c = Checker::new();
    let mut client = Client::new(cfg, c.now);
    // Requests that have not ended yet, by seq.
    let mut open: BTreeSet<u16> = BTreeSet::new();
    let ended = |e: ClientEvent, open: &mut BTreeSet<u16>| match e {
        ClientEvent::Reply { seq, .. }
        | ClientEvent::RequestTimedOut { seq, .. }
        | ClientEvent::RequestFailed { seq, .. } => {
            assert!(
                open.remove(&seq),
                "request {seq} ended twice or never began"
            );
        }
        _ => {}
    };
    for e in c.drain_events(&mut client) {
        ended(e, &mut open);
    }
    for step in steps {
        let now = c.now;
        let recv = |client: &mut Client, pdu: Pdu| {
            client.handle_input(Input::Received(now, &pdu.to_bytes()));
        };
        match step {
            ClientStep::Common(step) => {
                if !c.feed(&mut client, step) {
                    match step {
                        Step::Send(len) => {
                            let _ = client.send(now, &pdu(2, 0, usize::from(*len)));
                        }
                        Step::Close => client.close(),
                        _ => {}
                    }
                }
            }
            ClientStep::LoginReply(code) => {
                let res = ImLoginRes {
                    server_time: 1,
                    result_code: i32::from(*code % 8),
                    user_info: Some(UserInfo {
                        user_id: 7,
                        ..UserInfo::default()
                    }),
                    ..ImLoginRes::default()
                };
                recv(&mut client, res.to_pdu(1));
            }
            ClientStep::Kick(reason) => {
                let kick = ImKickUser {
                    user_id: 7,
                    kick_reason: i32::from(*reason),
                };
                recv(&mut client, kick.to_pdu(0));
            }
            ClientStep::LogoutReply => recv(&mut client, ImLogoutRsp { result_code: 0 }.to_pdu(0)),
            ClientStep::Delivery(msg_type, seq) => {
                let m = ImMsgData {
                    from_user_id: 3,
                    to_session_id: 7,
                    msg_id: 1,
                    msg_type: i32::from(*msg_type),
                    msg_data: Bytes::from_static(b"hi"),
                    ..ImMsgData::default()
                };
                recv(&mut client, m.to_pdu(*seq));
            }
            ClientStep::ReplyTo { n, wrong } => {
                if !open.is_empty() {
                    let seq = open.iter().nth(usize::from(*n) % open.len()).copied();
                    let key = CommandKey::new(3, if *wrong { 0x0302 } else { 0x0303 });
                    if let Some(seq) = seq {
                        recv(&mut client, Pdu::new(key, seq, Bytes::new()));
                    }
                }
            }
            ClientStep::Request(len, timeout) => {
                // Requests use command 0x0302, answered by 0x0303.
                let req = Pdu::new(
                    CommandKey::new(3, 0x0302),
                    0,
                    Bytes::from(vec![1; usize::from(*len)]),
                );
                let result = match timeout {
                    Some(ms) => client.request_with_timeout(
                        now,
                        &req,
                        Duration::from_millis(u64::from(*ms)),
                    ),
                    None => client.request(now, &req),
                };
                if let Ok(seq) = result {
                    assert_ne!(seq, 0, "seq 0 is for pushes");
                    assert!(open.insert(seq), "seq {seq} handed out twice");
                }
            }
            ClientStep::Assigned => client.assigned(now, addr()),
            ClientStep::AssignmentFailed => client.assignment_failed(now, "fuzz"),
            ClientStep::Login => client.login(now, creds.clone()),
            ClientStep::Logout => client.logout(now),
        }
        client.check_invariants();
        check_buffers(client.buffered());
        for e in c.drain_events(&mut client) {
            ended(e, &mut open);
        }
        assert!(
            open.len() <= MAX_PENDING,
            "{} requests outstanding",
            open.len()
        );
        assert_eq!(
            open.len(),
            client.pending_requests(),
            "machine and harness disagree"
        );
    }
    client.close();
    for e in c.drain_events(&mut client) {
        ended(e, &mut open);
    }
    assert!(open.is_empty(), "requests never ended: {open:?}");
    client.stats()
}

/// Runs the drain checks once on an arbitrary machine (for testing the
/// checker itself).
#[cfg(test)]
pub(crate) fn check_drain<M: Machine>(m: &mut M) {
    let mut c = Checker::new();
    c.drain(m);
}

/// Fuzz entry point: decodes steps from raw bytes and runs them against a
/// client session, a server-peer session, and server-peer sessions that
/// require authentication (strict, and admitting unauthenticated peers).
#[cfg(feature = "fuzzing")]
pub fn run_session_steps(data: &[u8]) {
    if let Some(steps) = steps_from(data) {
        run_session(&steps);
        run_peer_session(&steps);
        for allow in [false, true] {
            let _ = run_auth_peer_session(&steps, allow);
            let _ = run_auth_peer_session(&after(&HONEST_PEER_OPENING, &steps), allow);
        }
    }
}

/// Fuzz entry point: decodes steps from raw bytes and runs them against a
/// link, and against a link that authenticates.
#[cfg(feature = "fuzzing")]
pub fn run_link_steps(data: &[u8]) {
    if let Some(steps) = steps_from(data) {
        run_link(&steps);
        let _ = run_auth_link(&steps);
        let _ = run_auth_link(&after(&HONEST_LINK_OPENING, &steps));
    }
}

/// Fuzz entry point: decodes steps from raw bytes and runs them against
/// an HTTP connection.
#[cfg(feature = "fuzzing")]
pub fn run_http_steps(data: &[u8]) {
    if let Some(steps) = steps_from::<HttpStep>(data) {
        let _ = run_http(&steps);
    }
}

/// Fuzz entry point: decodes steps from raw bytes and runs them against a
/// client session behind a TLS server wrapper (see [`run_tls_session`]).
#[cfg(feature = "fuzzing")]
pub fn run_tls_session_steps(data: &[u8]) {
    if let Some(steps) = steps_from(data) {
        run_tls_session(&steps);
    }
}

/// Fuzz entry point: decodes steps from raw bytes and runs them against a
/// client.
#[cfg(feature = "fuzzing")]
pub fn run_client_steps(data: &[u8]) {
    use arbitrary::{Arbitrary, Unstructured};
    if let Ok(steps) = Vec::<ClientStep>::arbitrary_take_rest(Unstructured::new(data)) {
        let _ = run_client(&steps);
    }
}

#[cfg(feature = "fuzzing")]
fn steps_from<S: for<'a> arbitrary::Arbitrary<'a>>(data: &[u8]) -> Option<Vec<S>> {
    use arbitrary::{Arbitrary, Unstructured};
    Vec::<S>::arbitrary_take_rest(Unstructured::new(data)).ok()
}
