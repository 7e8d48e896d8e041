//! TeamTalk reference daemons (work in progress).
#![forbid(unsafe_code)]
pub mod conf;
pub mod password;
pub mod store;
