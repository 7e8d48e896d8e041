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
//!
//! [`system`] starts all four in one process (`teamtalk up`); [`client`] is
//! a blocking TeamTalk client used by [`chat`], [`mod@bench`] and the tests;
//! [`conf`] reads TeamTalk's `.conf` files; [`metrics`] serves `/metrics`
//! and `/healthz`; [`rules`] holds protocol rules every daemon applies the
//! same way (the failure answer of each request, who receives a relay);
//! [`mod@http`] holds what every HTTP endpoint shares (routing, JSON,
//! ranges, CORS, multipart) on top of `teamtalk_conn::http::HttpConn`;
//! [`mod@tls`] turns a conf's `TlsCertFile`/`TlsKeyFile`/`TlsCaFile` keys
//! into rustls configs for `teamtalk_conn::Tls`; [`clip()`](clip::clip)
//! bounds client-supplied strings in log lines.
#![forbid(unsafe_code)]
pub mod bench;
pub mod chat;
pub mod cli;
pub mod client;
pub mod clip;
pub mod clock;
pub mod cluster;
pub mod conf;
pub mod db_proxy;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod http;
pub mod login;
pub mod metrics;
pub mod msg;
pub mod password;
pub mod route;
pub mod rules;
pub mod runtime;
pub mod store;
pub mod system;
pub mod tls;
