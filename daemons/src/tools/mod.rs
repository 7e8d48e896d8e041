//! The client-side tools: everything here speaks TeamTalk as a client
//! would, apart from the server modules.
//!
//! - [`client`]: a blocking client for tests and scripts, a thin driver of
//!   [`teamtalk_conn::Client`] machines on `teamtalk-net`'s reactor; plus
//!   the login_server assignment (`GET /msg_server`) and TeamTalk's text
//!   encoding.
//! - [`chat`]: `teamtalk chat`, a terminal client.
//! - [`bench`](mod@bench): `teamtalk bench`, a load generator running many
//!   client machines on reactors.
//! - [`admin_client`]: a client of the admin REST API (`teamtalk user`
//!   and friends while the system runs).
//! - [`addr`]: the one parser for addresses given on command lines or by
//!   login_server (`host:port`, `http://host:port/...`, host names).

pub mod addr;
pub mod admin_client;
pub mod bench;
pub mod chat;
pub mod client;
