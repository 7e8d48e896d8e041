//! The login-failure limiter: wrong passwords slow down whoever sends them,
//! without locking the rightful user out.
//!
//! TeamTalk's db_proxy counted failures per user name: eleven wrong
//! passwords within half an hour, from anyone, locked the name for 30
//! minutes. A stranger who knew a colleague's user name could keep them
//! out all day. Here failures are counted per key, and every key's
//! refusals are short and growing delays, never a long lock:
//!
//! | key | counted when | delays start at |
//! |---|---|---|
//! | (source address, user name) | msg_server sent the client's address (`IMValidateReq.client_addr`) | the [`PAIR_LOCK_AFTER`]th failure |
//! | source address, across names | the same | the [`SOURCE_LOCK_AFTER`]th failure |
//! | user name alone | no address (C++ msg_servers do not send one) | the [`NAME_LOCK_AFTER`]th failure (TeamTalk's "more than 10") |
//!
//! Once a key reaches its threshold, each further failure refuses the key
//! for twice as long as the last: [`FIRST_DELAY_SECS`], then 2 s, 4 s, …,
//! never more than [`MAX_DELAY_SECS`]. While a key is refused, attempts
//! are answered with result code 6 without looking at the password, and
//! are not counted. A key is forgotten [`FORGET_AFTER_SECS`] after its last
//! failure; a successful login forgets the (address, name) key (or the
//! name key), not the address's.
//!
//! So a guesser at one address gets a handful of tries per user and then
//! roughly one per five minutes, and one per five minutes across all users
//! after [`SOURCE_LOCK_AFTER`] failures, while the user logs in from
//! anywhere else. IPv6 sources count by /64 (one host usually owns a whole
//! /64), as the listeners' per-source cap does.
//!
//! Time is passed in (Unix seconds), so tests move it by hand.
//!
//! # Bounded in bytes
//!
//! The table is keyed by client input (names, addresses), so it is bounded
//! by what it holds, not by a count: every entry is charged its key's length
//! plus [`ENTRY_OVERHEAD`], and the whole stays under the byte budget
//! ([`DEFAULT_MAX_BYTES`]). db_proxy refuses names longer than
//! [`MAX_CREDENTIAL_LEN`](crate::rules::sizing::MAX_CREDENTIAL_LEN) bytes
//! before they reach the limiter, and a longer name is charged by its
//! length anyway. When the budget is spent, forgotten entries are dropped
//! first; if that is not enough, a failure for a new key is not counted
//! (counted in [`LoginLimiter::untracked`], logged at most once a minute).
//! Filling the table needs tens of thousands of distinct keys, and each
//! source address that tries is slowed down by its own entry first.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Mutex, PoisonError};

/// Failures of one (address, name) before its delays start.
pub const PAIR_LOCK_AFTER: u32 = 5;
/// Failures of one address, across names, before its delays start.
pub const SOURCE_LOCK_AFTER: u32 = 30;
/// Failures of a name without an address before its delays start
/// (TeamTalk locked after more than 10).
pub const NAME_LOCK_AFTER: u32 = 11;
/// The first delay, in seconds; each further failure doubles it.
pub const FIRST_DELAY_SECS: u32 = 1;
/// The longest delay, in seconds.
pub const MAX_DELAY_SECS: u32 = 5 * 60;
/// A key is forgotten this long after its last failure, in seconds.
pub const FORGET_AFTER_SECS: u32 = 30 * 60;
/// Bytes an entry is charged besides its key's text: the map slot, the
/// counters and the allocation around the key.
pub const ENTRY_OVERHEAD: usize = 96;
/// Default byte budget of the table (at least 60,000 entries even with
/// 256-byte names).
pub const DEFAULT_MAX_BYTES: usize = 24 << 20;

/// The refusal: the key is refused until `until` (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    /// When the delay ends and a password is checked again.
    pub until: u32,
}

/// Where a login comes from, as counted: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    /// The source of a client at `ip` (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address, any other IPv6 address as its /64).
    #[must_use]
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !u128::from(u64::MAX);
                    Self(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }

    /// Reads `IMValidateReq.client_addr`: an IP address with or without a
    /// port (`192.0.2.7`, `192.0.2.7:5000`, `[2001:db8::1]:5000`, `2001:db8::1`).
    /// `None` when it is neither.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        text.parse::<SocketAddr>()
            .map(|a| a.ip())
            .or_else(|_| text.parse::<IpAddr>())
            .ok()
            .map(Self::of)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Pair(Source, Box<str>),
    Source(Source),
    Name(Box<str>),
}

impl Key {
    fn cost(&self) -> usize {
        ENTRY_OVERHEAD
            + match self {
                Self::Pair(_, name) | Self::Name(name) => name.len(),
                Self::Source(_) => 0,
            }
    }

    fn lock_after(&self) -> u32 {
        match self {
            Self::Pair(..) => PAIR_LOCK_AFTER,
            Self::Source(_) => SOURCE_LOCK_AFTER,
            Self::Name(_) => NAME_LOCK_AFTER,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Failures counted since the key was last forgotten.
    failures: u32,
    /// Time of the last counted failure.
    last: u32,
    /// Refused until then (0: never refused yet).
    until: u32,
}

impl Entry {
    fn forgotten(&self, now: u32) -> bool {
        now.saturating_sub(self.last) > FORGET_AFTER_SECS
    }
}

/// The delay after the `failures`th failure of a key whose delays start at
/// `lock_after`: 0 before, then 1 s doubling up to [`MAX_DELAY_SECS`].
fn delay(failures: u32, lock_after: u32) -> u32 {
    let Some(step) = failures.checked_sub(lock_after) else {
        return 0;
    };
    FIRST_DELAY_SECS
        .checked_shl(step)
        .filter(|&d| d <= MAX_DELAY_SECS)
        .unwrap_or(MAX_DELAY_SECS)
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<Key, Entry>,
    bytes: usize,
    untracked: u64,
    last_prune: Option<u32>,
    last_warning: Option<u32>,
}

impl Table {
    fn remove(&mut self, key: &Key) {
        if self.entries.remove(key).is_some() {
            self.bytes = self.bytes.saturating_sub(key.cost());
        }
    }

    /// Drops forgotten entries; at most once per second, so a full table
    /// under a spray of new keys is not scanned for every failure.
    fn prune(&mut self, now: u32) {
        if self.last_prune == Some(now) {
            return;
        }
        self.last_prune = Some(now);
        let mut freed = 0;
        self.entries.retain(|k, e| {
            let keep = !e.forgotten(now);
            if !keep {
                freed += k.cost();
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed);
    }
}

/// Failure counts per key; see the [module docs](self). Thread-safe; share
/// it behind the handler.
#[derive(Debug)]
pub struct LoginLimiter {
    max_bytes: usize,
    table: Mutex<Table>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new()
    }
}

/// The keys a login from `source` for `name` is counted under.
fn keys(source: Option<Source>, name: &str) -> Vec<Key> {
    match source {
        Some(s) => vec![Key::Pair(s, name.into()), Key::Source(s)],
        None => vec![Key::Name(name.into())],
    }
}

impl LoginLimiter {
    /// An empty limiter with the default byte budget.
    #[must_use]
    pub fn new() -> Self {
        Self::with_max_bytes(DEFAULT_MAX_BYTES)
    }

    /// An empty limiter holding at most `max_bytes` of entries.
    #[must_use]
    pub fn with_max_bytes(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            table: Mutex::new(Table::default()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table is only ever left consistent (no multi-step updates
        // that can panic half-way), so a panic elsewhere while it was held
        // does not spoil it.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a login for `name` from `source` (`None`: unknown, counted
    /// by name alone) may try a password at `now`.
    ///
    /// # Errors
    /// [`Locked`] while one of its keys is delayed; `until` is the latest
    /// end among them.
    pub fn check(&self, source: Option<Source>, name: &str, now: u32) -> Result<(), Locked> {
        let mut table = self.table();
        let mut until = None;
        for key in keys(source, name) {
            let Some(e) = table.entries.get(&key).copied() else {
                continue;
            };
            if e.forgotten(now) {
                table.remove(&key);
                continue;
            }
            if now < e.until {
                until = until.max(Some(e.until));
            }
        }
        until.map_or(Ok(()), |until| Err(Locked { until }))
    }

    /// Counts a wrong password (or unknown name) for `name` from `source`
    /// at `now`.
    pub fn record_failure(&self, source: Option<Source>, name: &str, now: u32) {
        let mut table = self.table();
        for key in keys(source, name) {
            if !table.entries.contains_key(&key) && !self.make_room(&mut table, &key, now) {
                continue;
            }
            let Some(entry) = table.entries.get_mut(&key) else {
                continue;
            };
            if entry.forgotten(now) {
                *entry = Entry {
                    failures: 0,
                    last: now,
                    until: 0,
                };
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last = entry.last.max(now);
            let d = delay(entry.failures, key.lock_after());
            if d > 0 {
                entry.until = entry.until.max(now.saturating_add(d));
            }
        }
    }

    /// Adds an empty entry for `key` if the budget allows, dropping
    /// forgotten entries first when it does not; `false` (counted, logged
    /// at most once a minute) when there is still no room.
    fn make_room(&self, table: &mut Table, key: &Key, now: u32) -> bool {
        let cost = key.cost();
        if table.bytes.saturating_add(cost) > self.max_bytes {
            table.prune(now);
        }
        if table.bytes.saturating_add(cost) > self.max_bytes {
            table.untracked += 1;
            if table
                .last_warning
                .is_none_or(|t| now.saturating_sub(t) >= 60)
            {
                table.last_warning = Some(now);
                tracing::warn!(
                    bytes = table.bytes,
                    entries = table.entries.len(),
                    untracked = table.untracked,
                    "login limiter full; failures for new keys are not counted"
                );
            }
            return false;
        }
        table.bytes += cost;
        table.entries.insert(
            key.clone(),
            Entry {
                failures: 0,
                last: now,
                until: 0,
            },
        );
        true
    }

    /// Forgets the failures of `name` from `source` after a successful
    /// login (the address's own count stays: one right password does not
    /// excuse guessing at other names).
    pub fn record_success(&self, source: Option<Source>, name: &str) {
        let key = match source {
            Some(s) => Key::Pair(s, name.into()),
            None => Key::Name(name.into()),
        };
        self.table().remove(&key);
    }

    /// Number of keys currently tracked.
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.table().entries.len()
    }

    /// Bytes the tracked keys are charged (see the [module docs](self)).
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.table().bytes
    }

    /// The byte budget.
    #[must_use]
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Failures not counted because the table was full.
    #[must_use]
    pub fn untracked(&self) -> u64 {
        self.table().untracked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(s: &str) -> Option<Source> {
        Some(Source::parse(s).expect("an address"))
    }

    #[test]
    fn delays_grow_from_one_second_to_five_minutes() {
        assert_eq!(delay(4, 5), 0);
        assert_eq!(delay(5, 5), 1);
        assert_eq!(delay(6, 5), 2);
        assert_eq!(delay(7, 5), 4);
        assert_eq!(delay(13, 5), 256);
        assert_eq!(delay(14, 5), MAX_DELAY_SECS);
        assert_eq!(delay(40, 5), MAX_DELAY_SECS);
        assert_eq!(delay(u32::MAX, 5), MAX_DELAY_SECS);
    }

    /// The finding: a stranger's wrong passwords no longer lock the user
    /// out; they slow down the stranger's address only.
    #[test]
    fn a_stranger_cannot_lock_the_user_out() {
        let l = LoginLimiter::new();
        let t0 = 1_000_000;
        let stranger = src("198.51.100.9:4000");
        let user = src("203.0.113.5:5000");
        let mut t = t0;
        for _ in 0..11 {
            // The stranger waits out each delay and tries again.
            while let Err(locked) = l.check(stranger, "alice", t) {
                t = locked.until;
            }
            l.record_failure(stranger, "alice", t);
        }
        assert!(l.check(stranger, "alice", t).is_err());
        assert_eq!(l.check(user, "alice", t), Ok(()));
        // The stranger's other names are not delayed yet (11 < 30).
        assert_eq!(l.check(stranger, "bob", t), Ok(()));
    }

    #[test]
    fn the_fifth_failure_refuses_for_a_second_then_two_then_four() {
        let l = LoginLimiter::new();
        let a = src("192.0.2.1");
        for i in 0..4 {
            l.record_failure(a, "n", 100 + i);
            assert_eq!(l.check(a, "n", 100 + i), Ok(()), "failure {}", i + 1);
        }
        l.record_failure(a, "n", 110);
        assert_eq!(l.check(a, "n", 110), Err(Locked { until: 111 }));
        assert_eq!(l.check(a, "n", 111), Ok(()));
        l.record_failure(a, "n", 111);
        assert_eq!(l.check(a, "n", 112), Err(Locked { until: 113 }));
        l.record_failure(a, "n", 113);
        assert_eq!(l.check(a, "n", 113), Err(Locked { until: 117 }));
        // Refused attempts are not counted: the delay does not grow.
        for t in 113..117 {
            assert!(l.check(a, "n", t).is_err());
        }
        assert_eq!(l.check(a, "n", 117), Ok(()));
    }

    #[test]
    fn delays_never_exceed_five_minutes() {
        let l = LoginLimiter::new();
        let a = src("192.0.2.1");
        let mut t = 0;
        for _ in 0..40 {
            if let Err(locked) = l.check(a, "n", t) {
                assert!(locked.until - t <= MAX_DELAY_SECS);
                t = locked.until;
            }
            l.record_failure(a, "n", t);
        }
        let locked = l.check(a, "n", t).unwrap_err();
        assert_eq!(locked.until - t, MAX_DELAY_SECS);
    }

    #[test]
    fn one_address_guessing_many_names_is_slowed_down_across_names() {
        let l = LoginLimiter::new();
        let a = src("192.0.2.1");
        for i in 0..SOURCE_LOCK_AFTER {
            assert_eq!(l.check(a, &format!("user{i}"), 50), Ok(()));
            l.record_failure(a, &format!("user{i}"), 50);
        }
        assert_eq!(l.check(a, "someone-new", 50), Err(Locked { until: 51 }));
        // Another address is not.
        assert_eq!(l.check(src("192.0.2.2"), "someone-new", 50), Ok(()));
    }

    #[test]
    fn ipv6_sources_count_by_slash_64() {
        let a = src("[2001:db8:1:2:aaaa::1]:4000");
        let b = src("2001:db8:1:2:bbbb::2");
        let c = src("2001:db8:1:3::1");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.unwrap().to_string(), "2001:db8:1:2::/64");
        assert_eq!(src("::ffff:192.0.2.7"), src("192.0.2.7:1"));
        assert_eq!(Source::parse("not an address"), None);
        assert_eq!(Source::parse(""), None);
    }

    /// Without an address (a C++ msg_server), TeamTalk's threshold per
    /// name, but delays instead of a 30-minute lock.
    #[test]
    fn without_an_address_the_name_alone_counts_with_the_old_threshold() {
        let l = LoginLimiter::new();
        for i in 0..NAME_LOCK_AFTER - 1 {
            l.record_failure(None, "carol", 10 + i);
        }
        assert_eq!(l.check(None, "carol", 30), Ok(()), "ten are tolerated");
        l.record_failure(None, "carol", 30);
        assert_eq!(l.check(None, "carol", 30), Err(Locked { until: 31 }));
        // Names with an address are other keys.
        assert_eq!(l.check(src("192.0.2.1"), "carol", 30), Ok(()));
        l.record_success(None, "carol");
        assert_eq!(l.check(None, "carol", 30), Ok(()));
    }

    #[test]
    fn success_forgets_the_pair_not_the_address() {
        let l = LoginLimiter::new();
        let a = src("192.0.2.1");
        for _ in 0..PAIR_LOCK_AFTER {
            l.record_failure(a, "dave", 500);
        }
        assert!(l.check(a, "dave", 500).is_err());
        l.record_success(a, "dave");
        assert_eq!(l.check(a, "dave", 500), Ok(()));
        assert_eq!(l.tracked(), 1, "the address entry stays");
    }

    #[test]
    fn keys_are_forgotten_after_a_quiet_half_hour() {
        let l = LoginLimiter::new();
        let a = src("192.0.2.1");
        for _ in 0..PAIR_LOCK_AFTER + 3 {
            l.record_failure(a, "eve", 1_000);
        }
        assert!(l.check(a, "eve", 1_000).is_err());
        assert_eq!(l.check(a, "eve", 1_000 + FORGET_AFTER_SECS + 1), Ok(()));
        assert_eq!(l.tracked(), 0, "the pair and the address are forgotten");
        // Counting starts again from one.
        l.record_failure(a, "eve", 1_000 + FORGET_AFTER_SECS + 2);
        assert_eq!(l.check(a, "eve", 1_000 + FORGET_AFTER_SECS + 2), Ok(()));
    }

    #[test]
    fn clock_going_backwards_does_not_panic_or_unlock() {
        let l = LoginLimiter::new();
        for i in 0..NAME_LOCK_AFTER + 3 {
            l.record_failure(None, "eve", 5_000 + i);
        }
        assert!(l.check(None, "eve", 0).is_err());
        l.record_failure(None, "eve", 0);
    }

    /// The table is bounded in bytes, however long the names: 150
    /// one-megabyte names are charged what they hold and refused room.
    #[test]
    fn the_byte_budget_is_a_hard_bound() {
        let l = LoginLimiter::with_max_bytes(10 * (ENTRY_OVERHEAD + 10));
        for i in 0..1_000u32 {
            l.record_failure(src("192.0.2.1"), &format!("name{i:06}"), 7);
            assert!(l.bytes() <= l.max_bytes(), "{}", l.bytes());
        }
        assert!(l.untracked() > 0);
        let big = "x".repeat(1 << 20);
        for _ in 0..150 {
            l.record_failure(None, &big, 7);
        }
        assert!(l.bytes() <= l.max_bytes());
        // Forgotten entries make room again.
        let later = 7 + FORGET_AFTER_SECS + 1;
        l.record_failure(src("192.0.2.9"), "fresh", later);
        assert!(l.check(src("192.0.2.9"), "fresh", later).is_ok());
        assert_eq!(l.tracked(), 2);
        assert_eq!(l.bytes(), 2 * ENTRY_OVERHEAD + "fresh".len());
    }
}
