//! The `/msg_server` HTTP endpoint: a minimal HTTP/1.x server on std
//! sockets.
//!
//! Why not an HTTP crate: the endpoint answers one fixed path with a small
//! body, one request per connection, and must enforce TeamTalk's 1024-byte
//! request limit and a whole-request deadline, which general servers do not
//! offer directly (tiny_http, for one, reads headers of any size). The
//! parser below accepts exactly what clients send (a request line, headers,
//! an optional `Content-Length` body) and nothing more.
//!
//! One accept thread per listen address; one short-lived thread per
//! connection, at most `max_connections` at once (more are closed at once).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, warn};

use super::MAX_HTTP_REQUEST;
use crate::clock;
use crate::metrics::CounterMap;

/// Stack of a connection thread: it parses at most 1 KiB and writes a
/// short answer.
const CONN_STACK: usize = 64 << 10;

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scan<'a> {
    /// More bytes are needed.
    Partial,
    /// Over the size limit ([`MAX_HTTP_REQUEST`] for `/msg_server`).
    TooLarge,
    /// Not an HTTP/1.x request.
    Bad,
    /// A whole request.
    Complete {
        /// The method, e.g. `GET`.
        method: &'a str,
        /// The request target as sent, e.g. `/msg_server?x=1`.
        target: &'a str,
    },
}

/// Looks at the bytes received so far.
pub(crate) fn scan(buf: &[u8]) -> Scan<'_> {
    scan_with_limit(buf, MAX_HTTP_REQUEST)
}

/// [`scan`] with another size limit (the admin port allows more, for
/// scrapers' longer headers).
pub(crate) fn scan_with_limit(buf: &[u8], limit: usize) -> Scan<'_> {
    let Some((head_len, sep_len)) = find_head_end(buf) else {
        return if buf.len() >= limit {
            Scan::TooLarge
        } else {
            Scan::Partial
        };
    };
    if head_len + sep_len > limit {
        return Scan::TooLarge;
    }
    let Ok(head) = std::str::from_utf8(&buf[..head_len]) else {
        return Scan::Bad;
    };
    let mut lines = head.lines();
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Scan::Bad;
    };
    if method.is_empty() || target.is_empty() || !version.starts_with("HTTP/1.") {
        return Scan::Bad;
    }
    let mut body_len = 0usize;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Scan::Bad;
        };
        if name.eq_ignore_ascii_case("content-length") {
            match value.trim().parse() {
                Ok(n) => body_len = n,
                Err(_) => return Scan::Bad,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked bodies are not worth supporting for a body we ignore.
            return Scan::Bad;
        }
    }
    let total = head_len + sep_len;
    match total.checked_add(body_len) {
        Some(t) if t <= limit => {
            if buf.len() < t {
                Scan::Partial
            } else {
                Scan::Complete { method, target }
            }
        }
        _ => Scan::TooLarge,
    }
}

/// Position and length of the blank line ending the head (`\r\n\r\n`, or
/// `\n\n` from lenient clients).
fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4));
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// The path of a request target: query dropped, absolute form
/// (`http://host/path`) reduced to its path.
fn path_of(target: &str) -> &str {
    let target = target.split(['?', '#']).next().unwrap_or("");
    match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    }
}

/// The whole response to a request. `json` is called only for
/// `/msg_server`.
pub(crate) fn respond(method: &str, target: &str, json: impl FnOnce() -> String) -> Vec<u8> {
    let (status, content_type, body) = if path_of(target) == "/msg_server" {
        ("200 OK", "text/html;charset=utf-8", json())
    } else {
        (
            "404 Not Found",
            "text/plain;charset=utf-8",
            "not found\n".to_owned(),
        )
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Settings of the HTTP side.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpOptions {
    /// Time a client has to send its whole request.
    pub(crate) timeout: Duration,
    /// Connections served at once.
    pub(crate) max_connections: usize,
}

/// Running HTTP listeners.
#[derive(Debug)]
pub(crate) struct HttpServer {
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds every address and starts accepting. `json` produces the
    /// `/msg_server` body; every request's outcome is counted in
    /// `outcomes` (the status code, or `dropped` when it got no answer).
    pub(crate) fn start<F>(
        addrs: &[SocketAddr],
        opts: HttpOptions,
        outcomes: Arc<CounterMap>,
        json: F,
    ) -> io::Result<Self>
    where
        F: Fn() -> String + Send + Sync + 'static,
    {
        let listeners = addrs
            .iter()
            .map(TcpListener::bind)
            .collect::<io::Result<Vec<_>>>()?;
        let mut server = Self {
            addrs: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        let json = Arc::new(json);
        let active = Arc::new(AtomicUsize::new(0));
        for listener in listeners {
            let local = listener.local_addr()?;
            server.addrs.push(local);
            let stop = Arc::clone(&server.stop);
            let json = Arc::clone(&json);
            let active = Arc::clone(&active);
            let outcomes = Arc::clone(&outcomes);
            let spawned = std::thread::Builder::new()
                .name("login_http".into())
                .spawn(move || accept_loop(&listener, &stop, &active, opts, &outcomes, &json));
            match spawned {
                Ok(t) => server.threads.push(t),
                Err(e) => {
                    server.stop();
                    return Err(e);
                }
            }
        }
        Ok(server)
    }

    /// The bound addresses.
    pub(crate) fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops accepting and joins the accept threads; connections being
    /// served finish on their own (within the timeout).
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let threads = std::mem::take(&mut self.threads);
        for (t, addr) in threads.into_iter().zip(&self.addrs) {
            match crate::metrics::admin::wake_accept(*addr) {
                Ok(()) => {
                    if t.join().is_err() {
                        tracing::error!("an HTTP accept thread panicked");
                    }
                }
                Err(e) => {
                    warn!(%addr, error = %e, "cannot wake the HTTP accept thread; leaving it")
                }
            }
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
        }
    }
}

/// Decrements the active-connection count when a connection thread ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop<F>(
    listener: &TcpListener,
    stop: &AtomicBool,
    active: &Arc<AtomicUsize>,
    opts: HttpOptions,
    outcomes: &Arc<CounterMap>,
    json: &Arc<F>,
) where
    F: Fn() -> String + Send + Sync + 'static,
{
    let span = tracing::info_span!("login_server_http");
    let _entered = span.enter();
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: the accept queue keeps
                // the clients; try again.
                warn!(error = %e, "HTTP accept failed");
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= opts.max_connections {
            active.fetch_sub(1, Ordering::SeqCst);
            outcomes.inc("dropped");
            warn!(%peer, "too many HTTP connections; closing");
            continue;
        }
        let slot = Slot(Arc::clone(active));
        let json = Arc::clone(json);
        let outcomes = Arc::clone(outcomes);
        let spawned = std::thread::Builder::new()
            .name("login_http_conn".into())
            .stack_size(CONN_STACK)
            .spawn(move || {
                let _slot = slot;
                let outcome = serve(stream, opts.timeout, || json());
                outcomes.inc(match outcome {
                    Ok(Some(status)) => status,
                    Ok(None) | Err(_) => "dropped",
                });
                if let Err(e) = outcome {
                    debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
            });
        if let Err(e) = spawned {
            warn!(%peer, error = %e, "cannot start an HTTP connection thread");
        }
    }
}

/// Reads one request within `timeout`, answers it and closes. Returns the
/// status code sent, `None` when the request got no answer.
fn serve(
    mut stream: TcpStream,
    timeout: Duration,
    json: impl FnOnce() -> String,
) -> io::Result<Option<&'static str>> {
    let peer = stream.peer_addr()?;
    let deadline = clock::now() + timeout;
    stream.set_write_timeout(Some(timeout))?;
    let mut buf = Vec::with_capacity(MAX_HTTP_REQUEST);
    let mut chunk = [0u8; MAX_HTTP_REQUEST + 1];
    loop {
        let left = deadline.saturating_duration_since(clock::now());
        if left.is_zero() {
            debug!(%peer, "HTTP request not received in time; closing");
            return Ok(None);
        }
        stream.set_read_timeout(Some(left))?;
        // Never hold more than one byte over the limit.
        let room = MAX_HTTP_REQUEST + 1 - buf.len();
        let n = match stream.read(&mut chunk[..room]) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                debug!(%peer, "HTTP request not received in time; closing");
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        match scan(&buf) {
            Scan::Partial => {}
            Scan::TooLarge => {
                debug!(%peer, "HTTP request over {MAX_HTTP_REQUEST} bytes; closing");
                return Ok(None);
            }
            Scan::Bad => {
                debug!(%peer, "malformed HTTP request");
                stream.write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )?;
                return Ok(Some("400"));
            }
            Scan::Complete { method, target } => {
                debug!(%peer, method, target, "HTTP request");
                let status = if path_of(target) == "/msg_server" {
                    "200"
                } else {
                    "404"
                };
                stream.write_all(&respond(method, target, json))?;
                stream.flush()?;
                let _ = stream.shutdown(Shutdown::Write);
                return Ok(Some(status));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_requests() {
        assert_eq!(scan(b""), Scan::Partial);
        assert_eq!(
            scan(b"GET /msg_server HTTP/1.1\r\nHost: x\r\n"),
            Scan::Partial
        );
        assert_eq!(
            scan(b"GET /msg_server HTTP/1.1\r\nHost: x\r\n\r\n"),
            Scan::Complete {
                method: "GET",
                target: "/msg_server"
            }
        );
        assert_eq!(
            scan(b"GET /msg_server?a=1 HTTP/1.0\n\n"),
            Scan::Complete {
                method: "GET",
                target: "/msg_server?a=1"
            }
        );
        // A body is waited for, within the limit.
        let post = b"POST /msg_server HTTP/1.1\r\nContent-Length: 4\r\n\r\nab";
        assert_eq!(scan(post), Scan::Partial);
        let post = b"POST /msg_server HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd";
        assert!(matches!(scan(post), Scan::Complete { method: "POST", .. }));
        let post = b"POST / HTTP/1.1\r\nContent-Length: 2000\r\n\r\n";
        assert_eq!(scan(post), Scan::TooLarge);
        let post = b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n";
        assert_eq!(scan(post), Scan::TooLarge);

        assert_eq!(scan(b"GET /msg_server\r\n\r\n"), Scan::Bad);
        assert_eq!(scan(b"GET /msg_server SMTP/1.0\r\n\r\n"), Scan::Bad);
        assert_eq!(scan(b"GET  /msg_server HTTP/1.1\r\n\r\n"), Scan::Bad);
        assert_eq!(scan(b"GET / HTTP/1.1\r\nNoColon\r\n\r\n"), Scan::Bad);
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Scan::Bad
        );
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Scan::Bad
        );
        assert_eq!(scan(b"GET / HTTP/1.1\xff\r\n\r\n"), Scan::Bad);
    }

    #[test]
    fn size_limit_is_1024_bytes() {
        let mut req = b"GET /msg_server HTTP/1.1\r\nX-Pad: ".to_vec();
        let head_end = b"\r\n\r\n";
        let pad = MAX_HTTP_REQUEST - req.len() - head_end.len();
        req.extend(std::iter::repeat_n(b'a', pad));
        req.extend_from_slice(head_end);
        assert_eq!(req.len(), MAX_HTTP_REQUEST);
        assert!(matches!(scan(&req), Scan::Complete { .. }));
        let mut longer = req[..req.len() - 4].to_vec();
        longer.extend_from_slice(b"a\r\n\r\n");
        assert_eq!(scan(&longer), Scan::TooLarge);
        // No end of head within the limit.
        assert_eq!(scan(&[b'a'; MAX_HTTP_REQUEST]), Scan::TooLarge);
        assert_eq!(scan(&[b'a'; MAX_HTTP_REQUEST - 1]), Scan::Partial);
    }

    #[test]
    fn responses() {
        let ok =
            String::from_utf8(respond("GET", "/msg_server", || "{\"code\":1}".into())).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("\r\nContent-Type: text/html;charset=utf-8\r\n"));
        assert!(ok.contains("\r\nContent-Length: 10\r\n"));
        assert!(ok.contains("\r\nConnection: close\r\n"));
        assert!(ok.ends_with("\r\n\r\n{\"code\":1}"));

        let head = String::from_utf8(respond("HEAD", "/msg_server", || "{}".into())).unwrap();
        assert!(
            head.ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n"),
            "{head}"
        );

        for target in ["/msg_server?x=1", "http://login:8080/msg_server"] {
            let r = String::from_utf8(respond("GET", target, || "{}".into())).unwrap();
            assert!(r.starts_with("HTTP/1.1 200"), "{target}: {r}");
        }
        for target in ["/", "/msg_server/", "/msg_serverx", "/other", "http://h"] {
            let r = respond("GET", target, || unreachable!("json for {target}"));
            assert!(r.starts_with(b"HTTP/1.1 404 Not Found\r\n"), "{target}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        use proptest::prelude::*;
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..1100))| {
            if let Scan::Complete { method, target } = scan(&bytes) {
                let _ = respond(method, target, String::new);
            }
        });
    }
}
