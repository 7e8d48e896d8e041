//! TeamTalk's login-failure limiter: too many wrong passwords for one user
//! name within half an hour and db_proxy stops checking passwords for it.
//!
//! Kept from TeamTalk because it is what slows down password guessing over
//! the plain-TCP protocol. The rule, per user name as the client typed it:
//!
//! - failures older than [`FAILURE_WINDOW_SECS`] are forgotten;
//! - while more than [`MAX_FAILURES`] remain, a login is refused without
//!   looking at the password (result code 6), and the refusal is not itself
//!   counted, so the name unlocks 30 minutes after its last counted failure;
//! - a successful login forgets every failure of the name.
//!
//! Time is passed in (Unix seconds), so tests move it by hand.
//!
//! TeamTalk's table grew with every name ever tried. Here it holds at most
//! [`MAX_TRACKED_NAMES`] names: when full, expired entries are dropped, and if
//! that is not enough the new name is not tracked (logged). Someone spraying
//! that many names can disable the limiter for the rest of the window, which
//! is better than letting them exhaust the daemon's memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

/// Failures tolerated within the window; the next attempt after one more is
/// refused (TeamTalk: "more than 10").
pub const MAX_FAILURES: usize = 10;
/// How long a failure counts, in seconds (TeamTalk: 30 minutes).
pub const FAILURE_WINDOW_SECS: u32 = 30 * 60;
/// Most user names tracked at once.
pub const MAX_TRACKED_NAMES: usize = 100_000;

/// The refusal: the name is locked until `until` (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    /// When the oldest counted failure leaves the window and logins are
    /// checked again.
    pub until: u32,
}

/// Per-name failure times. Thread-safe; share it behind the handler.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    /// Failure times per name, newest at the back.
    failures: Mutex<HashMap<String, VecDeque<u32>>>,
}

fn expired(t: u32, now: u32) -> bool {
    now.saturating_sub(t) > FAILURE_WINDOW_SECS
}

impl LoginLimiter {
    /// An empty limiter.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<u32>>> {
        // The table is only ever left consistent (no multi-step updates), so
        // a panic elsewhere while it was held does not spoil it.
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `name` may try a password at `now`.
    ///
    /// # Errors
    /// [`Locked`] when the name has more than [`MAX_FAILURES`] failures in
    /// the window.
    pub fn check(&self, name: &str, now: u32) -> Result<(), Locked> {
        let mut table = self.table();
        let Some(times) = table.get_mut(name) else {
            return Ok(());
        };
        while times.front().is_some_and(|&t| expired(t, now)) {
            times.pop_front();
        }
        if times.is_empty() {
            table.remove(name);
            return Ok(());
        }
        if times.len() > MAX_FAILURES {
            // The name unlocks once enough failures age out to leave exactly
            // MAX_FAILURES: the (len - MAX_FAILURES)-th oldest decides.
            let idx = times.len() - MAX_FAILURES - 1;
            let decisive = times.get(idx).copied().unwrap_or(now);
            return Err(Locked {
                until: decisive.saturating_add(FAILURE_WINDOW_SECS + 1),
            });
        }
        Ok(())
    }

    /// Counts a wrong password (or unknown name) for `name` at `now`.
    pub fn record_failure(&self, name: &str, now: u32) {
        let mut table = self.table();
        if !table.contains_key(name) && table.len() >= MAX_TRACKED_NAMES {
            table.retain(|_, times| times.back().is_some_and(|&t| !expired(t, now)));
            if table.len() >= MAX_TRACKED_NAMES {
                tracing::warn!(
                    names = table.len(),
                    "login limiter full; a failure for a new name is not counted"
                );
                return;
            }
        }
        let times = table.entry(name.to_owned()).or_default();
        times.push_back(now);
        // Only the newest MAX_FAILURES + 1 matter for the decision.
        while times.len() > MAX_FAILURES + 1 {
            times.pop_front();
        }
    }

    /// Forgets the failures of `name` after a successful login.
    pub fn record_success(&self, name: &str) {
        self.table().remove(name);
    }

    /// Number of names currently tracked (for tests and stats).
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.table().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eleven_failures_lock_the_name_for_thirty_minutes() {
        let l = LoginLimiter::new();
        let t0 = 1_000_000;
        for i in 0..=MAX_FAILURES as u32 {
            assert_eq!(l.check("alice", t0 + i), Ok(()), "attempt {i}");
            l.record_failure("alice", t0 + i);
        }
        // Eleven failures at t0..=t0+10: the twelfth attempt is refused.
        let locked = l.check("alice", t0 + 11).unwrap_err();
        // Other names are not affected.
        assert_eq!(l.check("bob", t0 + 11), Ok(()));
        // Still locked just before the oldest failure leaves the window.
        assert!(l.check("alice", t0 + FAILURE_WINDOW_SECS).is_err());
        assert_eq!(locked.until, t0 + FAILURE_WINDOW_SECS + 1);
        // One second later the first failure has aged out: ten remain.
        assert_eq!(l.check("alice", locked.until), Ok(()));
    }

    #[test]
    fn refusals_are_not_counted() {
        let l = LoginLimiter::new();
        for i in 0..=MAX_FAILURES as u32 {
            l.record_failure("n", 100 + i);
        }
        for t in 200..300 {
            assert!(l.check("n", t).is_err());
        }
        assert_eq!(l.check("n", 100 + FAILURE_WINDOW_SECS + 1), Ok(()));
    }

    #[test]
    fn ten_failures_are_tolerated_and_success_resets() {
        let l = LoginLimiter::new();
        for i in 0..MAX_FAILURES as u32 {
            l.record_failure("carol", 50 + i);
        }
        assert_eq!(l.check("carol", 70), Ok(()));
        l.record_failure("carol", 70);
        assert!(l.check("carol", 71).is_err());
        l.record_success("carol");
        assert_eq!(l.check("carol", 72), Ok(()));
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn spread_out_failures_never_lock() {
        let l = LoginLimiter::new();
        // One failure every 3 minutes: at most 10 in any 30-minute window.
        for i in 0..100u32 {
            let now = 10_000 + i * 181;
            assert_eq!(l.check("dave", now), Ok(()), "attempt {i}");
            l.record_failure("dave", now);
        }
    }

    #[test]
    fn clock_going_backwards_does_not_panic_or_unlock() {
        let l = LoginLimiter::new();
        for i in 0..=MAX_FAILURES as u32 {
            l.record_failure("eve", 5_000 + i);
        }
        assert!(l.check("eve", 0).is_err());
    }
}
