//! Cluster DNS as `ballast up` runs it (process runtime, two nodes): the
//! `ballast dns` it starts answers, over UDP and TCP, the names CoreDNS's
//! kubernetes plugin answers — the `kubernetes` Service, a ClusterIP
//! Service, a headless Service's ready pod (A, SRV of its named port, its
//! hostname), a pod's dashed address, PTR of their addresses — NXDOMAIN
//! with the zone's SOA for what does not exist (also a Service once
//! deleted), and names outside the cluster domain forwarded. The Nodes' pod CIDRs come from the controller
//! manager's node IPAM: distinct, and holding their pods' IPs.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ballast_dns::client::query;
use ballast_dns::{Message, RecordType, ResponseCode};
use ballast_tests::up::Up;
use serde_json::json;

const NS: &str = "dnstest";
const WAIT: Duration = Duration::from_secs(60);

/// Asks the cluster DNS one question, over TCP when `tcp`.
fn ask(server: SocketAddr, name: &str, qtype: RecordType, tcp: bool) -> Message {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime
        .block_on(query(server, name, qtype, tcp))
        .unwrap_or_else(|e| panic!("{qtype} {name} (tcp: {tcp}): {e}"))
}

/// The answer section's data, as text (`127.96.0.1`, `0 100 80 web.…`).
fn answers(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

/// An `a.b.c.d/n` network's first and last address.
fn bounds(cidr: &str) -> (u32, u32) {
    let (ip, prefix) = cidr.split_once('/').expect("a CIDR");
    let ip = u32::from(ip.parse::<Ipv4Addr>().expect("an IPv4 address"));
    let prefix: u32 = prefix.parse().expect("a prefix length");
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    (ip & mask, ip | !mask)
}

fn inside(ip: &str, cidr: &str) -> bool {
    let ip = u32::from(ip.parse::<Ipv4Addr>().expect("an IPv4 address"));
    let (first, last) = bounds(cidr);
    (first..=last).contains(&ip)
}

#[test]
fn cluster_dns_answers_services_pods_and_forwards_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), &["--nodes", "2"]);
    let dns = up.dns.expect("ballast up printed where the cluster DNS is");
    assert_eq!(dns.ip().to_string(), "127.0.0.10");

    // Node IPAM: each Node got a range of its own out of 127.128.0.0/9.
    let nodes = up.json(&["get", "nodes"]);
    let cidrs: Vec<(String, String)> = nodes["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| {
            let name = n["metadata"]["name"].as_str().unwrap().to_string();
            let cidr = n["spec"]["podCIDR"]
                .as_str()
                .unwrap_or_else(|| panic!("node {name} has no podCIDR: {n}"));
            assert_eq!(n["spec"]["podCIDRs"], json!([cidr]), "{n}");
            (name, cidr.to_string())
        })
        .collect();
    assert_eq!(cidrs.len(), 2, "{nodes}");
    assert_ne!(cidrs[0].1, cidrs[1].1, "two nodes share a pod CIDR");
    for (name, cidr) in &cidrs {
        let (first, last) = bounds(cidr);
        assert!(
            inside(&Ipv4Addr::from(first).to_string(), "127.128.0.0/9")
                && inside(&Ipv4Addr::from(last).to_string(), "127.128.0.0/9"),
            "node {name}'s {cidr} is outside the cluster CIDR"
        );
    }

    // The kubernetes Service, over UDP and TCP, authoritative.
    let kubernetes = up.json(&["get", "service", "kubernetes", "-n", "default"]);
    let kubernetes_ip = kubernetes["spec"]["clusterIP"].as_str().unwrap();
    for tcp in [false, true] {
        let m = ask(
            dns,
            "kubernetes.default.svc.cluster.local.",
            RecordType::A,
            tcp,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative, "AA");
        assert!(!m.metadata.recursion_available, "no recursion");
        assert_eq!(answers(&m), [kubernetes_ip], "tcp: {tcp}");
    }

    up.ok(&["create", "namespace", NS]);
    // A ClusterIP Service resolves to its clusterIP; its named port to SRV.
    up.create(&json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }));
    let web = up.json(&["get", "service", "web", "-n", NS]);
    let web_ip = web["spec"]["clusterIP"].as_str().expect("a clusterIP");
    let web_name = format!("web.{NS}.svc.cluster.local.");
    up.eventually("web resolves to its clusterIP", WAIT, || {
        let m = ask(dns, &web_name, RecordType::A, false);
        (answers(&m) == [web_ip]).then_some(())
    });
    let srv = ask(
        dns,
        &format!("_http._tcp.web.{NS}.svc.cluster.local."),
        RecordType::SRV,
        true,
    );
    assert_eq!(answers(&srv), [format!("0 100 80 {web_name}")]);
    let glue: Vec<String> = srv.additionals.iter().map(|r| r.data.to_string()).collect();
    assert!(glue.contains(&web_ip.to_string()), "{glue:?}");

    // A headless Service with one ready pod (hostname db-0, subdomain db).
    up.create(&json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "db", "namespace": NS},
        "spec": {"clusterIP": "None", "selector": {"app": "db"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }));
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "db-0", "namespace": NS, "labels": {"app": "db"}},
        "spec": {"hostname": "db-0", "subdomain": "db",
                 "containers": [{"name": "c", "image": "pause"}]}
    });
    // Until the namespace's default ServiceAccount exists, admission
    // refuses the pod.
    up.eventually("db-0 created", WAIT, || {
        let out = up.kubectl_stdin(&["create", "-f", "-"], &pod.to_string());
        out.status.success().then_some(())
    });
    let pod = up.eventually("db-0 Ready with an IP", Duration::from_secs(120), || {
        let pod = up.json(&["get", "pod", "db-0", "-n", NS]);
        let ready = pod["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        (ready && pod["status"]["podIP"].is_string()).then_some(pod)
    });
    let pod_ip = pod["status"]["podIP"]
        .as_str()
        .expect("a pod IP")
        .to_string();
    let node = pod["spec"]["nodeName"].as_str().expect("scheduled");
    let (_, node_cidr) = cidrs
        .iter()
        .find(|(n, _)| n == node)
        .expect("the pod's node");
    assert!(
        inside(&pod_ip, node_cidr),
        "pod IP {pod_ip} outside its node's {node_cidr}"
    );
    let db_name = format!("db.{NS}.svc.cluster.local.");
    for tcp in [false, true] {
        up.eventually("the headless Service resolves to its pod", WAIT, || {
            let m = ask(dns, &db_name, RecordType::A, tcp);
            (answers(&m) == [pod_ip.as_str()]).then_some(())
        });
    }
    let srv = ask(
        dns,
        &format!("_http._tcp.db.{NS}.svc.cluster.local."),
        RecordType::SRV,
        false,
    );
    assert_eq!(
        answers(&srv),
        [format!("0 100 8080 db-0.db.{NS}.svc.cluster.local.")]
    );
    let glue: Vec<String> = srv.additionals.iter().map(|r| r.data.to_string()).collect();
    assert!(glue.contains(&pod_ip), "{glue:?}");
    let by_hostname = ask(
        dns,
        &format!("db-0.db.{NS}.svc.cluster.local."),
        RecordType::A,
        false,
    );
    assert_eq!(answers(&by_hostname), [pod_ip.as_str()]);

    // Reverse: the Service's and the endpoint's names by address.
    let reverse = |ip: &str| {
        let mut octets: Vec<&str> = ip.split('.').collect();
        octets.reverse();
        format!("{}.in-addr.arpa.", octets.join("."))
    };
    let ptr = ask(dns, &reverse(web_ip), RecordType::PTR, false);
    assert_eq!(answers(&ptr), [web_name.as_str()]);
    let ptr = ask(dns, &reverse(&pod_ip), RecordType::PTR, true);
    assert_eq!(answers(&ptr), [format!("db-0.db.{NS}.svc.cluster.local.")]);

    // The pod by its dashed address in its namespace, and not in another.
    let dashed = pod_ip.replace('.', "-");
    for tcp in [false, true] {
        let m = ask(
            dns,
            &format!("{dashed}.{NS}.pod.cluster.local."),
            RecordType::A,
            tcp,
        );
        assert_eq!(answers(&m), [pod_ip.as_str()], "tcp: {tcp}");
    }
    let elsewhere = ask(
        dns,
        &format!("{dashed}.default.pod.cluster.local."),
        RecordType::A,
        false,
    );
    assert_eq!(elsewhere.metadata.response_code, ResponseCode::NXDomain);

    // What does not exist is NXDOMAIN with the zone's SOA; a name that
    // exists without the asked type is NODATA (NOERROR, no answer).
    for tcp in [false, true] {
        let m = ask(
            dns,
            &format!("nope.{NS}.svc.cluster.local."),
            RecordType::A,
            tcp,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.answers.is_empty());
        assert_nx_soa(&m);
    }
    let nodata = ask(dns, &web_name, RecordType::AAAA, false);
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_nx_soa(&nodata);

    // A deleted Service stops resolving.
    up.ok(&["delete", "service", "web", "-n", NS]);
    up.eventually("the deleted web is NXDOMAIN", WAIT, || {
        let m = ask(dns, &web_name, RecordType::A, false);
        (m.metadata.response_code == ResponseCode::NXDomain).then_some(())
    });

    // Outside the cluster domain: forwarded to the node's resolv.conf's
    // servers (whatever they answer, or SERVFAIL when none does), never
    // answered as the cluster's own.
    for tcp in [false, true] {
        let m = ask(dns, "example.com.", RecordType::A, tcp);
        assert!(!m.metadata.authoritative, "{m:?}");
        assert!(m.metadata.recursion_available, "{m:?}");
        assert_ne!(m.metadata.response_code, ResponseCode::Refused, "{m:?}");
    }

    // CoreDNS's status endpoints: health, readiness and the series its
    // dashboards read, counting the queries above by protocol and rcode.
    let status_addr = up
        .dns_status
        .expect("ballast up printed the DNS status address");
    assert_eq!(get(status_addr, "/health"), (200, "OK".to_string()));
    assert_eq!(get(status_addr, "/ready"), (200, "OK".to_string()));
    let (code, metrics) = get(status_addr, "/metrics");
    assert_eq!(code, 200);
    let server = format!(r#"server="dns://{dns}",zone=".",view="""#);
    let sample = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} in\n{metrics}"))
    };
    for proto in ["udp", "tcp"] {
        let a = sample(&format!(
            r#"coredns_dns_requests_total{{{server},proto="{proto}",family="1",type="A"}}"#
        ));
        assert!(a >= 2.0, "A queries over {proto}: {a}");
    }
    for rcode in ["NOERROR", "NXDOMAIN"] {
        let n = sample(&format!(
            r#"coredns_dns_responses_total{{{server},rcode="{rcode}",plugin=""}}"#
        ));
        assert!(n >= 2.0, "{rcode} responses: {n}");
    }
    let timed = sample(&format!(
        r#"coredns_dns_request_duration_seconds_count{{{server},type="SRV"}}"#
    ));
    assert!(timed >= 1.0, "SRV queries timed: {timed}");
    assert!(
        metrics.contains("\nprocess_resident_memory_bytes "),
        "{metrics}"
    );
    assert_eq!(get(status_addr, "/nothing-here").0, 404);

    let status = up.stop();
    assert!(status.success(), "ballast up exited with {status}");
}

/// One HTTP/1.0 GET: the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    ballast_tests::http::get(addr, path).unwrap_or_else(|e| panic!("GET {addr}{path}: {e}"))
}

/// The negative answer carries `cluster.local`'s SOA in the authority
/// section, as CoreDNS's.
fn assert_nx_soa(m: &Message) {
    let soa: Vec<&ballast_dns::RData> = m
        .authorities
        .iter()
        .filter(|r| r.record_type() == RecordType::SOA)
        .map(|r| &r.data)
        .collect();
    assert_eq!(soa.len(), 1, "{m:?}");
    let text = soa[0].to_string();
    assert!(
        text.starts_with("ns.dns.cluster.local. hostmaster.cluster.local."),
        "{text}"
    );
}
