//! Counters of the proxy, served in Prometheus' text format on
//! `--metrics-bind-address` (kube-proxy's sync metrics by their names,
//! the forwarding counters as `ballast_proxy_*`).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Counters shared by the sync loop and the frontends.
#[derive(Debug, Default)]
pub struct Stats {
    syncs: AtomicU64,
    /// Unix time of the last sync, in milliseconds; 0 before the first.
    last_sync_ms: AtomicU64,
    last_sync_duration_us: AtomicU64,
    frontends: AtomicU64,
    connections: AtomicU64,
    dial_failures: AtomicU64,
    bind_failures: AtomicU64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Stats {
    /// Records a finished sync that left `frontends` listening.
    pub fn synced(&self, frontends: usize, took: std::time::Duration) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.frontends.store(frontends as u64, Ordering::Relaxed);
        self.last_sync_duration_us
            .store(took.as_micros() as u64, Ordering::Relaxed);
        self.last_sync_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// Unix time of the last sync in milliseconds, if there was one.
    pub fn last_sync_ms(&self) -> Option<u64> {
        Some(self.last_sync_ms.load(Ordering::Relaxed)).filter(|ms| *ms != 0)
    }

    /// Counts a connection (or UDP flow) forwarded to an endpoint.
    pub fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a dial to an endpoint that failed.
    pub fn dial_failure(&self) {
        self.dial_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a frontend address that could not be bound.
    pub fn bind_failure(&self) {
        self.bind_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "gauge",
            "The last time the frontends were synced.",
            format!("{:.3}", get(&self.last_sync_ms) as f64 / 1000.0),
        );
        metric(
            "kubeproxy_sync_proxy_rules_duration_seconds_last",
            "gauge",
            "How long the last sync took.",
            format!("{:.6}", get(&self.last_sync_duration_us) as f64 / 1e6),
        );
        metric(
            "ballast_proxy_syncs_total",
            "counter",
            "Syncs of the frontends to the Services and EndpointSlices.",
            get(&self.syncs).to_string(),
        );
        metric(
            "ballast_proxy_frontends",
            "gauge",
            "Addresses listened on (cluster IPs and node ports, per protocol).",
            get(&self.frontends).to_string(),
        );
        metric(
            "ballast_proxy_connections_total",
            "counter",
            "TCP connections and UDP flows forwarded to an endpoint.",
            get(&self.connections).to_string(),
        );
        metric(
            "ballast_proxy_dial_failures_total",
            "counter",
            "Connections to endpoints that failed.",
            get(&self.dial_failures).to_string(),
        );
        metric(
            "ballast_proxy_bind_failures_total",
            "counter",
            "Frontend addresses that could not be listened on.",
            get(&self.bind_failures).to_string(),
        );
        out
    }
}
