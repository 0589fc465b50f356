//! A histogram made of atomics, for the request path.
//!
//! prometheus-client's own `Histogram` takes a lock on every observation; a memory hit must pay only atomic
//! adds, so observations land here (one bucket add and one sum add) and are read out at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{MetricEncoder, NoLabelSet};

/// Durations counted into fixed buckets, with their sum. The buckets are bounded by seconds in the exposition
/// and by whole nanoseconds inside, so an observation is integer compares and two atomic adds.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in seconds, ascending, as written in `le`.
    bounds: &'static [f64],
    /// The same bounds in nanoseconds.
    bounds_nanos: Box<[u64]>,
    /// Observations per bucket, not cumulative; one more than `bounds` (the `+Inf` bucket).
    counts: Box<[AtomicU64]>,
    /// Sum of all observations in nanoseconds (584 years of them fit).
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            bounds_nanos: bounds.iter().map(|seconds| (seconds * 1e9) as u64).collect(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self.bounds_nanos.iter().position(|&bound| nanos <= bound).unwrap_or(self.bounds.len());
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|count| count.load(Ordering::Relaxed)).sum()
    }

    /// Writes `_sum`, `_count` and the `_bucket` series. The count is the buckets' total, so `+Inf` always equals
    /// `_count` even while observations land during the scrape.
    pub fn encode(&self, encoder: &mut MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(self.counts.len());
        let upper = self.bounds.iter().copied().chain(std::iter::once(f64::INFINITY));
        for (bound, count) in upper.zip(self.counts.iter()) {
            buckets.push((bound, count.load(Ordering::Relaxed)));
        }
        let count = buckets.iter().map(|(_, count)| count).sum();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let histogram = Histogram::new(&[0.001, 0.01]);
        histogram.observe(Duration::from_micros(1000));
        histogram.observe(Duration::from_micros(1001));
        histogram.observe(Duration::from_secs(3));
        let counts: Vec<u64> = histogram.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(counts, [1, 1, 1]);
        assert_eq!(histogram.count(), 3);
        assert_eq!(histogram.sum_nanos.load(Ordering::Relaxed), 3_002_001_000);
    }
}
