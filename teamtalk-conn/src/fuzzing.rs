//! Step sequences that drive a machine through arbitrary inputs and
//! application calls while checking the contract's invariants. Shared by
//! the proptests and by the cargo-fuzz targets in `teamtalk-conn/fuzz`
//! (feature `fuzzing`).
//!
//! Invariants checked after every step (a violation panics, which is what
//! both proptest and libFuzzer report):
//! - a drain ends (bounded number of outputs);
//! - every `Timeout(t)` has `t >` the time of the last input (never in the
//!   past, and a driver never spins);
//! - every `Transmit` holds whole PDUs;
//! - after `Finished`, nothing but `Finished` ever comes out;
//! - the receive buffer stays below the frame limit, the transmit buffer
//!   within `max_tx_bytes`.
//!
//! For [`HttpConn`](crate::HttpConn) (`run_http`), transmits are checked to
//! form a stream of well-formed HTTP/1.1 responses framed by their
//! `Content-Length`, and after the steps the connection must end up
//! closed or holding a request for the application once every deadline
//! has passed: no byte sequence leaves it stuck.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use teamtalk_proto::{Command, CommandKey, Pdu, PduCodec};

use crate::http::{HttpCloseReason, HttpConfig, HttpConn, HttpEvent};
use crate::{Backoff, Input, Link, LinkConfig, Machine, Output, Session, SessionConfig};

/// Frame limit used by the step runners: small, so limits are reached.
pub const MAX_FRAME: u32 = 1024;
/// Send cap used by the step runners: small, so overflow is reached.
pub const MAX_TX: usize = 4096;

/// One thing that happens to a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub enum Step {
    /// Time passes (milliseconds), then the driver reports a timeout.
    Advance(u16),
    /// Raw bytes arrive (anything: partial or broken frames).
    Recv(Vec<u8>),
    /// A well-formed PDU arrives: `kind` picks heartbeat, login request or
    /// another command.
    RecvPdu {
        /// 0 heartbeat, 1 login request, else another command.
        kind: u8,
        /// Sequence number.
        seq: u16,
        /// Body length.
        body_len: u8,
    },
    /// The connect completed.
    Connected,
    /// The connect failed.
    ConnectFailed,
    /// The peer closed the socket.
    Closed,
    /// The application sends a PDU with this body length.
    Send(u16),
    /// The application accepts the login.
    AcceptLogin {
        /// User id.
        user_id: u32,
        /// Client type.
        client_type: u8,
    },
    /// The application rejects the login.
    RejectLogin,
    /// The application closes the connection.
    Close,
    /// The driver reports this many unsent bytes.
    Backlog(u16),
    /// The application sets a greeting of this many PDUs (links only).
    SetGreeting(u8),
}

/// The base instant of virtual time for tests and fuzzing: the one place
/// in this crate allowed to read the clock (it is only ever an origin).
#[allow(clippy::disallowed_methods)]
#[must_use]
pub fn t0() -> Instant {
    Instant::now()
}

fn pdu(kind: u8, seq: u16, body_len: usize) -> Pdu {
    let key = match kind {
        0 => Command::OtherHeartbeat.key(),
        1 => Command::LoginReqUserlogin.key(),
        k => CommandKey::new(3, 0x0300 | u16::from(k)),
    };
    Pdu::new(key, seq, Bytes::from(vec![0x5a; body_len]))
}

/// What a machine's transmits must consist of.
enum Frames {
    /// Whole TeamTalk PDUs, each transmit on its own.
    Pdus(PduCodec),
    /// A stream of HTTP/1.1 responses.
    Http(ResponseStream),
}

/// Drives a machine and checks the invariants after each mutation.
struct Checker {
    now: Instant,
    finished: bool,
    frames: Frames,
}

impl Checker {
    fn new() -> Self {
        Self {
            now: t0(),
            finished: false,
            frames: Frames::Pdus(PduCodec::new(MAX_FRAME)),
        }
    }

    /// Applies the steps every machine understands (inputs and the
    /// driver's backlog report). Returns false for machine-specific steps.
    fn feed<M: Machine>(&mut self, m: &mut M, step: &Step) -> bool {
        let now = self.now;
        match step {
            Step::Advance(ms) => m.handle_input(Input::Timeout(self.advance(*ms))),
            Step::Recv(data) => m.handle_input(Input::Received(now, data)),
            Step::RecvPdu {
                kind,
                seq,
                body_len,
            } => {
                let bytes = pdu(*kind, *seq, usize::from(*body_len)).to_bytes();
                m.handle_input(Input::Received(now, &bytes));
            }
            Step::Connected => m.handle_input(Input::Connected(now)),
            Step::ConnectFailed => m.handle_input(Input::ConnectFailed(now)),
            Step::Closed => m.handle_input(Input::Closed(now)),
            Step::Backlog(n) => m.set_backlog(now, usize::from(*n)),
            _ => return false,
        }
        true
    }

    /// Drains `m`, checking every output; returns the events.
    fn drain<M: Machine>(&mut self, m: &mut M) -> Vec<M::Event> {
        let mut events = Vec::new();
        for _ in 0..10_000 {
            let out = m.poll_output();
            if self.finished {
                assert!(matches!(out, Output::Finished), "output after Finished");
                return events;
            }
            match out {
                Output::Timeout(t) => {
                    assert!(t > self.now, "deadline not after the last input");
                    return events;
                }
                Output::Finished => {
                    self.finished = true;
                    assert!(matches!(m.poll_output(), Output::Finished));
                    return events;
                }
                Output::Transmit(bytes) => {
                    assert!(!bytes.is_empty(), "empty transmit");
                    match &mut self.frames {
                        Frames::Pdus(codec) => {
                            let mut buf = BytesMut::from(&bytes[..]);
                            while let Some(p) = codec.decode(&mut buf).expect("valid frames") {
                                assert!(p.wire_len() <= MAX_FRAME as usize);
                            }
                            assert!(buf.is_empty(), "transmit with a partial PDU");
                        }
                        Frames::Http(stream) => stream.push(&bytes),
                    }
                }
                Output::Event(e) => events.push(e),
                Output::Connect(_) | Output::Close => {}
            }
        }
        panic!("drain did not end");
    }

    fn advance(&mut self, ms: u16) -> Instant {
        self.now += Duration::from_millis(u64::from(ms));
        self.now
    }
}

fn check_buffers((rx, tx, queued): (usize, usize, usize)) {
    assert!(
        rx < MAX_FRAME as usize,
        "rx buffer {rx} over the frame limit"
    );
    assert!(tx <= MAX_TX, "tx buffer {tx} over the cap");
    assert!(queued < 10_000, "output queue grew to {queued}");
}

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10600))
}

/// Runs `steps` against a client [`Session`] (login gate on).
pub fn run_session(steps: &[Step]) {
    run_session_with(SessionConfig::client(), steps);
}

/// Runs `steps` against a server-peer [`Session`].
pub fn run_peer_session(steps: &[Step]) {
    run_session_with(SessionConfig::server_peer(), steps);
}

fn run_session_with(mut cfg: SessionConfig, steps: &[Step]) {
    cfg.max_frame_len = MAX_FRAME;
    cfg.max_tx_bytes = MAX_TX;
    let mut c = Checker::new();
    let mut s = Session::new(cfg, addr(), c.now);
    c.drain(&mut s);
    for step in steps {
        if !c.feed(&mut s, step) {
            match step {
                Step::Send(len) => {
                    let _ = s.send(&pdu(2, 0, usize::from(*len)));
                }
                Step::AcceptLogin {
                    user_id,
                    client_type,
                } => {
                    let _ = s.accept_login(*user_id, u32::from(*client_type));
                }
                Step::RejectLogin => {
                    let _ = s.reject_login(&pdu(1, 0, 4));
                }
                Step::Close => s.close(),
                // Links only; inputs and backlog reports went to `feed`.
                _ => {}
            }
        }
        check_buffers(s.buffered());
        c.drain(&mut s);
    }
}

/// Runs `steps` against a [`Link`] (TeamTalk backoff when the first step
/// count is even, jittered otherwise, so both schedules are exercised).
pub fn run_link(steps: &[Step]) {
    let mut cfg = LinkConfig::new(addr());
    cfg.max_frame_len = MAX_FRAME;
    cfg.max_tx_bytes = MAX_TX;
    if steps.len().is_multiple_of(2) {
        cfg.backoff = Backoff::teamtalk();
    }
    let mut c = Checker::new();
    let mut l = Link::new(cfg, c.now);
    c.drain(&mut l);
    for step in steps {
        if !c.feed(&mut l, step) {
            match step {
                Step::Send(len) => {
                    let _ = l.send(&pdu(2, 0, usize::from(*len)));
                }
                Step::Close => l.close(),
                Step::SetGreeting(n) => {
                    let greeting: Vec<Pdu> =
                        (0..*n % 8).map(|i| pdu(9, u16::from(i), 100)).collect();
                    let _ = l.set_greeting(&greeting);
                }
                // Sessions only; inputs and backlog reports went to `feed`.
                _ => {}
            }
        }
        check_buffers(l.buffered());
        c.drain(&mut l);
    }
}

/// Head limit used by the HTTP step runner: small, so it is reached.
pub const HTTP_MAX_HEAD: usize = 1024;
/// Body limit used by the HTTP step runner.
pub const HTTP_MAX_BODY: usize = 4096;
/// Response limit used by the HTTP step runner: above one 64 KiB piece,
/// so large responses are handed out in several.
pub const HTTP_MAX_TX: usize = 200_000;

/// One thing that happens to an HTTP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub enum HttpStep {
    /// Time passes (milliseconds), then the driver reports a timeout.
    Advance(u16),
    /// Raw bytes arrive.
    Recv(Vec<u8>),
    /// A well-formed request arrives in `pieces` reads: `kind` picks the
    /// method, framing and extras (see [`sample_request`]).
    RecvRequest {
        /// Method, framing and extras.
        kind: u8,
        /// Body length (bounded by the runner).
        body_len: u16,
        /// Reads the request is split into.
        pieces: u8,
    },
    /// The application answers the pending request (if any).
    Respond {
        /// Status code (made valid by the runner).
        status: u16,
        /// Body length.
        body_len: u32,
        /// Ask for `Connection: close`.
        close: bool,
    },
    /// The application takes an upgraded connection over.
    TakeUpgrade,
    /// The application closes the connection.
    Close,
    /// The peer closes the socket.
    Closed,
    /// The driver reports this many unsent bytes (modulo twice the cap).
    Backlog(u32),
}

/// A valid request for [`HttpStep::RecvRequest`]: `kind` bits 0-2 pick
/// the method and framing (GET, HEAD, POST with `Content-Length`, POST
/// chunked, POST with `Expect: 100-continue`, an upgrade request, an
/// HTTP/1.0 request, a GET with `Connection: close`).
#[must_use]
pub fn sample_request(kind: u8, body_len: usize) -> Vec<u8> {
    let body = vec![b'b'; body_len];
    let mut out = Vec::new();
    match kind % 8 {
        0 => out.extend_from_slice(b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"),
        1 => out.extend_from_slice(b"HEAD /a HTTP/1.1\r\n\r\n"),
        2 | 4 => {
            let expect = if kind % 8 == 4 {
                "Expect: 100-continue\r\n"
            } else {
                ""
            };
            out.extend_from_slice(
                format!("POST /up HTTP/1.1\r\n{expect}Content-Length: {body_len}\r\n\r\n")
                    .as_bytes(),
            );
            out.extend_from_slice(&body);
        }
        3 => {
            out.extend_from_slice(b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
            for piece in body.chunks(100) {
                out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                out.extend_from_slice(piece);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
        5 => out.extend_from_slice(
            b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        ),
        6 => out.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n"),
        _ => out.extend_from_slice(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"),
    }
    out
}

/// Checks that transmitted bytes are HTTP/1.1 responses, each framed by
/// its `Content-Length` (none for 1xx, 204, 304 or a missing length).
#[derive(Debug, Default)]
struct ResponseStream {
    buf: Vec<u8>,
    body_left: usize,
    switched: bool,
}

impl ResponseStream {
    fn push(&mut self, bytes: &[u8]) {
        assert!(!self.switched, "HTTP bytes after 101 Switching Protocols");
        self.buf.extend_from_slice(bytes);
        loop {
            if self.body_left > 0 {
                let take = self.body_left.min(self.buf.len());
                self.buf.drain(..take);
                self.body_left -= take;
                if self.body_left > 0 {
                    return;
                }
            }
            if self.buf.is_empty() {
                return;
            }
            let k = self.buf.len().min(9);
            assert_eq!(
                &self.buf[..k],
                &b"HTTP/1.1 "[..k],
                "transmit is not an HTTP/1.1 response"
            );
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut fields);
            let n = match resp.parse(&self.buf).expect("well-formed response head") {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial => return,
            };
            let status = resp.code.expect("status");
            let length = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| {
                    std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.parse::<usize>().ok())
                        .expect("numeric content-length")
                });
            let bodiless = (100..200).contains(&status) || status == 204 || status == 304;
            assert!(
                !(bodiless && status != 304 && length.is_some()),
                "length on a {status}"
            );
            self.buf.drain(..n);
            self.body_left = if bodiless { 0 } else { length.unwrap_or(0) };
            if status == 101 {
                self.switched = true;
                assert!(self.buf.is_empty(), "bytes after 101");
                return;
            }
        }
    }
}

/// What a [`run_http`] run amounted to, so tests can check that steps
/// reach the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HttpRun {
    /// Requests delivered.
    pub requests: usize,
    /// Responses accepted by `respond`.
    pub responses: usize,
    /// How the connection closed, if it did.
    pub closed: Option<HttpCloseReason>,
}

/// Runs `steps` against an [`HttpConn`] with small limits, then lets every
/// deadline pass: the connection must be closed, or hold a request for
/// the application.
pub fn run_http(steps: &[HttpStep]) -> HttpRun {
    let cfg = HttpConfig {
        max_head_bytes: HTTP_MAX_HEAD,
        max_headers: 16,
        max_body_bytes: HTTP_MAX_BODY,
        max_tx_bytes: HTTP_MAX_TX,
        max_requests: 5,
        ..HttpConfig::default()
    };
    let mut c = Checker::new();
    c.frames = Frames::Http(ResponseStream::default());
    let mut m = HttpConn::new(cfg, addr(), c.now);
    let mut pending_head: Option<bool> = None;
    let mut closed: Option<HttpCloseReason> = None;
    let (mut requests, mut responses) = (0, 0);
    let mut handle = |events: Vec<HttpEvent>, pending: &mut Option<bool>| {
        for e in events {
            match e {
                HttpEvent::Request(req) => {
                    requests += 1;
                    assert!(pending.is_none(), "a second request before the response");
                    assert!(req.body().len() <= HTTP_MAX_BODY);
                    *pending = Some(req.method() == http::Method::HEAD);
                }
                HttpEvent::Closed(reason) => {
                    assert!(closed.is_none(), "closed twice");
                    closed = Some(reason);
                }
            }
        }
    };
    let events = c.drain(&mut m);
    handle(events, &mut pending_head);
    for step in steps {
        let now = c.now;
        match step {
            HttpStep::Advance(ms) => m.handle_input(Input::Timeout(c.advance(*ms))),
            HttpStep::Recv(data) => m.handle_input(Input::Received(now, data)),
            HttpStep::RecvRequest {
                kind,
                body_len,
                pieces,
            } => {
                let bytes = sample_request(*kind, usize::from(*body_len) % (HTTP_MAX_BODY + 200));
                let size = bytes.len().div_ceil(usize::from(*pieces).max(1)).max(1);
                for piece in bytes.chunks(size) {
                    m.handle_input(Input::Received(now, piece));
                    let events = c.drain(&mut m);
                    handle(events, &mut pending_head);
                }
            }
            HttpStep::Respond {
                status,
                body_len,
                close,
            } => {
                let status = match status % 6 {
                    0 => 101,
                    1 => 204,
                    2 => 304,
                    3 => 404,
                    4 => 100 + status % 500,
                    _ => 200,
                };
                let len = *body_len as usize % (HTTP_MAX_TX + 1000);
                let body = if pending_head == Some(true) {
                    Bytes::new()
                } else {
                    Bytes::from(vec![b'r'; len])
                };
                let mut resp = http::Response::new(body);
                *resp.status_mut() = http::StatusCode::from_u16(status).expect("valid status");
                if *close {
                    resp.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                if m.respond(resp).is_ok() {
                    pending_head = None;
                    responses += 1;
                }
            }
            HttpStep::TakeUpgrade => {
                if let Some(up) = m.take_upgrade() {
                    assert!(up.received.len() <= HTTP_MAX_HEAD + u16::MAX as usize);
                }
            }
            HttpStep::Close => m.close(),
            HttpStep::Closed => m.handle_input(Input::Closed(now)),
            HttpStep::Backlog(n) => m.set_backlog(now, *n as usize % (2 * HTTP_MAX_TX)),
        }
        let (rx, queued, items) = m.buffered();
        assert!(
            rx <= HTTP_MAX_HEAD + HTTP_MAX_BODY + (1 << 16),
            "rx buffer {rx}"
        );
        assert!(queued <= HTTP_MAX_TX, "queued response bytes {queued}");
        assert!(items < 16, "output queue grew to {items}");
        let events = c.drain(&mut m);
        handle(events, &mut pending_head);
    }
    // Liveness: once every deadline has passed, nothing is left hanging.
    for _ in 0..4 {
        if c.finished {
            break;
        }
        m.handle_input(Input::Timeout(c.advance(u16::MAX)));
        let events = c.drain(&mut m);
        handle(events, &mut pending_head);
    }
    assert!(
        c.finished || m.is_awaiting_response() || m.is_upgraded(),
        "connection neither closed nor waiting for the application"
    );
    assert_eq!(
        c.finished,
        closed.is_some(),
        "Finished without Closed or the reverse"
    );
    HttpRun {
        requests,
        responses,
        closed,
    }
}

/// Runs the drain checks once on an arbitrary machine (for testing the
/// checker itself).
#[cfg(test)]
pub(crate) fn check_drain<M: Machine>(m: &mut M) {
    let mut c = Checker::new();
    c.drain(m);
}

/// Fuzz entry point: decodes steps from raw bytes and runs them against a
/// client session and a server-peer session.
#[cfg(feature = "fuzzing")]
pub fn run_session_steps(data: &[u8]) {
    if let Some(steps) = steps_from(data) {
        run_session(&steps);
        run_peer_session(&steps);
    }
}

/// Fuzz entry point: decodes steps from raw bytes and runs them against a
/// link.
#[cfg(feature = "fuzzing")]
pub fn run_link_steps(data: &[u8]) {
    if let Some(steps) = steps_from(data) {
        run_link(&steps);
    }
}

/// Fuzz entry point: decodes steps from raw bytes and runs them against
/// an HTTP connection.
#[cfg(feature = "fuzzing")]
pub fn run_http_steps(data: &[u8]) {
    if let Some(steps) = steps_from::<HttpStep>(data) {
        let _ = run_http(&steps);
    }
}

#[cfg(feature = "fuzzing")]
fn steps_from<S: for<'a> arbitrary::Arbitrary<'a>>(data: &[u8]) -> Option<Vec<S>> {
    use arbitrary::{Arbitrary, Unstructured};
    Vec::<S>::arbitrary_take_rest(Unstructured::new(data)).ok()
}
