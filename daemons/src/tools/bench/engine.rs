//! The nonblocking engine behind `bench msg` and `bench conns`.
//!
//! A few worker threads each own many connections on their own `mio::Poll`
//! (no thread per connection: the bench must not be the bottleneck). A
//! connection goes `Pending → Connecting → LoggingIn → Ready`; both ends of
//! a sender/receiver pair live on the same worker, so matching deliveries
//! to sends needs no locks. The main thread steers the workers through
//! [`Control::phase`] and reads their published [`Live`] counters for the
//! progress line; each worker returns its exact [`WorkerResult`] when told
//! to stop.
//!
//! Every message carries a small binary header at the start of `msg_data`
//! ([`PAYLOAD_MAGIC`], pair id, message number, send time), padded to the
//! requested size, so a delivery names the send it belongs to.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use teamtalk_proto::pb::im::base_define::{ClientType, UserStatType};
use teamtalk_proto::pb::im::login::{ImLoginReq, ImLoginRes};
use teamtalk_proto::pb::im::message::{ImMsgData, ImMsgDataAck};
use teamtalk_proto::pb::im::other::ImHeartBeat;
use teamtalk_proto::{Command, Pdu, PduCodec};

use super::hist::Histogram;
use crate::clock;

/// Workers connect and log in.
pub(crate) const SETUP: u8 = 0;
/// Senders send; idle connections heartbeat.
pub(crate) const RUN: u8 = 1;
/// No new sends; acks and deliveries still count.
pub(crate) const DRAIN: u8 = 2;
/// Workers return their results.
pub(crate) const STOP: u8 = 3;

/// First bytes of every bench message body.
pub(crate) const PAYLOAD_MAGIC: [u8; 4] = *b"TTBM";
/// Magic, pair id (u32), message number (u64), send time (u64 ns).
pub(crate) const HEADER_LEN: usize = 4 + 4 + 8 + 8;

/// `MSG_TYPE_SINGLE_TEXT`.
const SINGLE_TEXT: i32 = 1;
/// `SESSION_TYPE_SINGLE`.
const SESSION_SINGLE: i32 = 1;

/// Shared between the main thread and the workers.
#[derive(Debug)]
pub(crate) struct Control {
    /// One of [`SETUP`], [`RUN`], [`DRAIN`], [`STOP`].
    pub(crate) phase: AtomicU8,
    /// Origin of the send timestamps carried in payloads.
    pub(crate) epoch: Instant,
    /// One slot per worker.
    pub(crate) live: Vec<Live>,
}

impl Control {
    pub(crate) fn new(workers: usize) -> Self {
        Self {
            phase: AtomicU8::new(SETUP),
            epoch: clock::now(),
            live: (0..workers).map(|_| Live::default()).collect(),
        }
    }

    pub(crate) fn set_phase(&self, phase: u8) {
        self.phase.store(phase, Ordering::Release);
    }

    /// Sum of every worker's published counters.
    pub(crate) fn totals(&self) -> LiveTotals {
        let mut t = LiveTotals::default();
        for l in &self.live {
            let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
            t.logged_in += g(&l.logged_in);
            t.refused += g(&l.refused);
            t.failed += g(&l.failed);
            t.sent += g(&l.sent);
            t.acked += g(&l.acked);
            t.delivered += g(&l.delivered);
            t.disconnects += g(&l.disconnects);
            t.settled += g(&l.settled);
        }
        t
    }
}

/// Counters a worker publishes after every poll round, for progress.
#[derive(Debug, Default)]
pub(crate) struct Live {
    logged_in: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    delivered: AtomicU64,
    disconnects: AtomicU64,
    /// 1 once nothing is outstanding during [`DRAIN`].
    settled: AtomicU64,
}

/// A snapshot of [`Live`] summed over workers.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LiveTotals {
    pub(crate) logged_in: u64,
    pub(crate) refused: u64,
    pub(crate) failed: u64,
    pub(crate) sent: u64,
    pub(crate) acked: u64,
    pub(crate) delivered: u64,
    pub(crate) disconnects: u64,
    pub(crate) settled: u64,
}

/// Settings every worker shares.
#[derive(Debug, Clone)]
pub(crate) struct EngineConfig {
    /// md5hex of the password, as clients send it.
    pub(crate) password_md5: String,
    /// Messages in flight (unacked) per sender.
    pub(crate) window: usize,
    /// `msg_data` length in bytes (at least [`HEADER_LEN`]).
    pub(crate) size: usize,
    /// Sends per second for this worker; `None`: as fast as windows allow.
    pub(crate) rate: Option<f64>,
    /// An unacked message leaves the window after this long.
    pub(crate) ack_timeout: Duration,
    /// Connect plus login must finish within this.
    pub(crate) login_timeout: Duration,
    /// Heartbeat interval on logged-in connections.
    pub(crate) heartbeat: Duration,
    /// Connections connecting or logging in at once, per worker.
    pub(crate) max_connecting: usize,
}

/// What one worker is given.
#[derive(Debug, Default)]
pub(crate) struct WorkerPlan {
    /// Address and user name of each connection.
    pub(crate) conns: Vec<(SocketAddr, String)>,
    /// (sender conn index, receiver conn index, global pair id).
    pub(crate) pairs: Vec<(usize, usize, u32)>,
}

/// Exact figures of one worker, merged by the caller.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counts {
    pub(crate) logged_in: u64,
    pub(crate) login_refused: u64,
    pub(crate) login_failed: u64,
    pub(crate) disconnects: u64,
    pub(crate) kicked: u64,
    pub(crate) held: u64,
    pub(crate) pairs_active: u64,
    pub(crate) sent: u64,
    pub(crate) acked: u64,
    pub(crate) late_acks: u64,
    pub(crate) duplicate_acks: u64,
    pub(crate) ack_timeouts: u64,
    pub(crate) delivered: u64,
    pub(crate) duplicates: u64,
    pub(crate) foreign: u64,
    pub(crate) heartbeats: u64,
    /// First connect/login failure, for the report.
    pub(crate) first_error: Option<String>,
}

impl Counts {
    pub(crate) fn merge(&mut self, o: &Self) {
        self.logged_in += o.logged_in;
        self.login_refused += o.login_refused;
        self.login_failed += o.login_failed;
        self.disconnects += o.disconnects;
        self.kicked += o.kicked;
        self.held += o.held;
        self.pairs_active += o.pairs_active;
        self.sent += o.sent;
        self.acked += o.acked;
        self.late_acks += o.late_acks;
        self.duplicate_acks += o.duplicate_acks;
        self.ack_timeouts += o.ack_timeouts;
        self.delivered += o.delivered;
        self.duplicates += o.duplicates;
        self.foreign += o.foreign;
        self.heartbeats += o.heartbeats;
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
    }
}

/// What a worker returns.
#[derive(Debug, Default)]
pub(crate) struct WorkerResult {
    pub(crate) counts: Counts,
    /// Send → delivery, ns.
    pub(crate) latency: Histogram,
    /// Send → server ack, ns.
    pub(crate) ack_latency: Histogram,
    /// Connect start → login answer, ns.
    pub(crate) login_latency: Histogram,
}

impl WorkerResult {
    pub(crate) fn merge(&mut self, o: &Self) {
        self.counts.merge(&o.counts);
        self.latency.merge(&o.latency);
        self.ack_latency.merge(&o.ack_latency);
        self.login_latency.merge(&o.login_latency);
    }
}

/// Starts one worker thread.
///
/// # Errors
/// When the poller or the thread cannot be created.
pub(crate) fn spawn(
    id: usize,
    plan: WorkerPlan,
    cfg: Arc<EngineConfig>,
    ctl: Arc<Control>,
) -> io::Result<std::thread::JoinHandle<WorkerResult>> {
    let poll = Poll::new()?;
    std::thread::Builder::new()
        .name(format!("bench-{id}"))
        .spawn(move || Worker::new(id, plan, cfg, ctl, poll).run())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Connecting,
    LoggingIn,
    Ready,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Idle,
    Sender(usize),
    Receiver(usize),
}

#[derive(Debug)]
struct Conn {
    stream: Option<TcpStream>,
    addr: SocketAddr,
    user: String,
    state: State,
    started: Instant,
    user_id: u32,
    role: Role,
    rx: BytesMut,
    tx: BytesMut,
    dirty: bool,
    last_heartbeat: Instant,
}

/// A growable set of message numbers.
#[derive(Debug, Default)]
struct BitSet(Vec<u64>);

impl BitSet {
    /// Sets `i`; returns whether it was already set.
    fn insert(&mut self, i: u64) -> bool {
        let (word, bit) = ((i / 64) as usize, i % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let was = self.0[word] & (1 << bit) != 0;
        self.0[word] |= 1 << bit;
        was
    }
}

#[derive(Debug)]
struct Pair {
    id: u32,
    sender: usize,
    receiver: usize,
    /// Next message number.
    next: u64,
    /// (pdu seq, message number, send time ns) of unacked messages.
    window: VecDeque<(u16, u64, u64)>,
    acked: BitSet,
    delivered: BitSet,
    delivered_count: u64,
}

/// The PDU seq a message number travels under (1…65535; 0 is avoided).
fn seq_of(msg_no: u64) -> u16 {
    (msg_no % 65_535) as u16 + 1
}

/// The latest message number below `next` that travelled under `seq`.
fn msg_no_of(seq: u16, next: u64) -> Option<u64> {
    if seq == 0 || next == 0 {
        return None;
    }
    let last = next - 1;
    let diff = (u64::from(seq_of(last)) + 65_535 - u64::from(seq)) % 65_535;
    last.checked_sub(diff)
}

/// Writes a bench payload header into `buf` (at least [`HEADER_LEN`] long).
pub(crate) fn write_header(buf: &mut [u8], pair: u32, msg_no: u64, sent_ns: u64) {
    buf[..4].copy_from_slice(&PAYLOAD_MAGIC);
    buf[4..8].copy_from_slice(&pair.to_be_bytes());
    buf[8..16].copy_from_slice(&msg_no.to_be_bytes());
    buf[16..24].copy_from_slice(&sent_ns.to_be_bytes());
}

/// Reads a bench payload header: (pair, message number, send time ns).
pub(crate) fn read_header(buf: &[u8]) -> Option<(u32, u64, u64)> {
    if buf.len() < HEADER_LEN || buf[..4] != PAYLOAD_MAGIC {
        return None;
    }
    let pair = u32::from_be_bytes(buf[4..8].try_into().ok()?);
    let msg_no = u64::from_be_bytes(buf[8..16].try_into().ok()?);
    let sent = u64::from_be_bytes(buf[16..24].try_into().ok()?);
    Some((pair, msg_no, sent))
}

struct Worker {
    id: usize,
    poll: Poll,
    conns: Vec<Conn>,
    pairs: Vec<Pair>,
    cfg: Arc<EngineConfig>,
    ctl: Arc<Control>,
    codec: PduCodec,
    scratch: Box<[u8]>,
    dirty: Vec<usize>,
    next_pending: usize,
    in_progress: usize,
    counts: Counts,
    result: WorkerResult,
    payload: Vec<u8>,
    run_start: Option<Instant>,
    rr: usize,
}

enum Fail {
    /// Counted as a failed login (with this reason).
    Login(String),
    /// Counted as a disconnect of a logged-in connection.
    Disconnect,
    /// Not counted (already counted, e.g. a refusal).
    Quiet,
}

impl Worker {
    fn new(
        id: usize,
        plan: WorkerPlan,
        cfg: Arc<EngineConfig>,
        ctl: Arc<Control>,
        poll: Poll,
    ) -> Self {
        let now = clock::now();
        let mut conns: Vec<Conn> = plan
            .conns
            .into_iter()
            .map(|(addr, user)| Conn {
                stream: None,
                addr,
                user,
                state: State::Pending,
                started: now,
                user_id: 0,
                role: Role::Idle,
                rx: BytesMut::new(),
                tx: BytesMut::new(),
                dirty: false,
                last_heartbeat: now,
            })
            .collect();
        let mut pairs = Vec::with_capacity(plan.pairs.len());
        for (i, &(s, r, pid)) in plan.pairs.iter().enumerate() {
            conns[s].role = Role::Sender(i);
            conns[r].role = Role::Receiver(i);
            pairs.push(Pair {
                id: pid,
                sender: s,
                receiver: r,
                next: 0,
                window: VecDeque::with_capacity(cfg.window),
                acked: BitSet::default(),
                delivered: BitSet::default(),
                delivered_count: 0,
            });
        }
        let mut payload = vec![b'x'; cfg.size.max(HEADER_LEN)];
        payload[..HEADER_LEN].fill(0);
        Self {
            id,
            poll,
            conns,
            pairs,
            cfg,
            ctl,
            codec: PduCodec::default(),
            scratch: vec![0; 64 * 1024].into_boxed_slice(),
            dirty: Vec::new(),
            next_pending: 0,
            in_progress: 0,
            counts: Counts::default(),
            result: WorkerResult::default(),
            payload,
            run_start: None,
            rr: 0,
        }
    }

    fn run(mut self) -> WorkerResult {
        let mut events = Events::with_capacity(1024);
        let mut last_scan = clock::now();
        loop {
            let phase = self.ctl.phase.load(Ordering::Acquire);
            if phase == STOP {
                break;
            }
            let now = clock::now();
            if phase == SETUP {
                self.start_connects(now);
            } else if self.run_start.is_none() {
                self.run_start = Some(now);
            }
            let timeout = if phase == RUN && self.cfg.rate.is_some() {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(5)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                self.counts
                    .first_error
                    .get_or_insert_with(|| format!("poll: {e}"));
                break;
            }
            let now = clock::now();
            for ev in &events {
                let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                self.on_event(ev.token().0, readable, ev.is_writable(), now);
            }
            if phase == RUN {
                self.fill(now);
            }
            if now.duration_since(last_scan) >= Duration::from_millis(100) {
                last_scan = now;
                self.scan(now, phase);
            }
            self.flush_dirty();
            self.publish(phase);
        }
        self.finish()
    }

    fn finish(mut self) -> WorkerResult {
        for c in &self.conns {
            if c.state == State::Ready {
                self.counts.held += 1;
            }
            if matches!(
                c.state,
                State::Pending | State::Connecting | State::LoggingIn
            ) {
                self.counts.login_failed += 1;
                self.counts
                    .first_error
                    .get_or_insert_with(|| format!("{}: login did not finish in time", c.user));
            }
        }
        self.counts.pairs_active = self.pairs.iter().filter(|p| p.next > 0).count() as u64;
        self.counts.delivered = self.pairs.iter().map(|p| p.delivered_count).sum();
        self.result.counts = self.counts;
        self.result
    }

    fn publish(&self, phase: u8) {
        let l = &self.ctl.live[self.id];
        let c = &self.counts;
        let s = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        s(&l.logged_in, c.logged_in);
        s(&l.refused, c.login_refused);
        s(&l.failed, c.login_failed);
        s(&l.sent, c.sent);
        s(&l.acked, c.acked);
        s(
            &l.delivered,
            self.pairs.iter().map(|p| p.delivered_count).sum(),
        );
        s(&l.disconnects, c.disconnects);
        let settled = phase == DRAIN
            && self
                .pairs
                .iter()
                .all(|p| p.window.is_empty() && p.delivered_count >= p.next);
        s(&l.settled, u64::from(settled));
    }

    fn start_connects(&mut self, now: Instant) {
        while self.in_progress < self.cfg.max_connecting && self.next_pending < self.conns.len() {
            let i = self.next_pending;
            self.next_pending += 1;
            let c = &mut self.conns[i];
            c.started = now;
            match TcpStream::connect(c.addr) {
                Ok(mut stream) => {
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        self.fail_login(i, format!("register: {e}"));
                        continue;
                    }
                    c.stream = Some(stream);
                    c.state = State::Connecting;
                    self.in_progress += 1;
                }
                Err(e) => self.fail_login(i, format!("connect {}: {e}", self.conns[i].addr)),
            }
        }
    }

    fn fail_login(&mut self, i: usize, why: String) {
        self.counts.login_failed += 1;
        let c = &mut self.conns[i];
        self.counts
            .first_error
            .get_or_insert_with(|| format!("{}: {why}", c.user));
        c.state = State::Closed;
    }

    fn on_event(&mut self, i: usize, readable: bool, writable: bool, now: Instant) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        if c.state == State::Connecting {
            let Some(stream) = c.stream.as_ref() else {
                return;
            };
            match connect_status(stream) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => return self.close(i, Fail::Login(format!("connect: {e}"))),
            }
            let c = &mut self.conns[i];
            let Some(stream) = c.stream.as_ref() else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let req = ImLoginReq {
                user_name: c.user.clone(),
                password: self.cfg.password_md5.clone(),
                online_status: UserStatType::UserStatusOnline as i32,
                client_type: ClientType::Windows as i32,
                client_version: Some("teamtalk-rs bench".to_owned()),
            };
            Pdu::encode_message(Command::LoginReqUserlogin.key(), 1, &req, &mut c.tx);
            c.state = State::LoggingIn;
            self.mark_dirty(i);
        }
        if readable {
            self.read(i, now);
        }
        if writable && self.conns[i].stream.is_some() && !self.conns[i].tx.is_empty() {
            self.mark_dirty(i);
        }
    }

    fn mark_dirty(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(i);
        }
    }

    fn read(&mut self, i: usize, now: Instant) {
        let mut eof = None;
        {
            let c = &mut self.conns[i];
            let Some(stream) = c.stream.as_mut() else {
                return;
            };
            loop {
                match stream.read(&mut self.scratch) {
                    Ok(0) => {
                        eof = Some("closed by server".to_owned());
                        break;
                    }
                    Ok(n) => c.rx.extend_from_slice(&self.scratch[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        eof = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        loop {
            match self.codec.decode(&mut self.conns[i].rx) {
                Ok(Some(pdu)) => self.handle(i, &pdu, now),
                Ok(None) => break,
                Err(e) => {
                    eof = Some(format!("bad frame: {e}"));
                    break;
                }
            }
            if self.conns[i].state == State::Closed {
                return;
            }
        }
        if let Some(why) = eof {
            let fail = match self.conns[i].state {
                State::Ready => Fail::Disconnect,
                _ => Fail::Login(why),
            };
            self.close(i, fail);
        }
    }

    fn close(&mut self, i: usize, fail: Fail) {
        let c = &mut self.conns[i];
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        let was = c.state;
        c.state = State::Closed;
        c.tx.clear();
        if matches!(was, State::Connecting | State::LoggingIn) {
            self.in_progress -= 1;
        }
        match fail {
            Fail::Login(why) => {
                self.counts.login_failed += 1;
                self.counts
                    .first_error
                    .get_or_insert_with(|| format!("{}: {why}", c.user));
            }
            Fail::Disconnect => {
                if self.ctl.phase.load(Ordering::Relaxed) != STOP {
                    self.counts.disconnects += 1;
                }
            }
            Fail::Quiet => {}
        }
    }

    fn handle(&mut self, i: usize, pdu: &Pdu, now: Instant) {
        let key = pdu.key();
        if key == Command::LoginResUserlogin.key() {
            self.on_login(i, pdu, now);
        } else if key == Command::MsgDataAck.key() {
            if let Role::Sender(p) = self.conns[i].role {
                self.on_ack(p, pdu.seq(), now);
            }
        } else if key == Command::MsgData.key() {
            self.on_delivery(i, pdu, now);
        } else if key == Command::LoginKickUser.key() {
            self.counts.kicked += 1;
        }
    }

    fn on_login(&mut self, i: usize, pdu: &Pdu, now: Instant) {
        if self.conns[i].state != State::LoggingIn {
            return;
        }
        let res = match pdu.decode_body::<ImLoginRes>() {
            Ok(r) => r,
            Err(e) => return self.close(i, Fail::Login(format!("login reply: {e}"))),
        };
        if res.result_code != 0 {
            self.counts.login_refused += 1;
            let c = &self.conns[i];
            self.counts.first_error.get_or_insert_with(|| {
                format!(
                    "{}: login refused, code {} ({})",
                    c.user,
                    res.result_code,
                    res.result_string.as_deref().unwrap_or("")
                )
            });
            return self.close(i, Fail::Quiet);
        }
        let c = &mut self.conns[i];
        c.user_id = res.user_info.map_or(0, |u| u.user_id);
        c.state = State::Ready;
        c.last_heartbeat = now;
        self.in_progress -= 1;
        self.counts.logged_in += 1;
        self.result
            .login_latency
            .record(nanos(now.duration_since(c.started)));
    }

    fn on_ack(&mut self, p: usize, seq: u16, now: Instant) {
        let now_ns = nanos(now.duration_since(self.ctl.epoch));
        let pair = &mut self.pairs[p];
        let msg_no = if let Some(pos) = pair.window.iter().position(|w| w.0 == seq) {
            let Some((_, msg_no, sent)) = pair.window.remove(pos) else {
                return;
            };
            self.result.ack_latency.record(now_ns.saturating_sub(sent));
            msg_no
        } else {
            let Some(msg_no) = msg_no_of(seq, pair.next) else {
                self.counts.duplicate_acks += 1;
                return;
            };
            self.counts.late_acks += 1;
            msg_no
        };
        if pair.acked.insert(msg_no) {
            self.counts.duplicate_acks += 1;
        } else {
            self.counts.acked += 1;
        }
    }

    fn on_delivery(&mut self, i: usize, pdu: &Pdu, now: Instant) {
        let Ok(m) = pdu.decode_body::<ImMsgData>() else {
            self.counts.foreign += 1;
            return;
        };
        // Answer like a real client does.
        let c = &mut self.conns[i];
        let ack = ImMsgDataAck {
            user_id: c.user_id,
            session_id: m.from_user_id,
            msg_id: m.msg_id,
            session_type: SESSION_SINGLE,
        };
        Pdu::encode_message(Command::MsgDataAck.key(), pdu.seq(), &ack, &mut c.tx);
        let role = c.role;
        self.mark_dirty(i);
        let ours = match (role, read_header(&m.msg_data)) {
            (Role::Receiver(p), Some((pid, msg_no, sent))) if self.pairs[p].id == pid => {
                Some((p, msg_no, sent))
            }
            _ => None,
        };
        let Some((p, msg_no, sent)) = ours else {
            self.counts.foreign += 1;
            return;
        };
        let pair = &mut self.pairs[p];
        if msg_no >= pair.next {
            self.counts.foreign += 1;
        } else if pair.delivered.insert(msg_no) {
            self.counts.duplicates += 1;
        } else {
            pair.delivered_count += 1;
            let now_ns = nanos(now.duration_since(self.ctl.epoch));
            self.result.latency.record(now_ns.saturating_sub(sent));
        }
    }

    /// Sends while windows and the rate allow, round-robin over pairs.
    fn fill(&mut self, now: Instant) {
        let n = self.pairs.len();
        if n == 0 || self.cfg.window == 0 {
            return;
        }
        let mut budget = match (self.cfg.rate, self.run_start) {
            (Some(rate), Some(start)) => {
                let allowed = (now.duration_since(start).as_secs_f64() * rate) as u64;
                allowed.saturating_sub(self.counts.sent)
            }
            _ => u64::MAX,
        };
        let mut idle = 0;
        while budget > 0 && idle < n {
            let p = self.rr;
            self.rr = (self.rr + 1) % n;
            let pair = &self.pairs[p];
            let ready = self.conns[pair.sender].state == State::Ready
                && self.conns[pair.receiver].state == State::Ready;
            if ready && pair.window.len() < self.cfg.window {
                self.send_one(p, now);
                budget -= 1;
                idle = 0;
            } else {
                idle += 1;
            }
        }
    }

    fn send_one(&mut self, p: usize, now: Instant) {
        let now_ns = nanos(now.duration_since(self.ctl.epoch));
        let pair = &mut self.pairs[p];
        let msg_no = pair.next;
        pair.next += 1;
        let seq = seq_of(msg_no);
        write_header(&mut self.payload, pair.id, msg_no, now_ns);
        let (s, r) = (pair.sender, pair.receiver);
        let msg = ImMsgData {
            from_user_id: self.conns[s].user_id,
            to_session_id: self.conns[r].user_id,
            msg_id: 0,
            create_time: 0,
            msg_type: SINGLE_TEXT,
            msg_data: Bytes::copy_from_slice(&self.payload),
            attach_data: None,
        };
        pair.window.push_back((seq, msg_no, now_ns));
        Pdu::encode_message(Command::MsgData.key(), seq, &msg, &mut self.conns[s].tx);
        self.counts.sent += 1;
        self.mark_dirty(s);
    }

    /// Timeouts and heartbeats, ten times a second.
    fn scan(&mut self, now: Instant, phase: u8) {
        for i in 0..self.conns.len() {
            let c = &mut self.conns[i];
            match c.state {
                State::Connecting | State::LoggingIn
                    if now.duration_since(c.started) > self.cfg.login_timeout =>
                {
                    self.close(i, Fail::Login("no login answer in time".to_owned()));
                }
                State::Ready if now.duration_since(c.last_heartbeat) >= self.cfg.heartbeat => {
                    c.last_heartbeat = now;
                    Pdu::encode_message(
                        Command::OtherHeartbeat.key(),
                        0,
                        &ImHeartBeat {},
                        &mut c.tx,
                    );
                    self.counts.heartbeats += 1;
                    self.mark_dirty(i);
                }
                _ => {}
            }
        }
        if phase >= RUN {
            let limit = nanos(self.cfg.ack_timeout);
            let now_ns = nanos(now.duration_since(self.ctl.epoch));
            for pair in &mut self.pairs {
                while pair
                    .window
                    .front()
                    .is_some_and(|w| now_ns.saturating_sub(w.2) > limit)
                {
                    pair.window.pop_front();
                    self.counts.ack_timeouts += 1;
                }
            }
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            self.conns[i].dirty = false;
            if let Err(e) = self.flush(i) {
                let fail = match self.conns[i].state {
                    State::Ready => Fail::Disconnect,
                    _ => Fail::Login(format!("write: {e}")),
                };
                self.close(i, fail);
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }

    fn flush(&mut self, i: usize) -> io::Result<()> {
        let c = &mut self.conns[i];
        let Some(stream) = c.stream.as_mut() else {
            c.tx.clear();
            return Ok(());
        };
        while !c.tx.is_empty() {
            match stream.write(&c.tx) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => c.tx.advance(n),
                // The writable event will bring it back.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Whether a nonblocking connect finished: `Ok(false)` while in progress.
fn connect_status(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn seq_maps_back_to_the_latest_message(msg_no in 0u64..1_000_000, ahead in 0u64..65_535) {
            let next = msg_no + ahead + 1;
            prop_assert_eq!(msg_no_of(seq_of(msg_no), next), Some(msg_no));
        }

        #[test]
        fn header_round_trips(pair: u32, msg_no: u64, sent: u64, pad in 0usize..64) {
            let mut buf = vec![0u8; HEADER_LEN + pad];
            write_header(&mut buf, pair, msg_no, sent);
            prop_assert_eq!(read_header(&buf), Some((pair, msg_no, sent)));
        }
    }

    #[test]
    fn foreign_payloads_are_not_ours() {
        assert_eq!(read_header(b"hello"), None);
        assert_eq!(read_header(&[0u8; HEADER_LEN]), None);
        assert_eq!(msg_no_of(0, 10), None);
        assert_eq!(msg_no_of(5, 0), None);
    }

    #[test]
    fn bitset_reports_repeats() {
        let mut b = BitSet::default();
        assert!(!b.insert(130));
        assert!(b.insert(130));
        assert!(!b.insert(0));
    }
}
