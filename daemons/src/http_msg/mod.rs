//! http_msg_server: TeamTalk's HTTP back-office API (port 8400).
//!
//! Two interfaces, as TeamTalk's (`doc/http接口定义.md`):
//!
//! - `POST /query/CreateGroup` `{req_user_id, app_key, group_name,
//!   group_type (1 normal, 2 tmp), group_avatar, user_id_list}` →
//!   `{error_code, error_msg, group_id}`: a 0x0405 to db_proxy.
//! - `POST /query/ChangeMembers` `{req_user_id, app_key, group_id,
//!   modify_type (1 add, 2 del), user_id_list}` → `{error_code,
//!   error_msg}`: a 0x0407 to db_proxy, then on success the 0x040b notice
//!   through route_server, so members online on any msg_server see the
//!   change at once.
//!
//! Both go to db_proxy with `user_id` 0, the administration, as
//! TeamTalk's: db_proxy trusts its (authenticated) peers with NORMAL
//! groups, and user 0 may change any group (`crate::store::groups`).
//!
//! # Where we differ from TeamTalk
//!
//! - The `app_key` is checked against the keys of httpmsgserver.conf
//!   (`AppKey`, `AppKeyFile`); TeamTalk's check always succeeded. A wrong
//!   or missing key is TeamTalk's answer 2 "appKey不存在".
//! - Every request is answered. TeamTalk closed the connection without a
//!   word on a body that is not JSON (400 here, code 1), an unknown URL
//!   (404, code 5) and a db_proxy that never answered (code 10 here after
//!   `RequestTimeoutSecs`); a method other than POST is 405.
//! - A creation is announced to the members online like a change (a
//!   0x040b adding them all), so they see the group at once; TeamTalk told
//!   nobody. A change is announced even when its HTTP client left before
//!   the answer (TeamTalk dropped the notice then).
//! - Bodies are bounded ([`DEFAULT_MAX_BODY`]; over it a 413 with code 1)
//!   and so are the requests waiting for db_proxy (`MaxPending`; over it a
//!   503 with code 10 and `Retry-After`).
//! - `Content-Type: application/json; charset=utf-8` (TeamTalk:
//!   `text/html;charset=utf-8`), keep-alive allowed.
//!
//! The logic is [`HttpMsgApp`] (sans-IO, unit-tested in virtual time);
//! [`spawn`] runs it on the shared runtime with one link per db_proxy and
//! route_server, authenticated with the cluster secret like msg_server's.

pub mod api;
pub mod app;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use teamtalk_conn::{HttpConfig, LinkConfig};
use tracing::info;

use crate::cluster::{ClusterError, PeerPolicy};
use crate::conf::{Conf, ConfError};
use crate::route::listen_ips;
use crate::runtime::{self, AdminSettings, DaemonError, NoWorker, Plan, PortKind, Running};
use crate::tls::{LinkTls, TlsConfError, TlsSettings};

pub use api::{Answer, AppKeys, ErrorCode};
pub use app::{HttpMsgApp, HttpMsgLimits, HttpMsgStats, Upstreams};

/// A running http_msg_server.
pub type RunningHttpMsg = Running<HttpMsgApp>;

/// TeamTalk's http_msg_server port.
pub const DEFAULT_PORT: u16 = 8400;
/// Largest request body (`MaxBodyBytes`): room for a member list of
/// [`MAX_GROUP_MEMBERS`](crate::store::MAX_GROUP_MEMBERS) ids.
pub const DEFAULT_MAX_BODY: usize = 256 << 10;
/// HTTP connections one address may hold at once (`MaxConnsPerSource`).
pub const DEFAULT_MAX_PER_SOURCE: usize = 64;

/// Keys of httpmsgserver.conf: TeamTalk's, then ours.
pub const KNOWN_KEYS: &[&str] = &[
    "ListenIP",
    "ListenPort",
    "ConcurrentDBConnCnt",
    "DBServerIP*",
    "DBServerPort*",
    "RouteServerIP*",
    "RouteServerPort*",
    "AppKey",
    "AppKeyFile",
    "RequestTimeoutSecs",
    "MaxPending",
    "MaxBodyBytes",
    "MaxConnsPerSource",
    "AdminListen",
    "AdminToken",
    "LinkTlsCertFile",
    "LinkTlsKeyFile",
    "LinkTlsCaFile",
    "LinkTlsClientAuth",
    "LinkTlsServerName",
];

/// Why httpmsgserver.conf cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpMsgConfigError {
    /// A key is missing or does not parse.
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// The listen addresses.
    #[error(transparent)]
    Listen(#[from] crate::route::ConfigError),
    /// The cluster secret.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The `LinkTls*` keys.
    #[error(transparent)]
    Tls(#[from] TlsConfError),
    /// An upstream's host does not resolve.
    #[error("{origin}: cannot resolve {endpoint}")]
    Resolve {
        /// File name.
        origin: String,
        /// `host:port`.
        endpoint: String,
    },
    /// No app key: every request would be refused.
    #[error("{origin}: no AppKey or AppKeyFile: every request would be refused")]
    NoAppKey {
        /// File name.
        origin: String,
    },
    /// `AppKeyFile` cannot be read.
    #[error("{origin}: AppKeyFile {path}: {reason}")]
    AppKeyFile {
        /// File name.
        origin: String,
        /// The key file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// How to run an http_msg_server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpMsgConfig {
    /// Addresses of the HTTP port (`ListenIP`, `;`-separated; default
    /// 127.0.0.1).
    pub listen_ips: Vec<IpAddr>,
    /// Its port (`ListenPort`, 8400; 0 picks one).
    pub port: u16,
    /// db_proxy_servers (`DBServerIP<n>`/`DBServerPort<n>`).
    pub db: Vec<SocketAddr>,
    /// route_servers (`RouteServerIP<n>`/`RouteServerPort<n>`).
    pub route: Vec<SocketAddr>,
    /// The accepted app keys (`AppKey=K1;K2`, `AppKeyFile` one a line).
    pub app_keys: Vec<String>,
    /// Deadlines and bounds.
    pub limits: HttpMsgLimits,
    /// Largest request body (`MaxBodyBytes`).
    pub max_body: usize,
    /// HTTP connections one address may hold (`MaxConnsPerSource`).
    pub max_per_source: usize,
    /// Overrides the links' heartbeat interval and idle timeout (tests).
    pub link_timers: Option<(Duration, Duration)>,
    /// Admin endpoint.
    pub admin: Option<SocketAddr>,
    /// Admin bearer token.
    pub admin_token: Option<String>,
    /// The cluster secret its links prove.
    pub peers: PeerPolicy,
    /// TLS on the links to db_proxy and route_server, as msg_server's
    /// (`LinkTlsCaFile=`, optional `LinkTlsServerName=`,
    /// `LinkTlsCertFile=`/`LinkTlsKeyFile=` for a client certificate):
    /// for peers whose ports take TLS (`PeerTls*`).
    pub link_tls: Option<TlsSettings>,
}

impl HttpMsgConfig {
    /// An http_msg_server on `listen` with one db_proxy and one
    /// route_server, accepting `app_keys`.
    #[must_use]
    pub fn new(
        listen: SocketAddr,
        db: SocketAddr,
        route: SocketAddr,
        app_keys: Vec<String>,
    ) -> Self {
        Self {
            listen_ips: vec![listen.ip()],
            port: listen.port(),
            db: vec![db],
            route: vec![route],
            app_keys,
            limits: HttpMsgLimits::default(),
            max_body: DEFAULT_MAX_BODY,
            max_per_source: DEFAULT_MAX_PER_SOURCE,
            link_timers: None,
            admin: None,
            admin_token: None,
            peers: PeerPolicy::open(),
            link_tls: None,
        }
    }

    /// Reads httpmsgserver.conf. A relative `AppKeyFile` is taken from the
    /// conf's directory.
    ///
    /// # Errors
    /// [`HttpMsgConfigError`] naming the file and key.
    pub fn from_conf(conf: &Conf) -> Result<Self, HttpMsgConfigError> {
        conf.check_keys(&[KNOWN_KEYS, crate::cluster::KEYS].concat())?;
        if conf.get("ConcurrentDBConnCnt").is_some() {
            info!(
                key = "ConcurrentDBConnCnt",
                "key accepted for compatibility and not used: one link per db_proxy pipelines every request"
            );
        }
        let listen_ips = if conf.get("ListenIP").is_some() {
            listen_ips(conf, "ListenIP")?
        } else {
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
        };
        let port = conf.get_parsed("ListenPort")?.unwrap_or(DEFAULT_PORT);
        let upstream = |host: &str, port: &str| -> Result<Vec<SocketAddr>, HttpMsgConfigError> {
            conf.endpoints(host, port)?
                .into_iter()
                .map(|e| {
                    crate::msg::resolve(&e.host, e.port).ok_or_else(|| {
                        HttpMsgConfigError::Resolve {
                            origin: conf.origin().to_owned(),
                            endpoint: e.to_string(),
                        }
                    })
                })
                .collect()
        };
        let db = upstream("DBServerIP", "DBServerPort")?;
        let route = upstream("RouteServerIP", "RouteServerPort")?;
        let mut app_keys: Vec<String> = conf
            .get("AppKey")
            .unwrap_or("")
            .split(';')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(name) = conf.get("AppKeyFile") {
            let p = Path::new(name);
            let path = if p.is_absolute() {
                p.to_path_buf()
            } else {
                Path::new(conf.origin())
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default()
                    .join(p)
            };
            let text =
                std::fs::read_to_string(&path).map_err(|e| HttpMsgConfigError::AppKeyFile {
                    origin: conf.origin().to_owned(),
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            app_keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        if app_keys.is_empty() {
            return Err(HttpMsgConfigError::NoAppKey {
                origin: conf.origin().to_owned(),
            });
        }
        let mut cfg = Self {
            listen_ips,
            port,
            db,
            route,
            app_keys,
            ..Self::new(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
                Vec::new(),
            )
        };
        if let Some(s) = conf.get_parsed::<u64>("RequestTimeoutSecs")? {
            cfg.limits.request_timeout = Duration::from_secs(s.clamp(1, 300));
        }
        if let Some(n) = conf.get_parsed::<usize>("MaxPending")? {
            cfg.limits.max_pending = n.clamp(1, 1 << 20);
        }
        if let Some(n) = conf.get_parsed::<usize>("MaxBodyBytes")? {
            cfg.max_body = n.clamp(1024, 16 << 20);
        }
        if let Some(n) = conf.get_parsed::<usize>("MaxConnsPerSource")? {
            cfg.max_per_source = n.max(1);
        }
        cfg.admin = crate::runtime::admin::listen_from_conf(conf)?;
        cfg.admin_token = conf.get("AdminToken").map(str::to_owned);
        cfg.peers = PeerPolicy::from_conf(conf)?;
        cfg.link_tls = TlsSettings::from_conf(conf, "Link")?;
        Ok(cfg)
    }
}

/// A new app key: 128 random bits from the OS, as 32 hex digits (what
/// `teamtalk up` uses when given none).
///
/// # Errors
/// When the OS has no randomness to give.
pub fn generate_app_key() -> Result<String, getrandom::Error> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw)?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// Starts an http_msg_server.
///
/// # Errors
/// [`DaemonError`] when its port cannot be bound, or no db_proxy or
/// route_server is configured.
pub fn spawn(cfg: HttpMsgConfig) -> Result<RunningHttpMsg, DaemonError> {
    if cfg.db.is_empty() || cfg.route.is_empty() {
        return Err(DaemonError::Config {
            daemon: "http_msg_server",
            reason: "it needs a db_proxy_server (DBServerIP1) and a route_server (RouteServerIP1)"
                .to_owned(),
        });
    }
    let mut plan = Plan::<NoWorker>::new();
    let http = HttpConfig {
        keep_alive: true,
        max_body_bytes: cfg.max_body,
        // Larger bodies are read and dropped, then answered in TeamTalk's
        // JSON (413, code 1) rather than the machine's plain 413.
        max_discard_bytes: cfg.max_body.saturating_mul(4),
        ..HttpConfig::default()
    };
    for ip in &cfg.listen_ips {
        plan.listen(
            "http",
            "http",
            SocketAddr::new(*ip, cfg.port),
            PortKind::Http {
                config: http.clone(),
                max_per_source: Some(cfg.max_per_source.max(1)),
            },
        );
    }
    let link = |addr: SocketAddr| {
        let mut lc = LinkConfig::new(addr);
        if let Some((heartbeat, idle)) = cfg.link_timers {
            lc.heartbeat_interval = heartbeat;
            lc.idle_timeout = idle;
        }
        lc
    };
    let tls_error = |e: TlsConfError| DaemonError::Config {
        daemon: "http_msg_server",
        reason: e.to_string(),
    };
    let link_tls = LinkTls::from_settings(cfg.link_tls.as_ref()).map_err(tls_error)?;
    let mut add = |side: &'static str, addr: SocketAddr| {
        plan.link_over(side, link(addr), link_tls.as_ref())
            .map_err(tls_error)
    };
    let mut links = Upstreams::default();
    for addr in &cfg.db {
        links.db.push(add("db_proxy", *addr)?);
    }
    for addr in &cfg.route {
        links.route.push(add("route_server", *addr)?);
    }
    plan.admin(
        cfg.admin
            .map(|a| AdminSettings::with_token(a, cfg.admin_token.clone())),
    );
    plan.peer_policy(cfg.peers.clone());
    let app = HttpMsgApp::new(AppKeys::new(&cfg.app_keys), links, cfg.limits);
    runtime::start(app, plan)
}

#[cfg(test)]
mod tests;
