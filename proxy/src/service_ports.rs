//! What the proxy should serve, computed from the Services and
//! EndpointSlices it sees — a pure function, so the whole policy is tested
//! without sockets. For every port of every Service with a cluster IP:
//!
//! - its endpoints are the slices' endpoints (`kubernetes.io/service-name`)
//!   whose slice port has the Service port's name and protocol; of each,
//!   the first address (kube-proxy's choice);
//! - in use are the ready ones (`ready`, unset meaning true); when none is
//!   ready, the serving and terminating ones (kube-proxy's fallback, so
//!   connections drain to pods that are shutting down but still serve);
//! - `clusterIP:port` forwards to them, or with `internalTrafficPolicy:
//!   Local` to the ones on this node only;
//! - for `NodePort` and `LoadBalancer` Services, every node address at the
//!   `nodePort` forwards to them, or with `externalTrafficPolicy: Local` to
//!   the ones on this node only; a LoadBalancer with that policy also gets
//!   its `healthCheckNodePort` answered with its local ready endpoints;
//! - every `spec.externalIPs` address at the Service port forwards as a
//!   node port does (`externalTrafficPolicy: Local` applies); only
//!   loopback addresses are served here — binding another would open the
//!   Service to the network behind the cluster's back — the others are
//!   listed in [`Desired::refused_external_ips`] for a warning;
//! - a frontend with no endpoint in use is left out, so nothing listens and
//!   the kernel refuses its connections (kube-proxy REJECTs them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::balancer::Endpoints;

/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// kube-proxy's default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10_800);

/// A transport protocol the proxy forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn parse(protocol: Option<&str>) -> Option<Protocol> {
        match protocol.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// An address and protocol the proxy listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    pub protocol: Protocol,
    pub addr: SocketAddr,
}

impl std::fmt::Display for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.protocol.name())
    }
}

/// Where one frontend forwards to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// `namespace/name:port` of the Service port, for logs.
    pub service_port: String,
    pub endpoints: Endpoints,
}

/// A `healthCheckNodePort` to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub namespace: String,
    pub name: String,
    /// Ready endpoints of the Service on this node.
    pub local_endpoints: usize,
}

/// Which node this proxy runs on and what it listens on.
#[derive(Clone, Debug)]
pub struct Scope {
    /// This node's name: endpoints whose `nodeName` is this are local.
    pub node_name: String,
    /// The addresses NodePorts (and health check ports) listen on.
    pub node_addresses: Vec<IpAddr>,
    /// Only cluster IPs and endpoints of this family are served.
    pub ipv6: bool,
}

/// Everything the proxy should serve.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub routes: BTreeMap<Frontend, Route>,
    /// By node port.
    pub health_checks: BTreeMap<u16, HealthCheck>,
    /// `externalIPs` not served (not loopback), with their Service port.
    pub refused_external_ips: BTreeSet<(IpAddr, String)>,
}

/// One endpoint of a Service port, as a slice reports it.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    addr: SocketAddr,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
}

/// The addresses to use among `candidates`: the ready ones, else the
/// serving terminating ones; of the local ones only when `local_only`.
fn in_use(candidates: &[Candidate], local_only: bool) -> Vec<SocketAddr> {
    let eligible = || candidates.iter().filter(|c| c.local || !local_only);
    let ready: Vec<SocketAddr> = eligible().filter(|c| c.ready).map(|c| c.addr).collect();
    if !ready.is_empty() {
        return ready;
    }
    eligible()
        .filter(|c| c.serving && c.terminating)
        .map(|c| c.addr)
        .collect()
}

fn same_family(ip: &IpAddr, ipv6: bool) -> bool {
    ip.is_ipv6() == ipv6
}

/// The endpoints of `port` (protocol `protocol`) in `slices`, deduplicated
/// by address, sorted.
fn candidates(
    port: &ServicePort,
    protocol: Protocol,
    slices: &[&EndpointSlice],
    scope: &Scope,
) -> Vec<Candidate> {
    let name = port.name.as_deref().unwrap_or("");
    let mut found: BTreeMap<SocketAddr, Candidate> = BTreeMap::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let target = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == name
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
        });
        let Some(target) = target.and_then(|p| p.port) else {
            continue;
        };
        let Ok(target) = u16::try_from(target) else {
            continue;
        };
        for endpoint in slice.endpoints.iter() {
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
            else {
                continue;
            };
            if !same_family(&ip, scope.ipv6) {
                continue;
            }
            let conditions = endpoint.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let addr = SocketAddr::new(ip, target);
            found.entry(addr).or_insert(Candidate {
                addr,
                ready,
                serving: conditions.and_then(|c| c.serving).unwrap_or(ready),
                terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
                local: endpoint.node_name.as_deref() == Some(scope.node_name.as_str()),
            });
        }
    }
    found.into_values().collect()
}

/// What to serve for `services` and `slices` on the node of `scope`.
pub fn desired(services: &[&Service], slices: &[&EndpointSlice], scope: &Scope) -> Desired {
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        let namespace = slice.metadata.namespace.as_deref().unwrap_or("");
        let labels = slice.metadata.labels.as_ref();
        if let Some(service) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) {
            by_service
                .entry((namespace, service.as_str()))
                .or_default()
                .push(slice);
        }
    }
    let mut out = Desired::default();
    for service in services {
        let namespace = service.metadata.namespace.as_deref().unwrap_or("");
        let name = service.metadata.name.as_deref().unwrap_or("");
        let slices = by_service
            .get(&(namespace, name))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        add_service(&mut out, service, namespace, name, slices, scope);
    }
    out
}

fn add_service(
    out: &mut Desired,
    service: &Service,
    namespace: &str,
    name: &str,
    slices: &[&EndpointSlice],
    scope: &Scope,
) {
    let Some(spec) = service.spec.as_ref() else {
        return;
    };
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    if type_ == "ExternalName" {
        return;
    }
    let cluster_ips: Vec<IpAddr> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
        _ => spec
            .cluster_ip
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect(),
    };
    let cluster_ips: Vec<IpAddr> = cluster_ips
        .into_iter()
        .filter(|ip| same_family(ip, scope.ipv6))
        .collect();
    if cluster_ips.is_empty() {
        return;
    }
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map_or(DEFAULT_AFFINITY_TIMEOUT, Duration::from_secs)
    });
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let external = matches!(type_, "NodePort" | "LoadBalancer");
    let external_ips: Vec<IpAddr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .filter(|ip| same_family(ip, scope.ipv6))
        .collect();
    let mut local_ready = 0;
    for port in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
            continue;
        };
        let Ok(service_port) = u16::try_from(port.port) else {
            continue;
        };
        let found = candidates(port, protocol, slices, scope);
        local_ready = local_ready.max(found.iter().filter(|c| c.local && c.ready).count());
        let label = format!(
            "{namespace}/{name}:{}",
            port.name.as_deref().unwrap_or(&port.port.to_string())
        );
        let mut add = |addr: SocketAddr, addrs: Vec<SocketAddr>| {
            if addrs.is_empty() {
                return;
            }
            out.routes.insert(
                Frontend { protocol, addr },
                Route {
                    service_port: label.clone(),
                    endpoints: Endpoints { addrs, affinity },
                },
            );
        };
        let cluster = in_use(&found, internal_local);
        for ip in &cluster_ips {
            add(SocketAddr::new(*ip, service_port), cluster.clone());
        }
        let outside = in_use(&found, external_local);
        for ip in external_ips.iter().filter(|ip| ip.is_loopback()) {
            add(SocketAddr::new(*ip, service_port), outside.clone());
        }
        let node_port = port.node_port.and_then(|p| u16::try_from(p).ok());
        if let (true, Some(node_port)) = (external, node_port) {
            let external = in_use(&found, external_local);
            for ip in &scope.node_addresses {
                add(SocketAddr::new(*ip, node_port), external.clone());
            }
        }
        for ip in external_ips.iter().filter(|ip| !ip.is_loopback()) {
            out.refused_external_ips.insert((*ip, label.clone()));
        }
    }
    let health_port = spec
        .health_check_node_port
        .and_then(|p| u16::try_from(p).ok());
    if let (true, true, Some(port)) = (type_ == "LoadBalancer", external_local, health_port) {
        out.health_checks.insert(
            port,
            HealthCheck {
                namespace: namespace.to_string(),
                name: name.to_string(),
                local_endpoints: local_ready,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn scope() -> Scope {
        Scope {
            node_name: "node-1".into(),
            node_addresses: vec!["127.0.0.1".parse().unwrap()],
            ipv6: false,
        }
    }

    fn service(spec: Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"namespace": "ns", "name": "web"}, "spec": spec}),
        )
        .unwrap()
    }

    fn slice(endpoints: Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": "web-abc",
                         "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn ep(ip: &str, node: &str, ready: bool, serving: bool, terminating: bool) -> Value {
        json!({"addresses": [ip], "nodeName": node,
               "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
    }

    fn route_addrs(d: &Desired, addr: &str) -> Option<Vec<String>> {
        let frontend = Frontend {
            protocol: Protocol::Tcp,
            addr: addr.parse().unwrap(),
        };
        let route = d.routes.get(&frontend)?;
        Some(
            route
                .endpoints
                .addrs
                .iter()
                .map(|a| a.to_string())
                .collect(),
        )
    }

    #[test]
    fn ready_endpoints_are_used_and_terminating_ones_only_as_fallback() {
        let svc = service(json!({"clusterIP": "127.96.0.10",
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}));
        let s = slice(json!([
            ep("127.101.0.1", "node-1", true, true, false),
            ep("127.101.0.2", "node-2", false, false, false),
            ep("127.101.0.3", "node-2", false, true, true),
        ]));
        let d = desired(&[&svc], &[&s], &scope());
        assert_eq!(
            route_addrs(&d, "127.96.0.10:80"),
            Some(vec!["127.101.0.1:8080".into()])
        );
        let s = slice(json!([
            ep("127.101.0.2", "node-2", false, false, false),
            ep("127.101.0.3", "node-2", false, true, true),
        ]));
        let d = desired(&[&svc], &[&s], &scope());
        assert_eq!(
            route_addrs(&d, "127.96.0.10:80"),
            Some(vec!["127.101.0.3:8080".into()])
        );
        // Nothing usable: no frontend at all, so connections are refused.
        let s = slice(json!([ep("127.101.0.2", "node-2", false, false, false)]));
        assert!(desired(&[&svc], &[&s], &scope()).routes.is_empty());
    }

    #[test]
    fn node_ports_and_traffic_policies() {
        let svc = service(json!({"type": "LoadBalancer", "clusterIP": "127.96.0.11",
            "externalTrafficPolicy": "Local", "healthCheckNodePort": 31000,
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}));
        let s = slice(json!([
            ep("127.101.0.1", "node-1", true, true, false),
            ep("127.102.0.1", "node-2", true, true, false),
        ]));
        let d = desired(&[&svc], &[&s], &scope());
        assert_eq!(route_addrs(&d, "127.96.0.11:80").unwrap().len(), 2);
        assert_eq!(
            route_addrs(&d, "127.0.0.1:30080"),
            Some(vec!["127.101.0.1:8080".into()])
        );
        let check = &d.health_checks[&31000];
        assert_eq!((check.name.as_str(), check.local_endpoints), ("web", 1));

        let svc = service(
            json!({"clusterIP": "127.96.0.12", "internalTrafficPolicy": "Local",
            "ports": [{"name": "http", "port": 80, "nodePort": 30081}]}),
        );
        let s = slice(json!([ep("127.102.0.1", "node-2", true, true, false)]));
        let d = desired(&[&svc], &[&s], &scope());
        assert!(
            d.routes.is_empty(),
            "no local endpoint, and ClusterIP has no NodePort: {d:?}"
        );
    }

    #[test]
    fn external_ips_forward_when_loopback_and_are_refused_otherwise() {
        let svc = service(json!({"clusterIP": "127.96.0.15",
            "externalIPs": ["127.0.0.77", "192.0.2.7", "::1", "bogus"],
            "ports": [{"name": "http", "port": 80}]}));
        let s = slice(json!([
            ep("127.101.0.1", "node-1", true, true, false),
            ep("127.102.0.1", "node-2", true, true, false),
        ]));
        let d = desired(&[&svc], &[&s], &scope());
        assert_eq!(route_addrs(&d, "127.0.0.77:80").unwrap().len(), 2);
        assert!(route_addrs(&d, "192.0.2.7:80").is_none());
        let refused: Vec<String> = d
            .refused_external_ips
            .iter()
            .map(|(ip, port)| format!("{ip} {port}"))
            .collect();
        assert_eq!(refused, ["192.0.2.7 ns/web:http"]);

        // externalTrafficPolicy: Local keeps external traffic on this node.
        let local = service(json!({"type": "NodePort", "clusterIP": "127.96.0.16",
            "externalTrafficPolicy": "Local", "externalIPs": ["127.0.0.78"],
            "ports": [{"name": "http", "port": 80, "nodePort": 30090}]}));
        let d = desired(&[&local], &[&s], &scope());
        assert_eq!(
            route_addrs(&d, "127.0.0.78:80"),
            Some(vec!["127.101.0.1:8080".into()])
        );
    }

    #[test]
    fn ports_match_by_name_and_protocol_and_headless_or_external_names_are_skipped() {
        let svc = service(json!({"clusterIP": "127.96.0.13", "ports": [
            {"name": "http", "port": 80},
            {"name": "dns", "port": 53, "protocol": "UDP"}]}));
        let mut s = slice(json!([ep("127.101.0.1", "node-1", true, true, false)]));
        s.ports = serde_json::from_value(json!([
            {"name": "http", "port": 8080, "protocol": "TCP"},
            {"name": "dns", "port": 5353, "protocol": "UDP"}]))
        .unwrap();
        let d = desired(&[&svc], &[&s], &scope());
        let udp = Frontend {
            protocol: Protocol::Udp,
            addr: "127.96.0.13:53".parse().unwrap(),
        };
        assert_eq!(d.routes[&udp].endpoints.addrs[0].port(), 5353);
        assert_eq!(d.routes[&udp].service_port, "ns/web:dns");
        assert_eq!(
            route_addrs(&d, "127.96.0.13:80"),
            Some(vec!["127.101.0.1:8080".into()])
        );
        let headless =
            service(json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}));
        let external = service(json!({"type": "ExternalName", "externalName": "example.com"}));
        assert!(desired(&[&headless, &external], &[&s], &scope())
            .routes
            .is_empty());
    }

    #[test]
    fn client_ip_affinity_takes_the_service_timeout() {
        let svc = service(
            json!({"clusterIP": "127.96.0.14", "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
            "ports": [{"name": "http", "port": 80}]}),
        );
        let s = slice(json!([ep("127.101.0.1", "node-1", true, true, false)]));
        let d = desired(&[&svc], &[&s], &scope());
        let route = d.routes.values().next().unwrap();
        assert_eq!(route.endpoints.affinity, Some(Duration::from_secs(60)));
    }
}
