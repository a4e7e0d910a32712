//! Services get addresses as kube-apiserver gives them: ClusterIPs from
//! `--service-cluster-ip-range` and NodePorts from
//! `--service-node-port-range`, requested or allocated, unique across
//! apiservers on one storage and across restarts, released at delete; the
//! default `kubernetes` Service; EndpointSlices served; and the official
//! Python client seeing both.

use crate::common;

use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::common::{endpoints, namespace, start, start_on_with, Api};
use ballast_apiserver::{CacheConfig, Options, ServiceRanges};
use ballast_tests::ClusterKind;
use serde_json::{json, Value};

fn svcs(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/services")
}

fn svc(name: &str, spec: Value) -> Value {
    json!({"metadata": {"name": name}, "spec": spec})
}

fn port80() -> Value {
    json!([{"port": 80}])
}

/// `(field, message)` of each cause of a 422.
fn causes(status: &Value) -> Vec<(String, String)> {
    status["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["field"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn in_default_range(ip: &str) -> bool {
    let ip: Ipv4Addr = ip.parse().expect("an IPv4 address");
    let o = ip.octets();
    o[0] == 127 && o[1] == 96 && ip != Ipv4Addr::new(127, 96, 0, 0)
}

/// A namespace of its own for this process's run.
fn ns_name(what: &str) -> String {
    format!("svc-{what}-{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ips_and_node_ports_on_ballast() {
    allocation(ClusterKind::Ballast).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ips_and_node_ports_on_etcd() {
    allocation(ClusterKind::Etcd).await
}

async fn allocation(kind: ClusterKind) {
    let api = start(kind, CacheConfig::default()).await;
    let ns = namespace(&api, &ns_name(&format!("alloc-{kind:?}").to_lowercase())).await;
    let path = svcs(&ns);

    // Allocated: an address of the range, its families.
    let (code, web) = api
        .call("POST", &path, Some(svc("web", json!({"ports": port80()}))))
        .await;
    assert_eq!(code, 201, "{web}");
    let ip = web["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(in_default_range(&ip), "{ip}");
    assert_eq!(web["spec"]["clusterIPs"], json!([ip]));
    assert_eq!(web["spec"]["ipFamilies"], json!(["IPv4"]));
    assert_eq!(web["spec"]["ipFamilyPolicy"], "SingleStack");
    assert!(web["spec"]["ports"][0].get("nodePort").is_none());

    // Requested: honoured; the same again: Kubernetes' 422.
    let want = "127.96.250.17";
    let (code, fixed) = api
        .call(
            "POST",
            &path,
            Some(svc("fixed", json!({"clusterIP": want, "ports": port80()}))),
        )
        .await;
    assert_eq!(code, 201, "{fixed}");
    assert_eq!(fixed["spec"]["clusterIPs"], json!([want]));
    let (code, status) = api
        .call(
            "POST",
            &path,
            Some(svc("again", json!({"clusterIP": want, "ports": port80()}))),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        causes(&status),
        [(
            "spec.clusterIPs".to_string(),
            format!("Invalid value: []string{{\"{want}\"}}: failed to allocate IP {want}: provided IP is already allocated")
        )]
    );
    assert!(status["message"]
        .as_str()
        .unwrap()
        .starts_with("Service \"again\" is invalid: spec.clusterIPs"));

    // Out of range, and not an IP at all.
    let (code, status) = api
        .call(
            "POST",
            &path,
            Some(svc(
                "far",
                json!({"clusterIP": "10.0.0.1", "ports": port80()}),
            )),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    assert!(causes(&status)[0].1.ends_with(
        "the provided IP (10.0.0.1) is not in the valid range. The range of valid IPs is 127.96.0.0/16"
    ));
    let (code, status) = api
        .call(
            "POST",
            &path,
            Some(svc("word", json!({"clusterIP": "ten", "ports": port80()}))),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(causes(&status)[0].0, "spec.clusterIPs[0]");

    // Immutable: a change is refused, a PUT without it keeps it.
    let item = format!("{path}/web");
    let (code, status) = api
        .merge_patch(&item, json!({"spec": {"clusterIP": "127.96.250.18"}}))
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(causes(&status)[0].0, "spec.clusterIPs[0]");
    assert!(causes(&status)[0].1.ends_with("may not change once set"));
    let (code, put) = api
        .call(
            "PUT",
            &item,
            Some(svc("web", json!({"ports": [{"port": 8080}]}))),
        )
        .await;
    assert_eq!(code, 200, "{put}");
    assert_eq!(put["spec"]["clusterIP"], ip.as_str());
    let (code, status) = api
        .merge_patch(&item, json!({"spec": {"clusterIP": "None"}}))
        .await;
    assert_eq!(code, 422, "headless may not replace an address: {status}");

    // Headless and ExternalName: no address.
    let (code, headless) = api
        .call(
            "POST",
            &path,
            Some(svc("hl", json!({"clusterIP": "None", "ports": port80()}))),
        )
        .await;
    assert_eq!(code, 201, "{headless}");
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    let (code, ext) = api
        .call(
            "POST",
            &path,
            Some(svc(
                "ext",
                json!({"type": "ExternalName", "externalName": "example.com"}),
            )),
        )
        .await;
    assert_eq!(code, 201, "{ext}");
    assert!(ext["spec"].get("clusterIP").is_none(), "{ext}");

    // NodePorts: per port, requested or allocated, from 30000-32767.
    let (code, np) = api
        .call(
            "POST",
            &path,
            Some(svc(
                "np",
                json!({"type": "NodePort", "ports": [
                    {"name": "a", "port": 80}, {"name": "b", "port": 81, "nodePort": 32001}]}),
            )),
        )
        .await;
    assert_eq!(code, 201, "{np}");
    let allocated = np["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&allocated), "{np}");
    assert_eq!(np["spec"]["ports"][1]["nodePort"], 32001);
    let (code, status) = api
        .call(
            "POST",
            &path,
            Some(svc(
                "np2",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 32001}]}),
            )),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        causes(&status),
        [(
            "spec.ports[0].nodePort".to_string(),
            "Invalid value: 32001: provided port is already allocated".to_string()
        )]
    );
    let (code, status) = api
        .call(
            "POST",
            &path,
            Some(svc(
                "np3",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 8080}]}),
            )),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    assert!(causes(&status)[0].1.ends_with(
        "provided port is not in the valid range. The range of valid ports is 30000-32767"
    ));
    let (code, status) = api
        .call(
            "POST",
            &path,
            Some(svc(
                "cip",
                json!({"ports": [{"port": 80, "nodePort": 30500}]}),
            )),
        )
        .await;
    assert_eq!(code, 422, "a ClusterIP Service has no node ports: {status}");

    // Deleting releases: the address and the port can be taken again.
    assert_eq!(
        api.call("DELETE", &format!("{path}/fixed"), None).await.0,
        200
    );
    assert_eq!(api.call("DELETE", &format!("{path}/np"), None).await.0, 200);
    let (code, again) = api
        .call(
            "POST",
            &path,
            Some(svc(
                "again",
                json!({"type": "NodePort", "clusterIP": want,
                       "ports": [{"port": 80, "nodePort": 32001}]}),
            )),
        )
        .await;
    assert_eq!(code, 201, "{again}");
    // Type NodePort → ClusterIP drops (and releases) the node port.
    let (code, back) = api
        .merge_patch(
            &format!("{path}/again"),
            json!({"spec": {"type": "ClusterIP"}}),
        )
        .await;
    assert_eq!(code, 200, "{back}");
    assert!(back["spec"]["ports"][0].get("nodePort").is_none(), "{back}");
    assert_eq!(back["spec"]["clusterIP"], want);
    let (code, reuse) = api
        .call(
            "POST",
            &path,
            Some(svc(
                "reuse",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 32001}]}),
            )),
        )
        .await;
    assert_eq!(code, 201, "{reuse}");

    // The default `kubernetes` Service: the range's first address.
    let (code, k) = api
        .call(
            "GET",
            "/api/v1/namespaces/default/services/kubernetes",
            None,
        )
        .await;
    assert_eq!(code, 200, "{k}");
    // Of the range of the apiserver that created it (tests on this
    // storage use several).
    let first = k["spec"]["clusterIP"].as_str().unwrap();
    assert!(
        ["127.96.0.1", "127.97.0.1", "127.98.0.1"].contains(&first),
        "{k}"
    );
    assert_eq!(k["spec"]["ports"][0]["port"], 443);
}

/// Two apiservers on one storage, creating at once, never hand out one
/// address twice; asking both for the same one, exactly one gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apiservers_never_share_an_address() {
    let eps = tokio::task::spawn_blocking(|| endpoints(ClusterKind::Ballast))
        .await
        .expect("cluster");
    // A small range (30 addresses) makes collisions likely.
    let ranges = ServiceRanges {
        cluster_ip: "127.97.0.0/27".parse().unwrap(),
        node_ports: "31000-31029".parse().unwrap(),
    };
    let options = || Options {
        service_ranges: ranges,
        ..Options::default()
    };
    let a = start_on_with(eps.clone(), options()).await;
    let b = start_on_with(eps, options()).await;
    let ns = namespace(&a, &ns_name("two")).await;
    let path = svcs(&ns);
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for round in 0..12 {
        let body = |name: String| svc(&name, json!({"type": "NodePort", "ports": port80()}));
        let (ra, rb) = tokio::join!(
            a.call("POST", &path, Some(body(format!("a{round}")))),
            b.call("POST", &path, Some(body(format!("b{round}"))))
        );
        for (code, s) in [ra, rb] {
            assert_eq!(code, 201, "{s}");
            let ip = s["spec"]["clusterIP"].as_str().unwrap().to_string();
            assert!(ip.starts_with("127.97.0."), "{ip}");
            assert!(ips.insert(ip.clone()), "{ip} handed out twice");
            let port = s["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
            assert!(ports.insert(port), "node port {port} handed out twice");
        }
    }
    // The same requested address at both at once: one wins.
    let free = (1..31)
        .map(|i| format!("127.97.0.{i}"))
        .find(|ip| !ips.contains(ip))
        .expect("a free address");
    let body = |name: &str| svc(name, json!({"clusterIP": free, "ports": port80()}));
    let (ra, rb) = tokio::join!(
        a.call("POST", &path, Some(body("race-a"))),
        b.call("POST", &path, Some(body("race-b")))
    );
    let mut codes = [ra.0, rb.0];
    codes.sort();
    assert_eq!(codes, [201, 422], "{} / {}", ra.1, rb.1);
}

/// A restarted apiserver reads what is held: a full range stays full
/// until a Service is deleted, and then exactly that address comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_what_is_allocated() {
    let eps = tokio::task::spawn_blocking(|| endpoints(ClusterKind::Etcd))
        .await
        .expect("cluster");
    // 14 usable addresses.
    let ranges = ServiceRanges {
        cluster_ip: "127.98.0.0/28".parse().unwrap(),
        ..ServiceRanges::default()
    };
    let options = || Options {
        service_ranges: ranges,
        ..Options::default()
    };
    let first = start_on_with(eps.clone(), options()).await;
    let ns = namespace(&first, &ns_name("restart")).await;
    let path = svcs(&ns);
    let mut held = Vec::new();
    for i in 0..14 {
        let (code, s) = first
            .call(
                "POST",
                &path,
                Some(svc(&format!("s{i}"), json!({"ports": port80()}))),
            )
            .await;
        if code == 500 {
            break; // another run's leftovers may hold some
        }
        assert_eq!(code, 201, "{s}");
        held.push(s["spec"]["clusterIP"].as_str().unwrap().to_string());
    }
    assert!(!held.is_empty());
    drop(first);

    let second = start_on_with(eps, options()).await;
    let (code, status) = second
        .call("POST", &path, Some(svc("more", json!({"ports": port80()}))))
        .await;
    assert_eq!(code, 500, "the range is full: {status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("range is full"),
        "{status}"
    );
    assert_eq!(
        second.call("DELETE", &format!("{path}/s0"), None).await.0,
        200
    );
    let (code, s) = second
        .call("POST", &path, Some(svc("more", json!({"ports": port80()}))))
        .await;
    assert_eq!(code, 201, "{s}");
    assert_eq!(s["spec"]["clusterIP"], held[0].as_str());
}

/// discovery.k8s.io/v1 EndpointSlices: discovery, validation, the Table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_are_served() {
    let api = start(ClusterKind::Etcd, CacheConfig::default()).await;
    let ns = namespace(&api, &ns_name("slices")).await;
    let (code, list) = api.call("GET", "/apis/discovery.k8s.io/v1", None).await;
    assert_eq!(code, 200, "{list}");
    assert!(list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "endpointslices" && r["kind"] == "EndpointSlice"));
    let path = format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices");
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.1.0.5"], "conditions": {"ready": true}, "nodeName": "n1"}],
        "ports": [{"name": "http", "port": 8080}]});
    let (code, s) = api.call("POST", &path, Some(slice)).await;
    assert_eq!(code, 201, "{s}");
    assert_eq!(s["ports"][0]["protocol"], "TCP");
    let bad = json!({"metadata": {"name": "bad"}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["not-an-ip"]}]});
    let (code, status) = api.call("POST", &path, Some(bad)).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        causes(&status),
        [(
            "endpoints[0].addresses[0]".to_string(),
            "Invalid value: \"not-an-ip\": must be a valid IPv4 address".to_string()
        )]
    );
    let (code, status) = api
        .merge_patch(&format!("{path}/web-1"), json!({"addressType": "FQDN"}))
        .await;
    assert_eq!(code, 422, "{status}");
    let (code, t) = api
        .get_accept(&path, "application/json;as=Table;v=v1;g=meta.k8s.io")
        .await;
    assert_eq!(code, 200, "{t}");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "AddressType", "Ports", "Endpoints", "Age"]);
    assert_eq!(t["rows"][0]["cells"][2], "8080");
    assert_eq!(t["rows"][0]["cells"][3], "127.1.0.5");
}

/// The default `kubernetes` Service, Endpoints and EndpointSlice point at
/// the advertised address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_service_points_at_the_apiserver() {
    let eps = tokio::task::spawn_blocking(|| endpoints(ClusterKind::Ballast))
        .await
        .expect("cluster");
    let advertise: std::net::SocketAddr = "127.0.0.1:16443".parse().unwrap();
    let api = start_on_with(
        eps,
        Options {
            advertise_address: Some(advertise),
            ..Options::default()
        },
    )
    .await;
    let ep = eventually_json(
        &api,
        "/api/v1/namespaces/default/endpoints/kubernetes",
        |e| {
            e["subsets"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["ports"][0]["port"] == 16443)
        },
    )
    .await;
    assert!(ep["subsets"].to_string().contains("127.0.0.1"), "{ep}");
    let slices = eventually_json(
        &api,
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io/service-name%3Dkubernetes",
        |l| l.to_string().contains("16443"),
    )
    .await;
    assert_eq!(slices["items"][0]["addressType"], "IPv4", "{slices}");
    let (_, k) = api
        .call(
            "GET",
            "/api/v1/namespaces/default/services/kubernetes",
            None,
        )
        .await;
    assert_eq!(k["spec"]["ports"][0]["name"], "https");
}

/// Polls `path` until `done` holds for its body (20 s at most).
async fn eventually_json(api: &Api, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..400 {
        let (code, body) = api.call("GET", path, None).await;
        if code == 200 && done(&body) {
            return body;
        }
        last = body;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{path} never got there: {last}");
}

const PYTHON_CLIENT: &str = r#"
import sys
from kubernetes import client, config
config.load_kube_config(config_file=sys.argv[1])
ns = sys.argv[2]
core = client.CoreV1Api()
svc = client.V1Service(
    metadata=client.V1ObjectMeta(name="py-web"),
    spec=client.V1ServiceSpec(selector={"app": "web"},
                              ports=[client.V1ServicePort(port=80, target_port=8080)]))
made = core.create_namespaced_service(ns, svc)
print("cluster_ip", bool(made.spec.cluster_ip), made.spec.cluster_ip == made.spec.cluster_i_ps[0])
disc = client.DiscoveryV1Api()
slices = disc.list_namespaced_endpoint_slice(ns)
print("slices", ",".join(sorted(s.metadata.name for s in slices.items)))
"#;

/// The official Python client: a Service it creates has a ClusterIP, and
/// `DiscoveryV1Api` lists slices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_sees_addresses_and_slices() {
    let api = start(ClusterKind::Etcd, CacheConfig::default()).await;
    let ns = namespace(&api, &ns_name("python")).await;
    let slice = json!({"metadata": {"name": "py-web-1",
            "labels": {"kubernetes.io/service-name": "py-web"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["127.1.0.9"]}]});
    let (code, s) = api
        .call(
            "POST",
            &format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"),
            Some(slice),
        )
        .await;
    assert_eq!(code, 201, "{s}");
    let dir = tempfile::tempdir().expect("tempdir");
    common::plain_kubeconfig(dir.path(), api.addr);
    let Some(lines) =
        common::python_client(PYTHON_CLIENT, &dir.path().join("kubeconfig"), &ns).await
    else {
        return;
    };
    assert_eq!(lines, ["cluster_ip True True", "slices py-web-1"]);
}
