//! Drivers that run teamtalk-conn machines over real TCP sockets.
//!
//! A [`Machine`](teamtalk_conn::Machine) (a `Link` or a `Session`) holds
//! all protocol behaviour but never touches a socket or a clock. This
//! crate supplies both, in two interchangeable ways:
//!
//! - [`Reactor`]: the blocking driver the daemons use. A few threads hold
//!   tens of thousands of connections.
//! - `teamtalk_net::tokio` (feature `tokio`): one task per connection, for backends
//!   that already live in async Rust.
//!
//! Both interpret the machine's outputs the same way, so a connection
//! behaves identically under either (a test runs one scenario through
//! both and compares the events).
//!
//! # Threading model of the reactor
//!
//! ```text
//!  application threads                      shard threads (about one per core)
//! ┌───────────────────┐  Handle::exec(id, f) ┌──────────────────────────────────┐
//! │ event loop(s)     │ ───────────────────▶ │ mio::Poll + Waker                │
//! │  recv (ConnId,    │  open / listen       │ Slab<Conn { machine, socket,     │
//! │        NetEvent)  │  (crossbeam + wake)  │             tx queue, gen }>     │
//! │                   │ ◀─────────────────── │ timer heap (machines' deadlines) │
//! └───────────────────┘   events channel     │ 64 KiB read buffer, shared       │
//!                                            └──────────────────────────────────┘
//! ```
//!
//! - Each connection belongs to exactly one shard for its whole life, and
//!   only that shard touches its machine: no locks around protocol state.
//! - A shard sleeps in `poll` until a socket is ready, the earliest
//!   machine deadline passes, or a command arrives. After each wake-up it
//!   reads the clock once and passes that instant into every input.
//! - An accepted connection stays on the shard that accepted it while
//!   that shard holds at most [`ReactorConfig::adopt_slack`] connections
//!   more than the least loaded one, and goes to the least loaded shard
//!   otherwise: a short-lived connection costs no hand-off between
//!   threads, and long-lived ones spread evenly. A machine is built for
//!   each by the listener's factory `Fn(peer, now) -> M`.
//!   Outbound connections are machines handed in with [`Handle::open`];
//!   their first output is `Output::Connect(addr)`, and the connect is
//!   nonblocking. Its result comes back as `Input::Connected` or
//!   `Input::ConnectFailed`.
//! - Commands are closures: [`Handle::exec`]`(id, |m| m.send(&pdu))` runs
//!   on the owning shard and is followed by a drain of the machine. One
//!   generic command covers send, accept or reject a login, and close,
//!   for every machine type.
//! - Events come out on one channel as `(`[`ConnId`]`, `[`NetEvent`]`)`.
//!   A [`ConnId`] carries a generation, so a stale id never reaches a
//!   connection that reuses the slot.
//! - What a machine transmits is queued and written when the shard's
//!   round ends: everything a round queued for one socket (several
//!   commands' PDUs, a burst of deliveries) goes out in one vectored
//!   write, counted in [`StatsSnapshot::writes`]. What the socket does not
//!   take stays queued and is flushed when it becomes writable; that
//!   backlog is reported to the machine (`Machine::set_backlog`), so a
//!   peer that stops reading is closed once the machine's send cap is
//!   reached. (The tokio driver writes at once.) A socket is registered
//!   for writability only while something waits for it (a connect, queued
//!   bytes, a paused reader), so write space that nobody needs never
//!   wakes a shard.
//! - Idle connections cost little: there is no per-connection read buffer
//!   (reads go through the shard's buffer) and the write queue allocates
//!   only while it holds bytes. Resource limits: at most
//!   [`ReactorConfig::max_connections`]; connections above it are closed
//!   at once and counted in [`Stats`]. A listener may also cap the
//!   connections of one source address ([`ListenOptions::max_per_source`],
//!   through [`Handle::listen_with`]), so one client cannot take the
//!   slots of everyone else.
//! - Read backpressure: after every drain the shard asks the machine
//!   whether it wants its socket read (`Machine::wants_read`). When it
//!   does not, the socket is re-registered for writability only: nothing
//!   is read, the kernel keeps the peer's bytes and its TCP window closes,
//!   while writes and deadlines go on and the other connections of the
//!   shard are served as usual. When it wants reads again, read interest
//!   comes back and the socket is read at once (the readiness edge may
//!   have passed while paused). A paused socket notices the peer's close
//!   when reading resumes, and a reset also through its error event or a
//!   failed write. [`StatsSnapshot::reads_paused`] counts paused sockets.
//! - [`Reactor::shutdown`] stops accepting, drops the machines, flushes
//!   queued bytes for a bounded time and closes everything.
//!
//! Daemons holding many connections should call [`raise_fd_limit`] first.
//!
//! # Example: a heartbeat-echo server
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::TcpStream;
//!
//! use bytes::Bytes;
//! use teamtalk_conn::{Session, SessionConfig, SessionEvent};
//! use teamtalk_net::{NetEvent, Reactor, ReactorConfig};
//! use teamtalk_proto::{Command, Pdu};
//!
//! let reactor = Reactor::<Session>::new(ReactorConfig { threads: 1, ..ReactorConfig::default() })?;
//! // Sessions echo heartbeats themselves; the application echoes the rest.
//! let addr = reactor.listen("127.0.0.1:0".parse()?, |peer, now| {
//!     let mut cfg = SessionConfig::client();
//!     cfg.login_timeout = None;
//!     Session::new(cfg, peer, now)
//! })?;
//! let (handle, events) = (reactor.handle(), reactor.events());
//! std::thread::spawn(move || {
//!     for (id, event) in events {
//!         if let NetEvent::Machine(SessionEvent::Pdu(pdu)) = event {
//!             let _ = handle.exec(id, move |session| {
//!                 let _ = session.send(&pdu);
//!             });
//!         }
//!     }
//! });
//!
//! let mut client = TcpStream::connect(addr)?;
//! let heartbeat = Pdu::new(Command::OtherHeartbeat.key(), 1, Bytes::new()).to_bytes();
//! let data = Pdu::new(Command::MsgData.key(), 2, Bytes::from_static(b"hi")).to_bytes();
//! client.write_all(&heartbeat)?;
//! client.write_all(&data)?;
//! let mut back = vec![0; heartbeat.len() + data.len()];
//! client.read_exact(&mut back)?;
//! assert_eq!(back, [&heartbeat[..], &data[..]].concat());
//! reactor.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The examples directory has the same server (`echo_server`), a link
//! that heartbeats against it (`link_ping`), the tokio version
//! (`tokio_echo`), and the benchmark tools (`echo_load`, `idle_capacity`).
#![forbid(unsafe_code)]

mod clock;
mod handle;
mod limits;
mod local;
mod pump;
mod reactor;
mod shared;
pub mod socket;
mod source;
mod stats;
mod stream;
mod timer_heap;
#[cfg(feature = "tokio")]
pub mod tokio;
mod txqueue;

pub use handle::{ConnId, Handle, NetError, NetEvent};
pub use limits::raise_fd_limit;
pub use local::LocalNet;
pub use pump::{Pump, Pumped};
pub use reactor::{DEFAULT_ADOPT_SLACK, EventRx, Reactor, ReactorConfig};
pub use shared::SharedThread;
pub use source::{ListenOptions, source_key};
pub use stats::{Stats, StatsSnapshot};
