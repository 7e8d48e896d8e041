//! Errors of the framing layer and of typed decoding.

use crate::header::CommandKey;

/// A byte stream that cannot be split into PDUs.
///
/// Every variant is fatal for the connection it came from: after a frame
/// error the stream position is unknown, so the only safe reaction is to
/// close that one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header announced a length smaller than the header itself.
    ///
    /// TeamTalk's C++ servers accept lengths 1..=15 and underflow the body
    /// length; a single such frame takes a C++ msg_server down.
    #[error("pdu length {0} is shorter than the 16-byte header")]
    TooShort(u32),
    /// The header announced a length above the configured maximum.
    ///
    /// Checked before any buffer is grown for the body.
    #[error("pdu length {len} exceeds the limit of {max} bytes")]
    TooLong {
        /// Length from the header.
        len: u32,
        /// Configured maximum.
        max: u32,
    },
}

/// A complete PDU whose body does not parse as the message its command
/// carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("body of {name} ({key}) does not parse as {message}: {source}")]
pub struct BodyError {
    /// The (service, command) pair of the PDU.
    pub key: CommandKey,
    /// The command's name from the TeamTalk enums, e.g. `CID_MSG_DATA`.
    pub name: &'static str,
    /// The protobuf message the command carries, e.g. `IM.Message.IMMsgData`.
    pub message: &'static str,
    /// What prost reported.
    #[source]
    pub source: prost::DecodeError,
}
