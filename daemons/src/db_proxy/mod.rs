//! db_proxy_server: the only daemon that touches storage. msg_servers send
//! it their database requests (logins, messages, sessions, directory, push
//! settings) over ordinary TeamTalk PDUs and get one reply per request.
//!
//! Three layers, each usable alone:
//!
//! - [`DbProxy`] (`handler.rs`): a pure request handler, PDU in, reply out,
//!   against any [`Store`](crate::store::Store). The requests are served by
//!   domain in `cmd/` (`login.rs`, `users.rs`, `messages.rs`,
//!   `sessions.rs`, `push.rs`, `groups.rs`, `files.rs`), each file
//!   documenting its wire rules; one dispatch
//!   table says which file serves which command. The command map follows
//!   TeamTalk's db_proxy (see [`DbProxy`] for the wire rules and the trust
//!   model), with the login-failure limiter of [`limiter`].
//! - [`DbWorker`] (`worker.rs`): the store lane applying requests in
//!   arrival order with group commit, and the login lanes, as workers of
//!   the shared [runtime](crate::runtime).
//! - [`DbProxyApp`] and [`spawn`] (`server.rs`): which lane a request goes
//!   to and where its reply goes, on the shared runtime.
//!
//! # Commands
//!
//! | request | reply | served by | notes | failure answer |
//! |---|---|---|---|---|
//! | 0x0703 validate | 0x0704 | `login.rs` | 0 ok, 1 bad credentials, 2 server error, 6 too many failures | 0x0704, 2 |
//! | 0x0204 / 0x0208 users by id / changed users | 0x0205 / 0x0209 | `users.rs` | `latest_update_time` = newest change returned | `IMRequestFailed` |
//! | 0x0210 departments | 0x0211 | `users.rs` | as 0x0208 | `IMRequestFailed` |
//! | 0x0213 sign info | 0x0214 | `users.rs` | 1 for an unknown user | 0x0214, 1 |
//! | 0x020c avatar | 0x020d | `users.rs` | not stored yet | 0x020d, 1 |
//! | 0x0301 message | 0x0301 | `messages.rs` | `msg_id` set (per conversation, or per group); 0 = refused as not storable (empty, to oneself, a group message from a non-member) | `IMRequestFailed` |
//! | 0x0303 read ack | none | `messages.rs` | clears the reader's unread count (of a peer or a group) | `IMRequestFailed` (6 for a non-member) |
//! | 0x0307 / 0x0309 / 0x030b / 0x030d | 0x0308 / 0x030a / 0x030c / 0x030e | `messages.rs` | unread (groups included), history (0 = latest, newest first, at most 200), latest id, by id; a group's as its member may read it | `IMRequestFailed` (6 for a non-member) |
//! | 0x0201 / 0x0206 recent / remove session | 0x0202 / 0x0207 | `sessions.rs` | groups included; removing also clears the unread count; 1 when there was no session | `IMRequestFailed` / 0x0207, 1 |
//! | 0x0108 device token | 0x0109 | `push.rs` | empty token unregisters | `IMRequestFailed` |
//! | 0x010c / 0x010e push shield set / query | 0x010d / 0x010f | `push.rs` | 1 for an unknown user | 0x010d / 0x010f, 1 |
//! | 0x0705 device tokens | 0x0706 | `push.rs` | iOS and Android only; `push_count` = total unread; iOS users with shield on left out 22:00–07:59 | `IMRequestFailed` |
//! | 0x0401 / 0x0403 normal groups / details | 0x0402 / 0x0404 | `groups.rs` | the user's NORMAL groups with versions; details of groups the user is in whose version moved | `IMRequestFailed` |
//! | 0x0405 / 0x0407 / 0x0409 create / change members / shield | 0x0406 / 0x0408 / 0x040a | `groups.rs` | TMP only from clients; the permission rule of `store::groups`; members only | 0x0406 / 0x0408 / 0x040a with 1 |
//! | 0x0711 / 0x0791 shields of members / a user's groups | 0x0712 / 0x0792 | `groups.rs` | for msg_server's push path and group index | `IMRequestFailed` |
//! | 0x0509 / 0x050b / 0x050c offline files | | (`files.rs`) | not stored yet | `IMRequestFailed` |
//!
//! The last column is what a request that cannot be served gets (the store
//! failed, the feature is not stored yet, a value is invalid): the rule of
//! [`crate::rules::failure`], its own reply with the failure `result_code`
//! where the reply type has one, else our extension `IMRequestFailed`
//! (0x0007/0x0790) naming the request and echoing its `attach_data`, with a
//! `RequestFailedCode` (1 server error, 2 not implemented, 3 bad request).
//! Never an empty list that reads as success, never silence. A command
//! db_proxy never serves (client-only, unknown ids) or cannot decode gets
//! `IMRequestFailed` with code 4 (unsupported) or 3; heartbeats and
//! `IMRequestFailed` from a peer are never answered. Everything unserved is
//! logged and counted ([`DbProxyStats::failures`],
//! [`DbProxyStats::unimplemented`], [`DbProxyStats::unexpected`],
//! [`DbProxyStats::decode_errors`]).

mod cmd;
pub mod credcache;
mod handler;
pub mod limiter;
mod server;
pub mod sessions;
mod worker;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

pub use handler::{
    DbProxy, DbProxyOptions, DbProxyStats, PreparedMessage, RESULT_FAILED,
    VALIDATE_BAD_CREDENTIALS, VALIDATE_INTERNAL_ERROR, VALIDATE_OK, VALIDATE_TOO_MANY_FAILURES,
};
pub use server::{DbProxyApp, DbProxyServer, spawn};
pub use worker::{
    DEFAULT_BATCH_LIMIT, DEFAULT_LOGIN_THREADS, DEFAULT_QUEUE_CAPACITY, DbWorker, Job, Reply,
    WorkerConfig,
};

use crate::conf::Conf;
use crate::runtime::DaemonError;

/// TeamTalk's default db_proxy port.
pub const DEFAULT_PORT: u16 = 10600;
/// Default SQLite directory when the conf has no `DataDir`.
pub const DEFAULT_DATA_DIR: &str = "teamtalk-data";

/// Everything [`spawn`] needs besides the store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DbProxyConfig {
    /// Address to listen on (`ListenIP`:`ListenPort`); port 0 picks one.
    pub listen: SocketAddr,
    /// SQLite directory (`DataDir`); the caller opens the store there.
    pub data_dir: PathBuf,
    /// Reactor threads; db_proxy has a handful of peers, so 1 is plenty.
    pub reactor_threads: usize,
    /// Queue, batching and login threads.
    pub worker: WorkerConfig,
    /// Clock and time zone of the handler.
    pub options: DbProxyOptions,
    /// Admin HTTP endpoint (`/metrics`, `/healthz`); our own conf key
    /// `AdminListen`. `None` serves none; port 0 picks one.
    pub admin: Option<SocketAddr>,
    /// Bearer token the admin endpoint requires (`AdminToken`; required
    /// when it listens beyond loopback).
    pub admin_token: Option<String>,
    /// The cluster secret and who may skip it (`ClusterSecret`,
    /// `ClusterSecretFile`, `AllowUnauthenticatedPeers`).
    pub peers: crate::cluster::PeerPolicy,
    /// TLS on the msg_server port (`PeerTls*` keys).
    pub peer_tls: Option<std::sync::Arc<teamtalk_conn::tls::rustls::ServerConfig>>,
    /// MySQL and Redis from TeamTalk's `DBInstances` and `CacheInstances`:
    /// when set, the store is [`crate::store::MysqlStore`] there and
    /// `data_dir` is not used.
    pub mysql: Option<crate::store::MysqlConfig>,
    /// Argon2id cost of the passwords this db_proxy hashes (users created
    /// or given a password through its admin API): our own keys
    /// `Argon2MemoryKiB` and `Argon2Passes`, default
    /// [`HashParams::RECOMMENDED`](crate::password::HashParams::RECOMMENDED).
    /// The caller opens the store with it. A user's first login after a
    /// restart costs one check at the cost their hash was made with
    /// (docs/performance.md, "First logins of Argon2 users").
    pub hash_params: crate::password::HashParams,
    /// Nice value of the SQLite store's applier thread: our own conf key
    /// `ApplierNice` (0–19), default
    /// [`SERVING_APPLIER_NICE`](crate::store::SERVING_APPLIER_NICE). The
    /// caller opens the store with it.
    pub applier_nice: i32,
}

impl DbProxyConfig {
    /// Defaults listening on `listen`.
    #[must_use]
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            reactor_threads: 1,
            worker: WorkerConfig::default(),
            options: DbProxyOptions::default(),
            admin: None,
            admin_token: None,
            peers: crate::cluster::PeerPolicy::open(),
            peer_tls: None,
            mysql: None,
            hash_params: crate::password::HashParams::RECOMMENDED,
            applier_nice: crate::store::SERVING_APPLIER_NICE,
        }
    }
}

impl Default for DbProxyConfig {
    fn default() -> Self {
        Self::new(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            DEFAULT_PORT,
        ))
    }
}

/// `Argon2MemoryKiB` and `Argon2Passes`, each defaulting to
/// [`HashParams::RECOMMENDED`](crate::password::HashParams::RECOMMENDED)'s;
/// settings weaker than OWASP's recommendation are accepted with a warning.
///
/// # Errors
/// A value that is not a number, or out of
/// [`HashParams::new`](crate::password::HashParams::new)'s bounds, naming
/// file, line and key.
pub fn hash_params_from_conf(conf: &Conf) -> Result<crate::password::HashParams, DaemonError> {
    use crate::password::HashParams;
    let memory = conf.get_parsed::<u32>("Argon2MemoryKiB")?;
    let passes = conf.get_parsed::<u32>("Argon2Passes")?;
    let params = HashParams::with_overrides(memory, passes).map_err(|e| {
        let key = match (memory, passes) {
            (Some(m), _)
                if !(HashParams::MIN_MEMORY_KIB..=HashParams::MAX_MEMORY_KIB).contains(&m) =>
            {
                "Argon2MemoryKiB"
            }
            _ => "Argon2Passes",
        };
        DaemonError::from(conf.invalid_value(key, &e.to_string()))
    })?;
    if params.weaker_than_owasp() {
        tracing::warn!(
            file = conf.origin(),
            %params,
            "Argon2 settings weaker than OWASP's recommendation: a leaked store is cheaper to attack"
        );
    }
    Ok(params)
}

/// Keys of TeamTalk's `dbproxyserver.conf` that we read.
pub const KNOWN_KEYS: &[&str] = &[
    "ListenIP",
    "ListenPort",
    "DataDir",
    "UtcOffsetMinutes",
    "AdminListen",
    "AdminToken",
    "PeerTlsCertFile",
    "PeerTlsKeyFile",
    "PeerTlsCaFile",
    "PeerTlsClientAuth",
    "PeerTlsServerName",
    "Argon2MemoryKiB",
    "Argon2Passes",
    "ApplierNice",
];
/// Keys of the C++ conf that mean nothing here: the thread pool (we use one
/// ordered worker), the msfs site and the AES key (db_proxy never
/// encrypts). `DBInstances` and `CacheInstances` select the MySQL store.
const IGNORED_KEYS: &[&str] = &["ThreadNum", "MsfsSite", "aesKey"];
/// Per-instance suffixes of the MySQL (`DBInstances`) and Redis
/// (`CacheInstances`) settings, e.g. `teamtalk_master_host`, `unread_db`.
const INSTANCE_SUFFIXES: &[&str] = &[
    "host",
    "port",
    "dbname",
    "username",
    "password",
    "maxconncnt",
    "db",
];

/// The MySQL and Redis a TeamTalk conf names: `DBInstances` lists MySQL
/// instances (the one ending in `master`, else the first, takes every
/// query: `<i>_host`, `<i>_port` (3306), `<i>_dbname`, `<i>_username`,
/// `<i>_password`, `<i>_maxconncnt` (16)); `CacheInstances` lists Redis
/// instances by role (`unread`, `group_set`, `token`, `group_member`; `sync`
/// is accepted and unused), each `<i>_host`, `<i>_port` (6379), `<i>_db`
/// (0). A role not listed uses `unread`'s. `None` without `DBInstances`.
///
/// # Errors
/// `DBInstances` without `CacheInstances` (or without `unread`), or a
/// value that does not parse.
pub fn mysql_from_conf(conf: &Conf) -> Result<Option<crate::store::MysqlConfig>, DaemonError> {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let bad = |reason: String| DaemonError::Config {
        daemon: "db_proxy_server",
        reason,
    };
    let list = |key: &str| -> Vec<String> {
        conf.get(key)
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let dbs = list("DBInstances");
    if dbs.is_empty() {
        return Ok(None);
    }
    let db = dbs
        .iter()
        .find(|d| d.ends_with("master"))
        .unwrap_or(&dbs[0]);
    let host = conf.get(&format!("{db}_host")).unwrap_or("127.0.0.1");
    let port: u16 = conf.get_parsed(&format!("{db}_port"))?.unwrap_or(3306);
    let name = conf.get(&format!("{db}_dbname")).ok_or_else(|| {
        bad(format!(
            "DBInstances names {db}, but {db}_dbname is missing"
        ))
    })?;
    let user = conf.get(&format!("{db}_username")).unwrap_or("root");
    let password = conf.get(&format!("{db}_password")).unwrap_or("");
    let max: usize = conf.get_parsed(&format!("{db}_maxconncnt"))?.unwrap_or(16);
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let mysql_url = format!(
        "mysql://{}:{}@{host}:{port}/{name}",
        enc(user),
        enc(password)
    );
    let caches = list("CacheInstances");
    let redis_url = |role: &str| -> Result<Option<String>, DaemonError> {
        if !caches.iter().any(|c| c == role) {
            return Ok(None);
        }
        let host = conf.get(&format!("{role}_host")).unwrap_or("127.0.0.1");
        let port: u16 = conf.get_parsed(&format!("{role}_port"))?.unwrap_or(6379);
        let db: u32 = conf.get_parsed(&format!("{role}_db"))?.unwrap_or(0);
        Ok(Some(format!("redis://{host}:{port}/{db}")))
    };
    let unread = redis_url("unread")?.ok_or_else(|| {
        bad("DBInstances needs CacheInstances with at least `unread` (TeamTalk's Redis)".into())
    })?;
    let or_unread = |role: &str| -> Result<String, DaemonError> {
        Ok(redis_url(role)?.unwrap_or_else(|| unread.clone()))
    };
    Ok(Some(crate::store::MysqlConfig {
        mysql_url,
        max_connections: max.clamp(1, 1024),
        redis: crate::store::RedisUrls {
            unread: unread.clone(),
            group_set: or_unread("group_set")?,
            token: or_unread("token")?,
            group_member: or_unread("group_member")?,
        },
    }))
}

/// Reads the settings that matter from a TeamTalk `dbproxyserver.conf`:
/// `ListenIP` (default 0.0.0.0), `ListenPort` (default 10600), and our own
/// `DataDir` (the SQLite directory, default `teamtalk-data`), `UtcOffsetMinutes`
/// (local time for the iOS quiet hours, default 0) and `Argon2MemoryKiB` /
/// `Argon2Passes` (the cost of passwords hashed here, default 19456 KiB
/// and 2 passes; see [`HashParams::new`](crate::password::HashParams::new)
/// for the bounds).
///
/// The C++ daemon's MySQL, Redis and thread settings are recognised and
/// ignored with one info line; any other key is warned about (usually a
/// typo), as are repeated keys.
///
/// # Errors
/// A value that does not parse, naming file, line and key.
pub fn config_from_conf(conf: &Conf) -> Result<DbProxyConfig, DaemonError> {
    let ip: IpAddr = conf
        .get_parsed("ListenIP")?
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let port: u16 = conf.get_parsed("ListenPort")?.unwrap_or(DEFAULT_PORT);
    let mut config = DbProxyConfig::new(SocketAddr::new(ip, port));
    if let Some(dir) = conf.get("DataDir") {
        config.data_dir = PathBuf::from(dir);
    }
    if let Some(minutes) = conf.get_parsed::<i16>("UtcOffsetMinutes")? {
        config.options.utc_offset_secs = i32::from(minutes) * 60;
    }
    config.hash_params = hash_params_from_conf(conf)?;
    if let Some(nice) = conf.get_parsed::<i32>("ApplierNice")? {
        if !(0..=19).contains(&nice) {
            return Err(conf.invalid_value("ApplierNice", "must be 0 to 19").into());
        }
        config.applier_nice = nice;
    }
    config.admin = crate::runtime::admin::listen_from_conf(conf)?;
    config.admin_token = conf.get("AdminToken").map(str::to_owned);
    config.peer_tls = crate::route::peer_tls(conf).map_err(|e| DaemonError::Config {
        daemon: "db_proxy_server",
        reason: e.to_string(),
    })?;
    config.peers =
        crate::cluster::PeerPolicy::from_conf(conf).map_err(|e| DaemonError::Config {
            daemon: "db_proxy_server",
            reason: e.to_string(),
        })?;

    // Everything the C++ conf may contain, instance keys included.
    let mut instances: Vec<&str> = Vec::new();
    for list in ["DBInstances", "CacheInstances"] {
        if let Some(v) = conf.get(list) {
            instances.extend(v.split(',').map(str::trim).filter(|s| !s.is_empty()));
        }
    }
    let instance_keys: Vec<String> = instances
        .iter()
        .flat_map(|i| INSTANCE_SUFFIXES.iter().map(move |s| format!("{i}_{s}")))
        .collect();
    let mut known: Vec<&str> = KNOWN_KEYS
        .iter()
        .chain(IGNORED_KEYS)
        .chain(&["DBInstances", "CacheInstances"])
        .chain(crate::cluster::KEYS)
        .copied()
        .collect();
    known.extend(instance_keys.iter().map(String::as_str));
    conf.check_keys(&known)?;
    config.mysql = mysql_from_conf(conf)?;
    let ignored: Vec<&str> = conf
        .iter()
        .map(|(k, _)| k)
        .filter(|k| IGNORED_KEYS.contains(k))
        .collect();
    if !ignored.is_empty() {
        tracing::info!(
            file = conf.origin(),
            keys = ?ignored,
            "thread-pool, msfs and AES settings are not used: one ordered store worker"
        );
    }
    Ok(config)
}
