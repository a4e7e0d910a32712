//! The pod garbage collector against an in-process apiserver over a real
//! etcd: terminated pods beyond the threshold, orphans of nodes that never
//! existed, unscheduled terminating pods and terminating pods on
//! out-of-service nodes, observed through the API.
//!
//! Where a test must show that something was *not* deleted, it waits for
//! a witness instead of a time: an orphaned pod that the same pass (or a
//! later one) removes, so the pass that would have deleted the survivors
//! has certainly run.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use ballast_controllers::{Config, ControllerManager, PodGcConfig};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;

/// Runs only the pod garbage collector over `env`'s namespace, with a
/// quick period and quarantine.
fn start_podgc(env: &mut Env, threshold: usize) {
    let config = Config {
        controllers: ["podgc".to_string()].into(),
        namespace: Some(env.ns.clone()),
        podgc: PodGcConfig {
            terminated_pod_threshold: threshold,
            period: Duration::from_millis(100),
            quarantine: Duration::from_millis(300),
        },
        ..Config::default()
    };
    let client = env.client.clone();
    env.spawn(async move {
        ControllerManager::run(client, config, std::future::pending())
            .await
            .expect("controller manager");
    });
}

fn pod(name: &str, node: Option<&str>, finalizer: Option<&str>) -> Pod {
    let mut v = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}});
    if let Some(n) = node {
        v["spec"]["nodeName"] = json!(n);
    }
    if let Some(f) = finalizer {
        v["metadata"]["finalizers"] = json!([f]);
    }
    serde_json::from_value(v).expect("pod")
}

async fn create(pods: &Api<Pod>, name: &str, node: Option<&str>, phase: Option<&str>) -> Pod {
    let created = pods
        .create(&PostParams::default(), &pod(name, node, None))
        .await
        .expect("create pod");
    match phase {
        Some(p) => set_phase(pods, name, p).await,
        None => created,
    }
}

async fn set_phase(pods: &Api<Pod>, name: &str, phase: &str) -> Pod {
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": phase}})),
    )
    .await
    .expect("pod status")
}

fn phase_of(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

async fn names(pods: &Api<Pod>) -> BTreeSet<String> {
    pods.list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|p| p.name_any())
        .collect()
}

async fn gone(pods: &Api<Pod>, name: &str) {
    eventually(&format!("pod {name} deleted"), || async {
        matches!(pods.get_opt(name).await, Ok(None)).then_some(())
    })
    .await;
}

/// Creates (or recreates) node `name` with a Ready condition of `ready`
/// and, if given, a NoExecute taint `taint`.
async fn node(nodes: &Api<Node>, name: &str, ready: &str, taint: Option<&str>) {
    let _ = nodes
        .delete(
            name,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await;
    let mut v = json!({"metadata": {"name": name}});
    if let Some(t) = taint {
        v["spec"] = json!({"taints": [{"key": t, "effect": "NoExecute"}]});
    }
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(v).expect("node"),
        )
        .await
        .expect("create node");
    let now = Timestamp::now().to_string();
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": ready,
        "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("node status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_pods_beyond_the_threshold_go_oldest_first() {
    let mut env = env_with_nodes("podgc-threshold").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    // Running pods older than every terminated one: never counted.
    create(&pods, "running-a", None, Some("Running")).await;
    create(&pods, "running-b", None, Some("Running")).await;
    // Three old terminated pods whose names sort after the new ones, so
    // an order by name alone would pick the wrong three.
    create(&pods, "old-z", None, Some("Succeeded")).await;
    create(&pods, "old-y", None, Some("Failed")).await;
    let last_old = create(&pods, "old-x", None, Some("Succeeded")).await;
    let old_second = last_old
        .creation_timestamp()
        .expect("created")
        .0
        .as_second();
    // Creation timestamps have whole seconds: the new ones get a later one.
    eventually("the clock passes a second", || async {
        (Timestamp::now().as_second() > old_second).then_some(())
    })
    .await;
    create(&pods, "new-a", None, Some("Succeeded")).await;
    let new_b = create(&pods, "new-b", None, Some("Failed")).await;
    assert!(new_b.creation_timestamp().unwrap().0.as_second() > old_second);

    start_podgc(&mut env, 2);
    let survivors: BTreeSet<String> = ["new-a", "new-b", "running-a", "running-b"]
        .map(String::from)
        .into();
    eventually("the three oldest terminated pods deleted", || async {
        (names(&pods).await == survivors).then_some(())
    })
    .await;
    // Later passes keep the two: an orphan (marked Failed, then deleted,
    // by a later pass than the one above) must not tip the count over.
    create(&pods, "witness", Some("podgc-threshold-ghost"), None).await;
    gone(&pods, "witness").await;
    assert_eq!(names(&pods).await, survivors);
    for name in ["running-a", "running-b"] {
        assert_eq!(phase_of(&pods.get(name).await.unwrap()), "Running");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_threshold_keeps_every_terminated_pod() {
    let mut env = env_with_nodes("podgc-off").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    for (name, phase) in [("s1", "Succeeded"), ("s2", "Succeeded"), ("f1", "Failed")] {
        create(&pods, name, None, Some(phase)).await;
    }
    // Created before the controller starts, so its first pass sees all:
    // when the orphan is gone, the terminated step has run over them.
    create(&pods, "witness", Some("podgc-off-ghost"), None).await;
    start_podgc(&mut env, 0);
    gone(&pods, "witness").await;
    let left: BTreeSet<String> = ["f1", "s1", "s2"].map(String::from).into();
    assert_eq!(names(&pods).await, left);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_node_that_never_existed_are_failed_then_deleted() {
    let mut env = env_with_nodes("podgc-orphans").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let nodes: Api<Node> = Api::all(env.client.clone());
    let (real, ghost) = ("podgc-orphans-real", "podgc-orphans-never-existed");
    node(&nodes, real, "True", None).await;
    create(&pods, "on-ghost", Some(ghost), Some("Running")).await;
    create(&pods, "on-real", Some(real), Some("Running")).await;
    // Every version of the orphan, as a watcher sees them.
    let seen: Arc<Mutex<Vec<Pod>>> = Arc::default();
    let record = seen.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let watch_api = pods.clone();
    env.spawn(async move {
        let mut ready = Some(ready_tx);
        let mut stream = watcher(watch_api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))
                    if p.name_any() == "on-ghost" =>
                {
                    record.lock().unwrap().push(p)
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                _ => {}
            }
        }
    });
    ready_rx.await.expect("watch started");
    start_podgc(&mut env, 12500);
    gone(&pods, "on-ghost").await;
    let failed = eventually("the orphan seen Failed with DisruptionTarget", || async {
        seen.lock()
            .unwrap()
            .iter()
            .find(|p| phase_of(p) == "Failed")
            .cloned()
    })
    .await;
    let condition = failed
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionTarget"))
        .cloned()
        .expect("DisruptionTarget condition");
    assert_eq!(condition.status, "True");
    assert_eq!(condition.reason.as_deref(), Some("DeletionByPodGC"));
    assert_eq!(
        condition.message.as_deref(),
        Some("PodGC: node no longer exists")
    );
    // The pod on a node that exists was in the same passes.
    let on_real = pods.get("on-real").await.expect("on-real kept");
    assert_eq!(phase_of(&on_real), "Running");
    assert!(on_real.metadata.deletion_timestamp.is_none());
    let _ = nodes.delete(real, &DeleteParams::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unscheduled_terminating_pod_is_failed_so_its_finalizer_can_go() {
    let mut env = env_with_nodes("podgc-unscheduled").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let nodes: Api<Node> = Api::all(env.client.clone());
    let real = "podgc-unscheduled-node";
    node(&nodes, real, "True", None).await;
    const HOLD: &str = "ballast.test/hold";
    let pp = PostParams::default();
    pods.create(&pp, &pod("held", None, Some(HOLD)))
        .await
        .expect("held");
    pods.create(&pp, &pod("bound-held", Some(real), Some(HOLD)))
        .await
        .expect("bound-held");
    set_phase(&pods, "bound-held", "Running").await;
    for name in ["held", "bound-held"] {
        pods.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    let held = pods.get("held").await.expect("kept by its finalizer");
    assert!(held.metadata.deletion_timestamp.is_some());
    // The finalizer's holder lets go once the pod is terminal, as the Job
    // controller does with its tracking finalizer.
    let holder = pods.clone();
    env.spawn(async move {
        loop {
            if let Ok(Some(p)) = holder.get_opt("held").await {
                if phase_of(&p) == "Failed" {
                    let patch = json!({"metadata": {"finalizers": null,
                        "resourceVersion": p.resource_version()}});
                    let _ = holder
                        .patch("held", &PatchParams::default(), &Patch::Merge(&patch))
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    start_podgc(&mut env, 12500);
    gone(&pods, "held").await;
    // A terminating pod bound to a live node is its kubelet's business.
    let bound = pods.get("bound-held").await.expect("bound-held kept");
    assert_eq!(phase_of(&bound), "Running");
    assert_eq!(bound.metadata.deletion_grace_period_seconds, Some(30));
    let release = json!({"metadata": {"finalizers": null}});
    pods.patch(
        "bound-held",
        &PatchParams::default(),
        &Patch::Merge(&release),
    )
    .await
    .expect("release");
    let _ = nodes.delete(real, &DeleteParams::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_pods_on_an_out_of_service_node_are_force_deleted() {
    let mut env = env_with_nodes("podgc-oos").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let nodes: Api<Node> = Api::all(env.client.clone());
    let taint = ballast_controllers::podgc::OUT_OF_SERVICE_TAINT;
    let (down, up) = ("podgc-oos-down", "podgc-oos-up");
    node(&nodes, down, "False", Some(taint)).await;
    // Tainted but Ready: its kubelet still finishes its pods.
    node(&nodes, up, "True", Some(taint)).await;
    create(&pods, "stranded", Some(down), Some("Running")).await;
    create(&pods, "safe", Some(up), Some("Running")).await;
    for name in ["stranded", "safe"] {
        let p = pods
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete")
            .left()
            .expect("kept for its grace period");
        assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
    }
    start_podgc(&mut env, 12500);
    gone(&pods, "stranded").await;
    let safe = pods.get("safe").await.expect("safe kept");
    assert_eq!(safe.metadata.deletion_grace_period_seconds, Some(30));
    assert_eq!(phase_of(&safe), "Running");
    for n in [down, up] {
        let _ = nodes.delete(n, &DeleteParams::default()).await;
    }
}
