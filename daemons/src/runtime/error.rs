//! [`DaemonError`]: why a daemon could not start, for every daemon alike.

use std::net::SocketAddr;

use crate::conf::ConfError;
use crate::store::StoreError;

/// Why a daemon could not be configured, started or asked something.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The configuration file is unusable.
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// The configuration is readable but not usable (a required server
    /// missing, contradictory settings).
    #[error("{daemon}: {reason}")]
    Config {
        /// Which daemon.
        daemon: &'static str,
        /// What is wrong, for the operator.
        reason: String,
    },
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A network reactor could not start (threads, pollers).
    #[error("{daemon}: cannot start the network reactor: {source}")]
    Reactor {
        /// Which daemon.
        daemon: &'static str,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A listen address could not be bound (in use, not local, …).
    #[error("{daemon}: cannot listen on {addr}: {source}")]
    Listen {
        /// Which daemon.
        daemon: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the reactor reported.
        #[source]
        source: teamtalk_net::NetError,
    },
    /// A link could not be handed to the reactor.
    #[error("{daemon}: cannot open the link to {addr}: {source}")]
    Link {
        /// Which daemon.
        daemon: &'static str,
        /// The peer's address.
        addr: SocketAddr,
        /// What the reactor reported.
        #[source]
        source: teamtalk_net::NetError,
    },
    /// A thread could not be started.
    #[error("{daemon}: cannot start a thread: {source}")]
    Thread {
        /// Which daemon.
        daemon: &'static str,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The admin endpoint could not be bound.
    #[error("admin endpoint on {addr}: {source}")]
    Admin {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The daemon has stopped (or its thread died), so it cannot answer.
    #[error("{0} is not running")]
    Stopped(&'static str),
}

impl DaemonError {
    /// A listen address already taken by another process (a port clash).
    #[must_use]
    pub fn is_addr_in_use(&self) -> bool {
        matches!(self, Self::Listen { source: teamtalk_net::NetError::Io(e), .. } if e.kind() == std::io::ErrorKind::AddrInUse)
    }
}
