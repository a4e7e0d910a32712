//! Node IPAM (`--allocate-node-cidrs`) against an in-process apiserver over
//! the shared real etcd: Nodes without a range get distinct blocks of the
//! cluster CIDR, ranges Nodes held before the controller started are kept
//! out, a full CIDR gives the `CIDRNotAvailable` Event, a given range is
//! fixed (422), and blocks come back when a Node is deleted — but not
//! while another Node still holds a range inside them.
//!
//! Nodes are cluster-scoped and the controller allocates for them all, so
//! this binary has one test.

use crate::common::{env_with_nodes, eventually};
use ballast_controllers::nodeipam::{Ipv4Cidr, NodeIpamConfig};
use ballast_controllers::ControllerManager;
use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// The node's `spec.podCIDR`, if set.
fn pod_cidr(node: &Node) -> Option<String> {
    node.spec.as_ref()?.pod_cidr.clone()
}

async fn create(nodes: &Api<Node>, name: &str, cidr: Option<&str>) {
    let mut node = json!({"metadata": {"name": name}});
    if let Some(cidr) = cidr {
        node["spec"] = json!({"podCIDR": cidr, "podCIDRs": [cidr]});
    }
    let node: Node = serde_json::from_value(node).expect("a Node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .unwrap_or_else(|e| panic!("creating node {name}: {e}"));
}

/// Waits for the controller to give `name` a range; returns it.
async fn allocated(nodes: &Api<Node>, name: &str) -> String {
    eventually(&format!("node {name} gets a podCIDR"), || async {
        let node = nodes.get(name).await.ok()?;
        let cidr = pod_cidr(&node)?;
        let listed = node.spec.as_ref()?.pod_cidrs.clone()?;
        assert_eq!(
            listed,
            std::slice::from_ref(&cidr),
            "podCIDRs follows podCIDR"
        );
        Some(cidr)
    })
    .await
}

/// How many times the controller recorded `CIDRNotAvailable` for `name`
/// (the Event's count: repeats are counted on the first).
async fn not_available(events: &Api<Event>, name: &str) -> i32 {
    let list = events.list(&ListParams::default()).await.expect("events");
    list.items
        .iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("Node")
                && e.involved_object.name.as_deref() == Some(name)
                && e.reason.as_deref() == Some("CIDRNotAvailable")
        })
        .map(|e| {
            assert_eq!(
                e.message.as_deref(),
                Some(format!("Node {name} status is now: CIDRNotAvailable").as_str())
            );
            assert_eq!(e.type_.as_deref(), Some("Normal"));
            e.count.unwrap_or(1)
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_distinct_ranges_freed_ones_return_a_full_range_is_reported() {
    let mut env = env_with_nodes("nodeipam").await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    for n in nodes
        .list(&ListParams::default())
        .await
        .expect("nodes")
        .items
    {
        let name = n.metadata.name.expect("name");
        let _ = nodes.delete(&name, &DeleteParams::default()).await;
    }
    // 127.200.0.0/22 in /24s: four blocks. Block 1 is held before the
    // controller starts (a Node registered with --pod-cidr).
    create(&nodes, "pre", Some("127.200.1.0/24")).await;
    let config = ballast_controllers::Config {
        controllers: ["nodeipam".to_string()].into(),
        namespace: Some(env.ns.clone()),
        node_ipam: Some(NodeIpamConfig {
            cluster_cidr: Ipv4Cidr::parse("127.200.0.0/22").unwrap(),
            node_cidr_mask_size: 24,
            service_cidr: None,
        }),
        ..ballast_controllers::Config::default()
    };
    let client = env.client.clone();
    env.spawn(async move {
        ControllerManager::run(client, config, std::future::pending())
            .await
            .expect("controller manager");
    });

    // Three new Nodes: the three other blocks, one each.
    for n in ["a", "b", "c"] {
        create(&nodes, n, None).await;
    }
    let mut got = Vec::new();
    for n in ["a", "b", "c"] {
        got.push(allocated(&nodes, n).await);
    }
    got.sort();
    assert_eq!(
        got,
        ["127.200.0.0/24", "127.200.2.0/24", "127.200.3.0/24"],
        "distinct blocks, pre's kept out"
    );
    let pre = nodes.get("pre").await.expect("pre");
    assert_eq!(pod_cidr(&pre).as_deref(), Some("127.200.1.0/24"));

    // Full: the next Node gets the Event, no range and no condition.
    create(&nodes, "e", None).await;
    eventually("CIDRNotAvailable for e", || async {
        (not_available(&events, "e").await > 0).then_some(())
    })
    .await;
    let e = nodes.get("e").await.expect("e");
    assert_eq!(pod_cidr(&e), None);
    let conditions = e.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        conditions.iter().all(|c| c.type_ != "NetworkUnavailable"),
        "{conditions:?}"
    );

    // A deleted Node's block goes to the waiting one.
    let b_block = pod_cidr(&nodes.get("b").await.expect("b")).expect("b's range");
    nodes
        .delete("b", &DeleteParams::default())
        .await
        .expect("delete b");
    assert_eq!(allocated(&nodes, "e").await, b_block);

    // A range once given is fixed, as kube's Node validation keeps it; a
    // Node leaving frees it for the next one.
    let a_block = pod_cidr(&nodes.get("a").await.expect("a")).expect("a's range");
    let moved = json!({"spec": {"podCIDR": "10.9.0.0/24", "podCIDRs": ["10.9.0.0/24"]}});
    match nodes
        .patch("a", &PatchParams::default(), &Patch::Merge(&moved))
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{s:?}");
            assert!(
                s.message
                    .contains("node updates may not change podCIDR except from \"\" to valid"),
                "{s:?}"
            );
        }
        other => panic!("editing a's range: {other:?}"),
    }
    nodes
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete a");
    create(&nodes, "f", None).await;
    assert_eq!(allocated(&nodes, "f").await, a_block);

    // Two Nodes in one block: g holds half of c's. Deleting c must leave
    // the block used while g holds part of it.
    let c_block = pod_cidr(&nodes.get("c").await.expect("c")).expect("c's range");
    let half = c_block.replace(".0/24", ".0/25");
    create(&nodes, "g", Some(&half)).await;
    create(&nodes, "h", None).await;
    eventually("CIDRNotAvailable for h", || async {
        (not_available(&events, "h").await > 0).then_some(())
    })
    .await;
    let before = not_available(&events, "h").await;
    nodes
        .delete("c", &DeleteParams::default())
        .await
        .expect("delete c");
    eventually("c gone", || async {
        nodes.get_opt("c").await.ok()?.is_none().then_some(())
    })
    .await;
    // The deletion requeues h at once; it finds no block again.
    eventually("h tried again after c left", || async {
        (not_available(&events, "h").await > before).then_some(())
    })
    .await;
    let h = nodes.get("h").await.expect("h");
    assert_eq!(pod_cidr(&h), None, "g still holds part of {c_block}");
    // g leaves too: the block is free, and h gets it.
    nodes
        .delete("g", &DeleteParams::default())
        .await
        .expect("delete g");
    assert_eq!(allocated(&nodes, "h").await, c_block);
}
