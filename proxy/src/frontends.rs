//! The listeners the proxy runs, brought in line with a [`Desired`] on
//! every sync: a new frontend is bound and served, a kept one has its
//! balancer's endpoints swapped in place (its listener and connections
//! untouched), a removed one has its accept loop dropped, which closes
//! the listening socket while connections already forwarded run on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::json;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

use crate::balancer::Balancer;
use crate::http::{self, Response};
use crate::metrics::Stats;
use crate::service_ports::{Desired, Frontend, HealthCheck, Protocol};
use crate::udp;

/// A task aborted when its owner is dropped.
#[derive(Debug)]
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Running {
    balancer: Arc<Balancer>,
    _task: Task,
}

struct HealthServer {
    check: Arc<RwLock<HealthCheck>>,
    _tasks: Vec<Task>,
}

/// Per-listener bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub udp: udp::Limits,
}

/// Every listener of the proxy.
pub struct Frontends {
    running: BTreeMap<Frontend, Running>,
    health: BTreeMap<u16, HealthServer>,
    /// Frontends that failed to bind, so the failure is logged once.
    failed: BTreeSet<Frontend>,
    /// `externalIPs` refused (not loopback), so each is logged once.
    refused_external: BTreeSet<(std::net::IpAddr, String)>,
    node_addresses: Vec<std::net::IpAddr>,
    limits: Limits,
    stats: Arc<Stats>,
}

impl Frontends {
    /// No listeners yet; health check ports will listen on `node_addresses`.
    pub fn new(node_addresses: Vec<std::net::IpAddr>, limits: Limits, stats: Arc<Stats>) -> Self {
        Frontends {
            running: BTreeMap::new(),
            health: BTreeMap::new(),
            failed: BTreeSet::new(),
            refused_external: BTreeSet::new(),
            node_addresses,
            limits,
            stats,
        }
    }

    /// How many frontends listen.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Brings the listeners in line with `desired`.
    pub async fn sync(&mut self, desired: &Desired) {
        for (ip, service) in desired
            .refused_external_ips
            .difference(&self.refused_external)
        {
            tracing::warn!(external_ip = %ip, %service,
                "not serving an externalIP that is not a loopback address (only loopback addresses are bound here)");
        }
        self.refused_external = desired.refused_external_ips.clone();
        self.running
            .retain(|frontend, _| desired.routes.contains_key(frontend));
        self.failed
            .retain(|frontend| desired.routes.contains_key(frontend));
        for (frontend, route) in &desired.routes {
            if let Some(running) = self.running.get(frontend) {
                if *running.balancer.endpoints() != route.endpoints {
                    running.balancer.update(route.endpoints.clone());
                }
                continue;
            }
            let balancer = Arc::new(Balancer::new(route.endpoints.clone()));
            match self.start(*frontend, balancer.clone()).await {
                Ok(task) => {
                    if self.failed.remove(frontend) {
                        tracing::info!(%frontend, service = %route.service_port, "listening after all");
                    }
                    self.running.insert(
                        *frontend,
                        Running {
                            balancer,
                            _task: task,
                        },
                    );
                }
                Err(e) => {
                    self.stats.bind_failure();
                    if self.failed.insert(*frontend) {
                        tracing::warn!(%frontend, service = %route.service_port, error = %e,
                            "cannot listen; retrying at each sync");
                    }
                }
            }
        }
        self.health
            .retain(|port, _| desired.health_checks.contains_key(port));
        for (port, check) in &desired.health_checks {
            if let Some(server) = self.health.get(port) {
                *server.check.write() = check.clone();
                continue;
            }
            let check = Arc::new(RwLock::new(check.clone()));
            let mut tasks = Vec::new();
            for ip in &self.node_addresses {
                let addr = SocketAddr::new(*ip, *port);
                match TcpListener::bind(addr).await {
                    Ok(listener) => {
                        let check = check.clone();
                        let handler: http::Handler =
                            Arc::new(move |_: &str| health_response(&check.read()));
                        tasks.push(Task(tokio::spawn(http::serve(listener, handler))));
                    }
                    Err(e) => {
                        self.stats.bind_failure();
                        tracing::warn!(%addr, error = %e, "cannot serve a healthCheckNodePort");
                    }
                }
            }
            self.health.insert(
                *port,
                HealthServer {
                    check,
                    _tasks: tasks,
                },
            );
        }
    }

    async fn start(&self, frontend: Frontend, balancer: Arc<Balancer>) -> std::io::Result<Task> {
        let stats = self.stats.clone();
        let task = match frontend.protocol {
            Protocol::Tcp => {
                let listener = TcpListener::bind(frontend.addr).await?;
                tokio::spawn(crate::tcp::serve(
                    listener,
                    balancer,
                    self.limits.max_connections,
                    stats,
                ))
            }
            Protocol::Udp => {
                let socket = UdpSocket::bind(frontend.addr).await?;
                tokio::spawn(udp::serve(socket, balancer, self.limits.udp, stats))
            }
        };
        Ok(Task(task))
    }
}

/// kube-proxy's answer on a `healthCheckNodePort`: 200 while the Service
/// has a ready endpoint on this node, else 503, so a load balancer sends
/// traffic only to nodes that can serve it locally.
fn health_response(check: &HealthCheck) -> Response {
    let status = if check.local_endpoints > 0 { 200 } else { 503 };
    let mut response = Response::json(
        status,
        &json!({
            "service": {"namespace": check.namespace, "name": check.name},
            "localEndpoints": check.local_endpoints,
            "serviceProxyHealthy": true,
        }),
    );
    response.headers.push((
        "X-Load-Balancing-Endpoint-Weight",
        check.local_endpoints.to_string(),
    ));
    response
}
