//! Traffic through Services with `ballast up` (process runtime): the
//! `ballast proxy` it starts forwards a Service's cluster IP and NodePort
//! to the ready pods, round robin, and refuses connections once no pod is
//! left. Driven with the real `kubectl` and `examples/web.yaml`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ballast_tests::up::Up;

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// One HTTP/1.0 GET; the status code, or the connection's error.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    ballast_tests::http::get(addr, path).map(|(code, _)| code)
}

#[test]
fn cluster_ip_and_node_port_reach_the_pods_until_scaled_to_zero() {
    let dir = tempfile::tempdir().unwrap();
    let up = Up::start(dir.path(), &[]);
    up.ok(&["apply", "-f", &example("web.yaml")]);
    up.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let svc = up.json(&["get", "service", "web"]);
    let ip = svc["spec"]["clusterIP"].as_str().expect("a cluster IP");
    let frontend: SocketAddr = format!("{ip}:80").parse().unwrap();

    // 30 requests through the cluster IP; the proxy converges on the
    // three ready endpoints (the rollout may be ahead of the slices).
    up.eventually(
        "30 answers through the cluster IP",
        Duration::from_secs(30),
        || {
            (0..30)
                .all(|_| http_get(frontend, "/").ok() == Some(200))
                .then_some(())
        },
    );
    // Round robin: every pod served some (its access log says so).
    let pods = up.json(&["get", "pods", "-l", "app=web"]);
    let names: Vec<String> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 3, "{pods}");
    for name in &names {
        let logs = up.ok(&["logs", name]);
        let served = logs.lines().filter(|l| *l == "GET / 200").count();
        assert!(served >= 5, "pod {name} served {served} of 30:\n{logs}");
    }

    // A NodePort on the node's address.
    up.ok(&[
        "patch",
        "service",
        "web",
        "-p",
        r#"{"spec":{"type":"NodePort"}}"#,
    ]);
    let svc = up.json(&["get", "service", "web"]);
    let node_port = svc["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("a nodePort");
    let node: SocketAddr = format!("127.0.0.1:{node_port}").parse().unwrap();
    up.eventually("the NodePort answers", Duration::from_secs(30), || {
        (http_get(node, "/healthz").ok() == Some(200)).then_some(())
    });

    // No pod left: the cluster IP and the NodePort refuse connections.
    up.ok(&["scale", "deployment/web", "--replicas=0"]);
    up.eventually("connections refused", Duration::from_secs(60), || {
        let refused = |addr| {
            matches!(http_get(addr, "/"), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
        };
        (refused(frontend) && refused(node)).then_some(())
    });
    let healthz = http_get("127.0.0.1:10256".parse().unwrap(), "/healthz");
    assert_eq!(healthz.ok(), Some(200), "the proxy's /healthz");
}
