//! TEMPORARY placeholder: the full command table replaces this.
use crate::header::CommandKey;

/// Every command TeamTalk defines (placeholder subset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// CID_LOGIN_REQ_USERLOGIN
    LoginReqUserlogin,
    /// CID_OTHER_HEARTBEAT
    OtherHeartbeat,
}

impl Command {
    /// The (service, command) pair.
    #[must_use]
    pub const fn key(self) -> CommandKey {
        match self {
            Self::LoginReqUserlogin => CommandKey::new(1, 0x0103),
            Self::OtherHeartbeat => CommandKey::new(7, 0x0701),
        }
    }
}

/// Typed message (placeholder).
#[derive(Debug)]
#[non_exhaustive]
pub enum Message {}
