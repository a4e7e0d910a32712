//! Plain HTTP on the client URL, beside gRPC, and on the metrics URLs:
//! `/metrics` (Prometheus text with etcd's metric names) and the health
//! endpoints of `health`, as etcd serves them.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::node::Node;

/// Adds the HTTP endpoints to a router: `/metrics` and etcd's health
/// endpoints (see `health`). Served on the client URLs and on
/// `--listen-metrics-urls`.
pub fn routes(router: Router, node: Arc<Node>) -> Router {
    let router = crate::health::routes(router, node.clone());
    router.route(
        "/metrics",
        get(move || {
            let node = node.clone();
            async move { metrics(&node) }
        }),
    )
}

fn metrics(node: &Node) -> String {
    let st = node.raft.status();
    let m = node.raft.metrics();
    let store = node.store();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    gauge(
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        "gauge",
        u8::from(st.leader.is_some()).to_string(),
    );
    gauge(
        "etcd_server_is_leader",
        "Whether or not this member is a leader.",
        "gauge",
        u8::from(node.is_leader()).to_string(),
    );
    gauge(
        "etcd_server_leader_changes_seen_total",
        "The number of leader changes seen.",
        "counter",
        m.leader_changes.to_string(),
    );
    gauge(
        "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed.",
        "gauge",
        st.commit_index.to_string(),
    );
    gauge(
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied.",
        "gauge",
        st.applied_index.to_string(),
    );
    gauge(
        "etcd_server_proposals_failed_total",
        "The total number of failed proposals seen.",
        "counter",
        m.proposals_failed.to_string(),
    );
    gauge(
        "etcd_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes.",
        "gauge",
        store.size_bytes().to_string(),
    );
    gauge(
        "etcd_debugging_mvcc_watcher_total",
        "Total number of watchers.",
        "gauge",
        store.watcher_count().to_string(),
    );
    gauge(
        "etcd_debugging_mvcc_slow_watcher_total",
        "Total number of unsynced slow watchers.",
        "gauge",
        store.pending_watcher_count().to_string(),
    );
    gauge(
        "etcd_debugging_mvcc_keys_total",
        "Total number of keys.",
        "gauge",
        store.key_count().to_string(),
    );
    gauge(
        "etcd_mvcc_current_revision",
        "The current revision of the store.",
        "gauge",
        store.current_revision().to_string(),
    );
    let name = "etcd_disk_wal_fsync_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} The latency distributions of fsync called by WAL.\n# TYPE {name} histogram"
    );
    for (le, count) in &m.fsync_histogram {
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", m.fsyncs);
    let _ = writeln!(out, "{name}_sum {}", m.fsync_seconds_sum);
    let _ = writeln!(out, "{name}_count {}", m.fsyncs);
    out
}
