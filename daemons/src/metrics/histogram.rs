//! A histogram with fixed bucket bounds, safe to observe from any thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bounds in seconds for store and request latencies: 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Observations counted into fixed buckets; lock-free (one relaxed atomic
/// add per observation plus a compare-and-swap loop on the sum), so it can
/// sit on a hot path.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound (`value <= bound`, first match) plus the overflow.
    counts: Box<[AtomicU64]>,
    /// `f64` bits of the sum of observations.
    sum: AtomicU64,
}

/// A histogram's contents at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds, ascending.
    pub bounds: &'static [f64],
    /// Observations per bound, not cumulative (the renderer accumulates).
    pub counts: Vec<u64>,
    /// All observations, the overflow bucket included.
    pub count: u64,
    /// Sum of the observed values.
    pub sum: f64,
}

impl Histogram {
    /// An empty histogram over `bounds`, which must be finite and
    /// ascending (bounds that are not are dropped, so a bad table cannot
    /// produce invalid output).
    #[must_use]
    pub fn new(bounds: &'static [f64]) -> Self {
        let ordered = bounds
            .windows(2)
            .position(|w| w[0].partial_cmp(&w[1]) != Some(std::cmp::Ordering::Less))
            .map_or(bounds.len(), |i| i + 1);
        let bounds = &bounds[..ordered];
        let finite = bounds.iter().take_while(|b| b.is_finite()).count();
        let bounds = &bounds[..finite];
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// A histogram over [`LATENCY_BUCKETS`].
    #[must_use]
    pub fn latency() -> Self {
        Self::new(LATENCY_BUCKETS)
    }

    /// Records one value; NaN is ignored.
    pub fn observe(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let mut cur = self.sum.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(cur) + value).to_bits();
            match self
                .sum
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// The current contents. `count` is the sum of the bucket counts read,
    /// so the rendered `+Inf` bucket is never below a finite one.
    #[must_use]
    pub fn snapshot(&self) -> HistogramSnapshot {
        let all: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        HistogramSnapshot {
            bounds: self.bounds,
            counts: all[..self.bounds.len()].to_vec(),
            count: all.iter().fold(0u64, |a, b| a.saturating_add(*b)),
            sum: f64::from_bits(self.sum.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_into_the_first_bucket_that_holds_the_value() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 3.0, -1.0, f64::NAN, f64::INFINITY] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.counts, vec![3, 1]);
        assert_eq!(s.count, 6);
        assert_eq!(s.sum, f64::INFINITY);
        h.observe_duration(Duration::from_millis(1500));
        assert_eq!(h.snapshot().counts, vec![3, 2]);
    }

    #[test]
    fn bad_bound_tables_are_cut_where_they_go_wrong() {
        assert_eq!(Histogram::new(&[1.0, 0.5, 2.0]).snapshot().bounds, &[1.0]);
        assert_eq!(Histogram::new(&[1.0, 1.0]).snapshot().bounds, &[1.0]);
        assert_eq!(
            Histogram::new(&[1.0, f64::INFINITY]).snapshot().bounds,
            &[1.0]
        );
        assert!(Histogram::new(&[f64::NAN]).snapshot().bounds.is_empty());
        assert_eq!(Histogram::latency().snapshot().bounds, LATENCY_BUCKETS);
    }
}
