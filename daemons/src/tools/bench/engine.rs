//! The engine behind `bench msg` and `bench conns`.
//!
//! Every connection is a [`teamtalk_conn::Client`] machine: connect, login,
//! heartbeats, request deadlines (the ack timeout) and delivery acks are
//! the machine's, exactly as for any other client. A worker is one
//! `teamtalk-net` reactor (one shard thread doing the sockets and running
//! the machines) plus one application thread that reads the machines'
//! events and decides what to send; both ends of a sender/receiver pair
//! live on the same worker, so matching deliveries to sends needs no
//! locks. A connection goes `Pending → Connecting → Ready`. The main thread
//! steers the workers through [`Control::phase`] and reads their published
//! [`Live`] counters for the progress line; each worker returns its exact
//! [`WorkerResult`] when told to stop.
//!
//! The machines are wrapped in [`Timed`], which stamps each event with the
//! instant the reactor thread raised it: latencies are measured between
//! two instants taken on the reactor thread, whatever the scheduling of
//! the application thread.
//!
//! Sends are handed to the sender's machine in one reactor command per
//! sender and round; the message body is built there, so its timestamp is
//! taken right before the bytes go to the socket, and the seq the machine
//! gave each message comes back on a channel. Replies can only follow the
//! command that sent their request, so the application reads that channel
//! before every batch of events.
//!
//! Every message carries a small binary header at the start of `msg_data`
//! ([`PAYLOAD_MAGIC`], pair id, message number, send time), padded to the
//! requested size, so a delivery names the send it belongs to.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use teamtalk_conn::client::{CLIENT_SILENCE_TIMEOUT, Credentials};
use teamtalk_conn::{Client, ClientConfig, ClientEvent, Input, Machine, Output, SendError};
use teamtalk_net::{ConnId, EventRx, Handle, NetEvent, Reactor, ReactorConfig};
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::base_define::ClientType;
use teamtalk_proto::pb::im::message::ImMsgData;
use teamtalk_proto::{Command, Pdu};

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
    /// The connect, and then the login, must each finish within this.
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

/// Starts one worker: its reactor (one shard thread) and its application
/// thread.
///
/// # Errors
/// When the reactor or the thread cannot be created.
pub(crate) fn spawn(
    id: usize,
    plan: WorkerPlan,
    cfg: Arc<EngineConfig>,
    ctl: Arc<Control>,
) -> io::Result<std::thread::JoinHandle<WorkerResult>> {
    let reactor = Reactor::<Timed>::new(ReactorConfig {
        threads: 1,
        shutdown_grace: Duration::from_secs(2),
        ..ReactorConfig::default()
    })?;
    std::thread::Builder::new()
        .name(format!("bench-{id}"))
        .spawn(move || Worker::new(id, plan, cfg, ctl, reactor).run())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not opened yet.
    Pending,
    /// Opened: connecting or logging in.
    Connecting,
    /// Logged in.
    Ready,
    /// Stopped (refused, failed, lost).
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
    id: Option<ConnId>,
    addr: SocketAddr,
    user: String,
    state: State,
    started: Instant,
    user_id: u32,
    role: Role,
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

/// Timed-out requests remembered per pair, to recognise late acks.
const MAX_TIMED_OUT: usize = 65_536;

#[derive(Debug)]
struct Pair {
    id: u32,
    sender: usize,
    receiver: usize,
    /// Next message number (= messages handed to the sender's machine).
    next: u64,
    /// Messages handed over whose seq has not come back yet.
    awaiting_seq: usize,
    /// Unacked messages by seq: (message number, send time ns).
    inflight: HashMap<u16, (u64, u64)>,
    /// Timed-out messages by seq, for late acks.
    timed_out: HashMap<u16, u64>,
    acked: BitSet,
    delivered: BitSet,
    delivered_count: u64,
}

impl Pair {
    fn in_window(&self) -> usize {
        self.inflight.len() + self.awaiting_seq
    }
}

/// A client machine whose events carry the instant the reactor thread
/// raised them, so that latencies measure the servers and not how soon the
/// application thread was scheduled. Nothing else is added.
pub(crate) struct Timed(Client);

impl Machine for Timed {
    type Event = (Instant, ClientEvent);

    fn handle_input(&mut self, input: Input<'_>) {
        self.0.handle_input(input);
    }

    fn poll_output(&mut self) -> Output<Self::Event> {
        match self.0.poll_output() {
            Output::Event(e) => Output::Event((clock::now(), e)),
            Output::Transmit(b) => Output::Transmit(b),
            Output::Connect(a) => Output::Connect(a),
            Output::Close => Output::Close,
            Output::Timeout(t) => Output::Timeout(t),
            Output::Finished => Output::Finished,
        }
    }

    fn set_backlog(&mut self, now: Instant, bytes: usize) {
        self.0.set_backlog(now, bytes);
    }
}

/// Threads per worker that open connections: an open is a round trip to
/// the reactor thread, and several in flight set up thousands of
/// connections faster.
const OPENERS: usize = 4;

/// An opened machine: connection index, and its id or why not.
type Opened = (usize, Result<ConnId, String>);

/// What a send command reports back: the pair, and per message its
/// number, its send time (ns since the epoch) and the seq the machine
/// gave it (or why it refused).
type SeqNote = (usize, Vec<(u64, u64, Result<u16, SendError>)>);

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
    reactor: Reactor<Timed>,
    handle: Handle<Timed>,
    events: EventRx<(Instant, ClientEvent)>,
    seq_tx: Sender<SeqNote>,
    seq_rx: Receiver<SeqNote>,
    /// Machines to open, for the opener threads.
    open_tx: Option<Sender<(usize, Timed)>>,
    opened_rx: Receiver<Opened>,
    openers: Vec<std::thread::JoinHandle<()>>,
    /// Events of machines whose open has not been reported yet.
    early: HashMap<ConnId, Vec<NetEvent<(Instant, ClientEvent)>>>,
    conns: Vec<Conn>,
    by_id: HashMap<ConnId, usize>,
    pairs: Vec<Pair>,
    cfg: Arc<EngineConfig>,
    ctl: Arc<Control>,
    next_pending: usize,
    in_progress: usize,
    counts: Counts,
    result: WorkerResult,
    run_start: Option<Instant>,
    rr: usize,
}

impl Worker {
    fn new(
        id: usize,
        plan: WorkerPlan,
        cfg: Arc<EngineConfig>,
        ctl: Arc<Control>,
        reactor: Reactor<Timed>,
    ) -> Self {
        let now = clock::now();
        let mut conns: Vec<Conn> = plan
            .conns
            .into_iter()
            .map(|(addr, user)| Conn {
                id: None,
                addr,
                user,
                state: State::Pending,
                started: now,
                user_id: 0,
                role: Role::Idle,
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
                awaiting_seq: 0,
                inflight: HashMap::with_capacity(cfg.window),
                timed_out: HashMap::new(),
                acked: BitSet::default(),
                delivered: BitSet::default(),
                delivered_count: 0,
            });
        }
        let (seq_tx, seq_rx) = crossbeam_channel::unbounded();
        let (open_tx, open_rx) = crossbeam_channel::unbounded::<(usize, Timed)>();
        let (opened_tx, opened_rx) = crossbeam_channel::unbounded();
        let openers = (0..OPENERS)
            .map(|_| {
                let (rx, tx, handle) = (open_rx.clone(), opened_tx.clone(), reactor.handle());
                std::thread::spawn(move || {
                    for (i, machine) in rx {
                        let opened = handle.open(machine).map_err(|e| e.to_string());
                        if tx.send((i, opened)).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        Self {
            id,
            open_tx: Some(open_tx),
            opened_rx,
            openers,
            early: HashMap::new(),
            handle: reactor.handle(),
            events: reactor.events(),
            reactor,
            seq_tx,
            seq_rx,
            conns,
            by_id: HashMap::new(),
            pairs,
            cfg,
            ctl,
            next_pending: 0,
            in_progress: 0,
            counts: Counts::default(),
            result: WorkerResult::default(),
            run_start: None,
            rr: 0,
        }
    }

    fn run(mut self) -> WorkerResult {
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
            let wait = if phase == RUN && self.cfg.rate.is_some() {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(5)
            };
            // Block for the first event (or opened connection), then take
            // whatever else is there. Seqs are taken before every event: a
            // reply can only follow the note of the command that sent its
            // request.
            let mut next = crossbeam_channel::select! {
                recv(self.events) -> e => e.ok().map(Ok),
                recv(self.opened_rx) -> o => o.ok().map(Err),
                default(wait) => None,
            };
            let mut budget = 4096;
            while let Some(item) = next {
                match item {
                    Ok((id, ev)) => {
                        self.take_seqs();
                        self.on_event(id, ev, phase);
                    }
                    Err((i, opened)) => self.on_opened(i, opened, phase),
                }
                budget -= 1;
                next = if budget == 0 {
                    None
                } else if let Ok(o) = self.opened_rx.try_recv() {
                    Some(Err(o))
                } else {
                    self.events.try_recv().ok().map(Ok)
                };
            }
            self.take_seqs();
            if phase == RUN {
                self.fill(clock::now());
            }
            self.publish(phase);
        }
        self.finish()
    }

    fn finish(mut self) -> WorkerResult {
        self.open_tx = None;
        for t in std::mem::take(&mut self.openers) {
            let _ = t.join();
        }
        // Heartbeats are the machines' business; ask them how many.
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut asked = 0;
        for c in &self.conns {
            if let Some(id) = c.id.filter(|_| c.state == State::Ready) {
                let tx = tx.clone();
                if self
                    .handle
                    .exec(id, move |m| {
                        let _ = tx.send(m.0.stats().heartbeats);
                    })
                    .is_ok()
                {
                    asked += 1;
                }
            }
        }
        drop(tx);
        let deadline = clock::now() + Duration::from_secs(5);
        for _ in 0..asked {
            match rx.recv_deadline(deadline) {
                Ok(n) => self.counts.heartbeats += n,
                Err(_) => break,
            }
        }
        for c in &self.conns {
            if c.state == State::Ready {
                self.counts.held += 1;
            }
            if matches!(c.state, State::Pending | State::Connecting) {
                self.counts.login_failed += 1;
                self.counts
                    .first_error
                    .get_or_insert_with(|| format!("{}: login did not finish in time", c.user));
            }
        }
        self.counts.pairs_active = self.pairs.iter().filter(|p| p.next > 0).count() as u64;
        self.counts.delivered = self.pairs.iter().map(|p| p.delivered_count).sum();
        self.result.counts = self.counts;
        // Dropping the reactor closes every connection.
        self.reactor.shutdown();
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
                .all(|p| p.in_window() == 0 && p.delivered_count >= p.next);
        s(&l.settled, u64::from(settled));
    }

    /// The machine of one connection: the bench's timers on TeamTalk's
    /// client behaviour.
    fn machine(&self, i: usize, now: Instant) -> Timed {
        let c = &self.conns[i];
        let mut creds =
            Credentials::with_md5(&c.user, self.cfg.password_md5.clone(), ClientType::Windows);
        creds.client_version = "teamtalk-rs bench".to_owned();
        let mut cfg = ClientConfig::new(creds).with_msg_server(c.addr);
        cfg.reconnect = false;
        cfg.connect_timeout = self.cfg.login_timeout;
        cfg.login_timeout = self.cfg.login_timeout;
        cfg.heartbeat_interval = self.cfg.heartbeat;
        // The server echoes heartbeats: a live one is never silent for two
        // of them.
        cfg.silence_timeout = (self.cfg.heartbeat * 2).max(CLIENT_SILENCE_TIMEOUT);
        cfg.request_timeout = self.cfg.ack_timeout;
        cfg.max_pending = self.cfg.window + 16;
        Timed(Client::new(cfg, now))
    }

    fn start_connects(&mut self, now: Instant) {
        let Some(open_tx) = self.open_tx.clone() else {
            return;
        };
        while self.in_progress < self.cfg.max_connecting && self.next_pending < self.conns.len() {
            let i = self.next_pending;
            self.next_pending += 1;
            let machine = self.machine(i, now);
            let c = &mut self.conns[i];
            c.started = clock::now();
            c.state = State::Connecting;
            self.in_progress += 1;
            if open_tx.send((i, machine)).is_err() {
                self.fail_login(i, "opener threads gone");
            }
        }
    }

    /// An opener reports connection `i`: map its id, then handle the
    /// events that arrived before this report.
    fn on_opened(&mut self, i: usize, opened: Result<ConnId, String>, phase: u8) {
        match opened {
            Ok(id) => {
                self.by_id.insert(id, i);
                self.conns[i].id = Some(id);
                for ev in self.early.remove(&id).unwrap_or_default() {
                    self.on_event(id, ev, phase);
                }
            }
            Err(e) => self.fail_login(i, &format!("open: {e}")),
        }
    }

    fn fail_login(&mut self, i: usize, why: &str) {
        self.counts.login_failed += 1;
        let c = &mut self.conns[i];
        self.counts
            .first_error
            .get_or_insert_with(|| format!("{}: {why}", c.user));
        self.close(i);
    }

    /// The connection is over for the bench (its machine stops by itself).
    fn close(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.state == State::Connecting {
            self.in_progress -= 1;
        }
        c.state = State::Closed;
    }

    /// Applies what the send commands reported: seqs for the window.
    fn take_seqs(&mut self) {
        while let Ok((p, sent)) = self.seq_rx.try_recv() {
            let pair = &mut self.pairs[p];
            for (msg_no, sent_ns, result) in sent {
                pair.awaiting_seq = pair.awaiting_seq.saturating_sub(1);
                match result {
                    Ok(seq) => {
                        self.counts.sent += 1;
                        pair.inflight.insert(seq, (msg_no, sent_ns));
                    }
                    Err(e) => {
                        self.counts
                            .first_error
                            .get_or_insert_with(|| format!("send refused: {e}"));
                    }
                }
            }
        }
    }

    fn on_event(&mut self, id: ConnId, ev: NetEvent<(Instant, ClientEvent)>, phase: u8) {
        let Some(&i) = self.by_id.get(&id) else {
            // Only a machine whose open is not reported yet is unknown.
            self.early.entry(id).or_default().push(ev);
            return;
        };
        // Measurements use the time the reactor thread raised the event,
        // not when this thread got to it.
        let NetEvent::Machine((now, ev)) = ev else {
            if matches!(ev, NetEvent::Finished) {
                self.by_id.remove(&id);
            }
            return;
        };
        match ev {
            ClientEvent::LoggedIn(res) => {
                let c = &mut self.conns[i];
                if c.state != State::Connecting {
                    return;
                }
                c.user_id = res.user_info.map_or(0, |u| u.user_id);
                c.state = State::Ready;
                self.in_progress -= 1;
                self.counts.logged_in += 1;
                self.result
                    .login_latency
                    .record(nanos(now.duration_since(c.started)));
            }
            ClientEvent::LoginRefused { code, text, .. } => {
                self.counts.login_refused += 1;
                let c = &self.conns[i];
                self.counts.first_error.get_or_insert_with(|| {
                    format!("{}: login refused, code {code} ({text})", c.user)
                });
                self.close(i);
            }
            ClientEvent::Disconnected(reason) => match self.conns[i].state {
                State::Ready => {
                    if phase != STOP {
                        self.counts.disconnects += 1;
                    }
                    self.close(i);
                }
                State::Connecting => self.fail_login(i, &reason.to_string()),
                State::Pending | State::Closed => {}
            },
            ClientEvent::Kicked { .. } => {
                self.counts.kicked += 1;
                self.close(i);
            }
            ClientEvent::Reply { seq, pdu } => {
                if let Role::Sender(p) = self.conns[i].role
                    && pdu.is(Command::MsgDataAck.key())
                {
                    self.on_ack(p, seq, now);
                }
            }
            ClientEvent::RequestTimedOut { seq, .. } => {
                if let Role::Sender(p) = self.conns[i].role {
                    let pair = &mut self.pairs[p];
                    if let Some((msg_no, _)) = pair.inflight.remove(&seq) {
                        self.counts.ack_timeouts += 1;
                        if pair.timed_out.len() >= MAX_TIMED_OUT {
                            pair.timed_out.clear();
                        }
                        pair.timed_out.insert(seq, msg_no);
                    }
                }
            }
            ClientEvent::RequestFailed { seq, .. } => {
                // The sender lost its connection: the message stays unacked.
                if let Role::Sender(p) = self.conns[i].role {
                    self.pairs[p].inflight.remove(&seq);
                }
            }
            ClientEvent::Push(pdu) => {
                if pdu.is(Command::MsgData.key()) {
                    self.on_delivery(i, &pdu, now);
                } else if pdu.is(Command::MsgDataAck.key())
                    && let Role::Sender(p) = self.conns[i].role
                {
                    self.on_stray_ack(p, pdu.seq());
                }
            }
            _ => {}
        }
    }

    fn on_ack(&mut self, p: usize, seq: u16, now: Instant) {
        let now_ns = nanos(now.duration_since(self.ctl.epoch));
        let pair = &mut self.pairs[p];
        let Some((msg_no, sent)) = pair.inflight.remove(&seq) else {
            return;
        };
        self.result.ack_latency.record(now_ns.saturating_sub(sent));
        if pair.acked.insert(msg_no) {
            self.counts.duplicate_acks += 1;
        } else {
            self.counts.acked += 1;
        }
    }

    /// An ack no request waits for: late (after its timeout) or repeated.
    fn on_stray_ack(&mut self, p: usize, seq: u16) {
        let pair = &mut self.pairs[p];
        match pair.timed_out.remove(&seq) {
            Some(msg_no) if !pair.acked.insert(msg_no) => {
                self.counts.late_acks += 1;
                self.counts.acked += 1;
            }
            _ => self.counts.duplicate_acks += 1,
        }
    }

    fn on_delivery(&mut self, i: usize, pdu: &Pdu, now: Instant) {
        // The machine has acked the delivery, like a real client.
        let Ok(m) = pdu.decode_body::<ImMsgData>() else {
            self.counts.foreign += 1;
            return;
        };
        let ours = match (self.conns[i].role, read_header(&m.msg_data)) {
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

    /// Sends while windows and the rate allow, round-robin over pairs; one
    /// reactor command per sender per round.
    fn fill(&mut self, now: Instant) {
        let n = self.pairs.len();
        if n == 0 || self.cfg.window == 0 {
            return;
        }
        let handed: u64 = self.counts.sent
            + self
                .pairs
                .iter()
                .map(|p| p.awaiting_seq as u64)
                .sum::<u64>();
        let mut budget = match (self.cfg.rate, self.run_start) {
            (Some(rate), Some(start)) => {
                let allowed = (now.duration_since(start).as_secs_f64() * rate) as u64;
                allowed.saturating_sub(handed)
            }
            _ => u64::MAX,
        };
        let mut batches: Vec<Vec<u64>> = vec![Vec::new(); n];
        let mut idle = 0;
        while budget > 0 && idle < n {
            let p = self.rr;
            self.rr = (self.rr + 1) % n;
            let pair = &self.pairs[p];
            let ready = self.conns[pair.sender].state == State::Ready
                && self.conns[pair.receiver].state == State::Ready;
            if ready && pair.in_window() < self.cfg.window {
                let pair = &mut self.pairs[p];
                batches[p].push(pair.next);
                pair.next += 1;
                pair.awaiting_seq += 1;
                budget -= 1;
                idle = 0;
            } else {
                idle += 1;
            }
        }
        for (p, msg_nos) in batches.into_iter().enumerate() {
            if !msg_nos.is_empty() {
                self.send_batch(p, msg_nos);
            }
        }
    }

    /// Hands messages to the sender's machine. The body is built on the
    /// reactor thread, timestamped just before the machine queues it.
    fn send_batch(&mut self, p: usize, msg_nos: Vec<u64>) {
        let pair = &self.pairs[p];
        let (s, r) = (pair.sender, pair.receiver);
        let Some(id) = self.conns[s].id else { return };
        let (from, to, pair_id) = (self.conns[s].user_id, self.conns[r].user_id, pair.id);
        let size = self.cfg.size.max(HEADER_LEN);
        let epoch = self.ctl.epoch;
        let tx = self.seq_tx.clone();
        let count = msg_nos.len();
        let sent = self.handle.exec(id, move |m| {
            let mut body = vec![b'x'; size];
            let mut out = Vec::with_capacity(msg_nos.len());
            for msg_no in msg_nos {
                let now = clock::now();
                let sent_ns = nanos(now.duration_since(epoch));
                write_header(&mut body, pair_id, msg_no, sent_ns);
                let msg = ImMsgData {
                    from_user_id: from,
                    to_session_id: to,
                    msg_id: 0,
                    create_time: 0,
                    msg_type: SINGLE_TEXT,
                    msg_data: Bytes::copy_from_slice(&body),
                    attach_data: None,
                    dedupe_key: None,
                    duplicate: None,
                };
                out.push((msg_no, sent_ns, m.0.request(now, &msg.to_pdu(0))));
            }
            let _ = tx.send((p, out));
        });
        if sent.is_err() {
            // The reactor is gone; nothing will come back for these.
            self.pairs[p].awaiting_seq -= count;
        }
        // A command for a machine that has just finished is dropped without
        // running: its messages never leave the window, which the sender's
        // disconnect already explains.
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
    }

    #[test]
    fn bitset_reports_repeats() {
        let mut b = BitSet::default();
        assert!(!b.insert(130));
        assert!(b.insert(130));
        assert!(!b.insert(0));
    }
}
