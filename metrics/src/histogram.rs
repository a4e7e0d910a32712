//! A histogram with fixed buckets whose observations are atomics only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::family::MetricConstructor;
use prometheus_client::metrics::{MetricType, TypedMetric};

/// A Prometheus histogram over fixed upper bounds. Clones share their
/// counts. An observation is two relaxed atomic adds and one compare-and-swap
/// loop for the sum; a scrape may see a count and a sum one observation
/// apart, which Prometheus tolerates (Go's client does the same).
#[derive(Debug, Clone)]
pub struct AtomicHistogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Upper bounds, ascending; `+Inf` is implicit.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last is `+Inf`'s.
    counts: Box<[AtomicU64]>,
    /// The sum of observations, as `f64` bits.
    sum: AtomicU64,
}

impl AtomicHistogram {
    /// An empty histogram over `bounds` (ascending upper bounds).
    pub fn new(bounds: &'static [f64]) -> AtomicHistogram {
        AtomicHistogram {
            inner: Arc::new(Inner {
                bounds,
                counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum: AtomicU64::new(0f64.to_bits()),
            }),
        }
    }

    /// Counts `value` in the first bucket whose bound is at least `value`.
    pub fn observe(&self, value: f64) {
        let bucket = self.inner.bounds.partition_point(|&le| le < value);
        self.inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .inner
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    /// How many values were observed.
    pub fn count(&self) -> u64 {
        self.inner
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// The sum of the observed values.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.inner.sum.load(Ordering::Relaxed))
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.inner.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count: u64 = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Makes the histograms of a `Family` over the same bounds.
#[derive(Debug, Clone, Copy)]
pub struct HistogramConstructor(pub &'static [f64]);

impl MetricConstructor<AtomicHistogram> for HistogramConstructor {
    fn new_metric(&self) -> AtomicHistogram {
        AtomicHistogram::new(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn buckets_are_cumulative_with_inf_sum_and_count() {
        let h = AtomicHistogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 3.0] {
            h.observe(v);
        }
        assert_eq!(h.count(), 4);
        assert!((h.sum() - 3.65).abs() < 1e-9);
        let mut registry = Registry::default();
        registry.register("op_duration_seconds", "How long an op took", h);
        let text = crate::encode(&registry);
        for line in [
            "# TYPE op_duration_seconds histogram",
            "op_duration_seconds_bucket{le=\"0.1\"} 2",
            "op_duration_seconds_bucket{le=\"1\"} 3",
            "op_duration_seconds_bucket{le=\"+Inf\"} 4",
            "op_duration_seconds_count 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
