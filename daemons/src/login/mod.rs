//! login_server: tells clients which msg_server to connect to.
//!
//! It has three doors:
//!
//! - **msg_server port** (8100, `MsgServerPort`): every msg_server keeps a
//!   connection here, registers with `CID_OTHER_MSG_SERV_INFO` (its
//!   addresses, port and capacity) and reports each client connection it
//!   gains or loses with `CID_OTHER_USER_CNT_UPDATE`. A msg_server whose
//!   connection closes, including by silence (no heartbeat for 30 s), is no
//!   longer offered.
//! - **HTTP port** (8080, `HttpPort`): `GET /msg_server` answers the JSON
//!   clients read (`code` 0 with `priorIP`, `backupIP`, `msfsPrior`,
//!   `msfsBackup`, `discovery` and `port` as a string; `code` 1 when no
//!   msg_server is registered, 2 when all are full). The least-loaded
//!   msg_server below its maximum wins, its load being the clients it
//!   reported plus the answers naming it whose login it has not reported
//!   yet (for at most 10 s), so a burst of clients spreads evenly instead
//!   of all going where the reports were lowest when it began (see
//!   [`teamtalk_conn::LoadTable`]).
//! - **legacy client port** (8008, `ClientPort`): `CID_LOGIN_REQ_MSGSERVER`
//!   answered with `CID_LOGIN_RES_MSGSERVER`, then the connection is closed.
//!   TeamTalk deprecated this path and its own implementation never
//!   answers (a misplaced `else` keeps client connections out of its
//!   dispatch table); this one works. Optional: without `ClientPort` the
//!   port is not opened.
//!
//! # HTTP details
//!
//! The HTTP port runs on the shared HTTP layer (`teamtalk_conn::HttpConn`):
//! one request per connection, any method (as in TeamTalk; `HEAD` gets no
//! body), `Content-Type: text/html;charset=utf-8` as TeamTalk sends,
//! `Connection: close`. A request head over 8 KiB or a body over 1024
//! bytes is answered 431 or 413 (TeamTalk closes anything over 1024 bytes
//! as an attack; browsers' heads with cookies need more, see
//! [`MAX_HTTP_HEAD`]), a client that has not
//! sent its request 10 s after connecting gets 408 (TeamTalk waits 60 s),
//! and one address may hold at most [`DEFAULT_HTTP_MAX_PER_SOURCE`]
//! connections, so slow clients never keep others out.
//!
//! # Web client
//!
//! The browser client ([`WebClient`], files in `daemons/web/client/`
//! embedded in the binary) is served at the root: `/`, its scripts, and
//! our `.proto` files under `/proto/`. It asks `/msg_server?transport=ws`
//! on the same origin and opens a msg_server's WebSocket port.
//! `WebClient=false` turns it off. Any other path gets a 404.
//!
//! # Structure
//!
//! [`LoginApp`] is the whole daemon as a pure state machine over one
//! [`Directory`]; [`spawn`] runs it on the shared [`runtime`].

mod app;
mod web;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use teamtalk_conn::{Heartbeat, HttpConfig, MsgServerLoad, ServiceUrls, SessionConfig};
use teamtalk_net::ReactorConfig;

use crate::cluster::PeerPolicy;
use crate::conf::Conf;
use crate::route::listen_ips;
use crate::runtime::{self, AdminSettings, Conn, DaemonError, NoWorker, Plan, PortKind, Running};

pub use crate::route::ConfigError;
pub use app::{Action, Directory, LoginApp, LoginCounters, MSG_SERVER_PATH, PeerKind};
pub use web::WebClient;

/// A running login_server.
pub type RunningLogin = Running<LoginApp<Conn>>;

/// Largest PDU on the legacy client port: the query is a few bytes.
const LEGACY_MAX_FRAME: u32 = 4096;

/// Starts a login_server: binds every port, then serves until stopped.
///
/// # Errors
/// [`DaemonError`] when a port cannot be bound or a thread cannot start;
/// nothing keeps running then.
pub fn spawn(config: LoginConfig) -> Result<RunningLogin, DaemonError> {
    let mut plan = Plan::<NoWorker>::new();
    plan.side("peers", config.reactor.clone());
    let mut ports = HashMap::new();
    for addr in LoginConfig::addrs(&config.msg_server_ips, config.msg_server_port) {
        let kind = PortKind::Peers(SessionConfig::server_peer());
        let id = match &config.peer_tls {
            Some(tls) => plan.listen_tls("peers", "msg_server", addr, kind, Arc::clone(tls)),
            None => plan.listen("peers", "msg_server", addr, kind),
        };
        ports.insert(id, PeerKind::MsgServer);
    }
    let http = HttpConfig {
        header_timeout: config.http_timeout,
        body_timeout: config.http_timeout,
        keep_alive: false,
        max_head_bytes: MAX_HTTP_HEAD,
        max_body_bytes: MAX_HTTP_REQUEST,
        ..HttpConfig::default()
    };
    for addr in LoginConfig::addrs(&config.http_ips, config.http_port) {
        let id = plan.listen(
            "http",
            "http",
            addr,
            PortKind::Http {
                config: http.clone(),
                max_per_source: Some(config.http_max_per_source.max(1)),
            },
        );
        ports.insert(id, PeerKind::Http);
    }
    if let Some(port) = config.client_port {
        let client_cfg = legacy_client_config(config.http_timeout);
        for addr in LoginConfig::addrs(&config.client_ips, port) {
            let id = plan.listen("peers", "client", addr, PortKind::Peers(client_cfg.clone()));
            ports.insert(id, PeerKind::Client);
        }
    }
    plan.admin(
        config
            .admin
            .map(|a| AdminSettings::with_token(a, config.admin_token.clone())),
    );
    plan.peer_policy(config.peers.clone());
    let app = LoginApp::new(Directory::new(config.urls.clone()), ports)
        .with_cors(config.cors.clone())
        .with_web_client(config.web_client.then(WebClient::new));
    runtime::start(app, plan)
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
    ///
    /// # Panics
    /// Never for a login_server started by [`spawn`], which always has a
    /// msg_server port.
    #[must_use]
    pub fn msg_server_addr(&self) -> SocketAddr {
        self.addrs_of("msg_server")[0]
    }

    /// The first HTTP address: `http://<it>/msg_server` is what clients
    /// are configured with.
    ///
    /// # Panics
    /// Never for a login_server started by [`spawn`], which always has an
    /// HTTP port.
    #[must_use]
    pub fn http_addr(&self) -> SocketAddr {
        self.addrs_of("http")[0]
    }

    /// The first legacy client address, if that port is open.
    #[must_use]
    pub fn client_addr(&self) -> Option<SocketAddr> {
        self.addrs_of("client").first().copied()
    }

    /// The registered msg_servers with their current load (empty when the
    /// daemon does not answer).
    #[must_use]
    pub fn msg_servers(&self) -> Vec<MsgServerLoad> {
        self.inspect(|app| app.directory().msg_servers())
            .unwrap_or_default()
    }

    /// Client connections over all msg_servers, as they report them.
    #[must_use]
    pub fn total_online(&self) -> u64 {
        self.inspect(|app| app.directory().total_online())
            .unwrap_or_default()
    }

    /// What `GET /msg_server` would answer right now.
    #[must_use]
    pub fn msg_server_json(&self) -> String {
        self.inspect(|app| app.directory().msg_server_json(false))
            .unwrap_or_default()
    }

    /// The PDU-side counters.
    #[must_use]
    pub fn counters(&self) -> LoginCounters {
        self.inspect(LoginApp::counters).unwrap_or_default()
    }
}

/// The keys of `loginserver.conf` this daemon understands; any other key is
/// reported as a probable typo.
pub const KNOWN_KEYS: &[&str] = &[
    "ClientListenIP",
    "ClientPort",
    "HttpListenIP",
    "HttpPort",
    "MsgServerListenIP",
    "MsgServerPort",
    "msfs",
    "discovery",
    "AdminListen",
    "AdminToken",
    "PeerTlsCertFile",
    "PeerTlsKeyFile",
    "PeerTlsCaFile",
    "PeerTlsClientAuth",
    "PeerTlsServerName",
    "CorsOrigins",
    "WebClient",
];

/// TeamTalk's limit on an HTTP request body; anything longer is closed
/// (`/msg_server` takes none).
pub const MAX_HTTP_REQUEST: usize = 1024;
/// Longest request head. TeamTalk allowed 1024 bytes for the whole
/// request, but a browser's head alone is over 600 bytes (Chromium's
/// client hints, `Accept`, `Sec-Fetch-*`) before any cookie, and cookies
/// of every other site on the same host name come along whatever the
/// port: 8 KiB, the WebSocket upgrade's limit, keeps the web client
/// working where other applications share the host.
pub const MAX_HTTP_HEAD: usize = 8 << 10;
/// How long an HTTP client has to send its request.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP connections one address may hold at once; more are closed on
/// accept, so a flood from one place cannot keep other clients out.
pub const DEFAULT_HTTP_MAX_PER_SOURCE: usize = 64;

/// How to run a login_server.
#[derive(Debug, Clone)]
pub struct LoginConfig {
    /// Addresses for msg_servers (`MsgServerListenIP`, `;`-separated).
    pub msg_server_ips: Vec<IpAddr>,
    /// Port for msg_servers (`MsgServerPort`, 8100; 0 picks a free one).
    pub msg_server_port: u16,
    /// Addresses for HTTP (`HttpListenIP`).
    pub http_ips: Vec<IpAddr>,
    /// HTTP port (`HttpPort`, 8080; 0 picks a free one).
    pub http_port: u16,
    /// Addresses for the legacy client port (`ClientListenIP`).
    pub client_ips: Vec<IpAddr>,
    /// Legacy client port (`ClientPort`, 8008); `None` leaves it closed.
    pub client_port: Option<u16>,
    /// The URLs handed out with a msg_server: `msfs` (as both `msfsPrior`
    /// and `msfsBackup`, as TeamTalk does) and `discovery`.
    pub urls: ServiceUrls,
    /// Time an HTTP client has to send its request.
    pub http_timeout: Duration,
    /// HTTP connections one address may hold at once.
    pub http_max_per_source: usize,
    /// Reactor settings for the msg_server and legacy client ports.
    pub reactor: ReactorConfig,
    /// Admin HTTP endpoint (`/metrics`, `/healthz`); our own conf key
    /// `AdminListen`. `None` serves none; port 0 picks one.
    pub admin: Option<SocketAddr>,
    /// Bearer token the admin endpoint requires (`AdminToken`; required
    /// when it listens beyond loopback).
    pub admin_token: Option<String>,
    /// The cluster secret and who may skip it, for the msg_server port.
    pub peers: PeerPolicy,
    /// TLS on the msg_server port (`PeerTls*` keys).
    pub peer_tls: Option<Arc<teamtalk_conn::tls::rustls::ServerConfig>>,
    /// Web origins whose pages may read `/msg_server` from elsewhere
    /// (`CorsOrigins=`, same form as msg_server's `WebSocketOrigins`).
    pub cors: Option<teamtalk_conn::WsOrigins>,
    /// Serve the web client at the root of the HTTP port (`WebClient=`,
    /// ours; on unless `false`).
    pub web_client: bool,
}

impl LoginConfig {
    /// Reads TeamTalk's `loginserver.conf` keys. `MsgServerListenIP`,
    /// `MsgServerPort`, `HttpListenIP`, `HttpPort`, `msfs` and `discovery`
    /// are required, as in TeamTalk; the legacy client port is opened only
    /// when `ClientPort` is set (and then needs `ClientListenIP`). Unknown
    /// and repeated keys are logged as warnings.
    ///
    /// # Errors
    /// A missing key, a port that is not a number, or a listen-address entry
    /// that is not an IP address.
    pub fn from_conf(conf: &Conf) -> Result<Self, ConfigError> {
        conf.check_keys(&[KNOWN_KEYS, crate::cluster::KEYS].concat())?;
        let client_port: Option<u16> = conf.get_parsed("ClientPort")?;
        let client_ips = match client_port {
            Some(_) => listen_ips(conf, "ClientListenIP")?,
            None => Vec::new(),
        };
        let msfs: String = conf.require("msfs")?;
        Ok(Self {
            msg_server_ips: listen_ips(conf, "MsgServerListenIP")?,
            msg_server_port: conf.require("MsgServerPort")?,
            http_ips: listen_ips(conf, "HttpListenIP")?,
            http_port: conf.require("HttpPort")?,
            client_ips,
            client_port,
            urls: ServiceUrls {
                msfs_prior: msfs.clone(),
                msfs_backup: msfs,
                discovery: conf.require("discovery")?,
            },
            http_timeout: DEFAULT_HTTP_TIMEOUT,
            http_max_per_source: DEFAULT_HTTP_MAX_PER_SOURCE,
            reactor: ReactorConfig::default(),
            admin: crate::runtime::admin::listen_from_conf(conf)?,
            admin_token: conf.get("AdminToken").map(str::to_owned),
            peers: PeerPolicy::from_conf(conf)?,
            peer_tls: crate::route::peer_tls(conf)?,
            cors: conf.get("CorsOrigins").map(crate::msg::parse_origins),
            web_client: conf.get_parsed("WebClient")?.unwrap_or(true),
        })
    }

    /// Every port on 127.0.0.1 with a free port number (the legacy client
    /// port included), empty URLs and a one-thread reactor: for tests and
    /// for running every daemon in one process.
    #[must_use]
    pub fn loopback() -> Self {
        let local = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        Self {
            msg_server_ips: local.clone(),
            msg_server_port: 0,
            http_ips: local.clone(),
            http_port: 0,
            client_ips: local,
            client_port: Some(0),
            urls: ServiceUrls::default(),
            http_timeout: DEFAULT_HTTP_TIMEOUT,
            http_max_per_source: DEFAULT_HTTP_MAX_PER_SOURCE,
            reactor: ReactorConfig {
                threads: 1,
                ..ReactorConfig::default()
            },
            admin: None,
            admin_token: None,
            peers: PeerPolicy::open(),
            peer_tls: None,
            cors: None,
            web_client: true,
        }
    }

    fn addrs(ips: &[IpAddr], port: u16) -> Vec<SocketAddr> {
        ips.iter().map(|&ip| SocketAddr::new(ip, port)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same keys, values and comment style as TeamTalk's loginserver.conf.
    const STOCK: &str = "\
# config format spec
# this is a commet

ClientListenIP=0.0.0.0\t\t# can use multiple ip, seperate by ';'
ClientPort=8008
HttpListenIP=0.0.0.0
HttpPort=8080
MsgServerListenIP=0.0.0.0 \t# can use multiple ip, seperate by ';'
MsgServerPort=8100

msfs=http://127.0.0.1:8700/

discovery=http://127.0.0.1/api/discovery
";

    #[test]
    fn reads_the_stock_file() {
        let conf = Conf::parse_str(STOCK, "loginserver.conf").unwrap();
        assert!(conf.unknown_keys(KNOWN_KEYS).is_empty());
        let cfg = LoginConfig::from_conf(&conf).unwrap();
        let any = vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)];
        assert_eq!(cfg.msg_server_ips, any);
        assert_eq!(cfg.msg_server_port, 8100);
        assert_eq!(cfg.http_ips, any);
        assert_eq!(cfg.http_port, 8080);
        assert_eq!(cfg.client_ips, any);
        assert_eq!(cfg.client_port, Some(8008));
        assert_eq!(cfg.urls.msfs_prior, "http://127.0.0.1:8700/");
        assert_eq!(cfg.urls.msfs_backup, "http://127.0.0.1:8700/");
        assert_eq!(cfg.urls.discovery, "http://127.0.0.1/api/discovery");
        assert_eq!(cfg.http_timeout, DEFAULT_HTTP_TIMEOUT);
        // The admin endpoint is on by default, on loopback, on a free port.
        assert_eq!(cfg.admin, Some("127.0.0.1:0".parse().unwrap()));

        let with_admin = format!("{STOCK}AdminListen=127.0.0.1:9101\n");
        let conf = Conf::parse_str(&with_admin, "loginserver.conf").unwrap();
        assert!(conf.unknown_keys(KNOWN_KEYS).is_empty());
        let cfg = LoginConfig::from_conf(&conf).unwrap();
        assert_eq!(cfg.admin, Some("127.0.0.1:9101".parse().unwrap()));
    }

    #[test]
    fn legacy_port_is_optional_and_required_keys_are_checked() {
        let text: String = STOCK
            .lines()
            .filter(|l| !l.starts_with("Client"))
            .map(|l| format!("{l}\n"))
            .collect();
        let conf = Conf::parse_str(&text, "loginserver.conf").unwrap();
        let cfg = LoginConfig::from_conf(&conf).unwrap();
        assert_eq!(cfg.client_port, None);
        assert!(cfg.client_ips.is_empty());

        let text = STOCK.replace("ClientListenIP=0.0.0.0", "ClientListenIP=");
        let conf = Conf::parse_str(&text, "loginserver.conf").unwrap();
        let err = LoginConfig::from_conf(&conf).unwrap_err();
        assert_eq!(
            err.to_string(),
            "loginserver.conf: ClientListenIP: missing required setting"
        );

        let text = STOCK.replace("discovery=", "#discovery=");
        let conf = Conf::parse_str(&text, "loginserver.conf").unwrap();
        assert!(LoginConfig::from_conf(&conf).is_err());

        let text = STOCK.replace("HttpPort=8080", "HttpPort=http");
        let conf = Conf::parse_str(&text, "loginserver.conf").unwrap();
        let err = LoginConfig::from_conf(&conf).unwrap_err();
        assert!(err.to_string().contains("HttpPort"), "{err}");

        let text = STOCK.replace(
            "MsgServerListenIP=0.0.0.0",
            "MsgServerListenIP=127.0.0.1;::1",
        );
        let conf = Conf::parse_str(&text, "loginserver.conf").unwrap();
        let cfg = LoginConfig::from_conf(&conf).unwrap();
        assert_eq!(LoginConfig::addrs(&cfg.msg_server_ips, 0).len(), 2);
    }
}
