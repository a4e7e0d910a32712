//! # ballast-apiserver
//!
//! A Kubernetes-style REST API (JSON, core/v1 and apps/v1) whose in-memory
//! watch cache serves List from memory and fans watch events out, storing
//! objects through the etcd v3 API — on a Ballast cluster or a real etcd.
//!
//! # Layout
//!
//! - `error` — [`Error`]: the one error enum, and its Kubernetes `Status`
//!   form (404 NotFound, 409 AlreadyExists/Conflict, 410 Expired, 422 …).
//! - `resources` — [`Resource`]: the served kinds and their etcd key layout.
//! - `served` — the custom resources served for CustomResourceDefinitions
//!   at run time: their leaked identities and the swapped snapshot of
//!   versions and watch caches an apiserver serves now.
//! - `crd_schema` — CRD structural schemas: the check at CRD create and
//!   update, and validation, defaulting and pruning of custom resources.
//! - `object` — [`Object`]: one stored version, encoded once, plus the
//!   fields selectors and indexes need.
//! - `conversion` — views over another resource's stored objects:
//!   events.k8s.io/v1 Events are the core/v1 Events, converted on every
//!   read and write.
//! - `selector` — label and field selectors.
//! - `fieldmanager` — server-side apply's field ownership
//!   (`metadata.managedFields`): field sets, merge, conflicts.
//! - `registry` — [`Registry`]: objects over etcd v3 (`Txn`-guarded create,
//!   update and delete; paginated lists with continue tokens), the small
//!   etcd client under it, and the compactor that keeps etcd's history to
//!   about `--etcd-compaction-interval`, taking turns with the other
//!   apiservers on the same etcd.
//! - `cache` — [`WatchCache`]: per resource, list + one etcd watch, indexed
//!   objects, a window of recent events, bounded per-watcher fan-out.
//! - `auth` — authentication (client certificates, bearer tokens,
//!   anonymous), authorization (AlwaysAllow, Node, RBAC over the watch
//!   caches), the bootstrap RBAC policy, the access-review APIs, and the
//!   TLS listener of the secure port.
//! - `handlers` — the HTTP edge on axum: routing and `Status` responses
//!   (`mod.rs`), CRUD and `/status` (`rest`), DELETE and
//!   deletecollection with graceful pod deletion, finalizers and
//!   propagation policies (`delete`), namespace lifecycle — the default
//!   namespaces, Terminating, contents removed (`namespaces`), the
//!   `binding` and `log` subresources (`subresources`), `scale` of the
//!   workloads and custom resources, server-side apply included
//!   (`scale`), discovery, per group and aggregated (`discovery`), watch
//!   streams, PATCH formats (`patch`), server-side Tables for `kubectl get`
//!   (`table`), validation and defaulting, `fieldValidation` and `dryRun`
//!   on writes (`fields`), the OpenAPI v3 documents kubectl reads
//!   (`openapi`), the protobuf request bodies typed kubectl commands send
//!   (`protobuf`), metadata helpers (`meta`).
//!
//! Objects are handled as `serde_json::Value`, not `k8s-openapi` types: the
//! server must store exactly what clients sent (unknown and future fields
//! included), every verb is generic over the resource table, and the cache
//! keeps only encoded bytes plus the few fields selectors need, so a typed
//! decode would only add a lossy round trip. Typed clients (controllers,
//! kubelet) use kube-rs / k8s-openapi on their side of the wire.
//! - `serving` — the connection loop (HTTP/1.1 and h2, the HTTP/2 stream
//!   limit, the request header read timeout), with
//!   `ballast_net::BatchedWrites`: one socket write per pass of an HTTP/2
//!   connection (a watch event fanned out to its streams goes out in one
//!   segment).
//! - `kubelet_client` — [`KubeletClient`]: how `pods/log` reaches
//!   kubelets (plain HTTP, or TLS with the kubelet client certificate).
//! - `limits` — kube-apiserver's max-in-flight filter: read-only and
//!   mutating requests counted apart, long-running ones not at all, 429
//!   with `Retry-After` past the limit.
//! - `metrics` — `/metrics` with Kubernetes' series (requests, in-flight,
//!   watch caches, etcd calls, process) and the request log line at debug
//!   level.
//! - [`Apiserver`] (here) — wires one registry, the caches and the router.

mod auth;
mod cache;
mod conversion;
mod crd_schema;
mod error;
mod fieldmanager;
mod handlers;
mod kubelet_client;
mod limits;
mod metrics;
mod object;
mod registry;
mod resources;
mod selector;
mod served;
mod serving;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use auth::tls::{load_server_config, server_config, EtcdTls, TlsError};
pub use auth::tokens::{ServiceAccountTokens, TokenSettings};
pub use auth::{AuthConfig, AuthorizationMode, TokenFile, User};
pub use cache::{CacheConfig, WatchCache, WatchFrom, WatchStream};
pub use error::{Cause, Error, Result};
/// Entry points for the fuzz targets (`fuzz/`); not a stable API.
#[doc(hidden)]
pub use handlers::fuzz_api;
pub use handlers::{KUBE_VERSION, MAX_BODY};
pub use kubelet_client::KubeletClient;
pub use object::Object;
pub use registry::{Etcd, Ipv4Cidr, PortRange, Registry, ServiceRanges, COMPACT_REV_KEY};
pub use resources::{Resource, RESOURCES};
pub use selector::{FieldSelector, Filter, LabelSelector};

/// How to run an apiserver.
#[derive(Debug, Clone)]
pub struct Config {
    /// etcd v3 client endpoints (`http://127.0.0.1:2379`).
    pub etcd_servers: Vec<String>,
    pub cache: CacheConfig,
}

/// What [`Apiserver::with_options`] adds to a [`Config`]: authentication
/// and authorization, and TLS towards etcd. The default is
/// [`Apiserver::new`]'s behaviour: AlwaysAllow, plain etcd.
#[derive(Debug, Clone)]
pub struct Options {
    pub auth: AuthConfig,
    /// Client TLS for `https://` etcd servers.
    pub etcd_tls: Option<EtcdTls>,
    /// Concurrent HTTP/2 streams a client may open on one connection
    /// (kube-apiserver's `--http2-max-streams-per-connection`, 1000 by
    /// default; 0: hyper's default, 200).
    pub http2_max_streams_per_connection: u32,
    /// How often etcd's history is compacted to the revision seen one
    /// interval earlier (kube-apiserver's `--etcd-compaction-interval`, 5
    /// minutes by default; zero: never, leave it to someone else).
    pub etcd_compaction_interval: Duration,
    /// How long Events live after their last write (kube-apiserver's
    /// `--event-ttl`, 1 hour by default); etcd deletes them through leases
    /// shared by the writes of a short window. Must not be zero.
    pub event_ttl: Duration,
    /// Read-only requests (get, list) served at once, watches and other
    /// long-running requests not counted; more are answered 429 (except
    /// for `system:masters`). kube-apiserver's `--max-requests-inflight`,
    /// 400 by default; 0: no limit.
    pub max_requests_inflight: usize,
    /// Mutating requests (create, update, patch, delete) served at once, as
    /// above: `--max-mutating-requests-inflight`, 200 by default; 0: no
    /// limit.
    pub max_mutating_requests_inflight: usize,
    /// How long a client may take to send a request head (and a new
    /// connection its first request) before the connection is closed;
    /// kube-apiserver's server uses 32 s. Zero: unbounded.
    pub request_header_timeout: Duration,
    /// How `pods/log` reaches kubelets: kube-apiserver's
    /// `--kubelet-client-certificate`, `--kubelet-client-key` and
    /// `--kubelet-certificate-authority` (default: plain HTTP).
    pub kubelet_client: KubeletClient,
    /// Whether kube's ServiceAccount admission plugin runs: a created pod
    /// gets `spec.serviceAccountName: default` when it names none, and is
    /// refused (403) when its ServiceAccount does not exist. On in
    /// kube-apiserver (and `ballast apiserver`), where a controller
    /// manager creates the `default` ServiceAccounts; off here by default,
    /// for apiservers run without one.
    pub service_account_admission: bool,
    /// Where Services get their addresses: kube-apiserver's
    /// `--service-cluster-ip-range` and `--service-node-port-range`.
    pub service_ranges: ServiceRanges,
    /// The address and port the `kubernetes` Service's Endpoints and
    /// EndpointSlice point at for this apiserver (kube-apiserver's
    /// `--advertise-address` and its secure port); `None`: this apiserver
    /// announces none (the Service is kept all the same).
    pub advertise_address: Option<std::net::SocketAddr>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            auth: AuthConfig::default(),
            etcd_tls: None,
            http2_max_streams_per_connection: 1000,
            etcd_compaction_interval: Duration::from_secs(5 * 60),
            event_ttl: Duration::from_secs(60 * 60),
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            request_header_timeout: Duration::from_secs(32),
            kubelet_client: KubeletClient::default(),
            service_account_admission: false,
            service_ranges: ServiceRanges::default(),
            advertise_address: None,
        }
    }
}

/// One apiserver: its etcd connection, a watch cache per resource, the
/// compactor, and the HTTP router over them. Dropping it (and every server
/// using its router) stops the caches; dropping every clone of it stops
/// the compactor. Clones share everything (to serve one apiserver on a
/// plain and a TLS port at once).
#[derive(Clone)]
pub struct Apiserver {
    state: Arc<handlers::AppState>,
    conn_limits: serving::ConnLimits,
    /// Shared by every port of this apiserver.
    max_in_flight: limits::MaxInFlight,
    /// `None` when compaction is off.
    compactor: Option<Arc<registry::Compactor>>,
    /// `/metrics` and the request counters every route goes through.
    metrics: metrics::ApiMetrics,
}

impl Apiserver {
    /// Connects (lazily) to etcd, starts the watch caches and creates the
    /// default namespaces (`default`, `kube-system`, `kube-public`,
    /// `kube-node-lease`) that are missing; `/readyz` answers 200 once both
    /// are done. Must be called inside a Tokio runtime.
    pub fn new(config: Config) -> Result<Apiserver> {
        Apiserver::with_options(config, Options::default())
    }

    /// [`Apiserver::new`] with authentication, authorization and etcd TLS;
    /// with RBAC among the modes, the bootstrap policy is created too
    /// before `/readyz` answers 200.
    pub fn with_options(config: Config, options: Options) -> Result<Apiserver> {
        let etcd = Etcd::connect_with_tls(&config.etcd_servers, options.etcd_tls.as_ref())?;
        let events = Resource::find("", "events").expect("events are served");
        let registry = Registry::new(etcd.clone()).expire_after(events, options.event_ttl)?;
        let compactor = (!options.etcd_compaction_interval.is_zero()).then(|| {
            Arc::new(registry::Compactor::start(
                etcd.clone(),
                options.etcd_compaction_interval,
            ))
        });
        let caches = RESOURCES
            .iter()
            .map(|r| WatchCache::start(r, registry.clone(), config.cache.clone()))
            .collect();
        let served = served::Served::new(registry.clone(), config.cache.clone());
        let state = Arc::new(handlers::AppState {
            registry,
            caches,
            served,
            namespaces_ready: Default::default(),
            auth: auth::Auth::new(options.auth),
            rbac_ready: Default::default(),
            kubelet: options.kubelet_client,
            service_account_admission: options.service_account_admission,
            services: options.service_ranges,
            advertise: options.advertise_address,
        });
        state.bootstrap();
        let metrics = metrics::ApiMetrics::new(state.caches.clone(), etcd.request_metrics());
        Ok(Apiserver {
            metrics,
            state,
            conn_limits: serving::ConnLimits {
                max_streams: options.http2_max_streams_per_connection,
                header_read_timeout: options.request_header_timeout,
            },
            max_in_flight: limits::MaxInFlight::new(
                options.max_requests_inflight,
                options.max_mutating_requests_inflight,
            ),
            compactor,
        })
    }

    /// The revision etcd was last compacted to, as far as this apiserver's
    /// compactor knows (its own compaction or another apiserver's); 0
    /// before it knows any, `None` when compaction is off.
    pub fn compacted_revision(&self) -> Option<i64> {
        self.compactor.as_ref().map(|c| c.compacted_revision())
    }

    /// The cache of the resource `name` (e.g. `pods`).
    pub fn cache(&self, name: &str) -> Option<&WatchCache> {
        self.state.caches.iter().find(|c| c.resource().name == name)
    }

    /// The HTTP routes.
    pub fn router(&self) -> axum::Router {
        handlers::router(self.state.clone(), self.max_in_flight.clone()).layer(
            axum::middleware::from_fn_with_state(self.metrics.clone(), metrics::instrument),
        )
    }

    /// One read from etcd: `Ok` when storage answers, else an error naming
    /// the cause (a refused connection, a TLS handshake failure, …).
    pub async fn check_storage(&self) -> Result<i64> {
        self.state.registry.etcd().check().await
    }

    /// Serves HTTPS (HTTP/1.1 and h2) on `listener` with `tls` until
    /// `shutdown` resolves; client certificates the config verified name
    /// the user of their connection's requests.
    pub async fn serve_tls(
        self,
        listener: tokio::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let listener = auth::tls::TlsListener::new(listener, tls)?;
        let peer = |io: &ballast_net::BatchedWrites<_>| auth::tls::Peer::of(io.get_ref());
        serving::serve(listener, self.router(), peer, self.conn_limits, shutdown).await
    }

    /// Serves plain HTTP on `listener` until `shutdown` resolves: the
    /// trusted loopback port (see `auth`).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::serve::ListenerExt;
        // Without TCP_NODELAY a watch event written while the previous one
        // is unacknowledged waits for the client's delayed ACK (~40 ms).
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        serving::serve(listener, self.router(), |_| (), self.conn_limits, shutdown).await
    }
}
