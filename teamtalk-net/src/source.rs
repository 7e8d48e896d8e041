//! Per-source connection limits of a listener: at most N connections at
//! once from one source address.
//!
//! A client that opens hundreds of connections and trickles bytes on each
//! (slowloris) exhausts a server's connection slots even when every one of
//! them has deadlines; a per-source cap leaves room for everyone else.
//!
//! The count of a source lives in a table shared by every shard, because
//! a connection accepted by one shard is often adopted by another and
//! closes there. Each admitted connection carries a [`SourceSlot`] that
//! gives its place back when dropped, so every way a connection can go
//! (closed by its machine, by the peer, by shutdown, or lost before a shard
//! adopted it) releases it exactly once. Listeners without a limit have no
//! table and their connections no slot: no lock, no lookup, no allocation.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// How a listener accepts connections.
///
/// `ListenOptions { max_per_source: Some(16), ..ListenOptions::default() }`
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenOptions {
    /// At most this many connections held at once from one source: one
    /// IPv4 address, or one IPv6 /64 (a single IPv6 host usually controls
    /// a whole /64, so counting addresses would not limit it). IPv4-mapped
    /// IPv6 addresses count as their IPv4 address. Connections over the
    /// limit are closed at once and counted in
    /// [`StatsSnapshot::refused_per_source`](crate::StatsSnapshot::refused_per_source).
    /// `None`: no limit.
    pub max_per_source: Option<usize>,
    /// The stats group its connections count in
    /// ([`ReactorConfig::stats_groups`](crate::ReactorConfig::stats_groups);
    /// a group beyond the last counts in the last). 0 by default.
    pub stats_group: usize,
}

/// The key a source is counted under: an IPv4 address, or the /64 of an
/// IPv6 one (IPv4-mapped addresses count as IPv4). Public so that limits
/// kept by applications (msfs's uploads per minute) count sources the
/// same way as the listeners' connection caps.
#[must_use]
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// The live connection counts of one listener's sources.
#[derive(Debug)]
pub(crate) struct SourceLimit {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl SourceLimit {
    /// A table for `opts`, or `None` when they set no limit.
    pub(crate) fn for_options(opts: &ListenOptions) -> Option<Arc<Self>> {
        opts.max_per_source.map(|max| {
            Arc::new(Self {
                max,
                counts: Mutex::new(HashMap::new()),
            })
        })
    }

    /// Takes a place for a connection from `ip`; `None` when the source
    /// holds `max` already.
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let key = source_key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(key).or_insert(0);
        if *n >= self.max {
            if *n == 0 {
                counts.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(SourceSlot(Box::new((Arc::clone(self), key))))
    }

    fn release(&self, key: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&key);
            }
        }
    }

    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(&source_key(ip)).copied().unwrap_or(0)
    }
}

/// One connection's place in its source's count, given back on drop.
/// Boxed so that an `Option<SourceSlot>` costs a connection of an
/// unlimited listener one word.
#[derive(Debug)]
pub(crate) struct SourceSlot(Box<(Arc<SourceLimit>, IpAddr)>);

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let (limit, key) = &*self.0;
        limit.release(*key);
    }
}

/// Admits a connection from `ip` under `limit`: `Ok(None)` for an
/// unlimited listener, `Ok(Some(slot))` when admitted, `Err(())` when the
/// source is at its limit.
pub(crate) fn admit(
    limit: Option<&Arc<SourceLimit>>,
    ip: IpAddr,
) -> Result<Option<SourceSlot>, ()> {
    match limit {
        None => Ok(None),
        Some(l) => l.acquire(ip).map(Some).ok_or(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_holds_at_most_max_and_slots_give_their_place_back() {
        let limit = SourceLimit::for_options(&ListenOptions {
            max_per_source: Some(2),
            ..ListenOptions::default()
        })
        .unwrap();
        let a = ip("192.0.2.1");
        let s1 = limit.acquire(a).unwrap();
        let s2 = limit.acquire(a).unwrap();
        assert!(limit.acquire(a).is_none());
        // Other sources are unaffected.
        let other = limit.acquire(ip("192.0.2.2")).unwrap();
        drop(s1);
        let s3 = limit.acquire(a).unwrap();
        assert_eq!(limit.count(a), 2);
        drop((s2, s3, other));
        assert_eq!(limit.count(a), 0);
        assert!(
            limit.counts.lock().unwrap().is_empty(),
            "no entries left behind"
        );
    }

    #[test]
    fn mapped_v4_counts_as_v4_and_v6_counts_per_64() {
        let limit = SourceLimit::for_options(&ListenOptions {
            max_per_source: Some(1),
            ..ListenOptions::default()
        })
        .unwrap();
        let _v4 = limit.acquire(ip("198.51.100.7")).unwrap();
        assert!(limit.acquire(ip("::ffff:198.51.100.7")).is_none());
        let _v6 = limit.acquire(ip("2001:db8:1:2::1")).unwrap();
        assert!(limit.acquire(ip("2001:db8:1:2:ffff::9")).is_none());
        assert!(limit.acquire(ip("2001:db8:1:3::1")).is_some());
    }

    #[test]
    fn no_limit_means_no_table_and_no_slot() {
        assert!(SourceLimit::for_options(&ListenOptions::default()).is_none());
        assert!(matches!(admit(None, ip("192.0.2.1")), Ok(None)));
        let zero = SourceLimit::for_options(&ListenOptions {
            max_per_source: Some(0),
            ..ListenOptions::default()
        });
        assert!(admit(zero.as_ref(), ip("192.0.2.1")).is_err());
        assert!(zero.unwrap().counts.lock().unwrap().is_empty());
    }
}
