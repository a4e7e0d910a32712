//! `ballast proxy` against a real apiserver (over the shared etcd) with
//! real TCP and UDP backends on loopback addresses: each test runs its own
//! proxy, scoped with `service.kubernetes.io/service-proxy-name` to the
//! Services of its namespace, and writes the Services and EndpointSlices
//! itself (no controllers), so it decides which endpoints are ready.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ballast_apiserver::{Apiserver, CacheConfig, Config as ApiConfig};
use ballast_proxy::{Config, NodePortAddresses, Proxy, SERVICE_PROXY_NAME_LABEL};
use ballast_tests::{Cluster, ClusterKind};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;

/// The longest any wait in a test may take.
const DEADLINE: Duration = Duration::from_secs(30);
/// The node the test proxies act for.
const NODE: &str = "node-a";

/// One test's apiserver, namespace and proxy; all stop when dropped.
struct Env {
    client: Client,
    ns: String,
    proxy_healthz: SocketAddr,
    proxy_metrics: SocketAddr,
    _stop_api: oneshot::Sender<()>,
    _stop_proxy: oneshot::Sender<()>,
}

async fn env(ns: &str) -> Env {
    let etcd_servers = tokio::task::spawn_blocking(|| {
        Cluster::shared(ClusterKind::Etcd)
            .endpoints()
            .into_iter()
            .map(|e| {
                if e.contains("://") {
                    e
                } else {
                    format!("http://{e}")
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("etcd");
    let apiserver = Apiserver::new(ApiConfig {
        etcd_servers,
        cache: CacheConfig::default(),
    })
    .expect("apiserver");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop_api, stopped) = oneshot::channel::<()>();
    tokio::spawn(apiserver.serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let body: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns");
    eventually("namespace created", || async {
        match namespaces.create(&PostParams::default(), &body).await {
            Ok(_) => Some(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Some(()),
            Err(_) => None,
        }
    })
    .await;
    let config = Config {
        node_name: NODE.into(),
        nodeport_addresses: NodePortAddresses::Addresses(vec!["127.0.0.1".parse().unwrap()]),
        healthz_bind_address: Some("127.0.0.1:0".parse().unwrap()),
        metrics_bind_address: Some("127.0.0.1:0".parse().unwrap()),
        service_proxy_name: Some(ns.to_string()),
        udp_idle_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let proxy = Proxy::bind(client.clone(), config).await.expect("proxy");
    let proxy_healthz = proxy.healthz_addr().expect("healthz");
    let proxy_metrics = proxy.metrics_addr().expect("metrics");
    let (stop_proxy, stopped) = oneshot::channel::<()>();
    tokio::spawn(proxy.run(async move {
        let _ = stopped.await;
    }));
    Env {
        client,
        ns: ns.to_string(),
        proxy_healthz,
        proxy_metrics,
        _stop_api: stop_api,
        _stop_proxy: stop_proxy,
    }
}

/// Polls `f` until it yields, for at most [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Env {
    /// Creates a Service (labelled for this test's proxy) from `spec`;
    /// returns it as the apiserver stored it.
    async fn service(&self, name: &str, spec: Value) -> Service {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        let body = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {SERVICE_PROXY_NAME_LABEL: self.ns}},
            "spec": spec,
        }))
        .expect("service");
        api.create(&PostParams::default(), &body)
            .await
            .expect("create service")
    }

    /// Creates or replaces the one EndpointSlice of Service `service`.
    async fn slice(&self, service: &str, ports: Value, endpoints: Value) {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.ns);
        let body = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": format!("{service}-1"), "labels": {
                "kubernetes.io/service-name": service,
                SERVICE_PROXY_NAME_LABEL: self.ns,
            }},
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": endpoints,
        });
        let name = format!("{service}-1");
        if api.get_opt(&name).await.expect("get slice").is_none() {
            let body = serde_json::from_value(body).expect("a slice");
            api.create(&PostParams::default(), &body)
                .await
                .expect("create slice");
        } else {
            // A merge patch replaces the lists whole.
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await
                .expect("patch slice");
        }
    }
}

fn cluster_ip(svc: &Service) -> IpAddr {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .expect("a cluster IP")
        .parse()
        .expect("an IP")
}

fn node_port(svc: &Service) -> u16 {
    let port = svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port;
    port.expect("a node port") as u16
}

fn endpoint(ip: &str, node: &str, ready: bool) -> Value {
    json!({"addresses": [ip], "nodeName": node,
           "conditions": {"ready": ready, "serving": ready, "terminating": false}})
}

/// TCP backends on `ips` sharing one port; each answers every connection
/// with its own address and closes.
async fn tcp_backends(ips: &[&str]) -> u16 {
    for _ in 0..20 {
        let first = TcpListener::bind((ips[0], 0)).await.expect("bind backend");
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for ip in &ips[1..] {
            match TcpListener::bind((*ip, port)).await {
                Ok(l) => listeners.push(l),
                Err(_) => break,
            }
        }
        if listeners.len() < ips.len() {
            continue;
        }
        for listener in listeners {
            tokio::spawn(async move {
                let name = listener.local_addr().unwrap().ip().to_string();
                while let Ok((mut conn, _)) = listener.accept().await {
                    let _ = conn.write_all(name.as_bytes()).await;
                }
            });
        }
        return port;
    }
    panic!("no common free port on {ips:?}");
}

/// What the backend behind `addr` says, or the connection's error.
async fn fetch(addr: SocketAddr) -> std::io::Result<String> {
    let mut conn = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut answer))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    Ok(answer)
}

/// The backends that answered `n` connections to `addr`, when all of
/// them connected.
async fn answers(addr: SocketAddr, n: usize) -> Option<Vec<String>> {
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(fetch(addr).await.ok()?);
    }
    Some(seen)
}

fn set(answers: &[String]) -> BTreeSet<&str> {
    answers.iter().map(String::as_str).collect()
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.expect("read");
    let status = answer[9..12].parse().expect("a status");
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (status, body.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_ip_balances_over_ready_endpoints_and_follows_changes() {
    let env = env("proxy-cluster-ip").await;
    let port = tcp_backends(&["127.211.0.1", "127.211.0.2", "127.211.0.3"]).await;
    let svc = env
        .service(
            "web",
            json!({"ports": [{"name": "http", "port": 80, "targetPort": port}]}),
        )
        .await;
    let frontend = SocketAddr::new(cluster_ip(&svc), 80);
    let ports = json!([{"name": "http", "port": port, "protocol": "TCP"}]);
    // No slice yet: nothing listens, so the kernel refuses.
    let err = fetch(frontend).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    env.slice(
        "web",
        ports.clone(),
        json!([
            endpoint("127.211.0.1", NODE, true),
            endpoint("127.211.0.2", "node-b", true),
            endpoint("127.211.0.3", NODE, false),
        ]),
    )
    .await;
    let seen = eventually("both ready endpoints answer", || answers(frontend, 6)).await;
    assert_eq!(
        set(&seen),
        BTreeSet::from(["127.211.0.1", "127.211.0.2"]),
        "{seen:?}"
    );
    // Round robin: each connection goes to the other endpoint.
    assert!(seen.windows(2).all(|w| w[0] != w[1]), "{seen:?}");

    // An endpoint removed: it gets no more traffic.
    env.slice(
        "web",
        ports.clone(),
        json!([endpoint("127.211.0.2", "node-b", true)]),
    )
    .await;
    eventually("only the remaining endpoint answers", || async {
        let seen = answers(frontend, 4).await?;
        (set(&seen) == BTreeSet::from(["127.211.0.2"])).then_some(())
    })
    .await;

    // Only terminating-but-serving endpoints left: they are used (drain).
    env.slice(
        "web",
        ports.clone(),
        json!([{"addresses": ["127.211.0.3"], "nodeName": NODE,
                "conditions": {"ready": false, "serving": true, "terminating": true}}]),
    )
    .await;
    eventually("the serving terminating endpoint answers", || async {
        let seen = answers(frontend, 2).await?;
        (set(&seen) == BTreeSet::from(["127.211.0.3"])).then_some(())
    })
    .await;

    // No endpoint at all: refused again.
    env.slice("web", ports, json!([])).await;
    eventually("connections are refused", || async {
        match fetch(frontend).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        }
    })
    .await;

    // kube-proxy's health and metrics endpoints.
    let (status, body) = http_get(env.proxy_healthz, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("healthz JSON");
    assert!(
        body["lastUpdated"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert_eq!(http_get(env.proxy_healthz, "/livez").await.0, 200);
    assert_eq!(http_get(env.proxy_healthz, "/nope").await.0, 404);
    let (status, metrics) = http_get(env.proxy_metrics, "/metrics").await;
    assert_eq!(status, 200);
    let connections = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ballast_proxy_connections_total "))
        .expect("connections counter");
    assert!(connections.parse::<u64>().unwrap() >= 8, "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_ip_affinity_pins_a_client_to_one_endpoint() {
    let env = env("proxy-affinity").await;
    let port = tcp_backends(&["127.212.0.1", "127.212.0.2"]).await;
    let svc = env
        .service(
            "sticky",
            json!({"sessionAffinity": "ClientIP",
                   "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
                   "ports": [{"name": "http", "port": 81, "targetPort": port}]}),
        )
        .await;
    env.slice(
        "sticky",
        json!([{"name": "http", "port": port}]),
        json!([
            endpoint("127.212.0.1", NODE, true),
            endpoint("127.212.0.2", NODE, true)
        ]),
    )
    .await;
    let frontend = SocketAddr::new(cluster_ip(&svc), 81);
    let seen = eventually("the sticky service answers", || answers(frontend, 8)).await;
    assert_eq!(set(&seen).len(), 1, "one client, one endpoint: {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn node_port_with_local_external_traffic_policy_and_health_check() {
    let env = env("proxy-node-port").await;
    let port = tcp_backends(&["127.213.0.1", "127.213.0.2"]).await;
    let svc = env
        .service(
            "lb",
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                   "ports": [{"name": "http", "port": 82, "targetPort": port}]}),
        )
        .await;
    // The apiserver allocates it from the NodePort range, as kube does.
    let health_port = svc
        .spec
        .as_ref()
        .and_then(|s| s.health_check_node_port)
        .and_then(|p| u16::try_from(p).ok())
        .expect("an allocated healthCheckNodePort");
    assert!((30000..=32767).contains(&health_port), "{health_port}");
    let ports = json!([{"name": "http", "port": port}]);
    env.slice(
        "lb",
        ports.clone(),
        json!([
            endpoint("127.213.0.1", NODE, true),
            endpoint("127.213.0.2", "node-b", true)
        ]),
    )
    .await;
    let node_port = SocketAddr::from(([127, 0, 0, 1], node_port(&svc)));
    let cluster = SocketAddr::new(cluster_ip(&svc), 82);
    let seen = eventually("the cluster IP answers", || answers(cluster, 4)).await;
    assert_eq!(
        set(&seen).len(),
        2,
        "the cluster IP uses every endpoint: {seen:?}"
    );
    let seen = eventually("the node port answers", || answers(node_port, 4)).await;
    assert_eq!(
        set(&seen),
        BTreeSet::from(["127.213.0.1"]),
        "only the local one: {seen:?}"
    );

    let health = SocketAddr::from(([127, 0, 0, 1], health_port));
    let (status, body) = eventually("the health check port answers", || async {
        TcpStream::connect(health).await.ok()?;
        Some(http_get(health, "/").await)
    })
    .await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["service"], json!({"namespace": env.ns, "name": "lb"}));
    assert_eq!(body["localEndpoints"], 1);

    // The local endpoint goes: the node port stops, the health check says 503.
    env.slice(
        "lb",
        ports,
        json!([endpoint("127.213.0.2", "node-b", true)]),
    )
    .await;
    eventually("the node port refuses", || async {
        match fetch(node_port).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        }
    })
    .await;
    let (status, body) = http_get(health, "/").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        answers(cluster, 2).await.as_deref().map(set),
        Some(BTreeSet::from(["127.213.0.2"]))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_datagrams_reach_an_endpoint_and_replies_come_back() {
    let env = env("proxy-udp").await;
    let backend = UdpSocket::bind("127.214.0.1:0").await.expect("bind");
    let port = backend.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = backend.recv_from(&mut buf).await {
            let reply = [b"echo:".as_slice(), &buf[..n]].concat();
            let _ = backend.send_to(&reply, from).await;
        }
    });
    let svc = env
        .service(
            "dns",
            json!({"ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": port}]}),
        )
        .await;
    env.slice(
        "dns",
        json!([{"name": "dns", "port": port, "protocol": "UDP"}]),
        json!([endpoint("127.214.0.1", NODE, true)]),
    )
    .await;
    let frontend = SocketAddr::new(cluster_ip(&svc), 53);
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
    let reply = eventually("an echo through the cluster IP", || async {
        client.send_to(b"hello", frontend).await.ok()?;
        let mut buf = [0u8; 1500];
        let (n, from) =
            tokio::time::timeout(Duration::from_millis(500), client.recv_from(&mut buf))
                .await
                .ok()?
                .ok()?;
        assert_eq!(from, frontend, "the reply comes from the Service address");
        Some(buf[..n].to_vec())
    })
    .await;
    assert_eq!(reply, b"echo:hello");
}
