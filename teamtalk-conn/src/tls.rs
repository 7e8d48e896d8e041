//! [`Tls`]: runs any [`Machine`] over TLS with rustls's sans-IO
//! connection API.
//!
//! The wrapper sits between the driver and the machine. Bytes the driver
//! receives go into rustls (`read_tls`, `process_new_packets`); the
//! plaintext that comes out of `reader()` is what the inner machine sees
//! as [`Input::Received`]. What the inner machine transmits goes into
//! `writer()`, and the encrypted records (`write_tls`) are what the
//! wrapper transmits. Connects, closes, timeouts, events and `Finished`
//! pass through, so `Tls<Session>`, `Tls<Link>` (or any other machine)
//! behave exactly like the plain machine, with three differences:
//!
//! - **Client side** ([`Tls::client`]): the handshake starts on
//!   [`Input::Connected`], with a fresh rustls `ClientConnection` for every
//!   connection (a [`Link`](crate::Link) reconnects). The inner machine is
//!   told `Connected` only once the handshake completed and the server's
//!   certificate was verified, so a `Link` raises `Up` only over a secure
//!   channel, and its connect timeout also bounds the handshake.
//! - **Server side** ([`Tls::server`]): the handshake starts when the
//!   wrapper is built (at accept). Anything the inner machine transmits
//!   before it completes waits in the wrapper and counts towards the
//!   inner machine's send cap.
//! - **Failures** close with [`CloseReason::Tls`] carrying a
//!   [`TlsError`]: an alert from the peer, a certificate we rejected, bytes
//!   that are not TLS, a handshake not completed within the handshake
//!   timeout ([`DEFAULT_HANDSHAKE_TIMEOUT`], on both sides), or a peer that
//!   closed the socket mid-handshake. The wrapper tells the inner machine
//!   through [`Machine::transport_failed`].
//!
//! Read backpressure passes through: [`Machine::wants_read`] is the inner
//! machine's, except while a handshake is under way (it is always read).
//!
//! A close asked by the inner machine ([`Output::Close`]) sends a TLS
//! `close_notify` first; a `close_notify` from the peer reaches the inner
//! machine as [`Input::Closed`].
//!
//! # Clock and randomness
//!
//! The wrapper itself reads no clock: its only timer, the handshake
//! deadline, is computed from the instants passed in. rustls, however,
//! draws random numbers from its crypto provider (`ring`, which asks the
//! operating system) for key exchange and nonces, and reads the wall clock
//! (`SystemTime`) through its default time provider to check certificate
//! validity periods and session-ticket lifetimes. Both are inherent to
//! TLS; neither affects the machine's timing, which stays deterministic.

use std::collections::VecDeque;
use std::fmt;
use std::io::{Read, Write};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use tracing::debug;

use crate::error::CloseReason;
use crate::machine::{Input, Machine, Output};

#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// The rustls this crate is built with, for building configs and naming
/// certificates with the same types.
pub use rustls;

/// The crypto provider this project's TLS uses: `ring` (see the crate
/// docs for why). Build configs with it explicitly
/// (`ServerConfig::builder_with_provider(crypto_provider())`) rather than
/// relying on rustls's process-wide default, which panics when a second
/// provider is compiled in by another dependency.
#[must_use]
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Time a TLS handshake may take, from accept (server side) or from the
/// TCP connect (client side), before the connection is closed with
/// [`TlsError::HandshakeTimedOut`]. Shorter than TeamTalk's 15 s login
/// limit, so a client that never completes the handshake is gone before
/// the login rules even apply.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS ended a connection, carried by [`CloseReason::Tls`].
///
/// A small closed set rather than rustls's error: close reasons are
/// `Copy`, are counted by kind, and must never carry the peer's bytes.
/// The full rustls error is logged at debug level when it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The handshake did not complete within the handshake timeout.
    #[error("handshake not completed in time")]
    HandshakeTimedOut,
    /// The peer closed the socket before the handshake completed (for
    /// example a plaintext server that could not parse a `ClientHello`).
    #[error("peer closed the connection during the handshake")]
    ClosedDuringHandshake,
    /// The peer sent bytes that are not TLS records (for example a
    /// plaintext TeamTalk PDU on a TLS port).
    #[error("peer sent bytes that are not TLS")]
    NotTls,
    /// We rejected the peer's certificate: unknown issuer, expired, wrong
    /// name, or otherwise invalid.
    #[error("peer certificate rejected")]
    BadCertificate,
    /// We require a certificate (client authentication) and the peer sent
    /// none.
    #[error("peer presented no certificate")]
    NoCertificate,
    /// The peer sent a fatal alert with this TLS `AlertDescription` code
    /// (for example 48 `unknown_ca` when it rejected our certificate).
    #[error("fatal alert {} from the peer", alert_name(*.0))]
    Alert(u8),
    /// No protocol version, cipher suite, or other parameter in common.
    #[error("no TLS parameters in common with the peer")]
    Incompatible,
    /// The peer broke the TLS protocol (unexpected message, bad
    /// signature, record that fails to decrypt, …).
    #[error("peer violated the TLS protocol")]
    Protocol,
    /// Our configuration could not start a TLS connection.
    #[error("local TLS configuration error")]
    Config,
    /// Any other local failure inside rustls.
    #[error("internal TLS error")]
    Internal,
}

fn alert_name(code: u8) -> String {
    format!("{:?} ({code})", rustls::AlertDescription::from(code))
}

impl TlsError {
    /// Sorts a rustls error into its kind. Never keeps the error's text,
    /// which may describe what the peer sent.
    fn from_rustls(e: &rustls::Error) -> Self {
        use rustls::Error as E;
        match e {
            E::InvalidMessage(_) | E::PeerSentOversizedRecord => Self::NotTls,
            E::InvalidCertificate(_) | E::InvalidCertRevocationList(_) => Self::BadCertificate,
            E::NoCertificatesPresented => Self::NoCertificate,
            E::AlertReceived(alert) => Self::Alert(u8::from(*alert)),
            E::PeerIncompatible(_) | E::NoApplicationProtocol | E::UnsupportedNameType => {
                Self::Incompatible
            }
            E::PeerMisbehaved(_)
            | E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. }
            | E::DecryptError
            | E::InvalidEncryptedClientHello(_) => Self::Protocol,
            E::InconsistentKeys(_) | E::BadMaxFragmentSize => Self::Config,
            _ => Self::Internal,
        }
    }
}

/// Which end of the handshake the wrapper plays.
enum Side {
    Server(Arc<ServerConfig>),
    Client {
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    },
}

/// A [`Machine`] running over TLS: the same events and application calls
/// as `M` (reach them through `Deref`, [`Tls::inner`] or
/// [`Tls::inner_mut`]), with encrypted bytes on the wire. See the
/// [module docs](self).
pub struct Tls<M: Machine> {
    inner: M,
    side: Side,
    /// The rustls connection of the current socket; `None` between
    /// sockets and after a failure or a close.
    conn: Option<Connection>,
    /// The current connection completed its handshake (and, client side,
    /// the inner machine was told `Connected`).
    established: bool,
    /// Plaintext the inner machine transmitted before the handshake
    /// completed. Held here rather than in rustls so it can be counted.
    pending: BytesMut,
    /// Outputs ready for the driver, in order.
    out: VecDeque<Output<M::Event>>,
    now: Instant,
    handshake_timeout: Duration,
    /// When the current handshake started (server: at accept).
    handshake_started: Option<Instant>,
    /// The unsent bytes the driver last reported.
    driver_backlog: usize,
    finished: bool,
}

impl<M: Machine> fmt::Debug for Tls<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field(
                "side",
                &match self.side {
                    Side::Server(_) => "server",
                    Side::Client { .. } => "client",
                },
            )
            .field("connected", &self.conn.is_some())
            .field("established", &self.established)
            .field("pending", &self.pending.len())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl<M: Machine> Tls<M> {
    /// The server end of a connection just accepted: the handshake starts
    /// now, and must complete within [`DEFAULT_HANDSHAKE_TIMEOUT`].
    ///
    /// Never fails: a `config` rustls refuses to start a connection with
    /// closes the connection at the first drain with
    /// [`TlsError::Config`], so the reactor's `Fn(peer, now) -> M`
    /// factories can build it directly.
    pub fn server(config: Arc<ServerConfig>, inner: M, now: Instant) -> Self {
        let mut tls = Self::new(Side::Server(config), inner, now);
        tls.start_handshake();
        tls
    }

    /// The client end: `server_name` is the name (or IP address) the
    /// server's certificate must match. The handshake starts on every
    /// [`Input::Connected`], so a [`Link`](crate::Link) gets a fresh TLS
    /// session for each reconnect.
    pub fn client(
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        inner: M,
        now: Instant,
    ) -> Self {
        let side = Side::Client {
            config,
            name: server_name,
        };
        Self::new(side, inner, now)
    }

    fn new(side: Side, inner: M, now: Instant) -> Self {
        Self {
            inner,
            side,
            conn: None,
            established: false,
            pending: BytesMut::new(),
            out: VecDeque::new(),
            now,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            handshake_started: None,
            driver_backlog: 0,
            finished: false,
        }
    }

    /// Replaces the handshake timeout (also for a handshake already
    /// under way, counted from its start). At least 1 ms, so the deadline
    /// is always later than the input that started the handshake.
    #[must_use]
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The wrapped machine.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// The wrapped machine, for application calls (`send`, `close`, …).
    /// Drain the wrapper afterwards, as after any mutation.
    pub fn inner_mut(&mut self) -> &mut M {
        &mut self.inner
    }

    /// Whether a handshake is under way on the current socket.
    #[must_use]
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_some() && !self.established
    }

    /// Whether the current socket completed its handshake.
    #[must_use]
    pub fn is_established(&self) -> bool {
        self.conn.is_some() && self.established
    }

    /// The certificate chain the peer presented on the current socket
    /// (the server's, or a client's when client authentication is on).
    #[must_use]
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.as_ref()?.peer_certificates()
    }

    /// Plaintext waiting for the handshake (for the fuzz checks).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The handshake deadline, while a handshake is under way.
    fn handshake_deadline(&self) -> Option<Instant> {
        if self.is_handshaking() {
            self.handshake_started.map(|t| t + self.handshake_timeout)
        } else {
            None
        }
    }

    /// Starts a fresh rustls connection for a new socket.
    fn start_handshake(&mut self) {
        self.reset_conn();
        let conn = match &self.side {
            Side::Server(config) => ServerConnection::new(Arc::clone(config)).map(Connection::from),
            Side::Client { config, name } => {
                ClientConnection::new(Arc::clone(config), name.clone()).map(Connection::from)
            }
        };
        match conn {
            Ok(mut conn) => {
                // What the inner machine transmits is already bounded by its
                // send cap (and counted through `set_backlog`), and the
                // records are handed out at once: rustls's own 64 KiB limit
                // would only split writes.
                conn.set_buffer_limit(None);
                self.conn = Some(conn);
                self.handshake_started = Some(self.now);
                self.flush_tls();
            }
            Err(e) => {
                debug!(error = %e, "TLS connection not started");
                self.fail(TlsError::Config);
            }
        }
    }

    /// Forgets the current socket's TLS state.
    fn reset_conn(&mut self) {
        self.conn = None;
        self.established = false;
        self.handshake_started = None;
        if !self.pending.is_empty() {
            self.pending = BytesMut::new();
            self.report_backlog();
        }
    }

    /// Moves every TLS record rustls has ready into one `Transmit`.
    fn flush_tls(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let mut buf = Vec::new();
        while conn.wants_write() {
            // Writing into a Vec cannot fail; `Ok(0)` would mean nothing left.
            match conn.write_tls(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if !buf.is_empty() {
            self.out.push_back(Output::Transmit(Bytes::from(buf)));
        }
    }

    /// TLS failed on the current socket: send whatever alert rustls
    /// queued, drop the connection and let the inner machine close with a
    /// typed reason.
    fn fail(&mut self, error: TlsError) {
        debug!(%error, "TLS connection failed");
        self.flush_tls();
        self.reset_conn();
        let now = self.now;
        self.feed(|m| m.transport_failed(now, CloseReason::Tls(error)));
    }

    /// Applies one mutation to the inner machine, then drains it.
    fn feed(&mut self, f: impl FnOnce(&mut M)) {
        f(&mut self.inner);
        self.pump();
    }

    /// Tells the inner machine its unsent bytes: the driver's plus the
    /// plaintext waiting here for the handshake.
    fn report_backlog(&mut self) {
        let total = self.driver_backlog.saturating_add(self.pending.len());
        self.inner.set_backlog(self.now, total);
    }

    /// Drains the inner machine into `out`, returning its next deadline
    /// (`None` once it finished).
    fn pump(&mut self) -> Option<Instant> {
        loop {
            match self.inner.poll_output() {
                Output::Transmit(bytes) => self.send_plaintext(&bytes),
                Output::Connect(addr) => {
                    self.reset_conn();
                    self.out.push_back(Output::Connect(addr));
                }
                Output::Close => {
                    if let Some(conn) = self.conn.as_mut() {
                        conn.send_close_notify();
                        self.flush_tls();
                    }
                    self.reset_conn();
                    self.out.push_back(Output::Close);
                }
                Output::Event(e) => self.out.push_back(Output::Event(e)),
                Output::Timeout(t) => return Some(t),
                Output::Finished => {
                    self.reset_conn();
                    if !self.finished {
                        self.finished = true;
                        self.out.push_back(Output::Finished);
                    }
                    return None;
                }
            }
        }
    }

    /// Encrypts what the inner machine transmitted, or holds it until the
    /// handshake completes.
    fn send_plaintext(&mut self, bytes: &[u8]) {
        let Some(conn) = self.conn.as_mut() else {
            debug!(len = bytes.len(), "plaintext dropped: no TLS connection");
            return;
        };
        if !self.established {
            self.pending.extend_from_slice(bytes);
            self.report_backlog();
            return;
        }
        // No buffer limit is set, so the writer takes everything.
        if conn.writer().write_all(bytes).is_err() {
            self.fail(TlsError::Internal);
            return;
        }
        self.flush_tls();
    }

    /// The handshake on the current socket just completed.
    fn on_established(&mut self) {
        self.established = true;
        self.handshake_started = None;
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            self.report_backlog();
            if let Some(conn) = self.conn.as_mut()
                && conn.writer().write_all(&pending).is_err()
            {
                self.fail(TlsError::Internal);
                return;
            }
            self.flush_tls();
        }
        if matches!(self.side, Side::Client { .. }) {
            let now = self.now;
            self.feed(|m| m.handle_input(Input::Connected(now)));
        }
    }

    fn on_received(&mut self, data: &[u8]) {
        let Some(conn) = self.conn.as_mut() else {
            debug!(len = data.len(), "bytes without a TLS connection dropped");
            return;
        };
        let mut rest = data;
        let mut plaintext = Vec::new();
        let mut peer_closed = false;
        let mut error = None;
        while !rest.is_empty() {
            match conn.read_tls(&mut rest) {
                // A close_notify was received: nothing more is read.
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    // Only rustls's own refusals (a record too large to
                    // buffer): reading a slice cannot fail.
                    debug!(error = %e, "TLS bytes refused");
                    error = Some(TlsError::NotTls);
                    break;
                }
            }
            match conn.process_new_packets() {
                Ok(state) => {
                    let n = state.plaintext_bytes_to_read();
                    if n > 0 {
                        let start = plaintext.len();
                        plaintext.resize(start + n, 0);
                        if conn.reader().read_exact(&mut plaintext[start..]).is_err() {
                            plaintext.truncate(start);
                            error = Some(TlsError::Internal);
                            break;
                        }
                    }
                    peer_closed |= state.peer_has_closed();
                }
                Err(e) => {
                    debug!(error = %e, "TLS error");
                    error = Some(TlsError::from_rustls(&e));
                    break;
                }
            }
        }
        let handshake_done = error.is_none() && !self.established && !conn.is_handshaking();
        // Handshake replies, alerts, tickets.
        self.flush_tls();
        if handshake_done {
            self.on_established();
        }
        let now = self.now;
        // Authenticated plaintext that came before an error is still
        // delivered.
        if !plaintext.is_empty() && self.established {
            self.feed(|m| m.handle_input(Input::Received(now, &plaintext)));
        }
        if let Some(error) = error {
            if self.conn.is_some() {
                self.fail(error);
            }
        } else if peer_closed && self.conn.is_some() {
            self.feed(|m| m.handle_input(Input::Closed(now)));
        }
    }

    /// Advances the clock and fires the handshake deadline if it passed.
    fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.handshake_deadline().is_some_and(|d| d <= self.now) {
            self.fail(TlsError::HandshakeTimedOut);
        }
    }
}

impl<M: Machine> Deref for Tls<M> {
    type Target = M;

    fn deref(&self) -> &M {
        &self.inner
    }
}

impl<M: Machine> DerefMut for Tls<M> {
    fn deref_mut(&mut self) -> &mut M {
        &mut self.inner
    }
}

impl<M: Machine> Machine for Tls<M> {
    type Event = M::Event;

    fn handle_input(&mut self, input: Input<'_>) {
        if self.finished {
            return;
        }
        self.tick(input.now());
        let now = self.now;
        match input {
            Input::Received(_, data) => self.on_received(data),
            Input::Connected(_) if matches!(self.side, Side::Client { .. }) => {
                // The inner machine hears of it once the handshake is done.
                self.start_handshake();
            }
            Input::Closed(_) if self.is_handshaking() => {
                self.reset_conn();
                self.feed(|m| {
                    m.transport_failed(now, CloseReason::Tls(TlsError::ClosedDuringHandshake));
                });
            }
            Input::Closed(_) | Input::ConnectFailed(_) => {
                self.reset_conn();
                self.feed(|m| m.handle_input(input));
            }
            Input::Connected(_) | Input::Timeout(_) => self.feed(|m| m.handle_input(input)),
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
            // Drained: an idle connection keeps no output queue.
            self.out = VecDeque::new();
        }
        match (next, self.handshake_deadline()) {
            (Some(t), Some(h)) => Output::Timeout(t.min(h)),
            (Some(t), None) => Output::Timeout(t),
            // `pump` queued `Finished`, already returned above.
            (None, _) => Output::Finished,
        }
    }

    /// The inner machine's wish, except during a handshake: the
    /// handshake must be read to complete (or time out), whatever the
    /// inner machine wants. Plaintext that comes with its last flight is
    /// handed to the inner machine, which holds it while paused.
    fn wants_read(&self) -> bool {
        self.is_handshaking() || self.inner.wants_read()
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
        self.reset_conn();
        self.feed(|m| m.transport_failed(now, reason));
    }
}
