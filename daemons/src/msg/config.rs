//! msg_server settings, from TeamTalk's `msgserver.conf` or built in code.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use teamtalk_conn::SessionConfig;
use tracing::info;

use super::app::{Registration, SessionLimits};
use std::sync::Arc;

use teamtalk_conn::tls::rustls::ServerConfig;
use teamtalk_conn::{WsConfig, WsOrigins};

use crate::cluster::{ClusterError, PeerPolicy};
use crate::conf::{Conf, ConfError};
use crate::tls::{TlsConfError, TlsSettings};

/// Everything a msg_server needs to start.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MsgConfig {
    /// Client listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// How this server describes itself to login_server; port 0 means the
    /// bound client port.
    pub registration: Registration,
    /// db_proxy_server addresses.
    pub db: Vec<SocketAddr>,
    /// login_server addresses (their msg_server port).
    pub login: Vec<SocketAddr>,
    /// route_server addresses.
    pub route: Vec<SocketAddr>,
    /// file_server addresses (their msg_server port); none: file requests
    /// are answered with a failure.
    pub file: Vec<SocketAddr>,
    /// push_server addresses (`PushServerIPn`/`PushServerPortn`); none:
    /// nothing is pushed.
    pub push: Vec<SocketAddr>,
    /// The `aesKey` clients encode message text with (for the push text);
    /// `None`: TeamTalk's default.
    pub aes_key: Option<[u8; 32]>,
    /// Client session settings (login gate, timeouts, caps).
    pub session: SessionConfig,
    /// Reactor threads for client connections.
    pub threads: usize,
    /// Most client connections held at once.
    pub max_connections: usize,
    /// Overrides the links' heartbeat interval and idle timeout (tests).
    /// The idle timeout must exceed the peers' heartbeat interval
    /// ([`teamtalk_conn::SERVER_HEARTBEAT_INTERVAL`], 5 s: they do not echo
    /// ours), or a healthy link times out between two of their heartbeats.
    pub link_timers: Option<(Duration, Duration)>,
    /// Admin HTTP endpoint (`/metrics`, `/healthz`); our own conf key
    /// `AdminListen`. `None` serves none; port 0 picks one.
    pub admin: Option<SocketAddr>,
    /// Bearer token the admin endpoint requires (`AdminToken`; required
    /// when it listens beyond loopback).
    pub admin_token: Option<String>,
    /// Limits per client session (`MsgRateLimit=`: messages per second).
    pub limits: SessionLimits,
    /// A second client port over TLS (`TlsListenPort=` with `TlsCertFile=`
    /// and `TlsKeyFile=`), for clients that speak TLS; plain TCP stays on
    /// `ListenPort` for TeamTalk's clients.
    pub tls_listen: Option<(SocketAddr, Arc<ServerConfig>)>,
    /// TLS on the links to db_proxy, login and route servers
    /// (`LinkTlsCaFile=`, optional `LinkTlsServerName=`,
    /// `LinkTlsCertFile=`/`LinkTlsKeyFile=` for a client certificate).
    pub link_tls: Option<TlsSettings>,
    /// A client port for browsers over WebSocket (`WebSocketPort=`,
    /// `WebSocketOrigins=`, `WebSocketTls=true` for wss with the `Tls*`
    /// keys).
    pub websocket: Option<WebSocketPort>,
    /// The cluster secret its links prove (`ClusterSecret`,
    /// `ClusterSecretFile`).
    pub peers: PeerPolicy,
}

impl MsgConfig {
    /// A msg_server on `listen` talking to the given upstreams, with
    /// TeamTalk's timers.
    #[must_use]
    pub fn new(listen: SocketAddr, db: SocketAddr, login: SocketAddr, route: SocketAddr) -> Self {
        let ip = match listen.ip() {
            ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        Self {
            listen,
            registration: Registration {
                ip1: ip.to_string(),
                ip2: ip.to_string(),
                port: listen.port(),
                max_conn_cnt: 100_000,
                host_name: host_name(),
                ws_port: None,
                ws_tls: false,
            },
            db: vec![db],
            login: vec![login],
            route: vec![route],
            file: Vec::new(),
            push: Vec::new(),
            aes_key: None,
            session: SessionConfig::client(),
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            max_connections: 100_000,
            link_timers: None,
            admin: None,
            admin_token: None,
            peers: PeerPolicy::open(),
            limits: SessionLimits::default(),
            tls_listen: None,
            link_tls: None,
            websocket: None,
        }
    }

    /// Reads TeamTalk's `msgserver.conf` keys.
    ///
    /// Known but unused here: `ConcurrentDBConnCnt` (one link per db_proxy
    /// is enough: requests are pipelined). `aesKey` decodes message text
    /// for push notifications. `FileServerIPn`/`FileServerPortn` name the
    /// file_servers' msg_server ports (8601; TeamTalk's stock file says
    /// 8600, the client port, which cannot work).
    ///
    /// # Errors
    /// [`MsgConfigError`] naming the file, line and key.
    pub fn from_conf(conf: &Conf) -> Result<Self, MsgConfigError> {
        conf.check_keys(&[KNOWN_KEYS, crate::cluster::KEYS].concat())?;
        for key in ["ConcurrentDBConnCnt"] {
            if conf.get(key).is_some() {
                info!(key, "key accepted for compatibility and not used");
            }
        }
        let ip: String = conf
            .get_parsed("ListenIP")?
            .unwrap_or_else(|| "0.0.0.0".into());
        let port: u16 = conf.require("ListenPort")?;
        let listen =
            resolve(&ip, port).ok_or_else(|| MsgConfigError::Resolve(format!("{ip}:{port}")))?;
        let upstream = |host: &str, port: &str| -> Result<Vec<SocketAddr>, MsgConfigError> {
            conf.endpoints(host, port)?
                .into_iter()
                .map(|e| {
                    resolve(&e.host, e.port).ok_or_else(|| MsgConfigError::Resolve(e.to_string()))
                })
                .collect()
        };
        let mut cfg = Self::new(
            listen,
            SocketAddr::from(([127, 0, 0, 1], 10600)),
            SocketAddr::from(([127, 0, 0, 1], 8100)),
            SocketAddr::from(([127, 0, 0, 1], 8200)),
        );
        cfg.db = upstream("DBServerIP", "DBServerPort")?;
        cfg.login = upstream("LoginServerIP", "LoginServerPort")?;
        cfg.route = upstream("RouteServerIP", "RouteServerPort")?;
        cfg.file = upstream("FileServerIP", "FileServerPort")?;
        cfg.push = upstream("PushServerIP", "PushServerPort")?;
        if let Some(key) = conf.get("aesKey") {
            match <[u8; 32]>::try_from(key.as_bytes()) {
                Ok(k) => cfg.aes_key = Some(k),
                Err(_) => return Err(conf.invalid_value("aesKey", "32 bytes").into()),
            }
        }
        if let Some(ip1) = conf.get("IpAddr1") {
            cfg.registration.ip1 = ip1.to_owned();
        }
        cfg.registration.ip2 = conf
            .get("IpAddr2")
            .map_or_else(|| cfg.registration.ip1.clone(), str::to_owned);
        if let Some(max) = conf.get_parsed("MaxConnCnt")? {
            cfg.registration.max_conn_cnt = max;
        }
        cfg.admin = crate::runtime::admin::listen_from_conf(conf)?;
        cfg.admin_token = conf.get("AdminToken").map(str::to_owned);
        cfg.peers = PeerPolicy::from_conf(conf)?;
        cfg.limits.messages_per_second = conf.get_parsed::<u32>("MsgRateLimit")?.filter(|n| *n > 0);
        if let Some(port) = conf.get_parsed::<u16>("TlsListenPort")? {
            let tls = TlsSettings::from_conf(conf, "")?.ok_or_else(|| {
                MsgConfigError::Tls(TlsConfError::Missing {
                    origin: conf.origin().to_owned(),
                    key: "TlsCertFile".to_owned(),
                    why: "TlsListenPort is set",
                })
            })?;
            cfg.tls_listen = Some((SocketAddr::new(cfg.listen.ip(), port), tls.server_config()?));
        }
        cfg.link_tls = TlsSettings::from_conf(conf, "Link")?;
        cfg.websocket = websocket_from_conf(conf, cfg.listen.ip())?;
        Ok(cfg)
    }
}

/// The `msgserver.conf` keys msg_server reads or accepts.
pub const KNOWN_KEYS: &[&str] = &[
    "ListenIP",
    "ListenPort",
    "ConcurrentDBConnCnt",
    "DBServerIP*",
    "DBServerPort*",
    "LoginServerIP*",
    "LoginServerPort*",
    "RouteServerIP*",
    "RouteServerPort*",
    "PushServerIP*",
    "PushServerPort*",
    "FileServerIP*",
    "FileServerPort*",
    "IpAddr1",
    "IpAddr2",
    "MaxConnCnt",
    "aesKey",
    "AdminListen",
    "AdminToken",
    "MsgRateLimit",
    "TlsListenPort",
    "TlsCertFile",
    "TlsKeyFile",
    "TlsCaFile",
    "TlsClientAuth",
    "TlsServerName",
    "LinkTlsCertFile",
    "LinkTlsKeyFile",
    "LinkTlsCaFile",
    "LinkTlsClientAuth",
    "LinkTlsServerName",
    "WebSocketPort",
    "WebSocketOrigins",
    "WebSocketTls",
];

/// msg_server's WebSocket port: each binary message one PDU, the same
/// client sessions as on the TCP port.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebSocketPort {
    /// Where to listen (port 0 picks one).
    pub addr: SocketAddr,
    /// Allowed origins and limits.
    pub ws: WsConfig,
    /// wss: TLS around the WebSocket.
    pub tls: Option<Arc<ServerConfig>>,
}

impl WebSocketPort {
    /// A plain (ws://) port accepting pages of `origins`.
    #[must_use]
    pub fn new(addr: SocketAddr, origins: WsOrigins) -> Self {
        Self {
            addr,
            ws: WsConfig::new(origins),
            tls: None,
        }
    }
}

/// Reads `WebSocketOrigins=`: `*`, or origins separated by `;`, `,` or
/// spaces.
#[must_use]
pub fn parse_origins(raw: &str) -> WsOrigins {
    let list: Vec<String> = raw
        .split([';', ',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if list.iter().any(|o| o == "*") {
        WsOrigins::Any
    } else {
        WsOrigins::List(list.into())
    }
}

fn websocket_from_conf(
    conf: &Conf,
    ip: std::net::IpAddr,
) -> Result<Option<WebSocketPort>, MsgConfigError> {
    let Some(port) = conf.get_parsed::<u16>("WebSocketPort")? else {
        return Ok(None);
    };
    let origins = match conf.get("WebSocketOrigins").map(parse_origins) {
        Some(WsOrigins::List(l)) if l.is_empty() => None,
        other => other,
    }
    .ok_or_else(|| MsgConfigError::WebSocketOrigins {
        origin: conf.origin().to_owned(),
    })?;
    let mut ws = WebSocketPort::new(SocketAddr::new(ip, port), origins);
    if conf.get_parsed::<bool>("WebSocketTls")?.unwrap_or(false) {
        let tls = TlsSettings::from_conf(conf, "")?.ok_or_else(|| {
            MsgConfigError::Tls(TlsConfError::Missing {
                origin: conf.origin().to_owned(),
                key: "TlsCertFile".to_owned(),
                why: "WebSocketTls is true",
            })
        })?;
        ws.tls = Some(tls.server_config()?);
    }
    Ok(Some(ws))
}

/// A bad msg_server configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MsgConfigError {
    /// A key is missing or has a bad value.
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// The cluster secret is unusable.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] TlsConfError),
    /// A host name does not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// `WebSocketPort` without the origins browsers may come from.
    #[error(
        "{origin}: WebSocketPort needs WebSocketOrigins: the web origins allowed to connect \
         (e.g. http://chat.example.com:8080), or * for any"
    )]
    WebSocketOrigins {
        /// The conf file.
        origin: String,
    },
}

/// Resolves `host:port`, preferring IPv4 (TeamTalk configs say `localhost`).
pub(crate) fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().ok()?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_teamtalk_msgserver_conf() {
        let text = "ListenIP=127.0.0.1\nListenPort=0\nConcurrentDBConnCnt=1\n\
            DBServerIP1=127.0.0.1\nDBServerPort1=10600\n\
            LoginServerIP1=localhost\nLoginServerPort1=8100\n\
            RouteServerIP1=localhost\nRouteServerPort1=8200\n\
            IpAddr1=10.0.0.1 # telecom\nIpAddr2=10.0.0.2\nMaxConnCnt=500\n\
            FileServerIP1=127.0.0.1\nFileServerPort1=8601\n\
            AdminListen=127.0.0.1:9100\n";
        let conf = Conf::parse_str(text, "msgserver.conf").unwrap();
        let cfg = MsgConfig::from_conf(&conf).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(cfg.db, vec!["127.0.0.1:10600".parse().unwrap()]);
        assert_eq!(cfg.login, vec!["127.0.0.1:8100".parse().unwrap()]);
        assert_eq!(cfg.file, vec!["127.0.0.1:8601".parse().unwrap()]);
        assert_eq!(cfg.registration.ip1, "10.0.0.1");
        assert_eq!(cfg.registration.ip2, "10.0.0.2");
        assert_eq!(cfg.registration.max_conn_cnt, 500);
        assert_eq!(cfg.admin, Some("127.0.0.1:9100".parse().unwrap()));
        assert!(conf.unknown_keys(KNOWN_KEYS).is_empty());
    }

    #[test]
    fn bad_port_names_file_line_and_key() {
        let conf = Conf::parse_str("ListenPort=80x\n", "msgserver.conf").unwrap();
        let err = MsgConfig::from_conf(&conf).unwrap_err().to_string();
        assert!(
            err.contains("msgserver.conf") && err.contains("ListenPort"),
            "{err}"
        );
    }
}
