//! route_server: the directory of who is online where, and the relay
//! between msg_servers.
//!
//! Every msg_server keeps one connection to every route_server (port 8200,
//! `ListenMsgPort`). Over it the msg_server
//!
//! - announces everyone already logged in when it (re)connects
//!   (`CID_OTHER_ONLINE_USER_INFO`, possibly empty) and every login or
//!   logout afterwards (`CID_OTHER_USER_STATUS_UPDATE`);
//! - asks for the presence of users it does not host
//!   (`CID_BUDDY_LIST_USERS_STATUS_REQUEST`);
//! - hands over traffic for users connected elsewhere: messages, read
//!   notices, P2P commands, kicks, session removals, signature changes.
//!
//! route_server stores nothing on disk. Its whole state is, per msg_server
//! connection, the users logged in there and how many sessions of each
//! client type they have (a user may be on a PC and a phone, on the same
//! msg_server or on two).
//!
//! # Differences from TeamTalk's route_server
//!
//! - **Relays go where the recipients are.** TeamTalk sends every relayed
//!   PDU to every other msg_server; here a message, read notice, P2P
//!   command, kick or session-removal notice goes only to the msg_servers
//!   hosting one of its recipients (never back to the sender's own
//!   msg_server, which delivered locally already). The PDU is forwarded
//!   byte for byte. The cost is that a message racing its recipient's login
//!   on another msg_server can miss the live delivery; it is stored anyway
//!   and the client pulls it with its unread counts, exactly as after any
//!   reconnect.
//! - **Group messages** (`IMMsgData` with a group `msg_type`) go to every
//!   other msg_server, as in TeamTalk: route_server does not know group
//!   members, and each msg_server looks them up itself.
//! - **File notices** (`CID_FILE_NOTIFY`) go to the msg_servers hosting
//!   the receiver, like a message (TeamTalk: to every msg_server).
//! - **A msg_server that goes away** takes its users with it, as in
//!   TeamTalk, but here the users who thereby lose their last PC session
//!   are announced offline to everyone (TeamTalk left them "online" on the
//!   other msg_servers' clients). Symmetrically, a snapshot that brings a
//!   user's first PC session back announces the user online.
//! - **Users-status requests are bounded.** One 0x020a names at most
//!   [`MAX_STATUS_IDS`](crate::rules::sizing::MAX_STATUS_IDS) users, and its
//!   reply must fit a frame; otherwise it is answered with `IMRequestFailed`
//!   carrying its `attach_data` (0x020b has no result field; see
//!   [`crate::rules::failure`]) and counted in [`RouteCounters::refused`].
//!   TeamTalk built the reply whatever its size, and one over the frame
//!   limit was never sent: the client waited for ever.
//! - `CID_OTHER_ROLE_SET` (master or slave) is accepted and logged; TeamTalk
//!   stores it and never reads it.
//!
//! # Presence semantics (kept from TeamTalk)
//!
//! A user is **online** (`USER_STATUS_ONLINE`, 1) only while a PC session
//! (client type without bit 0x10) exists on some msg_server, and
//! **offline** (2) otherwise, even with phones connected. That is what
//! `CID_BUDDY_LIST_USERS_STATUS_RESPONSE` reports and what
//! `CID_BUDDY_LIST_STATUS_NOTIFY` announces, and what TeamTalk's msg_server
//! builds on: it chooses online versus offline file transfer and silent
//! versus audible pushes from it. Phones learn about their user's PC
//! through `CID_OTHER_LOGIN_STATUS_NOTIFY` instead.
//!
//! # Structure
//!
//! [`RouteApp`] is the whole protocol as a synchronous state machine (PDUs
//! in, [`Action`]s out, no I/O, generic over the connection id so unit tests
//! use integers); [`spawn`] runs it behind a `teamtalk-net` reactor.

mod app;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use teamtalk_conn::SessionConfig;
use teamtalk_net::ReactorConfig;

use std::sync::Arc;

use teamtalk_conn::tls::rustls::ServerConfig;

use crate::cluster::{ClusterError, PeerPolicy};
use crate::conf::{Conf, ConfError};
use crate::runtime::{self, AdminSettings, Conn, DaemonError, NoWorker, Plan, PortKind, Running};
use crate::tls::{TlsConfError, TlsSettings};

pub use app::{Action, RouteApp, RouteCounters};

/// A running route_server.
pub type RunningRoute = Running<RouteApp<Conn>>;

/// Starts a route_server: binds every listen address, then serves
/// msg_servers until stopped.
///
/// # Errors
/// [`DaemonError`] when a listener or thread cannot be set up.
pub fn spawn(config: RouteConfig) -> Result<RunningRoute, DaemonError> {
    let mut plan = Plan::<NoWorker>::new();
    plan.side("peers", config.reactor.clone());
    for addr in config.listen_addrs() {
        let kind = PortKind::Peers(SessionConfig::server_peer());
        match &config.peer_tls {
            Some(tls) => plan.listen_tls("peers", "msg_server", addr, kind, Arc::clone(tls)),
            None => plan.listen("peers", "msg_server", addr, kind),
        };
    }
    plan.admin(
        config
            .admin
            .map(|a| AdminSettings::with_token(a, config.admin_token.clone())),
    );
    plan.peer_policy(config.peers.clone());
    runtime::start(RouteApp::new(), plan)
}

/// The keys of `routeserver.conf` this daemon understands; any other key is
/// reported as a probable typo.
pub const KNOWN_KEYS: &[&str] = &[
    "ListenIP",
    "ListenMsgPort",
    "AdminListen",
    "AdminToken",
    "PeerTlsCertFile",
    "PeerTlsKeyFile",
    "PeerTlsCaFile",
    "PeerTlsClientAuth",
    "PeerTlsServerName",
];

/// How to run a route_server.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Addresses to listen on for msg_servers (`ListenIP`, several
    /// separated by `;` as in TeamTalk).
    pub listen_ips: Vec<IpAddr>,
    /// Port for msg_servers (`ListenMsgPort`, 8200 in the stock file; 0
    /// picks a free port, see [`RunningRoute::addrs`]).
    pub msg_port: u16,
    /// Reactor settings (threads, connection limit).
    pub reactor: ReactorConfig,
    /// Admin HTTP endpoint (`/metrics`, `/healthz`); our own conf key
    /// `AdminListen`. `None` serves none; port 0 picks one.
    pub admin: Option<SocketAddr>,
    /// Bearer token the admin endpoint requires (`AdminToken`; required
    /// when it listens beyond loopback).
    pub admin_token: Option<String>,
    /// The cluster secret and who may skip it (`ClusterSecret`,
    /// `ClusterSecretFile`, `AllowUnauthenticatedPeers`).
    pub peers: PeerPolicy,
    /// TLS on the msg_server port (`PeerTlsCertFile=`, `PeerTlsKeyFile=`,
    /// and `PeerTlsCaFile=` with `PeerTlsClientAuth=true` to require
    /// client certificates).
    pub peer_tls: Option<Arc<ServerConfig>>,
}

impl RouteConfig {
    /// Reads TeamTalk's `routeserver.conf` keys. Both are required, as in
    /// TeamTalk. Unknown and repeated keys are logged as warnings.
    ///
    /// # Errors
    /// A missing key, a port that is not a number, or a `ListenIP` entry
    /// that is not an IP address.
    pub fn from_conf(conf: &Conf) -> Result<Self, ConfigError> {
        conf.check_keys(&[KNOWN_KEYS, crate::cluster::KEYS].concat())?;
        Ok(Self {
            listen_ips: listen_ips(conf, "ListenIP")?,
            msg_port: conf.require("ListenMsgPort")?,
            reactor: ReactorConfig::default(),
            admin: crate::runtime::admin::listen_from_conf(conf)?,
            admin_token: conf.get("AdminToken").map(str::to_owned),
            peers: PeerPolicy::from_conf(conf)?,
            peer_tls: peer_tls(conf)?,
        })
    }

    /// 127.0.0.1 on a free port with a one-thread reactor: for tests and
    /// for running every daemon in one process.
    #[must_use]
    pub fn loopback() -> Self {
        Self {
            listen_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            msg_port: 0,
            reactor: ReactorConfig {
                threads: 1,
                ..ReactorConfig::default()
            },
            admin: None,
            admin_token: None,
            peers: PeerPolicy::open(),
            peer_tls: None,
        }
    }

    /// The socket addresses to bind, one per listen IP.
    #[must_use]
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listen_ips
            .iter()
            .map(|&ip| SocketAddr::new(ip, self.msg_port))
            .collect()
    }
}

/// Why a daemon's configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key is missing or does not parse (the message names file, line and
    /// key).
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// The cluster secret or the unauthenticated-peer list is unusable.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] TlsConfError),
    /// A listen-address list contains something that is not an IP address.
    #[error("{origin}: {key}: invalid value {value:?}: expected IP addresses separated by ';'")]
    ListenIp {
        /// File name.
        origin: String,
        /// The key, e.g. `ListenIP`.
        key: String,
        /// The offending entry.
        value: String,
    },
}

/// The TLS configuration of a daemon's server port (`PeerTls*` keys), if
/// any.
pub(crate) fn peer_tls(conf: &Conf) -> Result<Option<Arc<ServerConfig>>, TlsConfError> {
    TlsSettings::from_conf(conf, "Peer")?
        .map(|t| t.server_config())
        .transpose()
}

/// Reads a TeamTalk listen-address list: IP addresses separated by `;`
/// (`0.0.0.0`, `10.0.0.1;192.168.1.1`). Required and non-empty.
pub(crate) fn listen_ips(conf: &Conf, key: &str) -> Result<Vec<IpAddr>, ConfigError> {
    let raw: String = conf.require(key)?;
    let mut ips = Vec::new();
    for item in raw.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let ip = item.parse().map_err(|_| ConfigError::ListenIp {
            origin: conf.origin().to_owned(),
            key: key.to_owned(),
            value: item.to_owned(),
        })?;
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if ips.is_empty() {
        return Err(ConfigError::ListenIp {
            origin: conf.origin().to_owned(),
            key: key.to_owned(),
            value: raw,
        });
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_stock_file() {
        // Same keys, values and comment style as TeamTalk's routeserver.conf.
        let text =
            "ListenIP=0.0.0.0\t\t\t# all interfaces\nListenMsgPort=8200\t\t\t# msg_servers\n";
        let conf = Conf::parse_str(text, "routeserver.conf").unwrap();
        let cfg = RouteConfig::from_conf(&conf).unwrap();
        assert_eq!(cfg.listen_ips, vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]);
        assert_eq!(cfg.msg_port, 8200);
        assert_eq!(cfg.listen_addrs(), vec!["0.0.0.0:8200".parse().unwrap()]);
        // The admin endpoint is on by default, on loopback, on a free port.
        assert_eq!(cfg.admin, Some("127.0.0.1:0".parse().unwrap()));

        let conf = Conf::parse_str(&format!("{text}AdminListen=[::1]:0\n"), "r.conf").unwrap();
        assert!(conf.unknown_keys(KNOWN_KEYS).is_empty());
        let cfg = RouteConfig::from_conf(&conf).unwrap();
        assert_eq!(cfg.admin, Some("[::1]:0".parse().unwrap()));
    }

    #[test]
    fn several_ips_port_zero_and_errors() {
        let conf = Conf::parse_str(
            "ListenIP=127.0.0.1; ::1 ;127.0.0.1\nListenMsgPort=0\nTypo=1\n",
            "r.conf",
        )
        .unwrap();
        let cfg = RouteConfig::from_conf(&conf).unwrap();
        assert_eq!(cfg.listen_ips.len(), 2);
        assert_eq!(cfg.msg_port, 0);
        assert_eq!(conf.unknown_keys(KNOWN_KEYS), vec![(3, "Typo".to_owned())]);

        let conf = Conf::parse_str("ListenIP=localhost\nListenMsgPort=1\n", "r.conf").unwrap();
        let err = RouteConfig::from_conf(&conf).unwrap_err();
        assert!(matches!(err, ConfigError::ListenIp { ref value, .. } if value == "localhost"));
        assert!(err.to_string().starts_with("r.conf: ListenIP:"), "{err}");

        let conf = Conf::parse_str("ListenIP=;\nListenMsgPort=1\n", "r.conf").unwrap();
        assert!(matches!(
            RouteConfig::from_conf(&conf),
            Err(ConfigError::ListenIp { .. })
        ));

        let conf = Conf::parse_str("ListenIP=0.0.0.0\n", "r.conf").unwrap();
        let err = RouteConfig::from_conf(&conf).unwrap_err();
        assert_eq!(
            err.to_string(),
            "r.conf: ListenMsgPort: missing required setting"
        );
    }
}
