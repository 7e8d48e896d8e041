//! A log-linear latency histogram: constant memory, O(1) record, mergeable.
//!
//! Values (nanoseconds) below 128 get a bucket each; above, every power of
//! two is split into 64 equal buckets, so a reported quantile is within
//! 1/64 (about 1.6 %) of the true value. That is plenty for p50…p99 of a
//! load test and needs no dependency: 3,776 `u64` counters per histogram,
//! one per worker thread, merged at the end.

/// Sub-buckets per power of two, as a bit count.
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Values below this are exact.
const LINEAR: u64 = 2 * SUB as u64;
/// Buckets for the whole `u64` range.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// Counts of values per bucket plus exact count, min, max and sum.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let mantissa = (v >> shift) as usize; // in SUB..2*SUB
    (shift as usize + 1) * SUB + (mantissa - SUB)
}

/// Highest value that lands in bucket `i`.
fn upper(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let shift = (i / SUB - 1) as u32;
    let mantissa = (i % SUB + SUB) as u64;
    let low = mantissa << shift;
    low.saturating_add((1u64 << shift) - 1)
}

impl Histogram {
    /// An empty histogram.
    #[must_use]
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// Adds one value.
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// How many values were recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Largest value recorded (exact), 0 when empty.
    #[must_use]
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Smallest value recorded (exact), 0 when empty.
    #[must_use]
    pub fn min(&self) -> u64 {
        if self.total == 0 { 0 } else { self.min }
    }

    /// Arithmetic mean (exact), 0 when empty.
    #[must_use]
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value below or at which a fraction `q` (0…1) of the values lie,
    /// within the bucket precision and never above the true maximum. 0 when
    /// empty.
    #[must_use]
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i).min(self.max).max(self.min);
            }
        }
        self.max
    }

    /// The histogram as JSON, for a worker process to hand to the process
    /// that aggregates a run: the non-empty buckets as `[index, count]`
    /// pairs, and the exact count, min, max and sum (the sum as a decimal
    /// string, since it may exceed what a JSON number keeps exactly).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let buckets: Vec<serde_json::Value> = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| serde_json::json!([i, c]))
            .collect();
        serde_json::json!({
            "buckets": buckets,
            "count": self.total,
            "min": self.min,
            "max": self.max,
            "sum": self.sum.to_string(),
        })
    }

    /// Reads what [`Histogram::to_json`] wrote; `None` when it is not
    /// that shape (a bucket index out of range, a count that does not
    /// add up).
    #[must_use]
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        let mut h = Self::new();
        for b in v.get("buckets")?.as_array()? {
            let pair = b.as_array()?;
            let (i, c) = (pair.first()?.as_u64()?, pair.get(1)?.as_u64()?);
            let slot = h.counts.get_mut(usize::try_from(i).ok()?)?;
            *slot = slot.checked_add(c)?;
        }
        h.total = v.get("count")?.as_u64()?;
        h.min = v.get("min")?.as_u64()?;
        h.max = v.get("max")?.as_u64()?;
        h.sum = v.get("sum")?.as_str()?.parse().ok()?;
        let mut bucketed: u64 = 0;
        for c in h.counts.iter() {
            bucketed = bucketed.checked_add(*c)?;
        }
        (bucketed == h.total).then_some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        for i in 0..BUCKETS - 1 {
            assert_eq!(upper(i) + 1, upper_low(i + 1), "bucket {i}");
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        assert_eq!(upper(BUCKETS - 1), u64::MAX);
    }

    fn upper_low(i: usize) -> u64 {
        if i < LINEAR as usize {
            i as u64
        } else {
            ((i % SUB + SUB) as u64) << (i / SUB - 1)
        }
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 50);
        assert_eq!(h.quantile(0.99), 99);
        assert_eq!(h.quantile(1.0), 100);
        assert_eq!((h.min(), h.max(), h.count()), (1, 100, 100));
        assert!((h.mean() - 50.5).abs() < 1e-9);
    }

    #[test]
    fn json_of_another_shape_is_refused() {
        use serde_json::json;
        let ok = json!({"buckets": [[3, 2]], "count": 2, "min": 3, "max": 3, "sum": "6"});
        assert_eq!(Histogram::from_json(&ok).map(|h| h.quantile(0.5)), Some(3));
        for bad in [
            json!({"buckets": [[BUCKETS, 1]], "count": 1, "min": 0, "max": 0, "sum": "0"}),
            json!({"buckets": [[3, 2]], "count": 5, "min": 3, "max": 3, "sum": "6"}),
            json!({"buckets": [[3, u64::MAX], [4, 1]], "count": 0, "min": 3, "max": 3, "sum": "6"}),
            json!({"buckets": [[3]], "count": 1, "min": 3, "max": 3, "sum": "3"}),
            json!({"buckets": [[3, 1]], "count": 1, "min": 3, "max": 3, "sum": "x"}),
            json!([]),
        ] {
            assert!(Histogram::from_json(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn empty_reports_zeroes() {
        let h = Histogram::new();
        assert_eq!(
            (h.quantile(0.99), h.max(), h.min(), h.count()),
            (0, 0, 0, 0)
        );
        assert!(h.mean().abs() < f64::EPSILON);
    }

    proptest! {
        #[test]
        fn quantiles_are_within_precision(mut values in proptest::collection::vec(0u64..10_000_000_000, 1..400), q in 0.0f64..=1.0) {
            let mut h = Histogram::new();
            for &v in &values {
                h.record(v);
            }
            values.sort_unstable();
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            let truth = values[rank - 1];
            let got = h.quantile(q);
            prop_assert!(got >= truth, "{got} < {truth}");
            prop_assert!(got - truth <= truth / SUB as u64, "{got} vs {truth}");
        }

        #[test]
        fn json_round_trips(values in proptest::collection::vec(any::<u64>(), 0..100)) {
            let mut h = Histogram::new();
            for &v in &values { h.record(v); }
            let back = Histogram::from_json(&h.to_json()).expect("reads back");
            prop_assert_eq!(&back.counts, &h.counts);
            prop_assert_eq!((back.count(), back.max(), back.min(), back.sum), (h.count(), h.max(), h.min(), h.sum));
        }

        #[test]
        fn merging_equals_recording_everything(a in proptest::collection::vec(any::<u64>(), 0..50), b in proptest::collection::vec(any::<u64>(), 0..50)) {
            let (mut ha, mut hb, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
            for &v in &a { ha.record(v); all.record(v); }
            for &v in &b { hb.record(v); all.record(v); }
            ha.merge(&hb);
            prop_assert_eq!(&ha.counts, &all.counts);
            prop_assert_eq!((ha.count(), ha.max(), ha.min()), (all.count(), all.max(), all.min()));
        }
    }
}
