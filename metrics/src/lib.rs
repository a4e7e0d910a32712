//! Prometheus metrics as every Ballast component exports them, on
//! [`prometheus_client`]: one way to register, encode and serve.
//!
//! # Layout
//! - `histogram` — [`AtomicHistogram`]: fixed buckets, observed with
//!   atomics only (prometheus-client's own histogram takes a lock per
//!   observation; request paths observe on every request).
//! - `process` — [`ProcessCollector`]: the `process_*` series Go's client
//!   exports (resident memory, CPU seconds, open and max fds, start time),
//!   read from `/proc` at each scrape.
//! - here — [`new_registry`] (with the process series), [`encode`] in the
//!   Prometheus text format 0.0.4 that etcd and Kubernetes serve, and
//!   [`serve`]: `/metrics` and `/healthz` on a port of their own, for the
//!   components without an HTTP server (controller manager, scheduler), or
//!   [`router`] for one with health routes of its own (the cluster DNS).
//!
//! Counter names are registered without `_total`: the encoder appends it,
//! as Prometheus' conventions want. HELP texts end with the period the
//! registry appends.

mod histogram;
mod process;

use std::future::Future;
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE as CONTENT_TYPE_HEADER;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
pub use histogram::{AtomicHistogram, HistogramConstructor};
pub use process::ProcessCollector;
pub use prometheus_client;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// kube's `apiserver_request_duration_seconds` and
/// `scheduler_pod_scheduling_sli_duration_seconds`-style request buckets
/// (seconds).
pub const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// A registry holding the process series of this process.
pub fn new_registry() -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProcessCollector));
    registry
}

/// `registry` in the Prometheus text format 0.0.4.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error is a bug in a
    // collector, and half a scrape is still better than none.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        out.push_str(&format!("# encoding failed: {e}\n"));
    }
    out
}

/// An axum response of [`encode`]`(registry)` with its content type.
pub fn response(registry: &Registry) -> impl IntoResponse {
    ([(CONTENT_TYPE_HEADER, CONTENT_TYPE)], encode(registry))
}

/// A router answering `GET /metrics` with `registry`, for a component to
/// add its health routes to.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move { response(&registry) }
        }),
    )
}

/// Serves `GET /metrics` (`registry`) and `GET /healthz` (`ok`) in plain
/// HTTP on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router(registry).route("/healthz", get(|| async { "ok" }));
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
