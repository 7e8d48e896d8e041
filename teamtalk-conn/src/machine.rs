//! The one driving contract every connection machine follows.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::error::CloseReason;

/// Something that happened to the connection, fed to [`Machine::handle_input`].
///
/// Every input carries the current time: machines never read a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input<'a> {
    /// The deadline from the last [`Output::Timeout`] has passed (or the
    /// driver woke up early: spurious timeouts are harmless no-ops).
    Timeout(Instant),
    /// A connect started by [`Output::Connect`] completed.
    Connected(Instant),
    /// A connect started by [`Output::Connect`] failed.
    ConnectFailed(Instant),
    /// Bytes read from the socket, in order. Borrowed: the machine copies
    /// what it keeps.
    Received(Instant, &'a [u8]),
    /// The peer closed the socket, or reading or writing it failed.
    Closed(Instant),
}

impl Input<'_> {
    /// The time the input carries.
    #[must_use]
    pub fn now(&self) -> Instant {
        match *self {
            Self::Timeout(t)
            | Self::Connected(t)
            | Self::ConnectFailed(t)
            | Self::Received(t, _)
            | Self::Closed(t) => t,
        }
    }
}

/// What the machine wants done, drained with [`Machine::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Output<E> {
    /// Write these bytes to the socket, after everything transmitted before.
    Transmit(Bytes),
    /// Open a TCP connection to this address (links only), then feed
    /// [`Input::Connected`] or [`Input::ConnectFailed`].
    Connect(SocketAddr),
    /// Shut the current socket down (after flushing what was transmitted).
    /// The machine may live on (a link then waits out its backoff).
    Close,
    /// Something for the application.
    Event(E),
    /// Nothing more to do now: call back with [`Input::Timeout`] at this
    /// instant, or earlier when other input arrives. Ends a drain.
    Timeout(Instant),
    /// The machine is done for good: drop it. Ends a drain; nothing
    /// follows.
    Finished,
}

/// A connection's protocol state: no sockets, no threads, no clock.
///
/// After **every** mutation (an input, or an application call such as
/// `send`), drain [`poll_output`](Machine::poll_output) until it returns
/// [`Output::Timeout`] or [`Output::Finished`].
pub trait Machine {
    /// Application events this machine raises.
    type Event;

    /// Feeds one input. Inputs never fail: failures surface as events
    /// carrying a typed close reason.
    fn handle_input(&mut self, input: Input<'_>);

    /// Returns the next thing to do. Ends a drain with
    /// [`Output::Timeout`] or [`Output::Finished`].
    fn poll_output(&mut self) -> Output<Self::Event>;

    /// Reports how many bytes, out of everything handed out with
    /// [`Output::Transmit`], the socket has not accepted yet.
    ///
    /// A sans-IO machine cannot see the socket, so the driver keeps the
    /// write queue and tells the machine its size whenever it changes
    /// (after a drain that transmitted, and after a write). The machine
    /// adds the bytes it still holds itself and closes with
    /// `CloseReason::SendBufferFull` when the sum exceeds its
    /// `max_tx_bytes`: a peer that stops reading must cost bounded memory.
    /// Like every mutation, follow it with a drain. The default does
    /// nothing, for machines without a send cap.
    fn set_backlog(&mut self, now: Instant, bytes: usize) {
        let _ = (now, bytes);
    }

    /// Whether the driver should read the socket now.
    ///
    /// Read backpressure: a machine that cannot take more input for the
    /// moment (a session whose application has too many of its requests
    /// in flight, see [`Session::pause_reading`](crate::Session::pause_reading))
    /// returns `false`, and the driver stops reading its socket. The bytes
    /// stay in the kernel's receive buffer; once it is full the peer's TCP
    /// window closes and the peer's writes block. Only that peer is slowed
    /// down: the rest of the process, and every other connection on the
    /// same driver, carry on.
    ///
    /// Drivers ask after every drain, and read again (first whatever is
    /// already in the kernel buffer) as soon as it turns `true`, which can
    /// only happen through a mutation (an application call, an input, a
    /// timeout), each of which is followed by a drain. While it is
    /// `false`:
    ///
    /// - no [`Input::Received`] is fed, except what is left of a read that
    ///   was being delivered when the machine paused (the machine keeps
    ///   those bytes and handles them when it reads again);
    /// - everything else goes on: transmits are written, deadlines fire,
    ///   [`Machine::set_backlog`] is reported;
    /// - the end of the stream is not seen (it is read like data), so a
    ///   peer that closes is noticed when reading resumes, or earlier when
    ///   a write fails or the socket reports an error (a reset).
    ///
    /// The default, `true`, always reads.
    fn wants_read(&self) -> bool {
        true
    }

    /// The layer carrying this machine's bytes failed for `reason` (a TLS
    /// alert, a rejected certificate, a handshake deadline: see
    /// [`Tls`](crate::tls::Tls)). Close the current connection as on
    /// [`Input::Closed`], but report `reason` instead of
    /// [`CloseReason::PeerClosed`]. Follow with a drain.
    ///
    /// The default treats it as [`Input::Closed`], so a machine that does
    /// not override it still closes, only with a less precise reason.
    fn transport_failed(&mut self, now: Instant, reason: CloseReason) {
        let _ = reason;
        self.handle_input(Input::Closed(now));
    }
}
