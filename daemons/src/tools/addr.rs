//! Server addresses as people and TeamTalk's configs write them.
//!
//! A command-line flag or a login_server answer may name a server as
//! `host:port`, `[v6]:port`, or an HTTP URL (`http://host:port/msg_server`),
//! with a host name (`localhost` is what TeamTalk's own confs hand out) or
//! an IP literal. [`ServerAddr`] keeps the name; [`ServerAddr::resolve`]
//! looks it up when a socket address is needed, so a name that moves is
//! looked up again on the next connect.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// Why an address was not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// Not `host:port` or `http://host:port/...`.
    #[error("{input:?} is not host:port or http://host:port/...: {why}")]
    Syntax {
        /// What was given (cut to a sane length).
        input: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The host name did not resolve.
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        /// The address.
        addr: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// The host name resolved to nothing.
    #[error("{0} resolves to no address")]
    NoAddress(String),
}

/// A host (name or IP literal) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    host: String,
    port: u16,
}

/// Longest input echoed back in an error.
const MAX_ECHO: usize = 200;
/// Longest host name DNS allows.
const MAX_HOST: usize = 253;

fn syntax(input: &str, why: &'static str) -> AddrError {
    AddrError::Syntax {
        input: input.chars().take(MAX_ECHO).collect(),
        why,
    }
}

impl ServerAddr {
    /// An address from its parts.
    #[must_use]
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// Parses `host:port`, `[v6]:port`, `v4:port`, or `http://host[:port][/path]`
    /// (port 80 when a URL has none).
    ///
    /// # Errors
    /// [`AddrError::Syntax`] naming what is wrong.
    pub fn parse(input: &str) -> Result<Self, AddrError> {
        let s = input.trim();
        let (rest, url) = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (rest, true),
            Some(_) => return Err(syntax(input, "only http:// URLs are supported")),
            None => (s, false),
        };
        let authority = if url {
            rest.split(['/', '?', '#']).next().unwrap_or(rest)
        } else {
            rest
        };
        if authority.contains('@') {
            return Err(syntax(input, "user information is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| syntax(input, "unclosed '['"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(syntax(input, "junk after ']'")),
            }
        } else if authority.matches(':').count() > 1 {
            // A bare IPv6 literal cannot carry a port without brackets.
            return Err(syntax(input, "write IPv6 addresses as [addr]:port"));
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(syntax(input, "no host"));
        }
        if host.len() > MAX_HOST
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(syntax(input, "not a host name or IP address"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| syntax(input, "bad port"))?,
            None if url => 80,
            None => return Err(syntax(input, "missing :port")),
        };
        Ok(Self::new(host, port))
    }

    /// The host as given.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The first address the host resolves to, IPv4 first (TeamTalk
    /// deployments listen on IPv4; `localhost` often resolves to `::1`
    /// first). IP literals need no lookup.
    ///
    /// # Errors
    /// [`AddrError::Resolve`] or [`AddrError::NoAddress`].
    pub fn resolve(&self) -> Result<SocketAddr, AddrError> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        let all: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|source| AddrError::Resolve {
                addr: self.to_string(),
                source,
            })?
            .collect();
        all.iter()
            .find(|a| a.is_ipv4())
            .or_else(|| all.first())
            .copied()
            .ok_or_else(|| AddrError::NoAddress(self.to_string()))
    }

    /// `http://host:port{path}`.
    #[must_use]
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{self}{path}")
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for ServerAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, AddrError> {
        Self::parse(s)
    }
}

impl From<SocketAddr> for ServerAddr {
    fn from(a: SocketAddr) -> Self {
        Self::new(a.ip().to_string(), a.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_host_port_ip_literals_and_urls() {
        let ok = [
            ("127.0.0.1:8080", "127.0.0.1", 8080),
            ("localhost:8000", "localhost", 8000),
            ("msg-1.example_corp:1", "msg-1.example_corp", 1),
            ("[::1]:8000", "::1", 8000),
            ("http://localhost:8080", "localhost", 8080),
            ("http://10.0.0.1:8080/msg_server", "10.0.0.1", 8080),
            ("HTTP://h:1?x#y", "h", 1),
            ("http://h/", "h", 80),
            ("http://[::1]/x", "::1", 80),
            ("  h:2  ", "h", 2),
        ];
        for (input, host, port) in ok {
            let a = ServerAddr::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!((a.host(), a.port()), (host, port), "{input}");
        }
        assert_eq!(ServerAddr::parse("[::1]:8").unwrap().to_string(), "[::1]:8");
        assert_eq!(
            ServerAddr::parse("h:8").unwrap().http_url("/msg_server"),
            "http://h:8/msg_server"
        );
    }

    #[test]
    fn refuses_what_is_not_an_address() {
        for bad in [
            "",
            "host",
            ":80",
            "h:",
            "h:99999",
            "h:x",
            "::1:80",
            "[::1",
            "[::1]x",
            "https://h:1",
            "ftp://h:1",
            "http://user@h:1",
            "h h:1",
            "h/x:1",
        ] {
            assert!(ServerAddr::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}:1", "a".repeat(10_000));
        let err = ServerAddr::parse(&long).unwrap_err().to_string();
        assert!(err.len() < 400, "error echoes a bounded input");
    }

    proptest::proptest! {
        #[test]
        fn any_input_parses_or_is_refused_and_parsed_ones_round_trip(input in ".{0,80}") {
            if let Ok(a) = ServerAddr::parse(&input) {
                let again = ServerAddr::parse(&a.to_string()).expect("display parses");
                proptest::prop_assert_eq!(again, a);
            }
        }

        #[test]
        fn host_port_pairs_round_trip(host in "[a-z0-9][a-z0-9.-]{0,30}", port: u16) {
            let a = ServerAddr::parse(&format!("{host}:{port}")).expect("host:port");
            proptest::prop_assert_eq!((a.host(), a.port()), (host.as_str(), port));
            let u = ServerAddr::parse(&format!("http://{host}:{port}/msg_server")).expect("url");
            proptest::prop_assert_eq!(u, a);
        }
    }

    #[test]
    fn resolves_literals_without_lookup_and_names_ipv4_first() {
        let a = ServerAddr::parse("127.0.0.1:9").unwrap().resolve().unwrap();
        assert_eq!(a, "127.0.0.1:9".parse().unwrap());
        let l = ServerAddr::parse("localhost:9").unwrap().resolve().unwrap();
        assert!(l.ip().is_loopback() && l.port() == 9, "{l}");
        assert!(l.is_ipv4(), "IPv4 preferred: {l}");
        let sock: SocketAddr = "[::1]:5".parse().unwrap();
        assert_eq!(ServerAddr::from(sock).resolve().unwrap(), sock);
    }
}
