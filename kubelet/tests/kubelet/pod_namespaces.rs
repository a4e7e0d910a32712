//! Per-pod network, UTS and IPC namespaces (`pod_namespaces = true`, a
//! root kubelet): two pods both serving 0.0.0.0:8080, each reached at its
//! own IP from the host and passing its HTTP readiness probe; a
//! container's `localhost` and `hostname` are its pod's (an exec probe
//! sees them too); the kubelet's port-forward reaches a port bound only
//! to the pod's 127.0.0.1 and reports kube's error where nothing listens;
//! deleting the pods leaves no veth and no holder process; a
//! `hostNetwork` pod keeps the host's network and UTS namespaces; a
//! restarted kubelet finds a pod's namespaces again (and ends those of a
//! pod deleted meanwhile, and all of them when it stops its containers);
//! a pod whose holder died gets new namespaces when a container restarts.
//!
//! Without root these tests say why and pass.

use std::time::Duration;

use crate::common::*;
use ballast_kubelet::runtime::netns::veth_name;
use kube::api::DeleteParams;
use serde_json::json;

/// Whether the tests can run (namespaces need root); says why not.
fn can_run(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("{test}: skipped: pod namespaces need root");
    }
    root
}

async fn start_with_namespaces(env: &mut Env) {
    let mut config = env.config();
    config.pod_namespaces = true;
    env.start(config).await;
}

/// Every second: the hostname, the namespaces it is in, and the HTTP code
/// of `127.0.0.1:9090`.
const CHECK: &str = r#"while true; do
  echo "host=$(hostname)"
  echo "ns=$(readlink /proc/self/ns/net) $(readlink /proc/self/ns/uts) $(readlink /proc/self/ns/ipc)"
  echo "local9090=$(curl -s -m 2 -o /dev/null -w '%{http_code}' http://127.0.0.1:9090/healthz)"
  sleep 1
done"#;

/// A pod whose `web` serves 0.0.0.0:8080 (HTTP readiness probe) and whose
/// `check` reports on [`CHECK`] (exec readiness probe: the hostname is the
/// pod's); with `private`, a second server on the pod's 127.0.0.1:9090.
fn pod(name: &str, private: bool) -> serde_json::Value {
    let mut containers = vec![
        json!({"name": "web", "image": "ballast/httpd",
               "env": [{"name": "POD_IP", "value": "0.0.0.0"}],
               "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                                  "periodSeconds": 1}}),
        json!({"name": "check", "image": "busybox", "command": ["sh", "-c", CHECK],
               "readinessProbe": {"exec": {"command": ["sh", "-c",
                    format!("test \"$(hostname)\" = {name}")]},
                                  "periodSeconds": 1}}),
    ];
    if private {
        containers.push(json!({"name": "private", "image": "ballast/httpd",
            "args": ["--port", "9090"],
            "env": [{"name": "POD_IP", "value": "127.0.0.1"}]}));
    }
    json!({"metadata": {"name": name},
           "spec": {"terminationGracePeriodSeconds": 1, "containers": containers}})
}

/// The log of container `c` of `pod` through the kubelet (empty when none).
async fn log_of(env: &Env, pod: &str, c: &str) -> String {
    let (code, body) = env
        .kubelet_get(&format!("/containerLogs/{}/{pod}/{c}", env.ns))
        .await;
    if code == 200 {
        body
    } else {
        String::new()
    }
}

async fn wait_log_line(env: &Env, pod: &str, c: &str, want: &str) {
    poll(&format!("{pod}/{c} to log {want:?}"), || async {
        log_of(env, pod, c).await.lines().any(|l| l == want)
    })
    .await;
}

/// Through the kubelet's `/portForward` (WebSocket channel protocol, the
/// official Python client's `websocket` module): an HTTP/1.0 GET of `/`
/// on `port` of `pod`, printed as `data: <first line>` and/or
/// `error: <error channel>`.
const PORT_FORWARD: &str = r#"
import sys, websocket
url, port = sys.argv[1], int(sys.argv[2])
ws = websocket.create_connection(url, subprotocols=["portforward.k8s.io"], timeout=20)
ws.send_binary(b"\x00GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
seen, data, err = set(), b"", b""
while True:
    try:
        op, msg = ws.recv_data()
    except Exception:
        break
    if op == 8 or not msg:
        break
    ch, body = msg[0], msg[1:]
    if ch not in seen:
        seen.add(ch)
        assert body == port.to_bytes(2, "little"), body
        continue
    if ch == 0:
        data += body
    else:
        err += body
if data:
    print("data:", data.split(b"\r\n")[0].decode(), "|", data.split(b"\r\n\r\n", 1)[-1].decode().strip())
if err:
    print("error:", err.decode())
"#;

fn port_forward(env: &Env, pod: &str, port: u16) -> String {
    let Some(py) = ballast_tests::up::python() else {
        panic!("the Python client's virtualenv is missing (scripts/setup makes it)");
    };
    let kubelet = env.kubelet.as_ref().expect("kubelet").port();
    let url = format!(
        "ws://127.0.0.1:{kubelet}/portForward/{}/{pod}?port={port}",
        env.ns
    );
    let mut cmd = std::process::Command::new(py);
    cmd.arg("-c")
        .arg(PORT_FORWARD)
        .arg(url)
        .arg(port.to_string());
    let out = ballast_tests::process::output_within(cmd, Duration::from_secs(40));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "port-forward script failed: {text}");
    text
}

fn pod_ip(p: &k8s_openapi::api::core::v1::Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod IP")
}

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_have_their_own_network_localhost_and_hostname() {
    if !can_run("pods_have_their_own_network_localhost_and_hostname") {
        return;
    }
    let mut env = env("podns").await;
    start_with_namespaces(&mut env).await;
    env.create_pod(pod("alpha", true)).await;
    env.create_pod(pod("beta", false)).await;
    let mut pods = Vec::new();
    for name in ["alpha", "beta"] {
        let p = env
            .wait_pod(name, "Running and Ready", |p| {
                phase(p) == "Running" && condition(p, "Ready").as_deref() == Some("True")
            })
            .await;
        pods.push(p);
    }
    let (alpha, beta) = (&pods[0], &pods[1]);
    assert_ne!(pod_ip(alpha), pod_ip(beta));

    // Both serve 0.0.0.0:8080, each at its own IP, reached from the host.
    for p in [alpha, beta] {
        let (code, body) = http_get(&format!("{}:8080", pod_ip(p)), "/healthz").await;
        assert_eq!((code, body.as_str()), (200, "ok\n"), "{}", pod_ip(p));
    }
    // A container's localhost and hostname are its pod's.
    wait_log_line(&env, "alpha", "check", "host=alpha").await;
    wait_log_line(&env, "alpha", "check", "local9090=200").await;
    wait_log_line(&env, "beta", "check", "host=beta").await;
    wait_log_line(&env, "beta", "check", "local9090=000").await;

    // Port-forward reaches the port bound only to alpha's 127.0.0.1; in
    // beta nothing listens there.
    let shown = tokio::task::block_in_place(|| port_forward(&env, "alpha", 9090));
    assert!(
        shown.contains("data: HTTP/1.0 200 OK | ballast httpd"),
        "{shown}"
    );
    let shown = tokio::task::block_in_place(|| port_forward(&env, "beta", 9090));
    let uid = beta.metadata.uid.clone().unwrap();
    assert!(
        shown.contains(&format!("error: error forwarding port 9090 to pod beta, uid {uid}: failed to connect to localhost:9090 inside namespace of pod sandbox ")),
        "{shown}"
    );
    assert!(shown.contains("connect: connection refused"), "{shown}");

    // Deleting the pods ends their namespaces: no veth, no holder.
    let uids: Vec<String> = pods
        .iter()
        .map(|p| p.metadata.uid.clone().unwrap())
        .collect();
    for uid in &uids {
        assert!(link_exists(&veth_name(uid)), "the veth of {uid}");
    }
    for (uid, name) in uids.iter().zip(["alpha", "beta"]) {
        let holder = holders(&env, uid);
        assert_eq!(holder.len(), 1, "one holder for {uid}");
        // The containers are in exactly the holder's namespaces.
        let ns = |kind: &str| {
            std::fs::read_link(format!("/proc/{}/ns/{kind}", holder[0]))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        let want = format!("ns={} {} {}", ns("net"), ns("uts"), ns("ipc"));
        wait_log_line(&env, name, "check", &want).await;
    }
    for name in ["alpha", "beta"] {
        env.pods()
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    for name in ["alpha", "beta"] {
        env.wait_gone(name).await;
    }
    poll("the pods' veths and holders to be gone", || async {
        uids.iter()
            .all(|uid| !link_exists(&veth_name(uid)) && holders(&env, uid).is_empty())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_network_pod_keeps_the_hosts_network_and_hostname() {
    if !can_run("a_host_network_pod_keeps_the_hosts_network_and_hostname") {
        return;
    }
    let mut env = env("podns-host").await;
    start_with_namespaces(&mut env).await;
    let script = r#"echo "net=$(readlink /proc/self/ns/net)"; echo "uts=$(readlink /proc/self/ns/uts)"; echo "ipc=$(readlink /proc/self/ns/ipc)"; sleep 3600"#;
    env.create_pod(json!({
        "metadata": {"name": "hostnet"},
        "spec": {"hostNetwork": true, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "busybox",
                                 "command": ["sh", "-c", script]}]}
    }))
    .await;
    env.wait_pod("hostnet", "Running", |p| phase(p) == "Running")
        .await;
    let ns = |kind: &str| {
        std::fs::read_link(format!("/proc/self/ns/{kind}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    wait_log_line(&env, "hostnet", "c", &format!("net={}", ns("net"))).await;
    wait_log_line(&env, "hostnet", "c", &format!("uts={}", ns("uts"))).await;
    // hostIPC is not set: the pod's IPC namespace is its own.
    let log = log_of(&env, "hostnet", "c").await;
    let ipc = log
        .lines()
        .find_map(|l| l.strip_prefix("ipc="))
        .expect("ipc line");
    assert!(ipc.starts_with("ipc:["), "{log}");
    assert_ne!(ipc, ns("ipc"), "{log}");
}

/// The holder processes of pod `uid` under the test's kubelet root.
fn holders(env: &Env, uid: &str) -> Vec<u32> {
    processes_with(&format!(
        "{}/pods/{uid}/sandbox.ready",
        env.root.path().display()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_kubelet_finds_the_pods_namespaces_again() {
    if !can_run("a_restarted_kubelet_finds_the_pods_namespaces_again") {
        return;
    }
    let mut env = env("podns-adopt").await;
    let mut config = env.config();
    config.pod_namespaces = true;
    config.stop_containers_on_exit = false;
    env.start(config.clone()).await;
    env.create_pod(pod("keep", false)).await;
    env.create_pod(json!({
        "metadata": {"name": "doomed"},
        "spec": {"terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"]}]}
    }))
    .await;
    let ready = |p: &k8s_openapi::api::core::v1::Pod| {
        phase(p) == "Running" && condition(p, "Ready").as_deref() == Some("True")
    };
    let before = env.wait_pod("keep", "Running and Ready", ready).await;
    let doomed = env
        .wait_pod("doomed", "Running", |p| phase(p) == "Running")
        .await;
    let keep_uid = before.metadata.uid.clone().unwrap();
    let doomed_uid = doomed.metadata.uid.clone().unwrap();
    let holder = holders(&env, &keep_uid);
    assert_eq!(holder.len(), 1, "one holder: {holder:?}");
    assert_eq!(holders(&env, &doomed_uid).len(), 1);

    // The kubelet stops, leaving containers and namespaces; one pod is
    // deleted while it is down.
    env.kubelet.take().unwrap().stop().await;
    assert_eq!(holders(&env, &keep_uid), holder);
    env.pods()
        .delete(
            "doomed",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    env.wait_gone("doomed").await;
    env.start(config.clone()).await;
    poll("the deleted pod's holder and veth to be gone", || async {
        holders(&env, &doomed_uid).is_empty() && !link_exists(&veth_name(&doomed_uid))
    })
    .await;
    // The same holder, the same containers, still reachable and probed.
    assert_eq!(holders(&env, &keep_uid), holder, "the same holder");
    let after = env.wait_pod("keep", "Running and Ready", ready).await;
    let (code, _) = http_get(&format!("{}:8080", pod_ip(&after)), "/healthz").await;
    assert_eq!(code, 200);
    for c in ["web", "check"] {
        let (b, a) = (cstatus(&before, c).unwrap(), cstatus(&after, c).unwrap());
        assert_eq!(a.restart_count, 0, "{c}");
        assert_eq!(a.container_id, b.container_id, "{c}");
    }
    wait_log_line(&env, "keep", "check", "host=keep").await;

    // A kubelet that stops its containers on exit ends their namespaces too.
    env.kubelet.take().unwrap().stop().await;
    config.stop_containers_on_exit = true;
    env.start(config).await;
    env.wait_pod("keep", "Running and Ready", ready).await;
    env.kubelet.take().unwrap().stop().await;
    poll("the holder and veth to be gone at kubelet exit", || async {
        holders(&env, &keep_uid).is_empty() && !link_exists(&veth_name(&keep_uid))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_holder_died_gets_new_namespaces() {
    if !can_run("a_pod_whose_holder_died_gets_new_namespaces") {
        return;
    }
    let mut env = env("podns-phoenix").await;
    start_with_namespaces(&mut env).await;
    let mut manifest = pod("phoenix", false);
    // An exec liveness probe joins the holder's namespaces: it fails once
    // the holder is gone, and the restart makes the pod a new sandbox.
    manifest["spec"]["containers"][1]["livenessProbe"] =
        json!({"exec": {"command": ["true"]}, "periodSeconds": 1, "failureThreshold": 2});
    env.create_pod(manifest).await;
    let ready = |p: &k8s_openapi::api::core::v1::Pod| {
        phase(p) == "Running" && condition(p, "Ready").as_deref() == Some("True")
    };
    let before = env.wait_pod("phoenix", "Running and Ready", ready).await;
    let uid = before.metadata.uid.clone().unwrap();
    let holder = holders(&env, &uid);
    assert_eq!(holder.len(), 1, "one holder: {holder:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the holder");
    let after = env
        .wait_pod("phoenix", "restarted in a new sandbox, Ready", |p| {
            ready(p) && cstatus(p, "check").is_some_and(|c| c.restart_count > 0)
        })
        .await;
    let new = holders(&env, &uid);
    assert_eq!(new.len(), 1, "one new holder: {new:?}");
    assert_ne!(new, holder);
    assert_eq!(pod_ip(&after), pod_ip(&before));
    let (code, _) = http_get(&format!("{}:8080", pod_ip(&after)), "/healthz").await;
    assert_eq!(code, 200);
    let ns = |kind: &str| {
        std::fs::read_link(format!("/proc/{}/ns/{kind}", new[0]))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let want = format!("ns={} {} {}", ns("net"), ns("uts"), ns("ipc"));
    wait_log_line(&env, "phoenix", "check", &want).await;
}
