//! [`HttpConn`]: a server-side HTTP/1.1 connection as a sans-IO
//! [`Machine`], the one HTTP layer every daemon endpoint shares
//! (login_server's `/msg_server`, the admin port, msfs, the JSON APIs).
//!
//! Heads are parsed with `httparse`; requests and responses are the `http`
//! crate's types with [`Bytes`] bodies. Like every machine in this crate it
//! reads no clock and owns no socket, so every deadline is tested in
//! virtual time and the same connection runs under both drivers of
//! `teamtalk-net`.
//!
//! # One request at a time
//!
//! The machine raises [`HttpEvent::Request`] for a complete request (head
//! and body) and then waits for the application's [`HttpConn::respond`].
//! Bytes of a next, pipelined request are kept, at most one request's
//! worth ([`HttpConfig::max_head_bytes`] plus
//! [`HttpConfig::max_body_bytes`], what a single request may cost anyway),
//! and parsed only once the response is answered and handed to the
//! driver. A request without keep-alive is the last one: bytes after it
//! are discarded.
//!
//! # Deadlines ([`HttpConfig`])
//!
//! | deadline | default | runs | on expiry |
//! |---|---|---|---|
//! | `header_timeout` | 10 s | from connection start (first request) or the first byte of a request (later ones) until its head is complete | 408, close [`HttpCloseReason::HeaderTimedOut`]; silent [`HttpCloseReason::IdleTimedOut`] when no byte arrived at all |
//! | `body_timeout` | 30 s | from the end of the head until the whole body arrived | 408, close [`HttpCloseReason::BodyTimedOut`] |
//! | `idle_timeout` | 15 s | keep-alive: from the moment the last response was fully taken by the socket until the first byte of the next request | silent close [`HttpCloseReason::IdleTimedOut`] |
//! | `send_timeout` | 30 s | while response bytes are unsent: since the socket last took any | silent close [`HttpCloseReason::SendTimedOut`] |
//!
//! The body deadline is a fixed time for the whole body, not a minimum
//! rate: it bounds how long one request can hold a connection, which a
//! rate cannot (a client sending exactly the minimum rate stays forever).
//! Listeners accepting large uploads (msfs) set it to what their largest
//! body needs at the slowest rate they want to serve. Slowloris clients
//! (a header line every few seconds) are closed at the header deadline
//! whatever they send.
//!
//! # Errors the machine answers itself
//!
//! Each is sent with `Content-Length: 0` and `Connection: close`, then the
//! connection closes with the matching [`HttpCloseReason`]:
//!
//! | status | when |
//! |---|---|
//! | 400 | malformed head, target, header, `Content-Length` or chunked body; both `Content-Length` and `Transfer-Encoding`; `Transfer-Encoding` on HTTP/1.0 ([`BadRequest`]) |
//! | 408 | header or body deadline passed |
//! | 413 | body longer than [`HttpConfig::max_body_bytes`] (announced or decoded) |
//! | 431 | head (or chunked trailers) over [`HttpConfig::max_head_bytes`], or more than [`HttpConfig::max_headers`] fields |
//! | 501 | a transfer coding other than a single `chunked` |
//! | 505 | a version other than HTTP/1.0 and HTTP/1.1 |
//!
//! `Expect: 100-continue` on an HTTP/1.1 request with a body is answered
//! with `100 Continue` as soon as the head is accepted, or with 413 when
//! the announced length is over the limit (but see the next section).
//! Other expectations are
//! ignored (RFC 9110 §10.1.1 allows it). A missing `Host` is accepted:
//! some embedded TeamTalk clients omit it and nothing here routes by host.
//!
//! # Oversized bodies answered by the application
//!
//! Some protocols promise an answer of their own to an upload that is too
//! large (TeamTalk's msfs sends a JSON error, and its clients show its
//! message). A listener that sets [`HttpConfig::max_discard_bytes`] gets
//! such requests instead of a 413: a body announced by `Content-Length`
//! over `max_body_bytes` but not over `max_discard_bytes` is read and
//! thrown away (within the body deadline, never buffered), then the
//! request is delivered with an empty body and an [`OversizedBody`]
//! extension (`request.extensions().get::<OversizedBody>()`). With
//! `Expect: 100-continue` it is delivered at once, without `100 Continue`,
//! so the client never sends the body. Either way the connection closes
//! after the application's answer. Longer bodies and chunked bodies over
//! the limit are still answered 413 by the machine.
//!
//! Closing right after an error response while the client still sends
//! (an oversized upload) may reset the connection before the client reads
//! the status; the machine cannot linger on reads, as the driver owns the
//! socket.
//!
//! # Responses
//!
//! [`HttpConn::respond`] serialises the status line and the application's
//! headers and sets the framing itself: `Content-Length` (never chunked),
//! `Connection: close` when the connection ends after this response
//! (keep-alive off, client asked, HTTP/1.0 without keep-alive,
//! [`HttpConfig::max_requests`] reached, or the application set
//! `Connection: close`). `HEAD`, 1xx, 204 and 304 responses go out without
//! body; the application may answer `HEAD` with the `GET` response and the
//! body is dropped. No `Date` header: the machine has no wall clock.
//!
//! A response (head plus body) must fit in [`HttpConfig::max_tx_bytes`]
//! (default 4 MiB; msfs raises it to its largest image plus a little):
//! larger ones are refused with [`RespondError::TooLarge`] and nothing is
//! sent, so the application can answer 500 instead. The body is held
//! (zero-copy, it is a [`Bytes`]) and handed to the driver in 64 KiB
//! pieces while the driver's queue ([`Machine::set_backlog`]) is under
//! 256 KiB, so a 10 MiB image costs the driver a small queue, and the
//! reactor's hard per-socket cap is never approached. This relies on the
//! drivers reporting the backlog as it changes, after each transmit and
//! each write, as both `teamtalk-net` drivers do.
//!
//! # Upgrades (WebSocket, later)
//!
//! A request with `Upgrade` is delivered like any other;
//! [`HttpEvent`]'s request shows the headers, and the machine notes
//! whether it was an HTTP/1.1 upgrade request (`Connection: upgrade` and
//! `Upgrade`). The application may answer it normally, or with `101
//! Switching Protocols` (refused with [`RespondError::Status`] for any
//! other request). After a 101 the machine parses no more HTTP: it keeps
//! the bytes that follow (within the same bound as pipelined bytes) and
//! [`HttpConn::is_upgraded`] turns true once the 101 is handed out.
//!
//! The reactor runs one machine type per listener, so the WebSocket
//! change will add an enum machine `enum HttpOrWs { Http(HttpConn),
//! Ws(WsConn) }` implementing [`Machine`] by delegation. After each
//! mutation of the `Http` variant it checks `is_upgraded()`; when true it
//! calls [`HttpConn::take_upgrade`], which returns the peer, the bytes
//! received after the upgrade request and the driver's current backlog,
//! and replaces itself with `Ws(WsConn::new(upgrade, now))`. The socket
//! never changes hands at the driver. The replaced `HttpConn` is dropped
//! without being drained again; drained on its own (no wrapper) it would
//! report [`HttpCloseReason::Upgraded`] and finish without `Close`, the
//! socket being no longer its own. Until then, an upgraded connection left
//! alone closes after `idle_timeout`.

mod chunked;
mod head;
mod response;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use tracing::debug;

use crate::DEFAULT_MAX_TX_BYTES;
use crate::machine::{Input, Machine, Output};
use crate::timers::{Timer, TimerTable};
use crate::wire::input_kind;

use chunked::{ChunkError, Chunked};
use head::{Framing, Parsed, Scan};
use response::Answering;

/// Default whole-head deadline.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default whole-body deadline.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default keep-alive idle time between requests.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Default time the peer may take none of a response.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Default head limit (request line plus fields).
pub const DEFAULT_MAX_HEAD_BYTES: usize = 8 << 10;
/// Default body limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// Size of the pieces a large response body is handed out in.
const TX_CHUNK: usize = 64 << 10;
/// Response bytes are handed out only while the driver holds less.
const TX_WINDOW: usize = 256 << 10;
/// Bodies up to this size are copied behind the head: one write.
const COALESCE: usize = 16 << 10;
/// The deadline reported when no timer runs (waiting for the
/// application): a harmless periodic wake-up.
const QUIET_WAKEUP: Duration = Duration::from_secs(60);

/// Settings of one [`HttpConn`] (usually one per listener).
///
/// Build it with struct update syntax over the defaults:
/// `HttpConfig { max_body_bytes: 10 << 20, ..HttpConfig::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// The whole head must arrive within this, counted from connection
    /// start (first request) or the request's first byte (later ones).
    pub header_timeout: Duration,
    /// The whole body must arrive within this after the head.
    pub body_timeout: Duration,
    /// Keep connections open between requests.
    pub keep_alive: bool,
    /// Keep-alive: close when no new request starts this long after the
    /// last response was taken by the socket.
    pub idle_timeout: Duration,
    /// Close when response bytes wait this long without the socket taking
    /// any (a peer that stopped reading).
    pub send_timeout: Duration,
    /// Largest head (request line, fields, line ends); more is 431.
    pub max_head_bytes: usize,
    /// Most header fields in a head; more is 431.
    pub max_headers: usize,
    /// Largest request body, after chunked decoding; more is 413 (or see
    /// `max_discard_bytes`).
    pub max_body_bytes: usize,
    /// Bodies announced by `Content-Length` over `max_body_bytes` and up
    /// to this long are read and dropped, and the request is delivered
    /// with an empty body and an [`OversizedBody`] extension, for the
    /// application to answer in its own format (see the
    /// [module docs](self)). 0 (the default), or any value not above
    /// `max_body_bytes`: the machine answers 413.
    pub max_discard_bytes: usize,
    /// Largest response (head plus body) [`HttpConn::respond`] accepts;
    /// also the cap on the driver's backlog.
    pub max_tx_bytes: usize,
    /// Requests served on one connection; the last response says
    /// `Connection: close`.
    pub max_requests: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            keep_alive: true,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_headers: 64,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_discard_bytes: 0,
            max_tx_bytes: DEFAULT_MAX_TX_BYTES,
            max_requests: 1000,
        }
    }
}

/// What an [`HttpConn`] tells the application.
///
/// Not boxed although `Closed` is much smaller: it comes once per
/// connection, and a box would cost an allocation per request.
#[derive(Debug)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)]
pub enum HttpEvent {
    /// A complete request, body included. Answer it with
    /// [`HttpConn::respond`]; no further request is parsed until then.
    Request(Request<Bytes>),
    /// The connection ended; raised exactly once, just before
    /// [`Output::Finished`].
    Closed(HttpCloseReason),
}

/// The extension on a request whose body was over
/// [`HttpConfig::max_body_bytes`] and was dropped (or, with
/// `Expect: 100-continue`, never asked for): the request arrives with an
/// empty body, and the connection closes after its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OversizedBody {
    /// The length the request announced.
    pub length: u64,
}

/// Why a request was answered with 400 Bad Request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadRequest {
    /// The request line or the field syntax is not HTTP/1.x.
    #[error("malformed request line or field")]
    Syntax,
    /// A field name or value has bytes HTTP does not allow.
    #[error("invalid header field")]
    Header,
    /// The method is not a token.
    #[error("invalid method")]
    Method,
    /// The request target is not a URI.
    #[error("invalid request target")]
    Target,
    /// `Content-Length` is not a number, or two disagree.
    #[error("invalid Content-Length")]
    ContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`: a smuggling risk.
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndEncoding,
    /// `Transfer-Encoding` on HTTP/1.0, `chunked` twice, or empty.
    #[error("invalid Transfer-Encoding")]
    TransferEncoding,
    /// The chunked body is not valid chunked coding.
    #[error("malformed chunked body")]
    Chunk,
}

/// Why an [`HttpConn`] closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpCloseReason {
    /// The last response was sent: keep-alive off, the client asked to
    /// close, HTTP/1.0, `max_requests` reached, or the application's
    /// `Connection: close`.
    #[error("last response sent")]
    Done,
    /// The peer closed the socket, or reading or writing it failed.
    #[error("closed by the peer")]
    PeerClosed,
    /// The application called [`HttpConn::close`].
    #[error("closed locally")]
    Local,
    /// No request started within the idle timeout (or, on a new
    /// connection, no byte within the header timeout). Nothing is sent.
    #[error("idle")]
    IdleTimedOut,
    /// The head did not complete within the header timeout (408 sent).
    #[error("request head not received in time")]
    HeaderTimedOut,
    /// The body did not complete within the body timeout (408 sent).
    #[error("request body not received in time")]
    BodyTimedOut,
    /// The peer took none of the response for the send timeout.
    #[error("peer stopped reading")]
    SendTimedOut,
    /// The driver's backlog exceeded `max_tx_bytes`.
    #[error("send buffer full")]
    SendBufferFull,
    /// Malformed request (400 sent).
    #[error("bad request: {0}")]
    BadRequest(BadRequest),
    /// Head over the limit (431 sent).
    #[error("request head too large")]
    HeadTooLarge,
    /// Body over the limit (413 sent).
    #[error("request body too large")]
    BodyTooLarge,
    /// Not HTTP/1.0 or HTTP/1.1 (505 sent).
    #[error("HTTP version not supported")]
    VersionNotSupported,
    /// A transfer coding other than `chunked` (501 sent).
    #[error("transfer coding not implemented")]
    NotImplemented,
    /// More than `max_head_bytes + max_body_bytes` arrived ahead of a
    /// pending response, or after an upgrade. Nothing is sent (a response
    /// may be in progress).
    #[error("too many bytes ahead of the response")]
    PipelineOverflow,
    /// The connection was taken over by [`HttpConn::take_upgrade`].
    #[error("upgraded to another protocol")]
    Upgraded,
}

impl HttpCloseReason {
    /// The error status the machine sent before closing, if any.
    #[must_use]
    pub fn status(self) -> Option<StatusCode> {
        Some(match self {
            Self::HeaderTimedOut | Self::BodyTimedOut => StatusCode::REQUEST_TIMEOUT,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::VersionNotSupported => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            Self::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            _ => return None,
        })
    }

    /// A stable snake_case name, for metric labels and logs.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::PeerClosed => "peer_closed",
            Self::Local => "local",
            Self::IdleTimedOut => "idle_timeout",
            Self::HeaderTimedOut => "header_timeout",
            Self::BodyTimedOut => "body_timeout",
            Self::SendTimedOut => "send_timeout",
            Self::SendBufferFull => "send_buffer_full",
            Self::BadRequest(_) => "bad_request",
            Self::HeadTooLarge => "head_too_large",
            Self::BodyTooLarge => "body_too_large",
            Self::VersionNotSupported => "version_not_supported",
            Self::NotImplemented => "not_implemented",
            Self::PipelineOverflow => "pipeline_overflow",
            Self::Upgraded => "upgraded",
        }
    }
}

/// Why [`HttpConn::respond`] refused a response. Nothing was queued and
/// the connection is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RespondError {
    /// No request is waiting for its response.
    #[error("no request is waiting for a response")]
    NotPending,
    /// The connection has closed (the peer left meanwhile, for one).
    #[error("connection closed")]
    Closed,
    /// Head plus body exceed [`HttpConfig::max_tx_bytes`].
    #[error("response of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The serialised response's length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// An interim (1xx) status, or 101 to a request that asked for no
    /// upgrade: not a final response to this request.
    #[error("status {0} is not a final response to this request")]
    Status(StatusCode),
}

/// A connection handed over after `101 Switching Protocols`, from
/// [`HttpConn::take_upgrade`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Upgrade {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Bytes the peer sent after the upgrade request: the start of the new
    /// protocol's stream.
    pub received: Bytes,
    /// The driver's backlog last reported (bytes not yet taken by the
    /// socket), for the new machine's send accounting.
    pub backlog: usize,
}

/// What the connection is doing.
#[derive(Debug)]
enum State {
    /// Reading a request head; `started` once its header deadline runs.
    Head { started: bool },
    /// Reading the body of a parsed head (boxed: an idle connection
    /// should not carry a request's size).
    Body(Box<BodyState>),
    /// A request was delivered; waiting for `respond`.
    Awaiting(Info),
    /// A 101 was sent; waiting for `take_upgrade`.
    Upgraded,
    /// Handed over by `take_upgrade`.
    HandedOff,
    /// No more HTTP: closing or closed.
    Closed,
}

/// A parsed head whose body is being read.
#[derive(Debug)]
struct BodyState {
    request: Request<()>,
    info: Info,
    body: BodyReader,
}

/// What respond needs to know about the request being answered.
#[derive(Debug, Clone, Copy)]
struct Info {
    answering: Answering,
    keep_alive: bool,
    upgrade: bool,
}

#[derive(Debug)]
enum BodyReader {
    /// A `Content-Length` body of this many bytes, collected in `rx`.
    Length(usize),
    Chunked(Chunked),
    /// An oversized `Content-Length` body being dropped: bytes still to
    /// come, and the announced length.
    Discard {
        left: usize,
        length: u64,
    },
}

/// Queued outputs, in order (few at a time, so not boxed).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Item {
    Data(Bytes),
    Event(HttpEvent),
}

/// How far the closing sequence (`Close`, `Closed` event, `Finished`) got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Finale {
    NotStarted,
    CloseSent,
    EventSent,
}

/// An accepted HTTP/1.1 connection (see the [module docs](self)).
#[derive(Debug)]
pub struct HttpConn {
    cfg: HttpConfig,
    peer: SocketAddr,
    now: Instant,
    state: State,
    rx: BytesMut,
    scan: Scan,
    /// Early syntax checks of the current head: 0 none, 1 after its first
    /// bytes, 2 after its first line.
    checked: u8,
    queue: VecDeque<Item>,
    /// Response bytes in `queue` not yet handed to the driver.
    queued_bytes: usize,
    /// What the driver last said the socket has not taken.
    backlog: usize,
    /// The last time the socket took response bytes.
    last_progress: Instant,
    timers: TimerTable,
    served: u32,
    closing: Option<HttpCloseReason>,
    finale: Finale,
}

impl HttpConn {
    /// A connection just accepted from `peer`. Its header deadline runs
    /// from now.
    #[must_use]
    pub fn new(mut cfg: HttpConfig, peer: SocketAddr, now: Instant) -> Self {
        // A zero timeout would report a deadline equal to `now`.
        let min = Duration::from_millis(1);
        for d in [
            &mut cfg.header_timeout,
            &mut cfg.body_timeout,
            &mut cfg.idle_timeout,
            &mut cfg.send_timeout,
        ] {
            *d = (*d).max(min);
        }
        cfg.max_headers = cfg.max_headers.max(1);
        cfg.max_requests = cfg.max_requests.max(1);
        let mut timers = TimerTable::default();
        timers.set(Timer::Header, now + cfg.header_timeout);
        Self {
            cfg,
            peer,
            now,
            state: State::Head { started: true },
            rx: BytesMut::new(),
            scan: Scan::default(),
            checked: 0,
            queue: VecDeque::new(),
            queued_bytes: 0,
            backlog: 0,
            last_progress: now,
            timers,
            served: 0,
            closing: None,
            finale: Finale::NotStarted,
        }
    }

    /// The peer's address.
    #[must_use]
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Responses sent so far on this connection.
    #[must_use]
    pub fn requests_served(&self) -> u32 {
        self.served
    }

    /// Whether a request is waiting for [`HttpConn::respond`].
    #[must_use]
    pub fn is_awaiting_response(&self) -> bool {
        matches!(self.state, State::Awaiting(_)) && self.closing.is_none()
    }

    /// Whether the connection is closing or closed (remaining outputs may
    /// still need draining).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closing.is_some() || matches!(self.state, State::HandedOff)
    }

    /// Answers the pending request. Follow with a drain.
    ///
    /// See the [module docs](self) for the headers the connection sets.
    ///
    /// # Errors
    /// [`RespondError::NotPending`] when no request waits,
    /// [`RespondError::Closed`] after the connection closed,
    /// [`RespondError::TooLarge`] over `max_tx_bytes`,
    /// [`RespondError::Status`] for an interim status or an unrequested
    /// 101. On error nothing is queued.
    pub fn respond(&mut self, response: Response<Bytes>) -> Result<(), RespondError> {
        if self.is_closed() {
            return Err(RespondError::Closed);
        }
        let State::Awaiting(info) = self.state else {
            return Err(RespondError::NotPending);
        };
        let (parts, body) = response.into_parts();
        let status = parts.status;
        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        if status.is_informational() && !(switching && info.upgrade) {
            return Err(RespondError::Status(status));
        }
        let app_close = parts
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        let close = !switching && (!info.keep_alive || app_close);
        let enc = response::encode(&parts, body, info.answering, close);
        let len = enc.head.len() + enc.body.len();
        if len > self.cfg.max_tx_bytes {
            return Err(RespondError::TooLarge {
                len,
                max: self.cfg.max_tx_bytes,
            });
        }
        if enc.body.len() <= COALESCE {
            let mut all = enc.head;
            all.extend_from_slice(&enc.body);
            self.queue_data(all.freeze());
        } else {
            self.queue_data(enc.head.freeze());
            self.queue_data(enc.body);
        }
        self.served = self.served.saturating_add(1);
        debug!(peer = %self.peer, status = status.as_u16(), len, close, "http response");
        if switching {
            self.state = State::Upgraded;
            self.timers
                .set(Timer::Idle, self.now + self.cfg.idle_timeout);
        } else if close {
            self.state = State::Closed;
            self.rx = BytesMut::new();
            self.closing = Some(HttpCloseReason::Done);
        } else {
            self.state = State::Head { started: false };
        }
        self.update_tx_timers();
        self.process_rx();
        Ok(())
    }

    /// Closes the connection after the bytes already queued. Raises
    /// [`HttpEvent::Closed`] with [`HttpCloseReason::Local`] (unless it is
    /// closing already). Follow with a drain.
    pub fn close(&mut self) {
        if !self.is_closed() {
            debug!(peer = %self.peer, "http connection closed locally");
            self.state = State::Closed;
            self.rx = BytesMut::new();
            self.timers.clear(Timer::Header);
            self.timers.clear(Timer::Body);
            self.timers.clear(Timer::Idle);
            self.closing = Some(HttpCloseReason::Local);
        }
    }

    /// Whether a `101 Switching Protocols` has been handed out and the
    /// connection waits for [`HttpConn::take_upgrade`].
    #[must_use]
    pub fn is_upgraded(&self) -> bool {
        matches!(self.state, State::Upgraded) && self.closing.is_none() && self.queued_bytes == 0
    }

    /// Hands the connection to another protocol's machine (see the
    /// [module docs](self)): returns what that machine needs, or `None`
    /// unless [`HttpConn::is_upgraded`]. Afterwards this machine is inert;
    /// drained, it reports [`HttpCloseReason::Upgraded`] and finishes
    /// without `Close`.
    pub fn take_upgrade(&mut self) -> Option<Upgrade> {
        if !self.is_upgraded() {
            return None;
        }
        self.state = State::HandedOff;
        self.timers.clear_all();
        self.closing = Some(HttpCloseReason::Upgraded);
        // The socket is the new machine's now: no Close from us.
        self.finale = Finale::CloseSent;
        Some(Upgrade {
            peer: self.peer,
            received: std::mem::take(&mut self.rx).freeze(),
            backlog: self.backlog,
        })
    }

    fn queue_data(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if self.unsent() == 0 {
            self.last_progress = self.now;
        }
        self.queued_bytes += bytes.len();
        self.queue.push_back(Item::Data(bytes));
    }

    fn unsent(&self) -> usize {
        self.backlog.saturating_add(self.queued_bytes)
    }

    /// Arms the send deadline while response bytes are unsent, and the
    /// keep-alive idle deadline once everything went out.
    fn update_tx_timers(&mut self) {
        if self.unsent() > 0 {
            self.timers
                .set(Timer::Send, self.last_progress + self.cfg.send_timeout);
            if matches!(self.state, State::Head { started: false }) {
                self.timers.clear(Timer::Idle);
            }
        } else {
            self.timers.clear(Timer::Send);
            if matches!(self.state, State::Head { started: false })
                && self.closing.is_none()
                && self.timers.get(Timer::Idle).is_none()
            {
                self.timers
                    .set(Timer::Idle, self.now + self.cfg.idle_timeout);
            }
        }
    }

    /// Sends `reason`'s error status, then closes.
    fn fail(&mut self, reason: HttpCloseReason) {
        debug!(peer = %self.peer, %reason, "http request refused");
        if let Some(status) = reason.status() {
            self.queue_data(response::error(status));
        }
        self.state = State::Closed;
        self.rx = BytesMut::new();
        self.timers.clear(Timer::Header);
        self.timers.clear(Timer::Body);
        self.timers.clear(Timer::Idle);
        self.closing = Some(reason);
        self.update_tx_timers();
    }

    /// Closes at once, dropping response bytes not handed out yet. A
    /// close already under way keeps its reason unless it was `Done`
    /// (the last response did not get out after all).
    fn abort(&mut self, reason: HttpCloseReason) {
        if self.finale > Finale::NotStarted {
            return;
        }
        debug!(peer = %self.peer, %reason, "http connection closed");
        self.queue.retain(|item| matches!(item, Item::Event(_)));
        self.queued_bytes = 0;
        self.state = State::Closed;
        self.rx = BytesMut::new();
        self.timers.clear_all();
        if self.closing.is_none_or(|r| r == HttpCloseReason::Done) {
            self.closing = Some(reason);
        }
    }

    fn on_received(&mut self, data: &[u8]) {
        if self.closing.is_some() {
            return;
        }
        match self.state {
            State::Closed | State::HandedOff => return,
            State::Awaiting(info) if !info.keep_alive => return,
            _ => {}
        }
        self.rx.extend_from_slice(data);
        let waiting = match self.state {
            State::Awaiting(_) | State::Upgraded => true,
            // The previous response is still going out.
            State::Head { .. } => self.queued_bytes > 0,
            _ => false,
        };
        if !waiting {
            self.process_rx();
        } else if self.rx.len() > self.ahead_limit() {
            self.abort(HttpCloseReason::PipelineOverflow);
        }
    }

    /// How many bytes may wait while they cannot be parsed: one request's
    /// worth.
    fn ahead_limit(&self) -> usize {
        self.cfg
            .max_head_bytes
            .saturating_add(self.cfg.max_body_bytes)
    }

    /// Parses what the receive buffer holds, as far as the state allows.
    fn process_rx(&mut self) {
        loop {
            match &mut self.state {
                State::Head { started } => {
                    if self.queued_bytes > 0 {
                        // The previous response is still going out; its
                        // release parses on.
                        return;
                    }
                    if self.rx.is_empty() {
                        if self.rx.capacity() > 0 {
                            // An idle connection keeps no receive buffer.
                            self.rx = BytesMut::new();
                        }
                        return;
                    }
                    if !*started {
                        *started = true;
                        self.timers.clear(Timer::Idle);
                        self.timers
                            .set(Timer::Header, self.now + self.cfg.header_timeout);
                    }
                    match self.scan_head() {
                        Ok(Some(n)) => self.on_head(n),
                        Ok(None) => return,
                        Err(reason) => return self.fail(reason),
                    }
                }
                State::Body(state) => {
                    let done = match &mut state.body {
                        BodyReader::Discard { left, length } => {
                            let n = (*left).min(self.rx.len());
                            let _ = self.rx.split_to(n);
                            *left -= n;
                            if *left > 0 {
                                return;
                            }
                            let length = *length;
                            let State::Body(state) =
                                std::mem::replace(&mut self.state, State::Closed)
                            else {
                                return;
                            };
                            return self.deliver_oversized(state.request, state.info, length);
                        }
                        BodyReader::Length(n) => {
                            if self.rx.len() < *n {
                                return;
                            }
                            self.rx.split_to(*n)
                        }
                        BodyReader::Chunked(c) => {
                            match c.decode(
                                &mut self.rx,
                                self.cfg.max_body_bytes,
                                self.cfg.max_head_bytes,
                            ) {
                                Ok(true) => c.take_body(),
                                Ok(false) => return,
                                Err(ChunkError::Malformed) => {
                                    return self
                                        .fail(HttpCloseReason::BadRequest(BadRequest::Chunk));
                                }
                                Err(ChunkError::TooLarge) => {
                                    return self.fail(HttpCloseReason::BodyTooLarge);
                                }
                                Err(ChunkError::TrailersTooLarge) => {
                                    return self.fail(HttpCloseReason::HeadTooLarge);
                                }
                            }
                        }
                    };
                    let State::Body(state) = std::mem::replace(&mut self.state, State::Closed)
                    else {
                        return;
                    };
                    self.deliver(state.request, state.info, done.freeze());
                }
                State::Awaiting(_) | State::Upgraded | State::HandedOff | State::Closed => {
                    return;
                }
            }
        }
    }

    /// Looks for a complete head; checks the syntax early (after the first
    /// bytes and after the first line) so garbage is refused at once, while
    /// a head trickling in byte by byte is parsed only a bounded number of
    /// times.
    fn scan_head(&mut self) -> Result<Option<usize>, HttpCloseReason> {
        loop {
            let found = self.scan.terminator(&self.rx);
            let early = self.checked == 0 || (self.checked == 1 && self.scan.line_seen);
            if found.is_some() || early {
                self.checked = if self.scan.line_seen { 2 } else { 1 };
                match head::check(&self.rx, self.cfg.max_headers)? {
                    Parsed::Complete(n) if n > self.cfg.max_head_bytes => {
                        return Err(HttpCloseReason::HeadTooLarge);
                    }
                    Parsed::Complete(n) => return Ok(Some(n)),
                    // Only empty lines before the request so far: look for
                    // the next terminator.
                    Parsed::Partial if found.is_some() => continue,
                    Parsed::Partial => {}
                }
            }
            if self.rx.len() > self.cfg.max_head_bytes {
                return Err(HttpCloseReason::HeadTooLarge);
            }
            return Ok(None);
        }
    }

    fn on_head(&mut self, n: usize) {
        let bytes = self.rx.split_to(n).freeze();
        self.scan = Scan::default();
        self.checked = 0;
        let head = match head::parse(&bytes, self.cfg.max_headers) {
            Ok(h) => h,
            Err(reason) => return self.fail(reason),
        };
        let last = self.served.saturating_add(1) >= self.cfg.max_requests;
        let info = Info {
            answering: Answering {
                head: head.request.method() == http::Method::HEAD,
                version: head.request.version(),
            },
            keep_alive: self.cfg.keep_alive && head.keep_alive && !last,
            upgrade: head.upgrade,
        };
        self.timers.clear(Timer::Header);
        let body = match head.framing {
            Framing::None => return self.deliver(head.request, info, Bytes::new()),
            Framing::Length(n) => match usize::try_from(n) {
                Ok(n) if n <= self.cfg.max_body_bytes => BodyReader::Length(n),
                Ok(left) if left <= self.cfg.max_discard_bytes => {
                    if head.expect_continue && self.rx.is_empty() {
                        // Answer before the body is sent at all.
                        return self.deliver_oversized(head.request, info, n);
                    }
                    BodyReader::Discard { left, length: n }
                }
                _ => return self.fail(HttpCloseReason::BodyTooLarge),
            },
            Framing::Chunked => BodyReader::Chunked(Chunked::new()),
        };
        let discarding = matches!(body, BodyReader::Discard { .. });
        if head.expect_continue && self.rx.is_empty() && !discarding {
            self.queue_data(Bytes::from_static(response::CONTINUE));
            self.update_tx_timers();
        }
        self.timers
            .set(Timer::Body, self.now + self.cfg.body_timeout);
        self.state = State::Body(Box::new(BodyState {
            request: head.request,
            info,
            body,
        }));
    }

    /// Delivers a request whose oversized body was dropped (or never
    /// asked for): empty body, [`OversizedBody`] extension, and no
    /// keep-alive, since the client may still be sending.
    fn deliver_oversized(&mut self, mut request: Request<()>, mut info: Info, length: u64) {
        debug!(peer = %self.peer, length, "oversized request body dropped; delivering the head");
        request.extensions_mut().insert(OversizedBody { length });
        info.keep_alive = false;
        self.deliver(request, info, Bytes::new());
    }

    fn deliver(&mut self, request: Request<()>, info: Info, body: Bytes) {
        self.timers.clear(Timer::Header);
        self.timers.clear(Timer::Body);
        debug!(
            peer = %self.peer,
            method = %request.method(),
            path = bounded(request.uri().path(), 120),
            body = body.len(),
            "http request"
        );
        let (parts, ()) = request.into_parts();
        self.queue
            .push_back(Item::Event(HttpEvent::Request(Request::from_parts(
                parts, body,
            ))));
        self.state = State::Awaiting(info);
        if !info.keep_alive || self.rx.is_empty() {
            self.rx = BytesMut::new();
        }
    }

    fn fire_timers(&mut self) {
        while let Some(timer) = self.timers.pop_expired(self.now) {
            match timer {
                Timer::Header => {
                    if self.rx.is_empty() {
                        self.abort(HttpCloseReason::IdleTimedOut);
                    } else {
                        self.fail(HttpCloseReason::HeaderTimedOut);
                    }
                }
                Timer::Body => self.fail(HttpCloseReason::BodyTimedOut),
                Timer::Idle => self.abort(HttpCloseReason::IdleTimedOut),
                Timer::Send => self.abort(HttpCloseReason::SendTimedOut),
                Timer::Connect
                | Timer::Backoff
                | Timer::Heartbeat
                | Timer::Login
                | Timer::Auth
                | Timer::Request
                | Timer::Logout => {}
            }
        }
    }

    /// Response bytes ready to go, if the driver's queue has room.
    fn release(&mut self) -> Option<Bytes> {
        if self.backlog >= TX_WINDOW {
            return None;
        }
        let Some(Item::Data(data)) = self.queue.front_mut() else {
            return None;
        };
        let piece = if data.len() > TX_CHUNK {
            data.split_to(TX_CHUNK)
        } else {
            let piece = std::mem::take(data);
            self.queue.pop_front();
            piece
        };
        self.queued_bytes -= piece.len();
        self.last_progress = self.now;
        if self.queued_bytes == 0 {
            // The response is out: a pipelined request may be parsed now.
            self.process_rx();
        }
        self.update_tx_timers();
        Some(piece)
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn buffered(&self) -> (usize, usize, usize) {
        (self.rx.len(), self.queued_bytes, self.queue.len())
    }
}

impl Machine for HttpConn {
    type Event = HttpEvent;

    fn handle_input(&mut self, input: Input<'_>) {
        if self.finale > Finale::NotStarted {
            return;
        }
        self.now = self.now.max(input.now());
        match input {
            Input::Received(_, data) => self.on_received(data),
            Input::Closed(_) => self.abort(HttpCloseReason::PeerClosed),
            Input::Timeout(_) => {}
            Input::Connected(_) | Input::ConnectFailed(_) => {
                let input = input_kind(&input);
                debug!(peer = %self.peer, input, "input meaningless for an http connection ignored");
            }
        }
        self.fire_timers();
    }

    fn poll_output(&mut self) -> Output<HttpEvent> {
        match self.queue.front() {
            Some(Item::Event(_)) => {
                if let Some(Item::Event(e)) = self.queue.pop_front() {
                    return Output::Event(e);
                }
            }
            Some(Item::Data(_)) => {
                if let Some(piece) = self.release() {
                    return Output::Transmit(piece);
                }
                // The driver's queue is full: wait for `set_backlog`.
                return Output::Timeout(self.deadline());
            }
            None => {}
        }
        if let Some(reason) = self.closing {
            match self.finale {
                Finale::NotStarted => {
                    self.finale = Finale::CloseSent;
                    return Output::Close;
                }
                Finale::CloseSent => {
                    self.finale = Finale::EventSent;
                    self.timers.clear_all();
                    return Output::Event(HttpEvent::Closed(reason));
                }
                Finale::EventSent => return Output::Finished,
            }
        }
        if self.queue.capacity() > 0 {
            // Drained: an idle connection keeps no output queue.
            self.queue = VecDeque::new();
        }
        Output::Timeout(self.deadline())
    }

    fn set_backlog(&mut self, now: Instant, bytes: usize) {
        if self.finale > Finale::NotStarted || matches!(self.state, State::HandedOff) {
            return;
        }
        self.now = self.now.max(now);
        if bytes < self.backlog {
            self.last_progress = self.now;
        }
        self.backlog = bytes;
        if bytes > self.cfg.max_tx_bytes {
            self.abort(HttpCloseReason::SendBufferFull);
        }
        self.update_tx_timers();
        self.fire_timers();
    }
}

/// `s` cut to at most `max` bytes (at a character boundary), for log lines
/// quoting client input.
fn bounded(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl HttpConn {
    fn deadline(&self) -> Instant {
        self.timers.next().unwrap_or(self.now + QUIET_WAKEUP)
    }
}
