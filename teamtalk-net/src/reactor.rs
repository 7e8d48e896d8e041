//! The blocking driver: a few shard threads, each polling many sockets.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};

use crate::LocalNet;
use crate::shared::{Hosted, SharedThread};
use crate::stream::Stream;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use teamtalk_conn::{Input, Machine, Output};

use crate::clock;
use crate::handle::{Arrival, Cmd, ConnId, Factory, Handle, NetError, NetEvent, ON_SHARD, ShardTx};
use crate::socket::{self, ConnectState};
use crate::source::{self as sources, ListenOptions, SourceLimit, SourceSlot};
use crate::stats::{StatsSet, StatsSnapshot};
use crate::timer_heap::{Entry, TimerHeap};
use crate::txqueue::TxQueue;

/// Token of a shard's waker.
const WAKER: Token = Token(usize::MAX);
/// Listener `i` uses token `LISTENER_TOP - i`; connection slots count up
/// from zero and stay below `LISTENER_FLOOR`.
const LISTENER_TOP: usize = usize::MAX - 1;
/// The lowest listener token (at most `u16::MAX + 1` listeners).
const LISTENER_FLOOR: usize = LISTENER_TOP - u16::MAX as usize;
/// Reads per connection per turn (each up to the read buffer's size)
/// before other connections get their turn.
const READ_BUDGET: usize = 16;
/// Accepts per listener per turn.
const ACCEPT_BUDGET: usize = 256;
/// Commands applied per turn before polling again.
const CMD_BUDGET: usize = 4096;
/// How long to wait before accepting again after an accept error such as
/// running out of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// How a [`Reactor`] runs.
///
/// Build it with struct update syntax over the defaults:
/// `ReactorConfig { threads: 2, ..ReactorConfig::default() }`.
#[derive(Debug, Clone)]
pub struct ReactorConfig {
    /// Shard threads. Each owns a share of the connections; one per core
    /// is plenty because no shard ever blocks on anything but `poll`.
    pub threads: usize,
    /// Most connections held at once (accepted, opened, or still
    /// flushing). An accepted connection above the limit is closed at
    /// once and counted in [`StatsSnapshot::refused_over_limit`].
    pub max_connections: usize,
    /// Accept backlog of listeners (the kernel caps it at
    /// `net.core.somaxconn`).
    pub backlog: i32,
    /// Driver-side hard cap on bytes queued for one socket. Machines are
    /// told their backlog (`Machine::set_backlog`) and normally close
    /// with their own, smaller cap first; this is the safety net for
    /// machines without one. Over it, the socket is dropped and the
    /// machine sees `Input::Closed`.
    pub max_queued_bytes: usize,
    /// Size of each shard's read buffer, shared by all its connections.
    pub read_buffer: usize,
    /// How long a socket closed by its machine may keep flushing queued
    /// bytes to a slow peer before it is dropped.
    pub close_linger: Duration,
    /// How long shutdown waits for queued bytes to be flushed.
    pub shutdown_grace: Duration,
    /// Readiness events taken per poll.
    pub events_capacity: usize,
    /// An accepted connection stays on the shard that accepted it unless
    /// that shard holds more than this many connections above the least
    /// loaded shard, which then takes it. Short-lived connections (a
    /// login, an HTTP request) so cost no hand-off between threads, and
    /// long-lived ones still spread within this many of each other. 0
    /// hands every connection to the least loaded shard.
    pub adopt_slack: usize,
    /// Stats groups: the connections of a listener
    /// ([`ListenOptions::stats_group`](crate::ListenOptions::stats_group))
    /// or an opened machine ([`Handle::open_in`]) count in their group,
    /// read with [`Handle::group_stats`], so connections of different
    /// kinds on one reactor are told apart. [`Handle::stats`] adds all
    /// groups up, and [`max_connections`](Self::max_connections) applies
    /// to all together. 1 by default.
    pub stats_groups: usize,
    /// Reactors of one process given the same [`LocalNet`] reach each
    /// other's listeners in-process (a Unix socket pair) instead of over
    /// loopback TCP; `None` (the default): every connect is TCP.
    pub local_net: Option<Arc<LocalNet>>,
    /// Run the shard on this thread, with the shards of other reactors
    /// given the same one, instead of on a thread of its own (see
    /// [`SharedThread`]); only for a reactor of one shard (`threads` 1),
    /// ignored otherwise. `None` (the default): a thread per shard.
    pub thread: Option<SharedThread>,
}

impl Default for ReactorConfig {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            max_connections: 100_000,
            backlog: socket::DEFAULT_BACKLOG,
            max_queued_bytes: 16 << 20,
            read_buffer: 64 << 10,
            close_linger: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
            events_capacity: 1024,
            adopt_slack: DEFAULT_ADOPT_SLACK,
            stats_groups: 1,
            local_net: None,
            thread: None,
        }
    }
}

/// Default [`ReactorConfig::adopt_slack`].
pub const DEFAULT_ADOPT_SLACK: usize = 16;

/// Everything a reactor sends the application: connection id plus event.
pub type EventRx<E> = Receiver<(ConnId, NetEvent<E>)>;

/// Runs machines of type `M` over real sockets on a few shard threads.
///
/// The application talks to it through a [`Handle`] (commands in) and
/// [`Reactor::events`] (events out). Dropping the reactor shuts it down
/// like [`Reactor::shutdown`].
pub struct Reactor<M>
where
    M: Machine + Send + 'static,
    M::Event: Send,
{
    handle: Handle<M>,
    events: EventRx<M::Event>,
    threads: Vec<ShardThread>,
}

/// Where a shard runs, for waiting on it to stop.
enum ShardThread {
    /// A thread of its own.
    Own(JoinHandle<()>),
    /// A [`SharedThread`]: the channel closes when the shard has finished.
    Shared(Receiver<()>),
}

impl<M> std::fmt::Debug for Reactor<M>
where
    M: Machine + Send + 'static,
    M::Event: Send,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl<M> Reactor<M>
where
    M: Machine + Send + 'static,
    M::Event: Send,
{
    /// Starts the shard threads.
    ///
    /// # Errors
    ///
    /// Creating a poller, a waker or a thread failed.
    pub fn new(cfg: ReactorConfig) -> io::Result<Self> {
        let n = cfg.threads.clamp(1, usize::from(u16::MAX));
        let (event_tx, event_rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(StatsSet::new(cfg.stats_groups));
        let mut polls = Vec::with_capacity(n);
        let mut txs = Vec::with_capacity(n);
        let mut rxs = Vec::with_capacity(n);
        for _ in 0..n {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), WAKER)?;
            let (tx, rx) = crossbeam_channel::unbounded();
            txs.push(ShardTx {
                tx,
                waker,
                notified: AtomicBool::new(false),
            });
            polls.push(poll);
            rxs.push(rx);
        }
        let shards: Arc<[ShardTx<M>]> = txs.into();
        let loads: Arc<[AtomicUsize]> = (0..n).map(|_| AtomicUsize::new(0)).collect();
        let handle = Handle {
            shards: Arc::clone(&shards),
            next: Arc::new(AtomicUsize::new(0)),
            stats: Arc::clone(&stats),
            backlog: cfg.backlog,
            local_net: cfg.local_net.clone(),
        };
        let cfg = Arc::new(cfg);
        let mut threads = Vec::with_capacity(n);
        for (index, (poll, cmds)) in polls.into_iter().zip(rxs).enumerate() {
            let shard = Shard {
                index,
                poll,
                cmds,
                peers: Arc::clone(&shards),
                loads: Arc::clone(&loads),
                events: event_tx.clone(),
                stats: Arc::clone(&stats),
                buf: vec![0; cfg.read_buffer.max(1)],
                cfg: Arc::clone(&cfg),
                conns: Slab::new(),
                listeners: Slab::new(),
                timers: TimerHeap::default(),
                next_generation: 0,
                read_pending: Vec::new(),
                to_flush: Vec::new(),
                accept_pending: Vec::new(),
                accept_retry_at: None,
                more_cmds: false,
                pump: None,
                pump_at: None,
                pump_more: false,
                shutdown_at: None,
                bytes: vec![GroupBytes::default(); stats.len()],
            };
            let spawned = match cfg.thread.as_ref().filter(|_| n == 1) {
                Some(shared) => {
                    let (done, finished) = crossbeam_channel::bounded(0);
                    let events = Events::with_capacity(shard.events_capacity());
                    shared
                        .host(Box::new(HostedShard {
                            shard,
                            events,
                            events_left: false,
                            _done: done,
                        }))
                        .map(|()| ShardThread::Shared(finished))
                }
                None => std::thread::Builder::new()
                    .name(format!("teamtalk-net-{index}"))
                    .spawn(move || shard.run())
                    .map(ShardThread::Own),
            };
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // Stop the shards already running before reporting.
                    drop(Self {
                        handle,
                        events: event_rx,
                        threads,
                    });
                    return Err(e);
                }
            }
        }
        Ok(Self {
            handle,
            events: event_rx,
            threads,
        })
    }

    /// A handle for sending commands from any thread.
    #[must_use]
    pub fn handle(&self) -> Handle<M> {
        self.handle.clone()
    }

    /// The event stream of all connections. Clones share one stream:
    /// each event goes to exactly one receiver.
    #[must_use]
    pub fn events(&self) -> EventRx<M::Event> {
        self.events.clone()
    }

    /// See [`Handle::listen`].
    ///
    /// # Errors
    ///
    /// As [`Handle::listen`].
    pub fn listen<F>(&self, addr: SocketAddr, factory: F) -> Result<SocketAddr, NetError>
    where
        F: Fn(SocketAddr, Instant) -> M + Send + 'static,
    {
        self.handle.listen(addr, factory)
    }

    /// See [`Handle::listen_with`].
    ///
    /// # Errors
    ///
    /// As [`Handle::listen`].
    pub fn listen_with<F>(
        &self,
        addr: SocketAddr,
        opts: ListenOptions,
        factory: F,
    ) -> Result<SocketAddr, NetError>
    where
        F: Fn(SocketAddr, Instant) -> M + Send + 'static,
    {
        self.handle.listen_with(addr, opts, factory)
    }

    /// See [`Handle::open`].
    ///
    /// # Errors
    ///
    /// As [`Handle::open`].
    pub fn open(&self, machine: M) -> Result<ConnId, NetError> {
        self.handle.open(machine)
    }

    /// See [`Handle::exec`].
    ///
    /// # Errors
    ///
    /// As [`Handle::exec`].
    pub fn exec(
        &self,
        id: ConnId,
        f: impl FnOnce(&mut M) + Send + 'static,
    ) -> Result<(), NetError> {
        self.handle.exec(id, f)
    }

    /// The counters right now.
    #[must_use]
    pub fn stats(&self) -> StatsSnapshot {
        self.handle.stats()
    }

    /// Stops accepting, drops every machine, flushes queued bytes for at
    /// most [`ReactorConfig::shutdown_grace`], closes every socket and
    /// joins the shard threads. The event stream ends once the threads
    /// are gone.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for shard in self.handle.shards.iter() {
            // A shard that is gone already has nothing left to stop.
            let _ = shard.send(Cmd::Shutdown);
        }
        for t in self.threads.drain(..) {
            match t {
                ShardThread::Own(t) => {
                    if t.join().is_err() {
                        tracing::error!("a reactor shard panicked");
                    }
                }
                // Closed (never sent on) once the shard has finished.
                ShardThread::Shared(finished) => {
                    let _ = finished.recv();
                }
            }
        }
    }
}

impl<M> Drop for Reactor<M>
where
    M: Machine + Send + 'static,
    M::Event: Send,
{
    fn drop(&mut self) {
        self.stop();
    }
}

/// The socket side of a connection.
#[derive(Debug)]
enum Sock {
    /// No socket: a link between connects, or closed.
    None,
    /// A nonblocking connect is under way.
    Connecting(Stream),
    /// Connected.
    Open(Stream),
}

/// One connection on a shard.
struct Conn<M> {
    generation: u32,
    /// `None` once the machine finished while the socket still flushes.
    machine: Option<M>,
    sock: Sock,
    /// Bytes the machine transmitted that the socket has not taken yet.
    tx: TxQueue,
    /// The backlog last reported to the machine.
    reported: usize,
    /// The machine closed the socket: no more reads, flush then drop.
    closing: bool,
    /// The machine does not want its socket read (`Machine::wants_read`):
    /// the socket is registered for writability only.
    read_paused: bool,
    /// The machine's deadline.
    deadline: Option<Instant>,
    /// Until when a closing socket may keep flushing.
    linger_until: Option<Instant>,
    /// The earliest live timer-heap entry of this connection.
    scheduled: Option<Instant>,
    /// Its place in the listener's per-source count, given back when the
    /// connection is dropped (on whichever shard that happens).
    _source: Option<SourceSlot>,
    /// The stats group it counts in.
    group: u8,
    /// Its queue is listed in the shard's `to_flush` for the end of the
    /// round.
    flush_due: bool,
    /// The interest its socket is registered with (see
    /// [`Conn::wanted_interest`]).
    interest: Option<Interest>,
}

impl<M: Machine> Conn<M> {
    fn new(generation: u32, machine: M, sock: Sock, source: Option<SourceSlot>, group: u8) -> Self {
        Self {
            group,
            generation,
            machine: Some(machine),
            sock,
            tx: TxQueue::default(),
            reported: 0,
            closing: false,
            read_paused: false,
            deadline: None,
            linger_until: None,
            scheduled: None,
            _source: source,
            flush_due: false,
            interest: None,
        }
    }

    /// The readiness this connection needs to hear about. Writability
    /// only while something waits for it (a connect under way, bytes the
    /// socket did not take, or a paused reader, which needs some
    /// interest): a Unix socket pair reports every read of its peer as
    /// new write space, and each such report would wake this shard for
    /// nothing.
    fn wanted_interest(&self) -> Option<Interest> {
        match self.sock {
            Sock::None => None,
            Sock::Connecting(_) => Some(Interest::READABLE | Interest::WRITABLE),
            Sock::Open(_) if self.read_paused => Some(Interest::WRITABLE),
            Sock::Open(_) if self.tx.is_empty() => Some(Interest::READABLE),
            Sock::Open(_) => Some(Interest::READABLE | Interest::WRITABLE),
        }
    }

    /// The next instant this connection needs the shard.
    fn wake_at(&self) -> Option<Instant> {
        match (self.deadline, self.linger_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Queues `bytes` for the socket. True when an open socket's queue
    /// must be listed for the flush at the end of the round.
    ///
    /// Nothing is written here: everything a round queues for one socket
    /// goes out in one vectored write when the round ends
    /// (`Shard::flush_round`), so a connection that gets several PDUs in a
    /// round (a member of a busy group, a sender's acks and deliveries)
    /// costs one system call and one segment instead of one per PDU.
    fn transmit(&mut self, bytes: Bytes) -> bool {
        if self.closing {
            return false;
        }
        match &self.sock {
            // Not connected: the machine knows, nothing can be sent.
            Sock::None => false,
            // Flushed when the connect completes.
            Sock::Connecting(_) => {
                self.tx.push(bytes);
                false
            }
            Sock::Open(_) => {
                self.tx.push(bytes);
                !std::mem::replace(&mut self.flush_due, true)
            }
        }
    }

    /// Writes queued bytes until the queue is empty or the socket full.
    fn flush(&mut self, out: &mut GroupBytes) -> io::Result<()> {
        if let Sock::Open(stream) = &mut self.sock {
            let writes = &mut out.writes;
            let n = self.tx.flush(|slices| {
                *writes += 1;
                stream.write_vectored(slices)
            })?;
            out.written += n as u64;
        }
        Ok(())
    }

    /// Tells the machine its backlog if it changed; true if it did.
    fn report_backlog(&mut self, now: Instant) -> bool {
        let queued = self.tx.len();
        if queued == self.reported {
            return false;
        }
        self.reported = queued;
        if let Some(m) = self.machine.as_mut() {
            m.set_backlog(now, queued);
        }
        true
    }
}

/// The signed change from `before` to `after` bytes.
fn delta(before: usize, after: usize) -> i64 {
    let d = i64::try_from(before.abs_diff(after)).unwrap_or(i64::MAX);
    if after >= before { d } else { -d }
}

/// A listening socket and the factory for its connections' machines.
struct Listener<M> {
    listener: TcpListener,
    local: SocketAddr,
    factory: Factory<M>,
    /// The per-source limit, shared by all shards; `None`: unlimited.
    limit: Option<Arc<SourceLimit>>,
    /// The stats group its connections count in.
    group: u8,
}

/// One shard thread's state.
struct Shard<M: Machine> {
    index: usize,
    poll: Poll,
    cmds: Receiver<Cmd<M>>,
    peers: Arc<[ShardTx<M>]>,
    /// Connections each shard holds, published by each after every change
    /// of its own, for where an accepted connection goes.
    loads: Arc<[AtomicUsize]>,
    events: Sender<(ConnId, NetEvent<M::Event>)>,
    stats: Arc<StatsSet>,
    buf: Vec<u8>,
    cfg: Arc<ReactorConfig>,
    conns: Slab<Conn<M>>,
    listeners: Slab<Listener<M>>,
    timers: TimerHeap,
    next_generation: u32,
    /// Connections whose read budget ran out with data left.
    read_pending: Vec<(usize, u32)>,
    /// Connections whose queues this round has added to, flushed when it
    /// ends.
    to_flush: Vec<(usize, u32)>,
    /// Listeners whose accept budget ran out.
    accept_pending: Vec<usize>,
    /// When to retry accepting after an accept error.
    accept_retry_at: Option<Instant>,
    more_cmds: bool,
    /// The application's work run on this thread ([`Handle::set_pump`]).
    pump: Option<Box<dyn crate::Pump>>,
    /// When the pump asked to run again at the latest.
    pump_at: Option<Instant>,
    /// The pump has work left: poll without waiting.
    pump_more: bool,
    shutdown_at: Option<Instant>,
    /// Bytes moved since the last report, per stats group.
    bytes: Vec<GroupBytes>,
}

/// Bytes one stats group moved on a shard since the last report.
#[derive(Debug, Clone, Copy, Default)]
struct GroupBytes {
    read: u64,
    written: u64,
    /// Write system calls.
    writes: u64,
    /// Change of the bytes queued.
    queued: i64,
}

/// A shard on a [`SharedThread`].
struct HostedShard<M: Machine> {
    shard: Shard<M>,
    events: Events,
    /// The last round's event buffer was full.
    events_left: bool,
    /// Dropped when the shard finishes: the reactor's owner waits for it.
    _done: Sender<()>,
}

impl<M> Hosted for HostedShard<M>
where
    M: Machine + Send + 'static,
    M::Event: Send,
{
    fn fd(&self) -> std::os::fd::RawFd {
        crate::shared::poll_fd(&self.shard.poll)
    }

    fn timeout(&self, now: Instant) -> Option<Duration> {
        self.shard.poll_timeout(now)
    }

    fn round(&mut self) -> io::Result<bool> {
        let goes_on = self.shard.round(&mut self.events, Some(Duration::ZERO))?;
        self.events_left = self.events.iter().count() >= self.shard.events_capacity();
        Ok(goes_on)
    }

    fn events_left(&self) -> bool {
        self.events_left
    }

    fn finish(mut self: Box<Self>) {
        self.shard.finish();
    }
}

impl<M> Shard<M>
where
    M: Machine + Send + 'static,
    M::Event: Send,
{
    fn run(mut self) {
        ON_SHARD.with(|c| c.set(true));
        let mut events = Events::with_capacity(self.events_capacity());
        loop {
            let timeout = self.poll_timeout(clock::now());
            match self.round(&mut events, timeout) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    tracing::error!(error = %e, shard = self.index, "poll failed; shard stops");
                    break;
                }
            }
        }
        self.finish();
    }

    fn events_capacity(&self) -> usize {
        self.cfg.events_capacity.max(16)
    }

    /// One round: waits at most `timeout` for readiness, then serves the
    /// ready sockets, the commands, the timers and the pump, and writes
    /// what the round queued. `Ok(false)`: shutdown has finished.
    fn round(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<bool> {
        if let Err(e) = self.poll.poll(events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(true);
            }
            return Err(e);
        }
        let now = clock::now();
        for ev in events.iter() {
            let token = ev.token();
            if token == WAKER {
                continue;
            }
            if token.0 >= LISTENER_FLOOR {
                self.accept(LISTENER_TOP - token.0, now);
            } else {
                let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                if ev.is_error() {
                    self.paused_error(token.0, now);
                }
                self.conn_ready(token.0, readable, ev.is_writable(), now);
            }
        }
        self.continue_pending(now);
        self.run_commands(now);
        self.expire_timers(now);
        self.run_pump(now);
        self.flush_round(now);
        self.publish_stats();
        let finished = self
            .shutdown_at
            .is_some_and(|deadline| self.conns.is_empty() || now >= deadline);
        Ok(!finished)
    }

    /// Drops every connection left, after the last round.
    fn finish(&mut self) {
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.remove(slot);
        }
        self.publish_stats();
    }

    fn publish_stats(&mut self) {
        for (group, b) in self.bytes.iter_mut().enumerate() {
            if b.read != 0 || b.written != 0 || b.queued != 0 || b.writes != 0 {
                let g = self.stats.group(u8::try_from(group).unwrap_or(u8::MAX));
                g.add_bytes(b.read, b.written, b.queued);
                g.add_writes(b.writes);
                *b = GroupBytes::default();
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if self.more_cmds
            || self.pump_more
            || !self.read_pending.is_empty()
            || !self.accept_pending.is_empty()
        {
            return Some(Duration::ZERO);
        }
        [
            self.timers.next_deadline(),
            self.pump_at,
            self.accept_retry_at,
            self.shutdown_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(now))
    }

    fn id(&self, slot: usize, generation: u32) -> ConnId {
        ConnId {
            // The shard count is clamped to u16 and slots to u32 on insert.
            shard: u16::try_from(self.index).unwrap_or(u16::MAX),
            slot: u32::try_from(slot).unwrap_or(u32::MAX),
            generation,
        }
    }

    fn send_event(&self, slot: usize, generation: u32, ev: NetEvent<M::Event>) {
        // The application may have dropped its receiver; the connections
        // still run (and are shut down with the reactor).
        let _ = self.events.send((self.id(slot, generation), ev));
    }

    /// Inserts a connection; `None` if the slab is beyond what a
    /// [`ConnId`] can name or registration failed.
    fn insert(
        &mut self,
        machine: M,
        sock: Sock,
        source: Option<SourceSlot>,
        group: u8,
    ) -> Option<usize> {
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        if u32::try_from(slot).is_err() || slot >= LISTENER_FLOOR {
            return None;
        }
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let mut conn = Conn::new(generation, machine, sock, source, group);
        let wanted = conn.wanted_interest();
        if let (Sock::Open(s) | Sock::Connecting(s), Some(interest)) = (&mut conn.sock, wanted) {
            if let Err(e) = self.poll.registry().register(s, Token(slot), interest) {
                tracing::warn!(error = %e, "registering a socket failed");
                return None;
            }
            conn.interest = wanted;
        }
        entry.insert(conn);
        self.publish_load();
        Some(slot)
    }

    /// Tells the other shards how many connections this one holds.
    fn publish_load(&self) {
        self.loads[self.index].store(self.conns.len(), Ordering::Relaxed);
    }

    /// The shard an accepted connection goes to: this one, unless it
    /// holds more than [`ReactorConfig::adopt_slack`] connections above
    /// the least loaded shard.
    fn placement(&self) -> usize {
        let own = self.conns.len();
        let (least, load) = self
            .loads
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let load = if i == self.index {
                    own
                } else {
                    l.load(Ordering::Relaxed)
                };
                (i, load)
            })
            .min_by_key(|&(i, load)| (load, i != self.index))
            .unwrap_or((self.index, own));
        if own <= load.saturating_add(self.cfg.adopt_slack) {
            self.index
        } else {
            least
        }
    }

    /// Drops the connection's socket and its queue.
    fn drop_socket(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        match std::mem::replace(&mut conn.sock, Sock::None) {
            Sock::None => {}
            Sock::Connecting(mut s) | Sock::Open(mut s) => {
                // Closing the descriptor removes it from epoll as well;
                // deregistering first keeps other pollers correct.
                let _ = self.poll.registry().deregister(&mut s);
            }
        }
        let group = conn.group;
        self.bytes[usize::from(group)].queued += delta(conn.tx.len(), 0);
        conn.tx.clear();
        conn.flush_due = false;
        conn.interest = None;
        conn.closing = false;
        conn.linger_until = None;
        if std::mem::take(&mut conn.read_paused) {
            self.stats.group(group).read_resumed();
        }
    }

    /// Removes a connection for good.
    fn remove(&mut self, slot: usize) {
        self.drop_socket(slot);
        if let Some(conn) = self.conns.try_remove(slot) {
            self.stats.closed(conn.group);
            self.publish_load();
        }
    }

    /// The socket failed under the machine: drop it and tell the machine,
    /// unless it had closed the socket itself already.
    fn socket_failed(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.conns.get(slot) else {
            return;
        };
        let was_closing = conn.closing;
        let finished = conn.machine.is_none();
        self.drop_socket(slot);
        if finished {
            self.remove(slot);
        } else if !was_closing && let Some(m) = self.conns[slot].machine.as_mut() {
            m.handle_input(Input::Closed(now));
        }
    }

    /// Feeds one input and drains.
    fn feed(&mut self, slot: usize, input: Input<'_>, now: Instant) {
        if let Some(m) = self.conns.get_mut(slot).and_then(|c| c.machine.as_mut()) {
            m.handle_input(input);
            self.drain(slot, now);
        }
    }

    /// Carries out the machine's outputs until it has nothing more to do.
    /// The only place that interprets [`Output`].
    fn drain(&mut self, slot: usize, now: Instant) {
        loop {
            let Some(conn) = self.conns.get_mut(slot) else {
                return;
            };
            let generation = conn.generation;
            let Some(machine) = conn.machine.as_mut() else {
                return;
            };
            match machine.poll_output() {
                Output::Transmit(bytes) => {
                    let before = conn.tx.len();
                    if conn.transmit(bytes) {
                        self.to_flush.push((slot, generation));
                    }
                    self.bytes[usize::from(conn.group)].queued += delta(before, conn.tx.len());
                    if conn.tx.len() > self.cfg.max_queued_bytes {
                        tracing::debug!(conn = %self.id(slot, generation), "send queue over the hard cap");
                        self.socket_failed(slot, now);
                    }
                    // The backlog is told after the round's flush: bytes
                    // waiting for it are not the peer's backlog.
                }
                Output::Connect(addr) => {
                    self.drop_socket(slot);
                    self.start_connect(slot, addr, now);
                }
                Output::Close => self.close_socket(slot, now),
                Output::Event(e) => self.send_event(slot, generation, NetEvent::Machine(e)),
                Output::Timeout(at) => {
                    conn.deadline = Some(at);
                    self.schedule(slot);
                    self.sync_reading(slot, now);
                    return;
                }
                Output::Finished => {
                    conn.machine = None;
                    conn.deadline = None;
                    self.send_event(slot, generation, NetEvent::Finished);
                    let conn = &mut self.conns[slot];
                    if matches!(conn.sock, Sock::Open(_)) && !conn.tx.is_empty() {
                        conn.closing = true;
                        conn.linger_until = Some(now + self.cfg.close_linger);
                        self.schedule(slot);
                    } else {
                        self.remove(slot);
                    }
                    return;
                }
            }
        }
    }

    /// After a drain: stops or resumes reading the socket as the machine
    /// wants (`Machine::wants_read`).
    ///
    /// Paused, the socket is registered for writability only, so queued
    /// bytes still go out while the kernel keeps what the peer sends (its
    /// TCP window closes once the receive buffer is full). Resumed, read
    /// interest comes back and the connection is queued for a read at
    /// once: with edge-triggered readiness, the edge for bytes that arrived
    /// while paused may already be spent.
    fn sync_reading(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let Some(machine) = conn.machine.as_ref() else {
            return;
        };
        let pause = !machine.wants_read();
        if pause == conn.read_paused || conn.closing {
            return;
        }
        // A connect under way keeps both interests; the drain after
        // `Connected` comes back here with the open socket.
        if !matches!(conn.sock, Sock::Open(_)) {
            return;
        }
        // Counted before the interest changes: if that fails, dropping
        // the socket counts a paused one as resumed.
        conn.read_paused = pause;
        let (group, generation) = (conn.group, conn.generation);
        if pause {
            self.stats.group(group).read_paused();
        } else {
            self.stats.group(group).read_resumed();
        }
        if self.sync_interest(slot, now) && !pause {
            self.read_pending.push((slot, generation));
        }
    }

    /// Starts an outbound connect; a synchronous failure is fed back at
    /// once as `ConnectFailed`.
    ///
    /// An address a reactor sharing this one's [`LocalNet`] listens on is
    /// reached through a socket pair; it completes like a TCP connect (the
    /// pair is writable at once), so the machine sees the same inputs.
    fn start_connect(&mut self, slot: usize, addr: SocketAddr, now: Instant) {
        let local = self
            .cfg
            .local_net
            .as_ref()
            .and_then(|net| net.connect(addr));
        let stream = match local {
            Some(pair) => pair.map(Stream::Local),
            None => socket::start_connect(addr).map(|std| Stream::Tcp(TcpStream::from_std(std))),
        };
        let result = stream.and_then(|mut s| {
            self.poll.registry().register(
                &mut s,
                Token(slot),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(s)
        });
        let conn = &mut self.conns[slot];
        match result {
            Ok(s) => {
                conn.sock = Sock::Connecting(s);
                conn.interest = Some(Interest::READABLE | Interest::WRITABLE);
            }
            Err(e) => {
                tracing::debug!(error = %e, %addr, "connect failed at once");
                if let Some(m) = conn.machine.as_mut() {
                    m.handle_input(Input::ConnectFailed(now));
                }
            }
        }
    }

    /// The machine closed its socket: flush what is queued (bounded by
    /// the linger time), then drop it.
    fn close_socket(&mut self, slot: usize, now: Instant) {
        let conn = &mut self.conns[slot];
        if matches!(conn.sock, Sock::Open(_)) && !conn.tx.is_empty() {
            conn.closing = true;
            conn.linger_until = Some(now + self.cfg.close_linger);
            self.schedule(slot);
        } else {
            self.drop_socket(slot);
        }
    }

    /// Makes sure a timer-heap entry exists for the connection's next
    /// wake-up (see the timer_heap module for the invalidation scheme).
    fn schedule(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if let Some(at) = conn.wake_at()
            && conn.scheduled.is_none_or(|s| at < s)
        {
            conn.scheduled = Some(at);
            self.timers.push(at, slot, conn.generation);
        }
    }

    fn expire_timers(&mut self, now: Instant) {
        let mut budget = self.conns.len() + 1024;
        while budget > 0
            && let Some(Entry {
                at,
                slot,
                generation,
            }) = self.timers.pop_due(now)
        {
            budget -= 1;
            let Some(conn) = self.conns.get_mut(slot) else {
                continue;
            };
            if conn.generation != generation || conn.scheduled != Some(at) {
                continue;
            }
            conn.scheduled = None;
            if conn.linger_until.is_some_and(|l| l <= now) {
                tracing::debug!(conn = %self.id(slot, generation), "linger over; dropping unsent bytes");
                if self.conns[slot].machine.is_none() {
                    self.remove(slot);
                    continue;
                }
                self.drop_socket(slot);
            }
            let conn = &mut self.conns[slot];
            if conn.deadline.is_some_and(|d| d <= now) {
                conn.deadline = None;
                self.feed(slot, Input::Timeout(now), now);
            }
            if self
                .conns
                .get(slot)
                .is_some_and(|c| c.generation == generation)
            {
                self.schedule(slot);
            }
        }
        if self.timers.len() > 2 * self.conns.len() + 1024 {
            let live = self.conns.iter().filter_map(|(slot, c)| {
                c.scheduled.map(|at| Entry {
                    at,
                    slot,
                    generation: c.generation,
                })
            });
            self.timers.rebuild(live);
        }
    }

    /// Handles readiness of one connection.
    fn conn_ready(&mut self, slot: usize, readable: bool, writable: bool, now: Instant) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if let Sock::Connecting(stream) = &conn.sock {
            match stream.connect_result() {
                ConnectState::Pending => return,
                ConnectState::Failed(e) => {
                    tracing::debug!(error = %e, "connect failed");
                    self.drop_socket(slot);
                    self.feed(slot, Input::ConnectFailed(now), now);
                    return;
                }
                ConnectState::Connected => {
                    if let Sock::Connecting(s) = std::mem::replace(&mut conn.sock, Sock::None) {
                        conn.sock = Sock::Open(s);
                    }
                    self.feed(slot, Input::Connected(now), now);
                }
            }
        }
        if writable {
            self.on_writable(slot, now);
        }
        if readable {
            self.on_readable(slot, now);
        }
    }

    /// A socket whose reading is paused reported an error (a reset): it
    /// would otherwise go unnoticed until the next write or the resume,
    /// since the read that reports errors does not happen.
    fn paused_error(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.conns.get(slot) else {
            return;
        };
        let Sock::Open(stream) = &conn.sock else {
            return;
        };
        if !conn.read_paused {
            return;
        }
        match stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => {
                tracing::debug!(error = %e, "paused socket failed");
                self.socket_failed(slot, now);
                self.drain(slot, now);
            }
        }
    }

    /// Writes what the round queued, one vectored write per socket, and
    /// tells each machine its backlog (which may raise more output: those
    /// sockets are flushed in the same call).
    fn flush_round(&mut self, now: Instant) {
        while !self.to_flush.is_empty() {
            for (slot, generation) in std::mem::take(&mut self.to_flush) {
                let Some(conn) = self.conns.get_mut(slot) else {
                    continue;
                };
                if conn.generation != generation || !std::mem::take(&mut conn.flush_due) {
                    continue;
                }
                self.on_writable(slot, now);
            }
        }
    }

    fn on_writable(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        // A writable edge flushes everything, the round's bytes included;
        // the round's own flush then finds nothing to do.
        if conn.tx.is_empty() {
            self.sync_interest(slot, now);
            return;
        }
        let before = conn.tx.len();
        let b = &mut self.bytes[usize::from(conn.group)];
        let result = conn.flush(b);
        b.queued += delta(before, conn.tx.len());
        if let Err(e) = result {
            tracing::debug!(error = %e, "write failed");
            self.socket_failed(slot, now);
            self.drain(slot, now);
            return;
        }
        if conn.closing && conn.tx.is_empty() {
            if conn.machine.is_none() {
                self.remove(slot);
            } else {
                self.drop_socket(slot);
            }
            return;
        }
        if !self.sync_interest(slot, now) || self.conns[slot].closing {
            return;
        }
        if self.conns[slot].report_backlog(now) {
            self.drain(slot, now);
        }
    }

    /// Registers the socket for what [`Conn::wanted_interest`] says, if
    /// that changed. False when the socket failed (the machine was told).
    fn sync_interest(&mut self, slot: usize, now: Instant) -> bool {
        let Some(conn) = self.conns.get_mut(slot) else {
            return false;
        };
        let wanted = conn.wanted_interest();
        if wanted == conn.interest {
            return true;
        }
        let (Sock::Open(s) | Sock::Connecting(s), Some(interest)) = (&mut conn.sock, wanted) else {
            return true;
        };
        if let Err(e) = self.poll.registry().reregister(s, Token(slot), interest) {
            tracing::warn!(error = %e, "changing a socket's interest failed");
            self.socket_failed(slot, now);
            self.drain(slot, now);
            return false;
        }
        conn.interest = wanted;
        true
    }

    fn on_readable(&mut self, slot: usize, now: Instant) {
        let mut buf = std::mem::take(&mut self.buf);
        let mut budget = READ_BUDGET;
        while let Some(conn) = self.conns.get_mut(slot) {
            // Paused (possibly by the drain of the previous read): leave
            // the rest in the kernel; the resume queues a read.
            if conn.closing || conn.read_paused || conn.machine.is_none() {
                break;
            }
            let generation = conn.generation;
            let Sock::Open(stream) = &mut conn.sock else {
                break;
            };
            if budget == 0 {
                self.read_pending.push((slot, generation));
                break;
            }
            budget -= 1;
            match stream.read(&mut buf) {
                Ok(0) => {
                    self.socket_failed(slot, now);
                    self.drain(slot, now);
                    break;
                }
                Ok(n) => {
                    self.bytes[usize::from(conn.group)].read += n as u64;
                    if let Some(m) = conn.machine.as_mut() {
                        m.handle_input(Input::Received(now, &buf[..n]));
                    }
                    self.drain(slot, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(error = %e, "read failed");
                    self.socket_failed(slot, now);
                    self.drain(slot, now);
                    break;
                }
            }
        }
        self.buf = buf;
    }

    /// Gives connections and listeners whose budget ran out another turn.
    fn continue_pending(&mut self, now: Instant) {
        for (slot, generation) in std::mem::take(&mut self.read_pending) {
            if self
                .conns
                .get(slot)
                .is_some_and(|c| c.generation == generation)
            {
                self.on_readable(slot, now);
            }
        }
        let mut retry = std::mem::take(&mut self.accept_pending);
        if self.accept_retry_at.is_some_and(|t| t <= now) {
            self.accept_retry_at = None;
            retry.extend(self.listeners.iter().map(|(i, _)| i));
        }
        for idx in retry {
            self.accept(idx, now);
        }
    }

    fn accept(&mut self, idx: usize, now: Instant) {
        if self.shutdown_at.is_some() {
            return;
        }
        for _ in 0..ACCEPT_BUDGET {
            let Some(l) = self.listeners.get(idx) else {
                return;
            };
            match l.listener.accept() {
                Ok((stream, peer)) => self.admit(idx, Stream::Tcp(stream), peer, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors or memory, or an aborted
                    // handshake: try again shortly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    self.accept_retry_at = Some(now + ACCEPT_RETRY);
                    return;
                }
            }
        }
        self.accept_pending.push(idx);
    }

    /// Takes a connection accepted on listener `idx` (over TCP, or
    /// in-process): its source's and the reactor's limits, its machine,
    /// and the shard that will hold it.
    fn admit(&mut self, idx: usize, stream: Stream, peer: SocketAddr, now: Instant) {
        let Some(l) = self.listeners.get(idx) else {
            return;
        };
        // Per source first: an unlimited listener pays nothing, and a
        // refused source never takes a global slot.
        let Ok(source) = sources::admit(l.limit.as_ref(), peer.ip()) else {
            tracing::debug!(%peer, "per-source limit reached; closing");
            self.stats.group(l.group).refused_per_source();
            return;
        };
        let group = l.group;
        if !self.stats.try_admit(group, self.cfg.max_connections) {
            tracing::debug!(%peer, "connection limit reached; closing");
            return;
        }
        if let Stream::Tcp(s) = &stream {
            socket::set_nodelay(s);
        }
        let local = l.local;
        let machine = (l.factory)(peer, now);
        let target = self.placement();
        let arrival = Arrival {
            stream,
            peer,
            local,
            machine,
            source,
            group,
        };
        if target == self.index {
            self.adopt(arrival, now);
        } else {
            // Counted there at once, so a burst of accepts in this turn
            // does not all go to the same shard; its own count replaces
            // this once it adopts.
            self.loads[target].fetch_add(1, Ordering::Relaxed);
            if self.peers[target].send(Cmd::Adopt(arrival)).is_err() {
                self.stats.closed(group);
            }
        }
    }

    /// An in-process connection to the listener bound to `addr`; the peer
    /// is named by the listener's own IP and port 0.
    fn local_accept(&mut self, addr: SocketAddr, stream: mio::net::UnixStream, now: Instant) {
        if self.shutdown_at.is_some() {
            return;
        }
        let Some(idx) = self
            .listeners
            .iter()
            .find_map(|(i, l)| (l.local == addr).then_some(i))
        else {
            tracing::debug!(%addr, "in-process connect to a listener that is gone");
            return;
        };
        let peer = SocketAddr::new(addr.ip(), 0);
        self.admit(idx, Stream::Local(stream), peer, now);
    }

    fn adopt(&mut self, arrival: Arrival<M>, now: Instant) {
        let Arrival {
            stream,
            peer,
            local,
            machine,
            source,
            group,
        } = arrival;
        if self.shutdown_at.is_some() {
            self.stats.closed(group);
            return;
        }
        let Some(slot) = self.insert(machine, Sock::Open(stream), source, group) else {
            self.stats.closed(group);
            return;
        };
        let generation = self.conns[slot].generation;
        self.send_event(slot, generation, NetEvent::Accepted { peer, local });
        self.drain(slot, now);
    }

    /// Runs the pump, then at once the commands it issued, and again
    /// while those commands raised events for it (a bounded number of
    /// rounds). Its own commands cost no wake-up: the shard is marked as
    /// notified while the pump runs, and applies the queue right after.
    fn run_pump(&mut self, now: Instant) {
        let Some(mut pump) = self.pump.take() else {
            return;
        };
        for _ in 0..crate::pump::PUMP_ROUNDS {
            self.peers[self.index]
                .notified
                .store(true, Ordering::SeqCst);
            let pumped = pump.pump(now);
            let issued = !self.cmds.is_empty();
            self.run_commands(now);
            match pumped {
                crate::Pumped::Done => {
                    self.pump_at = None;
                    self.pump_more = false;
                    return;
                }
                crate::Pumped::Idle(at) => {
                    self.pump_at = at;
                    if !issued {
                        self.pump_more = false;
                        self.pump = Some(pump);
                        return;
                    }
                }
                crate::Pumped::More => {}
            }
        }
        self.pump_more = true;
        self.pump = Some(pump);
    }

    fn run_commands(&mut self, now: Instant) {
        self.peers[self.index]
            .notified
            .store(false, Ordering::SeqCst);
        self.more_cmds = false;
        for _ in 0..CMD_BUDGET {
            match self.cmds.try_recv() {
                Ok(cmd) => self.apply(cmd, now),
                Err(_) => return,
            }
        }
        self.more_cmds = true;
    }

    fn apply(&mut self, cmd: Cmd<M>, now: Instant) {
        match cmd {
            Cmd::Exec(id, f) => {
                let slot = id.slot as usize;
                if id.shard() != self.index {
                    return;
                }
                if let Some(conn) = self.conns.get_mut(slot)
                    && conn.generation == id.generation
                    && let Some(m) = conn.machine.as_mut()
                {
                    f(m);
                    self.drain(slot, now);
                }
            }
            Cmd::Open(machine, group, reply) => {
                if self.shutdown_at.is_some() {
                    return;
                }
                if let Some(slot) = self.insert(machine, Sock::None, None, group) {
                    self.stats.opened(group);
                    let id = self.id(slot, self.conns[slot].generation);
                    // If the caller gave up waiting, the link still runs.
                    let _ = reply.send(id);
                    self.drain(slot, now);
                }
            }
            Cmd::Listen(mut listener, factory, limit, group) => {
                if self.shutdown_at.is_some() {
                    return;
                }
                let entry = self.listeners.vacant_entry();
                let idx = entry.key();
                if idx > LISTENER_TOP - LISTENER_FLOOR {
                    tracing::error!("too many listeners on one shard");
                    return;
                }
                let local = match listener.local_addr() {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::error!(error = %e, "listener without an address");
                        return;
                    }
                };
                if let Err(e) = self.poll.registry().register(
                    &mut listener,
                    Token(LISTENER_TOP - idx),
                    Interest::READABLE,
                ) {
                    tracing::error!(error = %e, "registering a listener failed");
                    return;
                }
                entry.insert(Listener {
                    listener,
                    local,
                    factory,
                    limit,
                    group,
                });
                self.accept(idx, now);
            }
            Cmd::Adopt(arrival) => self.adopt(arrival, now),
            Cmd::LocalAccept(addr, stream) => self.local_accept(addr, stream, now),
            Cmd::Pump(pump) => {
                if self.shutdown_at.is_none() {
                    self.pump = Some(pump);
                    self.pump_more = true;
                }
            }
            Cmd::Shutdown => self.begin_shutdown(now),
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if self.shutdown_at.is_some() {
            return;
        }
        self.shutdown_at = Some(now + self.cfg.shutdown_grace);
        self.pump = None;
        self.pump_at = None;
        self.pump_more = false;
        for (_, mut l) in std::mem::take(&mut self.listeners) {
            let _ = self.poll.registry().deregister(&mut l.listener);
        }
        self.accept_pending.clear();
        self.read_pending.clear();
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            let conn = &mut self.conns[slot];
            conn.machine = None;
            conn.deadline = None;
            if matches!(conn.sock, Sock::Open(_)) && !conn.tx.is_empty() {
                conn.closing = true;
            } else {
                self.remove(slot);
            }
        }
    }
}
