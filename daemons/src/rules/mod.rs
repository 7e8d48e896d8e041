//! Protocol rules that more than one daemon must apply the same way, each
//! written once.
//!
//! - [`failure`]: what a request that cannot be served is answered with,
//!   for every request a client or a msg_server can send.

pub mod failure;
