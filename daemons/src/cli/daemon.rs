//! The separate daemon binaries (`msg_server`, `login_server`,
//! `route_server`, `db_proxy_server`, …): one `main` for all, made to drop in
//! where TeamTalk's C++ daemons ran.
//!
//! Like TeamTalk's, a daemon started without `-c` reads its conf from the
//! working directory under TeamTalk's file name (`msgserver.conf`, …) and
//! writes its pid to `server.pid` there (TeamTalk's `restart.sh` reads
//! it). `-v`/`--version` prints the daemon, the version and the commit;
//! `--help` lists every conf key it reads with its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use tracing::{info, warn};

use super::{CliError, LogFormat, VERSION, init_logging, stop_signal};
use crate::conf::Conf;
use crate::store::ServeLock;

/// The separate daemons, for multi-host deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[non_exhaustive]
pub enum Daemon {
    /// login_server.
    Login,
    /// msg_server.
    Msg,
    /// route_server.
    Route,
    /// db_proxy_server.
    DbProxy,
    /// msfs, the HTTP file store.
    Msfs,
    /// file_server: file transfer between clients.
    File,
    /// push_server: notifications for offline phones.
    Push,
    /// http_msg_server: TeamTalk's back-office HTTP API.
    HttpMsg,
}

impl Daemon {
    /// The binary's name, as TeamTalk named the daemon.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Login => "login_server",
            Self::Msg => "msg_server",
            Self::Route => "route_server",
            Self::DbProxy => "db_proxy_server",
            Self::Msfs => "msfs",
            Self::File => "file_server",
            Self::Push => "push_server",
            Self::HttpMsg => "http_msg_server",
        }
    }

    /// TeamTalk's conf file name, read from the working directory when no
    /// `-c` is given.
    #[must_use]
    pub const fn conf_file(self) -> &'static str {
        match self {
            Self::Login => "loginserver.conf",
            Self::Msg => "msgserver.conf",
            Self::Route => "routeserver.conf",
            Self::DbProxy => "dbproxyserver.conf",
            Self::Msfs => "msfs.conf",
            Self::File => "fileserver.conf",
            Self::Push => "pushserver.conf",
            Self::HttpMsg => "httpmsgserver.conf",
        }
    }

    /// The conf keys it reads, with defaults: the end of `--help`.
    #[must_use]
    pub fn conf_help(self) -> String {
        let shared = match self {
            Self::Msfs => String::new(),
            _ => CLUSTER_KEYS.to_owned(),
        };
        format!("{}{shared}{ADMIN_KEYS}", self.own_keys())
    }

    const fn own_keys(self) -> &'static str {
        match self {
            Self::Login => LOGIN_KEYS,
            Self::Msg => MSG_KEYS,
            Self::Route => ROUTE_KEYS,
            Self::DbProxy => DB_KEYS,
            Self::Msfs => MSFS_KEYS,
            Self::File => FILE_KEYS,
            Self::Push => PUSH_KEYS,
            Self::HttpMsg => HTTP_MSG_KEYS,
        }
    }
}

/// Arguments every daemon binary takes.
#[derive(Debug, Parser)]
#[command(
    version = VERSION,
    disable_version_flag = true,
    about = "A TeamTalk daemon; reads TeamTalk's own .conf format"
)]
pub struct DaemonArgs {
    /// Print the daemon's name, version and commit.
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
    /// Configuration file (TeamTalk's `key=value` format). Default:
    /// TeamTalk's file name in the working directory.
    #[arg(short = 'c', long = "conf")]
    pub conf: Option<PathBuf>,
    /// Admin endpoint (`/metrics`, `/healthz`); overrides the conf's
    /// `AdminListen`.
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Where to write the process id (TeamTalk's scripts read
    /// `server.pid`).
    #[arg(long, default_value = "server.pid")]
    pub pid_file: PathBuf,
    /// Write no pid file.
    #[arg(long, conflicts_with = "pid_file")]
    pub no_pid_file: bool,
    /// db_proxy_server only: the store's directory, over the conf's
    /// `DataDir`.
    #[arg(long, env = "TEAMTALK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl DaemonArgs {
    /// Parses the process's arguments as `daemon`'s (its name in `--help`
    /// and `--version`, its conf keys at the end of `--help`).
    #[must_use]
    pub fn parse_for(daemon: Daemon) -> Self {
        let matches = Self::command()
            .name(daemon.name())
            .bin_name(daemon.name())
            .after_long_help(daemon.conf_help())
            .after_help(format!(
                "Reads {} from the working directory without -c. \
                 `--help` lists the conf keys.",
                daemon.conf_file()
            ))
            .get_matches();
        match Self::from_arg_matches(&matches) {
            Ok(args) => args,
            Err(e) => e.exit(),
        }
    }

    /// The conf file to read.
    #[must_use]
    pub fn conf_path(&self, daemon: Daemon) -> PathBuf {
        self.conf
            .clone()
            .unwrap_or_else(|| PathBuf::from(daemon.conf_file()))
    }
}

/// A daemon binary's whole `main`.
#[must_use]
pub fn daemon_main(daemon: Daemon) -> ExitCode {
    let args = DaemonArgs::parse_for(daemon);
    init_logging(args.log_format);
    match run_daemon(daemon, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e}", daemon.name());
            ExitCode::FAILURE
        }
    }
}

/// Reads the daemon's `.conf`, starts it, writes the pid file, runs until
/// Ctrl-C or SIGTERM, removes the pid file.
///
/// # Errors
/// [`CliError`] when the configuration is bad or the daemon cannot start.
pub fn run_daemon(daemon: Daemon, args: &DaemonArgs) -> Result<(), CliError> {
    let path = args.conf_path(daemon);
    if args.conf.is_none() && !path.exists() {
        return Err(CliError::Daemon(format!(
            "no {} in the working directory; pass -c FILE (samples: deploy/conf/)",
            daemon.conf_file()
        )));
    }
    let conf = Conf::load(&path)?;
    let _ = teamtalk_net::raise_fd_limit();
    let stop = stop_signal()?;
    let (running, _lock) = start_daemon(daemon, &conf, &path, args)?;
    let pid_file = (!args.no_pid_file).then_some(args.pid_file.as_path());
    if let Some(p) = pid_file
        && let Err(e) = std::fs::write(p, format!("{}\n", std::process::id()))
    {
        warn!(file = %p.display(), error = %e, "cannot write the pid file");
    }
    info!(daemon = daemon.name(), conf = %path.display(), "running; Ctrl-C or SIGTERM stops");
    let _ = stop.recv();
    info!(daemon = daemon.name(), "stopping");
    running.stop();
    if let Some(p) = pid_file {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// Any of the daemons, running.
type Running = Box<dyn crate::runtime::RunningDaemon>;

fn start_daemon(
    daemon: Daemon,
    conf: &Conf,
    path: &Path,
    args: &DaemonArgs,
) -> Result<(Running, Option<ServeLock>), CliError> {
    let fail = |e: &dyn std::fmt::Display| CliError::Daemon(e.to_string());
    let admin = args.admin;
    Ok(match daemon {
        Daemon::Login => {
            let mut cfg = crate::login::LoginConfig::from_conf(conf).map_err(|e| fail(&e))?;
            cfg.admin = admin.or(cfg.admin);
            (
                Box::new(crate::login::spawn(cfg).map_err(|e| fail(&e))?),
                None,
            )
        }
        Daemon::Route => {
            let mut cfg = crate::route::RouteConfig::from_conf(conf).map_err(|e| fail(&e))?;
            cfg.admin = admin.or(cfg.admin);
            (
                Box::new(crate::route::spawn(cfg).map_err(|e| fail(&e))?),
                None,
            )
        }
        Daemon::Msg => {
            let mut cfg = crate::msg::MsgConfig::from_conf(conf).map_err(|e| fail(&e))?;
            cfg.admin = admin.or(cfg.admin);
            (
                Box::new(crate::msg::spawn(cfg).map_err(|e| fail(&e))?),
                None,
            )
        }
        Daemon::DbProxy => {
            let mut cfg = crate::db_proxy::config_from_conf(conf).map_err(|e| fail(&e))?;
            cfg.admin = admin.or(cfg.admin);
            // Passwords the admin API sets are hashed at the conf's cost.
            let store_options = crate::store::StoreOptions {
                hash_params: cfg.hash_params,
                applier_nice: cfg.applier_nice,
                ..crate::store::StoreOptions::default()
            };
            if let Some(mysql) = cfg.mysql.clone() {
                // The conf names TeamTalk's MySQL and Redis: the deployment's
                // own data, shared with other db_proxies; no local lock.
                let store =
                    crate::store::MysqlStore::open(&mysql, store_options).map_err(|e| fail(&e))?;
                info!(store = "mysql+redis", at = %store.describe(), conf = %path.display(), "store");
                let store: std::sync::Arc<dyn crate::store::Store> = std::sync::Arc::new(store);
                return Ok((
                    Box::new(crate::db_proxy::spawn(cfg, store).map_err(|e| fail(&e))?),
                    None,
                ));
            }
            if let Some(dir) = &args.data_dir {
                cfg.data_dir.clone_from(dir);
            } else if conf.get("DataDir").is_none() {
                cfg.data_dir = super::default_data_dir();
            }
            let lock = ServeLock::acquire(&cfg.data_dir).map_err(|e| fail(&e))?;
            info!(store = "sqlite", dir = %cfg.data_dir.display(), conf = %path.display(), "store");
            let store = crate::store::SqliteStore::open_with(&cfg.data_dir, store_options)
                .map_err(|e| fail(&e))?;
            let store: std::sync::Arc<dyn crate::store::Store> = std::sync::Arc::new(store);
            (
                Box::new(crate::db_proxy::spawn(cfg, store).map_err(|e| fail(&e))?),
                Some(lock),
            )
        }
        Daemon::Msfs => {
            let mut cfg = crate::msfs::MsfsConfig::from_conf(conf).map_err(|e| fail(&e))?;
            cfg.admin = admin.or(cfg.admin);
            (
                Box::new(crate::msfs::spawn(cfg).map_err(|e| fail(&e))?),
                None,
            )
        }
        Daemon::File => {
            let mut cfg = crate::file::FileConfig::from_conf(conf).map_err(|e| fail(&e))?;
            cfg.admin = admin.or(cfg.admin);
            (
                Box::new(crate::file::spawn(cfg).map_err(|e| fail(&e))?),
                None,
            )
        }
        Daemon::Push => {
            let mut cfg = crate::push::PushConfig::from_conf(conf).map_err(|e| fail(&e))?;
            cfg.admin = admin.or(cfg.admin);
            (
                Box::new(crate::push::spawn(cfg).map_err(|e| fail(&e))?),
                None,
            )
        }
        Daemon::HttpMsg => {
            let mut cfg = crate::http_msg::HttpMsgConfig::from_conf(conf).map_err(|e| fail(&e))?;
            cfg.admin = admin.or(cfg.admin);
            (
                Box::new(crate::http_msg::spawn(cfg).map_err(|e| fail(&e))?),
                None,
            )
        }
    })
}

const CLUSTER_KEYS: &str = "\
  ClusterSecret=S | ClusterSecretFile=PATH   the cluster secret every server link proves (>= 16 bytes); \
required when a server port listens beyond loopback
  AllowUnauthenticatedPeers=CIDR;…          C++ daemons admitted without the secret, by address
";

const ADMIN_KEYS: &str = "\
  AdminListen=IP:PORT | off                 /metrics and /healthz (default 127.0.0.1 on a free port, logged)
  AdminToken=T                              bearer token for the admin port (required beyond loopback)
";

const MSG_KEYS: &str = "\
msgserver.conf keys (TeamTalk's, then ours):
  ListenIP=IP                               client port address (default 0.0.0.0)
  ListenPort=PORT                           client port (required; TeamTalk: 8000)
  IpAddr1=ADDR, IpAddr2=ADDR                addresses login_server hands to clients (default: host name; IpAddr2 = IpAddr1)
  MaxConnCnt=N                              most client sessions (default 100000)
  DBServerIP<n>=HOST, DBServerPort<n>=PORT  db_proxy_servers (n = 1, 2, …; at least one)
  LoginServerIP<n>=HOST, LoginServerPort<n> login_servers' msg_server ports (at least one)
  RouteServerIP<n>=HOST, RouteServerPort<n> route_servers (at least one)
  FileServerIP<n>=HOST, FileServerPort<n>   file_servers' msg_server ports (optional: no file transfer without)
  PushServerIP<n>=HOST, PushServerPort<n>   push_servers (optional: no push notifications without)
  aesKey=KEY                                the 32-byte key clients encode text with (push text; default TeamTalk's)
  ConcurrentDBConnCnt                       accepted for compatibility, not used
  MsgRateLimit=N                            messages a second per session (default: no limit)
  TlsListenPort=PORT                        a second client port over TLS (needs TlsCertFile, TlsKeyFile)
  TlsCertFile, TlsKeyFile, TlsCaFile, TlsClientAuth, TlsServerName   that port's TLS
  LinkTlsCaFile, LinkTlsServerName, LinkTlsCertFile, LinkTlsKeyFile, LinkTlsClientAuth
                                            links to db_proxy, login, route over TLS
  WebSocketPort=PORT                        browsers over WebSocket (needs WebSocketOrigins)
  WebSocketOrigins=URL;… | *                web origins allowed on the WebSocket port
  WebSocketTls=true                         wss, with the Tls* keys
";

const LOGIN_KEYS: &str = "\
loginserver.conf keys (TeamTalk's, then ours):
  ClientListenIP=IP;…, ClientPort=PORT      legacy TCP query port (optional; TeamTalk: 8008)
  HttpListenIP=IP;…, HttpPort=PORT          GET /msg_server (required; TeamTalk: 8080)
  MsgServerListenIP=IP;…, MsgServerPort=PORT  msg_servers register here (required; TeamTalk: 8100)
  msfs=URL                                  image store URL handed to clients (required)
  discovery=URL                             discovery URL handed to clients (required)
  CorsOrigins=URL;… | *                     web origins that may read /msg_server
  WebClient=false                           do not serve the web client at / (default: served)
  PeerTlsCertFile, PeerTlsKeyFile, PeerTlsCaFile, PeerTlsClientAuth, PeerTlsServerName
                                            TLS on the msg_server port
";

const ROUTE_KEYS: &str = "\
routeserver.conf keys (TeamTalk's, then ours):
  ListenIP=IP;…                             msg_server port addresses (required)
  ListenMsgPort=PORT                        msg_server port (required; TeamTalk: 8200)
  PeerTlsCertFile, PeerTlsKeyFile, PeerTlsCaFile, PeerTlsClientAuth, PeerTlsServerName
                                            TLS on that port
";

const DB_KEYS: &str = "\
dbproxyserver.conf keys (TeamTalk's, then ours):
  ListenIP=IP                               msg_server port address (default 0.0.0.0: needs the cluster secret)
  ListenPort=PORT                           msg_server port (default 10600)
  DBInstances=NAME,…                        TeamTalk's MySQL: the store is MySQL + Redis (NAME ending in master, else the first)
  NAME_host, NAME_port, NAME_dbname, NAME_username, NAME_password, NAME_maxconncnt
  CacheInstances=unread,group_set,token,sync,group_member   TeamTalk's Redis instances by role
  ROLE_host, ROLE_port, ROLE_db             (a role not listed uses unread's; sync is not used)
  ThreadNum, MsfsSite, aesKey               accepted, not used
  DataDir=PATH                              without DBInstances: the embedded SQLite store's directory
                                            (default ./teamtalk-data, or $TEAMTALK_DATA_DIR; --data-dir wins)
  UtcOffsetMinutes=N                        time zone of dates, minutes east of UTC
  Argon2MemoryKiB=KIB, Argon2Passes=N       Argon2id cost of passwords the admin API sets
                                            (default 19456 and 2; a login not in the cache pays it)
  ApplierNice=0..19                         CPU priority of the SQLite store's applier thread
                                            (default 19, the lowest: acknowledgements go first)
  PeerTlsCertFile, PeerTlsKeyFile, PeerTlsCaFile, PeerTlsClientAuth, PeerTlsServerName
                                            TLS on the msg_server port
";

const MSFS_KEYS: &str = "\
msfs.conf keys (TeamTalk's, then ours):
  ListenIP=IP;…, ListenPort=PORT            HTTP port (required; TeamTalk: 8700)
  BaseDir=PATH                              where files are stored (required)
  GetThreadCount=N, PostThreadCount=N       download and upload workers (default 32 and 1; at most 64)
  FileCnt, FilesPerDir                      accepted; files are placed by their hash
  MaxUploadBytes=N                          largest file (default 10485760)
  QuotaBytes=N                              total bytes stored (default: no quota)
  UploadsPerMinute=N                        uploads per source address a minute (default 120)
  PublicUrl=URL                             the URL answers name (default: from the request's Host)
  CorsOrigins=URL;… | *                     web pages that may read upload answers (a web client)
  MaxConnsPerSource=N, MaxConnections=N     connection caps (default 64 and 1024)
";

const FILE_KEYS: &str = "\
fileserver.conf keys (TeamTalk's, then ours):
  ClientListenIP=IP;…, ClientListenPort=PORT      client port (required; TeamTalk: 8600)
  MsgServerListenIP=IP;…, MsgServerListenPort=PORT  msg_server port (required; TeamTalk: 8601)
  FileServerIp=IP;…                         addresses handed to clients (with ClientListenPort)
  ClientAdvertise=HOST:PORT;…               addresses handed to clients, ports of their own (at most 8)
  TaskTimeout=SECS                          how long a transfer may wait for its peer
  Address, ListenPort                       TeamTalk's older keys: accepted, not used
  DataDir=PATH                              offline files (default ./offline_file, as TeamTalk)
  MaxFileBytes=N                            largest file (at most 4294967295)
  QuotaBytes=N                              total bytes of offline files
  OfflineRetentionSecs=SECS                 how long an offline file is kept
  MaxTasks=N, MaxTasksPerUser=N             transfers at once, in all and per user
  PeerTlsCertFile, PeerTlsKeyFile, PeerTlsCaFile, PeerTlsClientAuth, PeerTlsServerName
                                            TLS on the msg_server port
";

const PUSH_KEYS: &str = "\
pushserver.conf keys (TeamTalk's, then ours):
  ListenIP=IP;…, ListenPort=PORT            msg_server port (default 127.0.0.1, 8500)
  CertPath, KeyPath, KeyPassword            TeamTalk's binary APNs (retired by Apple): accepted, not used
  SandBox=1                                 APNs sandbox host (default production)
  IosSink=apns|webhook|none                 sink for iOS tokens (default apns if configured, else webhook)
  AndroidSink=fcm|webhook|none              sink for Android tokens (default fcm if configured, else webhook)
  WebhookUrl=URL, WebhookToken=T            JSON POST per device (bearer token optional)
  FcmCredentialsFile=PATH                   Google service-account JSON (FCM HTTP v1)
  FcmUrl=URL                                FCM host (default https://fcm.googleapis.com)
  ApnsKeyFile=PATH, ApnsKeyId, ApnsTeamId, ApnsTopic   APNs token auth (.p8 key, key id, team, bundle id)
  ApnsUrl=URL                               APNs host (default from SandBox)
  HttpCaFile=PATH                           extra trusted roots (PEM) for the services
  HttpTimeoutSecs=N                         per request (default 10)
  Workers=N                                 sending threads (default 2)
  MaxQueue=N                                deliveries held at once (default 10000)
  MaxAttempts=N, RetryBaseSecs=N            attempts per delivery (default 4), first backoff (1 s, doubling)
  DedupeSecs=N                              how long a sent (message, device) is remembered (default 3600)
";

const HTTP_MSG_KEYS: &str = "\
httpmsgserver.conf keys (TeamTalk's, then ours):
  ListenIP=IP;…, ListenPort=PORT            HTTP port (default 127.0.0.1, 8400)
  DBServerIP<n>=HOST, DBServerPort<n>=PORT  db_proxy_servers (at least one)
  RouteServerIP<n>=HOST, RouteServerPort<n> route_servers (at least one)
  ConcurrentDBConnCnt                       accepted for compatibility, not used
  AppKey=KEY;…                              app keys requests must carry (AppKey or AppKeyFile required)
  AppKeyFile=PATH                           more app keys, one a line (# comments)
  RequestTimeoutSecs=N                      answer \"server error\" when db_proxy is slower (default 10)
  MaxPending=N                              requests waiting for db_proxy (default 1024; more get 503)
  MaxBodyBytes=N                            largest request body (default 262144)
  MaxConnsPerSource=N                       HTTP connections per address (default 64)
  LinkTlsCaFile, LinkTlsServerName, LinkTlsCertFile, LinkTlsKeyFile, LinkTlsClientAuth
                                            links to db_proxy and route over TLS
";

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key a daemon reads is in its `--help`.
    #[test]
    fn help_names_every_known_key() {
        let lists: [(Daemon, &[&str]); 8] = [
            (Daemon::HttpMsg, crate::http_msg::KNOWN_KEYS),
            (Daemon::Push, crate::push::KNOWN_KEYS),
            (Daemon::File, crate::file::KNOWN_KEYS),
            (Daemon::Msfs, crate::msfs::KNOWN_KEYS),
            (Daemon::Msg, crate::msg::KNOWN_KEYS),
            (Daemon::Login, crate::login::KNOWN_KEYS),
            (Daemon::Route, crate::route::KNOWN_KEYS),
            (Daemon::DbProxy, crate::db_proxy::KNOWN_KEYS),
        ];
        for (daemon, keys) in lists {
            let help = daemon.conf_help();
            let cluster: &[&str] = if daemon == Daemon::Msfs {
                &[]
            } else {
                crate::cluster::KEYS
            };
            for key in keys.iter().chain(cluster) {
                let key = key.trim_end_matches('*');
                assert!(help.contains(key), "{}: --help lacks {key}", daemon.name());
            }
        }
    }
}
