//! msfs: TeamTalk's HTTP file store for images and avatars.
//!
//! A client sends an image by uploading it here and putting the URL it
//! gets back in a message; login_server tells clients where msfs is
//! (`msfsPrior`, `msfsBackup` in its `/msg_server` answer). The HTTP
//! side is what TeamTalk clients send and read, unchanged:
//!
//! - **`POST` any path** with a `multipart/form-data` body: the first part
//!   with a file name is stored, and the answer is TeamTalk's JSON on one
//!   line, `200` with `Content-Type: text/html;charset=utf-8`:
//!   `{"error_code":0,"error_msg":"成功","path":"g0/ab/cd/<sha256>_640x480.png","url":"http://<Host>/g0/…"}`,
//!   or an `error_code` from 1 (too large) to 11 (TeamTalk's) or 12 to 15
//!   (ours: quota, rate, busy, storage), see [`UploadError`]. The URL
//!   starts with `PublicUrl` when set, else with the request's `Host`.
//! - **`GET`/`HEAD` a returned path**: the file with an image or audio
//!   `Content-Type` by its type (anything else as
//!   `application/octet-stream`), single `Range` requests (206, 416),
//!   `ETag` and `If-None-Match` (a name is its content: cached for a
//!   year), `X-Content-Type-Options: nosniff`.
//!
//! Files are named by the SHA-256 of their bytes (the same bytes are
//! stored once), written to a temporary file, flushed, and linked into
//! place, so a crash never leaves a half file under a name ([`store`]).
//! Paths are parsed by a strict grammar before anything touches the disk;
//! `..` and encoded separators are refused ([`name`]). Files a C++ msfs
//! left in the same `BaseDir` are served under their old paths.
//!
//! # Limits
//!
//! - A file of at most `MaxUploadBytes` (TeamTalk's 10 MiB): a larger form
//!   part, or a larger body (read and dropped up to four times the limit,
//!   413 beyond), is answered with `error_code` 1.
//! - `QuotaBytes` in all (error 12), `UploadsPerMinute` per source address
//!   (IPv4 address or IPv6 /64; error 13), at most [`MAX_PENDING_UPLOADS`]
//!   files' worth of uploads waiting for the disk (error 14).
//! - `MaxConnsPerSource` connections from one source, `MaxConnections` in
//!   all; the HTTP machine's deadlines (the head within 10 s, a body
//!   within [`upload_deadline`]) cut slow clients off.
//!
//! # Threads
//!
//! [`MsfsApp`] decides on the daemon's one App thread; files are only
//! touched by [`MsfsWorker`]s: `GetThreadCount` for downloads and
//! `PostThreadCount` for uploads (parsing, hashing and writing), as
//! TeamTalk's two pools.

mod app;
pub mod name;
pub mod store;
pub mod upload;
mod worker;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use teamtalk_conn::HttpConfig;
use teamtalk_net::ReactorConfig;
use tracing::info;

use crate::conf::Conf;
use crate::route::{ConfigError, listen_ips};
use crate::runtime::{self, AdminSettings, DaemonError, Plan, PortKind, Running};

pub use app::{Limits, MsfsApp, MsfsCounts};
pub use store::{BlobStore, Usage};
pub use upload::UploadError;
pub use worker::{Done, Job, MsfsWorker, Served, Stored, media_type};

/// A running msfs.
pub type RunningMsfs = Running<MsfsApp>;

/// TeamTalk's msfs port.
pub const DEFAULT_PORT: u16 = 8700;
/// TeamTalk's upload limit (`HTTP_UPLOAD_MAX`): 10 MiB.
pub const DEFAULT_MAX_UPLOAD: usize = 10 << 20;
/// Uploads one source may start per minute, by default. A source is often
/// a whole office behind one NAT address, hence not lower.
pub const DEFAULT_UPLOADS_PER_MINUTE: u32 = 120;
/// Connections one source may hold, by default (login_server's figure:
/// an office behind one NAT address downloads many images at once).
pub const DEFAULT_MAX_PER_SOURCE: usize = 64;
/// Connections in all, by default: each may buffer one upload.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Worker threads are capped at this, whatever the conf says (TeamTalk's
/// 32 download threads are the default).
pub const MAX_THREADS: usize = 64;
/// Room in a request body for the form around the file (boundaries, part
/// headers, the iOS client's `type` field).
pub const FORM_OVERHEAD: usize = 64 << 10;
/// Uploads waiting for the disk are bounded at this many largest files.
pub const MAX_PENDING_UPLOADS: u64 = 8;
/// Sources the upload rate limiter remembers at most.
pub const MAX_RATE_SOURCES: usize = 65_536;
/// The slowest upload rate served: a body must arrive within
/// [`upload_deadline`], which this rate decides.
pub const MIN_UPLOAD_RATE: usize = 64 << 10;

/// The time a request body may take: 10 s plus the largest body at
/// [`MIN_UPLOAD_RATE`] (170 s for 10 MiB). A fixed time, not a rate, so
/// nobody holds a connection longer.
#[must_use]
pub fn upload_deadline(max_upload: usize) -> Duration {
    let secs = (max_upload + FORM_OVERHEAD) / MIN_UPLOAD_RATE;
    Duration::from_secs(10 + u64::try_from(secs).unwrap_or(u64::MAX / 2))
}

/// Keys of TeamTalk's `msfs.conf` we read, and ours.
pub const KNOWN_KEYS: &[&str] = &[
    "ListenIP",
    "ListenPort",
    "BaseDir",
    "GetThreadCount",
    "PostThreadCount",
    "MaxUploadBytes",
    "QuotaBytes",
    "UploadsPerMinute",
    "PublicUrl",
    "CorsOrigins",
    "MaxConnsPerSource",
    "MaxConnections",
    "AdminListen",
    "AdminToken",
];
/// Keys of TeamTalk's `msfs.conf` that mean nothing here: `FileCnt` (the
/// C++ daemon's file counter, which it wrote back into the conf on exit,
/// for choosing directories) and `FilesPerDir` (files are spread over
/// 65,536 directories by their hash instead).
pub const IGNORED_KEYS: &[&str] = &["FileCnt", "FilesPerDir"];

/// How to run an msfs.
#[derive(Debug, Clone)]
pub struct MsfsConfig {
    /// Addresses (`ListenIP`, `;`-separated).
    pub listen_ips: Vec<IpAddr>,
    /// Port (`ListenPort`, 8700; 0 picks one).
    pub port: u16,
    /// Where files are stored (`BaseDir`).
    pub base_dir: PathBuf,
    /// Download workers (`GetThreadCount`, 32).
    pub get_threads: usize,
    /// Upload workers (`PostThreadCount`, 1).
    pub post_threads: usize,
    /// Largest file (`MaxUploadBytes`, 10 MiB).
    pub max_upload_bytes: usize,
    /// Most bytes stored (`QuotaBytes`; absent or 0: no quota).
    pub quota_bytes: Option<u64>,
    /// Uploads per minute from one source (`UploadsPerMinute`, 120; 0: no
    /// limit).
    pub uploads_per_minute: u32,
    /// What answered URLs start with (`PublicUrl`, e.g.
    /// `https://img.example.com/`); absent: `http://<Host>/`.
    pub public_url: Option<String>,
    /// Web origins whose pages may read upload answers (`CorsOrigins`,
    /// `;`-separated, `*` for any): a web client served elsewhere, such as
    /// login_server's. Empty: none (TeamTalk's clients are not browsers).
    pub cors_origins: Vec<String>,
    /// Connections one source may hold (`MaxConnsPerSource`, 64).
    pub max_per_source: usize,
    /// Connections in all (`MaxConnections`, 1024).
    pub max_connections: usize,
    /// Network threads.
    pub reactor_threads: usize,
    /// Admin endpoint (`AdminListen`).
    pub admin: Option<SocketAddr>,
    /// Bearer token of the admin endpoint (`AdminToken`).
    pub admin_token: Option<String>,
}

impl MsfsConfig {
    /// TeamTalk's defaults, listening on `ip:port`, storing in `base_dir`.
    #[must_use]
    pub fn new(ip: IpAddr, port: u16, base_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen_ips: vec![ip],
            port,
            base_dir: base_dir.into(),
            get_threads: 32,
            post_threads: 1,
            max_upload_bytes: DEFAULT_MAX_UPLOAD,
            quota_bytes: None,
            uploads_per_minute: DEFAULT_UPLOADS_PER_MINUTE,
            public_url: None,
            cors_origins: Vec::new(),
            max_per_source: DEFAULT_MAX_PER_SOURCE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            reactor_threads: 1,
            admin: None,
            admin_token: None,
        }
    }

    /// 127.0.0.1 on a free port, four download and two upload workers:
    /// for tests and `teamtalk up`.
    #[must_use]
    pub fn loopback(base_dir: impl Into<PathBuf>) -> Self {
        let mut cfg = Self::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, base_dir);
        cfg.get_threads = 4;
        cfg.post_threads = 2;
        cfg
    }

    /// Reads TeamTalk's `msfs.conf`: `ListenIP`, `ListenPort` and
    /// `BaseDir` are required as in TeamTalk; the thread counts must be
    /// positive (capped at [`MAX_THREADS`]); our keys are optional.
    /// `FileCnt` and `FilesPerDir` are accepted and ignored with a log
    /// line; unknown and repeated keys are warned about.
    ///
    /// # Errors
    /// A missing key, a value that does not parse, a zero thread count.
    pub fn from_conf(conf: &Conf) -> Result<Self, ConfigError> {
        conf.check_keys(&[KNOWN_KEYS, IGNORED_KEYS].concat())?;
        let ignored: Vec<&str> = conf
            .iter()
            .map(|(k, _)| k)
            .filter(|k| IGNORED_KEYS.contains(k))
            .collect();
        if !ignored.is_empty() {
            info!(file = conf.origin(), keys = ?ignored,
                "accepted for compatibility and not used: files are placed by their hash");
        }
        let base: String = conf.require("BaseDir")?;
        let mut cfg = Self::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            conf.require("ListenPort")?,
            base,
        );
        cfg.listen_ips = listen_ips(conf, "ListenIP")?;
        for (key, field) in [
            ("GetThreadCount", &mut cfg.get_threads),
            ("PostThreadCount", &mut cfg.post_threads),
            ("MaxUploadBytes", &mut cfg.max_upload_bytes),
        ] {
            if let Some(n) = conf.get_parsed::<NonZeroUsize>(key)? {
                *field = n.get();
            }
        }
        cfg.get_threads = cfg.get_threads.min(MAX_THREADS);
        cfg.post_threads = cfg.post_threads.min(MAX_THREADS);
        cfg.quota_bytes = conf.get_parsed::<u64>("QuotaBytes")?.filter(|&q| q > 0);
        if let Some(n) = conf.get_parsed("UploadsPerMinute")? {
            cfg.uploads_per_minute = n;
        }
        cfg.public_url = conf.get("PublicUrl").map(str::to_owned);
        if let Some(list) = conf.get("CorsOrigins") {
            cfg.cors_origins = list
                .split(';')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(n) = conf.get_parsed::<usize>("MaxConnsPerSource")? {
            cfg.max_per_source = n.max(1);
        }
        if let Some(n) = conf.get_parsed::<usize>("MaxConnections")? {
            cfg.max_connections = n.max(1);
        }
        cfg.admin = crate::runtime::admin::listen_from_conf(conf)?;
        cfg.admin_token = conf.get("AdminToken").map(str::to_owned);
        Ok(cfg)
    }

    /// The HTTP settings of every connection.
    #[must_use]
    pub fn http(&self) -> HttpConfig {
        let max_body = self.max_upload_bytes.saturating_add(FORM_OVERHEAD);
        HttpConfig {
            body_timeout: upload_deadline(self.max_upload_bytes),
            max_body_bytes: max_body,
            max_discard_bytes: max_body.saturating_mul(4),
            max_tx_bytes: max_body.max(teamtalk_conn::DEFAULT_MAX_TX_BYTES),
            ..HttpConfig::default()
        }
    }
}

/// Starts an msfs: opens the store (removing unfinished uploads, counting
/// what is stored), binds, then serves until stopped.
///
/// # Errors
/// [`DaemonError`] when `BaseDir` cannot be used, a port cannot be bound
/// or a thread cannot start; nothing keeps running then.
pub fn spawn(config: MsfsConfig) -> Result<RunningMsfs, DaemonError> {
    if let Some(url) = &config.public_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(DaemonError::Config {
            daemon: "msfs",
            reason: format!("PublicUrl {url:?} must start with http:// or https://"),
        });
    }
    let (store, usage) = BlobStore::open(&config.base_dir).map_err(|e| DaemonError::Config {
        daemon: "msfs",
        reason: format!("BaseDir {}: {e}", config.base_dir.display()),
    })?;
    info!(dir = %config.base_dir.display(), files = usage.files, bytes = usage.bytes, "msfs store opened");
    let store = Arc::new(store);
    let http = config.http();
    let max_serve = (http.max_tx_bytes - 16 * 1024) as u64;
    let mut plan = Plan::new();
    plan.side(
        "http",
        ReactorConfig {
            threads: config.reactor_threads.max(1),
            max_connections: config.max_connections,
            ..ReactorConfig::default()
        },
    );
    for ip in &config.listen_ips {
        plan.listen(
            "http",
            "http",
            SocketAddr::new(*ip, config.port),
            PortKind::Http {
                config: http.clone(),
                max_per_source: Some(config.max_per_source.max(1)),
            },
        );
    }
    let worker = || MsfsWorker::new(Arc::clone(&store), config.max_upload_bytes, max_serve);
    let gets = config.get_threads.clamp(1, MAX_THREADS);
    let posts = config.post_threads.clamp(1, MAX_THREADS);
    for _ in 0..gets + posts {
        plan.worker(worker());
    }
    // Small batches: a worker's batch is served in turn, so a short one
    // keeps one slow disk read from holding many answers.
    plan.worker_limits(crate::runtime::DEFAULT_WORKER_QUEUE, 8);
    plan.admin(
        config
            .admin
            .map(|a| AdminSettings::with_token(a, config.admin_token.clone())),
    );
    let limits = Limits {
        quota_bytes: config.quota_bytes,
        uploads_per_minute: config.uploads_per_minute,
        max_pending_bytes: (config.max_upload_bytes as u64 + FORM_OVERHEAD as u64)
            .saturating_mul(MAX_PENDING_UPLOADS),
        max_sources: MAX_RATE_SOURCES,
    };
    let app = MsfsApp::new(
        limits,
        config.public_url.clone(),
        usage,
        0..gets,
        gets..gets + posts,
    )
    .with_cors(&config.cors_origins);
    let running = runtime::start(app, plan)?;
    Ok(running)
}

impl RunningMsfs {
    /// The URL of the first listener, `http://<addr>/`: what login_server
    /// hands out when msfs runs on the same host.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr())
    }

    /// Files and bytes stored (zero when the daemon does not answer).
    #[must_use]
    pub fn usage(&self) -> Usage {
        self.inspect(MsfsApp::usage).unwrap_or_default()
    }

    /// The App's counters.
    #[must_use]
    pub fn counts(&self) -> MsfsCounts {
        self.inspect(MsfsApp::counts).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TeamTalk's `auto_setup/im_server/conf/msfs.conf`.
    const STOCK: &str = "\
ListenIP=0.0.0.0\t\t#可以监听多个IP,用;分割
ListenPort=8700
BaseDir=./tmp
FileCnt=0
FilesPerDir=30000
GetThreadCount=32
PostThreadCount=1
";

    #[test]
    fn reads_teamtalks_conf_and_ours() {
        let conf = Conf::parse_str(STOCK, "msfs.conf").unwrap();
        let cfg = MsfsConfig::from_conf(&conf).unwrap();
        assert_eq!(cfg.listen_ips, vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]);
        assert_eq!(cfg.port, 8700);
        assert_eq!(cfg.base_dir, PathBuf::from("./tmp"));
        assert_eq!((cfg.get_threads, cfg.post_threads), (32, 1));
        assert_eq!(cfg.max_upload_bytes, 10 << 20);
        assert_eq!(cfg.quota_bytes, None);
        assert_eq!(cfg.uploads_per_minute, 120);
        assert!(
            conf.unknown_keys(&[KNOWN_KEYS, IGNORED_KEYS].concat())
                .is_empty()
        );

        let ours = format!(
            "{STOCK}MaxUploadBytes=1048576\nQuotaBytes=1000000000\nUploadsPerMinute=0\n\
             PublicUrl=https://img.example/\nMaxConnsPerSource=4\nMaxConnections=100\n\
             AdminListen=127.0.0.1:9107\n"
        );
        let conf = Conf::parse_str(&ours, "msfs.conf").unwrap();
        let cfg = MsfsConfig::from_conf(&conf).unwrap();
        assert_eq!(cfg.max_upload_bytes, 1 << 20);
        assert_eq!(cfg.quota_bytes, Some(1_000_000_000));
        assert_eq!(cfg.uploads_per_minute, 0);
        assert_eq!(cfg.public_url.as_deref(), Some("https://img.example/"));
        assert_eq!((cfg.max_per_source, cfg.max_connections), (4, 100));
        assert_eq!(cfg.admin, Some("127.0.0.1:9107".parse().unwrap()));
        let http = cfg.http();
        assert_eq!(http.max_body_bytes, (1 << 20) + FORM_OVERHEAD);
        assert!(http.max_discard_bytes > http.max_body_bytes);
        assert_eq!(http.body_timeout, upload_deadline(1 << 20));
        assert!(http.max_tx_bytes >= http.max_body_bytes);
    }

    #[test]
    fn required_keys_and_bad_values_are_errors() {
        // TeamTalk's msfs.conf.example leaves BaseDir empty: not runnable.
        let text = STOCK.replace("BaseDir=./tmp", "BaseDir=");
        let conf = Conf::parse_str(&text, "msfs.conf").unwrap();
        let err = MsfsConfig::from_conf(&conf).unwrap_err().to_string();
        assert!(err.contains("BaseDir"), "{err}");
        for (from, to, key) in [
            ("GetThreadCount=32", "GetThreadCount=0", "GetThreadCount"),
            ("FileCnt=0", "MaxUploadBytes=0", "MaxUploadBytes"),
            ("PostThreadCount=1", "PostThreadCount=x", "PostThreadCount"),
            ("ListenPort=8700", "ListenPort=87000", "ListenPort"),
            ("ListenIP=0.0.0.0", "ListenIP=localhost", "ListenIP"),
        ] {
            let conf = Conf::parse_str(&STOCK.replace(from, to), "msfs.conf").unwrap();
            let err = MsfsConfig::from_conf(&conf).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        let conf = Conf::parse_str(
            &STOCK.replace("GetThreadCount=32", "GetThreadCount=999"),
            "m",
        )
        .unwrap();
        assert_eq!(
            MsfsConfig::from_conf(&conf).unwrap().get_threads,
            MAX_THREADS
        );
    }

    #[test]
    fn deadlines_follow_the_upload_limit() {
        assert_eq!(upload_deadline(10 << 20), Duration::from_secs(10 + 161));
        assert_eq!(upload_deadline(0), Duration::from_secs(11));
    }
}
