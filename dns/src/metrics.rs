//! CoreDNS's series, as its `prometheus` plugin names them (the kube-dns
//! dashboards and alerts read these): requests by protocol, address family
//! and query type, responses by rcode, and how long answering took.
//!
//! Every label has a bounded set of values: query types outside the common
//! ones are `other`, as in CoreDNS, and the zone is `.` (the server block
//! of a default cluster's Corefile).

use std::net::SocketAddr;
use std::time::Duration;

use ballast_metrics::prometheus_client::metrics::counter::Counter;
use ballast_metrics::prometheus_client::metrics::family::Family;
use ballast_metrics::prometheus_client::registry::Registry;
use ballast_metrics::{AtomicHistogram, HistogramConstructor};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// CoreDNS's duration buckets: 0.25 ms doubling up to 8.192 s.
const DURATION_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024,
    2.048, 4.096, 8.192,
];

type Labels = Vec<(&'static str, String)>;

/// The server's series; clones share them.
#[derive(Clone)]
pub struct Metrics {
    server: String,
    requests: Family<Labels, Counter>,
    responses: Family<Labels, Counter>,
    durations: Family<Labels, AtomicHistogram, HistogramConstructor>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("server", &self.server)
            .finish()
    }
}

/// One answered query, as counted.
#[derive(Debug, Clone, Copy)]
pub struct Answered {
    /// `None` when the query could not be decoded.
    pub qtype: Option<RecordType>,
    pub rcode: ResponseCode,
    pub tcp: bool,
    pub peer: SocketAddr,
    pub took: Duration,
}

impl Metrics {
    /// The series of the server on `addr`, registered in `registry`.
    pub fn new(addr: SocketAddr, registry: &mut Registry) -> Metrics {
        let metrics = Metrics {
            server: format!("dns://{addr}"),
            requests: Family::default(),
            responses: Family::default(),
            durations: Family::new_with_constructor(HistogramConstructor(DURATION_BUCKETS)),
        };
        registry.register(
            "coredns_dns_requests",
            "Counter of DNS requests made per zone, protocol and family",
            metrics.requests.clone(),
        );
        registry.register(
            "coredns_dns_responses",
            "Counter of response status codes",
            metrics.responses.clone(),
        );
        registry.register(
            "coredns_dns_request_duration_seconds",
            "Histogram of the time (in seconds) each request took per zone",
            metrics.durations.clone(),
        );
        metrics
    }

    /// Counts one answered query.
    pub fn observe(&self, a: &Answered) {
        let base = || -> Labels {
            vec![
                ("server", self.server.clone()),
                ("zone", ".".into()),
                ("view", String::new()),
            ]
        };
        let qtype = type_label(a.qtype);
        let mut requests = base();
        requests.extend([
            ("proto", if a.tcp { "tcp" } else { "udp" }.into()),
            ("family", if a.peer.is_ipv6() { "2" } else { "1" }.into()),
            ("type", qtype.into()),
        ]);
        self.requests.get_or_create(&requests).inc();
        let mut responses = base();
        responses.extend([
            ("rcode", rcode_label(a.rcode).into()),
            ("plugin", String::new()),
        ]);
        self.responses.get_or_create(&responses).inc();
        let mut durations = base();
        durations.push(("type", qtype.into()));
        self.durations
            .get_or_create(&durations)
            .observe(a.took.as_secs_f64());
    }
}

/// CoreDNS's `type` label: the common query types by name, else `other`.
fn type_label(qtype: Option<RecordType>) -> &'static str {
    match qtype {
        Some(RecordType::A) => "A",
        Some(RecordType::AAAA) => "AAAA",
        Some(RecordType::CNAME) => "CNAME",
        Some(RecordType::MX) => "MX",
        Some(RecordType::NS) => "NS",
        Some(RecordType::PTR) => "PTR",
        Some(RecordType::SOA) => "SOA",
        Some(RecordType::SRV) => "SRV",
        Some(RecordType::TXT) => "TXT",
        Some(RecordType::ANY) => "ANY",
        Some(RecordType::AXFR) => "AXFR",
        Some(RecordType::IXFR) => "IXFR",
        _ => "other",
    }
}

/// The rcode's mnemonic, as CoreDNS writes it (`NOERROR`, `NXDOMAIN`).
fn rcode_label(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_carry_coredns_names_and_labels() {
        let mut registry = Registry::default();
        let addr: SocketAddr = "127.0.0.10:53".parse().unwrap();
        let m = Metrics::new(addr, &mut registry);
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        for (qtype, rcode) in [
            (Some(RecordType::A), ResponseCode::NoError),
            (Some(RecordType::A), ResponseCode::NXDomain),
            (Some(RecordType::HINFO), ResponseCode::Refused),
        ] {
            m.observe(&Answered {
                qtype,
                rcode,
                tcp: false,
                peer,
                took: Duration::from_micros(300),
            });
        }
        let text = ballast_metrics::encode(&registry);
        for line in [
            r#"coredns_dns_requests_total{server="dns://127.0.0.10:53",zone=".",view="",proto="udp",family="1",type="A"} 2"#,
            r#"coredns_dns_requests_total{server="dns://127.0.0.10:53",zone=".",view="",proto="udp",family="1",type="other"} 1"#,
            r#"coredns_dns_responses_total{server="dns://127.0.0.10:53",zone=".",view="",rcode="NXDOMAIN",plugin=""} 1"#,
            r#"coredns_dns_responses_total{server="dns://127.0.0.10:53",zone=".",view="",rcode="REFUSED",plugin=""} 1"#,
            r#"coredns_dns_request_duration_seconds_bucket{server="dns://127.0.0.10:53",zone=".",view="",type="A",le="0.0005"} 2"#,
            r#"coredns_dns_request_duration_seconds_count{server="dns://127.0.0.10:53",zone=".",view="",type="A"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
