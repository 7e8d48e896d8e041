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
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    deadlines: [Option<Instant>; Timer::COUNT],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = Some(at);
    }

    pub(crate) fn clear(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    pub(crate) fn clear_all(&mut self) {
        self.deadlines = [None; Timer::COUNT];
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer as usize]
    }

    /// The earliest armed deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
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
}
