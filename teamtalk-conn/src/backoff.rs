//! [`Backoff`]: reconnect delays for outbound links.

use std::time::Duration;

/// TeamTalk's smallest reconnect wait, in 1 s ticks (`MIN_RECONNECT_CNT`).
pub const TEAMTALK_MIN_RECONNECT: Duration = Duration::from_secs(4);
/// TeamTalk's largest reconnect wait before wrapping back to the minimum
/// (`MAX_RECONNECT_CNT`).
pub const TEAMTALK_MAX_RECONNECT: Duration = Duration::from_secs(64);
/// First wait of the default exponential schedule.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Cap of the default exponential schedule.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A reconnect delay schedule.
///
/// Two schedules:
/// - [`Backoff::teamtalk`] reproduces `ServInfo.h` exactly: waits of 4, 8,
///   16, 32 and 64 s, then back to 4 s, with no jitter. Use it when a
///   deployment must behave like the C++ daemons.
/// - [`Backoff::exponential`] (our default) doubles from an initial delay
///   up to a cap and draws each wait from `[d/2, d]` with a seeded PRNG, so
///   that many msg_servers restarting together do not reconnect to a
///   db_proxy in lock-step. The PRNG lives in the value, so a given seed
///   always yields the same sequence and tests stay deterministic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    mode: Mode,
    /// Failures since the last success (saturating).
    attempt: u32,
    rng: SplitMix64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    TeamTalk,
    Exponential { initial: Duration, max: Duration },
}

impl Backoff {
    /// TeamTalk's schedule: 4, 8, 16, 32, 64, 4, 8, … seconds.
    ///
    /// TeamTalk counts 1 s timer ticks; the waits here are the same whole
    /// seconds, scheduled exactly instead of polled.
    #[must_use]
    pub fn teamtalk() -> Self {
        Self {
            mode: Mode::TeamTalk,
            attempt: 0,
            rng: SplitMix64(0),
        }
    }

    /// Capped exponential backoff with jitter: the `n`-th wait after a
    /// success is drawn uniformly from `[d/2, d]` where
    /// `d = min(max, initial * 2^n)`.
    #[must_use]
    pub fn exponential(initial: Duration, max: Duration, seed: u64) -> Self {
        Self {
            mode: Mode::Exponential {
                initial,
                max: max.max(initial),
            },
            attempt: 0,
            rng: SplitMix64(seed),
        }
    }

    /// The default schedule: exponential from 1 s, capped at 60 s.
    #[must_use]
    pub fn default_jittered(seed: u64) -> Self {
        Self::exponential(DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_BACKOFF, seed)
    }

    /// The wait before the next connect attempt; advances the schedule.
    pub fn next_delay(&mut self) -> Duration {
        let attempt = self.attempt;
        self.attempt = self.attempt.saturating_add(1);
        match self.mode {
            Mode::TeamTalk => TEAMTALK_MIN_RECONNECT * (1 << (attempt % 5)),
            Mode::Exponential { initial, max } => {
                let ceiling = initial
                    .checked_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
                    .map_or(max, |d| d.min(max));
                let half = ceiling / 2;
                let span = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
                half + Duration::from_nanos(self.rng.below_inclusive(span))
            }
        }
    }

    /// Starts the schedule over: called when a connection succeeds.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, seedable, and good enough
/// to spread reconnects. Not for anything security-related.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=n` (Lemire's multiply-shift; the bias is below
    /// 2^-64 per draw, irrelevant here).
    fn below_inclusive(&mut self, n: u64) -> u64 {
        let range = u128::from(n) + 1;
        u64::try_from((u128::from(self.next_u64()) * range) >> 64).unwrap_or(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teamtalk_schedule_wraps_after_64_and_resets_on_success() {
        let mut b = Backoff::teamtalk();
        let secs: Vec<u64> = (0..11).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(secs, [4, 8, 16, 32, 64, 4, 8, 16, 32, 64, 4]);
        b.next_delay();
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(4));
    }

    #[test]
    fn exponential_stays_within_half_to_full_ceiling() {
        let mut b = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60), 7);
        for n in 0..200u32 {
            let ceiling = Duration::from_secs(1u64 << n.min(6)).min(Duration::from_secs(60));
            let d = b.next_delay();
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {n}: {d:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn exponential_is_deterministic_per_seed_and_varies_across_seeds() {
        let run = |seed| {
            let mut b = Backoff::default_jittered(seed);
            (0..10).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        // Jitter actually spreads: not every wait sits on the ceiling.
        let waits = run(42);
        assert!(waits.iter().any(|d| d.subsec_nanos() != 0));
    }

    #[test]
    fn splitmix_matches_reference_vector() {
        // First outputs of SplitMix64 seeded with 0 (reference C code).
        let mut r = SplitMix64(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }
}
