//! `GET /msg_server` on login_server: which msg_server to connect to.
//!
//! The HTTP exchange goes through `ureq` (no TLS: login_server speaks
//! plain HTTP); the JSON is read with `serde_json`.

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use crate::tools::addr::{AddrError, ServerAddr};

/// login_server's answer, as TeamTalk clients read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Address to try first (`priorIP`): an IP or a host name.
    pub prior_ip: String,
    /// Fallback address (`backupIP`).
    pub backup_ip: String,
    /// msg_server port (sent as a string).
    pub port: u16,
    /// File store URLs and discovery URL, passed through.
    pub msfs_prior: String,
    /// See `msfs_prior`.
    pub msfs_backup: String,
    /// See `msfs_prior`.
    pub discovery: String,
}

impl Assignment {
    /// `priorIP:port`, resolved when `priorIP` is a host name (TeamTalk's
    /// stock confs hand out `localhost`).
    ///
    /// # Errors
    /// [`AssignError::BadAddress`] when `priorIP` is neither an address
    /// nor a name that resolves.
    pub fn addr(&self) -> Result<SocketAddr, AssignError> {
        self.server()?
            .resolve()
            .map_err(|e| AssignError::BadAddress(format!("{}: {e}", self.prior_ip)))
    }

    /// `priorIP:port` unresolved.
    ///
    /// # Errors
    /// [`AssignError::BadAddress`] when `priorIP` is not a host.
    pub fn server(&self) -> Result<ServerAddr, AssignError> {
        let host = self.prior_ip.trim_start_matches('[').trim_end_matches(']');
        ServerAddr::parse(&ServerAddr::new(host, self.port).to_string())
            .map_err(|e| AssignError::BadAddress(e.to_string()))
    }
}

/// Why no assignment could be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssignError {
    /// The HTTP exchange failed (connect, timeout, bad response).
    #[error("login_server http: {0}")]
    Http(#[from] ureq::Error),
    /// Not a 200 response with a JSON body.
    #[error("login_server sent a malformed reply: {0}")]
    Malformed(String),
    /// login_server refused (1: no msg_server, 2: all full).
    #[error("login_server refused: code {code} ({msg})")]
    Refused {
        /// `code` field.
        code: i64,
        /// `msg` field.
        msg: String,
    },
    /// `priorIP` is not an address.
    #[error("login_server assigned an unusable address {0:?}")]
    BadAddress(String),
    /// The login_server address itself is unusable.
    #[error(transparent)]
    Addr(#[from] AddrError),
}

/// Largest reply read; login_server's is a few hundred bytes.
const MAX_REPLY: u64 = 64 * 1024;

/// Asks one login_server which msg_server to use, as often as needed.
///
/// The HTTP client is set up once; every query opens its own TCP
/// connection and closes it, as TeamTalk clients do (no keep-alive pool,
/// so a load test puts the same work on login_server as real clients).
#[derive(Debug, Clone)]
pub struct Assigner {
    agent: ureq::Agent,
    url: String,
}

impl Assigner {
    /// A client for `login`'s `GET /msg_server`, each query bounded by
    /// `timeout`.
    #[must_use]
    pub fn new(login: &ServerAddr, timeout: Duration) -> Self {
        let t = Some(timeout);
        // Every phase but the name lookup is bounded: with a deadline on
        // it, ureq resolves on a new thread per request, which costs more
        // than the whole exchange with an IP literal.
        let agent = ureq::Agent::config_builder()
            .timeout_connect(t)
            .timeout_send_request(t)
            .timeout_recv_response(t)
            .timeout_recv_body(t)
            .http_status_as_error(false)
            .max_redirects(0)
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            // The reply is a few hundred bytes; ureq's default buffers
            // (128 KiB each way) would be most of a query's cost.
            .max_response_header_size(8 * 1024)
            .input_buffer_size(16 * 1024)
            .output_buffer_size(4 * 1024)
            .build()
            .into();
        Self {
            agent,
            url: login.http_url("/msg_server"),
        }
    }

    /// One `GET /msg_server`.
    ///
    /// # Errors
    /// [`AssignError`] for transport problems, malformed replies and
    /// refusals.
    pub fn query(&self) -> Result<Assignment, AssignError> {
        let mut response = self.agent.get(&self.url).call()?;
        let status = response.status().as_u16();
        let mut body = String::new();
        response
            .body_mut()
            .as_reader()
            .take(MAX_REPLY)
            .read_to_string(&mut body)
            .map_err(|e| AssignError::Malformed(format!("body: {e}")))?;
        parse_reply(status, &body)
    }
}

/// Asks login_server's HTTP port which msg_server to use (one query; see
/// [`Assigner`] for many).
///
/// # Errors
/// [`AssignError`] for transport problems, malformed replies and refusals.
pub fn query_msg_server(
    login: impl Into<ServerAddr>,
    timeout: Duration,
) -> Result<Assignment, AssignError> {
    Assigner::new(&login.into(), timeout).query()
}

fn parse_reply(status: u16, body: &str) -> Result<Assignment, AssignError> {
    if status != 200 {
        return Err(AssignError::Malformed(format!("http status {status}")));
    }
    let json: serde_json::Value =
        serde_json::from_str(body.trim()).map_err(|e| AssignError::Malformed(e.to_string()))?;
    let field = |k: &str| {
        json.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned()
    };
    let code = json
        .get("code")
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| AssignError::Malformed("no numeric code".into()))?;
    if code != 0 {
        return Err(AssignError::Refused {
            code,
            msg: field("msg"),
        });
    }
    let port = field("port")
        .parse()
        .map_err(|_| AssignError::Malformed(format!("port {:?} is not a port", field("port"))))?;
    Ok(Assignment {
        prior_ip: field("priorIP"),
        backup_ip: field("backupIP"),
        port,
        msfs_prior: field("msfsPrior"),
        msfs_backup: field("msfsBackup"),
        discovery: field("discovery"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_teamtalk_reply_with_string_port() {
        let body = "{\n   \"backupIP\" : \"10.0.0.2\",\n   \"code\" : 0,\n   \"discovery\" : \"http://d\",\n   \"msfsBackup\" : \"http://b\",\n   \"msfsPrior\" : \"http://p\",\n   \"msg\" : \"\",\n   \"port\" : \"8000\",\n   \"priorIP\" : \"10.0.0.1\"\n}\n";
        let a = parse_reply(200, body).unwrap();
        assert_eq!(a.addr().unwrap(), "10.0.0.1:8000".parse().unwrap());
        assert_eq!(a.backup_ip, "10.0.0.2");
        assert_eq!(a.msfs_prior, "http://p");
    }

    #[test]
    fn host_names_are_resolved() {
        let body = r#"{"code":0,"priorIP":"localhost","backupIP":"localhost","port":"8000"}"#;
        let a = parse_reply(200, body).unwrap();
        assert_eq!(a.server().unwrap().to_string(), "localhost:8000");
        let addr = a.addr().unwrap();
        assert!(addr.ip().is_loopback() && addr.port() == 8000, "{addr}");
        let bad = r#"{"code":0,"priorIP":"no such host!","port":"8000"}"#;
        assert!(matches!(
            parse_reply(200, bad).unwrap().addr(),
            Err(AssignError::BadAddress(_))
        ));
    }

    #[test]
    fn refusal_and_garbage_are_errors() {
        assert!(matches!(
            parse_reply(200, r#"{"code":1,"msg":"no msg_server"}"#),
            Err(AssignError::Refused { code: 1, .. })
        ));
        assert!(matches!(
            parse_reply(200, "garbage"),
            Err(AssignError::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(404, ""),
            Err(AssignError::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(200, r#"{"code":0,"port":"eighty"}"#),
            Err(AssignError::Malformed(_))
        ));
    }

    #[test]
    fn an_unreachable_login_server_is_an_http_error() {
        // Port 1 on loopback: nothing listens there.
        let err =
            query_msg_server(ServerAddr::new("127.0.0.1", 1), Duration::from_secs(2)).unwrap_err();
        assert!(matches!(err, AssignError::Http(_)), "{err}");
    }
}
