//! TeamTalk reference daemons (work in progress).
#![forbid(unsafe_code)]
pub mod conf;
pub mod password;
pub mod store;
pub mod client;
pub mod clock;
pub mod msg;
pub mod route;
