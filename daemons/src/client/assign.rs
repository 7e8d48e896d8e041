//! `GET /msg_server` on login_server: which msg_server to connect to.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// login_server's answer, as TeamTalk clients read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Address to try first (`priorIP`).
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
    /// `priorIP:port`.
    ///
    /// # Errors
    /// [`AssignError::BadAddress`] when `priorIP` is not an IP address.
    pub fn addr(&self) -> Result<SocketAddr, AssignError> {
        let ip: IpAddr = self
            .prior_ip
            .parse()
            .map_err(|_| AssignError::BadAddress(self.prior_ip.clone()))?;
        Ok(SocketAddr::new(ip, self.port))
    }
}

/// Why no assignment could be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssignError {
    /// Socket error.
    #[error("login_server http: {0}")]
    Io(#[from] io::Error),
    /// Not an HTTP response with a JSON body.
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
}

const MAX_REPLY: usize = 64 * 1024;

/// Asks login_server's HTTP port which msg_server to use.
///
/// # Errors
/// [`AssignError`] for transport problems, malformed replies and refusals.
pub fn query_msg_server(http: SocketAddr, timeout: Duration) -> Result<Assignment, AssignError> {
    let mut stream = TcpStream::connect_timeout(&http, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /msg_server HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.take(MAX_REPLY as u64).read_to_end(&mut raw)?;
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Result<Assignment, AssignError> {
    let text = std::str::from_utf8(raw).map_err(|_| AssignError::Malformed("not utf-8".into()))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| AssignError::Malformed("no header end".into()))?;
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1).is_none_or(|s| s != "200") {
        return Err(AssignError::Malformed(format!(
            "status line {:?}",
            head.lines().next().unwrap_or("")
        )));
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
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type:text/html;charset=utf-8\r\n\r\n{\n   \"backupIP\" : \"10.0.0.2\",\n   \"code\" : 0,\n   \"discovery\" : \"http://d\",\n   \"msfsBackup\" : \"http://b\",\n   \"msfsPrior\" : \"http://p\",\n   \"msg\" : \"\",\n   \"port\" : \"8000\",\n   \"priorIP\" : \"10.0.0.1\"\n}\n";
        let a = parse_reply(raw).unwrap();
        assert_eq!(a.addr().unwrap(), "10.0.0.1:8000".parse().unwrap());
        assert_eq!(a.backup_ip, "10.0.0.2");
        assert_eq!(a.msfs_prior, "http://p");
    }

    #[test]
    fn refusal_and_garbage_are_errors() {
        let raw = b"HTTP/1.1 200 OK\r\n\r\n{\"code\":1,\"msg\":\"no msg_server\"}";
        assert!(matches!(
            parse_reply(raw),
            Err(AssignError::Refused { code: 1, .. })
        ));
        assert!(matches!(
            parse_reply(b"garbage"),
            Err(AssignError::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(b"HTTP/1.1 404 Not Found\r\n\r\n"),
            Err(AssignError::Malformed(_))
        ));
    }
}
