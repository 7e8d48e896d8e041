//! HttpConn behaviour in virtual time: every deadline, the errors the
//! machine answers itself, keep-alive, large responses and upgrades.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};

use super::{Drive, ms, secs, t0};
use crate::http::{
    BadRequest, HttpCloseReason, HttpConfig, HttpConn, HttpEvent, OversizedBody, RespondError,
};
use crate::{Input, Machine, Output};

fn peer() -> SocketAddr {
    "203.0.113.5:40000".parse().unwrap()
}

fn conn_with(cfg: HttpConfig) -> Drive<HttpConn> {
    let t = t0();
    Drive::new(HttpConn::new(cfg, peer(), t), t)
}

fn conn() -> Drive<HttpConn> {
    conn_with(HttpConfig::default())
}

fn requests(d: &Drive<HttpConn>) -> Vec<&Request<Bytes>> {
    d.events()
        .into_iter()
        .filter_map(|e| match e {
            HttpEvent::Request(r) => Some(r),
            HttpEvent::Closed(_) => None,
        })
        .collect()
}

fn closed_with(d: &Drive<HttpConn>) -> Option<HttpCloseReason> {
    d.events().into_iter().find_map(|e| match e {
        HttpEvent::Closed(r) => Some(*r),
        HttpEvent::Request(_) => None,
    })
}

/// Ends with Close, Closed(reason), Finished, in that order.
fn assert_closed(d: &Drive<HttpConn>, reason: HttpCloseReason) {
    let n = d.outputs.len();
    assert!(n >= 3, "{:?}", d.outputs);
    assert!(
        matches!(d.outputs[n - 3].1, Output::Close),
        "{:?}",
        d.outputs
    );
    assert!(
        matches!(&d.outputs[n - 2].1, Output::Event(HttpEvent::Closed(r)) if *r == reason),
        "{:?}",
        d.outputs
    );
    assert!(matches!(d.outputs[n - 1].1, Output::Finished));
}

fn wire(d: &Drive<HttpConn>) -> String {
    String::from_utf8_lossy(&d.transmitted()).into_owned()
}

fn text(body: &'static str) -> Response<Bytes> {
    Response::new(Bytes::from_static(body.as_bytes()))
}

const GET: &[u8] = b"GET /msg_server HTTP/1.1\r\nHost: login\r\n\r\n";

#[test]
fn a_request_is_delivered_and_answered_with_keep_alive() {
    let mut d = conn();
    d.recv(GET);
    let reqs = requests(&d);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method(), Method::GET);
    assert_eq!(reqs[0].uri().path(), "/msg_server");
    assert_eq!(reqs[0].headers()["host"], "login");
    assert!(reqs[0].body().is_empty());
    assert!(d.m.is_awaiting_response());
    d.call(|m| m.respond(text("{\"code\":0}"))).unwrap();
    assert_eq!(
        wire(&d),
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"code\":0}"
    );
    assert!(!d.finished());
    assert_eq!(d.m.requests_served(), 1);
    assert_eq!(
        d.call(|m| m.respond(text("again"))),
        Err(RespondError::NotPending)
    );
}

#[test]
fn slowloris_is_closed_at_the_header_deadline_with_408() {
    let mut d = conn();
    let t = d.now;
    d.recv(b"GET / HTTP/1.1\r\n");
    // A header line every 2 s: the head never completes.
    for i in 1..=4u32 {
        d.advance_to(t + secs(2 * u64::from(i)));
        d.recv(format!("X-Slow-{i}: {i}\r\n").as_bytes());
        assert!(!d.finished(), "open at {i}");
    }
    d.advance_to(t + secs(10) - ms(1));
    assert!(!d.finished());
    d.advance_to(t + secs(10));
    assert!(d.finished());
    assert!(requests(&d).is_empty());
    assert!(wire(&d).starts_with("HTTP/1.1 408 Request Timeout\r\n"));
    assert!(wire(&d).contains("Connection: close\r\n"));
    assert_closed(&d, HttpCloseReason::HeaderTimedOut);
    assert_eq!(d.outputs.last().unwrap().0, t + secs(10));
}

#[test]
fn a_connection_that_sends_nothing_is_closed_silently() {
    let mut d = conn();
    let t = d.now;
    d.advance_to(t + secs(10));
    assert!(d.transmitted().is_empty());
    assert_closed(&d, HttpCloseReason::IdleTimedOut);
}

#[test]
fn the_next_heads_deadline_runs_from_its_first_byte() {
    let mut d = conn();
    let t = d.now;
    d.recv(GET);
    d.call(|m| m.respond(text("a"))).unwrap();
    // Idle for 14 s (under the 15 s keep-alive limit), then a slow head.
    d.advance_to(t + secs(14));
    d.recv(b"GET / HTTP/1.1\r\n");
    d.advance_to(t + secs(24) - ms(1));
    assert!(!d.finished());
    d.advance_to(t + secs(24));
    assert_closed(&d, HttpCloseReason::HeaderTimedOut);
}

#[test]
fn an_idle_keep_alive_connection_closes_after_15s_without_a_word() {
    let mut d = conn();
    let t = d.now;
    d.advance_to(t + secs(1));
    d.recv(GET);
    d.call(|m| m.respond(text("a"))).unwrap();
    d.clear();
    d.advance_to(t + secs(16) - ms(1));
    assert!(!d.finished());
    d.advance_to(t + secs(16));
    assert!(d.transmitted().is_empty());
    assert_closed(&d, HttpCloseReason::IdleTimedOut);
}

#[test]
fn a_slow_body_is_closed_at_the_body_deadline_with_408() {
    let mut d = conn();
    let t = d.now;
    d.recv(b"POST /up HTTP/1.1\r\nContent-Length: 100\r\n\r\n");
    for i in 1..=5 {
        d.advance_to(t + secs(5 * i));
        d.recv(&[b'x'; 10]);
    }
    d.advance_to(t + secs(30) - ms(1));
    assert!(!d.finished());
    d.advance_to(t + secs(30));
    assert!(requests(&d).is_empty());
    assert!(wire(&d).starts_with("HTTP/1.1 408 "));
    assert_closed(&d, HttpCloseReason::BodyTimedOut);
}

#[test]
fn a_body_just_in_time_is_delivered_and_the_head_deadline_no_longer_applies() {
    let mut d = conn();
    let t = d.now;
    d.advance_to(t + secs(9));
    d.recv(b"POST /up HTTP/1.1\r\nContent-Length: 5\r\n\r\nab");
    d.advance_to(t + secs(39) - ms(1));
    d.recv(b"cde");
    let reqs = requests(&d);
    assert_eq!(reqs.len(), 1);
    assert_eq!(&reqs[0].body()[..], b"abcde");
    // Waiting for the application has no deadline.
    d.advance(secs(3600));
    assert!(!d.finished());
}

#[test]
fn chunked_bodies_are_decoded_and_limited() {
    let mut d = conn();
    d.recv(b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n");
    assert_eq!(&requests(&d)[0].body()[..], b"hello world");

    let cfg = HttpConfig {
        max_body_bytes: 8,
        ..HttpConfig::default()
    };
    let mut d = conn_with(cfg.clone());
    d.recv(b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\n");
    assert!(wire(&d).starts_with("HTTP/1.1 413 Payload Too Large\r\n"));
    assert_closed(&d, HttpCloseReason::BodyTooLarge);

    let mut d = conn_with(cfg);
    d.recv(b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n");
    assert!(wire(&d).starts_with("HTTP/1.1 400 Bad Request\r\n"));
    assert_closed(&d, HttpCloseReason::BadRequest(BadRequest::Chunk));
}

#[test]
fn expect_100_continue_is_answered_or_refused_by_length() {
    let mut d = conn();
    d.recv(b"PUT /img HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    assert_eq!(wire(&d), "HTTP/1.1 100 Continue\r\n\r\n");
    d.recv(b"abc");
    assert_eq!(&requests(&d)[0].body()[..], b"abc");
    d.clear();
    d.call(|m| m.respond(text("ok"))).unwrap();
    assert!(wire(&d).starts_with("HTTP/1.1 200 OK\r\n"));

    let cfg = HttpConfig {
        max_body_bytes: 2,
        ..HttpConfig::default()
    };
    let mut d = conn_with(cfg);
    d.recv(b"PUT /img HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    assert!(!wire(&d).contains("100 Continue"));
    assert!(wire(&d).starts_with("HTTP/1.1 413 "));
    assert_closed(&d, HttpCloseReason::BodyTooLarge);
}

#[test]
fn oversized_bodies_are_dropped_and_delivered_when_the_listener_asks() {
    let cfg = HttpConfig {
        max_body_bytes: 4,
        max_discard_bytes: 100,
        ..HttpConfig::default()
    };
    // Over the body limit, under the discard limit: read in pieces and
    // dropped, then the head is delivered with the marker and no body.
    let mut d = conn_with(cfg.clone());
    d.recv(b"POST /up HTTP/1.1\r\nHost: msfs\r\nContent-Length: 50\r\n\r\n");
    d.recv(&[b'x'; 30]);
    assert!(requests(&d).is_empty());
    assert_eq!(d.call(|m| m.buffered().0), 0, "dropped bytes are not kept");
    d.recv(&[b'y'; 20]);
    let reqs = requests(&d);
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].body().is_empty());
    assert_eq!(
        reqs[0].extensions().get::<OversizedBody>(),
        Some(&OversizedBody { length: 50 })
    );
    assert!(
        d.transmitted().is_empty(),
        "the machine answered nothing itself"
    );
    // Whatever follows is not parsed: the answer closes the connection.
    d.recv(b"GET / HTTP/1.1\r\n\r\n");
    d.call(|m| m.respond(text("{\"error_code\":1}"))).unwrap();
    assert!(wire(&d).starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(wire(&d).contains("Connection: close\r\n"));
    assert_eq!(requests(&d).len(), 1);
    assert_closed(&d, HttpCloseReason::Done);

    // The body deadline still runs while dropping.
    let mut d = conn_with(cfg.clone());
    let t = d.now;
    d.recv(b"POST /up HTTP/1.1\r\nContent-Length: 50\r\n\r\n0123456789");
    d.advance_to(t + secs(30) - ms(1));
    assert!(!d.finished());
    d.advance_to(t + secs(30));
    assert!(requests(&d).is_empty());
    assert_closed(&d, HttpCloseReason::BodyTimedOut);

    // Expect: 100-continue: delivered at once, no 100 asked the body in.
    let mut d = conn_with(cfg.clone());
    d.recv(b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 50\r\n\r\n");
    assert_eq!(requests(&d).len(), 1);
    assert!(!wire(&d).contains("100 Continue"));
    d.recv(&[b'z'; 50]);
    d.call(|m| m.respond(text("no"))).unwrap();
    assert!(wire(&d).contains("Connection: close\r\n"));
    assert_closed(&d, HttpCloseReason::Done);

    // Over the discard limit, or chunked: 413 from the machine as before.
    let mut d = conn_with(cfg.clone());
    d.recv(b"POST /up HTTP/1.1\r\nContent-Length: 101\r\n\r\n");
    assert!(wire(&d).starts_with("HTTP/1.1 413 "));
    assert_closed(&d, HttpCloseReason::BodyTooLarge);
    let mut d = conn_with(cfg.clone());
    d.recv(b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    assert!(wire(&d).starts_with("HTTP/1.1 413 "));
    assert_closed(&d, HttpCloseReason::BodyTooLarge);

    // Within the body limit nothing changes.
    let mut d = conn_with(cfg);
    d.recv(b"POST /up HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd");
    assert_eq!(&requests(&d)[0].body()[..], b"abcd");
    assert!(
        requests(&d)[0]
            .extensions()
            .get::<OversizedBody>()
            .is_none()
    );
}

#[test]
fn protocol_errors_are_answered_then_closed() {
    let cases: [(&[u8], &str, HttpCloseReason); 6] = [
        (
            b"GET / HTTP/2.0\r\n\r\n",
            "505 HTTP Version Not Supported",
            HttpCloseReason::VersionNotSupported,
        ),
        (
            // A TeamTalk PDU sent to the HTTP port.
            b"\x00\x00\x00\x10\x00\x01\x00\x00\x00\x07\x01\x03\x00\x01\x00\x00",
            "400 Bad Request",
            HttpCloseReason::BadRequest(BadRequest::Syntax),
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "501 Not Implemented",
            HttpCloseReason::NotImplemented,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "400 Bad Request",
            HttpCloseReason::BadRequest(BadRequest::LengthAndEncoding),
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n",
            "413 Payload Too Large",
            HttpCloseReason::BodyTooLarge,
        ),
        (
            b"GET /\x7f HTTP/1.1\r\n\r\n",
            "400 Bad Request",
            HttpCloseReason::BadRequest(BadRequest::Syntax),
        ),
    ];
    for (bytes, status, reason) in cases {
        let mut d = conn();
        d.recv(bytes);
        assert!(
            wire(&d).starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{status}: {}",
            wire(&d)
        );
        assert_eq!(reason.status().unwrap().as_u16().to_string(), status[..3]);
        assert_closed(&d, reason);
        assert!(requests(&d).is_empty());
    }
}

#[test]
fn heads_over_the_limits_get_431() {
    let mut d = conn();
    d.recv(b"GET /");
    d.recv(&[b'a'; 9000]);
    assert!(wire(&d).starts_with("HTTP/1.1 431 "));
    assert_closed(&d, HttpCloseReason::HeadTooLarge);

    let cfg = HttpConfig {
        max_headers: 2,
        ..HttpConfig::default()
    };
    let mut d = conn_with(cfg);
    d.recv(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
    assert_closed(&d, HttpCloseReason::HeadTooLarge);

    // A complete head just over the limit, in one read with a body.
    let cfg = HttpConfig {
        max_head_bytes: 40,
        ..HttpConfig::default()
    };
    let mut d = conn_with(cfg);
    d.recv(b"GET / HTTP/1.1\r\nX-Long: aaaaaaaaaaaaaaaaaaaa\r\n\r\n");
    assert_closed(&d, HttpCloseReason::HeadTooLarge);
}

#[test]
fn http10_and_connection_close_end_after_the_response() {
    for req in [
        &b"GET / HTTP/1.0\r\n\r\nGET /ignored HTTP/1.0\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    ] {
        let mut d = conn();
        d.recv(req);
        d.recv(b"more bytes are discarded");
        assert_eq!(requests(&d).len(), 1);
        d.call(|m| m.respond(text("bye"))).unwrap();
        assert_eq!(
            wire(&d),
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye"
        );
        assert_closed(&d, HttpCloseReason::Done);
    }

    let mut d = conn();
    d.recv(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    d.call(|m| m.respond(text("hi"))).unwrap();
    assert!(wire(&d).contains("Connection: keep-alive\r\n"));
    assert!(!d.finished());
}

#[test]
fn the_application_can_ask_to_close() {
    let mut d = conn();
    d.recv(GET);
    let resp = Response::builder()
        .header(header::CONNECTION, "close")
        .body(Bytes::from_static(b"x"))
        .unwrap();
    d.call(|m| m.respond(resp)).unwrap();
    assert!(wire(&d).contains("Connection: close\r\n"));
    assert_closed(&d, HttpCloseReason::Done);
}

#[test]
fn a_pipelined_upload_in_the_same_read_survives_the_response() {
    let mut d = conn();
    let mut bytes = GET.to_vec();
    bytes.extend_from_slice(b"PUT /img HTTP/1.1\r\nContent-Length: 20000\r\n\r\n");
    bytes.extend_from_slice(&[b'i'; 20000]);
    d.recv(&bytes);
    d.call(|m| m.respond(text("first"))).unwrap();
    let reqs = requests(&d);
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].body().len(), 20000);
    assert!(wire(&d).ends_with("first"));
}

#[test]
fn pipelined_requests_are_delivered_one_at_a_time() {
    let mut d = conn();
    d.recv(b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(requests(&d).len(), 1);
    d.call(|m| m.respond(text("one"))).unwrap();
    let reqs = requests(&d);
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].uri().path(), "/2");
    assert_eq!(&reqs[1].body()[..], b"ok");
    d.call(|m| m.respond(text("two"))).unwrap();
    assert_eq!(
        wire(&d),
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\noneHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo"
    );
}

#[test]
fn too_much_ahead_of_a_response_closes() {
    let cfg = HttpConfig {
        max_body_bytes: 1000,
        ..HttpConfig::default()
    };
    let mut d = conn_with(cfg);
    d.recv(GET);
    d.recv(&[b'G'; 9000]);
    assert!(!d.finished(), "one request's worth may wait");
    d.recv(&[b'G'; 193]);
    assert!(d.transmitted().is_empty());
    assert_closed(&d, HttpCloseReason::PipelineOverflow);
    assert_eq!(
        d.call(|m| m.respond(text("late"))),
        Err(RespondError::Closed)
    );
}

#[test]
fn max_requests_and_keep_alive_off_close_with_the_last_response() {
    let cfg = HttpConfig {
        max_requests: 2,
        ..HttpConfig::default()
    };
    let mut d = conn_with(cfg);
    d.recv(GET);
    d.call(|m| m.respond(text("1"))).unwrap();
    assert!(!wire(&d).contains("Connection: close"));
    d.recv(GET);
    d.call(|m| m.respond(text("2"))).unwrap();
    assert!(wire(&d).ends_with("Connection: close\r\n\r\n2"));
    assert_closed(&d, HttpCloseReason::Done);

    let cfg = HttpConfig {
        keep_alive: false,
        ..HttpConfig::default()
    };
    let mut d = conn_with(cfg);
    d.recv(GET);
    d.call(|m| m.respond(text("1"))).unwrap();
    assert!(wire(&d).contains("Connection: close\r\n"));
    assert_closed(&d, HttpCloseReason::Done);
}

#[test]
fn head_gets_the_get_headers_without_body() {
    let mut d = conn();
    d.recv(b"HEAD /img/1.png HTTP/1.1\r\n\r\n");
    let resp = Response::builder()
        .header(header::CONTENT_TYPE, "image/png")
        .body(Bytes::from(vec![7u8; 1000]))
        .unwrap();
    d.call(|m| m.respond(resp)).unwrap();
    assert_eq!(
        wire(&d),
        "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
    );
    assert!(!d.finished());
}

#[test]
fn respond_refuses_what_it_cannot_send() {
    let mut d = conn();
    assert_eq!(
        d.call(|m| m.respond(text("x"))),
        Err(RespondError::NotPending)
    );
    d.recv(GET);
    let big = Response::new(Bytes::from(vec![0u8; crate::DEFAULT_MAX_TX_BYTES]));
    assert!(matches!(
        d.call(|m| m.respond(big)),
        Err(RespondError::TooLarge { max, .. }) if max == crate::DEFAULT_MAX_TX_BYTES
    ));
    let interim = Response::builder()
        .status(StatusCode::CONTINUE)
        .body(Bytes::new())
        .unwrap();
    assert_eq!(
        d.call(|m| m.respond(interim)),
        Err(RespondError::Status(StatusCode::CONTINUE))
    );
    let unasked = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .body(Bytes::new())
        .unwrap();
    assert_eq!(
        d.call(|m| m.respond(unasked)),
        Err(RespondError::Status(StatusCode::SWITCHING_PROTOCOLS))
    );
    // Still pending: a proper answer goes through.
    assert!(d.transmitted().is_empty());
    d.call(|m| m.respond(text("fine"))).unwrap();
    assert!(wire(&d).ends_with("fine"));
}

/// A driver whose socket takes nothing until told: like the reactor, it
/// reports its queue after every transmit.
struct SlowSocket {
    queued: usize,
    wire: Vec<u8>,
    pieces: Vec<usize>,
}

impl SlowSocket {
    fn drain(&mut self, m: &mut HttpConn, now: std::time::Instant) {
        loop {
            match m.poll_output() {
                Output::Transmit(b) => {
                    self.pieces.push(b.len());
                    self.wire.extend_from_slice(&b);
                    self.queued += b.len();
                    m.set_backlog(now, self.queued);
                }
                Output::Timeout(_) | Output::Finished => return,
                Output::Event(_) | Output::Close | Output::Connect(_) => {}
            }
        }
    }

    /// The socket takes `n` bytes; the driver reports, then drains.
    fn take(&mut self, m: &mut HttpConn, now: std::time::Instant, n: usize) {
        self.queued = self.queued.saturating_sub(n);
        m.set_backlog(now, self.queued);
        self.drain(m, now);
    }
}

#[test]
fn a_large_response_goes_out_in_pieces_within_the_drivers_window() {
    let t = t0();
    let mut m = HttpConn::new(HttpConfig::default(), peer(), t);
    let mut sock = SlowSocket {
        queued: 0,
        wire: Vec::new(),
        pieces: Vec::new(),
    };
    sock.drain(&mut m, t);
    m.handle_input(Input::Received(t, GET));
    sock.drain(&mut m, t);
    let body = Bytes::from((0..3_000_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    m.respond(Response::new(body.clone())).unwrap();
    sock.drain(&mut m, t);
    // Released up to the 256 KiB window, in pieces of at most 64 KiB.
    assert!(sock.queued >= 256 << 10 && sock.queued < (256 + 64) << 10);
    assert!(sock.pieces.iter().all(|&n| n <= 64 << 10));
    // Each bit the socket takes lets as much more go.
    for _ in 0..1000 {
        if sock.queued == 0 {
            break;
        }
        sock.take(&mut m, t, 100_000);
        assert!(sock.queued < (256 + 64) << 10);
    }
    assert!(sock.pieces.iter().all(|&n| n <= 64 << 10));
    let head_len = sock.wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&sock.wire[head_len..], &body[..]);
}

#[test]
fn a_driver_that_reports_no_backlog_gets_everything_at_once() {
    let mut d = conn();
    d.recv(GET);
    d.call(|m| m.respond(Response::new(Bytes::from(vec![1u8; 1 << 20]))))
        .unwrap();
    // Nothing reported means the socket took it all: one drain, pieces of
    // at most 64 KiB, the whole response.
    assert!(d.transmitted().len() > 1 << 20);
    assert!(d.outputs.iter().all(|(_, o)| match o {
        Output::Transmit(b) => b.len() <= 64 << 10,
        _ => true,
    }));
}

#[test]
fn a_peer_that_stops_reading_is_dropped_after_the_send_timeout() {
    let mut d = conn();
    let t = d.now;
    d.recv(GET);
    d.call(|m| m.set_backlog(t, 300 << 10));
    d.call(|m| m.respond(Response::new(Bytes::from(vec![1u8; 1 << 20]))))
        .unwrap();
    // Progress at 20 s pushes the deadline to 50 s.
    d.advance_to(t + secs(20));
    d.call(|m| m.set_backlog(t + secs(20), 290 << 10));
    d.advance_to(t + secs(50) - ms(1));
    assert!(!d.finished());
    d.advance_to(t + secs(50));
    assert_closed(&d, HttpCloseReason::SendTimedOut);
    // The rest of the response was dropped, not transmitted.
    assert!(d.transmitted().is_empty());
}

#[test]
fn the_idle_timer_starts_when_the_socket_took_the_response() {
    let mut d = conn();
    let t = d.now;
    d.recv(GET);
    d.call(|m| m.respond(text("a"))).unwrap();
    // The driver could not write it at once; it gets out at 20 s.
    d.call(|m| m.set_backlog(t, 40));
    d.advance_to(t + secs(20));
    d.call(|m| m.set_backlog(t + secs(20), 0));
    d.advance_to(t + secs(35) - ms(1));
    assert!(!d.finished());
    d.advance_to(t + secs(35));
    assert_closed(&d, HttpCloseReason::IdleTimedOut);
}

#[test]
fn a_backlog_over_the_cap_closes() {
    let cfg = HttpConfig {
        max_tx_bytes: 1000,
        ..HttpConfig::default()
    };
    let mut d = conn_with(cfg);
    let now = d.now;
    d.call(|m| m.set_backlog(now, 1001));
    assert_closed(&d, HttpCloseReason::SendBufferFull);
}

#[test]
fn close_and_peer_close_have_their_reasons() {
    let mut d = conn();
    d.recv(GET);
    d.call(|m| m.respond(text("last words"))).unwrap();
    d.call(HttpConn::close);
    assert!(wire(&d).ends_with("last words"));
    assert_closed(&d, HttpCloseReason::Local);

    let mut d = conn();
    d.recv(GET);
    let now = d.now;
    d.input(Input::Closed(now));
    assert_closed(&d, HttpCloseReason::PeerClosed);
    assert_eq!(d.call(|m| m.respond(text("x"))), Err(RespondError::Closed));
    assert_eq!(closed_with(&d), Some(HttpCloseReason::PeerClosed));
}

const UPGRADE: &[u8] =
    b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n";

fn switching() -> Response<Bytes> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .body(Bytes::new())
        .unwrap()
}

#[test]
fn an_upgrade_hands_over_the_bytes_that_follow() {
    let mut d = conn();
    d.recv(UPGRADE);
    assert_eq!(requests(&d)[0].headers()["upgrade"], "websocket");
    d.recv(b"\x81\x05hello");
    d.call(|m| m.respond(switching())).unwrap();
    assert_eq!(
        wire(&d),
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    );
    assert!(d.m.is_upgraded());
    d.recv(b"\x81\x01!");
    let up = d.call(HttpConn::take_upgrade).unwrap();
    assert_eq!(up.peer, peer());
    assert_eq!(&up.received[..], b"\x81\x05hello\x81\x01!");
    // Drained on its own, it finishes without closing the socket.
    let n = d.outputs.len();
    assert!(matches!(
        d.outputs[n - 2].1,
        Output::Event(HttpEvent::Closed(HttpCloseReason::Upgraded))
    ));
    assert!(matches!(d.outputs[n - 1].1, Output::Finished));
    assert!(!d.outputs.iter().any(|(_, o)| matches!(o, Output::Close)));
}

#[test]
fn an_upgraded_connection_nobody_takes_closes_when_idle() {
    let mut d = conn();
    let t = d.now;
    d.recv(UPGRADE);
    d.call(|m| m.respond(switching())).unwrap();
    d.advance_to(t + secs(15));
    assert_closed(&d, HttpCloseReason::IdleTimedOut);
}

/// The hand-off the module docs describe, with an echo protocol standing
/// in for WebSocket: one machine type for the driver, swapped inside.
#[test]
fn a_wrapper_machine_swaps_in_the_upgraded_protocol() {
    /// Echoes every byte.
    struct Echo(Vec<Bytes>);
    #[allow(clippy::large_enum_variant)]
    enum Either {
        Http(HttpConn),
        Echo(Echo),
    }
    impl Either {
        fn swap_if_upgraded(&mut self) {
            if let Self::Http(h) = self
                && let Some(up) = h.take_upgrade()
            {
                *self = Self::Echo(Echo(vec![up.received]));
            }
        }
    }
    impl Machine for Either {
        type Event = HttpEvent;
        fn handle_input(&mut self, input: Input<'_>) {
            match self {
                Self::Http(h) => h.handle_input(input),
                Self::Echo(e) => {
                    if let Input::Received(_, b) = input {
                        e.0.push(Bytes::copy_from_slice(b));
                    }
                }
            }
        }
        fn poll_output(&mut self) -> Output<HttpEvent> {
            if let Self::Http(h) = self {
                let out = h.poll_output();
                if !matches!(out, Output::Timeout(_)) || !h.is_upgraded() {
                    return out;
                }
                self.swap_if_upgraded();
            }
            match self {
                Self::Echo(e) => match e.0.pop() {
                    Some(b) if !b.is_empty() => Output::Transmit(b),
                    _ => Output::Timeout(t0() + secs(3600)),
                },
                Self::Http(h) => h.poll_output(),
            }
        }
    }
    let t = t0();
    let mut d = Drive::new(
        Either::Http(HttpConn::new(HttpConfig::default(), peer(), t)),
        t,
    );
    d.recv(UPGRADE);
    d.recv(b"early");
    d.call(|m| match m {
        Either::Http(h) => h.respond(switching()),
        Either::Echo(_) => Err(RespondError::NotPending),
    })
    .unwrap();
    d.recv(b"late");
    let all = String::from_utf8(d.transmitted()).unwrap();
    assert!(all.starts_with("HTTP/1.1 101 "));
    assert!(all.ends_with("\r\n\r\nearlylate"), "{all}");
    assert!(matches!(d.m, Either::Echo(_)));
}
