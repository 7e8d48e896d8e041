//! Every daemon in one process, talking over loopback TCP exactly as
//! separate processes would: what `teamtalk up` runs and what the
//! end-to-end tests start.
//!
//! Start order follows the dependencies: db_proxy_server (with the store),
//! route_server, msfs (files in `<data dir>/msfs`), login_server (which
//! hands out msfs's URL), file_server (offline files in
//! `<data dir>/offline_file`), push_server, then the msg_servers, which
//! connect to db_proxy, route, login, file_server and push_server and
//! register with login_server, and last http_msg_server (links to db_proxy
//! and route_server).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::admin_api::{AdminApi, MsgServers};
use crate::cluster::PeerPolicy;
use crate::db_proxy::{self, DbProxyConfig, DbProxyServer};
use crate::file::{self, FileConfig, RunningFile};
use crate::http_msg::{self, HttpMsgConfig, RunningHttpMsg};
use crate::login::{self, LoginConfig, RunningLogin};
use crate::metrics::{Labelled, MetricsSource, Scrape};
use crate::msfs::{self, MsfsConfig, RunningMsfs};
use crate::msg::{self, MsgConfig, RunningMsg, WebSocketPort};
use crate::password::HashParams;
use crate::push::{self, PushConfig, RunningPush};
use crate::route::{self, RouteConfig, RunningRoute};
use crate::runtime::admin::AdminApp;
use crate::runtime::{AdminSettings, DaemonError, Running, serve_admin_api};
use crate::store::{SqliteStore, Store, StoreError, StoreOptions};
use teamtalk_conn::WsOrigins;

/// Ports of each daemon; 0 picks a free one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    /// db_proxy_server (TeamTalk: 10600).
    pub db: u16,
    /// route_server (8200).
    pub route: u16,
    /// login_server's msg_server port (8100).
    pub login_msg: u16,
    /// login_server's HTTP port (8080): where clients start.
    pub login_http: u16,
    /// login_server's legacy client port (8008).
    pub login_client: u16,
    /// One client port per msg_server (8000, 8001, …).
    pub msg: Vec<u16>,
    /// One WebSocket port per msg_server, for browsers (8800, 8801, …;
    /// ours: TeamTalk has none). Pages from login_server's HTTP origin may
    /// connect.
    pub ws: Vec<u16>,
    /// msfs, the HTTP file store (8700).
    pub msfs: u16,
    /// file_server's client port (8600).
    pub file_client: u16,
    /// file_server's msg_server port (8601).
    pub file_msg: u16,
}

/// The names `teamtalk up --port NAME=PORT` takes, one per [`Ports`] field
/// (`msg` and `ws` name the first msg_server's; the others follow it).
pub const PORT_NAMES: &[&str] = &[
    "db_proxy",
    "route",
    "login_msg",
    "login_http",
    "login_client",
    "msg",
    "ws",
    "msfs",
    "file_client",
    "file_msg",
];

impl Ports {
    /// Moves every non-zero port by `offset` (TeamTalk's test scripts run a
    /// second cluster at +10000).
    ///
    /// # Errors
    /// The name and port of the first one pushed out of 1..=65535.
    pub fn shift(&mut self, offset: i32) -> Result<(), String> {
        let mut result = Ok(());
        self.for_each(|name, port| {
            if *port == 0 || result.is_err() {
                return;
            }
            match u16::try_from(i32::from(*port) + offset) {
                Ok(p) if p != 0 => *port = p,
                _ => {
                    result = Err(format!(
                        "{name} port {port} moved by {offset} is out of range"
                    ))
                }
            }
        });
        result
    }

    /// Sets one port by its [`PORT_NAMES`] name; for `msg` and `ws` the
    /// following msg_servers take the next ports.
    ///
    /// # Errors
    /// An unknown name, listing the known ones.
    pub fn set(&mut self, name: &str, port: u16) -> Result<(), String> {
        let one = |list: &mut Vec<u16>| {
            for (i, p) in list.iter_mut().enumerate() {
                *p = if port == 0 {
                    0
                } else {
                    port.saturating_add(u16::try_from(i).unwrap_or(u16::MAX))
                };
            }
        };
        match name {
            "db_proxy" => self.db = port,
            "route" => self.route = port,
            "login_msg" => self.login_msg = port,
            "login_http" => self.login_http = port,
            "login_client" => self.login_client = port,
            "msg" => one(&mut self.msg),
            "ws" => one(&mut self.ws),
            "msfs" => self.msfs = port,
            "file_client" => self.file_client = port,
            "file_msg" => self.file_msg = port,
            _ => {
                return Err(format!(
                    "no port named {name:?}; the names are {}",
                    PORT_NAMES.join(", ")
                ));
            }
        }
        Ok(())
    }

    fn for_each(&mut self, mut f: impl FnMut(&str, &mut u16)) {
        f("db_proxy", &mut self.db);
        f("route", &mut self.route);
        f("login_msg", &mut self.login_msg);
        f("login_http", &mut self.login_http);
        f("login_client", &mut self.login_client);
        for p in &mut self.msg {
            f("msg", p);
        }
        for p in &mut self.ws {
            f("ws", p);
        }
        f("msfs", &mut self.msfs);
        f("file_client", &mut self.file_client);
        f("file_msg", &mut self.file_msg);
    }
}

/// How to run the whole system.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SystemConfig {
    /// Where the SQLite store lives.
    pub data_dir: PathBuf,
    /// Address every daemon listens on.
    pub host: IpAddr,
    /// Ports.
    pub ports: Ports,
    /// Password hashing cost for users created through the store.
    pub hash_params: HashParams,
    /// Overrides server-link heartbeat interval and idle timeout (tests
    /// that restart a daemon want failures noticed quickly).
    pub link_timers: Option<(Duration, Duration)>,
    /// One admin endpoint for the whole system (`/metrics` with a `daemon`
    /// label, `/healthz` ok only when every daemon is); `None` serves none.
    pub admin: Option<SocketAddr>,
    /// Bearer token the admin endpoint requires (needed when it listens
    /// beyond loopback).
    pub admin_token: Option<String>,
    /// The cluster secret every daemon's server links prove; `None` uses
    /// (and on first start creates) `cluster.secret` in the data
    /// directory.
    pub cluster_secret: Option<Vec<u8>>,
    /// The msfs URL login_server hands to clients (and msfs puts in its
    /// answers), for clients that reach it by another name than `host`
    /// (`--host 0.0.0.0`, a proxy); `None`: `http://<host>:<msfs port>/`.
    pub msfs_url: Option<String>,
    /// MySQL + Redis to keep the data in instead of SQLite in `data_dir`
    /// (`teamtalk up --mysql URL --redis URL`); `data_dir` still holds the
    /// cluster secret, msfs's and file_server's files.
    pub mysql: Option<crate::store::MysqlConfig>,
    /// The push_server: its address (host and port are replaced by
    /// `host` and the port asked for here; TeamTalk's 8500), sinks and
    /// bounds. Without sinks the msg_servers are not linked to it: every
    /// token would be answered "no sink", and the push path costs four
    /// requests per message (for a group message each as large as the
    /// group), which halved a 500-member group's deliveries per second.
    pub push: PushConfig,
    /// http_msg_server: its port (TeamTalk's 8400; host, db_proxy and
    /// route_server are the system's) and app keys; with none, one is
    /// generated at start ([`RunningSystem::http_msg_app_keys`]).
    pub http_msg: HttpMsgConfig,
    /// The daemons' links to each other go over in-process socket pairs
    /// (`teamtalk_net::LocalNet`) instead of loopback TCP: the same PDUs,
    /// without the TCP stack's segments and acknowledgements. Their ports
    /// still take TCP from everyone else. On by default; off, or with
    /// [`TCP_LINKS_ENV`] set, every link is TCP (for comparing).
    pub local_links: bool,
    /// db_proxy, route_server, login_server and (when there is only one)
    /// the msg_server run their reactors and Apps on one thread
    /// (`teamtalk_net::SharedThread`), so a PDU between them is handled in
    /// the same thread's next round instead of waking another thread; the
    /// other daemons, the stores' writers and the login checks keep
    /// threads of their own. On by default; off, or with
    /// [`OWN_THREADS_ENV`] set, every daemon has its own (for comparing).
    pub shared_thread: bool,
}

/// The environment variable that gives every daemon of `teamtalk up` a
/// thread of its own ([`SystemConfig::shared_thread`] off), for comparing.
pub const OWN_THREADS_ENV: &str = "TEAMTALK_OWN_THREADS";

/// The environment variable that keeps `teamtalk up`'s links on loopback
/// TCP ([`SystemConfig::local_links`] off), for comparing.
pub const TCP_LINKS_ENV: &str = "TEAMTALK_TCP_LINKS";

impl SystemConfig {
    /// TeamTalk's default ports on 127.0.0.1, `msg_servers` of them.
    #[must_use]
    pub fn teamtalk_ports(data_dir: impl Into<PathBuf>, msg_servers: u16) -> Self {
        Self {
            data_dir: data_dir.into(),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: Ports {
                db: 10600,
                route: 8200,
                login_msg: 8100,
                login_http: 8080,
                login_client: 8008,
                msg: (0..msg_servers.max(1)).map(|i| 8000 + i).collect(),
                ws: (0..msg_servers.max(1))
                    .map(|i| DEFAULT_WS_PORT + i)
                    .collect(),
                msfs: msfs::DEFAULT_PORT,
                file_client: file::DEFAULT_CLIENT_PORT,
                file_msg: file::DEFAULT_MSG_PORT,
            },
            hash_params: HashParams::RECOMMENDED,
            link_timers: None,
            admin: Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                DEFAULT_ADMIN_PORT,
            )),
            admin_token: None,
            cluster_secret: None,
            msfs_url: None,
            mysql: None,
            push: PushConfig::new(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), push::DEFAULT_PORT),
                push::Sinks::default(),
            ),
            http_msg: HttpMsgConfig::new(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), http_msg::DEFAULT_PORT),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 10600),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8200),
                Vec::new(),
            ),
            local_links: true,
            shared_thread: true,
        }
    }

    /// Every port chosen by the kernel on 127.0.0.1: for tests.
    #[must_use]
    pub fn ephemeral(data_dir: impl Into<PathBuf>, msg_servers: u16) -> Self {
        let mut cfg = Self::teamtalk_ports(data_dir, msg_servers);
        cfg.ports = Ports {
            db: 0,
            route: 0,
            login_msg: 0,
            login_http: 0,
            login_client: 0,
            msg: vec![0; usize::from(msg_servers.max(1))],
            ws: vec![0; usize::from(msg_servers.max(1))],
            msfs: 0,
            file_client: 0,
            file_msg: 0,
        };
        cfg.admin = Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0));
        cfg.push.port = 0;
        cfg.http_msg.port = 0;
        cfg
    }
}

/// Why the system could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SystemError {
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The cluster secret could not be created, read or used.
    #[error("cluster secret in {dir}: {reason}")]
    Secret {
        /// The data directory.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A daemon (or the admin endpoint) failed to start.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// Another process serves this data directory.
    #[error(transparent)]
    Lock(#[from] crate::store::LockError),
}

/// `teamtalk up`'s first WebSocket port (one per msg_server from there).
pub const DEFAULT_WS_PORT: u16 = 8800;

/// `teamtalk up`'s default admin port.
/// 8090: free among TeamTalk's ports and not Prometheus's own 9090.
pub const DEFAULT_ADMIN_PORT: u16 = 8090;

/// A daemon that can be stopped and started again while the system runs
/// (db_proxy_server and file_server, for tests of restarts): its metrics
/// source is swapped in and out; while it is stopped the system is
/// unhealthy.
struct Swappable {
    daemon: &'static str,
    instance: String,
    source: Mutex<Option<Arc<dyn MetricsSource>>>,
}

impl Swappable {
    fn new(daemon: &'static str, instance: String) -> Self {
        Self {
            daemon,
            instance,
            source: Mutex::new(None),
        }
    }

    fn set(&self, metrics: Option<Arc<dyn MetricsSource>>) {
        let source = metrics.map(|m| {
            Arc::new(Labelled::new(self.daemon, self.instance.clone(), m)) as Arc<dyn MetricsSource>
        });
        *self.source.lock().unwrap_or_else(PoisonError::into_inner) = source;
    }

    fn get(&self) -> Option<Arc<dyn MetricsSource>> {
        self.source
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn collect(&self, out: &mut Scrape) {
        match self.get() {
            Some(source) => source.collect(out),
            None => out.scoped(
                &[("daemon", self.daemon), ("instance", &self.instance)],
                |out| {
                    out.gauge(
                        "teamtalk_healthy",
                        "1 when the daemon's /healthz conditions hold, else 0.",
                        &[],
                        0.0,
                    );
                },
            ),
        }
    }

    fn health(&self, problems: &mut Vec<String>) {
        match self.get() {
            Some(source) => source.health(problems),
            None => problems.push(format!("{} {}: not running", self.daemon, self.instance)),
        }
    }
}

/// Every daemon of the system behind one endpoint.
struct SystemMetrics {
    db: Swappable,
    file: Swappable,
    others: Vec<Arc<dyn MetricsSource>>,
}

impl MetricsSource for SystemMetrics {
    fn collect(&self, out: &mut Scrape) {
        self.db.collect(out);
        self.file.collect(out);
        self.others.collect(out);
    }

    fn health(&self, problems: &mut Vec<String>) {
        self.db.health(problems);
        self.file.health(problems);
        self.others.health(problems);
    }
}

/// The running system. Dropping it stops every daemon.
pub struct RunningSystem {
    cfg: SystemConfig,
    /// Held while the system serves the store.
    _lock: crate::store::ServeLock,
    peers: PeerPolicy,
    store: Arc<dyn Store>,
    db: Option<DbProxyServer>,
    db_addr: SocketAddr,
    route: RunningRoute,
    msfs: RunningMsfs,
    login: RunningLogin,
    file: Option<RunningFile>,
    file_cfg: FileConfig,
    msgs: Vec<RunningMsg>,
    push: RunningPush,
    http_msg: RunningHttpMsg,
    metrics: Arc<SystemMetrics>,
    admin: Option<Running<AdminApp>>,
    /// The daemons' in-process links, when [`SystemConfig::local_links`].
    local_net: Option<Arc<teamtalk_net::LocalNet>>,
    /// The thread of the daemons a login crosses, when
    /// [`SystemConfig::shared_thread`].
    core_thread: Option<teamtalk_net::SharedThread>,
}

impl std::fmt::Debug for RunningSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSystem")
            .field("cfg", &self.cfg)
            .field("db_addr", &self.db_addr)
            .field("route", &self.route)
            .field("msfs", &self.msfs)
            .field("login", &self.login)
            .field("file", &self.file)
            .field("msgs", &self.msgs)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

/// Starts everything. See the [module docs](self).
///
/// # Errors
/// [`SystemError`] naming the daemon that failed; whatever had started is
/// stopped again.
pub fn start(mut cfg: SystemConfig) -> Result<RunningSystem, SystemError> {
    let tcp_forced = crate::runtime::env_flag(TCP_LINKS_ENV);
    let local_net =
        (cfg.local_links && !tcp_forced).then(|| Arc::new(teamtalk_net::LocalNet::new()));
    // Every daemon started below (on this thread) shares it.
    let _scope = crate::runtime::LocalNetScope::enter(local_net.clone());
    let core_thread = if cfg.shared_thread && !crate::runtime::env_flag(OWN_THREADS_ENV) {
        Some(
            teamtalk_net::SharedThread::new("teamtalk-core").map_err(|source| {
                DaemonError::Reactor {
                    daemon: "teamtalk up",
                    source,
                }
            })?,
        )
    } else {
        None
    };
    // Only the daemons entered in it below run there.
    let core = || crate::runtime::SharedThreadScope::enter(core_thread.clone());
    let lock = crate::store::ServeLock::acquire(&cfg.data_dir)?;
    let options = StoreOptions {
        hash_params: cfg.hash_params,
        applier_nice: crate::store::SERVING_APPLIER_NICE,
        ..StoreOptions::default()
    };
    let store: Arc<dyn Store> = match &cfg.mysql {
        Some(mysql) => {
            let store = crate::store::MysqlStore::open(mysql, options)?;
            tracing::info!(store = "mysql+redis", at = %store.describe(), "store");
            Arc::new(store)
        }
        None => {
            tracing::info!(store = "sqlite", dir = %cfg.data_dir.display(), "store");
            Arc::new(SqliteStore::open_with(&cfg.data_dir, options)?)
        }
    };
    let secret_error = |reason: String| SystemError::Secret {
        dir: cfg.data_dir.clone(),
        reason,
    };
    let secret = match &cfg.cluster_secret {
        Some(s) => s.clone(),
        None => crate::cluster::ensure_secret_file(&cfg.data_dir)
            .map_err(|e| secret_error(e.to_string()))?,
    };
    let peers = PeerPolicy::with_secret(&secret).map_err(|e| secret_error(e.to_string()))?;
    let db = spawn_db_in(
        core_thread.as_ref(),
        &cfg,
        SocketAddr::new(cfg.host, cfg.ports.db),
        &store,
        &peers,
    )?;
    let db_addr = db.addr();
    let mut route_cfg = RouteConfig::loopback();
    route_cfg.listen_ips = vec![cfg.host];
    route_cfg.msg_port = cfg.ports.route;
    route_cfg.peers = peers.clone();
    let route = {
        let _core = core();
        route::spawn(route_cfg)?
    };
    let mut msfs_cfg = MsfsConfig::loopback(cfg.data_dir.join("msfs"));
    msfs_cfg.listen_ips = vec![cfg.host];
    msfs_cfg.port = cfg.ports.msfs;
    msfs_cfg.public_url.clone_from(&cfg.msfs_url);
    // The web client (login_server's page) uploads images: its origin may
    // read msfs's answers. With a kernel-chosen login port the origin is
    // not known yet (msfs starts first, login_server names it), so any
    // origin then: an answer only names the URL of what was just uploaded,
    // and any program can upload without a browser anyway.
    msfs_cfg.cors_origins = match web_origins(cfg.host, cfg.ports.login_http) {
        WsOrigins::List(list) if cfg.ports.login_http != 0 => list.to_vec(),
        _ => vec!["*".to_owned()],
    };
    let msfs = msfs::spawn(msfs_cfg)?;
    let msfs_url = advertised_msfs_url(&cfg, msfs.addr());
    let mut login_cfg = LoginConfig::loopback();
    login_cfg.urls.msfs_prior.clone_from(&msfs_url);
    login_cfg.urls.msfs_backup = msfs_url;
    login_cfg.peers = peers.clone();
    login_cfg.msg_server_ips = vec![cfg.host];
    login_cfg.msg_server_port = cfg.ports.login_msg;
    login_cfg.http_ips = vec![cfg.host];
    login_cfg.http_port = cfg.ports.login_http;
    login_cfg.client_ips = vec![cfg.host];
    login_cfg.client_port = Some(cfg.ports.login_client);
    let login = {
        let _core = core();
        login::spawn(login_cfg)?
    };
    let mut file_cfg = FileConfig::loopback(cfg.data_dir.join(file::DEFAULT_DATA_DIR));
    file_cfg.client_ips = vec![cfg.host];
    file_cfg.client_port = cfg.ports.file_client;
    file_cfg.msg_ips = vec![cfg.host];
    file_cfg.msg_port = cfg.ports.file_msg;
    file_cfg.peers = peers.clone();
    let file = file::spawn(file_cfg.clone())?;
    // A restart binds the same ports, the ones chosen now if 0 was asked.
    file_cfg.client_port = file.client_addr().port();
    file_cfg.msg_port = file.msg_server_addr().port();
    let mut push_cfg = cfg.push.clone();
    push_cfg.listen_ips = vec![cfg.host];
    push_cfg.peers = peers.clone();
    let push = push::spawn(push_cfg)?;
    let sinks = &cfg.push.sinks;
    let push_links = if sinks.webhook.is_some() || sinks.fcm.is_some() || sinks.apns.is_some() {
        vec![push.addr()]
    } else {
        Vec::new()
    };
    let mut msgs = Vec::new();
    let origins = web_origins(cfg.host, login.http_addr().port());
    for (i, port) in cfg.ports.msg.iter().enumerate() {
        let mut m = MsgConfig::new(
            SocketAddr::new(cfg.host, *port),
            db_addr,
            login.msg_server_addr(),
            route.addr(),
        );
        if let Some(ws) = cfg.ports.ws.get(i) {
            m.websocket = Some(WebSocketPort::new(
                SocketAddr::new(cfg.host, *ws),
                origins.clone(),
            ));
        }
        m.link_timers = cfg.link_timers;
        m.peers = peers.clone();
        m.file = vec![file.msg_server_addr()];
        m.push.clone_from(&push_links);
        m.threads = 1;
        // Several msg_servers are there to use several cores.
        let _core = (cfg.ports.msg.len() == 1).then(core);
        msgs.push(msg::spawn(m)?);
    }
    if cfg.http_msg.app_keys.is_empty() {
        let key = http_msg::generate_app_key().map_err(|e| DaemonError::Config {
            daemon: "http_msg_server",
            reason: format!("no randomness for an app key: {e}"),
        })?;
        cfg.http_msg.app_keys.push(key);
    }
    let mut http_msg_cfg = cfg.http_msg.clone();
    http_msg_cfg.listen_ips = vec![cfg.host];
    http_msg_cfg.db = vec![db_addr];
    http_msg_cfg.route = vec![route.addr()];
    http_msg_cfg.peers = peers.clone();
    http_msg_cfg.link_timers = cfg.link_timers;
    let http_msg = http_msg::spawn(http_msg_cfg)?;
    let mut others: Vec<Arc<dyn MetricsSource>> = vec![
        Arc::new(Labelled::new(
            "route_server",
            route.addr().to_string(),
            route.metrics(),
        )),
        Arc::new(Labelled::new(
            "login_server",
            login.msg_server_addr().to_string(),
            login.metrics(),
        )),
        Arc::new(Labelled::new(
            "msfs",
            msfs.addr().to_string(),
            msfs.metrics(),
        )),
        Arc::new(Labelled::new(
            "push_server",
            push.addr().to_string(),
            push.metrics(),
        )),
        Arc::new(Labelled::new(
            "http_msg_server",
            http_msg.addr().to_string(),
            http_msg.metrics(),
        )),
    ];
    for m in &msgs {
        others.push(Arc::new(Labelled::new(
            "msg_server",
            m.addr().to_string(),
            m.metrics(),
        )));
    }
    let metrics = Arc::new(SystemMetrics {
        db: Swappable::new("db_proxy_server", db_addr.to_string()),
        file: Swappable::new("file_server", file.msg_server_addr().to_string()),
        others,
    });
    metrics.db.set(Some(db.metrics()));
    metrics.file.set(Some(file.metrics()));
    let admin = match cfg.admin {
        Some(addr) => {
            // The admin API acts on the store and, in-process, on the
            // msg_servers (docs/admin-api.md).
            let cluster =
                MsgServers::new(msgs.iter().map(|m| (m.addr(), m.controller())).collect());
            let api = AdminApi::new(Arc::clone(&store) as Arc<dyn Store>, Arc::new(cluster));
            Some(serve_admin_api(
                &AdminSettings::with_token(addr, cfg.admin_token.clone()),
                Arc::clone(&metrics) as Arc<dyn MetricsSource>,
                Some(Arc::new(api)),
            )?)
        }
        None => None,
    };
    Ok(RunningSystem {
        cfg,
        _lock: lock,
        peers,
        store,
        db: Some(db),
        db_addr,
        route,
        msfs,
        login,
        file: Some(file),
        file_cfg,
        msgs,
        push,
        http_msg,
        metrics,
        admin,
        local_net,
        core_thread,
    })
}

/// The origins of login_server's HTTP address, where the web client is
/// served: `http://HOST:PORT`, and the `localhost` spelling of a loopback
/// host (a browser sends the name that was typed).
fn web_origins(host: IpAddr, http_port: u16) -> WsOrigins {
    let shown = match host {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let mut list = vec![format!("http://{shown}:{http_port}")];
    if host.is_loopback() {
        list.push(format!("http://localhost:{http_port}"));
    }
    WsOrigins::List(list.into())
}

/// The msfs URL clients are given: [`SystemConfig::msfs_url`], else msfs's
/// address, with loopback in place of an unspecified host (a client can
/// do nothing with `0.0.0.0`; set `msfs_url` for remote clients then).
fn advertised_msfs_url(cfg: &SystemConfig, bound: SocketAddr) -> String {
    if let Some(url) = &cfg.msfs_url {
        return url.clone();
    }
    let ip = match bound.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/", SocketAddr::new(ip, bound.port()))
}

/// Starts db_proxy_server, on `core` (the shared thread) when given.
fn spawn_db_in(
    core: Option<&teamtalk_net::SharedThread>,
    cfg: &SystemConfig,
    addr: SocketAddr,
    store: &Arc<dyn Store>,
    peers: &PeerPolicy,
) -> Result<DbProxyServer, SystemError> {
    let mut db_cfg = DbProxyConfig::new(addr);
    db_cfg.data_dir.clone_from(&cfg.data_dir);
    db_cfg.peers = peers.clone();
    let store: Arc<dyn Store> = Arc::clone(store);
    let _core = crate::runtime::SharedThreadScope::enter(core.cloned());
    Ok(db_proxy::spawn(db_cfg, store)?)
}

impl RunningSystem {
    /// login_server's HTTP address: where TeamTalk clients start.
    #[must_use]
    pub fn http_addr(&self) -> SocketAddr {
        self.login.http_addr()
    }

    /// login_server's legacy TCP address for clients.
    #[must_use]
    pub fn login_client_addr(&self) -> Option<SocketAddr> {
        self.login.client_addr()
    }

    /// Each msg_server's client address.
    #[must_use]
    pub fn msg_addrs(&self) -> Vec<SocketAddr> {
        self.msgs.iter().map(RunningMsg::addr).collect()
    }

    /// Each msg_server's WebSocket address (browsers), in msg_server order.
    #[must_use]
    pub fn ws_addrs(&self) -> Vec<SocketAddr> {
        self.msgs
            .iter()
            .flat_map(|m| m.addrs_of("browser"))
            .collect()
    }

    /// db_proxy_server's address.
    #[must_use]
    pub fn db_addr(&self) -> SocketAddr {
        self.db_addr
    }

    /// route_server's address.
    #[must_use]
    pub fn route_addr(&self) -> SocketAddr {
        self.route.addr()
    }

    /// msfs's address.
    #[must_use]
    pub fn msfs_addr(&self) -> SocketAddr {
        self.msfs.addr()
    }

    /// The msfs URL login_server hands to clients.
    #[must_use]
    pub fn msfs_url(&self) -> String {
        self.login
            .inspect(|app| app.directory().urls().msfs_prior.clone())
            .unwrap_or_default()
    }

    /// The msfs.
    #[must_use]
    pub fn msfs(&self) -> &RunningMsfs {
        &self.msfs
    }

    /// The admin endpoint (`/metrics`, `/healthz`) serving every daemon,
    /// when [`SystemConfig::admin`] asked for one.
    #[must_use]
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(Running::addr)
    }

    /// The store db_proxy_server uses (tests add users through it).
    #[must_use]
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// push_server's address (msg_servers' port).
    #[must_use]
    pub fn push_addr(&self) -> SocketAddr {
        self.push.addr()
    }

    /// The push_server.
    #[must_use]
    pub fn push(&self) -> &RunningPush {
        &self.push
    }

    /// http_msg_server's HTTP address (TeamTalk's back-office API).
    #[must_use]
    pub fn http_msg_addr(&self) -> SocketAddr {
        self.http_msg.addr()
    }

    /// The app keys http_msg_server accepts (the generated one when none
    /// was configured).
    #[must_use]
    pub fn http_msg_app_keys(&self) -> &[String] {
        &self.cfg.http_msg.app_keys
    }

    /// The http_msg_server.
    #[must_use]
    pub fn http_msg(&self) -> &RunningHttpMsg {
        &self.http_msg
    }

    /// The running msg_servers.
    #[must_use]
    pub fn msg_servers(&self) -> &[RunningMsg] {
        &self.msgs
    }

    /// The login_server.
    #[must_use]
    pub fn login(&self) -> &RunningLogin {
        &self.login
    }

    /// Whether every msg_server has registered with login_server, which
    /// happens once all their links are up.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.login.msg_servers().len() == self.msgs.len()
    }

    /// Waits until [`is_ready`](Self::is_ready), at most `timeout`.
    /// Returns whether it became ready.
    #[must_use]
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = crate::clock::now() + timeout;
        while crate::clock::now() < deadline {
            if self.is_ready() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.is_ready()
    }

    /// Stops db_proxy_server (as a crash or restart would).
    pub fn stop_db(&mut self) {
        if let Some(db) = self.db.take() {
            self.metrics.db.set(None);
            db.stop();
        }
    }

    /// file_server's client address (where clients send and fetch files).
    #[must_use]
    pub fn file_client_addr(&self) -> SocketAddr {
        SocketAddr::new(self.cfg.host, self.file_cfg.client_port)
    }

    /// file_server's msg_server address.
    #[must_use]
    pub fn file_msg_addr(&self) -> SocketAddr {
        SocketAddr::new(self.cfg.host, self.file_cfg.msg_port)
    }

    /// The file_server, while it runs.
    #[must_use]
    pub fn file_server(&self) -> Option<&RunningFile> {
        self.file.as_ref()
    }

    /// Stops file_server (as a crash or restart would).
    pub fn stop_file(&mut self) {
        if let Some(f) = self.file.take() {
            self.metrics.file.set(None);
            f.stop();
        }
    }

    /// Starts file_server again on the same addresses and data directory:
    /// the offline files stored before are found and served again.
    ///
    /// # Errors
    /// When it cannot bind or start.
    pub fn restart_file(&mut self) -> Result<(), SystemError> {
        self.stop_file();
        let _scope = crate::runtime::LocalNetScope::enter(self.local_net.clone());
        let f = file::spawn(self.file_cfg.clone())?;
        self.metrics.file.set(Some(f.metrics()));
        self.file = Some(f);
        Ok(())
    }

    /// Starts db_proxy_server again on the same address and store.
    ///
    /// # Errors
    /// When it cannot bind or start.
    pub fn restart_db(&mut self) -> Result<(), SystemError> {
        self.stop_db();
        let _scope = crate::runtime::LocalNetScope::enter(self.local_net.clone());
        let db = spawn_db_in(
            self.core_thread.as_ref(),
            &self.cfg,
            self.db_addr,
            &self.store,
            &self.peers,
        )?;
        self.metrics.db.set(Some(db.metrics()));
        self.db = Some(db);
        Ok(())
    }

    /// The thread each running daemon's App runs on, by daemon name:
    /// `teamtalk-core` for those on the shared thread
    /// ([`SystemConfig::shared_thread`]). A daemon that does not answer
    /// is left out.
    #[must_use]
    pub fn app_threads(&self) -> Vec<(&'static str, String)> {
        fn on<A: crate::runtime::App>(d: &Running<A>) -> Option<(&'static str, String)> {
            let name = d.name();
            let thread = d
                .inspect(|_| std::thread::current().name().unwrap_or("").to_owned())
                .ok()?;
            Some((name, thread))
        }
        let mut threads = vec![on(&self.route), on(&self.msfs), on(&self.login)];
        threads.push(self.db.as_ref().and_then(on));
        threads.push(self.file.as_ref().and_then(on));
        threads.extend(self.msgs.iter().map(on));
        threads.push(on(&self.push));
        threads.push(on(&self.http_msg));
        threads.into_iter().flatten().collect()
    }

    /// Connections the daemons made to each other in-process so far
    /// ([`SystemConfig::local_links`]); 0 when every link is TCP.
    #[must_use]
    pub fn local_links(&self) -> u64 {
        self.local_net.as_ref().map_or(0, |n| n.connections())
    }

    /// Stops every daemon, msg_servers first.
    pub fn shutdown(self) {
        let Self {
            msgs,
            login,
            msfs,
            route,
            db,
            file,
            admin,
            push,
            http_msg,
            ..
        } = self;
        if let Some(admin) = admin {
            admin.stop();
        }
        http_msg.stop();
        for m in msgs {
            m.stop();
        }
        if let Some(f) = file {
            f.stop();
        }
        push.stop();
        login.stop();
        msfs.stop();
        route.stop();
        if let Some(db) = db {
            db.stop();
        }
    }
}
