//! The admin HTTP port: `GET /metrics` and `GET /healthz`.
//!
//! One thread accepts and serves connections one after another: scrapes
//! and probes are rare and cheap, so concurrency would only add ways to
//! exhaust the process. A connection has [`REQUEST_TIMEOUT`] to send its
//! request (at most [`MAX_REQUEST`] bytes) and as long to take the answer,
//! so a stuck client delays the next scrape by at most that much. Requests
//! are parsed by the same small parser as login_server's HTTP port.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::MetricsSource;
use super::text::{CONTENT_TYPE, Scrape};
use crate::clock;
use crate::login::http::{Scan, scan_with_limit};

/// Largest request read; Prometheus' scrape requests are a few hundred
/// bytes.
pub const MAX_REQUEST: usize = 8192;
/// Time a client has to send its request, and again to take the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A running admin endpoint. Dropping it stops it.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `addr` (port 0 picks one) and serves `source` until stopped.
    ///
    /// # Errors
    /// The address cannot be bound or the thread cannot start.
    pub fn start(addr: SocketAddr, source: Arc<dyn MetricsSource>) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("admin_http".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || accept_loop(&listener, &stop, &*source)
            })?;
        info!(%addr, "admin endpoint: /metrics and /healthz");
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (the real port when 0 was asked).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and joins the thread (after the connection being
    /// served, if any).
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        match wake_accept(self.addr) {
            Ok(()) => {
                if thread.join().is_err() {
                    tracing::error!("the admin HTTP thread panicked");
                }
            }
            Err(e) => {
                warn!(addr = %self.addr, error = %e, "cannot wake the admin thread; leaving it")
            }
        }
    }
}

/// Wakes a thread blocked in `accept` on `addr` (a listener of ours) by
/// connecting to it, so that it sees its stop flag.
///
/// # Errors
/// When the connection cannot be made within a second.
pub(crate) fn wake_accept(addr: SocketAddr) -> std::io::Result<()> {
    let mut wake = addr;
    if wake.ip().is_unspecified() {
        wake.set_ip(match wake {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    TcpStream::connect_timeout(&wake, Duration::from_secs(1)).map(drop)
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool, source: &dyn MetricsSource) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, peer)) => {
                if let Err(e) = serve(stream, source) {
                    debug!(%peer, error = %e, "admin connection ended with an error");
                }
            }
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                // Out of descriptors: do not spin.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Reads one request, answers it, closes.
fn serve(mut stream: TcpStream, source: &dyn MetricsSource) -> io::Result<()> {
    let deadline = clock::now() + REQUEST_TIMEOUT;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let response = loop {
        let left = deadline.saturating_duration_since(clock::now());
        if left.is_zero() {
            return Ok(());
        }
        stream.set_read_timeout(Some(left))?;
        let room = (MAX_REQUEST + 1 - buf.len()).min(chunk.len());
        let n = match stream.read(&mut chunk[..room]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        match scan_with_limit(&buf, MAX_REQUEST) {
            Scan::Partial => {}
            Scan::TooLarge => {
                break reply("431 Request Header Fields Too Large", "", "too large\n");
            }
            Scan::Bad => break reply("400 Bad Request", "", "bad request\n"),
            Scan::Complete { method, target } => break respond(method, target, source),
        }
    };
    stream.write_all(&response)?;
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

/// The whole answer to one request.
fn respond(method: &str, target: &str, source: &dyn MetricsSource) -> Vec<u8> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    if !matches!(path, "/metrics" | "/healthz") {
        return reply("404 Not Found", "", "not found; try /metrics or /healthz\n");
    }
    if method != "GET" && method != "HEAD" {
        return reply(
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "GET or HEAD only\n",
        );
    }
    let mut out = if path == "/metrics" {
        let mut scrape = Scrape::new();
        source.collect(&mut scrape);
        reply_typed("200 OK", CONTENT_TYPE, "", &scrape.render())
    } else {
        let mut problems = Vec::new();
        source.health(&mut problems);
        if problems.is_empty() {
            reply("200 OK", "", "ok\n")
        } else {
            let mut body = String::from("unhealthy\n");
            for p in problems {
                body.push_str(&p);
                body.push('\n');
            }
            reply("503 Service Unavailable", "", &body)
        }
    };
    if method == "HEAD" {
        // Headers only; Content-Length still describes the GET body.
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            out.truncate(end + 4);
        }
    }
    out
}

fn reply(status: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    reply_typed(status, "text/plain; charset=utf-8", extra_headers, body)
}

fn reply_typed(status: &str, content_type: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    struct Fake {
        scrapes: AtomicU64,
        healthy: AtomicBool,
    }

    impl MetricsSource for Fake {
        fn collect(&self, out: &mut Scrape) {
            let n = self.scrapes.fetch_add(1, Ordering::SeqCst) + 1;
            out.counter("fake_scrapes_total", "Scrapes.", &[], n);
        }

        fn health(&self, problems: &mut Vec<String>) {
            if !self.healthy.load(Ordering::SeqCst) {
                problems.push("fake link down".into());
            }
        }
    }

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_and_health_over_tcp() {
        let fake = Arc::new(Fake {
            scrapes: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
        });
        let mut server =
            AdminServer::start("127.0.0.1:0".parse().unwrap(), Arc::clone(&fake) as _).unwrap();
        let addr = server.addr();
        assert_ne!(addr.port(), 0);

        let m = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(m.starts_with("HTTP/1.1 200 OK\r\n"), "{m}");
        assert!(m.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(m.ends_with("\r\n\r\n# HELP fake_scrapes_total Scrapes.\n# TYPE fake_scrapes_total counter\nfake_scrapes_total 1\n"), "{m}");

        let h = get(addr, "GET /healthz HTTP/1.0\r\n\r\n");
        assert!(
            h.starts_with("HTTP/1.1 200 OK\r\n") && h.ends_with("\r\n\r\nok\n"),
            "{h}"
        );
        fake.healthy.store(false, Ordering::SeqCst);
        let h = get(addr, "GET /healthz?verbose HTTP/1.1\r\n\r\n");
        assert!(h.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{h}");
        assert!(h.ends_with("\r\n\r\nunhealthy\nfake link down\n"), "{h}");

        let head = get(addr, "HEAD /healthz HTTP/1.1\r\n\r\n");
        assert!(head.ends_with("Connection: close\r\n\r\n"), "{head}");
        assert!(get(addr, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get(addr, "nonsense\r\n\r\n").starts_with("HTTP/1.1 400"));
        // Exactly the limit without an end of head: all of it is read (so
        // closing does not reset the connection) and refused.
        assert!(get(addr, &"a".repeat(MAX_REQUEST)).starts_with("HTTP/1.1 431"));
        // A client that sends nothing and goes away does not stop the server.
        drop(TcpStream::connect(addr).unwrap());
        assert!(get(addr, "GET /metrics HTTP/1.1\r\n\r\n").contains("fake_scrapes_total 2\n"));

        server.stop();
        assert!(TcpStream::connect(addr).is_err());
    }
}
