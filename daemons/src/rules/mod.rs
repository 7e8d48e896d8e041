//! Protocol rules that more than one daemon must apply the same way, each
//! written once.
//!
//! - [`failure`]: what a request that cannot be served is answered with,
//!   for every request a client or a msg_server can send.
//! - [`requests`]: where a client request msg_server forwards is served,
//!   and how its sender's identity is overwritten with the session's.
//! - [`relay`]: who receives a PDU relayed between msg_servers, for
//!   route_server's targeting and each msg_server's delivery.
//! - [`files`]: task ids (the credential of a file transfer) and the
//!   bounds on what a client names about a file.
//! - [`sessions`]: message types and their session types.
//! - [`sizing`]: how big a reply may be: list replies are pages below the
//!   frame limit, and what cannot fit gets a failure answer.

pub mod failure;
pub mod files;
pub mod relay;
pub mod requests;
pub mod sessions;
pub mod sizing;
pub mod text;
