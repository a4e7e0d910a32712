//! # ballast-dns
//!
//! `ballast dns`: the cluster DNS, as CoreDNS's `kubernetes` plugin (or
//! kube-dns) answers it. It watches Services, EndpointSlices, Pods and
//! Namespaces through the controllers' shared informers and answers, over
//! UDP and TCP on one address:
//!
//! ```text
//! web.shop.svc.cluster.local              A     the ClusterIP (headless: each ready endpoint)
//! _http._tcp.web.shop.svc.cluster.local   SRV   the named port (headless: per endpoint)
//! web-0.db.shop.svc.cluster.local         A     an endpoint by hostname (pod hostname+subdomain)
//! 127-128-0-5.shop.pod.cluster.local      A     a pod of that namespace with that IP
//! 9.0.96.127.in-addr.arpa                 PTR   the Service (or endpoint) with that IP
//! ```
//!
//! It is authoritative for the cluster domain (and the reverse names of
//! the addresses it knows) only. Any other name is forwarded to upstream
//! servers, by default the node's resolv.conf's, as CoreDNS's default
//! Corefile does (`forward . /etc/resolv.conf`); without upstreams it is
//! REFUSED. See `records` for NXDOMAIN versus NODATA.
//!
//! # Layout
//! - `names` — query names parsed against the cluster domain.
//! - `records` — the answers from the cluster state ([`Lookup`]).
//! - `server` — the wire: UDP and TCP, truncation, error codes.
//! - [`forward`] — names outside the cluster, sent on to upstreams.
//! - `metrics` — CoreDNS's series, served with `/health` and `/ready` (as
//!   its `health` and `ready` plugins answer) on the status address.
//! - [`client`] — one query, for checks and tests.

pub mod client;
pub mod forward;
mod metrics;
mod names;
mod records;
mod server;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ballast_controllers::informer::{Cache, Informer};
use ballast_metrics::prometheus_client::registry::Registry;
use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher;
use kube::Client;

pub use hickory_proto::op::{Message, ResponseCode};
pub use hickory_proto::rr::{RData, RecordType};
pub use records::Lookup;

/// Errors of the DNS server and client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid domain name {0:?}: {1}")]
    Name(String, String),
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("querying {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("querying {0}: no answer in time")]
    Timeout(SocketAddr),
    #[error("encoding the query: {0}")]
    Encode(String),
    #[error("decoding the answer: {0}")]
    Decode(String),
}

/// `ballast dns`'s settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// Where UDP and TCP are served (port 0: a free one for both).
    pub listen: SocketAddr,
    /// The TTL of every record, and of negative answers (5 s, CoreDNS's).
    pub ttl: u32,
    /// Where names outside the cluster are forwarded, in order; none:
    /// they are REFUSED.
    pub upstreams: Vec<SocketAddr>,
    /// Where `/metrics`, `/health` and `/ready` are served in plain HTTP
    /// (port 0: a free one); `None` serves none of them.
    pub status: Option<SocketAddr>,
}

/// The informers' caches as the answers' [`Lookup`].
struct Caches {
    services: Cache<Service>,
    slices: Cache<EndpointSlice>,
    pods: Cache<Pod>,
    namespaces: Cache<Namespace>,
}

impl Lookup for Caches {
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.services.get(namespace, name)
    }

    fn slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
        self.slices
            .namespace_filter(namespace, |s| records::slice_of(s, service))
    }

    fn pods(&self, namespace: &str) -> Vec<Arc<Pod>> {
        self.pods.namespace(namespace)
    }

    fn namespace_exists(&self, namespace: &str) -> bool {
        self.namespaces.get("", namespace).is_some()
    }

    fn all_services(&self) -> Vec<Arc<Service>> {
        self.services.all()
    }

    fn all_slices(&self) -> Vec<Arc<EndpointSlice>> {
        self.slices.all()
    }
}

/// How long the first list of a resource may take before a warning says
/// why nothing is answered yet (queries time out until every list is in).
const LIST_WARNING: Duration = Duration::from_secs(30);

/// Waits until `cache` has listed, warning every [`LIST_WARNING`] — a
/// server whose user may not list `resource` (a 403) would otherwise sit
/// silent with its queries unanswered.
async fn wait_listed<K: kube::Resource + Clone>(cache: &Cache<K>, resource: &str) {
    let mut waited = Duration::ZERO;
    while tokio::time::timeout(LIST_WARNING, cache.wait_ready())
        .await
        .is_err()
    {
        waited += LIST_WARNING;
        tracing::warn!(
            resource,
            waited = ?waited,
            "cluster DNS not answering yet: {resource} have not been listed; may its user \
             list and watch them (kube-dns's ClusterRole system:kube-dns)?"
        );
    }
}

/// A running DNS server; dropping it stops it.
#[derive(Debug)]
pub struct Dns {
    addr: SocketAddr,
    status: Option<SocketAddr>,
    tasks: tokio::task::JoinSet<()>,
}

/// Serves CoreDNS's `/metrics`, `/health` (`OK` while the process runs) and
/// `/ready` (503 naming the `kubernetes` plugin until every watch has
/// listed, then `OK`) on `listener`.
async fn serve_status(
    listener: tokio::net::TcpListener,
    registry: Registry,
    ready: Arc<AtomicBool>,
) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let router = ballast_metrics::router(Arc::new(registry))
        .route("/health", get(|| async { "OK" }))
        .route(
            "/ready",
            get(move || {
                let ready = ready.load(Ordering::Acquire);
                async move {
                    if ready {
                        (StatusCode::OK, "OK")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "kubernetes")
                    }
                }
            }),
        );
    if let Err(e) = axum::serve(listener, router).await {
        tracing::error!(error = %e, "the DNS status server failed");
    }
}

impl Dns {
    /// Binds `config.listen`, starts the watches and, once they have
    /// listed, serves.
    pub async fn start(client: Client, config: Config) -> Result<Dns, Error> {
        let domain = format!("{}.", config.cluster_domain.trim_end_matches('.'));
        let domain = Name::from_ascii(&domain)
            .map_err(|e| Error::Name(config.cluster_domain.clone(), e.to_string()))?
            .to_lowercase();
        let sockets = server::Sockets::bind(config.listen)
            .await
            .map_err(|e| Error::Bind(config.listen, e))?;
        let addr = sockets
            .tcp
            .local_addr()
            .map_err(|e| Error::Bind(config.listen, e))?;
        let mut registry = ballast_metrics::new_registry();
        let metrics = metrics::Metrics::new(addr, &mut registry);
        let ready = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        let mut status = None;
        if let Some(want) = config.status {
            let listener = tokio::net::TcpListener::bind(want)
                .await
                .map_err(|e| Error::Bind(want, e))?;
            status = Some(listener.local_addr().map_err(|e| Error::Bind(want, e))?);
            tasks.spawn(serve_status(listener, registry, ready.clone()));
        }
        let services =
            Informer::<Service>::new(Api::all(client.clone()), watcher::Config::default());
        let slices =
            Informer::<EndpointSlice>::new(Api::all(client.clone()), watcher::Config::default());
        let pods = Informer::<Pod>::new(Api::all(client.clone()), watcher::Config::default());
        let namespaces = Informer::<Namespace>::new(Api::all(client), watcher::Config::default());
        let caches = Caches {
            services: services.cache(),
            slices: slices.cache(),
            pods: pods.cache(),
            namespaces: namespaces.cache(),
        };
        tasks.spawn(services.run());
        tasks.spawn(slices.run());
        tasks.spawn(pods.run());
        tasks.spawn(namespaces.run());
        let responder = Arc::new(server::Responder {
            zone: records::Zone {
                domain,
                ttl: config.ttl,
            },
            cluster: caches,
            metrics,
            forwarder: forward::Forwarder::new(config.upstreams.clone()),
        });
        tasks.spawn(async move {
            let c = &responder.cluster;
            wait_listed(&c.services, "services").await;
            wait_listed(&c.slices, "endpointslices").await;
            wait_listed(&c.pods, "pods").await;
            wait_listed(&c.namespaces, "namespaces").await;
            ready.store(true, Ordering::Release);
            let upstreams = responder.forwarder.as_ref().map(|f| f.upstreams()).unwrap_or_default();
            tracing::info!(%addr, domain = %responder.zone.domain, ?upstreams, "cluster DNS serving");
            tokio::join!(
                server::serve_udp(sockets.udp, responder.clone()),
                server::serve_tcp(sockets.tcp, responder.clone()),
            );
        });
        Ok(Dns {
            addr,
            status,
            tasks,
        })
    }

    /// The address served (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics`, `/health` and `/ready` are served, if anywhere.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status
    }

    /// Serves until `shutdown` resolves.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        self.tasks.shutdown().await;
    }
}
