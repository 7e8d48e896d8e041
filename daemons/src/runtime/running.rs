//! [`Running`]: the one handle every started daemon returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, bounded};

use super::admin::{AdminApp, AdminSettings};
use super::contract::{App, Now, Out};
use super::error::DaemonError;
use super::traffic::Traffic;
use super::wire::Wire;
use crate::metrics::{ClearOnDrop, Labelled, MetricsSource, Scrape};
use teamtalk_net::Reactor;

/// How long a question to the App's thread may wait for its answer (a
/// scrape, a test's inspection) before the daemon counts as wedged.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A request to the App's thread.
pub(crate) enum Control<A: App> {
    /// Run this with the App, between two inputs.
    Call(Box<dyn FnOnce(&mut A) + Send>),
    /// Run this with the App as if it were an input: it may push actions,
    /// which the runner carries out like those of any input.
    Act(Box<ActFn<A>>),
    /// Stop; answer on the channel when stopped.
    Stop(Sender<()>),
}

/// A closure run by [`Control::Act`].
pub(crate) type ActFn<A> = dyn FnOnce(&mut A, Now, &mut Out<<A as App>::Job>) + Send;

/// The sending side of the App's control channel: queues a request and,
/// when the App runs on a reactor's thread, wakes that reactor so its
/// pump sees the request at once.
pub(crate) struct ControlTx<A: App> {
    tx: Sender<Control<A>>,
    wake: Option<teamtalk_net::Handle<Wire>>,
}

impl<A: App> Clone for ControlTx<A> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            wake: self.wake.clone(),
        }
    }
}

impl<A: App> ControlTx<A> {
    pub(crate) fn new(tx: Sender<Control<A>>, wake: Option<teamtalk_net::Handle<Wire>>) -> Self {
        Self { tx, wake }
    }

    /// Queues `control`; an error when the App is gone.
    fn send(&self, control: Control<A>) -> Result<(), DaemonGone> {
        self.tx.send(control).map_err(|_| DaemonGone)?;
        if let Some(reactor) = &self.wake {
            reactor.wake().map_err(|_| DaemonGone)?;
        }
        Ok(())
    }
}

/// The App's side of the control channel is gone.
#[derive(Debug)]
struct DaemonGone;

/// How the App runs.
pub(crate) enum Driver {
    /// On a thread of its own, which owns the reactors.
    Thread(JoinHandle<()>),
    /// As the pump of its one reactor, owned here and shut down once the
    /// App has stopped.
    Inline(Vec<Reactor<Wire>>),
}

/// What a daemon's handle and its metrics source share.
pub(crate) struct Shared {
    pub(crate) name: &'static str,
    pub(crate) traffic: Arc<Traffic>,
    alive: AtomicBool,
}

impl Shared {
    pub(crate) fn new(name: &'static str, traffic: Arc<Traffic>) -> Self {
        Self {
            name,
            traffic,
            alive: AtomicBool::new(true),
        }
    }

    /// Held by the App's thread for its whole life: the daemon reads as
    /// stopped however the thread ends, panics included.
    pub(crate) fn alive_guard(&self) -> ClearOnDrop<'_> {
        ClearOnDrop(&self.alive)
    }

    /// The App has stopped (the pump of an App on its reactor's thread
    /// says so when dropped).
    pub(crate) fn mark_stopped(&self) {
        self.alive.store(false, Ordering::Relaxed);
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }
}

/// A running daemon: its bound addresses, questions to its App, its
/// metrics, and stopping. Dropping it stops the daemon.
pub struct Running<A: App> {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    /// Each listener's peer label, in the same order as `addrs`.
    peers: Vec<&'static str>,
    control: ControlTx<A>,
    driver: Option<Driver>,
    admin: Option<Box<Running<AdminApp>>>,
}

impl<A: App> std::fmt::Debug for Running<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("daemon", &self.shared.name)
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl<A: App> Running<A> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        listeners: Vec<(SocketAddr, &'static str)>,
        control: ControlTx<A>,
        driver: Driver,
    ) -> Self {
        Self {
            shared,
            addrs: listeners.iter().map(|(a, _)| *a).collect(),
            peers: listeners.iter().map(|(_, p)| *p).collect(),
            control,
            driver: Some(driver),
            admin: None,
        }
    }

    /// Serves this daemon's `/metrics` and `/healthz` as `settings` say,
    /// labelled with its name and first address.
    pub(crate) fn serve_admin(&mut self, settings: &AdminSettings) -> Result<(), DaemonError> {
        self.serve_admin_api(settings, None)
    }

    /// Serves this daemon's `/metrics` and `/healthz` and, with `api`,
    /// the admin API and console (db_proxy_server, which holds the store).
    pub(crate) fn serve_admin_api(
        &mut self,
        settings: &AdminSettings,
        api: Option<Arc<crate::admin_api::AdminApi>>,
    ) -> Result<(), DaemonError> {
        let instance = self
            .addrs
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        let source: Arc<dyn MetricsSource> =
            Arc::new(Labelled::new(self.shared.name, instance, self.metrics()));
        let admin = super::admin::serve_admin_api(settings, source, api)?;
        tracing::info!(
            daemon = self.shared.name,
            "admin endpoint: http://{0}/metrics http://{0}/healthz",
            admin.addr()
        );
        self.admin = Some(Box::new(admin));
        Ok(())
    }

    /// The admin endpoint's address, when the plan asked for one.
    #[must_use]
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr())
    }

    /// The daemon's name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.shared.name
    }

    /// Every listener's bound address, in the plan's order (the real port
    /// where port 0 was asked).
    #[must_use]
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The bound addresses of the listeners declared with this peer label
    /// (`"client"`, `"msg_server"`, `"http"`, …), in the plan's order.
    #[must_use]
    pub fn addrs_of(&self, peer: &str) -> Vec<SocketAddr> {
        self.addrs
            .iter()
            .zip(&self.peers)
            .filter(|(_, p)| **p == peer)
            .map(|(a, _)| *a)
            .collect()
    }

    /// The first listener's address (most daemons have one main port).
    ///
    /// # Panics
    /// When the plan declared no listener; every daemon of this crate
    /// declares at least one.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Runs `f` with the App on its thread, between two inputs, and
    /// returns its result: how tests and tools read an App's state.
    ///
    /// # Errors
    /// [`DaemonError::Stopped`] when the daemon is not running or does
    /// not answer within [`CALL_TIMEOUT`].
    pub fn inspect<R: Send + 'static>(
        &self,
        f: impl FnOnce(&A) -> R + Send + 'static,
    ) -> Result<R, DaemonError> {
        call(&self.control, self.shared.name, move |app| f(app))
    }

    /// Whether the App's thread is running.
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.shared.is_alive()
    }

    /// A handle that can be cloned and sent to other threads to act on
    /// the App (the admin API kicks sessions and announces group changes
    /// through it); it does not keep the daemon running.
    #[must_use]
    pub fn controller(&self) -> Controller<A> {
        Controller {
            name: self.shared.name,
            control: self.control.clone(),
        }
    }

    /// The daemon's metrics and health, for an admin endpoint: transport
    /// counters read directly, the App's own asked of its thread.
    #[must_use]
    pub fn metrics(&self) -> Arc<dyn MetricsSource> {
        Arc::new(DaemonMetrics {
            shared: Arc::clone(&self.shared),
            control: self.control.clone(),
        })
    }

    /// Stops the daemon: the App says goodbye ([`Input::Stopping`]),
    /// workers finish their jobs, replies are flushed, threads end.
    ///
    /// [`Input::Stopping`]: super::Input::Stopping
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        let Some(driver) = self.driver.take() else {
            return;
        };
        let (ack_tx, ack_rx) = bounded(1);
        // No answer means the App is gone already (its thread or reactor
        // ended); the reactors are shut down all the same.
        if self.control.send(Control::Stop(ack_tx)).is_ok() {
            let _ = ack_rx.recv();
        }
        match driver {
            Driver::Thread(thread) => {
                if thread.join().is_err() {
                    tracing::error!(daemon = self.shared.name, "the daemon's thread panicked");
                }
            }
            Driver::Inline(reactors) => {
                for r in reactors {
                    r.shutdown();
                }
            }
        }
    }
}

impl<A: App> Drop for Running<A> {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Acts on a running App from another thread ([`Running::controller`]).
pub struct Controller<A: App> {
    name: &'static str,
    control: ControlTx<A>,
}

impl<A: App> Clone for Controller<A> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            control: self.control.clone(),
        }
    }
}

impl<A: App> std::fmt::Debug for Controller<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("daemon", &self.name)
            .finish_non_exhaustive()
    }
}

impl<A: App> Controller<A> {
    /// As [`Running::inspect`].
    ///
    /// # Errors
    /// [`DaemonError::Stopped`] when the daemon is not running or does
    /// not answer within [`CALL_TIMEOUT`].
    pub fn inspect<R: Send + 'static>(
        &self,
        f: impl FnOnce(&A) -> R + Send + 'static,
    ) -> Result<R, DaemonError> {
        call(&self.control, self.name, move |app| f(app))
    }

    /// Runs `f` with the App on its thread, between two inputs, as if it
    /// were an input: the actions it pushes are carried out like any
    /// input's (sends, closes, links), and its result is returned.
    ///
    /// # Errors
    /// [`DaemonError::Stopped`] when the daemon is not running or does
    /// not answer within [`CALL_TIMEOUT`].
    pub fn act<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut A, Now, &mut Out<A::Job>) -> R + Send + 'static,
    ) -> Result<R, DaemonError> {
        let (tx, rx) = bounded(1);
        self.control
            .send(Control::Act(Box::new(move |app, now, out| {
                let _ = tx.send(f(app, now, out));
            })))
            .map_err(|_| DaemonError::Stopped(self.name))?;
        rx.recv_timeout(CALL_TIMEOUT)
            .map_err(|_| DaemonError::Stopped(self.name))
    }
}

/// Any running daemon, whatever its App: what tools that start daemons
/// by name (the daemon binaries, `teamtalk up`) hold.
pub trait RunningDaemon: Send {
    /// The daemon's name.
    fn name(&self) -> &'static str;
    /// Every listener's bound address, in the plan's order.
    fn addrs(&self) -> &[SocketAddr];
    /// The admin endpoint's address, when there is one.
    fn admin_addr(&self) -> Option<SocketAddr>;
    /// Metrics and health, for an admin endpoint.
    fn metrics(&self) -> Arc<dyn MetricsSource>;
    /// Whether the App's thread runs.
    fn is_running(&self) -> bool;
    /// Stops the daemon (as [`Running::stop`]).
    fn stop(self: Box<Self>);
}

impl<A: App> RunningDaemon for Running<A> {
    fn name(&self) -> &'static str {
        self.shared.name
    }

    fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    fn admin_addr(&self) -> Option<SocketAddr> {
        Self::admin_addr(self)
    }

    fn metrics(&self) -> Arc<dyn MetricsSource> {
        Self::metrics(self)
    }

    fn is_running(&self) -> bool {
        self.shared.is_alive()
    }

    fn stop(self: Box<Self>) {
        Self::stop(*self);
    }
}

fn call<A: App, R: Send + 'static>(
    control: &ControlTx<A>,
    name: &'static str,
    f: impl FnOnce(&mut A) -> R + Send + 'static,
) -> Result<R, DaemonError> {
    let (tx, rx) = bounded(1);
    control
        .send(Control::Call(Box::new(move |app| {
            let _ = tx.send(f(app));
        })))
        .map_err(|_| DaemonError::Stopped(name))?;
    rx.recv_timeout(CALL_TIMEOUT)
        .map_err(|_| DaemonError::Stopped(name))
}

/// A daemon as an admin endpoint sees it.
struct DaemonMetrics<A: App> {
    shared: Arc<Shared>,
    control: ControlTx<A>,
}

impl<A: App> MetricsSource for DaemonMetrics<A> {
    fn collect(&self, out: &mut Scrape) {
        self.shared.traffic.collect(out);
        let mut child = Scrape::child(out);
        if let Ok(app) = call(&self.control, self.shared.name, move |app: &mut A| {
            app.collect(&mut child);
            child
        }) {
            out.merge(app);
        }
    }

    fn health(&self, problems: &mut Vec<String>) {
        if !self.shared.is_alive() {
            problems.push("not running".to_owned());
            return;
        }
        match call(&self.control, self.shared.name, |app: &mut A| {
            let mut p = Vec::new();
            app.health(&mut p);
            p
        }) {
            Ok(p) => problems.extend(p),
            Err(_) => problems.push(format!(
                "application thread did not answer within {} s",
                CALL_TIMEOUT.as_secs()
            )),
        }
    }
}
