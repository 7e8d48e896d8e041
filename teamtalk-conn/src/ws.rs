//! [`Ws`]: runs a server-side [`Machine`] (a client [`Session`](crate::Session))
//! over WebSocket, so a browser speaks TeamTalk.
//!
//! Browsers cannot open raw TCP. Over WebSocket, each **binary message
//! carries exactly one TeamTalk PDU** (its 16-byte header and protobuf
//! body), in both directions; the session inside is the same machine with
//! the same rules (login gate, limits, heartbeats) as on the TCP port. The
//! wrapper sits between the driver and the machine like
//! [`Tls`](crate::Tls): it answers the HTTP upgrade, unwraps each binary
//! message into the bytes the inner machine receives, and wraps what the
//! inner machine transmits, one message per PDU.
//!
//! The framing and the upgrade handshake are tungstenite's, driven over
//! in-memory buffers ([`Pipe`]): nothing here reads a socket or a clock.
//!
//! Strict where browsers give us the choice:
//!
//! - **Origin.** A request carrying an `Origin` header (every browser
//!   sends one) is accepted only from an origin in [`WsConfig::origins`]
//!   (`403` otherwise), so a page on another site cannot open a session
//!   with a user's network position. A request without `Origin` comes from
//!   a non-browser program and is accepted.
//! - **Handshake bounds.** The request head is limited to
//!   [`MAX_HANDSHAKE_BYTES`] and must complete within the handshake
//!   timeout ([`DEFAULT_WS_HANDSHAKE_TIMEOUT`]).
//! - **Messages.** Text messages are refused (close 1003), as is a binary
//!   message that is not exactly one PDU (close 1008: a header whose
//!   length disagrees with the message, two PDUs in one message, or half a
//!   PDU); a message or frame over the PDU limit closes with 1009.
//!   Pings are answered by tungstenite; a close from the browser reaches
//!   the inner machine as [`Input::Closed`].
//!
//! Failures close with [`CloseReason::WebSocket`] carrying a [`WsError`];
//! a close the inner machine asks for sends a close frame first. Read
//! backpressure passes through ([`Machine::wants_read`]), and the driver's
//! unsent bytes reach the inner machine's send cap through
//! [`Machine::set_backlog`], so a browser that stops reading is closed like
//! any slow TCP client.
//!
//! For wss, wrap the whole: `Tls<Ws<Session>>`.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use teamtalk_proto::{DEFAULT_MAX_PDU_LEN, Header};
use tracing::debug;
use tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response};
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Message, ServerHandshake, WebSocket};

use crate::error::CloseReason;
use crate::machine::{Input, Machine, Output};

/// Largest upgrade request head accepted (browsers send well under 2 KiB).
pub const MAX_HANDSHAKE_BYTES: usize = 8192;

/// Time a client has to complete the upgrade.
pub const DEFAULT_WS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a WebSocket port accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WsConfig {
    /// Web origins allowed to connect (`https://chat.example.com`,
    /// `http://127.0.0.1:8080`), compared exactly, case-insensitively;
    /// [`WsOrigins::Any`] accepts every origin.
    pub origins: WsOrigins,
    /// Largest PDU (and so WebSocket message) accepted.
    pub max_pdu_len: u32,
    /// Time the upgrade must complete in.
    pub handshake_timeout: Duration,
}

impl WsConfig {
    /// Accepts pages of `origins`, with the PDU limit and handshake
    /// timeout of TeamTalk's client port.
    #[must_use]
    pub fn new(origins: WsOrigins) -> Self {
        Self {
            origins,
            max_pdu_len: DEFAULT_MAX_PDU_LEN,
            handshake_timeout: DEFAULT_WS_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Which web origins may open a WebSocket session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsOrigins {
    /// Any page on any site (`WebSocketOrigins=*`): only for deployments
    /// where the session needs no protection from other sites' pages.
    Any,
    /// Exactly these origins (scheme, host and port as the browser sends
    /// them, e.g. `http://127.0.0.1:8080`).
    List(Arc<[String]>),
}

impl WsOrigins {
    /// Whether a request with this `Origin` header may connect; a request
    /// without one (not a browser) may.
    #[must_use]
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match (self, origin) {
            (_, None) | (Self::Any, _) => true,
            (Self::List(list), Some(o)) => {
                let o = o.trim().trim_end_matches('/');
                list.iter()
                    .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(o))
            }
        }
    }
}

/// Why a WebSocket connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WsError {
    /// The upgrade request was not a valid WebSocket upgrade.
    #[error("not a WebSocket upgrade")]
    BadUpgrade,
    /// The request's `Origin` is not an allowed origin.
    #[error("origin not allowed")]
    Origin,
    /// The upgrade request head exceeded [`MAX_HANDSHAKE_BYTES`].
    #[error("upgrade request too large")]
    HandshakeTooLarge,
    /// The upgrade did not complete within the handshake timeout.
    #[error("upgrade not completed in time")]
    HandshakeTimedOut,
    /// A text message (TeamTalk is binary).
    #[error("text message")]
    Text,
    /// A binary message that is not exactly one PDU.
    #[error("message is not exactly one PDU")]
    NotOnePdu,
    /// A message or frame over the PDU limit.
    #[error("message too large")]
    TooLarge,
    /// Bytes that break the WebSocket protocol (unmasked frames, bad
    /// opcodes, bad close codes, invalid UTF-8 in a close reason…).
    #[error("WebSocket protocol violation")]
    Protocol,
    /// The inner machine transmitted bytes that are not whole PDUs (a bug).
    #[error("internal error")]
    Internal,
}

/// The in-memory stream tungstenite reads and writes: bytes the driver
/// delivered, and bytes waiting to be transmitted.
#[derive(Debug, Default)]
pub struct Pipe {
    inbound: BytesMut,
    outbound: Vec<u8>,
}

impl Pipe {
    /// Bytes waiting to be read (a test's or a client's end pushes here).
    pub fn inbound_mut(&mut self) -> &mut BytesMut {
        &mut self.inbound
    }

    /// Bytes written and not yet taken.
    pub fn outbound_mut(&mut self) -> &mut Vec<u8> {
        &mut self.outbound
    }
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inbound.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.inbound.len());
        buf[..n].copy_from_slice(&self.inbound[..n]);
        self.inbound.advance(n);
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbound.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The handshake callback: checks `Origin` (the rest of the upgrade is
/// checked by tungstenite).
#[derive(Debug, Clone)]
pub struct OriginCheck(WsOrigins);

impl Callback for OriginCheck {
    fn on_request(self, request: &Request, response: Response) -> Result<Response, ErrorResponse> {
        let origin = request
            .headers()
            .get("origin")
            .map(|v| v.to_str().unwrap_or("\u{fffd}"));
        if self.0.allows(origin) {
            Ok(response)
        } else {
            let mut refusal = ErrorResponse::new(Some("origin not allowed\n".to_owned()));
            *refusal.status_mut() = tungstenite::http::StatusCode::FORBIDDEN;
            Err(refusal)
        }
    }
}

type Handshake = MidHandshake<ServerHandshake<Pipe, OriginCheck>>;

enum State {
    /// Reading the upgrade request.
    Upgrading {
        /// `None` only while a step of it runs. Boxed: it is large and
        /// lives only for the upgrade.
        handshake: Option<Box<Handshake>>,
        /// Request bytes received so far.
        head: BytesMut,
    },
    /// Upgraded: binary messages both ways.
    Open(Box<WebSocket<Pipe>>),
    /// Failed or closed: nothing more goes in or out.
    Done,
}

/// A [`Machine`] served over WebSocket: the same events and application
/// calls as `M` (through `Deref`, [`Ws::inner`] or [`Ws::inner_mut`]).
/// See the [module docs](self).
pub struct Ws<M: Machine> {
    inner: M,
    state: State,
    config: WsConfig,
    /// What the inner machine transmitted that is not a whole PDU yet, or
    /// that waits for the upgrade to complete.
    pending: BytesMut,
    out: VecDeque<Output<M::Event>>,
    now: Instant,
    started: Instant,
    driver_backlog: usize,
    finished: bool,
}

impl<M: Machine> fmt::Debug for Ws<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ws")
            .field(
                "state",
                &match self.state {
                    State::Upgrading { .. } => "upgrading",
                    State::Open(_) => "open",
                    State::Done => "done",
                },
            )
            .field("pending", &self.pending.len())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl<M: Machine> Ws<M> {
    /// The server end of a connection just accepted: the upgrade request
    /// is expected now.
    pub fn server(config: WsConfig, inner: M, now: Instant) -> Self {
        let ws_config = WebSocketConfig::default()
            // A session reads a few small PDUs; 4 KiB (tungstenite's read
            // chunk) instead of its 128 KiB default keeps idle browsers
            // cheap.
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_message_size(Some(config.max_pdu_len as usize))
            .max_frame_size(Some(config.max_pdu_len as usize));
        let handshake = ServerHandshake::start(
            Pipe::default(),
            OriginCheck(config.origins.clone()),
            Some(ws_config),
        );
        Self {
            inner,
            state: State::Upgrading {
                handshake: Some(Box::new(handshake)),
                head: BytesMut::new(),
            },
            config,
            pending: BytesMut::new(),
            out: VecDeque::new(),
            now,
            started: now,
            driver_backlog: 0,
            finished: false,
        }
    }

    /// The wrapped machine.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// The wrapped machine, for application calls. Drain the wrapper
    /// afterwards, as after any mutation.
    pub fn inner_mut(&mut self) -> &mut M {
        &mut self.inner
    }

    /// Whether the upgrade completed.
    #[must_use]
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    fn handshake_deadline(&self) -> Option<Instant> {
        matches!(self.state, State::Upgrading { .. })
            .then(|| self.started + self.config.handshake_timeout)
    }

    fn transmit(&mut self, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            self.out.push_back(Output::Transmit(Bytes::from(bytes)));
        }
    }

    /// Moves what tungstenite wrote into a `Transmit`.
    fn flush_ws(&mut self) {
        if let State::Open(ws) = &mut self.state {
            // Writing into the pipe never blocks, so a flush completes.
            let _ = ws.flush();
            let bytes = std::mem::take(&mut ws.get_mut().outbound);
            self.transmit(bytes);
        }
    }

    /// Fails the connection: a close frame (or the HTTP refusal already
    /// written), then the inner machine closes with the reason.
    fn fail(&mut self, error: WsError, code: Option<CloseCode>) {
        debug!(%error, "WebSocket connection failed");
        if let (State::Open(ws), Some(code)) = (&mut self.state, code) {
            let _ = ws.close(Some(CloseFrame {
                code,
                reason: error.to_string().into(),
            }));
        }
        self.flush_ws();
        self.state = State::Done;
        self.pending = BytesMut::new();
        let now = self.now;
        self.feed(|m| m.transport_failed(now, CloseReason::WebSocket(error)));
    }

    fn feed(&mut self, f: impl FnOnce(&mut M)) {
        f(&mut self.inner);
        self.pump();
    }

    fn report_backlog(&mut self) {
        let total = self.driver_backlog.saturating_add(self.pending.len());
        self.inner.set_backlog(self.now, total);
    }

    /// Drains the inner machine; returns its next deadline (`None` once it
    /// finished).
    fn pump(&mut self) -> Option<Instant> {
        loop {
            match self.inner.poll_output() {
                Output::Transmit(bytes) => self.send_plaintext(&bytes),
                Output::Close => {
                    if let State::Open(ws) = &mut self.state {
                        let _ = ws.close(Some(CloseFrame {
                            code: CloseCode::Normal,
                            reason: "".into(),
                        }));
                        self.flush_ws();
                    }
                    self.state = State::Done;
                    self.out.push_back(Output::Close);
                }
                Output::Connect(addr) => self.out.push_back(Output::Connect(addr)),
                Output::Event(e) => self.out.push_back(Output::Event(e)),
                Output::Timeout(t) => return Some(t),
                Output::Finished => {
                    self.state = State::Done;
                    if !self.finished {
                        self.finished = true;
                        self.out.push_back(Output::Finished);
                    }
                    return None;
                }
            }
        }
    }

    /// Wraps what the inner machine transmitted, one message per PDU; holds
    /// it until the upgrade completes.
    fn send_plaintext(&mut self, bytes: &[u8]) {
        match self.state {
            State::Done => {
                debug!(
                    len = bytes.len(),
                    "bytes after the WebSocket closed dropped"
                );
                return;
            }
            State::Upgrading { .. } => {
                self.pending.extend_from_slice(bytes);
                self.report_backlog();
                return;
            }
            State::Open(_) => {}
        }
        self.pending.extend_from_slice(bytes);
        self.send_pending();
    }

    /// Sends every whole PDU waiting in `pending`.
    fn send_pending(&mut self) {
        let had = self.pending.len();
        while let Some(len) = pdu_len(&self.pending) {
            if len < Header::LEN || len > self.config.max_pdu_len as usize {
                self.fail(WsError::Internal, Some(CloseCode::Error));
                return;
            }
            if self.pending.len() < len {
                break;
            }
            let pdu = self.pending.split_to(len).freeze();
            let State::Open(ws) = &mut self.state else {
                return;
            };
            if ws.write(Message::Binary(pdu)).is_err() {
                self.fail(WsError::Internal, None);
                return;
            }
        }
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = BytesMut::new();
        }
        if had != self.pending.len() {
            self.report_backlog();
        }
        self.flush_ws();
    }

    fn on_received(&mut self, data: &[u8]) {
        match &mut self.state {
            State::Done => debug!(len = data.len(), "bytes after the WebSocket closed dropped"),
            State::Upgrading { handshake, head } => {
                head.extend_from_slice(data);
                // tungstenite sees the request head alone, once complete;
                // bytes after it (a client that did not wait for the 101)
                // are the first frames.
                let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                    if head.len() > MAX_HANDSHAKE_BYTES {
                        self.fail(WsError::HandshakeTooLarge, None);
                    }
                    return;
                };
                if end + 4 > MAX_HANDSHAKE_BYTES {
                    self.fail(WsError::HandshakeTooLarge, None);
                    return;
                }
                let request = head.split_to(end + 4);
                let tail = std::mem::take(head);
                let Some(mut mid) = handshake.take() else {
                    return;
                };
                mid.get_mut().get_mut().inbound.extend_from_slice(&request);
                match (*mid).handshake() {
                    Ok(mut ws) => {
                        let response = std::mem::take(&mut ws.get_mut().outbound);
                        self.transmit(response);
                        ws.get_mut().inbound = tail;
                        self.state = State::Open(Box::new(ws));
                        self.report_backlog();
                        self.send_pending();
                        self.read_messages();
                    }
                    Err(e) => {
                        // tungstenite's own refusal went into the pipe the
                        // failed handshake consumed: answer here, then
                        // close. (`Interrupted` cannot happen with the
                        // whole head in: treated as a bad request.)
                        let (status, error) = match &e {
                            HandshakeError::Failure(tungstenite::Error::Http(r))
                                if r.status() == tungstenite::http::StatusCode::FORBIDDEN =>
                            {
                                ("403 Forbidden", WsError::Origin)
                            }
                            _ => ("400 Bad Request", WsError::BadUpgrade),
                        };
                        debug!(error = %e, "WebSocket upgrade refused");
                        self.transmit(
                            format!(
                                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            )
                            .into_bytes(),
                        );
                        self.fail(error, None);
                    }
                }
            }
            State::Open(ws) => {
                ws.get_mut().inbound.extend_from_slice(data);
                self.read_messages();
            }
        }
    }

    /// Hands every complete message to the inner machine.
    fn read_messages(&mut self) {
        loop {
            let State::Open(ws) = &mut self.state else {
                return;
            };
            match ws.read() {
                Ok(Message::Binary(pdu)) => {
                    if pdu_len(&pdu) != Some(pdu.len()) {
                        self.fail(WsError::NotOnePdu, Some(CloseCode::Policy));
                        return;
                    }
                    let now = self.now;
                    self.feed(|m| m.handle_input(Input::Received(now, &pdu[..])));
                }
                Ok(Message::Text(_)) => {
                    self.fail(WsError::Text, Some(CloseCode::Unsupported));
                    return;
                }
                Ok(Message::Close(_)) => {
                    // tungstenite queued the close reply.
                    self.flush_ws();
                    self.state = State::Done;
                    let now = self.now;
                    self.feed(|m| m.handle_input(Input::Closed(now)));
                    return;
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(tungstenite::Error::Capacity(_)) => {
                    self.fail(WsError::TooLarge, Some(CloseCode::Size));
                    return;
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    self.state = State::Done;
                    let now = self.now;
                    self.feed(|m| m.handle_input(Input::Closed(now)));
                    return;
                }
                Err(e) => {
                    debug!(error = %e, "WebSocket protocol error");
                    self.fail(WsError::Protocol, Some(CloseCode::Protocol));
                    return;
                }
            }
        }
        // Pongs tungstenite queued while reading.
        self.flush_ws();
    }

    fn tick(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }
}

/// The length a PDU's header announces, once its first four bytes are in.
fn pdu_len(bytes: &[u8]) -> Option<usize> {
    let head: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(head)).ok()
}

impl<M: Machine> Deref for Ws<M> {
    type Target = M;

    fn deref(&self) -> &M {
        &self.inner
    }
}

impl<M: Machine> DerefMut for Ws<M> {
    fn deref_mut(&mut self) -> &mut M {
        &mut self.inner
    }
}

impl<M: Machine> Machine for Ws<M> {
    type Event = M::Event;

    fn handle_input(&mut self, input: Input<'_>) {
        if self.finished {
            return;
        }
        self.tick(input.now());
        match input {
            Input::Received(_, data) => self.on_received(data),
            Input::Timeout(now) => {
                if self.handshake_deadline().is_some_and(|d| now >= d) {
                    self.fail(WsError::HandshakeTimedOut, None);
                } else {
                    self.feed(|m| m.handle_input(input));
                }
            }
            Input::Closed(_) | Input::ConnectFailed(_) => {
                self.state = State::Done;
                self.feed(|m| m.handle_input(input));
            }
            Input::Connected(_) => self.feed(|m| m.handle_input(input)),
        }
    }

    fn poll_output(&mut self) -> Output<M::Event> {
        if let Some(out) = self.out.pop_front() {
            return out;
        }
        if self.finished {
            return Output::Finished;
        }
        let next = self.pump();
        if let Some(out) = self.out.pop_front() {
            return out;
        }
        if self.out.capacity() > 0 {
            self.out = VecDeque::new();
        }
        match (next, self.handshake_deadline()) {
            (Some(t), Some(h)) => Output::Timeout(t.min(h)),
            (Some(t), None) => Output::Timeout(t),
            (None, _) => Output::Finished,
        }
    }

    /// The upgrade is always read; afterwards the inner machine decides.
    fn wants_read(&self) -> bool {
        matches!(self.state, State::Upgrading { .. }) || self.inner.wants_read()
    }

    fn set_backlog(&mut self, now: Instant, bytes: usize) {
        if self.finished {
            return;
        }
        self.tick(now);
        self.driver_backlog = bytes;
        self.report_backlog();
    }

    fn transport_failed(&mut self, now: Instant, reason: CloseReason) {
        if self.finished {
            return;
        }
        self.tick(now);
        self.state = State::Done;
        self.feed(|m| m.transport_failed(now, reason));
    }
}
