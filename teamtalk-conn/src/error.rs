//! Why a connection ended, and why an application call was refused.

use teamtalk_proto::{CommandKey, FrameError};

/// Why a machine closed its socket.
///
/// Inputs never return errors: every failure, whether the peer's, the
/// network's or a timer's, ends up as one of these in a close event
/// (`SessionEvent::Closed`, `LinkEvent::Down`, `LinkEvent::Unreachable`).
/// Keeping the reason typed lets daemons count and log closes by cause
/// instead of parsing strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// Nothing was received for the idle timeout (30 s between servers,
    /// 120 s for PC clients, 300 s for mobile clients).
    #[error("nothing received within the idle timeout")]
    TimedOut,
    /// A client did not complete its login within the login timeout (15 s).
    #[error("login not completed in time")]
    LoginTimedOut,
    /// An outbound connect did not complete within the connect timeout.
    #[error("connect timed out")]
    ConnectTimedOut,
    /// An outbound connect was refused or failed.
    #[error("connect failed")]
    ConnectFailed,
    /// The peer closed the socket, or reading or writing it failed.
    #[error("closed by the peer")]
    PeerClosed,
    /// The byte stream could not be split into PDUs.
    #[error("bad framing: {0}")]
    Frame(#[from] FrameError),
    /// A client sent this command before its login was accepted.
    ///
    /// TeamTalk clients send nothing but heartbeats while they wait for
    /// the login reply, so anything else is a misbehaving or hostile peer.
    #[error("command {0} before login")]
    Unauthenticated(CommandKey),
    /// A second login request arrived on the same connection.
    #[error("more than one login request on one connection")]
    DuplicateLogin,
    /// The application refused the login (`Session::reject_login`).
    #[error("login rejected")]
    LoginRejected,
    /// Outgoing bytes not yet accepted by the socket exceeded
    /// `max_tx_bytes`: the peer reads too slowly, and buffering more would
    /// only grow memory.
    #[error("send buffer full")]
    SendBufferFull,
    /// The application closed the connection.
    #[error("closed locally")]
    Local,
    /// The server sent a PDU the machine must understand (a login reply, a
    /// kick) whose body does not parse.
    #[error("malformed {0} from the peer")]
    Malformed(CommandKey),
    /// The server kicked this client (`CID_LOGIN_KICK_USER`): another
    /// login of the same user took its place.
    #[error("kicked by the server")]
    Kicked,
}

/// Why a PDU could not be queued for sending.
///
/// Only application calls return errors; they never change the machine's
/// state except for [`SendError::BufferFull`], which also closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// A link is not connected right now (connecting or backing off).
    /// TeamTalk drops such PDUs too; the application decides whether to
    /// retry after the next `LinkEvent::Up`.
    #[error("not connected")]
    NotConnected,
    /// The machine is closed or finished.
    #[error("connection closed")]
    Closed,
    /// The PDU is longer than the frame limit a peer with our settings
    /// would accept. Nothing was queued and the connection stays open.
    #[error("pdu of {len} bytes exceeds the frame limit of {max}")]
    TooLarge {
        /// Length of the PDU on the wire.
        len: usize,
        /// The configured frame limit.
        max: u32,
    },
    /// Queuing the PDU would exceed `max_tx_bytes`; the connection is now
    /// closing with [`CloseReason::SendBufferFull`].
    #[error("send buffer full")]
    BufferFull,
    /// A client is connected but its login is not complete (or it is
    /// logging out): the server would close a connection that sends
    /// anything else before its login is accepted.
    #[error("not logged in")]
    NotLoggedIn,
    /// A client already waits for the maximum number of replies; nothing
    /// was queued. Retry after a reply, time-out or failure event.
    #[error("{max} requests already wait for a reply")]
    TooManyPending {
        /// The configured cap (`ClientConfig::max_pending`).
        max: usize,
    },
}

/// Why `Session::accept_login` or `Session::reject_login` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// No login request is waiting for an answer: none arrived yet, it was
    /// already answered, or this session has no login gate.
    #[error("no login request is pending")]
    NotPending,
    /// The session closed (for example its login deadline passed) while
    /// the application was checking the credentials.
    #[error("session closed")]
    Closed,
}
