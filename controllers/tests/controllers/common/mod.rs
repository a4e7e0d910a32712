//! Shared by the controller tests: an in-process apiserver over the shared
//! real etcd, a controller manager scoped to the test's namespace, a fake
//! kubelet that marks pods Running and Ready, and bounded polling.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use ballast_apiserver::{Apiserver, CacheConfig, Config};
use ballast_controllers::{ControllerManager, NodeLifecycleConfig};
use ballast_tests::{Cluster, ClusterKind};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::oneshot;

/// Nodes are cluster-wide and every test of this binary shares one etcd: a
/// test that creates, deletes or counts Nodes holds this while it runs
/// ([`env_with_nodes`]), so no other sees its nodes come and go.
pub static NODES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The longest any wait in a test may take.
pub const DEADLINE: Duration = Duration::from_secs(40);

/// One test's world: an apiserver, a client, its namespace and (maybe)
/// a running controller manager. Everything stops when dropped.
pub struct Env {
    pub client: Client,
    pub ns: String,
    pub url: String,
    stop_api: Option<oneshot::Sender<()>>,
    stop_manager: Option<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Held by a test that owns the Nodes ([`NODES`]); released last.
    nodes: Option<tokio::sync::MutexGuard<'static, ()>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(s) = self.stop_manager.take() {
            let _ = s.send(());
        }
        if let Some(s) = self.stop_api.take() {
            let _ = s.send(());
        }
    }
}

fn etcd() -> Vec<String> {
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
        .collect()
}

/// An apiserver and namespace `ns`, no controllers yet.
pub async fn env(ns: &str) -> Env {
    let etcd_servers = tokio::task::spawn_blocking(etcd).await.expect("etcd");
    let apiserver = Apiserver::new(Config {
        etcd_servers,
        cache: CacheConfig::default(),
    })
    .expect("apiserver");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(apiserver.serve(listener, async move {
        let _ = stopped.await;
    }));
    let url = format!("http://{addr}");
    // Tests assert on the apiserver's own answers: kube's client would
    // otherwise retry a 429 (an eviction a budget refuses) up to 15 times
    // with back-off growing past a minute, and the test looks hung.
    let mut config = kube::Config::new(url.parse().expect("url"));
    config.default_retry = false;
    let client = Client::try_from(config).expect("client");
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
    // The apiserver creates kube-node-lease (and the others) at start.
    eventually("default namespaces", || async {
        namespaces
            .get_opt("kube-node-lease")
            .await
            .ok()
            .flatten()
            .map(|_| ())
    })
    .await;
    Env {
        client,
        ns: ns.to_string(),
        url,
        stop_api: Some(stop),
        stop_manager: None,
        tasks: Vec::new(),
        nodes: None,
    }
}

/// [`env`] for a test that creates, deletes or counts Nodes: it waits for
/// [`NODES`] and holds it until dropped.
pub async fn env_with_nodes(ns: &str) -> Env {
    let guard = NODES.lock().await;
    let mut env = env(ns).await;
    env.nodes = Some(guard);
    env
}

impl Env {
    /// Starts the named controllers over this namespace.
    pub fn start(&mut self, controllers: &[&str], node: NodeLifecycleConfig) {
        let config = ballast_controllers::Config {
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
            namespace: Some(self.ns.clone()),
            node_lifecycle: node,
            ..ballast_controllers::Config::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let client = self.client.clone();
        tokio::spawn(async move {
            ControllerManager::run(client, config, async move {
                let _ = stopped.await;
            })
            .await
            .expect("controller manager");
        });
        self.stop_manager = Some(stop);
    }

    /// Keeps a task running for the test's life.
    pub fn spawn(&mut self, f: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(f));
    }

    /// Runs a fake kubelet: every new pod in the namespace is marked
    /// Running and Ready with a loopback IP as soon as it is seen (once: a
    /// later status the test writes stays); a pod being deleted gracefully
    /// is deleted for good, as a kubelet would.
    pub fn fake_kubelet(&mut self) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        self.spawn(async move {
            let mut next_ip = 1u32;
            let mut stream = watcher(pods.clone(), watcher::Config::default())
                .default_backoff()
                .boxed();
            use kube::runtime::WatchStreamExt;
            while let Some(Ok(ev)) = stream.next().await {
                let pod = match ev {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => p,
                    _ => continue,
                };
                if pod.metadata.deletion_timestamp.is_some() {
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        ..DeleteParams::default()
                    };
                    let _ = pods.delete(&pod.name_any(), &dp).await;
                    continue;
                }
                // A pod starts once: readiness a test takes away later
                // (a pod with an IP) stays taken, as the test set it.
                let started = pod.status.as_ref().is_some_and(|s| s.pod_ip.is_some());
                if is_ready(&pod) || started {
                    continue;
                }
                next_ip += 1;
                let ip = format!("127.42.{}.{}", next_ip / 250, next_ip % 250 + 1);
                let _ = set_ready(&pods, &pod.name_any(), true, Some(&ip)).await;
            }
        });
    }
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Writes a Running pod status with Ready = `ready` (and an IP).
pub async fn set_ready(
    pods: &Api<Pod>,
    name: &str,
    ready: bool,
    ip: Option<&str>,
) -> kube::Result<Pod> {
    let now = Timestamp::now().to_string();
    let status = if ready { "True" } else { "False" };
    let mut st = json!({"phase": "Running", "conditions": [
        {"type": "Ready", "status": status, "lastTransitionTime": now},
        {"type": "ContainersReady", "status": status, "lastTransitionTime": now}]});
    if let Some(ip) = ip {
        st["podIP"] = json!(ip);
        st["podIPs"] = json!([{"ip": ip}]);
    }
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": st})),
    )
    .await
}

/// Polls `f` every 50 ms until it returns `Some`, panicking with `what`
/// after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Deployment manifest: `replicas` pods of `image`, labels app=`name`.
pub fn deployment(name: &str, replicas: i32, image: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]}
            }
        }
    })
}

/// Fast node-lifecycle timings for tests that do not use it.
pub fn quick_nodes() -> NodeLifecycleConfig {
    NodeLifecycleConfig {
        monitor_period: Duration::from_millis(200),
        grace_period: Duration::from_secs(2),
        eviction_timeout: Duration::from_secs(4),
        ..NodeLifecycleConfig::default()
    }
}
