//! Latency histograms and the JSON result.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// Highest latency a histogram tracks exactly (larger ones are recorded as this).
const MAX_MICROS: u64 = 600_000_000;

/// A latency histogram in microseconds (three significant digits).
#[derive(Clone)]
pub struct Latencies(Histogram<u64>);

impl std::fmt::Debug for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Latencies({} samples)", self.0.len())
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

impl Latencies {
    pub fn new() -> Latencies {
        Latencies(Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds"))
    }

    pub fn record(&mut self, d: Duration) {
        self.record_micros(d.as_micros().min(MAX_MICROS as u128) as u64);
    }

    pub fn record_micros(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, MAX_MICROS));
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Value at `q` (0..=1) in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.max() as f64 / 1000.0
    }

    /// `{prefix}p50_ms`, `p90`, `p99`, `p999` and `max` into `out`.
    pub fn write_percentiles(&self, prefix: &str, out: &mut Map<String, Value>) {
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
            out.insert(format!("{prefix}{name}_ms"), ms(self.quantile_ms(q)));
        }
        out.insert(format!("{prefix}max_ms"), ms(self.max_ms()));
    }
}

/// A millisecond figure rounded to microseconds.
fn ms(v: f64) -> Value {
    json!((v * 1000.0).round() / 1000.0)
}

/// The outcome of one run, printed as one JSON line.
#[derive(Debug, Clone)]
pub struct Report {
    /// `put`, `range`, `txn` or `watch`.
    pub kind: String,
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub conns: usize,
    /// Requests that succeeded (for watch: puts by the writer).
    pub requests: u64,
    /// Requests that failed or timed out.
    pub errors: u64,
    /// From the first request to the last answer.
    pub elapsed_s: f64,
    /// Request latencies (for watch: the writer's puts).
    pub latency: Latencies,
    /// The first error seen, for diagnosis.
    pub first_error: Option<String>,
    /// Workload-specific figures (for watch: events, delivery latency, memory).
    pub extra: Map<String, Value>,
}

impl Report {
    pub fn ops_per_s(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.requests as f64 / self.elapsed_s
        } else {
            0.0
        }
    }

    /// Every figure as one JSON object (flat, so `jq .p99_ms` works).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("kind".into(), json!(self.kind));
        m.insert("endpoints".into(), json!(self.endpoints));
        m.insert("clients".into(), json!(self.clients));
        m.insert("conns".into(), json!(self.conns));
        m.insert("requests".into(), json!(self.requests));
        m.insert("errors".into(), json!(self.errors));
        m.insert(
            "elapsed_s".into(),
            json!((self.elapsed_s * 1000.0).round() / 1000.0),
        );
        m.insert(
            "ops_per_s".into(),
            json!((self.ops_per_s() * 10.0).round() / 10.0),
        );
        self.latency.write_percentiles("", &mut m);
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        m.insert("first_error".into(), json!(self.first_error));
        Value::Object(m)
    }

    /// [`to_json`](Report::to_json) on one line.
    pub fn to_line(&self) -> String {
        self.to_json().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_json() {
        let mut l = Latencies::new();
        for us in 1..=1000u64 {
            l.record_micros(us * 10);
        }
        assert!((l.quantile_ms(0.5) - 5.0).abs() < 0.01);
        assert!((l.max_ms() - 10.0).abs() < 0.01);
        let r = Report {
            kind: "put".into(),
            endpoints: vec!["127.0.0.1:2379".into()],
            clients: 1,
            conns: 1,
            requests: 1000,
            errors: 0,
            elapsed_s: 2.0,
            latency: l,
            first_error: None,
            extra: Map::new(),
        };
        let line = r.to_line();
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ops_per_s"], json!(500.0));
        assert_eq!(v["requests"], json!(1000));
        assert!(v["p99_ms"].as_f64().unwrap() > 9.0);
        assert!(v["first_error"].is_null());
    }
}
