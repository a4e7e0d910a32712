//! The scheduler against an in-process apiserver over the shared real etcd:
//! Nodes and Pods are created directly, the scheduler binds them, and the
//! tests read back `spec.nodeName`, the PodScheduled condition and events.
//!
//! Nodes are cluster-scoped, so the tests run one at a time (a lock), each
//! deleting every node first and using its own namespace and scheduler
//! name — a pod left pending by another test is never this test's business.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use ballast_apiserver::{Apiserver, CacheConfig, Config};
use ballast_controllers::scheduler::{parse_milli, Scheduler, SchedulerConfig, SchedulerStats};
use ballast_controllers::ControllerManager;
use ballast_tests::{Cluster, ClusterKind};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::{oneshot, MutexGuard};

/// How long any wait in a test may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// An apiserver, a client, and a running scheduler; stops when dropped.
struct Env {
    client: Client,
    ns: String,
    scheduler_name: String,
    stats: Option<std::sync::Arc<SchedulerStats>>,
    stops: Vec<oneshot::Sender<()>>,
    _serial: MutexGuard<'static, ()>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

/// Starts an apiserver, clears the nodes and pods, creates namespace `test`.
async fn env(test: &str) -> Env {
    let serial = crate::common::NODES.lock().await;
    let etcd = tokio::task::spawn_blocking(|| {
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
    let apiserver = Apiserver::new(Config {
        etcd_servers: etcd,
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
    let url = format!("http://{addr}").parse().expect("url");
    let client = Client::try_from(kube::Config::new(url)).expect("client");
    let ns = format!("sched-{test}-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let created = eventually(|| {
        let namespaces = namespaces.clone();
        let ns = ns.clone();
        async move {
            let body: Namespace =
                serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
            match namespaces.create(&PostParams::default(), &body).await {
                Ok(_) => Some(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Some(()),
                Err(_) => None,
            }
        }
    })
    .await;
    assert!(created.is_some(), "namespace {ns} not created");
    let nodes: Api<Node> = Api::all(client.clone());
    for n in nodes
        .list(&ListParams::default())
        .await
        .expect("nodes")
        .items
    {
        let name = n.metadata.name.expect("a name");
        nodes
            .delete(&name, &DeleteParams::default())
            .await
            .expect("delete node");
    }
    // Earlier tests' pods stay bound to node names a later test reuses
    // (r1, r2): they would take that test's slots, so they go too.
    let pods: Api<Pod> = Api::all(client.clone());
    for p in pods.list(&ListParams::default()).await.expect("pods").items {
        let (Some(ns), Some(name)) = (p.metadata.namespace, p.metadata.name) else {
            continue;
        };
        match Api::<Pod>::namespaced(client.clone(), &ns)
            .delete(&name, &DeleteParams::default().grace_period(0))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => panic!("delete pod {ns}/{name}: {e}"),
        }
    }
    Env {
        client,
        ns,
        scheduler_name: format!("sched-{test}"),
        stats: None,
        stops: vec![stop],
        _serial: serial,
    }
}

/// Polls `f` until it returns `Some`, for at most [`DEADLINE`].
async fn eventually<T, F, Fut>(mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

impl Env {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Starts the scheduler with this test's scheduler name.
    fn start_scheduler(&mut self) {
        let config = SchedulerConfig {
            scheduler_name: self.scheduler_name.clone(),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(1),
            ..SchedulerConfig::default()
        };
        let scheduler = Scheduler::new(self.client.clone(), config);
        self.stats = Some(scheduler.stats());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(scheduler.run(async move {
            let _ = stopped.await;
        }));
        self.stops.push(stop);
    }

    /// Starts the ReplicaSet controller over this test's namespace.
    fn start_replicaset_controller(&mut self) {
        let config = ballast_controllers::Config {
            controllers: ["replicaset".to_string()].into(),
            namespace: Some(self.ns.clone()),
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
        self.stops.push(stop);
    }

    /// Creates a Ready node with this allocatable; `extra` is merged into
    /// the Node (labels, taints, unschedulable, conditions).
    async fn node(&self, name: &str, cpu: &str, memory: &str, pods: &str, extra: Value) {
        let mut v = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {
                "capacity": {"cpu": cpu, "memory": memory, "pods": pods},
                "allocatable": {"cpu": cpu, "memory": memory, "pods": pods},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]
            }
        });
        merge(&mut v, &extra);
        let node: Node = serde_json::from_value(v.clone()).expect("a node");
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("create node");
        // Status is the kubelet's to write, through the status subresource.
        nodes
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": v["status"]})),
            )
            .await
            .expect("node status");
    }

    /// Creates pod `name` requesting `cpu`/`memory`; `extra` is merged in.
    async fn pod(&self, name: &str, cpu: &str, memory: &str, extra: Value) {
        let mut v = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "schedulerName": self.scheduler_name,
                "containers": [{"name": "c", "image": "busybox",
                    "resources": {"requests": {"cpu": cpu, "memory": memory}}}]
            }
        });
        merge(&mut v, &extra);
        let pod: Pod = serde_json::from_value(v).expect("a pod");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }

    /// The node `pod` is bound to, waiting for the binding.
    async fn bound(&self, pod: &str) -> String {
        let api = self.pods();
        eventually(|| {
            let api = api.clone();
            async move { node_name(&api.get(pod).await.ok()?) }
        })
        .await
        .unwrap_or_else(|| panic!("{pod} not bound in {DEADLINE:?}"))
    }

    /// Waits for `pod`'s PodScheduled condition to be False/Unschedulable;
    /// returns its message.
    async fn unschedulable(&self, pod: &str) -> String {
        let api = self.pods();
        eventually(|| {
            let api = api.clone();
            async move {
                let p = api.get(pod).await.ok()?;
                let c = condition(&p, "PodScheduled")?;
                (c.0 == "False" && c.1 == "Unschedulable").then_some(c.2)
            }
        })
        .await
        .unwrap_or_else(|| panic!("{pod} not marked unschedulable in {DEADLINE:?}"))
    }

    /// Reasons and messages of the events about `pod`.
    async fn events(&self, pod: &str) -> Vec<(String, String, String)> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let list = events.list(&ListParams::default()).await.expect("events");
        list.items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(pod))
            .map(|e| {
                (
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default(),
                    e.source.and_then(|s| s.component).unwrap_or_default(),
                )
            })
            .collect()
    }

    async fn wait_event(&self, pod: &str, reason: &str, message: &str) {
        let found = eventually(|| async {
            self.events(pod)
                .await
                .into_iter()
                .any(|(r, m, c)| r == reason && m == message && c == self.scheduler_name)
                .then_some(())
        })
        .await;
        assert!(
            found.is_some(),
            "no {reason} event {message:?} for {pod}: {:?}",
            self.events(pod).await
        );
    }
}

fn merge(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

fn node_name(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.node_name.clone().filter(|n| !n.is_empty())
}

fn condition(p: &Pod, kind: &str) -> Option<(String, String, String)> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref()?.phase.as_deref()
}

fn owned_by(uid: &str) -> Value {
    json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "web", "uid": uid, "controller": true}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_one_owner_spread_over_nodes() {
    let mut env = env("spread").await;
    for n in ["s1", "s2", "s3"] {
        env.node(n, "4", "8Gi", "110", json!({})).await;
    }
    env.start_scheduler();
    for i in 0..9 {
        env.pod(&format!("web-{i}"), "100m", "64Mi", owned_by("rs-spread"))
            .await;
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..9 {
        *per_node
            .entry(env.bound(&format!("web-{i}")).await)
            .or_default() += 1;
    }
    assert_eq!(
        per_node,
        [("s1", 3), ("s2", 3), ("s3", 3)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        "one owner's pods spread evenly"
    );
    let p = env.pods().get("web-0").await.expect("pod");
    assert_eq!(
        condition(&p, "PodScheduled").map(|c| c.0).as_deref(),
        Some("True")
    );
    let node = node_name(&p).expect("bound");
    env.wait_event(
        "web-0",
        "Scheduled",
        &format!("Successfully assigned {}/web-0 to {node}", env.ns),
    )
    .await;
    assert_eq!(env.stats.as_ref().expect("stats").bound(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_respected_and_unschedulable_pods_wait_for_room() {
    let mut env = env("fit").await;
    env.node("f1", "1", "2Gi", "110", json!({})).await;
    env.node("f2", "1", "2Gi", "110", json!({})).await;
    env.start_scheduler();
    env.pod("a", "800m", "100Mi", json!({})).await;
    env.pod("b", "800m", "100Mi", json!({})).await;
    let (na, nb) = (env.bound("a").await, env.bound("b").await);
    assert_ne!(na, nb, "800m + 800m do not fit one 1-cpu node");
    // Fits nowhere: cpu on both nodes.
    env.pod("c", "800m", "100Mi", json!({})).await;
    let msg = env.unschedulable("c").await;
    assert_eq!(msg, "0/2 nodes are available: 2 Insufficient cpu.");
    env.wait_event("c", "FailedScheduling", &msg).await;
    // Memory too, counted per resource.
    env.pod("d", "800m", "3Gi", json!({})).await;
    assert_eq!(
        env.unschedulable("d").await,
        "0/2 nodes are available: 2 Insufficient cpu, 2 Insufficient memory."
    );
    let c = env.pods().get("c").await.expect("c");
    assert_eq!(node_name(&c), None);
    // A node with room appears: c is scheduled there.
    env.node("f3", "2", "2Gi", "110", json!({})).await;
    assert_eq!(env.bound("c").await, "f3");
    // d still fits nowhere (3Gi); its message now counts three nodes.
    let api = env.pods();
    let three = eventually(|| {
        let api = api.clone();
        async move {
            let p = api.get("d").await.ok()?;
            let c = condition(&p, "PodScheduled")?;
            c.2.starts_with("0/3").then_some(c.2)
        }
    })
    .await
    .expect("d re-evaluated with three nodes");
    // f1, f2: cpu and memory; f3 (1.2 cpu free, 1.9Gi free): memory.
    assert_eq!(
        three,
        "0/3 nodes are available: 2 Insufficient cpu, 3 Insufficient memory."
    );
    // Deleting a pod frees its node: d still does not fit (memory), but a
    // pod that fits only where `a` was now binds.
    env.pods()
        .delete("a", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete a");
    env.pod(
        "e",
        "900m",
        "100Mi",
        json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": na}}}),
    )
    .await;
    assert_eq!(env.bound("e").await, na);
}

/// Issue 21: pods found unschedulable are retried when capacity frees —
/// a terminating pod finally deleted, a node added — well within the
/// periodic flush (60 s, beyond this file's 30 s deadline), so only the
/// cluster events can bind them here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_pods_are_retried_when_room_frees() {
    let mut env = env("retry").await;
    env.node("r1", "4", "4Gi", "2", json!({})).await;
    env.node("r2", "4", "4Gi", "2", json!({})).await;
    env.start_scheduler();
    for i in 0..4 {
        env.pod(&format!("full-{i}"), "10m", "1Mi", json!({})).await;
    }
    let mut placed = Vec::new();
    for i in 0..4 {
        placed.push(env.bound(&format!("full-{i}")).await);
    }
    for name in ["wait-0", "wait-1", "wait-2"] {
        env.pod(name, "10m", "1Mi", json!({})).await;
    }
    for name in ["wait-0", "wait-1", "wait-2"] {
        assert_eq!(
            env.unschedulable(name).await,
            "0/2 nodes are available: 2 Too many pods."
        );
    }
    env.wait_event(
        "wait-0",
        "FailedScheduling",
        "0/2 nodes are available: 2 Too many pods.",
    )
    .await;
    // A graceful delete leaves the pod terminating on its node (no kubelet
    // here to finish it): it still holds its slot, as in Kubernetes.
    env.pods()
        .delete("full-0", &DeleteParams::default().grace_period(30))
        .await
        .expect("graceful delete");
    let still = env.pods().get("full-0").await.expect("terminating pod");
    assert!(still.metadata.deletion_timestamp.is_some());
    // Gone for good: exactly one waiting pod takes the freed slot.
    env.pods()
        .delete("full-0", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete");
    let api = env.pods();
    let one = eventually(|| {
        let api = api.clone();
        async move {
            let mut bound = Vec::new();
            for name in ["wait-0", "wait-1", "wait-2"] {
                if let Some(n) = node_name(&api.get(name).await.ok()?) {
                    bound.push((name, n));
                }
            }
            (!bound.is_empty()).then_some(bound)
        }
    })
    .await
    .expect("a waiting pod bound after a pod was deleted");
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0].1, placed[0], "the freed node");
    // A node added: the other two follow.
    env.node("r3", "4", "4Gi", "2", json!({})).await;
    for name in ["wait-0", "wait-1", "wait-2"] {
        if name != one[0].0 {
            assert_eq!(env.bound(name).await, "r3");
        }
    }
    let stats = env.stats.as_ref().expect("stats");
    assert_eq!(stats.bound(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_count_and_init_containers_count() {
    let mut env = env("count").await;
    env.node("c1", "2", "2Gi", "2", json!({})).await;
    env.start_scheduler();
    // An init container of 1500m makes the pod need 1500m although its app
    // asks for 100m.
    env.pod(
        "init",
        "100m",
        "10Mi",
        json!({"spec": {"initContainers": [{"name": "i", "image": "busybox",
            "resources": {"requests": {"cpu": "1500m"}}}]}}),
    )
    .await;
    assert_eq!(env.bound("init").await, "c1");
    env.pod("small", "600m", "10Mi", json!({})).await;
    assert_eq!(
        env.unschedulable("small").await,
        "0/1 nodes are available: 1 Insufficient cpu."
    );
    env.pod("tiny", "100m", "10Mi", json!({})).await;
    assert_eq!(env.bound("tiny").await, "c1");
    env.pod("third", "0", "0", json!({})).await;
    assert_eq!(
        env.unschedulable("third").await,
        "0/1 nodes are available: 1 Too many pods."
    );
    // A request that is not a quantity is reported, not scheduled.
    env.pod("bad", "lots", "10Mi", json!({})).await;
    let msg = env.unschedulable("bad").await;
    assert!(
        msg.starts_with("invalid request cpu: quantities must match"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selector_and_required_node_affinity() {
    let mut env = env("affinity").await;
    env.node(
        "a1",
        "4",
        "8Gi",
        "110",
        json!({"metadata": {"labels": {"disk": "ssd", "gpus": "2"}}}),
    )
    .await;
    env.node(
        "a2",
        "4",
        "8Gi",
        "110",
        json!({"metadata": {"labels": {"disk": "hdd"}}}),
    )
    .await;
    env.node(
        "a3",
        "1",
        "8Gi",
        "110",
        json!({"metadata": {"labels": {"disk": "hdd"}}}),
    )
    .await;
    env.start_scheduler();
    env.pod(
        "sel",
        "100m",
        "10Mi",
        json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
    )
    .await;
    assert_eq!(env.bound("sel").await, "a1");
    let required = |terms: Value| {
        json!({"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}})
    };
    env.pod(
        "gt",
        "100m",
        "10Mi",
        required(
            json!([{"matchExpressions": [{"key": "gpus", "operator": "Gt", "values": ["1"]}]}]),
        ),
    )
    .await;
    assert_eq!(env.bound("gt").await, "a1");
    env.pod(
        "notin",
        "100m",
        "10Mi",
        required(json!([{"matchExpressions": [
            {"key": "disk", "operator": "NotIn", "values": ["ssd"]},
            {"key": "gpus", "operator": "DoesNotExist"}]},
        ])),
    )
    .await;
    assert!(["a2", "a3"].contains(&env.bound("notin").await.as_str()));
    env.pod(
        "byname",
        "100m",
        "10Mi",
        required(json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a3"]}]}])),
    )
    .await;
    assert_eq!(env.bound("byname").await, "a3");
    // kube-scheduler's message when one node fails the selector and two
    // lack cpu.
    env.pod(
        "big",
        "2",
        "10Mi",
        json!({"spec": {"nodeSelector": {"disk": "hdd"}}}),
    )
    .await;
    assert_eq!(env.bound("big").await, "a2");
    env.pod(
        "bigger",
        "3",
        "10Mi",
        json!({"spec": {"nodeSelector": {"disk": "hdd"}}}),
    )
    .await;
    assert_eq!(
        env.unschedulable("bigger").await,
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu."
    );
    env.pod(
        "nowhere",
        "100m",
        "10Mi",
        json!({"spec": {"nodeSelector": {"disk": "tape"}}}),
    )
    .await;
    assert_eq!(
        env.unschedulable("nowhere").await,
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taints_and_tolerations() {
    let mut env = env("taints").await;
    env.node(
        "t1",
        "4",
        "8Gi",
        "110",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
    )
    .await;
    env.node(
        "t2",
        "4",
        "8Gi",
        "110",
        json!({"spec": {"taints": [{"key": "maintenance", "effect": "NoExecute"}]}}),
    )
    .await;
    env.node(
        "t3",
        "4",
        "8Gi",
        "110",
        json!({"spec": {"taints": [{"key": "spot", "effect": "PreferNoSchedule"}]}}),
    )
    .await;
    env.start_scheduler();
    // PreferNoSchedule only scores: an untolerating pod still lands on t3.
    for i in 0..3 {
        env.pod(&format!("plain-{i}"), "100m", "10Mi", json!({}))
            .await;
        assert_eq!(env.bound(&format!("plain-{i}")).await, "t3");
    }
    env.pod("gpu", "100m", "10Mi", json!({"spec": {
        "nodeSelector": {"kubernetes.io/hostname": "t1"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}})).await;
    assert_eq!(env.bound("gpu").await, "t1");
    env.pod(
        "maint",
        "100m",
        "10Mi",
        json!({"spec": {
        "nodeSelector": {"kubernetes.io/hostname": "t2"},
        "tolerations": [{"key": "maintenance", "operator": "Exists"}]}}),
    )
    .await;
    assert_eq!(env.bound("maint").await, "t2");
    // With t3 cordoned-by-selector, the taints explain the failure.
    env.pod("wrong", "100m", "10Mi", json!({"spec": {
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["t1", "t2"]}]}]}}},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "cpu"}]}})).await;
    assert_eq!(
        env.unschedulable("wrong").await,
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
         1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) had untolerated taint {maintenance: }."
    );
    // Removing the taint lets it in.
    let nodes: Api<Node> = Api::all(env.client.clone());
    nodes
        .patch(
            "t1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": null}})),
        )
        .await
        .expect("untaint");
    assert_eq!(env.bound("wrong").await, "t1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ports_conflict() {
    let mut env = env("ports").await;
    env.node("p1", "4", "8Gi", "110", json!({})).await;
    env.node("p2", "4", "8Gi", "110", json!({})).await;
    env.start_scheduler();
    let port = |p: i32| {
        json!({"spec": {"containers": [{"name": "c", "image": "busybox",
            "ports": [{"containerPort": 80, "hostPort": p}]}]}})
    };
    env.pod("h1", "100m", "10Mi", port(8080)).await;
    env.pod("h2", "100m", "10Mi", port(8080)).await;
    let (n1, n2) = (env.bound("h1").await, env.bound("h2").await);
    assert_ne!(n1, n2, "two pods on one hostPort need two nodes");
    env.pod("h3", "100m", "10Mi", port(8080)).await;
    assert_eq!(
        env.unschedulable("h3").await,
        "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports."
    );
    // Another port is free anywhere.
    env.pod("h4", "100m", "10Mi", port(9090)).await;
    env.bound("h4").await;
    // Freeing the port on one node lets h3 in there.
    env.pods()
        .delete("h1", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete h1");
    assert_eq!(env.bound("h3").await, n1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_and_unschedulable_nodes_are_skipped() {
    let mut env = env("ready").await;
    env.node("r1", "4", "8Gi", "110", json!({})).await;
    env.node("r2", "4", "8Gi", "110",
        json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]}})).await;
    env.node(
        "r3",
        "4",
        "8Gi",
        "110",
        json!({"spec": {"unschedulable": true}}),
    )
    .await;
    env.start_scheduler();
    for i in 0..6 {
        env.pod(&format!("p{i}"), "100m", "10Mi", json!({})).await;
    }
    for i in 0..6 {
        assert_eq!(env.bound(&format!("p{i}")).await, "r1");
    }
    // Only r1 has room for neither: the message names all three reasons.
    env.pod("huge", "5", "10Mi", json!({})).await;
    assert_eq!(
        env.unschedulable("huge").await,
        "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 1 node(s) were unschedulable."
    );
    // A pod tolerating the cordon may use r3.
    env.pod("tolerant", "100m", "10Mi", json!({"spec": {
        "nodeSelector": {"kubernetes.io/hostname": "r3"},
        "tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}})).await;
    assert_eq!(env.bound("tolerant").await, "r3");
    // r2 turns Ready: pods pinned to it are scheduled.
    env.pod(
        "pinned",
        "100m",
        "10Mi",
        json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": "r2"}}}),
    )
    .await;
    env.unschedulable("pinned").await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    nodes
        .patch_status(
            "r2",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})),
        )
        .await
        .expect("ready");
    assert_eq!(env.bound("pinned").await, "r2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_schedulers_pods_are_left_alone() {
    let mut env = env("names").await;
    env.node("o1", "4", "8Gi", "110", json!({})).await;
    env.start_scheduler();
    env.pod(
        "theirs",
        "100m",
        "10Mi",
        json!({"spec": {"schedulerName": "someone-else"}}),
    )
    .await;
    env.pod("ours", "100m", "10Mi", json!({})).await;
    assert_eq!(env.bound("ours").await, "o1");
    let p = env.pods().get("theirs").await.expect("theirs");
    assert_eq!(node_name(&p), None);
    assert_eq!(condition(&p, "PodScheduled"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_pods_bound_without_overcommitting() {
    let mut env = env("many").await;
    const NODES: usize = 10;
    const PODS: usize = 320;
    for i in 0..NODES {
        // 3.5 cpu each: 35 cpu for 32 cpu of pods, so capacity matters.
        env.node(&format!("m{i}"), "3500m", "16Gi", "110", json!({}))
            .await;
    }
    // All pods exist before the scheduler starts, so the time measured is
    // scheduling and binding only.
    let created = futures::stream::iter(0..PODS)
        .map(|i| {
            let env = &env;
            async move {
                env.pod(&format!("m-{i}"), "100m", "64Mi", owned_by("rs-many"))
                    .await;
            }
        })
        .buffer_unordered(32)
        .count()
        .await;
    assert_eq!(created, PODS);
    let started = Instant::now();
    env.start_scheduler();
    let stats = env.stats.clone().expect("stats");
    let done = eventually(|| async { (stats.bound() as usize >= PODS).then_some(()) }).await;
    let elapsed = started.elapsed();
    assert!(done.is_some(), "bound {} of {PODS}", stats.bound());
    println!(
        "scheduled {PODS} pods over {NODES} nodes in {:.3} s: {:.0} pods/s",
        elapsed.as_secs_f64(),
        PODS as f64 / elapsed.as_secs_f64()
    );
    // What the apiserver says: every pod bound, no node over capacity.
    let api = env.pods();
    let all = eventually(|| {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .all(|p| node_name(p).is_some())
                .then_some(list.items)
        }
    })
    .await
    .expect("all bound in the apiserver");
    assert_eq!(all.len(), PODS);
    let mut cpu: HashMap<String, i64> = HashMap::new();
    let mut count: HashMap<String, usize> = HashMap::new();
    for p in &all {
        let node = node_name(p).expect("bound");
        let req = p.spec.as_ref().expect("spec").containers[0]
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("cpu"))
            .map(|q| parse_milli(&q.0).expect("a quantity"))
            .expect("a cpu request");
        *cpu.entry(node.clone()).or_default() += req;
        *count.entry(node).or_default() += 1;
    }
    assert_eq!(cpu.len(), NODES, "every node used");
    for (node, used) in &cpu {
        assert!(*used <= 3500, "{node} over capacity: {used}m");
    }
    // One owner: spread evenly.
    for (node, n) in &count {
        assert_eq!(*n, PODS / NODES, "{node}");
    }
    assert_eq!(stats.bind_failures(), 0);
}

/// Issue 21: a ReplicaSet of 4 whose pods repel each other per host, on 3
/// nodes: three run, one per node; the fourth stays Pending with
/// kube-scheduler's message, and goes to a fourth node when one appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_hostname_anti_affinity_leave_one_pending() {
    let mut env = env("anti").await;
    for n in ["h1", "h2", "h3"] {
        env.node(n, "4", "8Gi", "110", json!({})).await;
    }
    env.start_scheduler();
    env.start_replicaset_controller();
    let rs: ReplicaSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "schedulerName": env.scheduler_name,
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "web"}},
                         "topologyKey": "kubernetes.io/hostname"}]}},
                    "containers": [{"name": "c", "image": "busybox",
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]
                }
            }
        }
    }))
    .expect("a replicaset");
    Api::<ReplicaSet>::namespaced(env.client.clone(), &env.ns)
        .create(&PostParams::default(), &rs)
        .await
        .expect("create replicaset");
    // The kubelet's part, faked: a bound pod is started.
    let api = env.pods();
    let (mut running, pending) = eventually(|| {
        let api = api.clone();
        async move {
            let pods = api.list(&ListParams::default()).await.ok()?.items;
            let (mut running, mut pending) = (Vec::new(), Vec::new());
            for p in &pods {
                let name = p.metadata.name.clone()?;
                match node_name(p) {
                    Some(node) if phase(p) == Some("Running") => running.push(node),
                    Some(_) => {
                        let started = json!({"status": {"phase": "Running"}});
                        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(started))
                            .await
                            .ok()?;
                    }
                    None => {
                        let reason = condition(p, "PodScheduled").map(|c| c.1);
                        if reason.as_deref() == Some("Unschedulable") {
                            pending.push(p.clone());
                        }
                    }
                }
            }
            (pods.len() == 4 && running.len() == 3 && pending.len() == 1)
                .then_some((running, pending))
        }
    })
    .await
    .expect("three replicas running and one pending");
    running.sort();
    assert_eq!(running, ["h1", "h2", "h3"], "one replica per node");
    let waiting = &pending[0];
    assert_eq!(phase(waiting), Some("Pending"));
    let message = "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules.";
    assert_eq!(
        condition(waiting, "PodScheduled"),
        Some((
            "False".to_string(),
            "Unschedulable".to_string(),
            message.to_string()
        ))
    );
    let name = waiting.metadata.name.clone().expect("a name");
    env.wait_event(&name, "FailedScheduling", message).await;
    env.node("h4", "4", "8Gi", "110", json!({})).await;
    assert_eq!(env.bound(&name).await, "h4");
}

/// Pods with a zone spread constraint (maxSkew 1, DoNotSchedule) over
/// labelled nodes: zones take turns, a node without the zone label is
/// never used, and a pod that would skew the zones waits with
/// kube-scheduler's message until a pod of the fuller zone goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_spread_over_zones_with_max_skew() {
    let mut env = env("zones").await;
    let zone = |z: &str| json!({"metadata": {"labels": {"topology.kubernetes.io/zone": z}}});
    env.node("za1", "4", "8Gi", "110", zone("a")).await;
    env.node("za2", "4", "8Gi", "110", zone("a")).await;
    // Zone b holds two pods at most.
    env.node("zb1", "4", "8Gi", "2", zone("b")).await;
    env.node("zx", "4", "8Gi", "110", json!({})).await;
    env.start_scheduler();
    let spread = json!({"metadata": {"labels": {"app": "sp"}}, "spec": {"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
         "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "sp"}}}]}});
    let zone_of = |node: &str| match node {
        "za1" | "za2" => "a",
        "zb1" => "b",
        other => panic!("{other} has no zone"),
    };
    let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
    for i in 0..4 {
        let name = format!("sp-{i}");
        env.pod(&name, "100m", "64Mi", spread.clone()).await;
        *per_zone
            .entry(zone_of(&env.bound(&name).await))
            .or_default() += 1;
    }
    assert_eq!(per_zone, BTreeMap::from([("a", 2), ("b", 2)]));
    // Zone b is full: a fifth pod goes to zone a (skew 3 − 2 = 1).
    env.pod("sp-4", "100m", "64Mi", spread.clone()).await;
    assert_eq!(zone_of(&env.bound("sp-4").await), "a");
    // A sixth would make the skew 2: no node fits.
    env.pod("sp-5", "100m", "64Mi", spread.clone()).await;
    let message = "0/4 nodes are available: 1 Too many pods, \
        1 node(s) didn't match pod topology spread constraints (missing required label), \
        2 node(s) didn't match pod topology spread constraints.";
    assert_eq!(env.unschedulable("sp-5").await, message);
    env.wait_event("sp-5", "FailedScheduling", message).await;
    // A pod of zone a goes: the sixth fits there.
    env.pods()
        .delete("sp-4", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete sp-4");
    assert_eq!(zone_of(&env.bound("sp-5").await), "a");
}

/// The benchmark's shape (3,000 pods over 100 nodes), with and without
/// events; slow, so run on demand: `cargo test --release
/// --workspace --test controllers -- --ignored --nocapture scheduler::`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_3000_pods_over_100_nodes() {
    let in_flight: usize = std::env::var("SCHED_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SchedulerConfig::default().max_binds_in_flight);
    for events in [false, true] {
        let mut env = env(&format!("bench-{events}")).await;
        const NODES: usize = 100;
        const PODS: usize = 3000;
        for i in 0..NODES {
            env.node(&format!("b{i}"), "32", "64Gi", "110", json!({}))
                .await;
        }
        let created = futures::stream::iter(0..PODS)
            .map(|i| {
                let env = &env;
                async move {
                    env.pod(&format!("b-{i}"), "100m", "64Mi", owned_by("rs-bench"))
                        .await;
                }
            })
            .buffer_unordered(32)
            .count()
            .await;
        assert_eq!(created, PODS);
        let config = SchedulerConfig {
            scheduler_name: env.scheduler_name.clone(),
            events,
            max_binds_in_flight: in_flight,
            ..SchedulerConfig::default()
        };
        let scheduler = Scheduler::new(env.client.clone(), config);
        let stats = scheduler.stats();
        let started = Instant::now();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(scheduler.run(async move {
            let _ = stopped.await;
        }));
        env.stops.push(stop);
        let first = std::cell::Cell::new(None);
        let done = eventually(|| async {
            if first.get().is_none() && stats.bound() > 0 {
                first.set(Some(started.elapsed()));
            }
            (stats.bound() as usize >= PODS).then_some(())
        })
        .await;
        let elapsed = started.elapsed();
        assert!(done.is_some(), "bound {} of {PODS}", stats.bound());
        let first = first.get().unwrap_or_default();
        println!(
            "events={events} in flight {in_flight}: {PODS} pods over {NODES} nodes in {:.3} s ({:.0} pods/s); \
             first bind after {:.3} s, then {:.0} pods/s",
            elapsed.as_secs_f64(),
            PODS as f64 / elapsed.as_secs_f64(),
            first.as_secs_f64(),
            PODS as f64 / (elapsed - first).as_secs_f64()
        );
        // Clean up so the pods do not linger in etcd for the next round.
        env.pods()
            .delete_collection(
                &DeleteParams::default().grace_period(0),
                &ListParams::default(),
            )
            .await
            .expect("delete pods");
    }
}
