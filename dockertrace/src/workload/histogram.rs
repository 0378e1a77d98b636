//! A fixed-memory log-linear histogram for round-trip times.
//!
//! Values (nanoseconds) below `2 * SUB_COUNT` get one bucket each; above that every power of two
//! is split into `SUB_COUNT` equal buckets, like HdrHistogram with 7 significant bits. A bucket is
//! at most 1/128 of its lower bound wide and percentiles report its midpoint, so the relative error
//! stays under 0.4%. Memory is fixed (30 KiB) however long the run.

/// Bits of linear resolution inside each power of two.
const SUB_BITS: u32 = 7;
/// Buckets per power of two.
const SUB_COUNT: u64 = 1 << SUB_BITS;
/// Values below this are recorded exactly.
const LINEAR_LIMIT: u64 = 2 * SUB_COUNT;
/// Highest bit a recorded value may have; larger values land in the top bucket (2^36 ns ≈ 69 s).
const MAX_MSB: u32 = 35;
/// Largest value with its own bucket.
const MAX_TRACKED: u64 = (1 << (MAX_MSB + 1)) - 1;
/// Total number of buckets.
const BUCKETS: usize = (LINEAR_LIMIT + (MAX_MSB - SUB_BITS) as u64 * SUB_COUNT) as usize;

/// Counts of values in log-linear buckets, plus exact count, min, max and sum.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
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

impl Histogram {
    /// An empty histogram (allocates its buckets once).
    pub(crate) fn new() -> Self {
        Self { counts: vec![0; BUCKETS].into_boxed_slice(), total: 0, min: u64::MAX, max: 0, sum: 0 }
    }

    /// Adds one value.
    pub(crate) fn record(&mut self, value: u64) {
        self.counts[bucket_index(value)] += 1;
        self.total += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum += u128::from(value);
    }

    /// Adds every value recorded in `other`.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Number of recorded values.
    pub(crate) fn count(&self) -> u64 {
        self.total
    }

    /// Largest recorded value (exact), 0 when empty.
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// Arithmetic mean (exact), 0 when empty.
    pub(crate) fn mean(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.sum as f64 / self.total as f64
    }

    /// The value at quantile `q` (0.0..=1.0), within the bucket error; 0 when empty.
    pub(crate) fn value_at_quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_midpoint(index).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

/// The bucket a value falls in.
fn bucket_index(value: u64) -> usize {
    let value = value.min(MAX_TRACKED);
    if value < LINEAR_LIMIT {
        return value as usize;
    }
    let msb = 63 - value.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = (value >> shift) - SUB_COUNT;
    (LINEAR_LIMIT + u64::from(shift - 1) * SUB_COUNT + sub) as usize
}

/// The middle of the value range a bucket covers.
fn bucket_midpoint(index: usize) -> u64 {
    let index = index as u64;
    if index < LINEAR_LIMIT {
        return index;
    }
    let offset = index - LINEAR_LIMIT;
    let shift = offset / SUB_COUNT + 1;
    let low = (offset % SUB_COUNT + SUB_COUNT) << shift;
    low + ((1u64 << shift) - 1) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(actual: u64, expected: f64, tolerance: f64) {
        let error = (actual as f64 - expected).abs() / expected;
        assert!(
            error <= tolerance,
            "got {actual}, expected {expected} (relative error {error:.4} > {tolerance})"
        );
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.value_at_quantile(0.5), 50);
        assert_eq!(h.value_at_quantile(0.99), 99);
        assert_eq!(h.value_at_quantile(1.0), 100);
        assert_eq!(h.value_at_quantile(0.0), 1);
        assert_eq!(h.max(), 100);
        assert!((h.mean() - 50.5).abs() < 1e-9);
    }

    #[test]
    fn percentiles_of_large_values_within_one_percent() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 1_000);
        }
        assert_close(h.value_at_quantile(0.5), 50_000_000.0, 0.01);
        assert_close(h.value_at_quantile(0.99), 99_000_000.0, 0.01);
        assert_close(h.value_at_quantile(0.999), 99_900_000.0, 0.01);
        assert_eq!(h.max(), 100_000_000);
        assert_eq!(h.count(), 100_000);
        assert!((h.mean() - 50_000_500.0).abs() < 1e-3);
    }

    #[test]
    fn bucket_index_and_midpoint_agree() {
        for v in [0, 1, 255, 256, 257, 511, 512, 1_000, 123_456_789, MAX_TRACKED] {
            let mid = bucket_midpoint(bucket_index(v));
            let error = (mid as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(error < 0.004, "value {v} -> midpoint {mid}");
        }
        assert_eq!(bucket_index(MAX_TRACKED), BUCKETS - 1);
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn huge_values_clamp_but_max_is_exact() {
        let mut h = Histogram::new();
        h.record(u64::MAX / 2);
        assert_eq!(h.max(), u64::MAX / 2);
        assert_eq!(h.value_at_quantile(0.5), u64::MAX / 2);
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        (1..=50).for_each(|v| a.record(v));
        (51..=100).for_each(|v| b.record(v));
        a.merge(&b);
        assert_eq!(a.count(), 100);
        assert_eq!(a.value_at_quantile(0.5), 50);
        assert_eq!(a.max(), 100);
        assert_eq!(a.value_at_quantile(0.0), 1);
    }

    #[test]
    fn empty_histogram_reports_zero() {
        let h = Histogram::new();
        assert_eq!(h.value_at_quantile(0.5), 0);
        assert_eq!(h.mean(), 0.0);
        assert_eq!(h.count(), 0);
    }
}
