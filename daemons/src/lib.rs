//! TeamTalk reference daemons (work in progress).
#![forbid(unsafe_code)]
pub mod bench;
pub mod chat;
pub mod cli;
pub mod client;
pub mod clock;
pub mod conf;
pub mod db_proxy;
pub mod login;
pub mod metrics;
pub mod msg;
pub mod password;
pub mod route;
pub mod store;
pub mod system;
