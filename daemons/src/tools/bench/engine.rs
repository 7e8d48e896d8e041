//! The engine behind `bench msg`, `bench conns` and `bench group`.
//!
//! Every connection is a [`teamtalk_conn::Client`] machine: connect, login,
//! heartbeats, request deadlines (the ack timeout) and delivery acks are
//! the machine's, exactly as for any other client. A worker is one
//! `teamtalk-net` reactor (one shard thread doing the sockets and running
//! the machines) plus one application thread that reads the machines'
//! events and decides what to send. A connection goes
//! `Pending → Connecting → Ready`. The main thread steers the workers
//! through [`Control::phase`] and reads their published [`Live`] counters
//! for the progress line; each worker returns its exact [`WorkerResult`]
//! when told to stop.
//!
//! A *flow* is one sender's stream of messages, to one receiver (`msg`:
//! both ends on the same worker, so matching deliveries to sends needs no
//! locks) or to a group (`group`: the members are spread over the
//! workers; each member records which message numbers of which sender it
//! received, and the main thread compares those with what each sender
//! sent when the run is over).
//!
//! Groups are made over the protocol before the run: once every
//! connection logged in, the workers publish their user ids
//! ([`Control::user_ids`]); in [`CREATE`] each group's first member asks
//! for a TMP group of all members (0x0405) and publishes its id; in
//! [`SETTLE`] every member waits for the creation notice (0x040b), or
//! logs in again after [`EngineConfig::notice_timeout`] (servers that
//! announce nothing, like TeamTalk's, read the membership per message),
//! then makes two round trips: one answered by db_proxy (its msg_server
//! has loaded the member's groups before) and one answered by
//! route_server (its msg_server's group subscription has reached
//! route_server before). Only then can a message posted by another member
//! be expected to arrive.
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
//! ([`PAYLOAD_MAGIC`], flow id, message number, send time), padded to the
//! requested size, so a delivery names the send it belongs to.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use teamtalk_conn::client::{CLIENT_SILENCE_TIMEOUT, Credentials};
use teamtalk_conn::{Client, ClientConfig, ClientEvent, Input, Machine, Output, SendError};
use teamtalk_net::{ConnId, EventRx, Handle, NetEvent, Reactor, ReactorConfig};
use teamtalk_proto::command::CommandMessage;
use teamtalk_proto::pb::im::base_define::{ClientType, GroupType};
use teamtalk_proto::pb::im::buddy::{ImDepartmentReq, ImUsersStatReq};
use teamtalk_proto::pb::im::group::{
    ImGroupChangeMemberNotify, ImGroupCreateReq, ImGroupCreateRsp,
};
use teamtalk_proto::pb::im::message::ImMsgData;
use teamtalk_proto::{Command, Pdu};

use super::hist::Histogram;
use super::pace::Pacer;
use crate::clock;
use crate::tools::client::Assigner;

/// Workers connect and log in.
pub(crate) const SETUP: u8 = 0;
/// Senders send; idle connections heartbeat.
pub(crate) const RUN: u8 = 1;
/// No new sends; acks and deliveries still count.
pub(crate) const DRAIN: u8 = 2;
/// Workers return their results.
pub(crate) const STOP: u8 = 3;
/// Group creators create their groups.
pub(crate) const CREATE: u8 = 4;
/// Group members wait for the creation (or log in again) and sync.
pub(crate) const SETTLE: u8 = 5;

/// First bytes of every bench message body.
pub(crate) const PAYLOAD_MAGIC: [u8; 4] = *b"TTBM";
/// Magic, flow id (u32), message number (u64), send time (u64 ns).
pub(crate) const HEADER_LEN: usize = 4 + 4 + 8 + 8;

/// `MSG_TYPE_SINGLE_TEXT`.
const SINGLE_TEXT: i32 = 1;
/// `MSG_TYPE_GROUP_TEXT`.
const GROUP_TEXT: i32 = 0x11;
/// `GROUP_MODIFY_TYPE_ADD`.
const MODIFY_ADD: i32 = 1;
/// Group ids remembered per connection from creation notices (a member
/// of more than this many groups at once is not a bench member).
const MAX_NOTICES: usize = 64;

/// [`GroupSlot::state`]: the creation has not been answered.
const GROUP_PENDING: u64 = 0;
/// [`GroupSlot::state`] flag: created; the low 32 bits are the id.
const GROUP_CREATED: u64 = 1 << 32;
/// [`GroupSlot::state`]: the creation failed.
const GROUP_FAILED: u64 = 2 << 32;

/// One group of the run, as its creator's worker publishes it.
#[derive(Debug, Default)]
pub(crate) struct GroupSlot {
    /// [`GROUP_PENDING`], [`GROUP_CREATED`] | id, or [`GROUP_FAILED`].
    state: AtomicU64,
    /// Members of the created group (the creation reply's list).
    members: AtomicU32,
}

/// What became of a group's creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupState {
    /// Not answered yet.
    Pending,
    /// Created with this id.
    Created(u32),
    /// Refused, timed out, or its creator could not log in.
    Failed,
}

impl GroupSlot {
    pub(crate) fn get(&self) -> GroupState {
        let v = self.state.load(Ordering::Acquire);
        match v {
            GROUP_PENDING => GroupState::Pending,
            GROUP_FAILED => GroupState::Failed,
            v => GroupState::Created(v as u32),
        }
    }

    /// Members of the created group.
    pub(crate) fn members(&self) -> u32 {
        self.members.load(Ordering::Acquire)
    }

    fn created(&self, id: u32, members: u32) {
        self.members.store(members, Ordering::Release);
        self.state
            .store(GROUP_CREATED | u64::from(id), Ordering::Release);
    }

    fn failed(&self) {
        self.state.store(GROUP_FAILED, Ordering::Release);
    }
}

/// Shared between the main thread and the workers.
#[derive(Debug)]
pub(crate) struct Control {
    /// One of [`SETUP`], [`CREATE`], [`SETTLE`], [`RUN`], [`DRAIN`], [`STOP`].
    pub(crate) phase: AtomicU8,
    /// Origin of the send timestamps carried in payloads.
    pub(crate) epoch: Instant,
    /// One slot per worker.
    pub(crate) live: Vec<Live>,
    /// User id of every connection of the run (by its global index), 0
    /// until it logged in: group creators read their members' ids here.
    pub(crate) user_ids: Vec<AtomicU32>,
    /// The groups of a `group` run.
    pub(crate) groups: Vec<GroupSlot>,
    /// Connections per msg_server address handed out by login_server
    /// (connections with a fixed address are counted by the caller).
    pub(crate) assigned: std::sync::Mutex<std::collections::BTreeMap<SocketAddr, u64>>,
}

impl Control {
    /// For `workers` workers, `conns` connections and `groups` groups.
    pub(crate) fn new(workers: usize, conns: usize, groups: usize) -> Self {
        Self {
            phase: AtomicU8::new(SETUP),
            epoch: clock::now(),
            live: (0..workers).map(|_| Live::default()).collect(),
            user_ids: (0..conns).map(|_| AtomicU32::new(0)).collect(),
            groups: (0..groups).map(|_| GroupSlot::default()).collect(),
            assigned: std::sync::Mutex::default(),
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
            t.open += g(&l.open);
            t.sent += g(&l.sent);
            t.acked += g(&l.acked);
            t.delivered += g(&l.delivered);
            t.expected += g(&l.expected);
            t.disconnects += g(&l.disconnects);
            t.settled += g(&l.settled);
            t.members_done += g(&l.members_done);
        }
        t
    }

    /// Connections logged in right now per msg_server, over every
    /// worker (those whose msg_server is known: planned, or assigned by
    /// login_server).
    pub(crate) fn open_by_server(&self) -> std::collections::BTreeMap<SocketAddr, u64> {
        let mut all = std::collections::BTreeMap::new();
        for l in &self.live {
            if let Ok(m) = l.servers.lock() {
                for (a, n) in m.iter() {
                    *all.entry(*a).or_default() += n;
                }
            }
        }
        all
    }
}

/// Counters a worker publishes after every poll round, for progress.
#[derive(Debug, Default)]
pub(crate) struct Live {
    logged_in: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    /// Connections logged in right now.
    open: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    delivered: AtomicU64,
    /// Deliveries the group messages sent so far call for.
    expected: AtomicU64,
    disconnects: AtomicU64,
    /// 1 once nothing is outstanding during [`DRAIN`].
    settled: AtomicU64,
    /// Group members done settling (ready, or given up on).
    members_done: AtomicU64,
    /// Connections logged in right now per msg_server.
    servers: std::sync::Mutex<std::collections::BTreeMap<SocketAddr, u64>>,
}

/// A snapshot of [`Live`] summed over workers.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LiveTotals {
    pub(crate) logged_in: u64,
    pub(crate) refused: u64,
    pub(crate) failed: u64,
    pub(crate) open: u64,
    pub(crate) sent: u64,
    pub(crate) acked: u64,
    pub(crate) delivered: u64,
    pub(crate) expected: u64,
    pub(crate) disconnects: u64,
    pub(crate) settled: u64,
    pub(crate) members_done: u64,
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
    /// A group member that has not heard of its group's creation this long
    /// after [`SETTLE`] began logs in again.
    pub(crate) notice_timeout: Duration,
    /// login_server's HTTP address, for connections planned without a
    /// msg_server: each asks for its assignment just before it connects,
    /// so login_server spreads them by the load it sees as they log in.
    pub(crate) login_http: Option<SocketAddr>,
}

/// One connection of a worker's plan.
#[derive(Debug, Clone)]
pub(crate) struct PlanConn {
    /// Its msg_server, or `None` to ask login_server
    /// ([`EngineConfig::login_http`]) when it connects.
    pub(crate) addr: Option<SocketAddr>,
    /// Its user name.
    pub(crate) user: String,
    /// Its index among all the run's connections ([`Control::user_ids`]).
    pub(crate) global: usize,
}

/// A group member on this worker.
#[derive(Debug, Clone)]
pub(crate) struct PlanMember {
    /// Local connection index.
    pub(crate) conn: usize,
    /// Global group index.
    pub(crate) group: usize,
    /// Its sender number within the group (`< senders`), if it sends.
    pub(crate) sender: Option<u32>,
}

/// A group whose creator is on this worker.
#[derive(Debug, Clone)]
pub(crate) struct PlanCreate {
    /// Local connection index of the creator.
    pub(crate) conn: usize,
    /// Global group index.
    pub(crate) group: usize,
    /// Global connection indices of every member (the creator included).
    pub(crate) members: Vec<usize>,
}

/// What one worker is given.
#[derive(Debug, Default)]
pub(crate) struct WorkerPlan {
    /// Every connection.
    pub(crate) conns: Vec<PlanConn>,
    /// (sender conn index, receiver conn index, global pair id).
    pub(crate) pairs: Vec<(usize, usize, u32)>,
    /// Senders per group (a group run): sender `s` of group `g` is flow
    /// `g × senders + s`.
    pub(crate) senders_per_group: u32,
    /// Group members on this worker.
    pub(crate) members: Vec<PlanMember>,
    /// Groups this worker creates.
    pub(crate) creates: Vec<PlanCreate>,
}

/// Exact figures of one worker, merged by the caller (and, for a `conns`
/// run over several processes, handed from each process to the first as
/// JSON).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
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
    /// Group members that logged in again to learn of their group.
    pub(crate) relogins: u64,
    /// Group members that heard of their group's creation.
    pub(crate) notices: u64,
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
        self.relogins += o.relogins;
        self.notices += o.notices;
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
    }
}

/// What one group sender sent.
#[derive(Debug, Default)]
pub(crate) struct SenderResult {
    /// Flow id: `group × senders + sender`.
    pub(crate) flow: u32,
    /// Message numbers its machine took (sent, acked or not).
    pub(crate) sent: BitSet,
}

/// What one group member received.
#[derive(Debug)]
pub(crate) struct MemberResult {
    /// Global group index.
    pub(crate) group: usize,
    /// Its own sender number, if it sends (it receives none of those).
    pub(crate) sender: Option<u32>,
    /// It was ready (knew of its group) when the run began.
    pub(crate) settled: bool,
    /// Message numbers received, per sender of its group.
    pub(crate) received: Vec<BitSet>,
    /// Deliveries received more than once.
    pub(crate) duplicates: u64,
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
    /// Group senders of this worker.
    pub(crate) senders: Vec<SenderResult>,
    /// Group members of this worker.
    pub(crate) members: Vec<MemberResult>,
    /// Connections logged in at the end per msg_server (those whose
    /// msg_server is known).
    pub(crate) held_by_server: std::collections::BTreeMap<SocketAddr, u64>,
}

impl WorkerResult {
    pub(crate) fn merge(&mut self, mut o: Self) {
        self.counts.merge(&o.counts);
        self.latency.merge(&o.latency);
        self.ack_latency.merge(&o.ack_latency);
        self.login_latency.merge(&o.login_latency);
        self.senders.append(&mut o.senders);
        self.members.append(&mut o.members);
        for (a, n) in o.held_by_server {
            *self.held_by_server.entry(a).or_default() += n;
        }
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

/// What a connection receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recv {
    /// Nothing expected.
    Nothing,
    /// The receiving end of this flow.
    Pair(usize),
    /// This group member.
    Member(usize),
}

#[derive(Debug)]
struct Conn {
    id: Option<ConnId>,
    addr: Option<SocketAddr>,
    /// The msg_server of its current machine: `addr`, or what
    /// login_server assigned it.
    server: Option<SocketAddr>,
    user: String,
    global: usize,
    state: State,
    started: Instant,
    user_id: u32,
    /// It logged in before (a second login is a relogin).
    was_in: bool,
    /// The flow it sends, if any.
    send: Option<usize>,
    recv: Recv,
    /// Groups a creation notice named it in.
    notified: Vec<u32>,
}

/// A growable set of message numbers.
#[derive(Debug, Default, Clone)]
pub(crate) struct BitSet(Vec<u64>);

impl BitSet {
    /// Sets `i`; returns whether it was already set.
    pub(crate) fn insert(&mut self, i: u64) -> bool {
        let (word, bit) = ((i / 64) as usize, i % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let was = self.0[word] & (1 << bit) != 0;
        self.0[word] |= 1 << bit;
        was
    }

    /// How many numbers are set.
    pub(crate) fn len(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// How many numbers are set in both.
    pub(crate) fn common(&self, other: &Self) -> u64 {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| u64::from((a & b).count_ones()))
            .sum()
    }
}

/// Timed-out requests remembered per flow, to recognise late acks.
const MAX_TIMED_OUT: usize = 65_536;

/// Where a flow's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    /// One receiver, a local connection.
    Conn(usize),
    /// A group (global index); the sender is this local member.
    Group { group: usize, member: usize },
}

/// One sender's stream of messages.
#[derive(Debug)]
struct Flow {
    id: u32,
    sender: usize,
    dest: Dest,
    /// Next message number (= messages handed to the sender's machine).
    next: u64,
    /// Messages handed over whose seq has not come back yet.
    awaiting_seq: usize,
    /// Unacked messages by seq: (message number, send time ns).
    inflight: HashMap<u16, (u64, u64)>,
    /// Timed-out messages by seq, for late acks.
    timed_out: HashMap<u16, u64>,
    acked: BitSet,
    /// Messages the machine took.
    sent: BitSet,
    sent_count: u64,
    /// Pairs: what the receiver got.
    delivered: BitSet,
    delivered_count: u64,
    /// Its share of the worker's `--rate`, if paced.
    pacer: Option<Pacer>,
}

impl Flow {
    fn in_window(&self) -> usize {
        self.inflight.len() + self.awaiting_seq
    }
}

/// Where a group member is in [`SETTLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the creation notice.
    Waiting,
    /// Logging in again (no notice in time).
    Relogging,
    /// The db_proxy round trip is under way.
    Db,
    /// The route_server round trip is under way.
    Route,
    /// Ready: messages to its group reach it.
    Settled,
    /// Given up on (its group failed, it lost its connection, a round trip
    /// failed).
    Out,
}

#[derive(Debug)]
struct Member {
    conn: usize,
    group: usize,
    sender: Option<u32>,
    stage: Stage,
    received: Vec<BitSet>,
    received_count: u64,
    duplicates: u64,
}

/// A group creation this worker makes.
#[derive(Debug)]
struct Create {
    conn: usize,
    group: usize,
    members: Vec<usize>,
    asked: bool,
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

/// Threads per worker asking login_server for assignments (one blocking
/// HTTP exchange each).
const ASSIGNERS: usize = 4;

/// An assigner thread: answers each machine's assignment question with
/// login_server's choice, and tallies the choices.
fn assigner(
    login: SocketAddr,
    rx: &Receiver<ConnId>,
    handle: &Handle<Timed>,
    ctl: &Control,
    to_worker: &Sender<(ConnId, SocketAddr)>,
) {
    let assigner = Assigner::new(&login.into(), super::NET_TIMEOUT);
    for id in rx {
        let _ = match assigner.query().and_then(|a| a.addr()) {
            Ok(addr) => {
                if let Ok(mut m) = ctl.assigned.lock() {
                    *m.entry(addr).or_default() += 1;
                }
                // Before the machine hears of it, so the worker knows the
                // msg_server before the login can be reported.
                let _ = to_worker.send((id, addr));
                handle.exec(id, move |m| m.0.assigned(clock::now(), addr))
            }
            Err(e) => {
                let why = e.to_string();
                handle.exec(id, move |m| m.0.assignment_failed(clock::now(), &why))
            }
        };
    }
}

/// An opened machine: connection index, and its id or why not.
type Opened = (usize, Result<ConnId, String>);

/// What a send command reports back: the flow, and per message its
/// number, its send time (ns since the epoch) and the seq the machine
/// gave it (or why it refused).
type SeqNote = (usize, Vec<(u64, u64, Result<u16, SendError>)>);

/// A setup request (group creation, round trip) the machine refused:
/// connection index and why.
type Refusal = (usize, SendError);

/// Writes a bench payload header into `buf` (at least [`HEADER_LEN`] long).
pub(crate) fn write_header(buf: &mut [u8], flow: u32, msg_no: u64, sent_ns: u64) {
    buf[..4].copy_from_slice(&PAYLOAD_MAGIC);
    buf[4..8].copy_from_slice(&flow.to_be_bytes());
    buf[8..16].copy_from_slice(&msg_no.to_be_bytes());
    buf[16..24].copy_from_slice(&sent_ns.to_be_bytes());
}

/// Reads a bench payload header: (flow, message number, send time ns).
pub(crate) fn read_header(buf: &[u8]) -> Option<(u32, u64, u64)> {
    if buf.len() < HEADER_LEN || buf[..4] != PAYLOAD_MAGIC {
        return None;
    }
    let flow = u32::from_be_bytes(buf[4..8].try_into().ok()?);
    let msg_no = u64::from_be_bytes(buf[8..16].try_into().ok()?);
    let sent = u64::from_be_bytes(buf[16..24].try_into().ok()?);
    Some((flow, msg_no, sent))
}

struct Worker {
    id: usize,
    reactor: Reactor<Timed>,
    handle: Handle<Timed>,
    events: EventRx<(Instant, ClientEvent)>,
    seq_tx: Sender<SeqNote>,
    seq_rx: Receiver<SeqNote>,
    refused_tx: Sender<Refusal>,
    refused_rx: Receiver<Refusal>,
    /// Machines waiting for a msg_server, for the assigner threads.
    assign_tx: Option<Sender<ConnId>>,
    assigners: Vec<std::thread::JoinHandle<()>>,
    /// The msg_servers login_server named, from the assigner threads.
    assigned_rx: Receiver<(ConnId, SocketAddr)>,
    /// Connections logged in now per msg_server.
    open_by_server: std::collections::BTreeMap<SocketAddr, u64>,
    /// [`Worker::open_by_server`] changed since it was last published.
    servers_changed: bool,
    /// Machines to open, for the opener threads.
    open_tx: Option<Sender<(usize, Timed)>>,
    opened_rx: Receiver<Opened>,
    openers: Vec<std::thread::JoinHandle<()>>,
    /// Events of machines whose open has not been reported yet.
    early: HashMap<ConnId, Vec<NetEvent<(Instant, ClientEvent)>>>,
    /// Machines closed to log in again: their last events are ignored.
    retired: HashSet<ConnId>,
    conns: Vec<Conn>,
    by_id: HashMap<ConnId, usize>,
    flows: Vec<Flow>,
    members: Vec<Member>,
    creates: Vec<Create>,
    senders_per_group: u32,
    cfg: Arc<EngineConfig>,
    ctl: Arc<Control>,
    /// Connections to open, in order.
    to_open: VecDeque<usize>,
    in_progress: usize,
    /// Connections logged in now.
    open: u64,
    counts: Counts,
    result: WorkerResult,
    settle_start: Option<Instant>,
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
            .map(|p| Conn {
                id: None,
                server: p.addr,
                addr: p.addr,
                user: p.user,
                global: p.global,
                state: State::Pending,
                started: now,
                user_id: 0,
                was_in: false,
                send: None,
                recv: Recv::Nothing,
                notified: Vec::new(),
            })
            .collect();
        let flow = |id: u32, sender: usize, dest: Dest| Flow {
            id,
            sender,
            dest,
            next: 0,
            awaiting_seq: 0,
            inflight: HashMap::with_capacity(cfg.window),
            timed_out: HashMap::new(),
            acked: BitSet::default(),
            sent: BitSet::default(),
            sent_count: 0,
            delivered: BitSet::default(),
            delivered_count: 0,
            pacer: None,
        };
        let mut flows = Vec::with_capacity(plan.pairs.len() + plan.members.len());
        for &(s, r, pid) in &plan.pairs {
            conns[s].send = Some(flows.len());
            conns[r].recv = Recv::Pair(flows.len());
            flows.push(flow(pid, s, Dest::Conn(r)));
        }
        let spg = plan.senders_per_group.max(1);
        let mut members = Vec::with_capacity(plan.members.len());
        for m in &plan.members {
            let slot = members.len();
            conns[m.conn].recv = Recv::Member(slot);
            if let Some(s) = m.sender {
                conns[m.conn].send = Some(flows.len());
                let fid = u32::try_from(m.group)
                    .unwrap_or(u32::MAX)
                    .saturating_mul(spg)
                    .saturating_add(s);
                flows.push(flow(
                    fid,
                    m.conn,
                    Dest::Group {
                        group: m.group,
                        member: slot,
                    },
                ));
            }
            members.push(Member {
                conn: m.conn,
                group: m.group,
                sender: m.sender,
                stage: Stage::Waiting,
                received: vec![BitSet::default(); spg as usize],
                received_count: 0,
                duplicates: 0,
            });
        }
        // Each sender gets an even share of the worker's rate, paced on its
        // own (see the pace module for why not from a shared budget).
        if let Some(rate) = cfg.rate {
            let share = rate / flows.len().max(1) as f64;
            let n = flows.len().max(1) as f64;
            for (i, f) in flows.iter_mut().enumerate() {
                f.pacer = Some(Pacer::staggered(share, i as f64 / n));
            }
        }
        let creates = plan
            .creates
            .into_iter()
            .map(|c| Create {
                conn: c.conn,
                group: c.group,
                members: c.members,
                asked: false,
            })
            .collect();
        let (seq_tx, seq_rx) = crossbeam_channel::unbounded();
        let (refused_tx, refused_rx) = crossbeam_channel::unbounded();
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
        let to_open = (0..conns.len()).collect();
        let (assigned_tx, assigned_rx) = crossbeam_channel::unbounded();
        let (assign_tx, assigners) = match cfg.login_http {
            Some(login) => {
                let (tx, rx) = crossbeam_channel::unbounded::<ConnId>();
                let threads = (0..ASSIGNERS)
                    .map(|_| {
                        let (rx, handle, ctl) = (rx.clone(), reactor.handle(), Arc::clone(&ctl));
                        let to_worker = assigned_tx.clone();
                        std::thread::spawn(move || {
                            assigner(login, &rx, &handle, &ctl, &to_worker);
                        })
                    })
                    .collect();
                (Some(tx), threads)
            }
            None => (None, Vec::new()),
        };
        Self {
            assign_tx,
            assigners,
            assigned_rx,
            open_by_server: std::collections::BTreeMap::new(),
            servers_changed: false,
            id,
            open_tx: Some(open_tx),
            opened_rx,
            openers,
            early: HashMap::new(),
            retired: HashSet::new(),
            handle: reactor.handle(),
            events: reactor.events(),
            reactor,
            seq_tx,
            seq_rx,
            refused_tx,
            refused_rx,
            conns,
            by_id: HashMap::new(),
            flows,
            members,
            creates,
            senders_per_group: spg,
            cfg,
            ctl,
            to_open,
            in_progress: 0,
            open: 0,
            counts: Counts::default(),
            result: WorkerResult::default(),
            settle_start: None,
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
            match phase {
                SETUP => self.start_connects(now),
                CREATE => self.create_groups(now),
                SETTLE => {
                    self.start_connects(now);
                    self.settle(now);
                }
                _ => {}
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
                        self.take_assigned();
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
            self.take_refusals();
            if phase == RUN {
                self.fill(clock::now());
            }
            self.publish(phase);
        }
        self.finish()
    }

    fn finish(mut self) -> WorkerResult {
        self.open_tx = None;
        self.assign_tx = None;
        for t in std::mem::take(&mut self.openers)
            .into_iter()
            .chain(std::mem::take(&mut self.assigners))
        {
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
                if let Some(a) = c.server {
                    *self.result.held_by_server.entry(a).or_default() += 1;
                }
            }
            if matches!(c.state, State::Pending | State::Connecting) {
                self.counts.login_failed += 1;
                self.counts
                    .first_error
                    .get_or_insert_with(|| format!("{}: login did not finish in time", c.user));
            }
        }
        self.counts.pairs_active = self
            .flows
            .iter()
            .filter(|f| matches!(f.dest, Dest::Conn(_)) && f.next > 0)
            .count() as u64;
        self.counts.delivered = self.delivered();
        self.counts.duplicates += self.members.iter().map(|m| m.duplicates).sum::<u64>();
        let spg = self.senders_per_group;
        for f in &mut self.flows {
            if let Dest::Group { .. } = f.dest {
                self.result.senders.push(SenderResult {
                    flow: f.id,
                    sent: std::mem::take(&mut f.sent),
                });
            }
        }
        for m in &mut self.members {
            self.result.members.push(MemberResult {
                group: m.group,
                sender: m.sender.filter(|&s| s < spg),
                settled: m.stage == Stage::Settled,
                received: std::mem::take(&mut m.received),
                duplicates: m.duplicates,
            });
        }
        self.result.counts = std::mem::take(&mut self.counts);
        // Dropping the reactor closes every connection.
        self.reactor.shutdown();
        self.result
    }

    fn delivered(&self) -> u64 {
        self.flows.iter().map(|f| f.delivered_count).sum::<u64>()
            + self.members.iter().map(|m| m.received_count).sum::<u64>()
    }

    fn publish(&mut self, phase: u8) {
        let l = &self.ctl.live[self.id];
        if self.servers_changed
            && let Ok(mut m) = l.servers.lock()
        {
            m.clone_from(&self.open_by_server);
            self.servers_changed = false;
        }
        let c = &self.counts;
        let s = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        s(&l.logged_in, c.logged_in);
        s(&l.refused, c.login_refused);
        s(&l.failed, c.login_failed);
        s(&l.open, self.open);
        s(&l.sent, c.sent);
        s(&l.acked, c.acked);
        s(&l.delivered, self.delivered());
        let expected = self
            .flows
            .iter()
            .filter_map(|f| match f.dest {
                Dest::Group { group, .. } => {
                    let others = self.ctl.groups[group].members().saturating_sub(1);
                    Some(f.sent_count * u64::from(others))
                }
                Dest::Conn(_) => None,
            })
            .sum();
        s(&l.expected, expected);
        s(&l.disconnects, c.disconnects);
        let settled = phase == DRAIN
            && self.flows.iter().all(|f| {
                f.in_window() == 0
                    && (f.delivered_count >= f.next || !matches!(f.dest, Dest::Conn(_)))
            });
        s(&l.settled, u64::from(settled));
        let done = self
            .members
            .iter()
            .filter(|m| matches!(m.stage, Stage::Settled | Stage::Out))
            .count();
        s(&l.members_done, done as u64);
    }

    /// The machine of one connection: the bench's timers on TeamTalk's
    /// client behaviour.
    fn machine(&self, i: usize, now: Instant) -> Timed {
        let c = &self.conns[i];
        let mut creds =
            Credentials::with_md5(&c.user, self.cfg.password_md5.clone(), ClientType::Windows);
        creds.client_version = "teamtalk-rs bench".to_owned();
        let mut cfg = ClientConfig::new(creds);
        if let Some(addr) = c.addr {
            cfg = cfg.with_msg_server(addr);
        }
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
        while self.in_progress < self.cfg.max_connecting {
            let Some(i) = self.to_open.pop_front() else {
                break;
            };
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
        match self.conns[i].state {
            State::Connecting => self.in_progress -= 1,
            State::Ready => {
                self.open -= 1;
                self.count_server(i, false);
            }
            State::Pending | State::Closed => {}
        }
        let c = &mut self.conns[i];
        c.state = State::Closed;
        if let Recv::Member(slot) = c.recv
            && self.members[slot].stage != Stage::Settled
        {
            self.members[slot].stage = Stage::Out;
        }
    }

    /// Notes the msg_servers login_server assigned.
    fn take_assigned(&mut self) {
        while let Ok((id, addr)) = self.assigned_rx.try_recv() {
            if let Some(&i) = self.by_id.get(&id) {
                self.conns[i].server = Some(addr);
            }
        }
    }

    /// One more (`up`) or one fewer connection of `i` logged in on its
    /// msg_server.
    fn count_server(&mut self, i: usize, up: bool) {
        let Some(addr) = self.conns[i].server else {
            return;
        };
        let n = self.open_by_server.entry(addr).or_default();
        *n = if up { *n + 1 } else { n.saturating_sub(1) };
        self.servers_changed = true;
    }

    /// Applies what the send commands reported: seqs for the window.
    fn take_seqs(&mut self) {
        while let Ok((p, sent)) = self.seq_rx.try_recv() {
            let flow = &mut self.flows[p];
            for (msg_no, sent_ns, result) in sent {
                flow.awaiting_seq = flow.awaiting_seq.saturating_sub(1);
                match result {
                    Ok(seq) => {
                        self.counts.sent += 1;
                        flow.sent.insert(msg_no);
                        flow.sent_count += 1;
                        flow.inflight.insert(seq, (msg_no, sent_ns));
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

    /// Setup requests the machines refused: the member (or creation) is
    /// given up on.
    fn take_refusals(&mut self) {
        while let Ok((i, e)) = self.refused_rx.try_recv() {
            let why = format!("{}: setup request refused: {e}", self.conns[i].user);
            self.setup_failed(i, why);
        }
    }

    /// A setup step of connection `i` failed: its group (if it creates
    /// one still unanswered) fails, and as a member it is out.
    fn setup_failed(&mut self, i: usize, why: String) {
        self.counts.first_error.get_or_insert(why);
        for c in &self.creates {
            if c.conn == i && self.ctl.groups[c.group].get() == GroupState::Pending {
                self.ctl.groups[c.group].failed();
            }
        }
        if let Recv::Member(slot) = self.conns[i].recv
            && self.members[slot].stage != Stage::Settled
        {
            self.members[slot].stage = Stage::Out;
        }
    }

    fn on_event(&mut self, id: ConnId, ev: NetEvent<(Instant, ClientEvent)>, phase: u8) {
        let Some(&i) = self.by_id.get(&id) else {
            if self.retired.contains(&id) {
                if matches!(ev, NetEvent::Finished) {
                    self.retired.remove(&id);
                }
                return;
            }
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
            ClientEvent::AssignmentNeeded => {
                if let Some(tx) = &self.assign_tx {
                    let _ = tx.send(id);
                }
            }
            ClientEvent::LoggedIn(res) => {
                let c = &mut self.conns[i];
                if c.state != State::Connecting {
                    return;
                }
                c.user_id = res.user_info.map_or(0, |u| u.user_id);
                c.state = State::Ready;
                self.in_progress -= 1;
                self.open += 1;
                self.ctl.user_ids[c.global].store(c.user_id, Ordering::Release);
                self.count_server(i, true);
                let c = &mut self.conns[i];
                if c.was_in {
                    self.counts.relogins += 1;
                } else {
                    c.was_in = true;
                    self.counts.logged_in += 1;
                    self.result
                        .login_latency
                        .record(nanos(now.duration_since(c.started)));
                }
                if let Recv::Member(slot) = self.conns[i].recv
                    && self.members[slot].stage == Stage::Relogging
                {
                    self.round_trip(slot, Stage::Db, now);
                }
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
                        let c = &self.conns[i];
                        self.counts
                            .first_error
                            .get_or_insert_with(|| format!("{}: disconnected: {reason}", c.user));
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
                if pdu.is(Command::MsgDataAck.key()) {
                    if let Some(p) = self.conns[i].send {
                        self.on_ack(p, seq, now);
                    }
                } else {
                    self.on_setup_reply(i, &pdu, now);
                }
            }
            ClientEvent::RequestTimedOut { seq, command } => {
                let mut ours = false;
                if let Some(p) = self.conns[i].send {
                    let flow = &mut self.flows[p];
                    if let Some((msg_no, _)) = flow.inflight.remove(&seq) {
                        ours = true;
                        self.counts.ack_timeouts += 1;
                        if flow.timed_out.len() >= MAX_TIMED_OUT {
                            flow.timed_out.clear();
                        }
                        flow.timed_out.insert(seq, msg_no);
                    }
                }
                if !ours && command != Command::MsgData.key() {
                    let why = format!("{}: no answer to {command}", self.conns[i].user);
                    self.setup_failed(i, why);
                }
            }
            ClientEvent::RequestFailed { seq, .. } => {
                // The sender lost its connection: the message stays unacked.
                if let Some(p) = self.conns[i].send {
                    self.flows[p].inflight.remove(&seq);
                }
            }
            ClientEvent::Push(pdu) => {
                if pdu.is(Command::MsgData.key()) {
                    self.on_delivery(i, &pdu, now);
                } else if pdu.is(Command::MsgDataAck.key()) {
                    if let Some(p) = self.conns[i].send {
                        self.on_stray_ack(p, pdu.seq());
                    }
                } else if pdu.is(Command::GroupChangeMemberNotify.key()) {
                    self.on_member_notice(i, &pdu);
                }
            }
            _ => {}
        }
    }

    fn on_ack(&mut self, p: usize, seq: u16, now: Instant) {
        let now_ns = nanos(now.duration_since(self.ctl.epoch));
        let flow = &mut self.flows[p];
        let Some((msg_no, sent)) = flow.inflight.remove(&seq) else {
            return;
        };
        self.result.ack_latency.record(now_ns.saturating_sub(sent));
        if flow.acked.insert(msg_no) {
            self.counts.duplicate_acks += 1;
        } else {
            self.counts.acked += 1;
        }
    }

    /// An ack no request waits for: late (after its timeout) or repeated.
    fn on_stray_ack(&mut self, p: usize, seq: u16) {
        let flow = &mut self.flows[p];
        match flow.timed_out.remove(&seq) {
            Some(msg_no) if !flow.acked.insert(msg_no) => {
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
        let Some((fid, msg_no, sent)) = read_header(&m.msg_data) else {
            self.counts.foreign += 1;
            return;
        };
        let now_ns = nanos(now.duration_since(self.ctl.epoch));
        match self.conns[i].recv {
            Recv::Pair(p) if self.flows[p].id == fid && m.msg_type == SINGLE_TEXT => {
                let flow = &mut self.flows[p];
                if msg_no >= flow.next {
                    self.counts.foreign += 1;
                } else if flow.delivered.insert(msg_no) {
                    self.counts.duplicates += 1;
                } else {
                    flow.delivered_count += 1;
                    self.result.latency.record(now_ns.saturating_sub(sent));
                }
            }
            Recv::Member(slot) => {
                let spg = self.senders_per_group;
                let member = &mut self.members[slot];
                let group = (fid / spg) as usize;
                let ours = group == member.group
                    && m.msg_type == GROUP_TEXT
                    && self.ctl.groups[group].get() == GroupState::Created(m.to_session_id);
                if !ours {
                    self.counts.foreign += 1;
                } else if member.received[(fid % spg) as usize].insert(msg_no) {
                    member.duplicates += 1;
                } else {
                    member.received_count += 1;
                    self.result.latency.record(now_ns.saturating_sub(sent));
                }
            }
            _ => self.counts.foreign += 1,
        }
    }

    /// A member-change notice: remember the groups it adds this user to.
    fn on_member_notice(&mut self, i: usize, pdu: &Pdu) {
        let Ok(n) = pdu.decode_body::<ImGroupChangeMemberNotify>() else {
            return;
        };
        let c = &mut self.conns[i];
        if n.change_type == MODIFY_ADD
            && c.user_id != 0
            && n.chg_user_id_list.contains(&c.user_id)
            && c.notified.len() < MAX_NOTICES
            && !c.notified.contains(&n.group_id)
        {
            c.notified.push(n.group_id);
        }
    }

    /// [`CREATE`]: each creator asks for its group once, with the user ids
    /// of the members that logged in.
    fn create_groups(&mut self, now: Instant) {
        for k in 0..self.creates.len() {
            let c = &self.creates[k];
            if c.asked {
                continue;
            }
            let (i, group) = (c.conn, c.group);
            let conn = &self.conns[i];
            let (Some(id), State::Ready) = (conn.id, conn.state) else {
                self.counts.first_error.get_or_insert_with(|| {
                    format!("group {group}: its creator {} is not logged in", conn.user)
                });
                self.ctl.groups[group].failed();
                self.creates[k].asked = true;
                continue;
            };
            let members: Vec<u32> = c
                .members
                .iter()
                .map(|&g| self.ctl.user_ids[g].load(Ordering::Acquire))
                .filter(|&u| u != 0)
                .collect();
            let req = ImGroupCreateReq {
                user_id: conn.user_id,
                group_type: GroupType::Tmp as i32,
                group_name: format!("bench {group}"),
                group_avatar: String::new(),
                member_id_list: members,
                attach_data: None,
            };
            self.request(i, id, req.to_pdu(0), now);
            self.creates[k].asked = true;
        }
    }

    /// Sends a setup request on connection `i` (machine `id`); a refusal
    /// comes back on the refusal channel, the answer as a reply.
    fn request(&self, i: usize, id: ConnId, pdu: Pdu, now: Instant) {
        let tx = self.refused_tx.clone();
        let sent = self.handle.exec(id, move |m| {
            if let Err(e) = m.0.request(now.max(clock::now()), &pdu) {
                let _ = tx.send((i, e));
            }
        });
        if sent.is_err() {
            let _ = self.refused_tx.send((i, SendError::Closed));
        }
    }

    /// A reply to a setup request: a group creation or a round trip.
    fn on_setup_reply(&mut self, i: usize, pdu: &Pdu, now: Instant) {
        if pdu.is(Command::GroupCreateResponse.key()) {
            let Some(k) = self.creates.iter().position(|c| c.conn == i) else {
                return;
            };
            let group = self.creates[k].group;
            match pdu.decode_body::<ImGroupCreateRsp>() {
                Ok(r) if r.result_code == 0 && r.group_id.is_some_and(|g| g != 0) => {
                    let members = u32::try_from(r.user_id_list.len()).unwrap_or(u32::MAX);
                    let asked = self.creates[k].members.len() as u32;
                    // TeamTalk answers with the list asked for; ours with
                    // the members after the creation.
                    let members = if members == 0 { asked } else { members };
                    self.ctl.groups[group].created(r.group_id.unwrap_or(0), members);
                }
                Ok(r) => {
                    self.counts.first_error.get_or_insert_with(|| {
                        format!("group {group}: creation refused, code {}", r.result_code)
                    });
                    self.ctl.groups[group].failed();
                }
                Err(e) => {
                    self.counts
                        .first_error
                        .get_or_insert_with(|| format!("group {group}: bad creation reply: {e}"));
                    self.ctl.groups[group].failed();
                }
            }
            return;
        }
        let Recv::Member(slot) = self.conns[i].recv else {
            return;
        };
        let stage = self.members[slot].stage;
        if stage == Stage::Db && pdu.is(Command::BuddyListDepartmentResponse.key()) {
            self.round_trip(slot, Stage::Route, now);
        } else if stage == Stage::Route && pdu.is(Command::BuddyListUsersStatusResponse.key()) {
            self.members[slot].stage = Stage::Settled;
        }
    }

    /// [`SETTLE`]: members that heard of their group (or whose group
    /// failed) move on; members that did not in time log in again.
    fn settle(&mut self, now: Instant) {
        let start = *self.settle_start.get_or_insert(now);
        let late = now.duration_since(start) >= self.cfg.notice_timeout;
        for slot in 0..self.members.len() {
            let m = &self.members[slot];
            if m.stage != Stage::Waiting {
                continue;
            }
            let id = match self.ctl.groups[m.group].get() {
                GroupState::Pending => continue,
                GroupState::Failed => {
                    self.members[slot].stage = Stage::Out;
                    continue;
                }
                GroupState::Created(id) => id,
            };
            let c = &self.conns[m.conn];
            if c.state != State::Ready {
                self.members[slot].stage = Stage::Out;
            } else if c.notified.contains(&id) {
                self.counts.notices += 1;
                self.round_trip(slot, Stage::Db, now);
            } else if late {
                self.relog(slot);
            }
        }
    }

    /// Closes a member's connection and logs it in again.
    fn relog(&mut self, slot: usize) {
        let i = self.members[slot].conn;
        if let Some(id) = self.conns[i].id.take() {
            self.by_id.remove(&id);
            self.retired.insert(id);
            let _ = self.handle.exec(id, |m| m.0.close());
        }
        if self.conns[i].state == State::Ready {
            self.open -= 1;
            self.count_server(i, false);
        }
        // The new machine is assigned again (or takes the planned one).
        self.conns[i].server = self.conns[i].addr;
        self.conns[i].state = State::Pending;
        self.members[slot].stage = Stage::Relogging;
        self.to_open.push_back(i);
    }

    /// Starts a member's next round trip: `Db` asks db_proxy (departments
    /// changed since the end of time: an empty answer), `Route` asks
    /// route_server (the member's own status).
    fn round_trip(&mut self, slot: usize, stage: Stage, now: Instant) {
        let i = self.members[slot].conn;
        let c = &self.conns[i];
        let Some(id) = c.id else {
            self.members[slot].stage = Stage::Out;
            return;
        };
        let pdu = match stage {
            Stage::Db => ImDepartmentReq {
                user_id: c.user_id,
                latest_update_time: u32::MAX,
                attach_data: None,
            }
            .to_pdu(0),
            _ => ImUsersStatReq {
                user_id: c.user_id,
                user_id_list: vec![c.user_id],
                attach_data: None,
            }
            .to_pdu(0),
        };
        self.members[slot].stage = stage;
        self.request(i, id, pdu, now);
    }

    /// Sends while windows and each sender's pacer allow, round-robin
    /// over flows; one reactor command per sender per round.
    fn fill(&mut self, now: Instant) {
        let n = self.flows.len();
        if n == 0 || self.cfg.window == 0 {
            return;
        }
        let ready: Vec<bool> = self.flows.iter().map(|f| self.can_send(f)).collect();
        // What each flow may send now: its window's room, and under
        // `--rate` its pacer's tokens (which refill even while it cannot
        // send, up to the pacer's small burst).
        let mut allowed: Vec<u64> = self
            .flows
            .iter_mut()
            .map(|f| {
                let paced = f.pacer.as_mut().map_or(u64::MAX, |p| p.available(now));
                let room = self.cfg.window.saturating_sub(f.in_window()) as u64;
                paced.min(room)
            })
            .collect();
        let mut batches: Vec<Vec<u64>> = vec![Vec::new(); n];
        let mut idle = 0;
        while idle < n {
            let p = self.rr;
            self.rr = (self.rr + 1) % n;
            let flow = &mut self.flows[p];
            if ready[p] && allowed[p] > 0 {
                batches[p].push(flow.next);
                flow.next += 1;
                flow.awaiting_seq += 1;
                allowed[p] -= 1;
                if let Some(pacer) = flow.pacer.as_mut() {
                    pacer.take(1);
                }
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

    fn can_send(&self, f: &Flow) -> bool {
        if self.conns[f.sender].state != State::Ready {
            return false;
        }
        match f.dest {
            Dest::Conn(r) => self.conns[r].state == State::Ready,
            Dest::Group { group, member } => {
                self.members[member].stage == Stage::Settled
                    && matches!(self.ctl.groups[group].get(), GroupState::Created(_))
            }
        }
    }

    /// Hands messages to the sender's machine. The body is built on the
    /// reactor thread, timestamped just before the machine queues it.
    fn send_batch(&mut self, p: usize, msg_nos: Vec<u64>) {
        let flow = &self.flows[p];
        let s = flow.sender;
        let Some(id) = self.conns[s].id else { return };
        let (to, msg_type) = match flow.dest {
            Dest::Conn(r) => (self.conns[r].user_id, SINGLE_TEXT),
            Dest::Group { group, .. } => match self.ctl.groups[group].get() {
                GroupState::Created(g) => (g, GROUP_TEXT),
                _ => return,
            },
        };
        let (from, flow_id) = (self.conns[s].user_id, flow.id);
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
                write_header(&mut body, flow_id, msg_no, sent_ns);
                let msg = ImMsgData {
                    from_user_id: from,
                    to_session_id: to,
                    msg_id: 0,
                    create_time: 0,
                    msg_type,
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
            self.flows[p].awaiting_seq -= count;
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
