//! Per-shard deadlines: a binary heap with lazy invalidation.
//!
//! Machines move their deadlines on almost every input (an idle timer is
//! "last receive + 30 s"). Removing entries from a heap is expensive, so
//! entries are never removed: each carries the connection's slot and
//! generation, and the shard ignores an entry when the slot was reused or
//! the connection no longer wants to wake at that instant. A new entry is
//! pushed only when a deadline moves *earlier* than the one already
//! scheduled; a deadline that moves later is picked up when the earlier
//! entry fires. The heap is rebuilt from the live set when stale entries
//! pile up, so its size stays proportional to the number of connections.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// One scheduled wake-up of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    /// When to wake.
    pub(crate) at: Instant,
    /// The connection's slab slot.
    pub(crate) slot: usize,
    /// The connection's generation when the entry was pushed.
    pub(crate) generation: u32,
}

/// Min-heap of [`Entry`] ordered by time.
#[derive(Debug, Default)]
pub(crate) struct TimerHeap {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl TimerHeap {
    /// Schedules a wake-up.
    pub(crate) fn push(&mut self, at: Instant, slot: usize, generation: u32) {
        self.heap.push(Reverse(Entry {
            at,
            slot,
            generation,
        }));
    }

    /// The earliest scheduled instant, stale or not.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Entry> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Number of entries, including stale ones.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Replaces the content with exactly the given live entries.
    pub(crate) fn rebuild(&mut self, live: impl Iterator<Item = Entry>) {
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.clear();
        entries.extend(live.map(Reverse));
        self.heap = BinaryHeap::from(entries);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn pops_in_time_order_and_only_when_due() {
        let t0 = crate::clock::now();
        let mut h = TimerHeap::default();
        h.push(t0 + Duration::from_secs(3), 1, 0);
        h.push(t0 + Duration::from_secs(1), 2, 0);
        h.push(t0 + Duration::from_secs(2), 3, 7);
        assert_eq!(h.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(h.pop_due(t0), None);
        let due: Vec<_> = std::iter::from_fn(|| h.pop_due(t0 + Duration::from_secs(2)))
            .map(|e| (e.slot, e.generation))
            .collect();
        assert_eq!(due, vec![(2, 0), (3, 7)]);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn rebuild_drops_stale_entries() {
        let t0 = crate::clock::now();
        let mut h = TimerHeap::default();
        for i in 0..100 {
            h.push(t0 + Duration::from_millis(i), 0, 0);
        }
        let live = Entry {
            at: t0 + Duration::from_secs(9),
            slot: 4,
            generation: 1,
        };
        h.rebuild(std::iter::once(live));
        assert_eq!(h.len(), 1);
        assert_eq!(h.pop_due(t0 + Duration::from_secs(9)), Some(live));
    }
}
