//! Pods' resolver configuration and hosts file, as kubelet makes them
//! (`ballast_kubelet::dns`): read from inside containers with mount
//! namespaces (a root kubelet) for ClusterFirst, Default, None with
//! `dnsConfig`, a host-network pod and `hostAliases`; a pod resolving a
//! Service by its short name through a `ballast dns` given as
//! `--cluster-dns`; and, as any user, the files in the pod's directory
//! with the ClusterFirst fallback and the limits' warnings.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use crate::common::*;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

/// The node's resolv.conf the kubelets of these tests are given.
const NODE_RESOLV: &str =
    "# a test node\nnameserver 10.0.0.2\nsearch corp.example.\noptions timeout:2\n";

/// Writes [`NODE_RESOLV`] into the test's shared directory; its path.
fn node_resolv(env: &Env) -> PathBuf {
    let path = env.shared.path().join("node-resolv.conf");
    std::fs::write(&path, NODE_RESOLV).expect("node resolv.conf");
    path
}

/// The pod's directory on the host.
fn pod_dir(env: &Env, pod: &Pod) -> PathBuf {
    let uid = pod.metadata.uid.as_deref().expect("uid");
    env.root.path().join("pods").join(uid)
}

/// Waits for the pod to succeed; its log and the pod.
async fn output_of(env: &Env, name: &str) -> (String, Pod) {
    let pod = env
        .wait_pod(name, "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    let ns = env.ns.clone();
    let (code, log) = env
        .kubelet_get(&format!("/containerLogs/{ns}/{name}/c"))
        .await;
    assert_eq!(code, 200, "{log}");
    (log, pod)
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod IP")
}

/// Prints the container's resolv.conf, a separator, and its hosts file.
const SHOW: &str = "cat /etc/resolv.conf; echo ---; cat /etc/hosts";

fn split(log: &str) -> (&str, &str) {
    log.split_once("---\n")
        .unwrap_or_else(|| panic!("no separator in the log:\n{log}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_see_the_resolver_their_dns_policy_makes() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("containers_see_the_resolver_their_dns_policy_makes: skipped: mount namespaces need root");
        return;
    }
    let mut env = env("dnspol").await;
    let mut config = env.config();
    config.mount_namespaces = true;
    config.cluster_dns = vec!["127.0.0.10".parse().unwrap()];
    config.cluster_domain = "cluster.local".into();
    config.resolv_conf = Some(node_resolv(&env));
    env.start(config).await;
    let ns = env.ns.clone();
    let pod = |name: &str, extra: serde_json::Value| {
        let mut spec = json!({
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", SHOW]}]
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        json!({"metadata": {"name": name}, "spec": spec})
    };
    env.create_pod(pod(
        "first",
        json!({"hostname": "web", "subdomain": "sub",
            "hostAliases": [{"ip": "127.0.0.5", "hostnames": ["foo.local", "bar"]}]}),
    ))
    .await;
    env.create_pod(pod("default", json!({"dnsPolicy": "Default"})))
        .await;
    env.create_pod(pod(
        "none",
        json!({"dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["127.0.0.53"], "searches": ["a.example"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}),
    ))
    .await;
    // ClusterFirst on the host's network resolves as Default, and its
    // hosts file is the node's with the aliases.
    env.create_pod(pod(
        "hostnet",
        json!({"hostNetwork": true,
            "hostAliases": [{"ip": "127.0.0.6", "hostnames": ["alias.local"]}]}),
    ))
    .await;

    let (log, first) = output_of(&env, "first").await;
    let (resolv, hosts) = split(&log);
    assert_eq!(
        resolv,
        format!(
            "search {ns}.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             nameserver 127.0.0.10\noptions ndots:5\n"
        )
    );
    let ip = pod_ip(&first);
    assert!(hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
    assert!(
        hosts.contains(&format!("\n{ip}\tweb.sub.{ns}.svc.cluster.local\tweb\n")),
        "{hosts}"
    );
    assert!(
        hosts
            .ends_with("\n# Entries added by HostAliases.\n127.0.0.5\tfoo.local\n127.0.0.5\tbar\n"),
        "{hosts}"
    );
    // What the container saw is what the kubelet wrote for the pod.
    let dir = pod_dir(&env, &first);
    assert_eq!(
        std::fs::read_to_string(dir.join("resolv.conf")).unwrap(),
        resolv
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("etc-hosts")).unwrap(),
        hosts
    );

    let (log, _) = output_of(&env, "default").await;
    let (resolv, hosts) = split(&log);
    assert_eq!(
        resolv,
        "search corp.example\nnameserver 10.0.0.2\noptions timeout:2\n"
    );
    assert!(hosts.contains("\tdefault\n"), "{hosts}");

    let (log, _) = output_of(&env, "none").await;
    let (resolv, _) = split(&log);
    assert_eq!(
        resolv,
        "search a.example\nnameserver 127.0.0.53\noptions ndots:2 edns0\n"
    );

    let (log, _) = output_of(&env, "hostnet").await;
    let (resolv, hosts) = split(&log);
    assert_eq!(
        resolv,
        "search corp.example\nnameserver 10.0.0.2\noptions timeout:2\n"
    );
    let node_hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    assert_eq!(
        hosts,
        format!(
            "# Kubernetes-managed hosts file (host network).\n{node_hosts}\
             \n# Entries added by HostAliases.\n127.0.0.6\talias.local\n"
        )
    );
    // The host's own files are untouched.
    assert!(!std::fs::read_to_string("/etc/resolv.conf")
        .unwrap()
        .contains("127.0.0.10"));
}

/// A container that mounts a volume at /etc/hosts keeps it (kube skips
/// its hosts file then); the resolver configuration is still the pod's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_at_etc_hosts_wins_over_the_managed_file() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "a_volume_at_etc_hosts_wins_over_the_managed_file: skipped: mount namespaces need root"
        );
        return;
    }
    let mut env = env("dnsvol").await;
    let mut config = env.config();
    config.mount_namespaces = true;
    config.cluster_dns = vec!["127.0.0.10".parse().unwrap()];
    config.resolv_conf = Some(node_resolv(&env));
    env.start(config).await;
    env.create_pod(json!({
        "metadata": {"name": "own"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "h", "downwardAPI": {"items": [
                {"path": "hosts", "fieldRef": {"fieldPath": "metadata.name"}}]}}],
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", SHOW],
                "volumeMounts": [{"name": "h", "mountPath": "/etc/hosts", "subPath": "hosts"}]}]
        }
    }))
    .await;
    let (log, _) = output_of(&env, "own").await;
    let (resolv, hosts) = split(&log);
    assert!(resolv.contains("nameserver 127.0.0.10\n"), "{resolv}");
    assert_eq!(hosts.trim_end(), "own");
}

/// Without mount namespaces (any user) the files are still written into
/// the pod's directory. ClusterFirst on a kubelet without --cluster-dns
/// falls back to Default with kube's MissingClusterDNS warnings, and a
/// fourth nameserver is cut with a DNSConfigForming warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_written_for_the_pod_and_fallbacks_are_warned() {
    let mut env = env("dnsfile").await;
    let mut config = env.config();
    config.cluster_dns = Vec::new();
    config.resolv_conf = Some(node_resolv(&env));
    env.start(config).await;
    env.create_pod(json!({
        "metadata": {"name": "fallback"},
        "spec": {
            "dnsConfig": {"nameservers": ["127.0.0.21", "127.0.0.22", "127.0.0.23"],
                "searches": ["extra.example"]},
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]
        }
    }))
    .await;
    let pod = env
        .wait_pod("fallback", "Running", |p| phase(p) == "Running")
        .await;
    let dir = pod_dir(&env, &pod);
    assert_eq!(
        std::fs::read_to_string(dir.join("resolv.conf")).unwrap(),
        "search corp.example extra.example\nnameserver 10.0.0.2\nnameserver 127.0.0.21\n\
         nameserver 127.0.0.22\noptions timeout:2\n"
    );
    let hosts = std::fs::read_to_string(dir.join("etc-hosts")).unwrap();
    let ip = pod_ip(&pod);
    assert!(hosts.ends_with(&format!("\n{ip}\tfallback\n")), "{hosts}");
    env.wait_event(
        "fallback",
        "MissingClusterDNS",
        "kubelet does not have ClusterDNS IP configured",
    )
    .await;
    env.wait_event(
        "fallback",
        "DNSConfigForming",
        "the applied nameserver line is: 10.0.0.2 127.0.0.21 127.0.0.22",
    )
    .await;
    // The container runs all the same.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pod = env.pods().get("fallback").await.unwrap();
    assert_eq!(phase(&pod), "Running");
}

static DNS_HOSTS: AtomicU8 = AtomicU8::new(1);

/// A ClusterFirst pod resolves a Service by its short name through the
/// cluster DNS its kubelet was given: the search list the kubelet wrote
/// turns `web` into `web.<ns>.svc.cluster.local`, which `ballast dns`
/// (started here on port 53 of an address of its own) answers with the
/// Service's ClusterIP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_resolves_a_service_by_its_short_name_through_the_cluster_dns() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("a_pod_resolves_a_service_by_its_short_name_through_the_cluster_dns: skipped: mount namespaces and port 53 need root");
        return;
    }
    let mut env = env("dnssvc").await;
    let ip: std::net::IpAddr = format!(
        "127.53.{}.{}",
        std::process::id() % 250,
        DNS_HOSTS.fetch_add(1, Ordering::SeqCst)
    )
    .parse()
    .unwrap();
    // CoreDNS's status port, picked free here, says when it has listed.
    let status = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let exe = std::env::var_os("BALLAST_TEST_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| ballast_tests::workspace_bin("ballast"));
    let _dns = tokio::process::Command::new(exe)
        .args([
            "dns",
            "--master",
            &env.api,
            "--cluster-domain",
            "cluster.local",
        ])
        .arg("--listen")
        .arg(format!("{ip}:53"))
        .arg("--status-address")
        .arg(status.to_string())
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ballast dns");
    let services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(env.client.clone(), &env.ns);
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    let svc = services
        .create(&Default::default(), &svc)
        .await
        .expect("service");
    let cluster_ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .filter(|ip| !ip.is_empty() && ip != "None")
        .expect("a ClusterIP");
    poll("ballast dns listening", || async {
        tokio::net::TcpStream::connect(status).await.is_ok()
    })
    .await;
    poll("ballast dns ready", || async {
        http_get(&status.to_string(), "/ready").await.0 == 200
    })
    .await;
    let mut config = env.config();
    config.mount_namespaces = true;
    config.cluster_dns = vec![ip];
    config.resolv_conf = Some(node_resolv(&env));
    env.start(config).await;
    env.create_pod(json!({
        "metadata": {"name": "client"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox",
                "command": ["sh", "-c", "getent ahostsv4 web; echo exit=$?"]}]
        }
    }))
    .await;
    let (log, _) = output_of(&env, "client").await;
    let ns = env.ns.clone();
    assert!(
        log.lines().any(|l| l.starts_with(&format!("{cluster_ip} "))
            && l.ends_with(&format!(" web.{ns}.svc.cluster.local"))),
        "web did not resolve to {cluster_ip} through {ip}:\n{log}"
    );
    assert!(log.lines().any(|l| l == "exit=0"), "{log}");
}
