//! In-process connections between reactors of one process.
//!
//! Daemons that run in one process (`teamtalk up`) still address each
//! other by TCP address, and every PDU between them used to cross the
//! loopback TCP stack: a segment, an acknowledgement and the receiver's
//! protocol processing on the sender's CPU. A [`LocalNet`] shared by their
//! reactors ([`ReactorConfig::local_net`](crate::ReactorConfig::local_net))
//! lets a connect to an address that one of them listens on become a
//! Unix socket pair instead: the same bytes, the same machines, the same
//! readiness loop, without TCP. Connects to any other address, and every
//! connection between separate processes, stay TCP, so what goes over the
//! wire is unchanged.
//!
//! The listening side sees the connection as accepted from its own IP
//! address with port 0 (an in-process peer has no port), and admits it
//! like any accepted connection: the connection limit, the listener's
//! per-source limit and its stats group apply.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use mio::net::UnixStream;

/// Hands one end of a new pair to the listening shard; false when that
/// reactor is gone.
pub(crate) type Deliver = Box<dyn Fn(UnixStream) -> bool + Send + Sync>;

/// Listeners of the reactors sharing this registry, by bound address.
pub struct LocalNet {
    listeners: Mutex<HashMap<SocketAddr, Deliver>>,
    connections: AtomicU64,
}

impl LocalNet {
    /// An empty registry; give it to every reactor that should reach the
    /// others in-process.
    #[must_use]
    pub fn new() -> Self {
        Self {
            listeners: Mutex::new(HashMap::new()),
            connections: AtomicU64::new(0),
        }
    }

    /// Connections made in-process so far.
    #[must_use]
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Whether a reactor sharing this registry listens on `addr`.
    #[must_use]
    pub fn listens_on(&self, addr: SocketAddr) -> bool {
        self.lock().contains_key(&addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Deliver>> {
        // A panic while holding the lock cannot leave the map half
        // changed (each operation is one insert, lookup or removal).
        self.listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a listener bound to `addr`, replacing an earlier one of
    /// a stopped reactor.
    pub(crate) fn register(&self, addr: SocketAddr, deliver: Deliver) {
        self.lock().insert(addr, deliver);
    }

    /// Connects to `addr` in-process: `None` when no live reactor sharing
    /// this registry listens there (connect over TCP then), else this
    /// side's end of a pair whose other end is on its way to the listener.
    pub(crate) fn connect(&self, addr: SocketAddr) -> Option<io::Result<UnixStream>> {
        let mut listeners = self.lock();
        let deliver = listeners.get(&addr)?;
        let (ours, theirs) = match UnixStream::pair() {
            Ok(pair) => pair,
            Err(e) => return Some(Err(e)),
        };
        if !deliver(theirs) {
            // That reactor stopped; the address may belong to someone
            // else by now.
            listeners.remove(&addr);
            return None;
        }
        self.connections.fetch_add(1, Ordering::Relaxed);
        Some(Ok(ours))
    }
}

impl Default for LocalNet {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LocalNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalNet")
            .field("listeners", &self.lock().len())
            .field("connections", &self.connections())
            .finish()
    }
}
