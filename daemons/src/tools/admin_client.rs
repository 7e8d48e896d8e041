//! A client of the admin API (`/api/…` on the admin port), for the
//! `teamtalk` command and tests: JSON in and out over ureq, with the
//! bearer token.

use std::io::Read;
use std::time::Duration;

use serde_json::Value;

use crate::http::ErrorBody;

/// Largest answer read (a page of 1000 users is a few hundred KiB).
const MAX_ANSWER: u64 = 16 << 20;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminClientError {
    /// The admin port could not be reached, or broke off.
    #[error("admin API at {url}: {source}")]
    Transport {
        /// The URL called.
        url: String,
        /// ureq's reason.
        source: Box<ureq::Error>,
    },
    /// The API answered with an error.
    #[error("{message} ({status})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The API's message.
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("admin API at {url}: malformed answer: {reason}")]
    Malformed {
        /// The URL called.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

impl AdminClientError {
    /// The HTTP status of an API error.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One admin endpoint and its token.
#[derive(Debug, Clone)]
pub struct AdminClient {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl AdminClient {
    /// Calls `base` (`http://127.0.0.1:8090`, a trailing `/` ignored) with
    /// `token`, each call within `timeout`.
    #[must_use]
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Self {
        let t = Some(timeout);
        let agent = ureq::Agent::config_builder()
            .timeout_global(t)
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let base = if base.contains("://") {
            base.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", base.trim_end_matches('/'))
        };
        Self { agent, base, token }
    }

    /// The endpoint's base URL.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `method path` with an optional JSON body; the JSON answer (`Null`
    /// for 204).
    ///
    /// # Errors
    /// [`AdminClientError`]; an API error carries its status and message.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, AdminClientError> {
        let (status, answer) = self.raw(method, path, body)?;
        if status >= 400 {
            let message = serde_json::from_value::<ErrorBody>(answer.clone())
                .map_or_else(|_| answer.to_string(), |e| e.message);
            return Err(AdminClientError::Api { status, message });
        }
        Ok(answer)
    }

    /// As [`call`](Self::call), with the status and whatever JSON came,
    /// errors included.
    ///
    /// # Errors
    /// Transport failures and answers that are not JSON.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), AdminClientError> {
        let url = format!("{}{path}", self.base);
        let transport = |e: ureq::Error| AdminClientError::Transport {
            url: url.clone(),
            source: Box::new(e),
        };
        let mut req = ::http::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let text = body.map(Value::to_string).unwrap_or_default();
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let req = req.body(text).map_err(|e| AdminClientError::Malformed {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let mut response = self.agent.run(req).map_err(transport)?;
        let status = response.status().as_u16();
        let mut raw = String::new();
        response
            .body_mut()
            .as_reader()
            .take(MAX_ANSWER)
            .read_to_string(&mut raw)
            .map_err(|e| AdminClientError::Malformed {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        if raw.is_empty() {
            return Ok((status, Value::Null));
        }
        match serde_json::from_str(&raw) {
            Ok(v) => Ok((status, v)),
            // A text answer (the admin port's own 401 on /metrics, a
            // proxy's page): kept as a string.
            Err(_) if status >= 400 => Ok((status, Value::String(raw.trim().to_owned()))),
            Err(e) => Err(AdminClientError::Malformed {
                url,
                reason: e.to_string(),
            }),
        }
    }
}
