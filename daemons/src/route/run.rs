//! The route_server process: a reactor for the msg_server connections and
//! one thread running [`RouteApp`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use teamtalk_conn::{Session, SessionConfig, SessionEvent};
use teamtalk_net::{ConnId, EventRx, Handle, NetError, NetEvent, Reactor};
use teamtalk_proto::Pdu;
use tracing::{debug, info, info_span, warn};

use super::RouteConfig;
use super::app::{Action, RouteApp, RouteCounters};
use super::metrics::RouteMetrics;
use crate::metrics::{AdminServer, ClearOnDrop, Labelled, MetricsSource};

/// Why a route_server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The reactor's threads or pollers could not be created.
    #[error("cannot start the network reactor: {0}")]
    Reactor(#[source] io::Error),
    /// A listen address could not be bound (in use, not local, ...).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address from the configuration.
        addr: SocketAddr,
        /// What the reactor reported.
        #[source]
        source: NetError,
    },
    /// The application thread could not be started.
    #[error("cannot start the route_server thread: {0}")]
    Thread(#[source] io::Error),
    /// The admin endpoint could not be bound.
    #[error("cannot start the admin endpoint on {addr}: {source}")]
    Admin {
        /// The configured address.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
}

/// A snapshot of a running route_server, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteStats {
    /// Connected msg_servers.
    pub servers: usize,
    /// Users with at least one session on some msg_server.
    pub users: usize,
    /// Traffic counters.
    pub counters: RouteCounters,
}

/// A route_server running in this process. Dropping it stops it like
/// [`RunningRoute::shutdown`].
#[derive(Debug)]
pub struct RunningRoute {
    addrs: Vec<SocketAddr>,
    reactor: Option<Reactor<Session>>,
    app: Option<JoinHandle<()>>,
    metrics: Arc<RouteMetrics>,
    admin: Option<AdminServer>,
}

/// Starts a route_server: binds every listen address, then serves
/// msg_servers until [`RunningRoute::shutdown`].
///
/// # Errors
/// [`Error`] when the reactor, a listener or the thread cannot be set up;
/// nothing keeps running then.
pub fn spawn(config: RouteConfig) -> Result<RunningRoute, Error> {
    let reactor: Reactor<Session> = Reactor::new(config.reactor.clone()).map_err(Error::Reactor)?;
    let mut addrs = Vec::new();
    for addr in config.listen_addrs() {
        let bound = reactor
            .listen(addr, |peer, now| {
                Session::new(SessionConfig::server_peer(), peer, now)
            })
            .map_err(|source| Error::Listen { addr, source })?;
        addrs.push(bound);
    }
    info!(?addrs, "route_server listening for msg_servers");
    let metrics = Arc::new(RouteMetrics::new(reactor.handle()));
    let admin = match config.admin {
        Some(addr) => {
            let instance = addrs.first().map(ToString::to_string).unwrap_or_default();
            let source: Arc<dyn MetricsSource> = Arc::new(Labelled::new(
                "route_server",
                instance,
                Arc::clone(&metrics) as Arc<dyn MetricsSource>,
            ));
            Some(AdminServer::start(addr, source).map_err(|source| Error::Admin { addr, source })?)
        }
        None => None,
    };
    let app = std::thread::Builder::new()
        .name("route_server".into())
        .spawn({
            let events = reactor.events();
            let handle = reactor.handle();
            let metrics = Arc::clone(&metrics);
            move || run_app(&events, &handle, &metrics)
        })
        .map_err(Error::Thread)?;
    Ok(RunningRoute {
        addrs,
        reactor: Some(reactor),
        app: Some(app),
        metrics,
        admin,
    })
}

impl RunningRoute {
    /// The first bound address (the actual port when 0 was configured).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every bound address, one per `ListenIP` entry.
    #[must_use]
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Connected msg_servers, users and counters right now.
    #[must_use]
    pub fn stats(&self) -> RouteStats {
        self.metrics.stats()
    }

    /// Every counter, for an admin endpoint (`teamtalk up` serves all
    /// daemons on one).
    #[must_use]
    pub fn metrics(&self) -> Arc<RouteMetrics> {
        Arc::clone(&self.metrics)
    }

    /// The admin endpoint's address, when [`RouteConfig::admin`] asked for
    /// one.
    #[must_use]
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::addr)
    }

    /// Closes every connection (flushing what was queued, within the
    /// reactor's grace period) and joins the threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(mut admin) = self.admin.take() {
            admin.stop();
        }
        if let Some(reactor) = self.reactor.take() {
            reactor.shutdown();
        }
        // The event stream ends with the reactor, which ends the thread.
        if let Some(app) = self.app.take()
            && app.join().is_err()
        {
            tracing::error!("the route_server thread panicked");
        }
        info!(addrs = ?self.addrs, "route_server stopped");
    }
}

impl Drop for RunningRoute {
    fn drop(&mut self) {
        if self.reactor.is_some() {
            self.stop();
        }
    }
}

fn run_app(events: &EventRx<SessionEvent>, handle: &Handle<Session>, metrics: &RouteMetrics) {
    let _running = ClearOnDrop(&metrics.running);
    let span = info_span!("route_server");
    let _entered = span.enter();
    let mut app: RouteApp<ConnId> = RouteApp::new();
    while let Ok((conn, event)) = events.recv() {
        let actions = match event {
            NetEvent::Accepted { peer, .. } => {
                info!(%conn, %peer, "msg_server connected");
                app.server_connected(conn);
                Vec::new()
            }
            NetEvent::Machine(SessionEvent::Pdu(pdu) | SessionEvent::LoginRequest(pdu)) => {
                metrics.pdus_in.inc(pdu.key());
                app.handle_pdu(conn, &pdu)
            }
            NetEvent::Machine(SessionEvent::Closed(reason)) => {
                debug!(%conn, %reason, "msg_server connection closing");
                metrics.closes.inc(&reason);
                Vec::new()
            }
            NetEvent::Finished => {
                let actions = app.server_disconnected(conn);
                info!(%conn, servers = app.server_count(), "msg_server disconnected");
                actions
            }
            other => {
                debug!(%conn, ?other, "reactor event ignored");
                Vec::new()
            }
        };
        for Action::Send(to, pdu) in actions {
            metrics.pdus_out.inc(pdu.key());
            send(handle, to, pdu);
        }
        *metrics
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = RouteStats {
            servers: app.server_count(),
            users: app.user_count(),
            counters: app.counters(),
        };
    }
    debug!("reactor gone; route_server thread ends");
}

/// Queues `pdu` on connection `to`; a connection that is already gone is
/// not an error (its `Finished` event is on its way).
fn send(handle: &Handle<Session>, to: ConnId, pdu: Pdu) {
    let queued = handle.exec(to, move |s: &mut Session| {
        if let Err(e) = s.send(&pdu) {
            warn!(conn = %to, error = %e, "PDU to msg_server not sent");
        }
    });
    if let Err(e) = queued {
        debug!(conn = %to, error = %e, "PDU to msg_server not queued");
    }
}
