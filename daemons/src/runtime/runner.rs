//! The generic runner: drives any [`App`] over teamtalk-net.
//!
//! ```text
//!  reactors (one per side)      app thread (this file)             workers
//! ┌──────────────────────┐ events ┌─────────────────────────┐ jobs ┌──────────┐
//! │ clients: Session …   │──────▶│ read clock once per batch│────▶│ Worker 0 │
//! │ peers:   Session …   │       │ App::handle(now, input)  │◀────│ Worker 1 │
//! │ links:   Link …      │◀──────│ flush: one exec per conn │ done└──────────┘
//! └──────────────────────┘ exec  └─────────────────────────┘
//!                                    ▲ control (stop, inspect)
//!                                    │ Running handle
//! ```
//!
//! With one reactor thread for everything (the default), the App's loop
//! runs on that thread instead ([`AppPump`]), and the arrows between the
//! reactor and the App are calls, not channel hand-offs.
//!
//! The runner holds no policy: it turns reactor events into [`Input`]s,
//! carries out [`Action`]s, and counts what the transport does
//! ([`Traffic`]). Events are handled in batches: after the first event
//! it takes whatever else is already queued (up to [`EVENT_BATCH`]), and
//! only then hands each connection its operations in one reactor command,
//! so a busy daemon pays one channel send and one wake-up per connection
//! per batch, not per PDU.

use super::log_gate::{LOG_GATE_SECS, LogGate};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::LocalKey;
use std::time::Duration;

use crossbeam_channel::{Receiver, Select, Sender, TryRecvError};
use teamtalk_conn::{
    CloseReason, HttpConn, HttpEvent, Link, LinkEvent, PeerAuth, Session, SessionEvent, Tls, Ws,
    WsConfig,
};
use teamtalk_net::{ConnId, ListenOptions, NetEvent, Reactor, ReactorConfig};
use teamtalk_net::{Pump, Pumped};
use teamtalk_proto::Pdu;
use tracing::{debug, error, info, warn};

use super::contract::{
    Action, App, CloseCause, Conn, Input, LinkId, Now, Out, PortId, Response, Worker,
};
use super::error::DaemonError;
use super::plan::{LINKS_SIDE, ListenSpec, Plan, PortKind};
use super::running::{Control, ControlTx, Driver, Running, Shared};
use super::traffic::{Peer, Side, Traffic};
use super::wire::{Wire, WireEvent};
use crate::clock;
use crate::cluster::PeerPolicy;

/// Events handled before the outbox is flushed.
pub const EVENT_BATCH: usize = 512;
/// How often the App gets [`Input::Tick`].
pub const TICK: Duration = Duration::from_secs(1);
/// How long stopping waits for the workers to finish their jobs.
const STOP_PATIENCE: Duration = Duration::from_secs(30);

/// The environment variable that keeps every App on a thread of its own
/// (the pre-pump shape), for comparing the two.
pub const APP_THREAD_ENV: &str = "TEAMTALK_APP_THREAD";

/// Whether [`APP_THREAD_ENV`] is set.
fn app_thread_forced() -> bool {
    env_flag(APP_THREAD_ENV)
}

/// Whether the environment variable `name`, a switch for comparing
/// shapes, is set to anything but `0` or empty.
pub(crate) fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

thread_local! {
    /// The registry daemons started on this thread share (see
    /// [`LocalNetScope`]).
    static LOCAL_NET: RefCell<Option<Arc<teamtalk_net::LocalNet>>> = const { RefCell::new(None) };
    /// The thread daemons started on this thread run on (see
    /// [`SharedThreadScope`]).
    static SHARED_THREAD: RefCell<Option<teamtalk_net::SharedThread>> = const { RefCell::new(None) };
}

/// Puts a value in a thread-local slot and the previous one back when
/// dropped: what the scopes below are made of.
#[derive(Debug)]
struct Restore<T: 'static> {
    slot: &'static LocalKey<RefCell<Option<T>>>,
    previous: Option<T>,
}

impl<T: 'static> Restore<T> {
    fn enter(slot: &'static LocalKey<RefCell<Option<T>>>, value: Option<T>) -> Self {
        let previous = slot.with(|c| c.replace(value));
        Self { slot, previous }
    }
}

impl<T: 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        let previous = self.previous.take();
        self.slot.with(|c| c.replace(previous));
    }
}

/// While alive, every daemon [`start`]ed on this thread puts its reactors
/// on one [`LocalNet`](teamtalk_net::LocalNet): its links to the others'
/// ports go over in-process socket pairs instead of loopback TCP (see
/// `teamtalk_net::LocalNet`). `teamtalk up` starts its daemons inside
/// one. Dropping it restores what was there before.
#[derive(Debug)]
pub struct LocalNetScope {
    _restore: Restore<Arc<teamtalk_net::LocalNet>>,
}

impl LocalNetScope {
    /// Enters a scope with `net` (`None`: every connect over TCP).
    #[must_use]
    pub fn enter(net: Option<Arc<teamtalk_net::LocalNet>>) -> Self {
        Self {
            _restore: Restore::enter(&LOCAL_NET, net),
        }
    }
}

/// While alive, every daemon [`start`]ed on this thread whose App runs on
/// its reactor's thread (one reactor of one shard, see [`start`]) puts
/// that reactor on `thread` instead of a thread of its own
/// ([`teamtalk_net::SharedThread`]): co-located daemons then hand each
/// other PDUs without waking a thread. `teamtalk up` starts the daemons a
/// login crosses inside one. Dropping it restores what was there before.
#[derive(Debug)]
pub struct SharedThreadScope {
    _restore: Restore<teamtalk_net::SharedThread>,
}

impl SharedThreadScope {
    /// Enters a scope with `thread` (`None`: a thread per reactor).
    #[must_use]
    pub fn enter(thread: Option<teamtalk_net::SharedThread>) -> Self {
        Self {
            _restore: Restore::enter(&SHARED_THREAD, thread),
        }
    }
}

/// Starts `app` with the sockets and workers of `plan`.
///
/// Listeners are bound before this returns, so a port in use is reported
/// here; links start connecting at once.
///
/// Where the App runs: when every side of the plan asks for one reactor
/// thread (the default), all sides share one reactor and the App runs on
/// its thread, as its pump ([`teamtalk_net::Pump`]): a request read from
/// a socket is handled and answered in the same round, with no thread
/// hand-off. A side with more threads (a msg_server's clients on a
/// multi-core box), [`Plan::app_thread`] or [`APP_THREAD_ENV`] give the
/// App a thread of its own and each side its reactor, as in the diagram
/// above.
///
/// # Errors
/// [`DaemonError`] when a reactor, listener, link or thread cannot be set
/// up; whatever had started is stopped again.
pub fn start<A, W>(app: A, plan: Plan<W>) -> Result<Running<A>, DaemonError>
where
    A: App,
    W: Worker<Job = A::Job, Done = A::Done>,
{
    let name = app.name();
    let Plan {
        listeners,
        links,
        workers,
        sides: side_configs,
        worker_queue,
        batch_limit,
        admin,
        peers: policy,
        client_credit,
        app_thread,
    } = plan;
    check_exposure(name, &listeners, &policy)?;
    if !policy.has_secret() && !policy.allowed().is_empty() {
        warn!(
            daemon = name,
            allowed = ?policy.allowed(),
            "no ClusterSecret: server ports admit the peers AllowUnauthenticatedPeers lists \
             without any proof of who they are"
        );
    }

    // One reactor per side, in order of first mention.
    let mut side_names: Vec<&'static str> = Vec::new();
    for l in &listeners {
        if !side_names.contains(&l.side) {
            side_names.push(l.side);
        }
    }
    if !links.is_empty() && !side_names.contains(&LINKS_SIDE) {
        side_names.push(LINKS_SIDE);
    }
    // Every side on one reactor with the App on its thread (a pump) when
    // each side asks for one thread; otherwise one reactor per side and
    // the App on a thread of its own.
    let side_config = |side: &str| {
        side_configs.iter().find(|(s, _)| *s == side).map_or_else(
            || ReactorConfig {
                threads: 1,
                ..ReactorConfig::default()
            },
            |(_, c)| c.clone(),
        )
    };
    let local_net = LOCAL_NET.with(|c| c.borrow().clone());
    let configs: Vec<ReactorConfig> = side_names
        .iter()
        .map(|s| ReactorConfig {
            local_net: local_net.clone(),
            ..side_config(s)
        })
        .collect();
    let inline = configs.iter().all(|c| c.threads == 1) && !app_thread && !app_thread_forced();
    let mut reactors = Vec::new();
    let reactor_of: Vec<usize>;
    let new_reactor = |config: ReactorConfig| {
        Reactor::<Wire>::new(config).map_err(|source| DaemonError::Reactor {
            daemon: name,
            source,
        })
    };
    if inline {
        // One reactor for all: the first side's settings, room for every
        // side's connections.
        let mut merged = configs.first().cloned().unwrap_or_else(|| side_config(""));
        merged.max_connections = configs
            .iter()
            .map(|c| c.max_connections)
            .fold(0, usize::saturating_add)
            .max(1);
        // Each side's connections count apart (its `side` gauges).
        merged.stats_groups = side_names.len().max(1);
        merged.thread = SHARED_THREAD.with(|c| c.borrow().clone());
        reactors.push(new_reactor(merged)?);
        reactor_of = vec![0; side_names.len()];
    } else {
        for config in configs {
            reactors.push(new_reactor(config)?);
        }
        reactor_of = (0..side_names.len()).collect();
    }
    let side_of = |side: &str| side_names.iter().position(|s| *s == side).unwrap_or(0);

    // Listeners, then links.
    let mut peers: Vec<Peer> = Vec::new();
    let mut ports: HashMap<(usize, SocketAddr), Port> = HashMap::new();
    let mut bound = Vec::new();
    let mut bound_ids = Vec::new();
    for (i, spec) in listeners.into_iter().enumerate() {
        let ListenSpec {
            addr,
            kind,
            side,
            peer,
            tls,
            ws,
        } = spec;
        let side = side_of(side);
        let reactor = reactor_of[side];
        let options = ListenOptions {
            max_per_source: match &kind {
                PortKind::Http { max_per_source, .. } => *max_per_source,
                PortKind::Clients(_) | PortKind::Peers(_) => None,
            },
            stats_group: side,
        };
        let local = reactors[reactor]
            .listen_with(
                addr,
                options,
                factory(&kind, &policy, client_credit, tls, ws),
            )
            .map_err(|source| DaemonError::Listen {
                daemon: name,
                addr,
                source,
            })?;
        let port = Port {
            id: PortId(u8::try_from(i).unwrap_or(u8::MAX)),
            side: u8::try_from(side).unwrap_or(u8::MAX),
            peer: Traffic::peer_index(&mut peers, peer),
            server: matches!(kind, PortKind::Peers(_)),
        };
        ports.insert((reactor, local), port);
        bound.push((local, peer));
        bound_ids.push((local, port.id));
    }
    let mut link_ids = HashMap::new();
    let mut link_conns = Vec::new();
    let links_side = side_of(LINKS_SIDE);
    for (i, mut spec) in links.into_iter().enumerate() {
        let addr = spec.config.addr;
        if spec.config.auth.is_none() {
            spec.config.auth = policy.auth();
        }
        let peer = Traffic::peer_index(&mut peers, spec.peer);
        let now = clock::now();
        let link = Link::new(spec.config, now);
        let wire = match spec.tls {
            Some((config, name)) => Wire::TlsLink(Box::new(Tls::client(config, name, link, now))),
            None => Wire::Link(Box::new(link)),
        };
        let id = reactors[reactor_of[links_side]]
            .handle()
            .open_in(wire, links_side)
            .map_err(|source| DaemonError::Link {
                daemon: name,
                addr,
                source,
            })?;
        let link = LinkId(u16::try_from(i).unwrap_or(u16::MAX));
        link_ids.insert(id, (link, peer));
        link_conns.push(id);
    }

    // Each side's transport gauges: its reactor's, or its stats group's
    // when the sides share one.
    let sides = side_names
        .iter()
        .enumerate()
        .map(|(i, name)| Side {
            name,
            net: reactors[reactor_of[i]].handle(),
            group: inline.then_some(i),
            closes: crate::metrics::CloseCounters::new(),
            http_closes: crate::metrics::CounterMap::new(),
        })
        .collect();
    let traffic = Arc::new(Traffic {
        sides,
        peers,
        admitted: crate::metrics::CounterMap::new(),
        refused: std::sync::atomic::AtomicU64::new(0),
        worker_waits: std::sync::atomic::AtomicU64::new(0),
    });

    // Workers. With the App on the reactor's thread, a worker wakes the
    // reactor after handing results back (and when it exits).
    let wake = inline.then(|| reactors[0].handle());
    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    let mut worker_txs = Vec::new();
    let mut worker_threads = Vec::new();
    for (i, worker) in workers.into_iter().enumerate() {
        let (tx, rx) = crossbeam_channel::bounded(worker_queue);
        let done = done_tx.clone();
        let wake = wake.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-worker-{i}"))
            .spawn(move || run_worker(worker, &rx, done, batch_limit, wake))
            .map_err(|source| DaemonError::Thread {
                daemon: name,
                source,
            })?;
        worker_txs.push(tx);
        worker_threads.push(thread);
    }
    drop(done_tx);

    let shared = Arc::new(Shared::new(name, Arc::clone(&traffic)));
    let (control_tx, control_rx) = crossbeam_channel::unbounded();
    let control_tx = ControlTx::new(control_tx, wake);
    let mut runner = Runner {
        app,
        nets: reactors.iter().map(Reactor::handle).collect(),
        events: reactors.iter().map(Reactor::events).collect(),
        owned: Vec::new(),
        traffic,
        ports,
        bound: bound_ids,
        conns: HashMap::new(),
        closing: HashMap::new(),
        peer_addrs: HashMap::new(),
        link_reactor: (!link_conns.is_empty()).then_some(reactor_of[links_side]),
        links_side,
        link_ids,
        link_conns,
        worker_txs,
        worker_threads,
        done_rx,
        outbox: Outbox::default(),
        out: Out::new(),
        policy,
        gates: Gates::default(),
        now: read_now(),
    };
    let driver = if inline {
        let pump = AppPump {
            runner: Some(runner),
            control: control_rx,
            shared: Arc::clone(&shared),
            started: false,
            next_tick: clock::now(),
            stopping: None,
        };
        reactors[0]
            .handle()
            .set_pump(Box::new(pump))
            .map_err(|e| DaemonError::Reactor {
                daemon: name,
                source: std::io::Error::other(e),
            })?;
        Driver::Inline(reactors)
    } else {
        runner.owned = reactors;
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn({
                let shared = Arc::clone(&shared);
                move || {
                    let _alive = shared.alive_guard();
                    runner.run(&control_rx);
                }
            })
            .map_err(|source| DaemonError::Thread {
                daemon: name,
                source,
            })?;
        Driver::Thread(thread)
    };
    let addrs: Vec<_> = bound.iter().map(|(a, _)| a).collect();
    if lifecycle_at_debug() {
        debug!(daemon = name, ?addrs, "listening");
    } else {
        info!(daemon = name, ?addrs, "listening");
    }
    let mut running = Running::new(shared, bound, control_tx, driver);
    if let Some(settings) = admin {
        running.serve_admin(&settings)?;
    }
    Ok(running)
}

/// Refuses a plan whose server ports would let anyone in: a peer port
/// beyond loopback with neither a cluster secret nor a list of who may
/// connect.
fn check_exposure(
    name: &'static str,
    listeners: &[ListenSpec],
    policy: &PeerPolicy,
) -> Result<(), DaemonError> {
    if policy.has_secret() || !policy.allowed().is_empty() {
        return Ok(());
    }
    for l in listeners {
        if matches!(l.kind, PortKind::Peers(_)) && !l.addr.ip().is_loopback() {
            return Err(DaemonError::Config {
                daemon: name,
                reason: format!(
                    "server port {} listens beyond loopback without a cluster secret: set \
                     ClusterSecret= (or ClusterSecretFile=) on every daemon of the cluster, or \
                     AllowUnauthenticatedPeers= with the addresses of C++ TeamTalk peers, or \
                     listen on 127.0.0.1",
                    l.addr
                ),
            });
        }
    }
    Ok(())
}

/// Builds the machine for each connection a listener accepts.
fn factory(
    kind: &PortKind,
    policy: &PeerPolicy,
    client_credit: Option<u32>,
    tls: Option<Arc<teamtalk_conn::tls::rustls::ServerConfig>>,
    ws: Option<WsConfig>,
) -> Box<dyn Fn(SocketAddr, std::time::Instant) -> Wire + Send> {
    let wrap = move |s: Session, now| match (&tls, &ws) {
        (Some(config), None) => Wire::TlsSession(Box::new(Tls::server(Arc::clone(config), s, now))),
        (None, Some(ws)) => Wire::WsSession(Box::new(Ws::server(ws.clone(), s, now))),
        (Some(config), Some(ws)) => Wire::TlsWsSession(Box::new(Tls::server(
            Arc::clone(config),
            Ws::server(ws.clone(), s, now),
            now,
        ))),
        (None, None) => Wire::Session(s),
    };
    match kind {
        PortKind::Clients(c) => {
            // One config for every session of the port.
            let config = Arc::new(c.clone());
            Box::new(move |peer, now| {
                let mut s = Session::new(Arc::clone(&config), peer, now);
                if client_credit.is_some() {
                    s.set_pdu_credit(now, client_credit);
                }
                wrap(s, now)
            })
        }
        PortKind::Peers(c) => {
            let mut config = c.clone();
            config.auth = policy.auth();
            let policy = policy.clone();
            Box::new(move |peer, now| {
                let config = config
                    .clone()
                    .with_unauthenticated_allowed(policy.lists(peer.ip()));
                wrap(Session::new(config, peer, now), now)
            })
        }
        PortKind::Http { config, .. } => {
            let config = config.clone();
            Box::new(move |peer, now| {
                Wire::Http(Box::new(HttpConn::new(config.clone(), peer, now)))
            })
        }
    }
}

/// Where an accepted connection came from.
#[derive(Debug, Clone, Copy)]
struct Port {
    id: PortId,
    /// The index of its side (closes are counted per side).
    side: u8,
    /// Index of its peer kind in [`Traffic::peers`].
    peer: usize,
    /// A server port ([`PortKind::Peers`]), subject to the peer policy.
    server: bool,
}

/// Whether the "listening" and "stopped" lines of each daemon go to
/// `debug!`: set by `teamtalk up`, whose banner and closing summary say the
/// same for all daemons at once.
static LIFECYCLE_AT_DEBUG: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Sends each daemon's "listening" and "stopped" lines to `debug!` (`true`)
/// or `info!` (`false`, the default), for a process that announces its
/// daemons itself.
pub fn log_lifecycle_at_debug(on: bool) {
    LIFECYCLE_AT_DEBUG.store(on, std::sync::atomic::Ordering::Relaxed);
}

fn lifecycle_at_debug() -> bool {
    LIFECYCLE_AT_DEBUG.load(std::sync::atomic::Ordering::Relaxed)
}

/// How long a [`LogGate`] of the runner stays shut.
const LOG_EVERY: Duration = Duration::from_secs(LOG_GATE_SECS);

/// One thing to do to an accepted connection, in order.
enum Op {
    Send(Pdu),
    Accept {
        user_id: u32,
        client_type: u32,
        reply: Pdu,
    },
    Refuse(Pdu),
    Close(Option<Pdu>),
    Respond(Response),
    /// More PDU credit, with the time the App's input happened.
    Grant(u32, std::time::Instant),
}

/// A server-port peer's address in a log line (`-` where none was kept).
struct Addr<'a>(Option<&'a SocketAddr>);

impl std::fmt::Display for Addr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// What the App asked for since the last flush, grouped by connection in
/// the order asked (order across connections does not matter; order on one
/// connection does, and is kept).
#[derive(Default)]
struct Outbox {
    conns: HashMap<Conn, Vec<Op>>,
    links: HashMap<ConnId, Vec<Pdu>>,
}

struct Runner<A: App> {
    app: A,
    /// Each reactor's handle; a [`Conn`]'s side number indexes this.
    nets: Vec<teamtalk_net::Handle<Wire>>,
    /// Each reactor's events, in the same order.
    events: Vec<teamtalk_net::EventRx<WireEvent>>,
    /// The reactors this runner shuts down when it stops (with the App
    /// on a reactor's thread, the [`Running`] handle owns them instead).
    owned: Vec<Reactor<Wire>>,
    traffic: Arc<Traffic>,
    ports: HashMap<(usize, SocketAddr), Port>,
    bound: Vec<(SocketAddr, PortId)>,
    /// Every accepted connection (refused peers are not), with the index
    /// of its peer kind in [`Traffic::peers`] and of its side. One per
    /// client of a msg_server, so nothing else: 20 bytes an entry.
    conns: HashMap<Conn, (u16, u8)>,
    /// Why a closing connection's machine closed, until it is finished
    /// and the App told ([`Input::Closed`]).
    closing: HashMap<Conn, CloseCause>,
    /// The remote address of each server-port peer, for the log lines
    /// about its authentication (clients' sessions know theirs).
    peer_addrs: HashMap<Conn, SocketAddr>,
    link_ids: HashMap<ConnId, (LinkId, usize)>,
    link_conns: Vec<ConnId>,
    /// The reactor holding the links, when there are any.
    link_reactor: Option<usize>,
    /// The index of the links' side (for their closes).
    links_side: usize,
    worker_txs: Vec<Sender<A::Job>>,
    worker_threads: Vec<std::thread::JoinHandle<()>>,
    done_rx: Receiver<A::Done>,
    outbox: Outbox,
    out: Out<A::Job>,
    policy: PeerPolicy,
    gates: Gates,
    /// The time of the input being handled.
    now: Now,
}

/// The rate limits of the runner's log lines that a flood could multiply.
#[derive(Debug, Default)]
struct Gates {
    refused: LogGate<std::time::Instant>,
    auth_failed: LogGate<std::time::Instant>,
    unauthenticated: LogGate<std::time::Instant>,
}

/// Which source a [`Select`] operation belongs to.
enum Source {
    Side(usize),
    Done,
    Control,
    Tick,
}

fn read_now() -> Now {
    Now::new(clock::now(), clock::wall())
}

impl<A: App> Runner<A> {
    fn run(mut self, control: &Receiver<Control<A>>) {
        let ticker = crossbeam_channel::tick(TICK);
        let events = self.events.clone();
        let done_rx = self.done_rx.clone();
        let mut sel = Select::new();
        let mut sources = Vec::new();
        for (i, rx) in events.iter().enumerate() {
            sel.recv(rx);
            sources.push(Source::Side(i));
        }
        sel.recv(&done_rx);
        sources.push(Source::Done);
        sel.recv(control);
        sources.push(Source::Control);
        sel.recv(&ticker);
        sources.push(Source::Tick);

        let now = read_now();
        for (addr, id) in self.bound.clone() {
            self.input(now, Input::Listening { port: id, addr });
        }
        let stop = loop {
            self.flush();
            let op = sel.select();
            let index = op.index();
            let now = read_now();
            match sources[index] {
                Source::Side(side) => match op.recv(&events[side]) {
                    Ok((id, ev)) => self.event(now, side, id, ev),
                    Err(_) => {
                        error!(daemon = self.app.name(), "a reactor stopped; stopping");
                        break None;
                    }
                },
                Source::Done => match op.recv(&done_rx) {
                    Ok(done) => self.input(now, Input::Done(done)),
                    Err(_) => {
                        // Every worker has exited (or there were none):
                        // nothing more will come this way.
                        sel.remove(index);
                    }
                },
                Source::Control => match op.recv(control) {
                    Ok(Control::Call(f)) => f(&mut self.app),
                    Ok(Control::Act(f)) => {
                        self.now = now;
                        f(&mut self.app, now, &mut self.out);
                        self.execute();
                    }
                    Ok(Control::Stop(ack)) => break Some(ack),
                    Err(_) => break None,
                },
                Source::Tick => {
                    let _ = op.recv(&ticker);
                    self.input(now, Input::Tick);
                }
            }
            // Take what else is already queued before flushing.
            for (side, rx) in events.iter().enumerate() {
                for _ in 0..EVENT_BATCH {
                    match rx.try_recv() {
                        Ok((id, ev)) => self.event(now, side, id, ev),
                        Err(_) => break,
                    }
                }
            }
            for _ in 0..EVENT_BATCH {
                match done_rx.try_recv() {
                    Ok(done) => self.input(now, Input::Done(done)),
                    Err(_) => break,
                }
            }
        };
        self.stop(stop);
    }

    /// Says goodbye, finishes the workers' jobs, flushes, shuts the
    /// reactors down.
    fn stop(mut self, ack: Option<Sender<()>>) {
        let name = self.app.name();
        self.begin_stop();
        loop {
            match self.done_rx.recv_timeout(STOP_PATIENCE) {
                Ok(done) => {
                    self.input(read_now(), Input::Done(done));
                    self.flush();
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    warn!(
                        daemon = name,
                        "workers still busy after 30 s; stopping anyway"
                    );
                    break;
                }
            }
        }
        self.finish_stop(ack);
    }

    /// The App says goodbye, its last actions go out, and the workers get
    /// no new jobs: they finish what they hold, then their channel of
    /// results closes.
    fn begin_stop(&mut self) {
        self.input(read_now(), Input::Stopping);
        self.flush();
        self.worker_txs.clear();
    }

    /// Joins the workers, shuts down the reactors this runner owns, says
    /// so, and answers whoever asked it to stop.
    fn finish_stop(&mut self, ack: Option<Sender<()>>) {
        let name = self.app.name();
        for t in self.worker_threads.drain(..) {
            if t.join().is_err() {
                error!(daemon = name, "a worker thread panicked");
            }
        }
        for r in self.owned.drain(..) {
            r.shutdown();
        }
        if lifecycle_at_debug() {
            debug!(daemon = name, "stopped");
        } else {
            info!(daemon = name, "stopped");
        }
        if let Some(ack) = ack {
            let _ = ack.send(());
        }
    }

    fn input(&mut self, now: Now, input: Input<'_, A::Done>) {
        self.now = now;
        self.app.handle(now, input, &mut self.out);
        self.execute();
    }

    fn event(&mut self, now: Now, reactor: usize, id: ConnId, ev: NetEvent<WireEvent>) {
        // Ids are per reactor: only the links' reactor's ids name links.
        if Some(reactor) == self.link_reactor
            && let Some(&(link, peer)) = self.link_ids.get(&id)
        {
            self.link_event(now, link, peer, ev);
            return;
        }
        let conn = Conn::new(u8::try_from(reactor).unwrap_or(u8::MAX), id);
        match ev {
            NetEvent::Accepted { peer, local } => {
                let Some(port) = self.ports.get(&(reactor, local)).copied() else {
                    warn!(%conn, %local, "accepted on an unknown listener; closing");
                    self.outbox
                        .conns
                        .entry(conn)
                        .or_default()
                        .push(Op::Close(None));
                    return;
                };
                if port.server && self.policy.refuses(peer.ip()) {
                    self.traffic.peer_refused();
                    if let Some(suppressed) =
                        self.gates.refused.pass(now.mono, now.mono + LOG_EVERY)
                    {
                        warn!(%peer, suppressed, "server-port peer refused: no cluster secret \
                            and not listed in AllowUnauthenticatedPeers");
                    }
                    self.outbox
                        .conns
                        .entry(conn)
                        .or_default()
                        .push(Op::Close(None));
                    return;
                }
                self.conns.insert(
                    conn,
                    (u16::try_from(port.peer).unwrap_or(u16::MAX), port.side),
                );
                if port.server {
                    self.peer_addrs.insert(conn, peer);
                }
                self.input(
                    now,
                    Input::Opened {
                        conn,
                        port: port.id,
                        peer,
                    },
                );
            }
            NetEvent::Machine(WireEvent::Session(ev)) => {
                let Some(&(peer, side)) = self.conns.get(&conn) else {
                    return;
                };
                let side = usize::from(side);
                match ev {
                    SessionEvent::LoginRequest(pdu) => {
                        self.traffic.pdu_in(usize::from(peer), pdu.key());
                        self.input(now, Input::LoginRequest { conn, pdu: &pdu });
                    }
                    SessionEvent::Pdu(pdu) => {
                        self.traffic.pdu_in(usize::from(peer), pdu.key());
                        self.input(now, Input::Pdu { conn, pdu: &pdu });
                    }
                    SessionEvent::Closed(reason) => {
                        debug!(%conn, %reason, "connection closing");
                        self.closing.insert(conn, CloseCause::Pdu(reason));
                        self.traffic.closed(side, &reason);
                        if matches!(
                            reason,
                            CloseReason::AuthFailed(_) | CloseReason::Unauthenticated(_)
                        ) && self.policy.has_secret()
                            && let Some(suppressed) =
                                self.gates.auth_failed.pass(now.mono, now.mono + LOG_EVERY)
                        {
                            warn!(peer = %Addr(self.peer_addrs.get(&conn)), %reason, suppressed,
                                "server-port peer failed to authenticate; closed");
                        }
                    }
                    SessionEvent::Admitted(how) => {
                        let authenticated = how == PeerAuth::Authenticated;
                        self.traffic.peer_admitted(authenticated);
                        if !authenticated
                            && let Some(suppressed) = self
                                .gates
                                .unauthenticated
                                .pass(now.mono, now.mono + LOG_EVERY)
                        {
                            warn!(peer = %Addr(self.peer_addrs.get(&conn)), suppressed,
                                "peer admitted WITHOUT authentication (AllowUnauthenticatedPeers)");
                        }
                    }
                    _ => {}
                }
            }
            NetEvent::Machine(WireEvent::Http(ev)) => {
                let Some(&(_, side)) = self.conns.get(&conn) else {
                    return;
                };
                let side = usize::from(side);
                match ev {
                    HttpEvent::Request(request) => {
                        self.input(
                            now,
                            Input::Http {
                                conn,
                                request: &request,
                            },
                        );
                    }
                    HttpEvent::Closed(reason) => {
                        debug!(%conn, reason = reason.label(), "HTTP connection closing");
                        self.closing.insert(conn, CloseCause::Http(reason));
                        self.traffic.http_closed(side, reason.label());
                    }
                    _ => {}
                }
            }
            NetEvent::Finished => {
                let reason = self.closing.remove(&conn);
                self.peer_addrs.remove(&conn);
                if self.conns.remove(&conn).is_some() {
                    let reason = reason.unwrap_or(CloseCause::Pdu(CloseReason::Local));
                    self.input(now, Input::Closed { conn, reason });
                }
            }
            NetEvent::Machine(WireEvent::Link(_)) | _ => {}
        }
    }

    fn link_event(&mut self, now: Now, link: LinkId, peer: usize, ev: NetEvent<WireEvent>) {
        let NetEvent::Machine(WireEvent::Link(ev)) = ev else {
            return;
        };
        let side = self.links_side;
        match ev {
            LinkEvent::Up => self.input(now, Input::LinkUp(link)),
            LinkEvent::Down(reason) => {
                self.traffic.closed(side, &reason);
                self.input(now, Input::LinkDown(link, reason));
            }
            LinkEvent::Unreachable(reason) => {
                // The link logs the failure with its next retry (rate-limited).
                self.traffic.closed(side, &reason);
                self.input(now, Input::LinkUnreachable(link, reason));
            }
            LinkEvent::Pdu(pdu) => {
                self.traffic.pdu_in(peer, pdu.key());
                self.input(now, Input::LinkPdu(link, &pdu));
            }
            _ => {}
        }
    }

    /// Moves the App's actions into the outbox (jobs go to their worker at
    /// once).
    fn execute(&mut self) {
        for action in self.out.take() {
            match action {
                Action::Send(conn, pdu) => self.op(conn, Op::Send(pdu)),
                Action::Accept {
                    conn,
                    user_id,
                    client_type,
                    reply,
                } => self.op(
                    conn,
                    Op::Accept {
                        user_id,
                        client_type,
                        reply,
                    },
                ),
                Action::Refuse { conn, reply } => self.op(conn, Op::Refuse(reply)),
                Action::Close { conn, notice } => self.op(conn, Op::Close(notice)),
                Action::Link(link, pdu) => {
                    let Some(&id) = self.link_conns.get(usize::from(link.0)) else {
                        warn!(?link, "PDU for a link the plan did not declare");
                        continue;
                    };
                    if let Some(&(_, peer)) = self.link_ids.get(&id) {
                        self.traffic.pdu_out(peer, pdu.key());
                    }
                    self.outbox.links.entry(id).or_default().push(pdu);
                }
                Action::Respond(conn, response) => self.op(conn, Op::Respond(response)),
                Action::Grant(conn, n) => self.op(conn, Op::Grant(n, self.now.mono)),
                Action::Job { worker, job } => {
                    let Some(tx) = self.worker_txs.get(worker) else {
                        error!(worker, "job for a worker the plan did not declare; dropped");
                        continue;
                    };
                    // A full queue blocks here: the App stops reading,
                    // which pushes back on whoever sends the work.
                    let sent = match tx.try_send(job) {
                        Ok(()) => Ok(()),
                        Err(crossbeam_channel::TrySendError::Full(job)) => {
                            self.traffic.worker_waited();
                            tx.send(job).map_err(drop)
                        }
                        Err(crossbeam_channel::TrySendError::Disconnected(_)) => Err(()),
                    };
                    if sent.is_err() {
                        error!(worker, "worker gone; job dropped");
                    }
                }
            }
        }
    }

    fn op(&mut self, conn: Conn, op: Op) {
        if let Some(&(peer, _)) = self.conns.get(&conn) {
            match &op {
                Op::Send(p) | Op::Refuse(p) | Op::Close(Some(p)) => {
                    self.traffic.pdu_out(usize::from(peer), p.key());
                }
                Op::Accept { reply, .. } => self.traffic.pdu_out(usize::from(peer), reply.key()),
                Op::Close(None) | Op::Respond(_) | Op::Grant(..) => {}
            }
        }
        self.outbox.conns.entry(conn).or_default().push(op);
    }

    /// Hands every connection its queued operations in one reactor command.
    fn flush(&mut self) {
        // Links first: a login's presence update should be on its way to
        // route_server before the client hears it is logged in.
        if let Some(reactor) = self.link_reactor {
            for (id, pdus) in self.outbox.links.drain() {
                let sent = self.nets[reactor].exec(id, move |w| {
                    let Some(l) = w.link() else { return };
                    for pdu in pdus {
                        if let Err(e) = l.send(&pdu) {
                            debug!(error = %e, key = %pdu.key(), "link send failed");
                        }
                    }
                });
                if sent.is_err() {
                    debug!(link = %id, "link reactor stopped");
                }
            }
        }
        for (conn, ops) in self.outbox.conns.drain() {
            let Some(reactor) = self.nets.get(usize::from(conn.side())) else {
                continue;
            };
            let sent = reactor.exec(conn.id(), move |w| {
                if let Wire::Http(h) = w {
                    for op in ops {
                        apply_http(h, op);
                    }
                } else if let Some(s) = w.session() {
                    for op in ops {
                        apply(s, op);
                    }
                }
            });
            if sent.is_err() {
                debug!(%conn, "reactor stopped");
            }
        }
    }
}

/// Carries out one operation on a session. Failures (the connection is
/// closing, the PDU too large) are logged by the session's own close event.
fn apply(s: &mut Session, op: Op) {
    match op {
        Op::Send(pdu) => {
            if let Err(e) = s.send(&pdu) {
                debug!(error = %e, key = %pdu.key(), "send failed");
            }
        }
        Op::Accept {
            user_id,
            client_type,
            reply,
        } => {
            if s.accept_login(user_id, client_type).is_ok() {
                let _ = s.send(&reply);
            }
        }
        Op::Refuse(reply) => {
            let _ = s.reject_login(&reply);
        }
        Op::Close(notice) => {
            if let Some(n) = notice {
                let _ = s.send(&n);
            }
            s.close();
        }
        Op::Respond(_) => debug!("HTTP response for a TeamTalk session ignored"),
        Op::Grant(n, now) => s.grant_pdus(now, n),
    }
}

/// Carries out one operation on an HTTP connection. A response the
/// machine refuses (over its size cap) becomes a 500, so the client is
/// never left waiting.
fn apply_http(h: &mut HttpConn, op: Op) {
    match op {
        Op::Respond(response) => {
            if let Err(e) = h.respond(response) {
                warn!(error = %e, "response refused by the HTTP connection; answering 500");
                let _ = h.respond(crate::http::internal_error());
            }
        }
        Op::Close(_) => h.close(),
        Op::Send(_) | Op::Accept { .. } | Op::Refuse(_) | Op::Grant(..) => {
            debug!("PDU operation on an HTTP connection ignored");
        }
    }
}

/// A worker thread: takes what is queued (up to `batch_limit`) as one
/// batch, runs it, hands the results back; ends when the App's side of
/// the queue is gone and the queue is empty.
fn run_worker<W: Worker>(
    mut worker: W,
    jobs: &Receiver<W::Job>,
    done: Sender<W::Done>,
    batch_limit: usize,
    wake: Option<teamtalk_net::Handle<Wire>>,
) {
    run_batches(&mut worker, jobs, &done, batch_limit, wake.as_ref());
    // The App's pump notices the results channel closing when it next
    // runs: the sender goes first, then the wake-up.
    drop(done);
    if let Some(w) = wake {
        let _ = w.wake();
    }
}

fn run_batches<W: Worker>(
    worker: &mut W,
    jobs: &Receiver<W::Job>,
    done: &Sender<W::Done>,
    batch_limit: usize,
    wake: Option<&teamtalk_net::Handle<Wire>>,
) {
    let mut results = Vec::new();
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < batch_limit {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        worker.run(batch, &mut results);
        let handed = !results.is_empty();
        for r in results.drain(..) {
            if done.send(r).is_err() {
                return;
            }
        }
        if handed && let Some(w) = wake {
            let _ = w.wake();
        }
    }
}

impl Now {
    /// The real clock, read once (what the runner hands in).
    #[must_use]
    pub fn read() -> Self {
        read_now()
    }
}

/// The App on its reactor's thread: what [`Runner::run`]'s select loop
/// does, one round per call of the shard (control questions, the tick,
/// the reactor's events, the workers' results, then one flush), without a
/// thread of its own. The shard calls it after every round of socket I/O,
/// so an answer to a client leaves in the same round its request came in,
/// with no thread hand-off on the way.
struct AppPump<A: App> {
    /// `None` once stopped.
    runner: Option<Runner<A>>,
    control: Receiver<Control<A>>,
    shared: Arc<Shared>,
    /// The App has had its [`Input::Listening`]s.
    started: bool,
    next_tick: std::time::Instant,
    /// Stopping: waiting for the workers to finish, then answering the
    /// stop (if someone asked) by this deadline at the latest.
    stopping: Option<(Option<Sender<()>>, std::time::Instant)>,
}

impl<A: App> Drop for AppPump<A> {
    fn drop(&mut self) {
        // However the pump ends (stopped, the reactor shut down or a
        // panic), the daemon reads as stopped.
        self.shared.mark_stopped();
    }
}

impl<A: App> Pump for AppPump<A> {
    fn pump(&mut self, mono: std::time::Instant) -> Pumped {
        let Some(runner) = self.runner.as_mut() else {
            return Pumped::Done;
        };
        let now = Now::new(mono, clock::wall());
        if !self.started {
            self.started = true;
            self.next_tick = mono + TICK;
            for (addr, id) in runner.bound.clone() {
                runner.input(now, Input::Listening { port: id, addr });
            }
        }
        let mut more = false;
        let mut results_closed = false;
        if self.stopping.is_none() {
            let mut stop = None;
            for _ in 0..EVENT_BATCH {
                match self.control.try_recv() {
                    Ok(Control::Call(f)) => f(&mut runner.app),
                    Ok(Control::Act(f)) => {
                        runner.now = now;
                        f(&mut runner.app, now, &mut runner.out);
                        runner.execute();
                    }
                    Ok(Control::Stop(ack)) => {
                        stop = Some(Some(ack));
                        break;
                    }
                    Err(TryRecvError::Empty) => break,
                    // Every handle is gone: nobody can ask any more.
                    Err(TryRecvError::Disconnected) => {
                        stop = Some(None);
                        break;
                    }
                }
            }
            if let Some(ack) = stop {
                runner.begin_stop();
                self.stopping = Some((ack, mono + STOP_PATIENCE));
            }
        }
        if self.stopping.is_none() {
            if mono >= self.next_tick {
                self.next_tick = mono + TICK;
                runner.input(now, Input::Tick);
            }
            for reactor in 0..runner.events.len() {
                let mut taken = 0;
                while taken < EVENT_BATCH {
                    match runner.events[reactor].try_recv() {
                        Ok((id, ev)) => runner.event(now, reactor, id, ev),
                        Err(_) => break,
                    }
                    taken += 1;
                }
                more |= taken == EVENT_BATCH;
            }
        }
        let mut taken = 0;
        while taken < EVENT_BATCH {
            match runner.done_rx.try_recv() {
                Ok(done) => runner.input(now, Input::Done(done)),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    results_closed = true;
                    break;
                }
            }
            taken += 1;
        }
        more |= taken == EVENT_BATCH;
        runner.flush();
        if let Some((_, give_up_at)) = &self.stopping {
            let give_up_at = *give_up_at;
            if results_closed || mono >= give_up_at {
                if !results_closed {
                    warn!(
                        daemon = runner.app.name(),
                        "workers still busy after 30 s; stopping anyway"
                    );
                }
                let ack = self.stopping.take().and_then(|(ack, _)| ack);
                runner.finish_stop(ack);
                self.runner = None;
                return Pumped::Done;
            }
            return if more {
                Pumped::More
            } else {
                Pumped::Idle(Some(give_up_at))
            };
        }
        if more {
            Pumped::More
        } else {
            Pumped::Idle(Some(self.next_tick))
        }
    }
}
