//! A fixed table of named deadlines (quinn's timer design): each machine
//! arms at most one deadline per [`Timer`], and its next wake-up is the
//! earliest armed one.

use std::time::Instant;

/// The deadlines a machine can wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// An outbound connect must complete by then.
    Connect,
    /// A link waits out its reconnect backoff until then.
    Backoff,
    /// Send a heartbeat: nothing was sent for the heartbeat interval.
    Heartbeat,
    /// Close: nothing was received for the idle timeout.
    Idle,
    /// Close: a client's login did not complete in time (sessions), or
    /// the login reply did not arrive in time (clients).
    Login,
    /// HTTP: the request head did not arrive in time (408).
    Header,
    /// HTTP: the request body did not arrive in time (408).
    Body,
    /// HTTP: the peer took none of the response for this long.
    Send,
    /// Close: the link-authentication handshake did not complete in time.
    Auth,
    /// The earliest deadline of a client's pending requests.
    Request,
    /// A client's logout must be over by then.
    Logout,
}

impl Timer {
    const COUNT: usize = 11;
    const ALL: [Self; Self::COUNT] = [
        Self::Connect,
        Self::Backoff,
        Self::Heartbeat,
        Self::Idle,
        Self::Login,
        Self::Header,
        Self::Body,
        Self::Send,
        Self::Auth,
        Self::Request,
        Self::Logout,
    ];
}

/// One optional deadline per [`Timer`].
///
/// Every connection carries one (a msg_server tens of thousands), so the
/// deadlines are kept as signed nanoseconds from the first one ever set
/// rather than as eleven `Option<Instant>`s: 104 bytes instead of 176, and
/// still exact (an `Instant` plus or minus whole nanoseconds is the same
/// `Instant` again).
#[derive(Debug, Clone)]
pub(crate) struct TimerTable {
    /// What the offsets count from: the first deadline set.
    base: Option<Instant>,
    /// Per timer, nanoseconds from `base`, or [`UNSET`].
    at: [i64; Timer::COUNT],
}

/// A disarmed timer in [`TimerTable::at`].
const UNSET: i64 = i64::MIN;

impl Default for TimerTable {
    fn default() -> Self {
        Self {
            base: None,
            at: [UNSET; Timer::COUNT],
        }
    }
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        let base = *self.base.get_or_insert(at);
        // Saturates ±292 years away (never `UNSET`): no deadline is that far.
        let nanos = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        self.at[timer as usize] = if at >= base {
            nanos(at - base)
        } else {
            -nanos(base - at)
        };
    }

    pub(crate) fn clear(&mut self, timer: Timer) {
        self.at[timer as usize] = UNSET;
    }

    pub(crate) fn clear_all(&mut self) {
        self.at = [UNSET; Timer::COUNT];
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.instant(self.at[timer as usize])
    }

    fn instant(&self, offset: i64) -> Option<Instant> {
        if offset == UNSET {
            return None;
        }
        let base = self.base?;
        let d = std::time::Duration::from_nanos(offset.unsigned_abs());
        if offset >= 0 {
            base.checked_add(d)
        } else {
            base.checked_sub(d)
        }
    }

    /// The earliest armed deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        let earliest = self.at.iter().copied().filter(|&o| o != UNSET).min()?;
        self.instant(earliest)
    }

    /// Disarms and returns the earliest timer whose deadline is `<= now`.
    /// Ties go to the timer declared first in [`Timer`].
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<Timer> {
        let mut best: Option<(Instant, Timer)> = None;
        for timer in Timer::ALL {
            if let Some(at) = self.get(timer)
                && at <= now
                && best.is_none_or(|(b, _)| at < b)
            {
                best = Some((at, timer));
            }
        }
        let (_, timer) = best?;
        self.clear(timer);
        Some(timer)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::tests::t0;

    #[test]
    fn next_is_the_earliest_and_pop_takes_expired_in_order() {
        let t = t0();
        let mut table = TimerTable::default();
        assert_eq!(table.next(), None);
        table.set(Timer::Idle, t + Duration::from_secs(30));
        table.set(Timer::Heartbeat, t + Duration::from_secs(5));
        assert_eq!(table.next(), Some(t + Duration::from_secs(5)));
        assert_eq!(table.pop_expired(t + Duration::from_secs(4)), None);
        let late = t + Duration::from_secs(31);
        assert_eq!(table.pop_expired(late), Some(Timer::Heartbeat));
        assert_eq!(table.pop_expired(late), Some(Timer::Idle));
        assert_eq!(table.pop_expired(late), None);
        assert_eq!(table.next(), None);
    }

    proptest::proptest! {
        /// Whatever is set, in any order and on either side of the first
        /// deadline, reads back exactly, and the earliest is `next`.
        #[test]
        fn deadlines_read_back_exactly(sets in proptest::collection::vec((0usize..Timer::COUNT, -3_600_000_000_000i64..3_600_000_000_000), 1..30)) {
            let origin = t0() + Duration::from_secs(7200);
            let mut table = TimerTable::default();
            let mut model: [Option<Instant>; Timer::COUNT] = [None; Timer::COUNT];
            for (i, off) in sets {
                let d = Duration::from_nanos(off.unsigned_abs());
                let at = if off >= 0 { origin + d } else { origin - d };
                table.set(Timer::ALL[i], at);
                model[i] = Some(at);
                for (k, want) in model.iter().enumerate() {
                    proptest::prop_assert_eq!(table.get(Timer::ALL[k]), *want);
                }
                proptest::prop_assert_eq!(table.next(), model.iter().flatten().min().copied());
            }
            table.clear_all();
            proptest::prop_assert_eq!(table.next(), None);
        }
    }
}
