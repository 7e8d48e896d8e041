//! The application's side of a reactor: ids, events, commands.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use crossbeam_channel::Sender;
use teamtalk_conn::Machine;

use crate::source::{ListenOptions, SourceLimit, SourceSlot};
use crate::stats::{StatsSet, StatsSnapshot};

/// Identifies one connection of one reactor, for its whole life.
///
/// The generation makes ids of closed connections stale rather than
/// dangerous: a command or timer aimed at an old id never reaches a new
/// connection that reuses the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) shard: u16,
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

impl ConnId {
    /// An id from its parts, for application tests and tables that need
    /// ids without a reactor. A made-up id refers to no connection: a
    /// command aimed at it is dropped like one aimed at a closed
    /// connection.
    #[must_use]
    pub const fn from_parts(shard: u16, slot: u32, generation: u32) -> Self {
        Self {
            shard,
            slot,
            generation,
        }
    }

    /// The shard (thread) that owns the connection.
    #[must_use]
    pub fn shard(self) -> usize {
        usize::from(self.shard)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.shard, self.slot, self.generation)
    }
}

/// What a reactor reports about a connection, next to its [`ConnId`].
///
/// For one connection, events arrive in the order they happened:
/// `Accepted` (accepted connections only), then the machine's events, then
/// `Finished`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetEvent<E> {
    /// A listener accepted this connection and built its machine.
    Accepted {
        /// The remote address.
        peer: SocketAddr,
        /// The listener's address the peer connected to.
        local: SocketAddr,
    },
    /// An event the machine raised.
    Machine(E),
    /// The machine finished and was dropped; the id is stale from now on.
    Finished,
}

/// Why a command could not be handed to a reactor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The reactor is shutting down or gone.
    #[error("reactor stopped")]
    Stopped,
    /// `Handle::open` was called on a reactor thread (from inside an
    /// `exec` closure), where waiting for the reply would deadlock.
    #[error("open called on a reactor thread")]
    OnReactorThread,
    /// [`Handle::set_pump`] on a reactor with more than one shard: a pump
    /// runs on the thread that owns every connection, so there must be
    /// exactly one.
    #[error("a pump needs a reactor with exactly one shard")]
    PumpNeedsOneShard,
    /// Setting up a socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A closure run on the connection's shard with its machine.
pub(crate) type ExecFn<M> = Box<dyn FnOnce(&mut M) + Send>;

/// Builds a machine for each accepted connection.
pub(crate) type Factory<M> = Box<dyn Fn(SocketAddr, Instant) -> M + Send>;

/// Work for a shard thread.
pub(crate) enum Cmd<M> {
    /// Run a closure on a machine, then drain it.
    Exec(ConnId, ExecFn<M>),
    /// Take a new outbound machine, counted in this stats group, and
    /// reply with its id.
    Open(M, u8, Sender<ConnId>),
    /// Start accepting on a listener, with its per-source limit.
    Listen(
        mio::net::TcpListener,
        Factory<M>,
        Option<std::sync::Arc<SourceLimit>>,
        u8,
    ),
    /// Take over a connection another shard accepted.
    Adopt(Arrival<M>),
    /// An in-process connection to the listener bound to this address
    /// ([`LocalNet`](crate::LocalNet)): accept it like a TCP one.
    LocalAccept(SocketAddr, mio::net::UnixStream),
    /// Run this pump after every round from now on.
    Pump(Box<dyn crate::Pump>),
    /// Stop accepting, flush, exit.
    Shutdown,
}

/// An accepted connection on its way to the shard that will hold it.
pub(crate) struct Arrival<M> {
    pub(crate) stream: crate::stream::Stream,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) machine: M,
    pub(crate) source: Option<SourceSlot>,
    /// The stats group it counts in.
    pub(crate) group: u8,
}

/// A shard's command channel plus what it takes to wake it.
pub(crate) struct ShardTx<M> {
    pub(crate) tx: Sender<Cmd<M>>,
    pub(crate) waker: mio::Waker,
    /// Set when a wake-up is outstanding, so a burst of commands costs
    /// one wake-up syscall instead of one each.
    pub(crate) notified: AtomicBool,
}

impl<M> ShardTx<M> {
    /// Queues a command and wakes the shard if it may be asleep.
    pub(crate) fn send(&self, cmd: Cmd<M>) -> Result<(), NetError> {
        self.tx.send(cmd).map_err(|_| NetError::Stopped)?;
        if !self.notified.swap(true, Ordering::SeqCst) {
            self.waker.wake().map_err(|_| NetError::Stopped)?;
        }
        Ok(())
    }
}

thread_local! {
    /// True on reactor shard threads.
    pub(crate) static ON_SHARD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Cheap, cloneable access to a running reactor from any thread.
///
/// Every operation is a message to the owning shard thread, which applies
/// it between two polls: machines are only ever touched by their shard.
pub struct Handle<M: Machine> {
    pub(crate) shards: Arc<[ShardTx<M>]>,
    pub(crate) next: Arc<AtomicUsize>,
    pub(crate) stats: Arc<StatsSet>,
    pub(crate) backlog: i32,
    pub(crate) local_net: Option<Arc<crate::LocalNet>>,
}

impl<M: Machine> Clone for Handle<M> {
    fn clone(&self) -> Self {
        Self {
            shards: Arc::clone(&self.shards),
            next: Arc::clone(&self.next),
            stats: Arc::clone(&self.stats),
            backlog: self.backlog,
            local_net: self.local_net.clone(),
        }
    }
}

impl<M: Machine> fmt::Debug for Handle<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl<M> Handle<M>
where
    M: Machine + Send + 'static,
    M::Event: Send,
{
    /// Runs `f` with the connection's machine on its shard thread, then
    /// drains the machine so whatever `f` caused (a PDU to send, a close)
    /// happens at once.
    ///
    /// This one generic command replaces a command enum per machine type:
    /// `send`, `accept_login`, `close` are all `exec` with a closure. If
    /// the connection is gone by the time the shard gets the closure (a
    /// stale id), the closure is dropped without running; the
    /// [`NetEvent::Finished`] already delivered tells the application so.
    ///
    /// `f` runs on the shard thread: it must not block, and a panic in it
    /// takes the shard (and its connections) down, as a panic in the
    /// machine would.
    ///
    /// # Errors
    ///
    /// [`NetError::Stopped`] when the reactor no longer runs.
    pub fn exec(
        &self,
        id: ConnId,
        f: impl FnOnce(&mut M) + Send + 'static,
    ) -> Result<(), NetError> {
        let shard = self.shards.get(id.shard()).ok_or(NetError::Stopped)?;
        shard.send(Cmd::Exec(id, Box::new(f)))
    }

    /// Hands an outbound machine (a link) to the reactor and returns its
    /// id once a shard has taken it. The machine's first output is
    /// expected to be `Output::Connect(addr)`; connects are nonblocking
    /// and their result is fed back as `Input::Connected` or
    /// `Input::ConnectFailed`.
    ///
    /// Connections opened this way count in `open` but are never refused
    /// by the connection limit: the application chose to open them.
    ///
    /// # Errors
    ///
    /// [`NetError::Stopped`] when the reactor no longer runs, and
    /// [`NetError::OnReactorThread`] when called inside an `exec`
    /// closure (waiting for the reply there would deadlock).
    pub fn open(&self, machine: M) -> Result<ConnId, NetError> {
        self.open_in(machine, 0)
    }

    /// [`Handle::open`], counting the connection in stats group `group`
    /// ([`ReactorConfig::stats_groups`](crate::ReactorConfig::stats_groups);
    /// a group beyond the last counts in the last).
    ///
    /// # Errors
    ///
    /// As [`Handle::open`].
    pub fn open_in(&self, machine: M, group: usize) -> Result<ConnId, NetError> {
        if ON_SHARD.with(std::cell::Cell::get) {
            return Err(NetError::OnReactorThread);
        }
        let group = self.stats.clamp(group);
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        self.pick_shard()
            .send(Cmd::Open(machine, group, reply_tx))?;
        reply_rx.recv().map_err(|_| NetError::Stopped)
    }

    /// Binds a listener on `addr` and accepts on it; every accepted
    /// connection gets a machine from `factory(peer, now)` and stays on the
    /// accepting shard unless another is less loaded by more than
    /// [`ReactorConfig::adopt_slack`](crate::ReactorConfig::adopt_slack).
    /// Returns the bound address (useful with port 0).
    ///
    /// Binding happens on the calling thread, so a port in use is reported
    /// here rather than lost on a shard.
    ///
    /// # Errors
    ///
    /// [`NetError::Io`] when binding fails, [`NetError::Stopped`] when the
    /// reactor no longer runs.
    pub fn listen<F>(&self, addr: SocketAddr, factory: F) -> Result<SocketAddr, NetError>
    where
        F: Fn(SocketAddr, Instant) -> M + Send + 'static,
    {
        self.listen_with(addr, ListenOptions::default(), factory)
    }

    /// [`Handle::listen`] with options, such as a cap on the connections
    /// of one source address ([`ListenOptions::max_per_source`]).
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
        let std_listener = crate::socket::bind_listener(addr, self.backlog)?;
        let local = std_listener.local_addr()?;
        let listener = mio::net::TcpListener::from_std(std_listener);
        let limit = SourceLimit::for_options(&opts);
        let group = self.stats.clamp(opts.stats_group);
        let shard = self.pick_shard_index();
        self.shards[shard].send(Cmd::Listen(listener, Box::new(factory), limit, group))?;
        if let Some(net) = &self.local_net {
            let shards = Arc::clone(&self.shards);
            net.register(
                local,
                Box::new(move |stream| shards[shard].send(Cmd::LocalAccept(local, stream)).is_ok()),
            );
        }
        Ok(local)
    }

    /// Installs `pump` on the reactor's only shard: from now on the shard
    /// thread runs it after every round (see [`Pump`](crate::Pump)),
    /// replacing any pump installed before.
    ///
    /// # Errors
    ///
    /// [`NetError::PumpNeedsOneShard`] when the reactor has more than one
    /// shard, [`NetError::Stopped`] when it no longer runs.
    pub fn set_pump(&self, pump: Box<dyn crate::Pump>) -> Result<(), NetError> {
        if self.shards.len() != 1 {
            return Err(NetError::PumpNeedsOneShard);
        }
        self.shards[0].send(Cmd::Pump(pump))
    }

    /// Wakes every shard, so its pump runs soon: for whoever queued work
    /// for a pump somewhere the shard does not watch (a channel of its
    /// own). Always one wake-up syscall per shard, even when a wake-up is
    /// already outstanding, so a pump mid-round cannot miss it.
    ///
    /// # Errors
    ///
    /// [`NetError::Stopped`] when the reactor no longer runs.
    pub fn wake(&self) -> Result<(), NetError> {
        for shard in self.shards.iter() {
            shard.waker.wake().map_err(|_| NetError::Stopped)?;
        }
        Ok(())
    }

    /// The reactor's counters right now, all stats groups together.
    #[must_use]
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The counters of one stats group
    /// ([`ReactorConfig::stats_groups`](crate::ReactorConfig::stats_groups)),
    /// `None` beyond the last.
    #[must_use]
    pub fn group_stats(&self, group: usize) -> Option<StatsSnapshot> {
        (group < self.stats.len()).then(|| self.stats.group(self.stats.clamp(group)).snapshot())
    }

    /// Number of shard threads.
    #[must_use]
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    pub(crate) fn pick_shard(&self) -> &ShardTx<M> {
        &self.shards[self.pick_shard_index()]
    }

    pub(crate) fn pick_shard_index(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len()
    }
}
