//! Connection counters shared by all shards of a reactor.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Live counters of a reactor, updated by its shard threads.
///
/// Daemons report these (TeamTalk's msg_server tells the login server its
/// connection count), and the limits tests read them to prove that refused
/// connections are closed rather than left hanging.
#[derive(Debug, Default)]
pub struct Stats {
    accepted: AtomicU64,
    refused_over_limit: AtomicU64,
    refused_per_source: AtomicU64,
    open: AtomicUsize,
    closed: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    queued_bytes: AtomicU64,
    reads_paused: AtomicUsize,
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections accepted on any listener and handed to a machine.
    pub accepted: u64,
    /// Connections accepted and closed at once because the reactor held
    /// `max_connections` already.
    pub refused_over_limit: u64,
    /// Connections accepted and closed at once because their source held
    /// its listener's `max_per_source` already (`ListenOptions`).
    pub refused_per_source: u64,
    /// Connections currently held: accepted or opened, not yet closed
    /// (including ones still flushing after their machine finished).
    pub open: usize,
    /// Connections whose socket and machine are gone.
    pub closed: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Bytes machines transmitted that sockets have not taken yet, over
    /// all connections: the driver's share of the process's memory for
    /// slow peers, bounded by the machines' send caps.
    pub queued_bytes: u64,
    /// Connections whose socket is not being read right now because their
    /// machine asked so (`Machine::wants_read`): peers held back by read
    /// backpressure.
    pub reads_paused: usize,
}

impl Stats {
    /// Reads every counter (each one atomically; the set is not a single
    /// atomic snapshot).
    #[must_use]
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            accepted: self.accepted.load(Relaxed),
            refused_over_limit: self.refused_over_limit.load(Relaxed),
            refused_per_source: self.refused_per_source.load(Relaxed),
            open: self.open.load(Relaxed),
            closed: self.closed.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            queued_bytes: self.queued_bytes.load(Relaxed),
            reads_paused: self.reads_paused.load(Relaxed),
        }
    }

    /// Reserves a slot for a new accepted connection; `false` (and the
    /// refusal counted) when `max` are open already.
    pub(crate) fn try_admit(&self, max: usize) -> bool {
        let admitted = self
            .open
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .is_ok();
        if admitted {
            self.accepted.fetch_add(1, Relaxed);
        } else {
            self.refused_over_limit.fetch_add(1, Relaxed);
        }
        admitted
    }

    /// Counts a connection refused by its listener's per-source limit.
    pub(crate) fn refused_per_source(&self) {
        self.refused_per_source.fetch_add(1, Relaxed);
    }

    /// Counts a connection the application opened (never refused).
    pub(crate) fn opened(&self) {
        self.open.fetch_add(1, Relaxed);
    }

    /// Counts a connection gone for good.
    pub(crate) fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
        self.closed.fetch_add(1, Relaxed);
    }

    /// Counts a connection whose reading just stopped.
    pub(crate) fn read_paused(&self) {
        self.reads_paused.fetch_add(1, Relaxed);
    }

    /// Counts a connection whose reading just started again (or whose
    /// paused socket is gone).
    pub(crate) fn read_resumed(&self) {
        self.reads_paused.fetch_sub(1, Relaxed);
    }

    /// Adds what a shard moved since its last report, and the change of
    /// its queued bytes.
    pub(crate) fn add_bytes(&self, bytes_in: u64, bytes_out: u64, queued_delta: i64) {
        match queued_delta {
            0 => {}
            d if d > 0 => {
                self.queued_bytes.fetch_add(d.unsigned_abs(), Relaxed);
            }
            d => {
                self.queued_bytes.fetch_sub(d.unsigned_abs(), Relaxed);
            }
        }
        if bytes_in != 0 {
            self.bytes_in.fetch_add(bytes_in, Relaxed);
        }
        if bytes_out != 0 {
            self.bytes_out.fetch_add(bytes_out, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_stops_at_the_limit_and_counts_refusals() {
        let s = Stats::default();
        assert!(s.try_admit(2));
        assert!(s.try_admit(2));
        assert!(!s.try_admit(2));
        s.closed();
        assert!(s.try_admit(2));
        let snap = s.snapshot();
        assert_eq!(snap.accepted, 3);
        assert_eq!(snap.refused_over_limit, 1);
        assert_eq!(snap.open, 2);
        assert_eq!(snap.closed, 1);
    }
}
