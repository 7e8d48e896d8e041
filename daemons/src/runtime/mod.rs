//! The one daemon shape: a pure [`App`] plus its [`Plan`], driven by the
//! generic runner ([`start`]) and controlled through one handle
//! ([`Running`]) with one error type ([`DaemonError`]).
//!
//! Every daemon of this crate is built this way, the way teamtalk-conn
//! gives every connection one `Machine` contract:
//!
//! 1. **The App** decides everything: it gets [`Input`]s (connections
//!    opened and closed, login requests, PDUs from clients, peers and
//!    links, HTTP requests, links going up and down, finished jobs, a tick
//!    once a second), each with the time ([`Now`]), and pushes
//!    [`Action`]s onto an [`Out`]. It never touches a socket, a thread or a
//!    clock, so its rules are unit-tested with [`Conn::test`] ids and
//!    made-up times.
//! 2. **The plan** says which listeners ([`Plan::listen`]), links
//!    ([`Plan::link`]) and workers ([`Plan::worker`]) the daemon has. Ids
//!    ([`PortId`], [`LinkId`], worker indexes) come back in declaration
//!    order, so the glue builds the plan first and the App with the ids.
//! 3. **The runner** ([`start`]) binds and connects, reads the clock once
//!    per batch of events, feeds the App, and carries out its actions: one
//!    reactor command per connection per batch. Blocking work runs on
//!    [`Worker`] threads; results come back as [`Input::Done`]. The runner
//!    counts only what the transport does (connections, bytes, closes,
//!    PDUs by command); what the App decides, the App counts.
//! 4. **The handle** ([`Running`]) gives the bound addresses, the
//!    daemon's metrics and health ([`Running::metrics`]), questions to the
//!    App between two inputs ([`Running::inspect`]), and [`Running::stop`].
//!
//! # Example: a daemon that answers every PDU with itself
//!
//! ```
//! use daemons::metrics::Scrape;
//! use daemons::runtime::{self, App, Input, NoJob, NoWorker, Now, Out, Plan, PortKind};
//! use teamtalk_conn::SessionConfig;
//!
//! /// Echoes every PDU a peer sends; counts them.
//! struct Echo {
//!     echoed: u64,
//! }
//!
//! impl App for Echo {
//!     type Job = NoJob;
//!     type Done = NoJob;
//!
//!     fn name(&self) -> &'static str {
//!         "echo"
//!     }
//!
//!     fn handle(&mut self, _now: Now, input: Input<'_, NoJob>, out: &mut Out<NoJob>) {
//!         if let Input::Pdu { conn, pdu } = input {
//!             self.echoed += 1;
//!             out.send(conn, pdu.clone());
//!         }
//!     }
//!
//!     fn collect(&self, scrape: &mut Scrape) {
//!         scrape.counter("echo_pdus_total", "PDUs echoed.", &[], self.echoed);
//!     }
//!
//!     fn health(&self, _problems: &mut Vec<String>) {}
//! }
//!
//! let mut plan = Plan::<NoWorker>::new();
//! plan.listen("peers", "peer", "127.0.0.1:0".parse()?, PortKind::Peers(SessionConfig::server_peer()));
//! let running = runtime::start(Echo { echoed: 0 }, plan)?;
//! # use std::io::{Read, Write};
//! let mut socket = std::net::TcpStream::connect(running.addr())?;
//! let pdu = teamtalk_proto::Command::MsgTimeRequest.pdu(7, &teamtalk_proto::pb::im::message::ImClientTimeReq {});
//! socket.write_all(&pdu.to_bytes())?;
//! let mut back = vec![0; pdu.to_bytes().len()];
//! socket.read_exact(&mut back)?;
//! assert_eq!(back, pdu.to_bytes());
//! assert_eq!(running.inspect(|echo| echo.echoed)?, 1);
//! running.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `examples/ping_daemon.rs` is the same daemon as a program.
//!
//! # Towards several threads
//!
//! An App is one state machine on one thread. The contract is shaped so
//! that a daemon can later run several instances of its App as shards
//! (sessions partitioned by user, store jobs by conversation) without
//! changing the App's rules: every input names the connection or link it
//! concerns, every action names where it goes, and jobs name their worker,
//! so a sharding runner only has to route inputs and hand actions on.

pub mod admin;
mod contract;
mod error;
pub(crate) mod log_gate;
mod plan;
mod runner;
mod running;
mod traffic;
mod wire;

#[cfg(test)]
mod tests;

pub use admin::{AdminSettings, serve_admin, serve_admin_api};
pub use contract::{
    Action, App, CloseCause, Conn, Input, LinkId, NoJob, NoWorker, Now, Out, PortId, Request,
    Response, Worker,
};
pub use error::DaemonError;
pub use plan::{DEFAULT_BATCH_LIMIT, DEFAULT_WORKER_QUEUE, Plan, PortKind};
pub(crate) use runner::env_flag;
pub use runner::{
    APP_THREAD_ENV, EVENT_BATCH, LocalNetScope, SharedThreadScope, TICK, log_lifecycle_at_debug,
    start,
};
pub use running::{CALL_TIMEOUT, Controller, Running, RunningDaemon};
