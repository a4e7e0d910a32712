//! Plain HTTP on the client URL, beside gRPC, and on the metrics URLs:
//! `/metrics` (Prometheus text with etcd's metric names, see `metrics`) and
//! the health endpoints of `health`, as etcd serves them.

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use ballast_metrics::prometheus_client::registry::Registry;

use crate::node::Node;

/// Adds the HTTP endpoints to a router: `/metrics` (`registry`) and etcd's
/// health endpoints (see `health`). Served on the client URLs and on
/// `--listen-metrics-urls`.
pub fn routes(router: Router, node: Arc<Node>, registry: &Arc<Registry>) -> Router {
    let router = crate::health::routes(router, node);
    let registry = registry.clone();
    router.route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move { ballast_metrics::response(&registry) }
        }),
    )
}
