//! push_server's workers: the only place that talks HTTP to the push
//! services. Each is a thread of the shared runtime (like msfs's disk
//! workers) with its own blocking `reqwest` client, so the App stays
//! sans-IO and a slow service holds up one worker, not the daemon. Bodies
//! and status rules are [`super::sink`]'s; this file adds credentials:
//!
//! - APNs: an ES256 JWT (`alg`, `kid` in the header; `iss` = team id,
//!   `iat`) reused for 40 minutes (Apple refuses tokens older than an hour
//!   and renewals more often than every 20 minutes), renewed at once after
//!   `ExpiredProviderToken`.
//! - FCM: Google's OAuth2 service-account grant: an RS256 JWT (`iss` =
//!   the account's `client_email`, `scope` firebase.messaging, `aud` =
//!   `token_uri`, `iat`, `exp` = `iat` + 1 h) posted as
//!   `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`; the access
//!   token is kept until a minute before its `expires_in`.
//!
//! Time comes with each job (the App's clock), never from here.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use tracing::{debug, warn};

use super::sink::{
    Delivery, Outcome, SinkKind, apns_body, apns_headers, classify_apns, classify_fcm,
    classify_webhook, fcm_body, needs_new_credential, webhook_body,
};
use crate::runtime::Worker;

/// The OAuth2 scope FCM's send API needs.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// How long an APNs provider token is reused.
pub const APNS_TOKEN_SECS: u64 = 40 * 60;
/// Lifetime asked for a Google assertion (Google's maximum).
const ASSERTION_SECS: u64 = 3600;
/// Bytes of a service's answer read at most.
const MAX_ANSWER: usize = 64 << 10;

/// The webhook sink.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Where to POST.
    pub url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub bearer: Option<String>,
}

/// FCM, from a Google service-account JSON file.
#[derive(Clone)]
pub struct FcmSettings {
    /// The Firebase project.
    pub project_id: String,
    /// The service account (`client_email`).
    pub client_email: String,
    /// Its private key (`private_key`, PEM).
    pub key: EncodingKey,
    /// Google's token endpoint (`token_uri`).
    pub token_uri: String,
    /// `https://fcm.googleapis.com` unless the conf says otherwise.
    pub base_url: String,
}

impl std::fmt::Debug for FcmSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmSettings")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// APNs with token-based authentication.
#[derive(Clone)]
pub struct ApnsSettings {
    /// The `.p8` signing key.
    pub key: EncodingKey,
    /// Its key id (`kid`).
    pub key_id: String,
    /// The developer team (`iss`).
    pub team_id: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    /// `https://api.push.apple.com` (or the sandbox) unless overridden.
    pub base_url: String,
}

impl std::fmt::Debug for ApnsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsSettings")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .field("topic", &self.topic)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// Every configured sink.
#[derive(Debug, Clone, Default)]
pub struct Sinks {
    /// The webhook, if any.
    pub webhook: Option<WebhookSettings>,
    /// FCM, if any.
    pub fcm: Option<FcmSettings>,
    /// APNs, if any.
    pub apns: Option<ApnsSettings>,
}

/// One attempt at one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushJob {
    /// The App's id of the delivery.
    pub id: u64,
    /// What to send where.
    pub delivery: Delivery,
    /// Wall-clock seconds when it was handed over (for JWTs and expiry).
    pub unix: u64,
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushDone {
    /// The delivery's id.
    pub id: u64,
    /// Which worker ran it.
    pub worker: usize,
    /// What came of it.
    pub outcome: Outcome,
}

#[derive(Serialize)]
struct ApnsClaims<'a> {
    iss: &'a str,
    iat: u64,
}

#[derive(Serialize)]
struct GoogleClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// A worker thread's state: its client and cached credentials.
pub struct PushWorker {
    index: usize,
    client: reqwest::blocking::Client,
    sinks: Arc<Sinks>,
    /// APNs provider token and when it was made.
    apns_jwt: Option<(String, u64)>,
    /// FCM access token and until when it is good.
    fcm_token: Option<(String, u64)>,
}

impl std::fmt::Debug for PushWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushWorker")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// Why a worker could not be made.
#[derive(Debug, thiserror::Error)]
#[error("push HTTP client: {0}")]
pub struct ClientError(String);

impl PushWorker {
    /// Worker `index` with an HTTP client that trusts the system's web
    /// roots plus `extra_roots` (PEM certificates, for a private gateway
    /// or a test), giving up on a request after `timeout`.
    ///
    /// # Errors
    /// [`ClientError`] when a root certificate cannot be read or the TLS
    /// client cannot be made.
    pub fn new(
        index: usize,
        sinks: Arc<Sinks>,
        extra_roots: &[Vec<u8>],
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let mut builder = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("teamtalk-push/", env!("CARGO_PKG_VERSION")));
        for pem in extra_roots {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError(e.to_string()))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder.build().map_err(|e| ClientError(e.to_string()))?;
        Ok(Self {
            index,
            client,
            sinks,
            apns_jwt: None,
            fcm_token: None,
        })
    }

    fn attempt(&mut self, job: &PushJob) -> Outcome {
        let d = &job.delivery;
        match d.sink {
            SinkKind::Webhook => self.webhook(d),
            SinkKind::Fcm => self.fcm(d, job.unix),
            SinkKind::Apns => self.apns(d, job.unix),
        }
    }

    fn webhook(&self, d: &Delivery) -> Outcome {
        let Some(w) = &self.sinks.webhook else {
            return Outcome::Failed("webhook sink not configured".into());
        };
        let mut req = self.client.post(&w.url).json(&webhook_body(d));
        if let Some(b) = &w.bearer {
            req = req.bearer_auth(b);
        }
        match req.send() {
            Ok(rsp) => classify_webhook(rsp.status().as_u16(), retry_after(&rsp)),
            Err(e) => transport_failure("webhook", &e),
        }
    }

    fn fcm(&mut self, d: &Delivery, unix: u64) -> Outcome {
        let Some(f) = self.sinks.fcm.clone() else {
            return Outcome::Failed("fcm sink not configured".into());
        };
        let token = match self.fcm_access_token(&f, unix) {
            Ok(t) => t,
            Err(o) => return o,
        };
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            f.base_url.trim_end_matches('/'),
            f.project_id
        );
        match self
            .client
            .post(url)
            .bearer_auth(token)
            .json(&fcm_body(d))
            .send()
        {
            Ok(rsp) => {
                let status = rsp.status().as_u16();
                let after = retry_after(&rsp);
                let body = read_body(rsp);
                if needs_new_credential(SinkKind::Fcm, status, &body) {
                    self.fcm_token = None;
                }
                classify_fcm(status, &body, after)
            }
            Err(e) => transport_failure("fcm", &e),
        }
    }

    /// The cached access token, or a new one from Google's token endpoint.
    fn fcm_access_token(&mut self, f: &FcmSettings, unix: u64) -> Result<String, Outcome> {
        if let Some((t, until)) = &self.fcm_token
            && unix < *until
        {
            return Ok(t.clone());
        }
        let claims = GoogleClaims {
            iss: &f.client_email,
            scope: FCM_SCOPE,
            aud: &f.token_uri,
            iat: unix,
            exp: unix + ASSERTION_SECS,
        };
        let assertion = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &f.key)
            .map_err(|e| Outcome::Failed(format!("fcm: cannot sign the assertion: {e}")))?;
        let rsp = self
            .client
            .post(&f.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .map_err(|e| transport_failure("fcm oauth", &e))?;
        let status = rsp.status().as_u16();
        let body = read_body(rsp);
        if status != 200 {
            warn!(status, "fcm: the token endpoint refused the assertion");
            return Err(if status >= 500 || status == 429 {
                Outcome::Retry {
                    reason: format!("fcm oauth {status}"),
                    after: None,
                }
            } else {
                Outcome::Failed(format!("fcm oauth {status}"))
            });
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| Outcome::Failed("fcm oauth: answer is not JSON".into()))?;
        let Some(token) = v["access_token"].as_str() else {
            return Err(Outcome::Failed("fcm oauth: no access_token".into()));
        };
        let lifetime = v["expires_in"].as_u64().unwrap_or(3600);
        debug!(lifetime, "fcm: new access token");
        self.fcm_token = Some((token.to_owned(), unix + lifetime.saturating_sub(60)));
        Ok(token.to_owned())
    }

    fn apns(&mut self, d: &Delivery, unix: u64) -> Outcome {
        let Some(a) = self.sinks.apns.clone() else {
            return Outcome::Failed("apns sink not configured".into());
        };
        let jwt = match &self.apns_jwt {
            Some((t, made)) if unix < made + APNS_TOKEN_SECS => t.clone(),
            _ => {
                let mut header = Header::new(Algorithm::ES256);
                header.kid = Some(a.key_id.clone());
                let claims = ApnsClaims {
                    iss: &a.team_id,
                    iat: unix,
                };
                match jsonwebtoken::encode(&header, &claims, &a.key) {
                    Ok(t) => {
                        self.apns_jwt = Some((t.clone(), unix));
                        t
                    }
                    Err(e) => {
                        return Outcome::Failed(format!("apns: cannot sign the token: {e}"));
                    }
                }
            }
        };
        let url = format!("{}/3/device/{}", a.base_url.trim_end_matches('/'), d.token);
        let mut req = self
            .client
            .post(url)
            .header("authorization", format!("bearer {jwt}"))
            .json(&apns_body(d));
        for (name, value) in apns_headers(d, &a.topic, unix) {
            req = req.header(name, value);
        }
        match req.send() {
            Ok(rsp) => {
                let status = rsp.status().as_u16();
                let after = retry_after(&rsp);
                let body = read_body(rsp);
                if needs_new_credential(SinkKind::Apns, status, &body) {
                    self.apns_jwt = None;
                }
                classify_apns(status, &body, after)
            }
            Err(e) => transport_failure("apns", &e),
        }
    }
}

impl Worker for PushWorker {
    type Job = PushJob;
    type Done = PushDone;

    fn run(&mut self, jobs: Vec<PushJob>, done: &mut Vec<PushDone>) {
        for job in jobs {
            let outcome = self.attempt(&job);
            debug!(
                id = job.id,
                sink = job.delivery.sink.label(),
                ?outcome,
                "push attempt"
            );
            done.push(PushDone {
                id: job.id,
                worker: self.index,
                outcome,
            });
        }
    }
}

fn retry_after(rsp: &reqwest::blocking::Response) -> Option<u64> {
    rsp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn read_body(rsp: reqwest::blocking::Response) -> Vec<u8> {
    use std::io::Read as _;
    let mut body = Vec::new();
    let _ = rsp.take(MAX_ANSWER as u64).read_to_end(&mut body);
    body
}

fn transport_failure(what: &str, e: &reqwest::Error) -> Outcome {
    Outcome::Retry {
        reason: format!("{what}: {}", crate::clip::clip(&e.to_string())),
        after: None,
    }
}
