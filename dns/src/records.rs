//! The answers: what a parsed name holds in the cluster as last seen, in
//! CoreDNS's kubernetes plugin's terms.
//!
//! - A ClusterIP Service's name has one A, its `clusterIP`; a headless
//!   Service's one A per ready endpoint address (EndpointSlices, nil
//!   `ready` counting as ready), none when it has no ready endpoint; an
//!   ExternalName Service's a CNAME to its `externalName` (not followed:
//!   there is no recursion).
//! - SRV, of `_<port>._<proto>.<svc>…` or of the Service's name (every
//!   port): one per port of the ClusterIP (target: the Service's name), or
//!   per ready endpoint and port of a headless Service (target: the
//!   endpoint's hostname or dashed address under the Service), weights
//!   shared out to 100, with the targets' A in the additional section.
//! - `<endpoint>.<svc>.<ns>.svc…`: the A of the endpoints whose hostname
//!   (a pod's `hostname` when its `subdomain` is the Service) or dashed
//!   address it is.
//! - `<a-b-c-d>.<ns>.pod…`: the A when a pod of that namespace has that
//!   IP (CoreDNS's `pods verified`).
//! - `<d>.<c>.<b>.<a>.in-addr.arpa`: PTR to the Service whose ClusterIP
//!   that is, else to each ready endpoint with that address (its name
//!   under its Service, as above), as CoreDNS's reverse lookups; an
//!   address of neither is REFUSED, as a name outside the zone.
//!
//! A name that exists without a record of the asked type is NOERROR with
//! no answer (NODATA); one that does not exist — a missing Service or
//! pod, a namespace that does not exist, a port the Service lacks — is
//! NXDOMAIN. Both carry the zone's SOA for negative caching.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::names::{dashed, Request};

/// The label linking an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The cluster state the answers come from (the informers' caches, or a
/// fixed set in tests).
pub trait Lookup {
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>>;
    /// The EndpointSlices of one Service.
    fn slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>>;
    /// The pods of one namespace.
    fn pods(&self, namespace: &str) -> Vec<Arc<Pod>>;
    fn namespace_exists(&self, namespace: &str) -> bool;
    /// Every Service (reverse lookups).
    fn all_services(&self) -> Vec<Arc<Service>>;
    /// Every EndpointSlice (reverse lookups).
    fn all_slices(&self) -> Vec<Arc<EndpointSlice>>;
}

/// An answer: its code and sections.
#[derive(Debug, Default)]
pub struct Answer {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The zone's SOA, on NXDOMAIN and NODATA.
    pub authority: Option<Record>,
}

/// The zone: its domain and the TTL of every record (CoreDNS's default 5 s).
#[derive(Debug, Clone)]
pub struct Zone {
    pub domain: Name,
    pub ttl: u32,
}

/// One ready endpoint address: its label under the Service and its address.
struct Endpoint {
    label: String,
    ip: Ipv4Addr,
    /// The slice's ports: (name, protocol, port).
    ports: Vec<(String, String, u16)>,
}

impl Zone {
    /// The answer to `qtype` for the name `name` parsed as `request`;
    /// `None` for a name outside the zone (REFUSED by the caller).
    pub fn answer(
        &self,
        cluster: &dyn Lookup,
        name: &Name,
        request: &Request,
        qtype: RecordType,
    ) -> Option<Answer> {
        let found = match request {
            Request::Outside => return None,
            Request::Reverse { ip } => {
                let targets = self.reverse(cluster, *ip);
                if targets.is_empty() {
                    return None;
                }
                Some(self.if_type(qtype, RecordType::PTR, || {
                    targets
                        .into_iter()
                        .map(|t| Record::from_rdata(name.clone(), self.ttl, RData::PTR(PTR(t))))
                        .collect()
                }))
            }
            Request::Apex => {
                if qtype == RecordType::SOA {
                    let mut answer = Answer::default();
                    answer.answers.push(self.soa());
                    return Some(answer);
                }
                Some(Vec::new())
            }
            Request::TypeOnly => Some(Vec::new()),
            Request::Namespace { namespace } => cluster.namespace_exists(namespace).then(Vec::new),
            Request::Unknown => None,
            Request::Service { namespace, service } => {
                self.service(cluster, name, namespace, service, qtype)
            }
            Request::Endpoint {
                namespace,
                service,
                endpoint,
            } => {
                let matching: Vec<Endpoint> = cluster
                    .service(namespace, service)
                    .map(|_| ready_endpoints(cluster, namespace, service))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|e| e.label == *endpoint)
                    .collect();
                (!matching.is_empty()).then(|| {
                    self.if_type(qtype, RecordType::A, || {
                        dedup(matching.iter().map(|e| e.ip))
                            .map(|ip| self.a(name, ip))
                            .collect()
                    })
                })
            }
            Request::Port {
                namespace,
                service,
                port,
                protocol,
            } => self.port(cluster, namespace, service, Some((port, protocol)), qtype),
            Request::Pod { namespace, ip } => {
                let exists = cluster.pods(namespace).iter().any(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.pod_ip.as_deref())
                        .and_then(|i| i.parse::<Ipv4Addr>().ok())
                        == Some(*ip)
                });
                exists.then(|| self.if_type(qtype, RecordType::A, || vec![self.a(name, *ip)]))
            }
        };
        let mut answer = Answer::default();
        match found {
            None => {
                answer.code = ResponseCode::NXDomain;
                answer.authority = Some(self.soa());
            }
            Some(records) => {
                if records.is_empty() {
                    answer.authority = Some(self.soa());
                }
                let (answers, additionals): (Vec<Record>, Vec<Record>) = records
                    .into_iter()
                    .partition(|r| r.record_type() == qtype || is_answer_type(r, qtype));
                answer.answers = answers;
                answer.additionals = additionals;
            }
        }
        Some(answer)
    }

    /// The records of a Service's own name, or `None` when it does not exist.
    fn service(
        &self,
        cluster: &dyn Lookup,
        name: &Name,
        namespace: &str,
        service: &str,
        qtype: RecordType,
    ) -> Option<Vec<Record>> {
        let svc = cluster.service(namespace, service)?;
        let spec = svc.spec.as_ref()?;
        if spec.type_.as_deref() == Some("ExternalName") {
            let target = spec.external_name.as_deref()?;
            let target = Name::from_ascii(format!("{}.", target.trim_end_matches('.'))).ok()?;
            return Some(match qtype {
                RecordType::A | RecordType::AAAA | RecordType::CNAME | RecordType::ANY => {
                    vec![Record::from_rdata(
                        name.clone(),
                        self.ttl,
                        RData::CNAME(CNAME(target)),
                    )]
                }
                _ => Vec::new(),
            });
        }
        if qtype == RecordType::SRV {
            return self.port(cluster, namespace, service, None, qtype);
        }
        Some(self.if_type(qtype, RecordType::A, || {
            if is_headless(&svc) {
                let ready = ready_endpoints(cluster, namespace, service);
                dedup(ready.iter().map(|e| e.ip))
                    .map(|ip| self.a(name, ip))
                    .collect()
            } else {
                cluster_ip(&svc)
                    .map(|ip| self.a(name, ip))
                    .into_iter()
                    .collect()
            }
        }))
    }

    /// SRV records of one named port (`port` given) or of every port; `None`
    /// when the Service does not exist or has no such port.
    fn port(
        &self,
        cluster: &dyn Lookup,
        namespace: &str,
        service: &str,
        port: Option<(&String, &String)>,
        qtype: RecordType,
    ) -> Option<Vec<Record>> {
        let svc = cluster.service(namespace, service)?;
        let spec = svc.spec.as_ref()?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return None;
        }
        let wanted = |name: &str, protocol: &str| match port {
            None => true,
            Some((p, proto)) => {
                p.eq_ignore_ascii_case(name) && proto.eq_ignore_ascii_case(protocol)
            }
        };
        let svc_name = self.service_name(namespace, service)?;
        // (target, its address, port)
        let mut targets: Vec<(Name, Ipv4Addr, u16)> = Vec::new();
        if is_headless(&svc) {
            for e in ready_endpoints(cluster, namespace, service) {
                for (name, protocol, number) in &e.ports {
                    if wanted(name, protocol) {
                        let target = Name::from_ascii(&e.label)
                            .ok()?
                            .append_domain(&svc_name)
                            .ok()?;
                        targets.push((target, e.ip, *number));
                    }
                }
            }
        } else {
            let ip = cluster_ip(&svc)?;
            for p in spec.ports.iter().flatten() {
                let protocol = p.protocol.as_deref().unwrap_or("TCP");
                let number = u16::try_from(p.port).ok()?;
                if wanted(p.name.as_deref().unwrap_or_default(), protocol) {
                    targets.push((svc_name.clone(), ip, number));
                }
            }
        }
        if targets.is_empty() && port.is_some() {
            return None;
        }
        let query = match port {
            Some((p, proto)) => Name::from_ascii(format!("_{p}._{proto}"))
                .ok()?
                .append_domain(&svc_name)
                .ok()?,
            None => svc_name.clone(),
        };
        if qtype != RecordType::SRV && qtype != RecordType::ANY {
            return Some(Vec::new());
        }
        let weight = (100 / targets.len().max(1)) as u16;
        let mut records = Vec::new();
        let mut glued = BTreeSet::new();
        for (target, _, number) in &targets {
            records.push(Record::from_rdata(
                query.clone(),
                self.ttl,
                RData::SRV(SRV::new(0, weight, *number, target.clone())),
            ));
        }
        for (target, ip, _) in targets {
            if glued.insert((target.to_ascii(), ip)) {
                records.push(self.a(&target, ip));
            }
        }
        Some(records)
    }

    /// The names `ip` is the address of: the Services whose ClusterIP it
    /// is, else the ready endpoints of existing Services that have it.
    fn reverse(&self, cluster: &dyn Lookup, ip: Ipv4Addr) -> BTreeSet<Name> {
        let services: BTreeSet<Name> = cluster
            .all_services()
            .iter()
            .filter(|s| cluster_ip(s) == Some(ip))
            .filter_map(|s| {
                self.service_name(
                    s.metadata.namespace.as_deref()?,
                    s.metadata.name.as_deref()?,
                )
            })
            .collect();
        if !services.is_empty() {
            return services;
        }
        let mut endpoints = BTreeSet::new();
        for slice in cluster.all_slices() {
            let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
            let Some(service) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            if cluster.service(namespace, service).is_none() {
                continue;
            }
            let Some(svc_name) = self.service_name(namespace, service) else {
                continue;
            };
            for e in ready_endpoints(cluster, namespace, service) {
                if e.ip == ip {
                    if let Some(name) = Name::from_ascii(&e.label)
                        .ok()
                        .and_then(|l| l.append_domain(&svc_name).ok())
                    {
                        endpoints.insert(name);
                    }
                }
            }
        }
        endpoints
    }

    fn service_name(&self, namespace: &str, service: &str) -> Option<Name> {
        Name::from_ascii(format!("{service}.{namespace}.svc"))
            .ok()?
            .append_domain(&self.domain)
            .ok()
    }

    /// `records()` when `qtype` is `want` (or ANY), else nothing (NODATA).
    fn if_type(
        &self,
        qtype: RecordType,
        want: RecordType,
        records: impl FnOnce() -> Vec<Record>,
    ) -> Vec<Record> {
        if qtype == want || qtype == RecordType::ANY {
            records()
        } else {
            Vec::new()
        }
    }

    fn a(&self, name: &Name, ip: Ipv4Addr) -> Record {
        Record::from_rdata(name.clone(), self.ttl, RData::A(A(ip)))
    }

    /// The zone's SOA, as CoreDNS's: `ns.dns.<zone>`, `hostmaster.<zone>`.
    pub fn soa(&self) -> Record {
        let under = |label: &str| {
            Name::from_ascii(label)
                .and_then(|n| n.append_domain(&self.domain))
                .unwrap_or_else(|_| self.domain.clone())
        };
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Record::from_rdata(
            self.domain.clone(),
            self.ttl,
            RData::SOA(SOA::new(
                under("ns.dns"),
                under("hostmaster"),
                serial,
                7200,
                1800,
                86400,
                self.ttl,
            )),
        )
    }
}

/// Whether `r` answers `qtype` (ANY takes everything but glue; a CNAME
/// answers an address query).
fn is_answer_type(r: &Record, qtype: RecordType) -> bool {
    match qtype {
        RecordType::ANY => true,
        RecordType::A | RecordType::AAAA => r.record_type() == RecordType::CNAME,
        _ => false,
    }
}

fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn cluster_ip(svc: &Service) -> Option<Ipv4Addr> {
    svc.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok()
}

fn dedup(ips: impl Iterator<Item = Ipv4Addr>) -> impl Iterator<Item = Ipv4Addr> {
    ips.collect::<BTreeSet<_>>().into_iter()
}

/// The ready IPv4 endpoints of a Service's slices.
fn ready_endpoints(cluster: &dyn Lookup, namespace: &str, service: &str) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for slice in cluster.slices(namespace, service) {
        if slice.address_type != "IPv4" {
            continue;
        }
        let ports: Vec<(String, String, u16)> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.name.clone().unwrap_or_default(),
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    u16::try_from(p.port?).ok()?,
                ))
            })
            .collect();
        for e in &slice.endpoints {
            let ready = e.conditions.as_ref().and_then(|c| c.ready) != Some(false);
            if !ready {
                continue;
            }
            for ip in e
                .addresses
                .iter()
                .filter_map(|a| a.parse::<Ipv4Addr>().ok())
            {
                out.push(Endpoint {
                    label: e
                        .hostname
                        .clone()
                        .map(|h| h.to_ascii_lowercase())
                        .unwrap_or_else(|| dashed(ip)),
                    ip,
                    ports: ports.clone(),
                });
            }
        }
    }
    out
}

/// Whether `slice` belongs to `service`.
pub fn slice_of(slice: &EndpointSlice, service: &str) -> bool {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .is_some_and(|s| s == service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::parse;
    use k8s_openapi::api::core::v1::{PodStatus, ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{
        Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[derive(Default)]
    struct Fixed {
        services: Vec<Arc<Service>>,
        slices: Vec<Arc<EndpointSlice>>,
        pods: Vec<Arc<Pod>>,
    }

    impl Lookup for Fixed {
        fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
            self.services
                .iter()
                .find(|s| {
                    s.metadata.namespace.as_deref() == Some(namespace)
                        && s.metadata.name.as_deref() == Some(name)
                })
                .cloned()
        }
        fn slices(&self, namespace: &str, service: &str) -> Vec<Arc<EndpointSlice>> {
            self.slices
                .iter()
                .filter(|s| {
                    s.metadata.namespace.as_deref() == Some(namespace) && slice_of(s, service)
                })
                .cloned()
                .collect()
        }
        fn pods(&self, namespace: &str) -> Vec<Arc<Pod>> {
            self.pods
                .iter()
                .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
                .cloned()
                .collect()
        }
        fn namespace_exists(&self, namespace: &str) -> bool {
            namespace == "shop"
        }
        fn all_services(&self) -> Vec<Arc<Service>> {
            self.services.clone()
        }
        fn all_slices(&self) -> Vec<Arc<EndpointSlice>> {
            self.slices.clone()
        }
    }

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            ..ObjectMeta::default()
        }
    }

    fn service(name: &str, cluster_ip: &str, ports: &[(&str, i32)]) -> Arc<Service> {
        Arc::new(Service {
            metadata: meta(name),
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p)| ServicePort {
                            name: Some(n.to_string()),
                            port: *p,
                            protocol: Some("TCP".into()),
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            status: None,
        })
    }

    fn slice(service: &str, endpoints: &[(&str, Option<&str>, bool)]) -> Arc<EndpointSlice> {
        let mut metadata = meta(&format!("{service}-abc"));
        metadata.labels = Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into());
        Arc::new(EndpointSlice {
            metadata,
            address_type: "IPv4".into(),
            endpoints: endpoints
                .iter()
                .map(|(ip, hostname, ready)| SliceEndpoint {
                    addresses: vec![ip.to_string()],
                    hostname: hostname.map(str::to_string),
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        ..EndpointConditions::default()
                    }),
                    ..SliceEndpoint::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..EndpointPort::default()
            }]),
        })
    }

    fn cluster() -> Fixed {
        let mut pod = Pod {
            metadata: meta("p"),
            ..Pod::default()
        };
        pod.status = Some(PodStatus {
            pod_ip: Some("127.128.0.5".into()),
            ..PodStatus::default()
        });
        Fixed {
            services: vec![
                service("web", "127.96.0.9", &[("http", 80), ("", 81)]),
                service("db", "None", &[("http", 8080)]),
                service("empty", "None", &[("http", 8080)]),
            ],
            slices: vec![slice(
                "db",
                &[
                    ("127.128.0.5", Some("db-0"), true),
                    ("127.128.1.6", None, true),
                    ("127.128.1.7", None, false),
                ],
            )],
            pods: vec![Arc::new(pod)],
        }
    }

    fn ask(name: &str, qtype: RecordType) -> Answer {
        let zone = Zone {
            domain: Name::from_ascii("cluster.local.").unwrap(),
            ttl: 5,
        };
        let name = Name::from_ascii(name).unwrap();
        let request = parse(&name, &zone.domain);
        zone.answer(&cluster(), &name, &request, qtype)
            .expect("inside the zone")
    }

    fn data(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn services_resolve_as_coredns_answers_them() {
        let a = ask("web.shop.svc.cluster.local.", RecordType::A);
        assert_eq!(a.code, ResponseCode::NoError);
        assert_eq!(data(&a.answers), ["127.96.0.9"]);
        let headless = ask("db.shop.svc.cluster.local.", RecordType::A);
        assert_eq!(
            data(&headless.answers),
            ["127.128.0.5", "127.128.1.6"],
            "ready only"
        );
        let none_ready = ask("empty.shop.svc.cluster.local.", RecordType::A);
        assert_eq!(
            (none_ready.code, none_ready.answers.len()),
            (ResponseCode::NoError, 0)
        );
        assert!(none_ready.authority.is_some(), "NODATA carries the SOA");

        let srv = ask("_http._tcp.web.shop.svc.cluster.local.", RecordType::SRV);
        assert_eq!(data(&srv.answers), ["0 100 80 web.shop.svc.cluster.local."]);
        assert_eq!(data(&srv.additionals), ["127.96.0.9"]);
        let srv = ask("_http._tcp.db.shop.svc.cluster.local.", RecordType::SRV);
        assert_eq!(
            data(&srv.answers),
            [
                "0 50 8080 db-0.db.shop.svc.cluster.local.",
                "0 50 8080 127-128-1-6.db.shop.svc.cluster.local."
            ]
        );
        let all = ask("web.shop.svc.cluster.local.", RecordType::SRV);
        assert_eq!(all.answers.len(), 2, "every port");

        let ep = ask("db-0.db.shop.svc.cluster.local.", RecordType::A);
        assert_eq!(data(&ep.answers), ["127.128.0.5"]);
        let ep = ask("127-128-1-6.db.shop.svc.cluster.local.", RecordType::A);
        assert_eq!(data(&ep.answers), ["127.128.1.6"]);
        let pod = ask("127-128-0-5.shop.pod.cluster.local.", RecordType::A);
        assert_eq!(data(&pod.answers), ["127.128.0.5"]);
    }

    #[test]
    fn reverse_lookups_name_services_then_endpoints() {
        let ptr = ask("9.0.96.127.in-addr.arpa.", RecordType::PTR);
        assert_eq!(data(&ptr.answers), ["web.shop.svc.cluster.local."]);
        let ptr = ask("5.0.128.127.in-addr.arpa.", RecordType::PTR);
        assert_eq!(data(&ptr.answers), ["db-0.db.shop.svc.cluster.local."]);
        let ptr = ask("6.1.128.127.in-addr.arpa.", RecordType::PTR);
        assert_eq!(
            data(&ptr.answers),
            ["127-128-1-6.db.shop.svc.cluster.local."]
        );
        let nodata = ask("9.0.96.127.in-addr.arpa.", RecordType::A);
        assert_eq!(
            (nodata.code, nodata.answers.len()),
            (ResponseCode::NoError, 0)
        );
        // Not ready, or nobody's: not ours to answer.
        let zone = Zone {
            domain: Name::from_ascii("cluster.local.").unwrap(),
            ttl: 5,
        };
        for unknown in ["7.1.128.127.in-addr.arpa.", "1.1.1.1.in-addr.arpa."] {
            let name = Name::from_ascii(unknown).unwrap();
            let request = parse(&name, &zone.domain);
            assert!(
                zone.answer(&cluster(), &name, &request, RecordType::PTR)
                    .is_none(),
                "{unknown}"
            );
        }
    }

    #[test]
    fn nxdomain_and_nodata_as_coredns() {
        for missing in [
            "nope.shop.svc.cluster.local.",
            "web.nowhere.svc.cluster.local.",
            "nowhere.svc.cluster.local.",
            "_grpc._tcp.web.shop.svc.cluster.local.",
            "_http._udp.web.shop.svc.cluster.local.",
            "db-9.db.shop.svc.cluster.local.",
            "127-128-1-7.db.shop.svc.cluster.local.",
            "127-128-9-9.shop.pod.cluster.local.",
            "foo.cluster.local.",
        ] {
            let a = ask(missing, RecordType::A);
            assert_eq!(a.code, ResponseCode::NXDomain, "{missing}");
            assert!(a.answers.is_empty() && a.authority.is_some(), "{missing}");
        }
        for nodata in [
            ("web.shop.svc.cluster.local.", RecordType::AAAA),
            ("web.shop.svc.cluster.local.", RecordType::TXT),
            ("shop.svc.cluster.local.", RecordType::A),
            ("svc.cluster.local.", RecordType::A),
            ("cluster.local.", RecordType::A),
        ] {
            let a = ask(nodata.0, nodata.1);
            assert_eq!(a.code, ResponseCode::NoError, "{nodata:?}");
            assert!(a.answers.is_empty() && a.authority.is_some(), "{nodata:?}");
        }
        let soa = ask("cluster.local.", RecordType::SOA);
        assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
    }
}
