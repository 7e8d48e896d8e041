//! The async adapter (feature `tokio`): the same machines, one task each.
//!
//! For backends that already live in async Rust. Protocol behaviour is
//! the machine's, so it is the same as under the blocking
//! [`Reactor`](crate::Reactor); only the plumbing differs:
//!
//! - [`drive`] runs one machine to completion on the current task: it
//!   drains the machine, then waits (`select!`) for the socket to become
//!   readable or writable, the machine's deadline, a pending connect, or a
//!   command, and feeds what happened back in.
//! - [`Driver`] adds what the reactor's [`Handle`](crate::Handle) offers:
//!   listeners with a machine factory, `open` for links, `exec` by
//!   [`ConnId`], one event stream of `(ConnId, NetEvent)`, and the same
//!   [`crate::Stats`].
//!
//! Reads go through a per-thread scratch buffer, as in the reactor, so an
//! idle connection holds no read buffer of its own.
//!
//! Read backpressure (`Machine::wants_read`) works as in the reactor: while
//! the machine does not want reads, the task does not wait for
//! readability and reads nothing, so the kernel buffers the peer's bytes
//! and its TCP window closes; writes, deadlines and commands go on. The
//! end of the stream and resets are seen when reading resumes (or when a
//! write fails).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ::tokio::net::{TcpListener, TcpStream};
use ::tokio::sync::{mpsc, watch};
use bytes::Bytes;
use slab::Slab;
use teamtalk_conn::{Input, Machine, Output};

use crate::clock;
use crate::handle::{ConnId, NetError, NetEvent};
use crate::socket;
use crate::source::{self as sources, ListenOptions, SourceLimit, SourceSlot};
use crate::stats::{Stats, StatsSnapshot};
use crate::txqueue::TxQueue;

/// A closure run with a machine on its task, then followed by a drain.
pub type Command<M> = Box<dyn FnOnce(&mut M) + Send>;

/// Reads per wake-up before the task yields to others.
const READ_BUDGET: usize = 16;

/// Settings of the async adapter.
#[derive(Debug, Clone)]
pub struct DriveConfig {
    /// Driver-side hard cap on bytes queued for one socket (machines
    /// normally close first with their own cap, told through
    /// `Machine::set_backlog`).
    pub max_queued_bytes: usize,
    /// Size of the per-thread read buffer.
    pub read_buffer: usize,
    /// How long a closed socket may keep flushing queued bytes.
    pub close_linger: Duration,
    /// Most accepted connections held at once by a [`Driver`].
    pub max_connections: usize,
    /// Accept backlog of listeners.
    pub backlog: i32,
}

impl Default for DriveConfig {
    fn default() -> Self {
        Self {
            max_queued_bytes: 16 << 20,
            read_buffer: 64 << 10,
            close_linger: Duration::from_secs(5),
            max_connections: 100_000,
            backlog: socket::DEFAULT_BACKLOG,
        }
    }
}

/// Where machine events go.
trait Sink<E> {
    /// Delivers one event; `false` when nobody listens any more.
    fn emit(&mut self, e: E) -> impl Future<Output = bool> + Send;
}

impl<E: Send> Sink<E> for mpsc::Sender<E> {
    async fn emit(&mut self, e: E) -> bool {
        self.send(e).await.is_ok()
    }
}

/// Where commands come from: [`drive`]'s bounded channel or a
/// [`Driver`]'s unbounded one.
enum Source<'a, M> {
    Bounded(&'a mut mpsc::Receiver<Command<M>>),
    Unbounded(&'a mut mpsc::UnboundedReceiver<Command<M>>),
}

impl<M> Source<'_, M> {
    async fn next(&mut self) -> Option<Command<M>> {
        match self {
            Self::Bounded(rx) => rx.recv().await,
            Self::Unbounded(rx) => rx.recv().await,
        }
    }
}

/// Runs `machine` until it finishes, with the default [`DriveConfig`].
///
/// `stream` is the accepted socket for a session, or `None` for a link
/// (whose first output is `Output::Connect`). Commands from `cmds` run
/// with the machine and are followed by a drain; when every command
/// sender is gone the machine keeps running on its own. Events go to
/// `events`; the task waits when that channel is full, and stops (dropping
/// the machine) when its receiver is gone.
pub async fn drive<M>(
    machine: M,
    stream: Option<TcpStream>,
    mut cmds: mpsc::Receiver<Command<M>>,
    mut events: mpsc::Sender<M::Event>,
) where
    M: Machine + Send + 'static,
    M::Event: Send,
{
    let cfg = DriveConfig::default();
    let cmds = Source::Bounded(&mut cmds);
    run(machine, stream, cmds, &mut events, &cfg, &Stats::default()).await;
}

/// The socket side of the task.
enum Sock {
    None,
    Connecting(TcpStream),
    Open(TcpStream),
}

/// What woke the task.
enum Wake<M> {
    Readable,
    Writable,
    Timer,
    Command(Option<Command<M>>),
}

thread_local! {
    /// Read buffer shared by all tasks on a worker thread.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One machine with its socket.
struct Task<'a, M: Machine> {
    machine: M,
    sock: Sock,
    tx: TxQueue,
    reported: usize,
    closing: bool,
    deadline: Option<Instant>,
    linger_until: Option<Instant>,
    finished: bool,
    /// The machine did not want its socket read at the last look
    /// (`Machine::wants_read`); counted in [`Stats`] while true.
    read_paused: bool,
    events: Vec<M::Event>,
    cfg: &'a DriveConfig,
    stats: &'a Stats,
}

impl<M: Machine> Task<'_, M> {
    fn drop_socket(&mut self) {
        self.sock = Sock::None;
        self.tx.clear();
        self.closing = false;
        self.linger_until = None;
    }

    /// The socket failed: tell the machine unless it closed it itself.
    fn socket_failed(&mut self, now: Instant) {
        let was_closing = self.closing;
        self.drop_socket();
        if !was_closing && !self.finished {
            self.machine.handle_input(Input::Closed(now));
        }
    }

    /// Carries out outputs until the machine has nothing more to do;
    /// events are collected for the caller to deliver.
    fn drain(&mut self, now: Instant) {
        while !self.finished {
            match self.machine.poll_output() {
                Output::Transmit(bytes) => self.transmit(bytes, now),
                Output::Connect(addr) => {
                    self.drop_socket();
                    let started = socket::start_connect(addr).and_then(TcpStream::from_std);
                    match started {
                        Ok(s) => self.sock = Sock::Connecting(s),
                        Err(e) => {
                            tracing::debug!(error = %e, %addr, "connect failed at once");
                            self.machine.handle_input(Input::ConnectFailed(now));
                        }
                    }
                }
                Output::Close => {
                    if matches!(self.sock, Sock::Open(_)) && !self.tx.is_empty() {
                        self.closing = true;
                        self.linger_until = Some(now + self.cfg.close_linger);
                    } else {
                        self.drop_socket();
                    }
                }
                Output::Event(e) => self.events.push(e),
                Output::Timeout(at) => {
                    self.deadline = Some(at);
                    return;
                }
                Output::Finished => {
                    self.finished = true;
                    self.deadline = None;
                    if matches!(self.sock, Sock::Open(_)) && !self.tx.is_empty() {
                        self.closing = true;
                        self.linger_until = Some(now + self.cfg.close_linger);
                    }
                }
            }
        }
    }

    fn transmit(&mut self, bytes: Bytes, now: Instant) {
        if self.closing {
            return;
        }
        let result = match &self.sock {
            Sock::None => return,
            Sock::Connecting(_) => {
                self.tx.push(bytes);
                Ok(0)
            }
            Sock::Open(s) => {
                let mut writes = 0;
                let r = self.tx.write_or_queue(bytes, |b| {
                    writes += 1;
                    s.try_write(b)
                });
                self.stats.add_writes(writes);
                r
            }
        };
        match result {
            Ok(n) => self.stats.add_bytes(0, n as u64, 0),
            Err(e) => {
                tracing::debug!(error = %e, "write failed");
                self.socket_failed(now);
                return;
            }
        }
        if self.tx.len() > self.cfg.max_queued_bytes {
            tracing::debug!("send queue over the hard cap");
            self.socket_failed(now);
        } else {
            self.report_backlog(now);
        }
    }

    fn report_backlog(&mut self, now: Instant) {
        if self.tx.len() != self.reported {
            self.reported = self.tx.len();
            if !self.finished {
                self.machine.set_backlog(now, self.reported);
            }
        }
    }

    fn on_writable(&mut self, now: Instant) {
        if let Sock::Connecting(s) = &self.sock {
            let state = match s.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => match s.peer_addr() {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                    Err(e) => Err(e),
                },
            };
            match state {
                Ok(false) => {
                    // A spurious wake-up: clear the readiness so the next
                    // wait really waits.
                    let _ = s.try_io(::tokio::io::Interest::WRITABLE, || {
                        Err::<(), _>(io::ErrorKind::WouldBlock.into())
                    });
                    return;
                }
                Ok(true) => {
                    if let Sock::Connecting(s) = std::mem::replace(&mut self.sock, Sock::None) {
                        self.sock = Sock::Open(s);
                    }
                    self.machine.handle_input(Input::Connected(now));
                    self.drain(now);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "connect failed");
                    self.drop_socket();
                    self.machine.handle_input(Input::ConnectFailed(now));
                    self.drain(now);
                    return;
                }
            }
        }
        let Sock::Open(s) = &self.sock else {
            return;
        };
        let mut writes = 0;
        let flushed = self.tx.flush(|slices| {
            writes += 1;
            s.try_write_vectored(slices)
        });
        self.stats.add_writes(writes);
        match flushed {
            Ok(n) => self.stats.add_bytes(0, n as u64, 0),
            Err(e) => {
                tracing::debug!(error = %e, "write failed");
                self.socket_failed(now);
                self.drain(now);
                return;
            }
        }
        if self.closing && self.tx.is_empty() {
            self.drop_socket();
            return;
        }
        self.report_backlog(now);
        self.drain(now);
    }

    fn on_readable(&mut self, now: Instant) {
        SCRATCH.with_borrow_mut(|buf| {
            if buf.len() < self.cfg.read_buffer.max(1) {
                buf.resize(self.cfg.read_buffer.max(1), 0);
            }
            for _ in 0..READ_BUDGET {
                // Paused (possibly by the drain of the previous read): the
                // rest stays in the kernel until the machine reads again.
                if self.closing || self.finished || !self.machine.wants_read() {
                    return;
                }
                let Sock::Open(s) = &self.sock else {
                    return;
                };
                match s.try_read(buf) {
                    Ok(0) => {
                        self.socket_failed(now);
                        self.drain(now);
                        return;
                    }
                    Ok(n) => {
                        self.stats.add_bytes(n as u64, 0, 0);
                        self.machine.handle_input(Input::Received(now, &buf[..n]));
                        self.drain(now);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "read failed");
                        self.socket_failed(now);
                        self.drain(now);
                        return;
                    }
                }
            }
        });
    }

    fn on_timer(&mut self, now: Instant) {
        if self.linger_until.is_some_and(|t| t <= now) {
            tracing::debug!("linger over; dropping unsent bytes");
            self.drop_socket();
        }
        if !self.finished && self.deadline.is_some_and(|d| d <= now) {
            self.deadline = None;
            self.machine.handle_input(Input::Timeout(now));
            self.drain(now);
        }
    }

    fn wake_at(&self) -> Option<Instant> {
        match (self.deadline, self.linger_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Notes whether the machine wants its socket read, for the counters.
    /// Waiting for readability follows the machine directly
    /// ([`Task::interests`]); tokio keeps the readiness that arrives
    /// meanwhile, so a resumed socket is read at once.
    fn note_reading(&mut self) {
        let paused = matches!(self.sock, Sock::Open(_))
            && !self.closing
            && !self.finished
            && !self.machine.wants_read();
        if paused != self.read_paused {
            self.read_paused = paused;
            if paused {
                self.stats.read_paused();
            } else {
                self.stats.read_resumed();
            }
        }
    }

    /// What to wait for next: the socket to read from (unless the machine
    /// paused reading), the socket to write to (or finish connecting), the
    /// wake-up time, and whether commands are taken.
    fn interests(
        &self,
    ) -> (
        Option<&TcpStream>,
        Option<&TcpStream>,
        Option<Instant>,
        bool,
    ) {
        let (read_from, write_to) = match &self.sock {
            Sock::None => (None, None),
            Sock::Connecting(s) => (None, Some(s)),
            Sock::Open(s) => (
                (!self.closing && !self.finished && self.machine.wants_read()).then_some(s),
                (!self.tx.is_empty()).then_some(s),
            ),
        };
        (read_from, write_to, self.wake_at(), !self.finished)
    }
}

impl<M: Machine> Drop for Task<'_, M> {
    fn drop(&mut self) {
        if self.read_paused {
            self.stats.read_resumed();
        }
    }
}

/// Waits for whatever the task needs next. A free function over the
/// task's parts, so the task itself need not be `Sync`.
async fn wait<M>(
    read_from: Option<&TcpStream>,
    write_to: Option<&TcpStream>,
    wake_at: Option<Instant>,
    cmds: Option<&mut Source<'_, M>>,
) -> Wake<M> {
    let wake_at = wake_at.map(::tokio::time::Instant::from_std);
    let take_cmds = cmds.is_some();
    ::tokio::select! {
            // Readiness errors resurface from the read or write itself.
            _ = async { if let Some(s) = read_from { let _ = s.readable().await; } },
                if read_from.is_some() => Wake::Readable,
            _ = async { if let Some(s) = write_to { let _ = s.writable().await; } },
                if write_to.is_some() => Wake::Writable,
            () = async { if let Some(t) = wake_at { ::tokio::time::sleep_until(t).await } },
                if wake_at.is_some() => Wake::Timer,
            c = async { match cmds { Some(c) => c.next().await, None => None } },
                if take_cmds => Wake::Command(c),
    }
}

/// The loop shared by [`drive`] and [`Driver`].
async fn run<M, S>(
    machine: M,
    stream: Option<TcpStream>,
    mut cmds: Source<'_, M>,
    events: &mut S,
    cfg: &DriveConfig,
    stats: &Stats,
) where
    M: Machine,
    S: Sink<M::Event>,
{
    let mut task = Task {
        machine,
        sock: stream.map_or(Sock::None, Sock::Open),
        tx: TxQueue::default(),
        reported: 0,
        closing: false,
        deadline: None,
        linger_until: None,
        finished: false,
        read_paused: false,
        events: Vec::new(),
        cfg,
        stats,
    };
    task.drain(clock::now());
    let mut cmds_open = true;
    loop {
        for e in std::mem::take(&mut task.events) {
            if !events.emit(e).await {
                return;
            }
        }
        if task.finished && !task.closing {
            return;
        }
        task.note_reading();
        let (read_from, write_to, wake_at, take) = task.interests();
        let wake = wait(
            read_from,
            write_to,
            wake_at,
            (take && cmds_open).then_some(&mut cmds),
        )
        .await;
        let now = clock::now();
        match wake {
            Wake::Readable => task.on_readable(now),
            Wake::Writable => task.on_writable(now),
            Wake::Timer => task.on_timer(now),
            Wake::Command(Some(f)) => {
                if !task.finished {
                    f(&mut task.machine);
                    task.drain(now);
                }
            }
            Wake::Command(None) => cmds_open = false,
        }
    }
}

/// Tags a task's events with its id for the [`Driver`]'s shared stream.
struct Tagged<E> {
    id: ConnId,
    tx: mpsc::UnboundedSender<(ConnId, NetEvent<E>)>,
}

impl<E: Send> Sink<E> for Tagged<E> {
    async fn emit(&mut self, e: E) -> bool {
        self.tx.send((self.id, NetEvent::Machine(e))).is_ok()
    }
}

struct Shared<M: Machine> {
    conns: Mutex<Slab<(u32, mpsc::UnboundedSender<Command<M>>)>>,
    next_generation: Mutex<u32>,
    events: mpsc::UnboundedSender<(ConnId, NetEvent<M::Event>)>,
    stats: Stats,
    cfg: DriveConfig,
    stop: watch::Sender<bool>,
}

/// The async counterpart of [`Reactor`](crate::Reactor) and
/// [`Handle`](crate::Handle): one task per connection on the current
/// Tokio runtime, addressed by [`ConnId`], reporting `(ConnId, NetEvent)`.
pub struct Driver<M: Machine> {
    shared: Arc<Shared<M>>,
}

impl<M: Machine> Clone for Driver<M> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<M: Machine> std::fmt::Debug for Driver<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("stats", &self.shared.stats.snapshot())
            .finish_non_exhaustive()
    }
}

/// The event stream of a [`Driver`].
pub type DriverEvents<E> = mpsc::UnboundedReceiver<(ConnId, NetEvent<E>)>;

impl<M> Driver<M>
where
    M: Machine + Send + 'static,
    M::Event: Send,
{
    /// A driver and its event stream. Events are unbounded, as with the
    /// reactor: the application is expected to keep up.
    #[must_use]
    pub fn new(cfg: DriveConfig) -> (Self, DriverEvents<M::Event>) {
        let (events, rx) = mpsc::unbounded_channel();
        let shared = Shared {
            conns: Mutex::new(Slab::new()),
            next_generation: Mutex::new(0),
            events,
            stats: Stats::default(),
            cfg,
            stop: watch::Sender::new(false),
        };
        (
            Self {
                shared: Arc::new(shared),
            },
            rx,
        )
    }

    /// Binds `addr` and accepts on it in a task of the current runtime;
    /// each connection gets `factory(peer, now)` and its own task. Returns
    /// the bound address.
    ///
    /// # Errors
    ///
    /// Binding failed.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    pub fn listen<F>(&self, addr: SocketAddr, factory: F) -> io::Result<SocketAddr>
    where
        F: Fn(SocketAddr, Instant) -> M + Send + 'static,
    {
        self.listen_with(addr, ListenOptions::default(), factory)
    }

    /// [`Driver::listen`] with options, such as a cap on the connections
    /// of one source address ([`ListenOptions::max_per_source`]), as
    /// [`Handle::listen_with`](crate::Handle::listen_with).
    ///
    /// # Errors
    ///
    /// Binding failed.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    pub fn listen_with<F>(
        &self,
        addr: SocketAddr,
        opts: ListenOptions,
        factory: F,
    ) -> io::Result<SocketAddr>
    where
        F: Fn(SocketAddr, Instant) -> M + Send + 'static,
    {
        let limit: Option<Arc<SourceLimit>> = SourceLimit::for_options(&opts);
        let listener =
            TcpListener::from_std(socket::bind_listener(addr, self.shared.cfg.backlog)?)?;
        let local = listener.local_addr()?;
        let driver = self.clone();
        let mut stop = self.shared.stop.subscribe();
        ::tokio::spawn(async move {
            loop {
                let accepted = ::tokio::select! {
                    r = listener.accept() => r,
                    _ = stop.wait_for(|s| *s) => return,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        let Ok(source) = sources::admit(limit.as_ref(), peer.ip()) else {
                            tracing::debug!(%peer, "per-source limit reached; closing");
                            driver.shared.stats.refused_per_source();
                            continue;
                        };
                        if !driver
                            .shared
                            .stats
                            .try_admit(driver.shared.cfg.max_connections)
                        {
                            tracing::debug!(%peer, "connection limit reached; closing");
                            continue;
                        }
                        socket::set_nodelay(&stream);
                        let machine = factory(peer, clock::now());
                        driver.spawn(machine, Some(stream), Some((peer, local)), source);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        ::tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Ok(local)
    }

    /// Starts an outbound machine (a link) in its own task.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    pub fn open(&self, machine: M) -> ConnId {
        self.shared.stats.opened();
        self.spawn(machine, None, None, None)
    }

    /// Runs `f` with the connection's machine on its task, then drains
    /// it. A stale id drops the closure, as with [`Handle::exec`](crate::Handle::exec).
    ///
    /// # Errors
    ///
    /// [`NetError::Stopped`] when the connection is gone.
    pub fn exec(
        &self,
        id: ConnId,
        f: impl FnOnce(&mut M) + Send + 'static,
    ) -> Result<(), NetError> {
        let conns = self
            .shared
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match conns.get(id.slot as usize) {
            Some((generation, tx)) if *generation == id.generation => {
                tx.send(Box::new(f)).map_err(|_| NetError::Stopped)
            }
            _ => Ok(()),
        }
    }

    /// The counters right now.
    #[must_use]
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Stops every listener of this driver; connections run on.
    pub fn stop_listening(&self) {
        self.shared.stop.send_replace(true);
    }

    fn spawn(
        &self,
        machine: M,
        stream: Option<TcpStream>,
        accepted: Option<(SocketAddr, SocketAddr)>,
        source: Option<SourceSlot>,
    ) -> ConnId {
        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
        let generation = {
            let mut g = self
                .shared
                .next_generation
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *g = g.wrapping_add(1);
            *g
        };
        let slot = self
            .shared
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((generation, cmd_tx));
        let id = ConnId {
            shard: 0,
            slot: u32::try_from(slot).unwrap_or(u32::MAX),
            generation,
        };
        if let Some((peer, local)) = accepted {
            let _ = self
                .shared
                .events
                .send((id, NetEvent::Accepted { peer, local }));
        }
        let shared = Arc::clone(&self.shared);
        ::tokio::spawn(async move {
            let mut sink = Tagged {
                id,
                tx: shared.events.clone(),
            };
            let cmds = Source::Unbounded(&mut cmd_rx);
            run(machine, stream, cmds, &mut sink, &shared.cfg, &shared.stats).await;
            // The socket is gone: give the source's place back.
            drop(source);
            shared
                .conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .try_remove(slot);
            shared.stats.closed();
            let _ = shared.events.send((id, NetEvent::Finished));
        });
        id
    }
}
