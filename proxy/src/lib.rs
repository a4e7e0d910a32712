//! `ballast proxy`: kube-proxy's job for Ballast, as a userspace proxy in
//! tokio. It reads Services and EndpointSlices (discovery.k8s.io/v1) from
//! the apiserver — nothing else, as kube-proxy — and listens on every
//! Service's `clusterIP:port` (TCP and UDP) and, for NodePort and
//! LoadBalancer Services, on the node's addresses at the `nodePort`,
//! forwarding each connection (or UDP flow) to an endpoint in use: round
//! robin, or pinned per client address with `sessionAffinity: ClientIP`.
//! See [`service_ports`] for which endpoints each address uses.
//!
//! # One proxy per machine
//! Ballast's cluster IPs (`127.96.0.0/16` in `ballast up`) are loopback
//! addresses, so on Linux every one is already local and can be bound
//! without any network set-up; and every node of `ballast up` shares this
//! machine's loopback network and reports `127.0.0.1` as its InternalIP.
//! Two proxies on one machine would therefore bind the same addresses, so
//! `ballast up` runs one proxy for the machine, acting for the first node:
//! `internalTrafficPolicy`/`externalTrafficPolicy: Local` mean "endpoints
//! on that node". On a machine of its own, each node runs its own proxy.
//!
//! Services labelled `service.kubernetes.io/service-proxy-name` belong to
//! another proxy and are skipped, unless this proxy is given that name
//! ([`Config::service_proxy_name`]), when it serves only those — kube-proxy's
//! convention for alternative proxies. Headless Services have no address
//! to serve.
//!
//! # Layout
//! - [`service_ports`] — what to serve: frontends and their endpoints, from
//!   Services and slices (a pure function).
//! - `balancer` — round robin and ClientIP affinity over one frontend's endpoints.
//! - `frontends` — the listeners, kept in line with what to serve.
//! - `tcp`, `udp` — forwarding of one frontend's connections and flows.
//! - `http`, `metrics` — `/healthz`, `/livez`, `/metrics` and health check node ports.

mod balancer;
mod frontends;
mod http;
mod metrics;
pub mod service_ports;
mod tcp;
mod udp;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_controllers::informer::Informer;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::watcher;
use kube::Client;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use frontends::{Frontends, Limits};
use http::Response;
use metrics::Stats;
use service_ports::{Scope, SERVICE_NAME_LABEL};

/// The label giving a Service (and its slices) to an alternative proxy.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// The label of a headless Service's slices.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// kube-proxy's `--config-sync-period` default.
pub const DEFAULT_CONFIG_SYNC_PERIOD: Duration = Duration::from_secs(15 * 60);
/// kube-proxy's `--healthz-bind-address` default.
pub const DEFAULT_HEALTHZ_BIND_ADDRESS: &str = "0.0.0.0:10256";
/// kube-proxy's `--metrics-bind-address` default.
pub const DEFAULT_METRICS_BIND_ADDRESS: &str = "127.0.0.1:10249";

/// After a change is seen, how long more changes are gathered before the
/// frontends are synced (so a rollout's burst costs one sync, and a change
/// is served well within a second).
const SYNC_BATCH: Duration = Duration::from_millis(50);
/// How long [`Proxy::bind`] waits for this node's Node object to read its
/// addresses from.
const NODE_WAIT: Duration = Duration::from_secs(60);

/// Where NodePorts listen (kube-proxy's `--nodeport-addresses`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// The node's InternalIP addresses, read from its Node object.
    Primary,
    /// These addresses (`0.0.0.0` for all of them).
    Addresses(Vec<IpAddr>),
}

/// How a proxy runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's name (`--hostname-override`): endpoints on it are local.
    pub node_name: String,
    /// Its family is the one served (cluster IPs and endpoints of the
    /// other family are skipped), as kube-proxy's `--bind-address`.
    pub bind_address: IpAddr,
    pub nodeport_addresses: NodePortAddresses,
    /// `/healthz` and `/livez`; `None`: not served.
    pub healthz_bind_address: Option<SocketAddr>,
    /// `/metrics`; `None`: not served.
    pub metrics_bind_address: Option<SocketAddr>,
    /// How often everything is synced even when nothing changed.
    pub config_sync_period: Duration,
    /// Serve only the Services labelled with this proxy name.
    pub service_proxy_name: Option<String>,
    /// Connections forwarded at once per frontend; more wait in the backlog.
    pub max_connections_per_frontend: usize,
    /// A UDP flow with no datagram either way for this long ends.
    pub udp_idle_timeout: Duration,
    /// UDP flows open at once per frontend.
    pub max_udp_flows_per_frontend: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_name: String::new(),
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            nodeport_addresses: NodePortAddresses::Primary,
            healthz_bind_address: None,
            metrics_bind_address: None,
            config_sync_period: DEFAULT_CONFIG_SYNC_PERIOD,
            service_proxy_name: None,
            max_connections_per_frontend: 4096,
            udp_idle_timeout: Duration::from_secs(30),
            max_udp_flows_per_frontend: 4096,
        }
    }
}

/// Why the proxy cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("node {node:?}: {reason}; name this machine's Node with --hostname-override or give --nodeport-addresses")]
    NodeAddresses { node: String, reason: String },
}

/// A proxy with its health and metrics listeners bound, ready to [`run`](Proxy::run).
pub struct Proxy {
    client: Client,
    config: Config,
    node_addresses: Vec<IpAddr>,
    healthz: Option<TcpListener>,
    metrics: Option<TcpListener>,
    stats: Arc<Stats>,
}

async fn bind(what: &'static str, addr: Option<SocketAddr>) -> Result<Option<TcpListener>, Error> {
    let Some(addr) = addr else { return Ok(None) };
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|source| Error::Bind { what, addr, source })
}

/// The InternalIP addresses of `node` of the family of `ipv6`, waiting up
/// to [`NODE_WAIT`] for the Node to be registered.
async fn node_addresses(client: &Client, node: &str, ipv6: bool) -> Result<Vec<IpAddr>, Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + NODE_WAIT;
    let mut last_error = String::from("not found");
    while Instant::now() < deadline {
        match nodes.get_opt(node).await {
            Ok(Some(found)) => {
                let addresses: Vec<IpAddr> = found
                    .status
                    .and_then(|s| s.addresses)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .filter_map(|a| a.address.parse::<IpAddr>().ok())
                    .filter(|ip| ip.is_ipv6() == ipv6)
                    .collect();
                if !addresses.is_empty() {
                    return Ok(addresses);
                }
                last_error = "has no InternalIP address".into();
            }
            Ok(None) => last_error = "not found".into(),
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(Error::NodeAddresses {
        node: node.to_string(),
        reason: last_error,
    })
}

impl Proxy {
    /// Binds the health and metrics addresses and finds the node's
    /// addresses; errors when an address is taken or the Node (with
    /// `--nodeport-addresses` left to the node's) never shows up.
    pub async fn bind(client: Client, config: Config) -> Result<Proxy, Error> {
        let healthz = bind("healthz", config.healthz_bind_address).await?;
        let metrics = bind("metrics", config.metrics_bind_address).await?;
        let ipv6 = config.bind_address.is_ipv6();
        let node_addresses = match &config.nodeport_addresses {
            NodePortAddresses::Addresses(ips) => ips.clone(),
            NodePortAddresses::Primary => node_addresses(&client, &config.node_name, ipv6).await?,
        };
        Ok(Proxy {
            client,
            config,
            node_addresses,
            healthz,
            metrics,
            stats: Arc::default(),
        })
    }

    /// Where `/healthz` and `/livez` are served.
    pub fn healthz_addr(&self) -> Option<SocketAddr> {
        self.healthz.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Where `/metrics` is served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The addresses NodePorts listen on.
    pub fn node_addresses(&self) -> &[IpAddr] {
        &self.node_addresses
    }

    /// Watches and forwards until `shutdown` resolves; then every listener
    /// closes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Proxy {
            client,
            config,
            node_addresses,
            healthz,
            metrics,
            stats,
        } = self;
        let mut tasks = Vec::new();
        if let Some(listener) = healthz {
            let stats = stats.clone();
            let handler: http::Handler = Arc::new(move |path: &str| healthz_response(path, &stats));
            tasks.push(tokio::spawn(http::serve(listener, handler)));
        }
        if let Some(listener) = metrics {
            let stats = stats.clone();
            let handler: http::Handler = Arc::new(move |path: &str| match path {
                "/metrics" => Response::text(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    stats.render(),
                ),
                _ => Response::text(404, "text/plain", "404 page not found\n".into()),
            });
            tasks.push(tokio::spawn(http::serve(listener, handler)));
        }

        let (service_labels, slice_labels) = match &config.service_proxy_name {
            Some(name) => (
                format!("{SERVICE_PROXY_NAME_LABEL}={name},!{HEADLESS_LABEL}"),
                format!("{SERVICE_NAME_LABEL},{SERVICE_PROXY_NAME_LABEL}={name},!{HEADLESS_LABEL}"),
            ),
            None => (
                format!("!{SERVICE_PROXY_NAME_LABEL},!{HEADLESS_LABEL}"),
                format!("{SERVICE_NAME_LABEL},!{SERVICE_PROXY_NAME_LABEL},!{HEADLESS_LABEL}"),
            ),
        };
        let changed = Arc::new(Notify::new());
        let mut services: Informer<Service> = Informer::new(
            Api::all(client.clone()),
            watcher::Config::default().labels(&service_labels),
        );
        let mut slices: Informer<EndpointSlice> = Informer::new(
            Api::all(client.clone()),
            watcher::Config::default().labels(&slice_labels),
        );
        let notify = changed.clone();
        services.on_change(move |_, _| notify.notify_one());
        let notify = changed.clone();
        slices.on_change(move |_, _| notify.notify_one());
        let (service_cache, slice_cache) = (services.cache(), slices.cache());
        tasks.push(tokio::spawn(services.run()));
        tasks.push(tokio::spawn(slices.run()));

        let scope = Scope {
            node_name: config.node_name.clone(),
            node_addresses: node_addresses.clone(),
            ipv6: config.bind_address.is_ipv6(),
        };
        let limits = Limits {
            max_connections: config.max_connections_per_frontend.max(1),
            udp: udp::Limits {
                idle_timeout: config.udp_idle_timeout,
                max_flows: config.max_udp_flows_per_frontend.max(1),
            },
        };
        let mut frontends = Frontends::new(node_addresses, limits, stats.clone());
        tokio::pin!(shutdown);
        let loaded = async {
            service_cache.wait_ready().await;
            slice_cache.wait_ready().await;
        };
        let stopped = tokio::select! {
            _ = loaded => false,
            _ = &mut shutdown => true,
        };
        if !stopped {
            tracing::info!(node = %config.node_name, "proxy syncing Services and EndpointSlices");
            loop {
                let started = Instant::now();
                let services = service_cache.all();
                let slices = slice_cache.all();
                let services: Vec<&Service> = services.iter().map(|s| s.as_ref()).collect();
                let slices: Vec<&EndpointSlice> = slices.iter().map(|s| s.as_ref()).collect();
                let desired = service_ports::desired(&services, &slices, &scope);
                frontends.sync(&desired).await;
                stats.synced(frontends.len(), started.elapsed());
                tokio::select! {
                    _ = changed.notified() => tokio::time::sleep(SYNC_BATCH).await,
                    _ = tokio::time::sleep(config.config_sync_period) => {}
                    _ = &mut shutdown => break,
                }
            }
        }
        drop(frontends);
        for task in tasks {
            task.abort();
        }
        tracing::info!("proxy stopped");
    }
}

/// kube-proxy's `/healthz` and `/livez`: 200 once the frontends have been
/// synced, 503 before, with the time of the last sync.
fn healthz_response(path: &str, stats: &Stats) -> Response {
    if !matches!(path, "/healthz" | "/livez") {
        return Response::text(404, "text/plain", "404 page not found\n".into());
    }
    let rfc3339 = |ms: u64| {
        Timestamp::from_millisecond(ms as i64)
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    let now = Timestamp::now().to_string();
    let last = stats.last_sync_ms();
    let status = if last.is_some() { 200 } else { 503 };
    Response::json(
        status,
        &json!({
            "lastUpdated": last.map(rfc3339).unwrap_or_default(),
            "currentTime": now,
            "nodeEligible": true,
        }),
    )
}
