//! push_server: notifications for users whose phones are not connected.
//!
//! msg_servers link to its port (TeamTalk's 8500, the cluster secret
//! proved like on every server link) and send `IMPushToUserReq` (0x070f):
//! TeamTalk's `flash` text, its `data` JSON and the device tokens. Each
//! token goes to the sink pushserver.conf names for its platform:
//!
//! - `apns`: Apple's HTTP/2 provider API with token-based (ES256 JWT)
//!   authentication. TeamTalk's binary APNs protocol (ports 2195/2196)
//!   was shut down by Apple in 2021 and is not rebuilt; its `CertPath`,
//!   `KeyPath`, `KeyPassword` are accepted and not used.
//! - `fcm`: Firebase Cloud Messaging HTTP v1, authorised with a Google
//!   service account (OAuth2 JWT grant).
//! - `webhook`: a JSON POST to the operator's own gateway.
//!
//! With no sink for a platform, its tokens are answered with result 1
//! (TeamTalk's answer for a non-iOS token) and that is logged once.
//! Deliveries are retried with backoff, held in a bounded queue, sent
//! once per message and device (`push_key`), and each request is answered
//! with 0x0710 once all its tokens have a result ([`app`] lists the
//! codes). An invalid token's result names its user, so msg_server has
//! db_proxy forget it.
//!
//! The decisions are [`PushApp`]'s (sans-IO, unit-tested in virtual
//! time); the HTTP is [`PushWorker`]s' (threads of the shared runtime).

pub mod app;
pub mod sink;
pub mod worker;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::EncodingKey;
use teamtalk_conn::SessionConfig;
use tracing::info;

use crate::cluster::{ClusterError, PeerPolicy};
use crate::conf::{Conf, ConfError};
use crate::route::listen_ips;
use crate::runtime::{self, AdminSettings, DaemonError, Plan, PortKind, Running};

pub use app::{PushApp, PushLimits, Routes};
pub use sink::{Delivery, Outcome, Platform, SinkKind};
pub use worker::{
    ApnsSettings, FcmSettings, PushDone, PushJob, PushWorker, Sinks, WebhookSettings,
};

/// A running push_server.
pub type RunningPush = Running<PushApp>;

/// TeamTalk's push_server port.
pub const DEFAULT_PORT: u16 = 8500;
/// Apple's production and sandbox hosts.
pub const APNS_PRODUCTION: &str = "https://api.push.apple.com";
/// Apple's sandbox host (`SandBox=1`).
pub const APNS_SANDBOX: &str = "https://api.sandbox.push.apple.com";
/// FCM's host.
pub const FCM_BASE: &str = "https://fcm.googleapis.com";

/// Keys of pushserver.conf: TeamTalk's, then ours.
pub const KNOWN_KEYS: &[&str] = &[
    "ListenIP",
    "ListenPort",
    "CertPath",
    "KeyPath",
    "KeyPassword",
    "SandBox",
    "IosSink",
    "AndroidSink",
    "WebhookUrl",
    "WebhookToken",
    "FcmCredentialsFile",
    "FcmUrl",
    "ApnsKeyFile",
    "ApnsKeyId",
    "ApnsTeamId",
    "ApnsTopic",
    "ApnsUrl",
    "HttpCaFile",
    "HttpTimeoutSecs",
    "Workers",
    "MaxQueue",
    "MaxAttempts",
    "RetryBaseSecs",
    "DedupeSecs",
    "AdminListen",
    "AdminToken",
];

/// Why pushserver.conf cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushConfigError {
    /// A key is missing or does not parse.
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// The listen addresses.
    #[error(transparent)]
    Listen(#[from] crate::route::ConfigError),
    /// The cluster secret.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A sink's settings are unusable.
    #[error("{origin}: {key}: {reason}")]
    Sink {
        /// File name.
        origin: String,
        /// The key at fault.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// How to run a push_server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PushConfig {
    /// Addresses of the msg_server port (`ListenIP`, TeamTalk's 127.0.0.1).
    pub listen_ips: Vec<IpAddr>,
    /// Its port (`ListenPort`, 8500; 0 picks one).
    pub port: u16,
    /// The sinks' settings.
    pub sinks: Sinks,
    /// Which sink serves which platform.
    pub routes: Routes,
    /// Extra trusted roots for the services' TLS (`HttpCaFile`, PEM).
    pub extra_roots: Vec<Vec<u8>>,
    /// Per-request timeout (`HttpTimeoutSecs`, 10).
    pub http_timeout: Duration,
    /// Worker threads (`Workers`, 2).
    pub workers: usize,
    /// Queue, retry and dedupe bounds.
    pub limits: PushLimits,
    /// Admin endpoint.
    pub admin: Option<SocketAddr>,
    /// Admin bearer token.
    pub admin_token: Option<String>,
    /// The cluster secret msg_servers prove.
    pub peers: PeerPolicy,
}

impl PushConfig {
    /// A push_server on `listen` with `sinks`, each platform going to its
    /// own service when configured, else to the webhook.
    #[must_use]
    pub fn new(listen: SocketAddr, sinks: Sinks) -> Self {
        let routes = default_routes(&sinks);
        Self {
            listen_ips: vec![listen.ip()],
            port: listen.port(),
            sinks,
            routes,
            extra_roots: Vec::new(),
            http_timeout: Duration::from_secs(10),
            workers: 2,
            limits: PushLimits::default(),
            admin: None,
            admin_token: None,
            peers: PeerPolicy::open(),
        }
    }

    /// Reads pushserver.conf. Relative file names are taken from the
    /// conf's directory.
    ///
    /// # Errors
    /// [`PushConfigError`] naming the file and key.
    pub fn from_conf(conf: &Conf) -> Result<Self, PushConfigError> {
        conf.check_keys(&[KNOWN_KEYS, crate::cluster::KEYS].concat())?;
        for key in ["CertPath", "KeyPath", "KeyPassword"] {
            if conf.get(key).is_some() {
                info!(
                    key,
                    "key of the retired binary APNs protocol accepted and not used"
                );
            }
        }
        let dir = Path::new(conf.origin())
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let file = |name: &str| -> PathBuf {
            let p = PathBuf::from(name);
            if p.is_absolute() { p } else { dir.join(p) }
        };
        let sink_err = |key: &'static str, reason: String| PushConfigError::Sink {
            origin: conf.origin().to_owned(),
            key,
            reason,
        };
        let listen_ips = if conf.get("ListenIP").is_some() {
            listen_ips(conf, "ListenIP")?
        } else {
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
        };
        let port = conf.get_parsed("ListenPort")?.unwrap_or(DEFAULT_PORT);
        let mut sinks = Sinks::default();
        if let Some(url) = conf.get("WebhookUrl") {
            check_url(url).map_err(|r| sink_err("WebhookUrl", r))?;
            sinks.webhook = Some(WebhookSettings {
                url: url.to_owned(),
                bearer: conf.get("WebhookToken").map(str::to_owned),
            });
        }
        if let Some(path) = conf.get("FcmCredentialsFile") {
            let mut fcm =
                fcm_from_file(&file(path)).map_err(|r| sink_err("FcmCredentialsFile", r))?;
            if let Some(url) = conf.get("FcmUrl") {
                check_url(url).map_err(|r| sink_err("FcmUrl", r))?;
                url.clone_into(&mut fcm.base_url);
            }
            sinks.fcm = Some(fcm);
        }
        if let Some(path) = conf.get("ApnsKeyFile") {
            let pem = std::fs::read(file(path))
                .map_err(|e| sink_err("ApnsKeyFile", format!("{path}: {e}")))?;
            let key = EncodingKey::from_ec_pem(&pem)
                .map_err(|e| sink_err("ApnsKeyFile", format!("not an EC key in PEM: {e}")))?;
            let need = |k: &'static str| -> Result<String, PushConfigError> {
                conf.get(k)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(|| sink_err(k, "required with ApnsKeyFile".to_owned()))
            };
            let sandbox = conf.get_parsed::<u32>("SandBox")?.unwrap_or(0) == 1;
            let base_url = match conf.get("ApnsUrl") {
                Some(u) => {
                    check_url(u).map_err(|r| sink_err("ApnsUrl", r))?;
                    u.to_owned()
                }
                None if sandbox => APNS_SANDBOX.to_owned(),
                None => APNS_PRODUCTION.to_owned(),
            };
            sinks.apns = Some(ApnsSettings {
                key,
                key_id: need("ApnsKeyId")?,
                team_id: need("ApnsTeamId")?,
                topic: need("ApnsTopic")?,
                base_url,
            });
        }
        let mut cfg = Self::new(SocketAddr::new(listen_ips[0], port), sinks);
        cfg.listen_ips = listen_ips;
        for (key, slot) in [("IosSink", 0), ("AndroidSink", 1)] {
            let Some(v) = conf.get(key) else { continue };
            let sink = match v {
                "none" => None,
                "webhook" => Some(SinkKind::Webhook),
                "fcm" => Some(SinkKind::Fcm),
                "apns" => Some(SinkKind::Apns),
                _ => return Err(conf.invalid_value(key, "apns, fcm, webhook or none").into()),
            };
            let configured = match sink {
                None => true,
                Some(SinkKind::Webhook) => cfg.sinks.webhook.is_some(),
                Some(SinkKind::Fcm) => cfg.sinks.fcm.is_some(),
                Some(SinkKind::Apns) => cfg.sinks.apns.is_some(),
            };
            if !configured {
                return Err(sink_err(key, format!("{v} is not configured")));
            }
            if slot == 0 {
                cfg.routes.ios = sink;
            } else {
                cfg.routes.android = sink;
            }
        }
        if let Some(path) = conf.get("HttpCaFile") {
            let pem = std::fs::read(file(path))
                .map_err(|e| sink_err("HttpCaFile", format!("{path}: {e}")))?;
            cfg.extra_roots.push(pem);
        }
        if let Some(s) = conf.get_parsed::<u64>("HttpTimeoutSecs")? {
            cfg.http_timeout = Duration::from_secs(s.clamp(1, 300));
        }
        if let Some(n) = conf.get_parsed::<usize>("Workers")? {
            cfg.workers = n.clamp(1, 64);
        }
        if let Some(n) = conf.get_parsed::<usize>("MaxQueue")? {
            cfg.limits.max_queue = n.max(1);
        }
        if let Some(n) = conf.get_parsed::<u32>("MaxAttempts")? {
            cfg.limits.max_attempts = n.clamp(1, 20);
        }
        if let Some(s) = conf.get_parsed::<u64>("RetryBaseSecs")? {
            cfg.limits.retry_base = Duration::from_secs(s.clamp(1, 3600));
        }
        if let Some(s) = conf.get_parsed::<u64>("DedupeSecs")? {
            cfg.limits.dedupe_for = Duration::from_secs(s);
        }
        cfg.admin = crate::runtime::admin::listen_from_conf(conf)?;
        cfg.admin_token = conf.get("AdminToken").map(str::to_owned);
        cfg.peers = PeerPolicy::from_conf(conf)?;
        Ok(cfg)
    }
}

/// Each platform to its own service when configured, else to the webhook.
#[must_use]
pub fn default_routes(sinks: &Sinks) -> Routes {
    let webhook = sinks.webhook.as_ref().map(|_| SinkKind::Webhook);
    Routes {
        ios: sinks.apns.as_ref().map(|_| SinkKind::Apns).or(webhook),
        android: sinks.fcm.as_ref().map(|_| SinkKind::Fcm).or(webhook),
    }
}

fn check_url(url: &str) -> Result<(), String> {
    match url.split_once("://") {
        Some(("http" | "https", rest)) if !rest.is_empty() => Ok(()),
        _ => Err(format!("{url:?} is not an http(s) URL")),
    }
}

/// FCM settings from a Google service-account JSON file
/// (`project_id`, `client_email`, `private_key`, `token_uri`).
///
/// # Errors
/// A reason when the file cannot be read or lacks a field.
pub fn fcm_from_file(path: &Path) -> Result<FcmSettings, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let field = |k: &str| -> Result<String, String> {
        v[k].as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("{}: no {k}", path.display()))
    };
    let pem = field("private_key")?;
    let key = EncodingKey::from_rsa_pem(pem.as_bytes())
        .map_err(|e| format!("{}: private_key: {e}", path.display()))?;
    let token_uri = field("token_uri")?;
    check_url(&token_uri)?;
    Ok(FcmSettings {
        project_id: field("project_id")?,
        client_email: field("client_email")?,
        key,
        token_uri,
        base_url: FCM_BASE.to_owned(),
    })
}

/// Starts a push_server.
///
/// # Errors
/// [`DaemonError`] when its port cannot be bound or the HTTP client
/// cannot be made.
pub fn spawn(cfg: PushConfig) -> Result<RunningPush, DaemonError> {
    let mut plan = Plan::new();
    for ip in &cfg.listen_ips {
        plan.listen(
            "peers",
            "msg_server",
            SocketAddr::new(*ip, cfg.port),
            PortKind::Peers(SessionConfig::server_peer()),
        );
    }
    let sinks = Arc::new(cfg.sinks.clone());
    let workers = cfg.workers.max(1);
    for i in 0..workers {
        let w = PushWorker::new(i, Arc::clone(&sinks), &cfg.extra_roots, cfg.http_timeout)
            .map_err(|e| DaemonError::Config {
                daemon: "push_server",
                reason: e.to_string(),
            })?;
        plan.worker(w);
    }
    plan.worker_limits(
        cfg.limits.per_worker.max(1) * 2,
        cfg.limits.per_worker.max(1),
    );
    plan.admin(
        cfg.admin
            .map(|a| AdminSettings::with_token(a, cfg.admin_token.clone())),
    );
    plan.peer_policy(cfg.peers.clone());
    runtime::start(PushApp::new(cfg.routes, cfg.limits, workers), plan)
}

#[cfg(test)]
mod tests;
