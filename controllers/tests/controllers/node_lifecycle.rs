//! Node failure safety (issue 21) against an in-process apiserver over the
//! shared real etcd: when every node goes silent at once — what an
//! apiserver-side outage looks like — nothing is evicted; when only some
//! do, theirs are, one node at a time.
//!
//! Nodes are cluster-scoped and the node lifecycle controller watches them
//! all, so this binary has one test and deletes every node first.

use std::time::Duration;

use crate::common::{env_with_nodes, eventually, is_ready, set_ready};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

fn ready_status(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

/// Posts a fresh Ready heartbeat and renews the node's lease.
async fn heartbeat(nodes: &Api<Node>, leases: &Api<Lease>, name: &str) {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady",
         "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    let _ = nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await;
    let _ = leases
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"renewTime": now}})),
        )
        .await;
}

/// Whether the pod was evicted (deleted, or being deleted gracefully).
async fn evicted(pods: &Api<Pod>, name: &str) -> bool {
    match pods.get_opt(name).await {
        Ok(None) => true,
        Ok(Some(p)) => p.metadata.deletion_timestamp.is_some(),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_nodes_silent_evicts_nothing_one_node_silent_is_evicted() {
    let mut env = env_with_nodes("nl-safety").await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kube-node-lease");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let pp = PostParams::default();
    for n in nodes
        .list(&ListParams::default())
        .await
        .expect("nodes")
        .items
    {
        let name = n.metadata.name.expect("name");
        let _ = nodes.delete(&name, &DeleteParams::default()).await;
    }
    let names = ["nl-a", "nl-b", "nl-c"];
    for n in names {
        let _ = leases.delete(n, &DeleteParams::default()).await;
        nodes
            .create(&pp, &from(json!({"metadata": {"name": n}})))
            .await
            .expect("node");
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        leases
            .create(
                &pp,
                &from(json!({"metadata": {"name": n},
                "spec": {"holderIdentity": n, "leaseDurationSeconds": 40, "renewTime": now}})),
            )
            .await
            .expect("lease");
        heartbeat(&nodes, &leases, n).await;
        let pod = json!({"metadata": {"name": format!("on-{n}")},
            "spec": {"nodeName": n, "containers": [{"name": "c", "image": "busybox"}]}});
        pods.create(&pp, &from(pod)).await.expect("pod");
        set_ready(&pods, &format!("on-{n}"), true, None)
            .await
            .expect("ready");
    }
    let cfg = ballast_controllers::NodeLifecycleConfig {
        monitor_period: Duration::from_millis(200),
        grace_period: Duration::from_secs(2),
        eviction_timeout: Duration::from_secs(2),
        ..ballast_controllers::NodeLifecycleConfig::default()
    };
    env.start(&["nodelifecycle"], cfg.clone());
    // Every kubelet goes silent at once (no heartbeat is ever sent again):
    // all three nodes go Unknown, their pods NotReady …
    for n in names {
        eventually("every node Unknown", || async {
            let node = nodes.get(n).await.ok()?;
            (ready_status(&node)? == "Unknown").then_some(())
        })
        .await;
    }
    for n in names {
        eventually("every pod NotReady", || async {
            let p = pods.get(&format!("on-{n}")).await.ok()?;
            (!is_ready(&p)).then_some(())
        })
        .await;
    }
    // … but none is evicted, however long past the eviction timeout.
    let watch_until = tokio::time::Instant::now() + cfg.eviction_timeout * 4;
    while tokio::time::Instant::now() < watch_until {
        for n in names {
            assert!(
                !evicted(&pods, &format!("on-{n}")).await,
                "on-{n} evicted while every node was down"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Two kubelets come back; nl-c stays silent: its pod is evicted (once
    // a fresh eviction timeout has passed), the others' are kept.
    let (n2, l2) = (nodes.clone(), leases.clone());
    env.spawn(async move {
        for _ in 0..600 {
            for n in ["nl-a", "nl-b"] {
                heartbeat(&n2, &l2, n).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    for n in ["nl-a", "nl-b"] {
        eventually("node back to Ready", || async {
            let node = nodes.get(n).await.ok()?;
            (ready_status(&node)? == "True").then_some(())
        })
        .await;
    }
    eventually("the pod of the silent node evicted", || async {
        evicted(&pods, "on-nl-c").await.then_some(())
    })
    .await;
    for n in ["nl-a", "nl-b"] {
        assert!(!evicted(&pods, &format!("on-{n}")).await, "on-{n} evicted");
    }
    for n in names {
        let _ = nodes.delete(n, &DeleteParams::default()).await;
        let _ = leases.delete(n, &DeleteParams::default()).await;
    }
}
