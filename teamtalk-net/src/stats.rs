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
    writes: AtomicU64,
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
    /// System calls that wrote to sockets. Against `bytes_out` it shows
    /// how well writes are batched: the mio reactor writes everything a
    /// round queued for one socket in one vectored write.
    pub writes: u64,
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
            writes: self.writes.load(Relaxed),
            queued_bytes: self.queued_bytes.load(Relaxed),
            reads_paused: self.reads_paused.load(Relaxed),
        }
    }

    /// Reserves a slot for a new accepted connection; `false` (and the
    /// refusal counted) when `max` are open already (the tokio driver's
    /// counters, one group).
    #[cfg(feature = "tokio")]
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

    /// Counts a connection the application opened (never refused).
    #[cfg(feature = "tokio")]
    pub(crate) fn opened(&self) {
        self.open.fetch_add(1, Relaxed);
    }

    /// Counts a connection gone for good.
    #[cfg(feature = "tokio")]
    pub(crate) fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
        self.closed.fetch_add(1, Relaxed);
    }

    /// Counts a connection closed on accept by its listener's per-source
    /// limit.
    pub(crate) fn refused_per_source(&self) {
        self.refused_per_source.fetch_add(1, Relaxed);
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
    /// Counts system calls that wrote to sockets.
    pub(crate) fn add_writes(&self, writes: u64) {
        if writes != 0 {
            self.writes.fetch_add(writes, Relaxed);
        }
    }

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

/// A reactor's counters: one [`Stats`] per stats group (a listener's or
/// an opened connection's, [`ReactorConfig::stats_groups`]) and the open
/// connections of all groups, which the connection limit applies to.
///
/// [`ReactorConfig::stats_groups`]: crate::ReactorConfig::stats_groups
#[derive(Debug)]
pub(crate) struct StatsSet {
    groups: Box<[Stats]>,
    open_total: AtomicUsize,
}

impl StatsSet {
    /// `groups` groups (at least one).
    pub(crate) fn new(groups: usize) -> Self {
        Self {
            groups: (0..groups.max(1)).map(|_| Stats::default()).collect(),
            open_total: AtomicUsize::new(0),
        }
    }

    /// The group a connection of `group` counts in: groups beyond the
    /// last count in the last.
    pub(crate) fn clamp(&self, group: usize) -> u8 {
        u8::try_from(group.min(self.groups.len() - 1)).unwrap_or(u8::MAX)
    }

    /// A group's counters (`group` from [`clamp`](Self::clamp)).
    pub(crate) fn group(&self, group: u8) -> &Stats {
        let i = usize::from(group).min(self.groups.len() - 1);
        &self.groups[i]
    }

    /// Number of groups.
    pub(crate) fn len(&self) -> usize {
        self.groups.len()
    }

    /// Admits one more accepted connection into `group` unless `max`
    /// connections are open in all groups together.
    pub(crate) fn try_admit(&self, group: u8, max: usize) -> bool {
        let admitted = self
            .open_total
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .is_ok();
        let g = self.group(group);
        if admitted {
            g.open.fetch_add(1, Relaxed);
            g.accepted.fetch_add(1, Relaxed);
        } else {
            g.refused_over_limit.fetch_add(1, Relaxed);
        }
        admitted
    }

    /// An opened (outbound) connection in `group`; never refused.
    pub(crate) fn opened(&self, group: u8) {
        self.open_total.fetch_add(1, Relaxed);
        self.group(group).open.fetch_add(1, Relaxed);
    }

    /// A connection of `group` is gone.
    pub(crate) fn closed(&self, group: u8) {
        self.open_total.fetch_sub(1, Relaxed);
        let g = self.group(group);
        g.open.fetch_sub(1, Relaxed);
        g.closed.fetch_add(1, Relaxed);
    }

    /// All groups together.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let mut total = StatsSnapshot::default();
        for g in &*self.groups {
            let s = g.snapshot();
            total.accepted += s.accepted;
            total.refused_over_limit += s.refused_over_limit;
            total.refused_per_source += s.refused_per_source;
            total.open += s.open;
            total.closed += s.closed;
            total.bytes_in += s.bytes_in;
            total.bytes_out += s.bytes_out;
            total.writes += s.writes;
            total.queued_bytes += s.queued_bytes;
            total.reads_paused += s.reads_paused;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_stops_at_the_limit_and_counts_refusals() {
        let s = StatsSet::new(1);
        assert!(s.try_admit(0, 2));
        assert!(s.try_admit(0, 2));
        assert!(!s.try_admit(0, 2));
        s.closed(0);
        assert!(s.try_admit(0, 2));
        let snap = s.snapshot();
        assert_eq!(snap.accepted, 3);
        assert_eq!(snap.refused_over_limit, 1);
        assert_eq!(snap.open, 2);
        assert_eq!(snap.closed, 1);
    }

    #[test]
    fn groups_count_apart_and_share_the_limit() {
        let s = StatsSet::new(2);
        assert!(s.try_admit(0, 3));
        assert!(s.try_admit(1, 3));
        s.opened(1);
        // Opened connections count towards the limit, never against it.
        assert!(!s.try_admit(0, 3));
        s.group(1).add_bytes(10, 20, 5);
        assert_eq!(s.group(0).snapshot().open, 1);
        assert_eq!(s.group(0).snapshot().refused_over_limit, 1);
        assert_eq!(s.group(1).snapshot().open, 2);
        assert_eq!(s.group(1).snapshot().bytes_out, 20);
        assert_eq!(s.snapshot().open, 3);
        assert_eq!(s.snapshot().bytes_in, 10);
        // A group beyond the last counts in the last.
        assert_eq!(s.clamp(7), 1);
        s.closed(1);
        assert_eq!(s.snapshot().open, 2);
        assert_eq!(s.group(1).snapshot().closed, 1);
    }
}
