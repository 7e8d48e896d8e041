//! Pacing of one sender under `--rate`: a token bucket per flow.
//!
//! `--rate R` offers R messages/s in total, split evenly over the senders.
//! Each sender is paced on its own, never from a pool shared with the
//! others: when a pooled budget let a sender whose window was free use the
//! share of one stalled on its acks, that sender went over its share, and
//! TeamTalk's msg_server silently drops what a user sends beyond 20
//! messages per second (`MAX_MSG_CNT_PER_SECOND`), which a run at
//! `--rate 20 × senders` then counted as lost. The bucket holds little, so
//! a sender back from a stall does not catch up in a burst either: in any
//! one second it sends at most its share plus [`Pacer::burst`].

use std::time::{Duration, Instant};

/// How long a sender's allowance may pile up while it cannot send (its
/// window is full, or it is not ready): enough that the worker's 1 ms
/// polling never starves a fast sender, small enough that a slow one
/// (a few messages/s) may only send one message early.
const BURST_TIME: Duration = Duration::from_millis(50);

/// A token bucket: `per_sec` tokens a second, at most [`Pacer::burst`]
/// held.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl Pacer {
    /// A sender's pacer at `per_sec` messages/s (finite, positive). The
    /// bucket starts with one message's worth, so sending starts at once.
    pub(crate) fn new(per_sec: f64) -> Self {
        let per_sec = if per_sec.is_finite() && per_sec > 0.0 {
            per_sec
        } else {
            f64::MIN_POSITIVE
        };
        let burst = (per_sec * BURST_TIME.as_secs_f64()).max(1.0);
        Self {
            per_sec,
            burst,
            tokens: 1.0,
            last: None,
        }
    }

    /// A pacer whose first message is due `phase` (0 to 1) of an interval
    /// later than [`Pacer::new`]'s: senders given phases spread evenly send
    /// in turn instead of all in the same instant (which measured queueing
    /// in bursts: at 250 senders × 20/s, p50 3.8 ms instead of 0.36).
    pub(crate) fn staggered(per_sec: f64, phase: f64) -> Self {
        let mut p = Self::new(per_sec);
        p.tokens = 1.0
            - if phase.is_finite() {
                phase.clamp(0.0, 1.0)
            } else {
                0.0
            };
        p
    }

    /// The most messages held at once: what a sender may send at one
    /// instant after it could not send for a while.
    #[cfg(test)]
    fn burst(&self) -> f64 {
        self.burst
    }

    /// Messages this sender may send now (whole tokens held after
    /// refilling up to `now`); they are taken with [`Pacer::take`].
    pub(crate) fn available(&mut self, now: Instant) -> u64 {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.per_sec).min(self.burst);
        }
        self.last = Some(now);
        // Whole tokens; `tokens` is at most `burst`, a small finite number.
        self.tokens.floor().max(0.0) as u64
    }

    /// Takes `n` messages' tokens (at most what [`Pacer::available`] said).
    pub(crate) fn take(&mut self, n: u64) {
        self.tokens = (self.tokens - n as f64).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staggered_pacers_take_turns() {
        let start = crate::clock::now();
        let n = 4;
        let mut pacers: Vec<Pacer> = (0..n)
            .map(|i| Pacer::staggered(10.0, f64::from(i) / f64::from(n)))
            .collect();
        // At 10/s an interval is 100 ms: pacer i's first token comes at
        // i × 25 ms, so each 5 ms step finds at most one pacer ready.
        let mut first = vec![None; pacers.len()];
        for step in 0..40u64 {
            let now = start + Duration::from_millis(step * 5);
            let mut ready = 0;
            for (i, p) in pacers.iter_mut().enumerate() {
                if p.available(now) > 0 {
                    p.take(1);
                    ready += 1;
                    first[i].get_or_insert(step * 5);
                }
            }
            assert!(ready <= 1, "step {step}: {ready} pacers at once");
        }
        assert_eq!(first, [Some(0), Some(25), Some(50), Some(75)]);
    }

    /// Drives a pacer every `tick` for `secs`, sending whatever it allows
    /// while `can_send(t)` holds; returns the send times (from start).
    fn drive(
        per_sec: f64,
        tick: Duration,
        secs: u64,
        can_send: impl Fn(Duration) -> bool,
    ) -> Vec<Duration> {
        let start = crate::clock::now();
        let mut p = Pacer::new(per_sec);
        let mut sends = Vec::new();
        let mut t = Duration::ZERO;
        while t < Duration::from_secs(secs) {
            let n = p.available(start + t);
            if can_send(t) {
                p.take(n);
                sends.extend(std::iter::repeat_n(t, n as usize));
            }
            t += tick;
        }
        sends
    }

    /// The most sends in any window of `width` starting at a send.
    fn max_in_window(sends: &[Duration], width: Duration) -> usize {
        (0..sends.len())
            .map(|i| {
                sends[i..]
                    .iter()
                    .take_while(|&&s| s < sends[i] + width)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn steady_rate_is_kept() {
        for (rate, tick_us) in [(10.0, 1000), (18.0, 1000), (500.0, 1000), (5000.0, 5000)] {
            let sends = drive(rate, Duration::from_micros(tick_us), 10, |_| true);
            let want = rate * 10.0;
            let got = sends.len() as f64;
            assert!(
                (got - want).abs() <= want * 0.01 + 1.0,
                "rate {rate}: {got} sends in 10 s, want {want}"
            );
        }
    }

    #[test]
    fn no_second_exceeds_the_share_after_a_stall() {
        // The sender's window is full from 2 s to 5 s (acks stalled), as
        // when TeamTalk's db_proxy hangs on a message: on resuming it must
        // not catch up, or msg_server's 20-per-second rule drops the
        // excess.
        let stalled = |t: Duration| !(Duration::from_secs(2)..Duration::from_secs(5)).contains(&t);
        let sends = drive(18.0, Duration::from_millis(1), 10, stalled);
        assert!(max_in_window(&sends, Duration::from_secs(1)) <= 19);
        assert!(!sends.is_empty());
        // No sends while stalled, and sending resumed afterwards.
        assert!(
            !sends
                .iter()
                .any(|s| (Duration::from_secs(2)..Duration::from_secs(5)).contains(s))
        );
        assert!(sends.iter().any(|&s| s >= Duration::from_secs(5)));
    }

    #[test]
    fn catch_up_is_bounded_by_the_burst() {
        let p = Pacer::new(20.0);
        assert!((p.burst() - 1.0).abs() < f64::EPSILON);
        let p = Pacer::new(10_000.0);
        assert!((p.burst() - 500.0).abs() < 1e-9);
        let start = crate::clock::now();
        let mut p = Pacer::new(1000.0);
        assert_eq!(p.available(start), 1);
        p.take(1);
        // A minute without sending still allows only the burst.
        assert_eq!(p.available(start + Duration::from_secs(60)), 50);
    }

    #[test]
    fn nonsense_rates_send_nothing_rather_than_panic() {
        let start = crate::clock::now();
        for r in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut p = Pacer::new(r);
            let n = p.available(start);
            p.take(n);
            assert_eq!(p.available(start + Duration::from_secs(3600)), 0);
        }
    }

    #[test]
    fn a_clock_going_backwards_adds_nothing() {
        let start = crate::clock::now() + Duration::from_secs(10);
        let mut p = Pacer::new(100.0);
        let n = p.available(start);
        p.take(n);
        assert_eq!(p.available(start - Duration::from_secs(5)), 0);
    }
}
