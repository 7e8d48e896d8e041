//! Why a connection ended, and why an application call was refused.

use teamtalk_proto::{CommandKey, FrameError};

use crate::tls::TlsError;
use crate::ws::WsError;

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
    /// Link authentication failed (see [`crate::auth`]): the peer does not
    /// hold the cluster secret, refused ours, or did not finish the
    /// handshake in time. A peer that sent an ordinary command instead of
    /// the handshake closes with [`CloseReason::Unauthenticated`] instead.
    #[error("link authentication failed: {0}")]
    AuthFailed(AuthFailure),
    /// TLS failed: an alert, a rejected certificate, bytes that are not
    /// TLS, or a handshake that did not complete in time (only for
    /// machines wrapped in [`Tls`](crate::tls::Tls)).
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// WebSocket failed: a refused upgrade, a text message, a message that
    /// is not one PDU, a protocol violation (only for machines wrapped in
    /// [`Ws`](crate::ws::Ws)).
    #[error("WebSocket: {0}")]
    WebSocket(#[from] WsError),
    /// The server sent a PDU the machine must understand (a login reply, a
    /// kick) whose body does not parse.
    #[error("malformed {0} from the peer")]
    Malformed(CommandKey),
    /// The server kicked this client (`CID_LOGIN_KICK_USER`): another
    /// login of the same user took its place.
    #[error("kicked by the server")]
    Kicked,
}

/// Why a link-authentication handshake failed (inside
/// [`CloseReason::AuthFailed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The peer's proof did not verify: it does not hold our secret, or it
    /// replayed or reflected a proof from another handshake, or the bytes
    /// were altered on the way.
    #[error("the peer's proof is wrong")]
    BadProof,
    /// The peer's hello names another key id: it is configured with
    /// another secret.
    #[error("the peer uses another cluster key")]
    UnknownKey,
    /// The peer's hello asks for a handshake version we do not speak.
    #[error("the peer asks for handshake version {0}")]
    Version(u32),
    /// A handshake message did not decode, had a nonce or proof of the
    /// wrong length, or came when no handshake was in progress.
    #[error("malformed or misplaced handshake message")]
    Malformed,
    /// The peer refused our side of the handshake with this
    /// `IMLinkAuthResult` code (`IM.Ext.LinkAuthResultCode`: 1 bad proof,
    /// 2 unknown key, 3 unsupported version, 4 malformed).
    #[error("refused by the peer (code {0})")]
    Refused(u32),
    /// The handshake did not complete within the auth timeout.
    #[error("handshake not completed in time")]
    TimedOut,
}

impl AuthFailure {
    /// A short fixed label for metrics and logs (`bad_proof`,
    /// `unknown_key`, `version`, `malformed`, `refused`, `timed_out`).
    #[must_use]
    pub const fn kind(self) -> &'static str {
        match self {
            Self::BadProof => "bad_proof",
            Self::UnknownKey => "unknown_key",
            Self::Version(_) => "version",
            Self::Malformed => "malformed",
            Self::Refused(_) => "refused",
            Self::TimedOut => "timed_out",
        }
    }
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
    /// A session whose peer has not completed link authentication yet:
    /// nothing but the handshake goes to a peer before it proved itself.
    #[error("peer not authenticated yet")]
    NotAuthenticated,
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
