//! kube-apiserver's Prometheus metrics, with Kubernetes' names and labels:
//!
//! - per request, by [`instrument`] (outside authentication, so refused
//!   requests count too): `apiserver_request_total`,
//!   `apiserver_request_duration_seconds` (kube's buckets) and
//!   `apiserver_current_inflight_requests`, plus a debug-level log line with
//!   method, path, user, status and latency;
//! - per watch cache, read at scrape time ([`CacheCollector`]):
//!   `apiserver_storage_objects`, `apiserver_registered_watchers`,
//!   `apiserver_watch_events_total`, `apiserver_watch_cache_events_received_total`,
//!   `apiserver_watch_cache_events_dispatched_total`,
//!   `apiserver_terminated_watchers_total`;
//! - per etcd call ([`EtcdRequests`], timed by the registry's client):
//!   `etcd_request_duration_seconds{operation,type}`.
//!
//! Label values come from the served resources only: a request for a path
//! that is not served (404) is counted without group, version, resource and
//! subresource, so a client cannot grow the series set with made-up paths.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use ballast_metrics::prometheus_client::collector::Collector;
use ballast_metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use ballast_metrics::prometheus_client::metrics::counter::{ConstCounter, Counter};
use ballast_metrics::prometheus_client::metrics::family::Family;
use ballast_metrics::prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use ballast_metrics::prometheus_client::registry::Registry;
use ballast_metrics::{AtomicHistogram, HistogramConstructor, REQUEST_BUCKETS};
use prometheus_client::encoding::EncodeLabelSet;
use tracing::Instrument;

use crate::auth::request::Attributes;
use crate::cache::WatchCache;
use crate::resources::Resource;

/// A watch counter series: name, help, labelled by kind (else by
/// resource), and its value in a cache's counters.
type WatchCounterSeries = (
    &'static str,
    &'static str,
    bool,
    fn(&crate::cache::WatchCounters) -> u64,
);

/// `apiserver_request_total`'s labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    verb: &'static str,
    dry_run: &'static str,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: &'static str,
    component: &'static str,
    code: String,
}

/// `apiserver_request_duration_seconds`' labels (the same but the code).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DurationLabels {
    verb: &'static str,
    dry_run: &'static str,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: &'static str,
    component: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct InflightLabels {
    request_kind: &'static str,
}

/// One apiserver's metrics. Cheap to clone (shared counters).
#[derive(Debug, Clone)]
pub(crate) struct ApiMetrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, AtomicHistogram, HistogramConstructor>,
    read_only: Gauge,
    mutating: Gauge,
}

impl ApiMetrics {
    /// The metrics of an apiserver whose watch caches are `caches`.
    pub(crate) fn new(caches: Vec<WatchCache>, etcd: &EtcdRequests) -> ApiMetrics {
        let mut registry = ballast_metrics::new_registry();
        etcd.register(&mut registry);
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::new_with_constructor(HistogramConstructor(REQUEST_BUCKETS));
        let inflight = Family::<InflightLabels, Gauge>::default();
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component",
            durations.clone(),
        );
        registry.register(
            "apiserver_current_inflight_requests",
            "Maximal number of currently used inflight request limit of this apiserver per request kind in last second",
            inflight.clone(),
        );
        registry.register_collector(Box::new(CacheCollector { caches }));
        ApiMetrics {
            read_only: inflight.get_or_create_owned(&InflightLabels {
                request_kind: "readOnly",
            }),
            mutating: inflight.get_or_create_owned(&InflightLabels {
                request_kind: "mutating",
            }),
            registry: Arc::new(registry),
            requests,
            durations,
        }
    }

    /// The registry `/metrics` encodes.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// Serves `/metrics` (routed behind authentication and authorization).
pub(crate) async fn serve(request: Request) -> Response {
    use axum::response::IntoResponse;
    match request.extensions().get::<ApiMetrics>() {
        Some(m) => ballast_metrics::response(m.registry()).into_response(),
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

/// Kubernetes' reported verb (`LIST`, `WATCH`, `APPLY`, … in upper case).
fn reported_verb(a: &Attributes, method: &str, apply: bool) -> &'static str {
    if !a.resource_request {
        return match method {
            "GET" => "GET",
            "HEAD" => "HEAD",
            "POST" => "POST",
            "PUT" => "PUT",
            "PATCH" => "PATCH",
            "DELETE" => "DELETE",
            "OPTIONS" => "OPTIONS",
            _ => "other",
        };
    }
    match a.verb.as_str() {
        "get" => "GET",
        "list" => "LIST",
        "watch" => "WATCH",
        "create" => "POST",
        "update" => "PUT",
        "patch" if apply => "APPLY",
        "patch" => "PATCH",
        "delete" | "deletecollection" => "DELETE",
        _ => "other",
    }
}

/// The group, version, resource and subresource labels: the request's for a
/// built-in resource or one that answered 2xx (a served custom resource),
/// empty otherwise; a subresource only when the request did not 404.
fn resource_labels(a: &Attributes, code: u16) -> (String, String, String, String) {
    let served = match Resource::find(&a.api_group, &a.resource) {
        Some(r) => r.version == a.api_version,
        None => (200..300).contains(&code),
    };
    if !a.resource_request || !served {
        return Default::default();
    }
    let subresource = if code == 404 {
        String::new()
    } else {
        a.subresource.clone()
    };
    (
        a.api_group.clone(),
        a.api_version.clone(),
        a.resource.clone(),
        subresource,
    )
}

/// kube's `CleanScope`.
fn scope(a: &Attributes) -> &'static str {
    if !a.name.is_empty() || a.verb == "create" {
        "resource"
    } else if !a.namespace.is_empty() {
        "namespace"
    } else if a.resource_request {
        "cluster"
    } else {
        ""
    }
}

/// Counts and times every request (see the module doc). The
/// [`ApiMetrics`] travel on as an extension for `/metrics`.
pub(crate) async fn instrument(
    axum::extract::State(metrics): axum::extract::State<ApiMetrics>,
    mut request: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = request.method().as_str().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default();
    let attributes = Attributes::from_request(Default::default(), &method, &path, query);
    let dry_run = if query.split('&').any(|kv| kv.starts_with("dryRun=")) {
        "All"
    } else {
        ""
    };
    let apply = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/apply-patch"));
    let verb = reported_verb(&attributes, &method, apply);
    // Long-running requests (watches) hold no in-flight slot in kube.
    let inflight = match verb {
        "WATCH" => None,
        "GET" | "LIST" | "HEAD" | "OPTIONS" => Some(&metrics.read_only),
        _ => Some(&metrics.mutating),
    };
    if let Some(g) = inflight {
        g.inc();
    }
    request.extensions_mut().insert(metrics.clone());
    let span = tracing::debug_span!(
        "request",
        method = %method,
        path = %path,
        user = tracing::field::Empty
    );
    let response = next.run(request).instrument(span.clone()).await;
    if let Some(g) = inflight {
        g.dec();
    }
    let code = response.status().as_u16();
    let (group, version, resource, subresource) = resource_labels(&attributes, code);
    let labels = DurationLabels {
        verb,
        dry_run,
        group,
        version,
        resource,
        subresource,
        scope: scope(&attributes),
        component: "apiserver",
    };
    let took = start.elapsed();
    metrics
        .durations
        .get_or_create(&labels)
        .observe(took.as_secs_f64());
    let labels = RequestLabels {
        verb: labels.verb,
        dry_run: labels.dry_run,
        group: labels.group,
        version: labels.version,
        resource: labels.resource,
        subresource: labels.subresource,
        scope: labels.scope,
        component: labels.component,
        code: code.to_string(),
    };
    metrics.requests.get_or_create(&labels).inc();
    span.in_scope(|| {
        tracing::debug!(
            status = code,
            latency_ms = took.as_secs_f64() * 1e3,
            "request served"
        )
    });
    response
}

/// The watch caches' series, read at each scrape.
struct CacheCollector {
    caches: Vec<WatchCache>,
}

impl std::fmt::Debug for CacheCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheCollector")
            .field("caches", &self.caches.len())
            .finish()
    }
}

impl Collector for CacheCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let stats: Vec<_> = self
            .caches
            .iter()
            .map(|c| (c.resource(), c.stats()))
            .collect();
        let by_resource = |r: &Resource| [("resource", gr(r))];
        let by_kind = |r: &Resource| {
            [
                ("group", r.group.to_string()),
                ("version", r.version.to_string()),
                ("kind", r.kind.to_string()),
            ]
        };
        {
            let mut d = e.encode_descriptor(
                "apiserver_storage_objects",
                "Number of stored objects at the time of last check split by kind. In case of a fetching error, the value will be -1.",
                None,
                ConstGauge::new(0i64).metric_type(),
            )?;
            for (r, (objects, _, _)) in &stats {
                ConstGauge::new(*objects as i64).encode(d.encode_family(&by_resource(r))?)?;
            }
        }
        {
            let mut d = e.encode_descriptor(
                "apiserver_registered_watchers",
                "Number of currently registered watchers for a given resources",
                None,
                ConstGauge::new(0i64).metric_type(),
            )?;
            for (r, (_, watchers, _)) in &stats {
                ConstGauge::new(*watchers as i64).encode(d.encode_family(&by_kind(r))?)?;
            }
        }
        let counters: [WatchCounterSeries; 4] = [
            (
                "apiserver_watch_events",
                "Number of events sent in watch clients",
                true,
                |c| c.events_dispatched,
            ),
            (
                "apiserver_watch_cache_events_received",
                "Counter of events received in watch cache broken by resource type",
                false,
                |c| c.events_received,
            ),
            (
                "apiserver_watch_cache_events_dispatched",
                "Counter of events dispatched in watch cache broken by resource type",
                false,
                |c| c.events_dispatched,
            ),
            (
                "apiserver_terminated_watchers",
                "Counter of watchers closed due to unresponsiveness broken by resource type",
                false,
                |c| c.terminated_watchers,
            ),
        ];
        for (name, help, kind_labels, value) in counters {
            let mut d =
                e.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
            for (r, (_, _, c)) in &stats {
                let v = ConstCounter::new(value(c));
                if kind_labels {
                    v.encode(d.encode_family(&by_kind(r))?)?;
                } else {
                    v.encode(d.encode_family(&by_resource(r))?)?;
                }
            }
        }
        Ok(())
    }
}

/// kube's `resource` label of the storage metrics: `pods`,
/// `deployments.apps`.
fn gr(r: &Resource) -> String {
    if r.group.is_empty() {
        r.name.to_string()
    } else {
        format!("{}.{}", r.name, r.group)
    }
}

/// etcd_request_duration_seconds' buckets (kube's).
const ETCD_REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// `type` is the group-resource a key belongs to (`pods`,
/// `widgets.example.com`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EtcdRequestLabels {
    operation: &'static str,
    r#type: String,
}

/// `etcd_request_duration_seconds{operation,type}`: how long the
/// apiserver's etcd calls take. Cheap to clone (shared histograms).
#[derive(Debug, Clone)]
pub(crate) struct EtcdRequests {
    durations: Family<EtcdRequestLabels, AtomicHistogram, HistogramConstructor>,
}

impl Default for EtcdRequests {
    fn default() -> Self {
        EtcdRequests {
            durations: Family::new_with_constructor(HistogramConstructor(ETCD_REQUEST_BUCKETS)),
        }
    }
}

impl EtcdRequests {
    /// Times one `operation` on `key` until the guard is dropped (also
    /// when the call fails or its future is dropped).
    pub(crate) fn time(&self, operation: &'static str, key: &str) -> EtcdTimer {
        EtcdTimer {
            histogram: self.durations.get_or_create_owned(&EtcdRequestLabels {
                operation,
                r#type: group_resource_of_key(key),
            }),
            start: Instant::now(),
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "etcd_request_duration_seconds",
            "Etcd request latency in seconds for each operation and object type",
            self.durations.clone(),
        );
    }
}

/// Observes its call's duration when dropped.
pub(crate) struct EtcdTimer {
    histogram: AtomicHistogram,
    start: Instant,
}

impl Drop for EtcdTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// `/registry/pods/ns/x` → `pods`; a custom resource's
/// `/registry/example.com/widgets/…` → `widgets.example.com`.
fn group_resource_of_key(key: &str) -> String {
    let mut parts = key
        .strip_prefix("/registry/")
        .unwrap_or(key)
        .split('/')
        .filter(|p| !p.is_empty());
    match (parts.next(), parts.next()) {
        (Some(group), Some(resource)) if group.contains('.') => format!("{resource}.{group}"),
        (Some(resource), _) => resource.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_keys_name_their_group_resource() {
        assert_eq!(group_resource_of_key("/registry/pods/ns/x"), "pods");
        assert_eq!(group_resource_of_key("/registry/pods/"), "pods");
        assert_eq!(
            group_resource_of_key("/registry/example.com/widgets/ns/w"),
            "widgets.example.com"
        );
        assert_eq!(group_resource_of_key("/registry/"), "");
    }
}
