//! What a query name asks for, as CoreDNS's kubernetes plugin reads it
//! (`parse.go`): the labels left of the cluster domain, right to left, are
//! the type (`svc` or `pod`), the namespace, the Service (or the pod's
//! dashed address), then an endpoint's hostname, or `_port._proto` before
//! the Service for SRV.
//!
//! ```text
//! cluster.local                              Apex
//! svc.cluster.local                          TypeOnly
//! shop.svc.cluster.local                     Namespace { shop }
//! web.shop.svc.cluster.local                 Service { shop, web }
//! web-0.web.shop.svc.cluster.local           Endpoint { shop, web, web-0 }
//! _http._tcp.web.shop.svc.cluster.local      Port { shop, web, http, tcp }
//! 127-128-0-5.shop.pod.cluster.local         Pod { shop, 127.128.0.5 }
//! 9.0.96.127.in-addr.arpa                    Reverse { 127.96.0.9 }
//! example.com                                Outside (REFUSED: no recursion)
//! ```

use std::net::Ipv4Addr;

use hickory_proto::rr::Name;

/// A name inside or outside the cluster domain, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The cluster domain itself.
    Apex,
    /// `svc.<domain>` or `pod.<domain>`.
    TypeOnly,
    /// `<ns>.svc.<domain>` or `<ns>.pod.<domain>`.
    Namespace { namespace: String },
    /// `<svc>.<ns>.svc.<domain>`.
    Service { namespace: String, service: String },
    /// `<endpoint>.<svc>.<ns>.svc.<domain>`: an endpoint's hostname (a
    /// pod's `hostname` with `subdomain` = the Service) or dashed address.
    Endpoint {
        namespace: String,
        service: String,
        endpoint: String,
    },
    /// `_<port>._<proto>.<svc>.<ns>.svc.<domain>` (SRV of a named port).
    Port {
        namespace: String,
        service: String,
        port: String,
        protocol: String,
    },
    /// `<a-b-c-d>.<ns>.pod.<domain>`.
    Pod { namespace: String, ip: Ipv4Addr },
    /// `<d>.<c>.<b>.<a>.in-addr.arpa` (PTR of a Service or endpoint IP).
    Reverse { ip: Ipv4Addr },
    /// Inside the domain but of no form above: it does not exist.
    Unknown,
    /// Outside the cluster domain.
    Outside,
}

/// The lower-cased labels of `name` (no root), or `None` for one that is
/// not ASCII.
fn labels(name: &Name) -> Option<Vec<String>> {
    name.iter()
        .map(|l| std::str::from_utf8(l).ok().map(str::to_ascii_lowercase))
        .collect()
}

/// Parses `name` against the cluster `domain` (e.g. `cluster.local`).
pub fn parse(name: &Name, domain: &Name) -> Request {
    let (Some(name), Some(domain)) = (labels(name), labels(domain)) else {
        return Request::Outside;
    };
    if let Some(ip) = reverse_ip(&name) {
        return Request::Reverse { ip };
    }
    if name.len() < domain.len() || name[name.len() - domain.len()..] != domain[..] {
        return Request::Outside;
    }
    // Right to left: type, namespace, service, endpoint or proto, port.
    let mut rest: Vec<String> = name[..name.len() - domain.len()].to_vec();
    rest.reverse();
    let Some(kind) = rest.first() else {
        return Request::Apex;
    };
    let (is_svc, is_pod) = (kind == "svc", kind == "pod");
    if !is_svc && !is_pod {
        return Request::Unknown;
    }
    let namespace = match rest.get(1) {
        None => return Request::TypeOnly,
        Some(ns) => ns.clone(),
    };
    if is_pod {
        return match rest.len() {
            2 => Request::Namespace { namespace },
            3 => match dashed_ip(&rest[2]) {
                Some(ip) => Request::Pod { namespace, ip },
                None => Request::Unknown,
            },
            _ => Request::Unknown,
        };
    }
    let service = match rest.get(2) {
        None => return Request::Namespace { namespace },
        Some(s) => s.clone(),
    };
    match &rest[3..] {
        [] => Request::Service { namespace, service },
        [endpoint] if !endpoint.starts_with('_') => Request::Endpoint {
            namespace,
            service,
            endpoint: endpoint.clone(),
        },
        [protocol, port] => match (port.strip_prefix('_'), protocol.strip_prefix('_')) {
            (Some(port), Some(protocol)) if !port.is_empty() && !protocol.is_empty() => {
                Request::Port {
                    namespace,
                    service,
                    port: port.to_string(),
                    protocol: protocol.to_string(),
                }
            }
            _ => Request::Unknown,
        },
        _ => Request::Unknown,
    }
}

/// `5.0.128.127.in-addr.arpa` → 127.128.0.5 (four decimal labels).
fn reverse_ip(labels: &[String]) -> Option<Ipv4Addr> {
    let [d, c, b, a, in_addr, arpa] = labels else {
        return None;
    };
    if in_addr != "in-addr" || arpa != "arpa" {
        return None;
    }
    let octet = |l: &String| -> Option<u8> {
        let canonical = !l.is_empty() && (l == "0" || !l.starts_with('0'));
        canonical.then(|| l.parse().ok()).flatten()
    };
    Some(Ipv4Addr::new(octet(a)?, octet(b)?, octet(c)?, octet(d)?))
}

/// `127-128-0-5` → 127.128.0.5.
pub fn dashed_ip(label: &str) -> Option<Ipv4Addr> {
    label.replace('-', ".").parse().ok()
}

/// 127.128.0.5 → `127-128-0-5`, the label of an endpoint without hostname.
pub fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> Request {
        parse(
            &Name::from_ascii(name).unwrap(),
            &Name::from_ascii("cluster.local.").unwrap(),
        )
    }

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn parses_the_kubernetes_schema() {
        assert_eq!(p("cluster.local."), Request::Apex);
        assert_eq!(p("svc.cluster.local."), Request::TypeOnly);
        assert_eq!(p("pod.cluster.local."), Request::TypeOnly);
        assert_eq!(
            p("Shop.SVC.cluster.LOCAL."),
            Request::Namespace {
                namespace: s("shop")
            }
        );
        assert_eq!(
            p("web.shop.svc.cluster.local."),
            Request::Service {
                namespace: s("shop"),
                service: s("web")
            }
        );
        assert_eq!(
            p("web-0.web.shop.svc.cluster.local"),
            Request::Endpoint {
                namespace: s("shop"),
                service: s("web"),
                endpoint: s("web-0")
            }
        );
        assert_eq!(
            p("_http._tcp.web.shop.svc.cluster.local."),
            Request::Port {
                namespace: s("shop"),
                service: s("web"),
                port: s("http"),
                protocol: s("tcp")
            }
        );
        assert_eq!(
            p("127-128-0-5.shop.pod.cluster.local."),
            Request::Pod {
                namespace: s("shop"),
                ip: "127.128.0.5".parse().unwrap()
            }
        );
    }

    #[test]
    fn the_rest_is_unknown_or_outside() {
        for unknown in [
            "x.cluster.local.",
            "a.b.c.web.shop.svc.cluster.local.",
            "_http.web.shop.svc.cluster.local.",
            "_.tcp.web.shop.svc.cluster.local.",
            "http.tcp.web.shop.svc.cluster.local.",
            "1-2-3.shop.pod.cluster.local.",
            "web.x.shop.pod.cluster.local.",
        ] {
            assert_eq!(p(unknown), Request::Unknown, "{unknown}");
        }
        assert_eq!(
            p("9.0.96.127.IN-ADDR.arpa."),
            Request::Reverse {
                ip: "127.96.0.9".parse().unwrap()
            }
        );
        for outside in [
            "example.com.",
            "local.",
            "cluster.local.example.",
            ".",
            "0.96.127.in-addr.arpa.",
            "09.0.96.127.in-addr.arpa.",
            "x.0.96.127.in-addr.arpa.",
            "256.0.96.127.in-addr.arpa.",
            "1.9.0.96.127.in-addr.arpa.",
        ] {
            assert_eq!(p(outside), Request::Outside, "{outside}");
        }
        assert_eq!(dashed("127.128.0.5".parse().unwrap()), "127-128-0-5");
    }
}
