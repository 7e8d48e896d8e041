//! file_server settings, from TeamTalk's `fileserver.conf` or built in code.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use teamtalk_conn::tls::rustls::ServerConfig;
use tracing::{info, warn};

use crate::cluster::PeerPolicy;
use crate::conf::Conf;
use crate::route::{ConfigError, listen_ips, peer_tls};

/// TeamTalk's client port (`ClientListenPort`).
pub const DEFAULT_CLIENT_PORT: u16 = 8600;
/// TeamTalk's msg_server port (`MsgServerListenPort`).
pub const DEFAULT_MSG_PORT: u16 = 8601;
/// TeamTalk's `TaskTimeout` (seconds).
pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(60);
/// Default largest offline file (`MaxFileBytes`): 1 GiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1 << 30;
/// Default disk quota for offline files (`QuotaBytes`): 16 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 16 << 30;
/// Default time an uploaded offline file waits for its receiver
/// (`OfflineRetentionSecs`): 7 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default most tasks held at once (`MaxTasks`).
pub const DEFAULT_MAX_TASKS: usize = 10_000;
/// Default most tasks one sender may have open at once (`MaxTasksPerUser`).
pub const DEFAULT_MAX_TASKS_PER_USER: usize = 32;
/// Default directory of offline files (`DataDir`), TeamTalk's
/// `<cwd>/offline_file`.
pub const DEFAULT_DATA_DIR: &str = "offline_file";

/// The limits a file_server applies; see [`FileConfig`] for the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// How long a task may wait for its parties (`TaskTimeout`): an online
    /// task for both to log in, an offline upload for its uploader to come
    /// back, a pull for its answer.
    pub task_timeout: Duration,
    /// Largest offline file accepted.
    pub max_file_bytes: u64,
    /// Bytes all offline files together may take (reserved at the task's
    /// creation by its announced size).
    pub quota_bytes: u64,
    /// How long an uploaded file waits for its receiver before it is
    /// removed.
    pub retention: Duration,
    /// Most tasks at once.
    pub max_tasks: usize,
    /// Most tasks one sender may have at once.
    pub max_tasks_per_user: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            task_timeout: DEFAULT_TASK_TIMEOUT,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            quota_bytes: DEFAULT_QUOTA_BYTES,
            retention: DEFAULT_RETENTION,
            max_tasks: DEFAULT_MAX_TASKS,
            max_tasks_per_user: DEFAULT_MAX_TASKS_PER_USER,
        }
    }
}

/// Everything a file_server needs to start.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FileConfig {
    /// Client listen addresses (`ClientListenIP`, `;`-separated).
    pub client_ips: Vec<IpAddr>,
    /// Client port (`ClientListenPort`, 8600; 0 picks a free one).
    pub client_port: u16,
    /// msg_server listen address (`MsgServerListenIP`).
    pub msg_ips: Vec<IpAddr>,
    /// msg_server port (`MsgServerListenPort`, 8601; 0 picks a free one).
    pub msg_port: u16,
    /// Addresses clients are told to connect to (0x0734): balloonwj's
    /// `FileServerIp` (IPs, with the client port) or our `ClientAdvertise`
    /// (`host:port`, `;`-separated). Empty: the client listen addresses,
    /// with 127.0.0.1 for an unspecified one. A port 0 means the bound
    /// client port.
    pub advertise: Vec<(String, u16)>,
    /// Where offline files live (`DataDir`).
    pub data_dir: PathBuf,
    /// Limits (`TaskTimeout`, `MaxFileBytes`, `QuotaBytes`,
    /// `OfflineRetentionSecs`, `MaxTasks`, `MaxTasksPerUser`).
    pub limits: Limits,
    /// Disk worker threads (tasks are spread over them, each task's work
    /// stays in order on one).
    pub disk_workers: usize,
    /// Reactor threads for client connections.
    pub threads: usize,
    /// Admin endpoint (`AdminListen`).
    pub admin: Option<SocketAddr>,
    /// Bearer token of the admin endpoint (`AdminToken`).
    pub admin_token: Option<String>,
    /// The cluster secret msg_servers must prove (`ClusterSecret`,
    /// `ClusterSecretFile`, `AllowUnauthenticatedPeers`).
    pub peers: PeerPolicy,
    /// TLS on the msg_server port (`PeerTls*` keys).
    pub peer_tls: Option<Arc<ServerConfig>>,
}

impl FileConfig {
    /// 127.0.0.1 on free ports, offline files in `data_dir`: for tests and
    /// `teamtalk up --any-ports`.
    #[must_use]
    pub fn loopback(data_dir: impl Into<PathBuf>) -> Self {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Self {
            client_ips: vec![lo],
            client_port: 0,
            msg_ips: vec![lo],
            msg_port: 0,
            advertise: Vec::new(),
            data_dir: data_dir.into(),
            limits: Limits::default(),
            disk_workers: 2,
            threads: 1,
            admin: None,
            admin_token: None,
            peers: PeerPolicy::open(),
            peer_tls: None,
        }
    }

    /// Reads TeamTalk's `fileserver.conf`: `ClientListenIP`,
    /// `ClientListenPort`, `MsgServerListenIP` and `MsgServerListenPort`
    /// are required, as in TeamTalk; `TaskTimeout` defaults to 60 s.
    /// balloonwj's `FileServerIp` and our keys are optional (see the
    /// fields). The old `Address`/`ListenPort` pair of TeamTalk's
    /// auto_setup file is recognised and ignored with a log line: its
    /// file_server never read it.
    ///
    /// # Errors
    /// A missing key or a value that does not parse, naming file, line and
    /// key.
    pub fn from_conf(conf: &Conf) -> Result<Self, ConfigError> {
        conf.check_keys(&[KNOWN_KEYS, crate::cluster::KEYS].concat())?;
        for key in ["Address", "ListenPort"] {
            if conf.get(key).is_some() {
                info!(
                    key,
                    "key of TeamTalk's old fileserver.conf accepted and not used; \
                     set ClientListenIP and ClientListenPort"
                );
            }
        }
        let mut cfg = Self::loopback(
            conf.get("DataDir")
                .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from),
        );
        cfg.client_ips = listen_ips(conf, "ClientListenIP")?;
        cfg.client_port = conf.require("ClientListenPort")?;
        cfg.msg_ips = listen_ips(conf, "MsgServerListenIP")?;
        cfg.msg_port = conf.require("MsgServerListenPort")?;
        if let Some(secs) = conf.get_parsed::<u64>("TaskTimeout")? {
            cfg.limits.task_timeout = Duration::from_secs(secs.max(1));
        }
        if let Some(n) = conf.get_parsed::<u64>("MaxFileBytes")? {
            cfg.limits.max_file_bytes = n.min(u64::from(u32::MAX));
        }
        if let Some(n) = conf.get_parsed::<u64>("QuotaBytes")? {
            cfg.limits.quota_bytes = n;
        }
        if let Some(secs) = conf.get_parsed::<u64>("OfflineRetentionSecs")? {
            cfg.limits.retention = Duration::from_secs(secs.max(1));
        }
        if let Some(n) = conf.get_parsed::<usize>("MaxTasks")? {
            cfg.limits.max_tasks = n.max(1);
        }
        if let Some(n) = conf.get_parsed::<usize>("MaxTasksPerUser")? {
            cfg.limits.max_tasks_per_user = n.max(1);
        }
        if let Some(ips) = conf.get("FileServerIp") {
            for ip in ips.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                cfg.advertise.push((ip.to_owned(), cfg.client_port));
            }
        }
        if let Some(list) = conf.get("ClientAdvertise") {
            cfg.advertise = parse_advertise(conf, list)?;
        }
        if cfg.advertise.is_empty() && cfg.client_ips.iter().any(IpAddr::is_unspecified) {
            warn!(
                file = conf.origin(),
                "ClientListenIP is unspecified and neither FileServerIp nor ClientAdvertise is \
                 set: clients are told 127.0.0.1, which only works on this host"
            );
        }
        cfg.admin = crate::runtime::admin::listen_from_conf(conf)?;
        cfg.admin_token = conf.get("AdminToken").map(str::to_owned);
        cfg.peers = PeerPolicy::from_conf(conf)?;
        cfg.peer_tls = peer_tls(conf)?;
        Ok(cfg)
    }

    /// The addresses to advertise given the bound client address: the
    /// configured ones (port 0 replaced by the bound port), else the
    /// listen addresses.
    #[must_use]
    pub fn advertised(&self, bound_port: u16) -> Vec<(String, u16)> {
        let port = |p: u16| if p == 0 { bound_port } else { p };
        if !self.advertise.is_empty() {
            return self
                .advertise
                .iter()
                .map(|(h, p)| (h.clone(), port(*p)))
                .collect();
        }
        let mut out: Vec<(String, u16)> = Vec::new();
        for ip in &self.client_ips {
            let ip = if ip.is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                *ip
            };
            let entry = (ip.to_string(), bound_port);
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
        out
    }
}

/// `host:port;host:port`, each host an IP address or a name (clients
/// resolve it).
fn parse_advertise(conf: &Conf, list: &str) -> Result<Vec<(String, u16)>, ConfigError> {
    let bad = |_: &str| {
        ConfigError::Conf(conf.invalid_value(
            "ClientAdvertise",
            "host:port entries separated by ';' (at most 8)",
        ))
    };
    let mut out = Vec::new();
    for item in list.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (host, port) = item.rsplit_once(':').ok_or_else(|| bad(item))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().map_err(|_| bad(item))?;
        if host.is_empty() || host.len() > crate::rules::files::MAX_ADDR_LEN {
            return Err(bad(item));
        }
        out.push((host.to_owned(), port));
    }
    if out.len() > crate::rules::files::MAX_FILE_SERVER_ADDRS {
        return Err(bad(list));
    }
    Ok(out)
}

/// The keys of `fileserver.conf` this daemon understands.
pub const KNOWN_KEYS: &[&str] = &[
    "ClientListenIP",
    "ClientListenPort",
    "MsgServerListenIP",
    "MsgServerListenPort",
    "TaskTimeout",
    "FileServerIp",
    "Address",
    "ListenPort",
    "DataDir",
    "MaxFileBytes",
    "QuotaBytes",
    "OfflineRetentionSecs",
    "MaxTasks",
    "MaxTasksPerUser",
    "ClientAdvertise",
    "AdminListen",
    "AdminToken",
    "PeerTlsCertFile",
    "PeerTlsKeyFile",
    "PeerTlsCaFile",
    "PeerTlsClientAuth",
    "PeerTlsServerName",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// TeamTalk's own fileserver.conf, comments and all.
    const STOCK: &str = "#Address=0.0.0.0         # address for client\n\
        ClientListenIP=0.0.0.0\n\
        ClientListenPort=8600   # Listening Port for client\n\
        \n\
        MsgServerListenIP=127.0.0.1\n\
        MsgServerListenPort=8601\n\
        \n\
        TaskTimeout=60         # Task Timeout (seconds)\n";

    #[test]
    fn reads_teamtalk_fileserver_conf() {
        let conf = Conf::parse_str(STOCK, "fileserver.conf").unwrap();
        assert!(conf.unknown_keys(KNOWN_KEYS).is_empty());
        let cfg = FileConfig::from_conf(&conf).unwrap();
        assert_eq!(cfg.client_ips, vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]);
        assert_eq!((cfg.client_port, cfg.msg_port), (8600, 8601));
        assert_eq!(cfg.msg_ips, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        assert_eq!(cfg.limits.task_timeout, Duration::from_secs(60));
        assert_eq!(cfg.data_dir, PathBuf::from("offline_file"));
        assert_eq!(cfg.advertised(8600), vec![("127.0.0.1".to_owned(), 8600)]);
    }

    #[test]
    fn our_keys_and_advertised_addresses() {
        let text = format!(
            "{STOCK}FileServerIp=10.0.0.5;10.0.0.6\nDataDir=/var/tt\nMaxFileBytes=1000\n\
             QuotaBytes=5000\nOfflineRetentionSecs=3600\nMaxTasks=7\nMaxTasksPerUser=2\n"
        );
        let conf = Conf::parse_str(&text, "f.conf").unwrap();
        let cfg = FileConfig::from_conf(&conf).unwrap();
        assert_eq!(
            cfg.advertised(1234),
            vec![("10.0.0.5".to_owned(), 8600), ("10.0.0.6".to_owned(), 8600)]
        );
        assert_eq!(cfg.data_dir, PathBuf::from("/var/tt"));
        assert_eq!(
            (
                cfg.limits.max_file_bytes,
                cfg.limits.quota_bytes,
                cfg.limits.retention,
                cfg.limits.max_tasks,
                cfg.limits.max_tasks_per_user
            ),
            (1000, 5000, Duration::from_secs(3600), 7, 2)
        );
        let conf = Conf::parse_str(
            &format!("{STOCK}ClientAdvertise=files.example.com:443; [::1]:0\n"),
            "f.conf",
        )
        .unwrap();
        let cfg = FileConfig::from_conf(&conf).unwrap();
        assert_eq!(
            cfg.advertised(8600),
            vec![
                ("files.example.com".to_owned(), 443),
                ("::1".to_owned(), 8600)
            ]
        );
        let conf = Conf::parse_str(&format!("{STOCK}ClientAdvertise=nope\n"), "f.conf").unwrap();
        let err = FileConfig::from_conf(&conf).unwrap_err().to_string();
        assert!(err.contains("ClientAdvertise"), "{err}");
    }

    #[test]
    fn required_keys_are_named() {
        let conf = Conf::parse_str("ClientListenIP=0.0.0.0\n", "f.conf").unwrap();
        let err = FileConfig::from_conf(&conf).unwrap_err().to_string();
        assert_eq!(err, "f.conf: ClientListenPort: missing required setting");
        let conf = Conf::parse_str(&format!("{STOCK}TaskTimeout=soon\n"), "f.conf").unwrap();
        // The first value of a repeated key counts, as in TeamTalk.
        assert!(FileConfig::from_conf(&conf).is_ok());
        let conf = Conf::parse_str(
            &STOCK.replace("TaskTimeout=60", "TaskTimeout=soon"),
            "f.conf",
        )
        .unwrap();
        let err = FileConfig::from_conf(&conf).unwrap_err().to_string();
        assert!(err.contains("TaskTimeout"), "{err}");
    }
}
