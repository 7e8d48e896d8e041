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
//!   within `max_tx_bytes`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use teamtalk_proto::{Command, CommandKey, Pdu, PduCodec};

use std::collections::BTreeSet;

use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::base_define::{ClientType, UserInfo};
use teamtalk_proto::pb::im::login::{ImKickUser, ImLoginRes, ImLogoutRsp};
use teamtalk_proto::pb::im::message::ImMsgData;

use crate::client::{Client, ClientConfig, ClientEvent, ClientStats, Credentials};
use crate::{Backoff, Input, Link, LinkConfig, Machine, Output, Session, SessionConfig};

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
}

/// The base instant of virtual time for tests and fuzzing: the one place
/// in this crate allowed to read the clock (it is only ever an origin).
#[allow(clippy::disallowed_methods)]
#[must_use]
pub fn t0() -> Instant {
    Instant::now()
}

fn pdu(kind: u8, seq: u16, body_len: usize) -> Pdu {
    let key = match kind {
        0 => Command::OtherHeartbeat.key(),
        1 => Command::LoginReqUserlogin.key(),
        k => CommandKey::new(3, 0x0300 | u16::from(k)),
    };
    Pdu::new(key, seq, Bytes::from(vec![0x5a; body_len]))
}

/// Drives a machine and checks the invariants after each mutation.
struct Checker {
    now: Instant,
    finished: bool,
    codec: PduCodec,
}

impl Checker {
    fn new() -> Self {
        Self {
            now: t0(),
            finished: false,
            codec: PduCodec::new(MAX_FRAME),
        }
    }

    /// Applies the steps every machine understands (inputs and the
    /// driver's backlog report). Returns false for machine-specific steps.
    fn feed<M: Machine>(&mut self, m: &mut M, step: &Step) -> bool {
        let now = self.now;
        match step {
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
            Step::Connected => m.handle_input(Input::Connected(now)),
            Step::ConnectFailed => m.handle_input(Input::ConnectFailed(now)),
            Step::Closed => m.handle_input(Input::Closed(now)),
            Step::Backlog(n) => m.set_backlog(now, usize::from(*n)),
            _ => return false,
        }
        true
    }

    fn drain<M: Machine>(&mut self, m: &mut M) {
        self.drain_with(m, |_| {});
    }

    /// Drains, handing every event to `on_event`.
    fn drain_with<M: Machine>(&mut self, m: &mut M, mut on_event: impl FnMut(M::Event)) {
        for _ in 0..10_000 {
            let out = m.poll_output();
            if self.finished {
                assert!(matches!(out, Output::Finished), "output after Finished");
                return;
            }
            match out {
                Output::Timeout(t) => {
                    assert!(t > self.now, "deadline not after the last input");
                    return;
                }
                Output::Finished => {
                    self.finished = true;
                    assert!(matches!(m.poll_output(), Output::Finished));
                    return;
                }
                Output::Transmit(bytes) => {
                    assert!(!bytes.is_empty(), "empty transmit");
                    let mut buf = BytesMut::from(&bytes[..]);
                    while let Some(p) = self.codec.decode(&mut buf).expect("valid frames") {
                        assert!(p.wire_len() <= MAX_FRAME as usize);
                    }
                    assert!(buf.is_empty(), "transmit with a partial PDU");
                }
                Output::Event(e) => on_event(e),
                Output::Connect(_) | Output::Close => {}
            }
        }
        panic!("drain did not end");
    }

    fn advance(&mut self, ms: u16) -> Instant {
        self.now += Duration::from_millis(u64::from(ms));
        self.now
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
        if !c.feed(&mut s, step) {
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
        check_buffers(s.buffered());
        c.drain(&mut s);
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
    c.drain_with(&mut client, |e| ended(e, &mut open));
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
        c.drain_with(&mut client, |e| ended(e, &mut open));
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
    c.drain_with(&mut client, |e| ended(e, &mut open));
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
/// client session and a server-peer session.
#[cfg(feature = "fuzzing")]
pub fn run_session_steps(data: &[u8]) {
    if let Some(steps) = steps_from(data) {
        run_session(&steps);
        run_peer_session(&steps);
    }
}

/// Fuzz entry point: decodes steps from raw bytes and runs them against a
/// link.
#[cfg(feature = "fuzzing")]
pub fn run_link_steps(data: &[u8]) {
    if let Some(steps) = steps_from(data) {
        run_link(&steps);
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
fn steps_from(data: &[u8]) -> Option<Vec<Step>> {
    use arbitrary::{Arbitrary, Unstructured};
    Vec::<Step>::arbitrary_take_rest(Unstructured::new(data)).ok()
}
