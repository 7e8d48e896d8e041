//! One log line per interval for events a flood could multiply.
//!
//! A refused login, a kicked session or a stranger on a server port is
//! worth a line, but a client (or an attacker) can cause thousands a
//! second. A [`LogGate`] lets the first through, counts the next ones
//! silently (they still go to `debug!` and to the daemon's counters), and
//! reports how many it held back with the next line it lets through.

/// How long a gate stays shut after letting a line through, in seconds.
pub(crate) const LOG_GATE_SECS: u64 = 10;

/// The gate itself. `T` is the caller's clock: an `Instant` in the runner,
/// unix seconds in the Apps (whose time is passed in).
#[derive(Debug, Clone)]
pub(crate) struct LogGate<T> {
    next: Option<T>,
    suppressed: u64,
}

impl<T> Default for LogGate<T> {
    fn default() -> Self {
        Self {
            next: None,
            suppressed: 0,
        }
    }
}

impl<T: PartialOrd + Copy> LogGate<T> {
    /// `Some(lines held back since the last one)` when a line may be
    /// written at `now`; the gate then stays shut until `reopen`.
    pub(crate) fn pass(&mut self, now: T, reopen: T) -> Option<u64> {
        if self.next.is_some_and(|n| now < n) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(reopen);
        Some(std::mem::take(&mut self.suppressed))
    }

    /// [`pass`](Self::pass) for a clock in unix seconds.
    pub(crate) fn pass_secs(&mut self, now: T) -> Option<u64>
    where
        T: Into<u64> + TryFrom<u64>,
    {
        let reopen = T::try_from(now.into().saturating_add(LOG_GATE_SECS)).unwrap_or(now);
        self.pass(now, reopen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let mut g = LogGate::<u32>::default();
        assert_eq!(g.pass_secs(100), Some(0));
        assert_eq!(g.pass_secs(100), None);
        assert_eq!(g.pass_secs(109), None);
        assert_eq!(g.pass_secs(110), Some(2));
        assert_eq!(g.pass_secs(111), None);
        assert_eq!(g.pass_secs(200), Some(1));
    }
}
