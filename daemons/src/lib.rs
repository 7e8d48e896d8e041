//! The TeamTalk reference daemons, the store behind them, a TeamTalk
//! client, and the `teamtalk` command.
//!
//! Each daemon's logic is a pure state machine in its own module, driven by
//! a thin runner that owns the sockets (see `docs/architecture.md`):
//!
//! | module | daemon | default port |
//! |---|---|---|
//! | [`login`] | login_server: msg_server registry, `GET /msg_server` | 8080 HTTP, 8100, 8008 |
//! | [`msg`] | msg_server: client sessions, logins, messages | 8000 |
//! | [`route`] | route_server: presence and relay between msg_servers | 8200 |
//! | [`db_proxy`] | db_proxy_server: every storage request, on a [`store::Store`] | 10600 |
//! | [`msfs`] | msfs: images and avatars over HTTP, content-addressed files | 8700 HTTP |
//! | [`mod@file`] | file_server: online relay and offline files between clients | 8600 clients, 8601 |
//!
//! [`system`] starts them all in one process (`teamtalk up`); [`client`] is
//! a blocking TeamTalk client used by [`chat`], [`mod@bench`] and the tests;
//! [`conf`] reads TeamTalk's `.conf` files; [`metrics`] serves `/metrics`
//! and `/healthz`; [`rules`] holds protocol rules every daemon applies the
//! same way (the failure answer of each request, who receives a relay);
//! [`mod@http`] holds what every HTTP endpoint shares (routing, JSON,
//! ranges, CORS, multipart) on top of `teamtalk_conn::http::HttpConn`;
//! [`mod@tls`] turns a conf's `TlsCertFile`/`TlsKeyFile`/`TlsCaFile` keys
//! into rustls configs for `teamtalk_conn::Tls`; [`clip()`](clip::clip)
//! bounds client-supplied strings in log lines.
//!
//! The client side lives apart in [`tools`], built on the sans-IO
//! [`teamtalk_conn::Client`] machine run by `teamtalk-net`'s reactor:
//! [`client`] (a blocking client for tests and scripts, plus the
//! login_server assignment), [`chat`] (`teamtalk chat`), [`mod@bench`]
//! (`teamtalk bench`), and [`tools::addr`] (addresses with host names).
//! `examples/echo_bot.rs` is a bot written directly against the machine
//! and the reactor.
//!
//! # Features
//!
//! `cli` (default) adds the `teamtalk` command ([`cli`]), the daemons'
//! binaries and the client tools ([`tools`]) with their dependencies
//! (clap, ctrlc, tracing-subscriber, ureq). Without it the crate is the
//! daemons' Apps, the shared runtime, the store and `teamtalk up`'s
//! [`system`]: what a Rust backend links.
#![forbid(unsafe_code)]
#[cfg(feature = "cli")]
pub mod cli;
pub mod clip;
pub mod clock;
pub mod cluster;
pub mod conf;
pub mod db_proxy;
pub mod file;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod http;
pub mod login;
pub mod metrics;
pub mod msfs;
pub mod msg;
pub mod password;
pub mod push;
pub mod route;
pub mod rules;
pub mod runtime;
pub mod store;
pub mod system;
pub mod tls;
#[cfg(feature = "cli")]
pub mod tools;

#[cfg(feature = "cli")]
pub use tools::{bench, chat, client};
