#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod attach;
mod codec;
pub mod command;
mod error;
pub mod fields;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod header;
pub mod pb;
mod pdu;

pub use attach::{Attach, AttachError, AttachKind};
pub use codec::{DEFAULT_MAX_PDU_LEN, PduCodec};
pub use command::{Command, Message};
pub use error::{BodyError, FrameError};
pub use fields::Attached;
pub use header::{CommandKey, Header, PDU_VERSION};
pub use pdu::Pdu;
