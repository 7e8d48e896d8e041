//! How TeamTalk clients encode message text: see [`crate::rules::text`]
//! (msg_server decodes it too, for push notifications).

pub use crate::rules::text::*;
