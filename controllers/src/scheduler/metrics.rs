//! kube-scheduler's Prometheus series, read from a running scheduler's
//! [`SchedulerStats`] at each scrape:
//!
//! - `scheduler_schedule_attempts_total{result,profile}` — `scheduled`
//!   (bound), `unschedulable` (no node fitted), `error` (the bind failed);
//! - `scheduler_pending_pods{queue}` — `active`, `backoff`,
//!   `unschedulable`, `gated` (always 0: no scheduling gates here);
//! - `scheduler_pod_scheduling_sli_duration_seconds` — from a pod's entry in
//!   the queue to its bind (kube 1.33's name; kube also labels it with the
//!   attempts it took, which this one does not).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ballast_metrics::prometheus_client::collector::Collector;
use ballast_metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use ballast_metrics::prometheus_client::metrics::counter::ConstCounter;
use ballast_metrics::prometheus_client::metrics::gauge::ConstGauge;
use ballast_metrics::prometheus_client::metrics::MetricType;
use ballast_metrics::prometheus_client::registry::Registry;

use super::SchedulerStats;

/// kube-scheduler's buckets: 10 ms doubling 20 times.
pub(super) const SCHEDULING_LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92, 163.84,
    327.68, 655.36, 1310.72, 2621.44, 5242.88,
];

#[derive(Debug)]
struct StatsCollector {
    stats: Arc<SchedulerStats>,
    profile: String,
}

impl SchedulerStats {
    /// Registers this scheduler's series in `registry`, for the scheduler
    /// profile `profile` (its `--scheduler-name`).
    pub fn register(self: &Arc<Self>, registry: &mut Registry, profile: &str) {
        registry.register_collector(Box::new(StatsCollector {
            stats: self.clone(),
            profile: profile.to_string(),
        }));
    }
}

impl Collector for StatsCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.stats;
        {
            let mut d = e.encode_descriptor(
                "scheduler_schedule_attempts",
                "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler problem",
                None,
                MetricType::Counter,
            )?;
            for (result, value) in [
                ("scheduled", s.bound()),
                ("unschedulable", s.unschedulable()),
                ("error", s.bind_failures()),
            ] {
                let labels = [("result", result), ("profile", self.profile.as_str())];
                ConstCounter::new(value).encode(d.encode_family(&labels)?)?;
            }
        }
        {
            let mut d = e.encode_descriptor(
                "scheduler_pending_pods",
                "Number of pending pods, by the queue type. 'active' means number of pods in activeQ; 'backoff' means number of pods in backoffQ; 'unschedulable' means number of pods in unschedulablePods that the scheduler attempted to schedule and failed; 'gated' is the number of unschedulable pods that the scheduler never attempted to schedule because they are gated",
                None,
                MetricType::Gauge,
            )?;
            let pending = |i: usize| s.pending[i].load(Ordering::Relaxed) as i64;
            for (queue, value) in [
                ("active", pending(0)),
                ("backoff", pending(1)),
                ("unschedulable", pending(2)),
                ("gated", 0),
            ] {
                ConstGauge::new(value).encode(d.encode_family(&[("queue", queue)])?)?;
            }
        }
        let latency = &s.scheduling_latency;
        latency.encode(e.encode_descriptor(
            "scheduler_pod_scheduling_sli_duration_seconds",
            "E2e latency for a pod being scheduled, from the time the pod enters the scheduling queue and might involve multiple scheduling attempts",
            None,
            latency.metric_type(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_carry_kube_schedulers_names_and_labels() {
        let stats = Arc::new(SchedulerStats::default());
        stats.bound.fetch_add(2, Ordering::Relaxed);
        stats.pending[2].store(3, Ordering::Relaxed);
        stats.scheduling_latency.observe(0.05);
        let mut registry = Registry::default();
        stats.register(&mut registry, "default-scheduler");
        let text = ballast_metrics::encode(&registry);
        for line in [
            "scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"default-scheduler\"} 2",
            "scheduler_schedule_attempts_total{result=\"error\",profile=\"default-scheduler\"} 0",
            "scheduler_pending_pods{queue=\"unschedulable\"} 3",
            "scheduler_pending_pods{queue=\"gated\"} 0",
            "scheduler_pod_scheduling_sli_duration_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
