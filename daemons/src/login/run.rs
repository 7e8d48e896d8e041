//! The login_server process: one reactor for the msg_server and legacy
//! client ports, one thread running [`LoginApp`], and the HTTP threads.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use teamtalk_conn::{Heartbeat, MsgServerLoad, Session, SessionConfig, SessionEvent};
use teamtalk_net::{ConnId, EventRx, Handle, NetError, NetEvent, Reactor};
use tracing::{debug, info, info_span, warn};

use super::LoginConfig;
use super::app::{Action, Directory, LoginApp, LoginCounters, PeerKind};
use super::http::{HttpOptions, HttpServer};
use super::metrics::LoginMetrics;
use crate::metrics::{AdminServer, ClearOnDrop, Labelled, MetricsSource};

/// Largest PDU accepted on the legacy client port: the query is 16 bytes.
const LEGACY_MAX_FRAME: u32 = 4096;

/// Why a login_server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The reactor's threads or pollers could not be created.
    #[error("cannot start the network reactor: {0}")]
    Reactor(#[source] io::Error),
    /// A PDU port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address from the configuration.
        addr: SocketAddr,
        /// What the reactor reported.
        #[source]
        source: NetError,
    },
    /// The HTTP port could not be bound, or its thread not started.
    #[error("cannot start the HTTP side on {addrs:?}: {source}")]
    Http {
        /// The configured HTTP addresses.
        addrs: Vec<SocketAddr>,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
    /// The application thread could not be started.
    #[error("cannot start the login_server thread: {0}")]
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

/// A login_server running in this process. Dropping it stops it like
/// [`RunningLogin::shutdown`].
#[derive(Debug)]
pub struct RunningLogin {
    msg_server_addrs: Vec<SocketAddr>,
    client_addrs: Vec<SocketAddr>,
    http: Option<HttpServer>,
    reactor: Option<Reactor<Session>>,
    app: Option<JoinHandle<()>>,
    dir: Directory<ConnId>,
    metrics: Arc<LoginMetrics>,
    admin: Option<AdminServer>,
}

/// Starts a login_server: binds the msg_server, legacy client and HTTP
/// ports, then serves until [`RunningLogin::shutdown`].
///
/// # Errors
/// [`Error`] when a port cannot be bound or a thread cannot start; nothing
/// keeps running then.
pub fn spawn(config: LoginConfig) -> Result<RunningLogin, Error> {
    let reactor: Reactor<Session> = Reactor::new(config.reactor.clone()).map_err(Error::Reactor)?;
    let mut listeners: Vec<(SocketAddr, PeerKind)> = Vec::new();
    for addr in LoginConfig::addrs(&config.msg_server_ips, config.msg_server_port) {
        let bound = reactor
            .listen(addr, |peer, now| {
                Session::new(SessionConfig::server_peer(), peer, now)
            })
            .map_err(|source| Error::Listen { addr, source })?;
        listeners.push((bound, PeerKind::MsgServer));
    }
    if let Some(port) = config.client_port {
        let client_cfg = legacy_client_config(config.http_timeout);
        for addr in LoginConfig::addrs(&config.client_ips, port) {
            let cfg = client_cfg.clone();
            let bound = reactor
                .listen(addr, move |peer, now| Session::new(cfg.clone(), peer, now))
                .map_err(|source| Error::Listen { addr, source })?;
            listeners.push((bound, PeerKind::Client));
        }
    }

    let dir = Directory::new(config.urls.clone());
    let metrics = Arc::new(LoginMetrics::new(reactor.handle(), dir.clone()));
    let http_addrs = LoginConfig::addrs(&config.http_ips, config.http_port);
    let http = HttpServer::start(
        &http_addrs,
        HttpOptions {
            timeout: config.http_timeout,
            max_connections: config.http_max_connections.max(1),
        },
        Arc::clone(&metrics.http),
        {
            let dir = dir.clone();
            move || dir.msg_server_json()
        },
    )
    .map_err(|source| Error::Http {
        addrs: http_addrs.clone(),
        source,
    })?;

    let pick = |kind| -> Vec<SocketAddr> {
        listeners
            .iter()
            .filter(|(_, k)| *k == kind)
            .map(|(a, _)| *a)
            .collect()
    };
    let msg_server_addrs = pick(PeerKind::MsgServer);
    let client_addrs = pick(PeerKind::Client);
    info!(msg_servers = ?msg_server_addrs, http = ?http.addrs(), clients = ?client_addrs,
        "login_server listening");

    let admin = match config.admin {
        Some(addr) => {
            let instance = msg_server_addrs
                .first()
                .map(ToString::to_string)
                .unwrap_or_default();
            let source: Arc<dyn MetricsSource> = Arc::new(Labelled::new(
                "login_server",
                instance,
                Arc::clone(&metrics) as Arc<dyn MetricsSource>,
            ));
            Some(AdminServer::start(addr, source).map_err(|source| Error::Admin { addr, source })?)
        }
        None => None,
    };
    let app = std::thread::Builder::new()
        .name("login_server".into())
        .spawn({
            let events = reactor.events();
            let handle = reactor.handle();
            let app = LoginApp::new(dir.clone());
            let metrics = Arc::clone(&metrics);
            move || run_app(app, &listeners, &events, &handle, &metrics)
        })
        .map_err(Error::Thread)?;
    Ok(RunningLogin {
        msg_server_addrs,
        client_addrs,
        http: Some(http),
        reactor: Some(reactor),
        app: Some(app),
        dir,
        metrics,
        admin,
    })
}

/// The legacy client port: no login gate (the query is all there is),
/// heartbeats echoed like on msg_server's client port, and a short idle
/// limit because a client has nothing to do here but ask once.
fn legacy_client_config(timeout: Duration) -> SessionConfig {
    let mut cfg = SessionConfig::server_peer();
    cfg.heartbeat = Heartbeat::Echo;
    cfg.idle_timeout = timeout;
    cfg.mobile_idle_timeout = timeout;
    cfg.max_frame_len = LEGACY_MAX_FRAME;
    cfg
}

impl RunningLogin {
    /// The first msg_server address (actual port when 0 was configured).
    #[must_use]
    pub fn msg_server_addr(&self) -> SocketAddr {
        self.msg_server_addrs[0]
    }

    /// Every msg_server address.
    #[must_use]
    pub fn msg_server_addrs(&self) -> &[SocketAddr] {
        &self.msg_server_addrs
    }

    /// The first HTTP address: `http://<it>/msg_server` is what clients
    /// are configured with.
    #[must_use]
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addrs()[0]
    }

    /// Every HTTP address.
    #[must_use]
    pub fn http_addrs(&self) -> &[SocketAddr] {
        self.http.as_ref().map_or(&[], HttpServer::addrs)
    }

    /// The first legacy client address, if that port is open.
    #[must_use]
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.client_addrs.first().copied()
    }

    /// Every legacy client address.
    #[must_use]
    pub fn client_addrs(&self) -> &[SocketAddr] {
        &self.client_addrs
    }

    /// The registered msg_servers with their current load.
    #[must_use]
    pub fn msg_servers(&self) -> Vec<MsgServerLoad> {
        self.dir.msg_servers()
    }

    /// Client connections over all msg_servers, as they report them.
    #[must_use]
    pub fn total_online(&self) -> u64 {
        self.dir.total_online()
    }

    /// What `GET /msg_server` would answer right now.
    #[must_use]
    pub fn msg_server_json(&self) -> String {
        self.dir.msg_server_json()
    }

    /// The PDU-side counters.
    #[must_use]
    pub fn counters(&self) -> LoginCounters {
        *self
            .metrics
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every counter, for an admin endpoint (`teamtalk up` serves all
    /// daemons on one).
    #[must_use]
    pub fn metrics(&self) -> Arc<LoginMetrics> {
        Arc::clone(&self.metrics)
    }

    /// The admin endpoint's address, when [`LoginConfig::admin`] asked for
    /// one.
    #[must_use]
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::addr)
    }

    /// Stops HTTP, closes every connection (flushing what was queued,
    /// within the reactor's grace period) and joins the threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(mut admin) = self.admin.take() {
            admin.stop();
        }
        if let Some(mut http) = self.http.take() {
            http.stop();
        }
        if let Some(reactor) = self.reactor.take() {
            reactor.shutdown();
        }
        if let Some(app) = self.app.take()
            && app.join().is_err()
        {
            tracing::error!("the login_server thread panicked");
        }
        info!("login_server stopped");
    }
}

impl Drop for RunningLogin {
    fn drop(&mut self) {
        if self.reactor.is_some() {
            self.stop();
        }
    }
}

/// Which listener a connection accepted on `local` came through. A
/// wildcard listener matches by port (the accepted socket's local address
/// is the concrete one).
fn classify(listeners: &[(SocketAddr, PeerKind)], local: SocketAddr) -> Option<PeerKind> {
    let mapped = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, Into::into),
        v4 => v4,
    };
    listeners
        .iter()
        .find(|(addr, _)| {
            addr.port() == local.port()
                && (addr.ip().is_unspecified() || mapped(addr.ip()) == mapped(local.ip()))
        })
        .map(|&(_, kind)| kind)
}

fn run_app(
    mut app: LoginApp<ConnId>,
    listeners: &[(SocketAddr, PeerKind)],
    events: &EventRx<SessionEvent>,
    handle: &Handle<Session>,
    metrics: &LoginMetrics,
) {
    let _running = ClearOnDrop(&metrics.running);
    let span = info_span!("login_server");
    let _entered = span.enter();
    let mut kinds: HashMap<ConnId, PeerKind> = HashMap::new();
    while let Ok((conn, event)) = events.recv() {
        let actions = match event {
            NetEvent::Accepted { peer, local } => match classify(listeners, local) {
                Some(kind) => {
                    kinds.insert(conn, kind);
                    match kind {
                        PeerKind::MsgServer => info!(%conn, %peer, "msg_server connected"),
                        _ => debug!(%conn, %peer, "legacy client connected"),
                    }
                    app.connected(conn, kind);
                    Vec::new()
                }
                None => {
                    warn!(%conn, %peer, %local, "connection on an unknown listener; closing");
                    vec![Action::Close(conn)]
                }
            },
            NetEvent::Machine(SessionEvent::Pdu(pdu) | SessionEvent::LoginRequest(pdu)) => {
                if let Some(kind) = kinds.get(&conn) {
                    metrics.pdus(*kind).0.inc(pdu.key());
                }
                app.handle_pdu(conn, &pdu)
            }
            NetEvent::Machine(SessionEvent::Closed(reason)) => {
                debug!(%conn, %reason, "connection closing");
                metrics.closes.inc(&reason);
                Vec::new()
            }
            NetEvent::Finished => {
                kinds.remove(&conn);
                app.disconnected(conn);
                Vec::new()
            }
            other => {
                debug!(%conn, ?other, "reactor event ignored");
                Vec::new()
            }
        };
        for action in actions {
            if let Action::Send(to, pdu) = &action
                && let Some(kind) = kinds.get(to)
            {
                metrics.pdus(*kind).1.inc(pdu.key());
            }
            perform(handle, action);
        }
        *metrics
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = app.counters();
    }
    debug!("reactor gone; login_server thread ends");
}

fn perform(handle: &Handle<Session>, action: Action<ConnId>) {
    let (conn, queued) = match action {
        Action::Send(conn, pdu) => (
            conn,
            handle.exec(conn, move |s: &mut Session| {
                if let Err(e) = s.send(&pdu) {
                    warn!(%conn, error = %e, "PDU not sent");
                }
            }),
        ),
        Action::Close(conn) => (conn, handle.exec(conn, Session::close)),
    };
    if let Err(e) = queued {
        debug!(%conn, error = %e, "command not queued");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_listener() {
        let listeners = [
            ("0.0.0.0:8100".parse().unwrap(), PeerKind::MsgServer),
            ("10.0.0.1:8008".parse().unwrap(), PeerKind::Client),
            ("[::]:9000".parse().unwrap(), PeerKind::Client),
        ];
        let c = |s: &str| classify(&listeners, s.parse().unwrap());
        assert_eq!(c("127.0.0.1:8100"), Some(PeerKind::MsgServer));
        assert_eq!(c("10.0.0.1:8008"), Some(PeerKind::Client));
        assert_eq!(c("10.0.0.2:8008"), None);
        assert_eq!(c("[::ffff:10.0.0.1]:8008"), Some(PeerKind::Client));
        assert_eq!(c("[::1]:9000"), Some(PeerKind::Client));
        assert_eq!(c("127.0.0.1:1"), None);
    }

    #[test]
    fn legacy_client_sessions_echo_and_time_out_quickly() {
        let cfg = legacy_client_config(Duration::from_secs(10));
        assert_eq!(cfg.heartbeat, Heartbeat::Echo);
        assert_eq!(cfg.idle_timeout, Duration::from_secs(10));
        assert_eq!(cfg.login_timeout, None);
        assert_eq!(cfg.max_frame_len, LEGACY_MAX_FRAME);
    }
}
