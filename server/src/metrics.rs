//! The member's Prometheus metrics, with the names, types, labels and HELP
//! texts etcd 3.5 exports, so etcd's alerting rules and dashboards work
//! unchanged.
//!
//! - [`NodeCollector`] reads the raft status and counters, the store and
//!   the process at each scrape: nothing on the write path changes for it.
//! - [`GrpcMetrics`] is go-grpc-prometheus' `grpc_server_started_total` and
//!   `grpc_server_handled_total`, every method and code created at start
//!   (as etcd's `grpc_prometheus.Register` does), so a request only looks
//!   up its method in a map built once and adds to two atomics.
//!   [`Metered`] is the tower service that counts on the client URLs.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use ballast_metrics::prometheus_client::collector::Collector;
use ballast_metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use ballast_metrics::prometheus_client::metrics::counter::{ConstCounter, Counter};
use ballast_metrics::prometheus_client::metrics::family::Family;
use ballast_metrics::prometheus_client::metrics::gauge::ConstGauge;
use ballast_metrics::prometheus_client::metrics::MetricType;
use ballast_metrics::prometheus_client::registry::Registry;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::Service;

use crate::node::{Node, ETCD_VERSION};

/// The registry of a member: process, node and gRPC series.
pub(crate) fn registry(node: Arc<Node>, grpc: &GrpcMetrics) -> Registry {
    let mut registry = ballast_metrics::new_registry();
    registry.register_collector(Box::new(NodeCollector { node }));
    grpc.register(&mut registry);
    registry
}

/// The node's series, read at each scrape.
pub(crate) struct NodeCollector {
    node: Arc<Node>,
}

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCollector")
            .field("member", &format_args!("{:x}", self.node.member_id()))
            .finish()
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

/// Per-bucket counts (what the encoder takes) from cumulative `(le,
/// count)` buckets and the total `count` (the `+Inf` bucket's).
fn own_buckets(cumulative: &[(f64, u64)], count: u64) -> Vec<(f64, u64)> {
    let below = |i: usize| if i == 0 { 0 } else { cumulative[i - 1].1 };
    let last = cumulative.last().map_or(0, |&(_, c)| c);
    cumulative
        .iter()
        .enumerate()
        .map(|(i, &(le, c))| (le, c.saturating_sub(below(i))))
        .chain(std::iter::once((f64::INFINITY, count.saturating_sub(last))))
        .collect()
}

/// A histogram from cumulative `(le, count)` buckets (the `+Inf` bucket is
/// `count`).
fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    cumulative: &[(f64, u64)],
    count: u64,
    sum: f64,
) -> std::fmt::Result {
    let buckets = own_buckets(cumulative, count);
    let mut m = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    m.encode_histogram::<ballast_metrics::prometheus_client::encoding::NoLabelSet>(
        sum, count, &buckets, None,
    )
}

impl Collector for NodeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let node = &self.node;
        let st = node.raft.status();
        let m = node.raft.metrics();
        let store = node.store();
        // etcd declares committed/applied/pending as gauges named `_total`.
        gauge(
            &mut e,
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            i64::from(st.leader.is_some()),
        )?;
        gauge(
            &mut e,
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            i64::from(node.is_leader()),
        )?;
        counter(
            &mut e,
            "etcd_server_leader_changes_seen",
            "The number of leader changes seen.",
            m.leader_changes,
        )?;
        gauge(
            &mut e,
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
            st.commit_index as i64,
        )?;
        gauge(
            &mut e,
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
            st.applied_index as i64,
        )?;
        gauge(
            &mut e,
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit.",
            m.proposals_pending as i64,
        )?;
        counter(
            &mut e,
            "etcd_server_proposals_failed",
            "The total number of failed proposals seen.",
            m.proposals_failed,
        )?;
        {
            let g = ConstGauge::new(1i64);
            let mut d = e.encode_descriptor(
                "etcd_server_version",
                "Which version is running. 1 for 'server_version' label with current version.",
                None,
                g.metric_type(),
            )?;
            g.encode(d.encode_family(&[("server_version", ETCD_VERSION)])?)?;
        }
        histogram(
            &mut e,
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
            &m.fsync_histogram,
            m.fsyncs,
            m.fsync_seconds_sum,
        )?;
        histogram(
            &mut e,
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
            &m.backend_commit_histogram,
            m.checkpoints,
            m.backend_commit_seconds_sum,
        )?;
        let size = store.size_bytes() as i64;
        gauge(
            &mut e,
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            size,
        )?;
        // RocksDB has no free pages inside its files as bbolt does: all of
        // it is in use (Maintenance.Status answers the same).
        gauge(
            &mut e,
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes.",
            size,
        )?;
        gauge(
            &mut e,
            "etcd_debugging_mvcc_watcher_total",
            "Total number of watchers.",
            store.watcher_count() as i64,
        )?;
        gauge(
            &mut e,
            "etcd_debugging_mvcc_slow_watcher_total",
            "Total number of unsynced slow watchers.",
            store.pending_watcher_count() as i64,
        )?;
        gauge(
            &mut e,
            "etcd_debugging_mvcc_keys_total",
            "Total number of keys.",
            store.key_count() as i64,
        )?;
        gauge(
            &mut e,
            "etcd_mvcc_current_revision",
            "The current revision of the store.",
            store.current_revision(),
        )?;
        let rtt = &m.peer_round_trip;
        let mut d = e.encode_descriptor(
            "etcd_network_peer_round_trip_time_seconds",
            "Round-Trip-Time histogram between peers",
            None,
            MetricType::Histogram,
        )?;
        for peer in rtt {
            let to = format!("{:x}", peer.to);
            let buckets = own_buckets(&peer.histogram, peer.count);
            d.encode_family(&[("To", to.as_str())])?
                .encode_histogram::<ballast_metrics::prometheus_client::encoding::NoLabelSet>(
                peer.seconds_sum,
                peer.count,
                &buckets,
                None,
            )?;
        }
        Ok(())
    }
}

/// gRPC status code names as go-grpc-prometheus labels them, by code.
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

const UNARY: &str = "unary";
const SERVER_STREAM: &str = "server_stream";
const BIDI_STREAM: &str = "bidi_stream";

/// Every method the client URLs serve: service, method, gRPC type.
const METHODS: &[(&str, &str, &str)] = &[
    ("etcdserverpb.KV", "Range", UNARY),
    ("etcdserverpb.KV", "Put", UNARY),
    ("etcdserverpb.KV", "DeleteRange", UNARY),
    ("etcdserverpb.KV", "Txn", UNARY),
    ("etcdserverpb.KV", "Compact", UNARY),
    ("etcdserverpb.Watch", "Watch", BIDI_STREAM),
    ("etcdserverpb.Lease", "LeaseGrant", UNARY),
    ("etcdserverpb.Lease", "LeaseRevoke", UNARY),
    ("etcdserverpb.Lease", "LeaseKeepAlive", BIDI_STREAM),
    ("etcdserverpb.Lease", "LeaseTimeToLive", UNARY),
    ("etcdserverpb.Lease", "LeaseLeases", UNARY),
    ("etcdserverpb.Cluster", "MemberAdd", UNARY),
    ("etcdserverpb.Cluster", "MemberRemove", UNARY),
    ("etcdserverpb.Cluster", "MemberUpdate", UNARY),
    ("etcdserverpb.Cluster", "MemberList", UNARY),
    ("etcdserverpb.Cluster", "MemberPromote", UNARY),
    ("etcdserverpb.Maintenance", "Alarm", UNARY),
    ("etcdserverpb.Maintenance", "Status", UNARY),
    ("etcdserverpb.Maintenance", "Defragment", UNARY),
    ("etcdserverpb.Maintenance", "Hash", UNARY),
    ("etcdserverpb.Maintenance", "HashKV", UNARY),
    ("etcdserverpb.Maintenance", "Snapshot", SERVER_STREAM),
    ("etcdserverpb.Maintenance", "MoveLeader", UNARY),
    ("etcdserverpb.Maintenance", "Downgrade", UNARY),
    ("etcdserverpb.Auth", "AuthEnable", UNARY),
    ("etcdserverpb.Auth", "AuthDisable", UNARY),
    ("etcdserverpb.Auth", "AuthStatus", UNARY),
    ("etcdserverpb.Auth", "Authenticate", UNARY),
    ("etcdserverpb.Auth", "UserAdd", UNARY),
    ("etcdserverpb.Auth", "UserGet", UNARY),
    ("etcdserverpb.Auth", "UserList", UNARY),
    ("etcdserverpb.Auth", "UserDelete", UNARY),
    ("etcdserverpb.Auth", "UserChangePassword", UNARY),
    ("etcdserverpb.Auth", "UserGrantRole", UNARY),
    ("etcdserverpb.Auth", "UserRevokeRole", UNARY),
    ("etcdserverpb.Auth", "RoleAdd", UNARY),
    ("etcdserverpb.Auth", "RoleGet", UNARY),
    ("etcdserverpb.Auth", "RoleList", UNARY),
    ("etcdserverpb.Auth", "RoleDelete", UNARY),
    ("etcdserverpb.Auth", "RoleGrantPermission", UNARY),
    ("etcdserverpb.Auth", "RoleRevokePermission", UNARY),
    ("grpc.health.v1.Health", "Check", UNARY),
    ("grpc.health.v1.Health", "Watch", SERVER_STREAM),
];

type StartedLabels = [(&'static str, &'static str); 3];
type HandledLabels = [(&'static str, &'static str); 4];

/// One method's counters, resolved once.
#[derive(Debug)]
struct MethodCounters {
    /// `/service/method`, for the request log.
    path: String,
    started: Counter,
    /// By gRPC code.
    handled: [Counter; 17],
}

/// `grpc_server_started_total` and `grpc_server_handled_total` for the
/// client URLs' methods (see the module doc).
#[derive(Debug, Clone)]
pub(crate) struct GrpcMetrics {
    started: Family<StartedLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    /// By request path (`/etcdserverpb.KV/Range`); built once, read only.
    methods: Arc<HashMap<String, Arc<MethodCounters>>>,
}

impl GrpcMetrics {
    pub(crate) fn new() -> GrpcMetrics {
        let started = Family::<StartedLabels, Counter>::default();
        let handled = Family::<HandledLabels, Counter>::default();
        let methods = METHODS
            .iter()
            .map(|&(service, method, kind)| {
                let base = [
                    ("grpc_type", kind),
                    ("grpc_service", service),
                    ("grpc_method", method),
                ];
                let counters = MethodCounters {
                    path: format!("/{service}/{method}"),
                    started: started.get_or_create_owned(&base),
                    handled: CODES.map(|code| {
                        handled.get_or_create_owned(&[
                            base[0],
                            base[1],
                            base[2],
                            ("grpc_code", code),
                        ])
                    }),
                };
                (counters.path.clone(), Arc::new(counters))
            })
            .collect();
        GrpcMetrics {
            started,
            handled,
            methods: Arc::new(methods),
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "grpc_server_started",
            "Total number of RPCs started on the server",
            self.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure",
            self.handled.clone(),
        );
    }
}

/// Counts the gRPC requests of `inner` (requests for other paths pass
/// untouched) and logs each at debug level with its code and latency.
#[derive(Clone)]
pub(crate) struct Metered<S> {
    inner: S,
    metrics: GrpcMetrics,
}

impl<S> Metered<S> {
    pub(crate) fn new(inner: S, metrics: GrpcMetrics) -> Self {
        Metered { inner, metrics }
    }
}

impl<S> Service<Request<Body>> for Metered<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let method = self.metrics.methods.get(request.uri().path()).cloned();
        if let Some(m) = &method {
            m.started.inc();
        }
        MeteredFuture {
            inner: self.inner.call(request),
            call: method.map(|method| Call {
                method,
                start: Instant::now(),
            }),
        }
    }
}

/// A counted request: its method and when it started.
#[derive(Debug)]
struct Call {
    method: Arc<MethodCounters>,
    start: Instant,
}

impl Call {
    fn handled(self, code: usize) {
        let m = &self.method;
        m.handled[code.min(CODES.len() - 1)].inc();
        tracing::debug!(
            method = %m.path,
            code = CODES[code.min(CODES.len() - 1)],
            latency_ms = self.start.elapsed().as_secs_f64() * 1e3,
            "grpc request"
        );
    }
}

/// The `grpc-status` of a header or trailer map (gRPC code 2, Unknown, if
/// it is not a number).
fn grpc_code(headers: &HeaderMap) -> Option<usize> {
    let v = headers.get("grpc-status")?;
    Some(v.to_str().ok().and_then(|s| s.parse().ok()).unwrap_or(2))
}

pin_project_lite::pin_project! {
    /// [`Metered`]'s future: wraps the answer's body to count the request
    /// once its status is known (the trailers, or the headers of a
    /// trailers-only answer).
    pub(crate) struct MeteredFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F> Future for MeteredFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.inner.poll(cx));
        let Some(call) = this.call.take() else {
            return Poll::Ready(Ok(response));
        };
        if let Some(code) = grpc_code(response.headers()) {
            call.handled(code);
            return Poll::Ready(Ok(response));
        }
        Poll::Ready(Ok(response.map(|body| {
            Body::new(MeteredBody {
                inner: body,
                call: Some(call),
            })
        })))
    }
}

pin_project_lite::pin_project! {
    /// An answer's body that counts its request when its trailers pass, or
    /// as `Canceled` when it is dropped before (the client went away).
    struct MeteredBody {
        #[pin]
        inner: Body,
        call: Option<Call>,
    }

    impl PinnedDrop for MeteredBody {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.handled(1);
            }
        }
    }
}

impl HttpBody for MeteredBody {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(code) = f.trailers_ref().and_then(grpc_code) {
                    if let Some(call) = this.call.take() {
                        call.handled(code);
                    }
                }
            }
            // A body that failed or ended without trailers: gRPC calls that
            // `Unknown`/`Internal`; a bare end is the stream's OK.
            Some(Err(_)) => {
                if let Some(call) = this.call.take() {
                    call.handled(13);
                }
            }
            None => {
                if let Some(call) = this.call.take() {
                    call.handled(0);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
