//! The DaemonSet controller against an in-process apiserver over a real
//! etcd. Nodes are cluster-wide and the etcd is shared by the tests of
//! this binary, so each test names its nodes after its namespace and its
//! DaemonSets select them by a label of their own (`dstest=<ns>`).
//! Readiness is set by the tests (or the fake kubelet), so every rollout
//! step is chosen, not timed.

use std::collections::BTreeSet;

use crate::common::*;
use ballast_controllers::daemonset::{target_node, REVISION_HASH};
use ballast_controllers::{Config, ControllerManager};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};

fn start(env: &mut Env) {
    let config = Config {
        controllers: ["daemonset".to_string()].into(),
        namespace: Some(env.ns.clone()),
        node_lifecycle: quick_nodes(),
        ..Config::default()
    };
    let client = env.client.clone();
    env.spawn(async move {
        ControllerManager::run(client, config, std::future::pending())
            .await
            .expect("controller manager");
    });
}

/// Nodes of one test, deleted when dropped.
struct Nodes {
    api: Api<Node>,
    ns: String,
    names: Vec<String>,
}

impl Nodes {
    fn new(env: &Env) -> Nodes {
        Nodes {
            api: Api::all(env.client.clone()),
            ns: env.ns.clone(),
            names: Vec::new(),
        }
    }

    /// Creates `<ns>-<suffix>` labelled `dstest=<ns>` plus `extra`, with
    /// `spec`; its full name.
    async fn add(&mut self, suffix: &str, extra: Value, spec: Value) -> String {
        let name = format!("{}-{suffix}", self.ns);
        let mut labels = json!({"dstest": self.ns});
        for (k, v) in extra.as_object().into_iter().flatten() {
            labels[k] = v.clone();
        }
        let _ = self.api.delete(&name, &DeleteParams::default()).await;
        let body: Node = serde_json::from_value(json!({"metadata": {"name": name,
            "labels": labels}, "spec": spec}))
        .expect("node");
        eventually(&format!("node {name} created"), || async {
            self.api.create(&PostParams::default(), &body).await.ok()
        })
        .await;
        self.names.push(name.clone());
        name
    }

    async fn remove(&mut self, name: &str) {
        self.api
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete node");
        self.names.retain(|n| n != name);
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        let (api, names) = (self.api.clone(), std::mem::take(&mut self.names));
        tokio::spawn(async move {
            for n in names {
                let _ = api.delete(&n, &DeleteParams::default()).await;
            }
        });
    }
}

fn daemonset(ns: &str, name: &str, image: &str, strategy: Value) -> DaemonSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": strategy,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"nodeSelector": {"dstest": ns},
                         "containers": [{"name": "c", "image": image}]}
            }
        }
    }))
    .expect("daemonset")
}

/// The live (not deleting) pods of `ds`, by the node each is for.
async fn pods_by_node(pods: &Api<Pod>, ds: &str) -> Vec<(String, Pod)> {
    let lp = ListParams::default().labels(&format!("app={ds}"));
    let mut out: Vec<(String, Pod)> = pods
        .list(&lp)
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (target_node(&p).unwrap_or_default(), p))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Waits until `ds` has exactly one live pod on each of `nodes` and no
/// other; returns them.
async fn wait_placed(pods: &Api<Pod>, ds: &str, nodes: &[&str]) -> Vec<(String, Pod)> {
    let want: BTreeSet<&str> = nodes.iter().copied().collect();
    eventually(&format!("{ds} on exactly {nodes:?}"), || async {
        let placed = pods_by_node(pods, ds).await;
        let on: Vec<&str> = placed.iter().map(|(n, _)| n.as_str()).collect();
        let unique: BTreeSet<&str> = on.iter().copied().collect();
        (unique == want && on.len() == want.len()).then_some(placed)
    })
    .await
}

/// (desired, current, ready, updated, available, misscheduled) once the
/// status has observed the latest generation and equals `want`.
async fn wait_status(dss: &Api<DaemonSet>, name: &str, want: (i32, i32, i32, i32, i32, i32)) {
    eventually(&format!("{name} status {want:?}"), || async {
        let ds = dss.get(name).await.ok()?;
        let s = ds.status?;
        let got = (
            s.desired_number_scheduled,
            s.current_number_scheduled,
            s.number_ready,
            s.updated_number_scheduled.unwrap_or(0),
            s.number_available.unwrap_or(0),
            s.number_misscheduled,
        );
        (got == want && s.observed_generation == ds.metadata.generation).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pod_per_node_as_nodes_come_and_go() {
    let mut env = env_with_nodes("ds-nodes").await;
    env.fake_kubelet();
    start(&mut env);
    let mut nodes = Nodes::new(&env);
    let a = nodes.add("a", json!({}), json!({})).await;
    let b = nodes.add("b", json!({}), json!({})).await;
    let c = nodes.add("c", json!({}), json!({})).await;
    let dss: Api<DaemonSet> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let created = dss
        .create(
            &PostParams::default(),
            &daemonset(&env.ns, "agent", "busybox", json!(null)),
        )
        .await
        .expect("create daemonset");
    // Kubernetes' defaults.
    let spec = created.spec.clone().unwrap();
    let strategy = spec.update_strategy.unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(spec.revision_history_limit, Some(10));
    let placed = wait_placed(&pods, "agent", &[&a, &b, &c]).await;
    wait_status(&dss, "agent", (3, 3, 3, 3, 3, 0)).await;
    // Each pod: owned by the DaemonSet, bound to its node by affinity,
    // tolerating the defaults, labelled with the revision hash.
    let uid = created.uid().unwrap();
    let revisions: Api<ControllerRevision> = Api::namespaced(env.client.clone(), &env.ns);
    let history = revisions.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(history.len(), 1, "{history:?}");
    let rev = &history[0];
    assert_eq!(rev.revision, 1);
    assert_eq!(rev.owner_references()[0].uid, uid);
    let hash = rev.labels()[REVISION_HASH].clone();
    assert_eq!(rev.name_any(), format!("agent-{hash}"));
    assert_eq!(
        rev.data.as_ref().unwrap().0["spec"]["template"]["$patch"],
        "replace"
    );
    for (node, p) in &placed {
        let r = &p.owner_references()[0];
        assert_eq!(
            (r.kind.as_str(), r.uid.as_str(), r.controller),
            ("DaemonSet", uid.as_str(), Some(true))
        );
        assert_eq!(p.labels()[REVISION_HASH], hash);
        let spec = p.spec.as_ref().unwrap();
        let fields = &spec
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms[0]
            .match_fields
            .as_ref()
            .unwrap()[0];
        assert_eq!(fields.key, "metadata.name");
        assert_eq!(fields.values.as_deref(), Some(&[node.clone()][..]));
        let tolerated: BTreeSet<&str> = spec
            .tolerations
            .iter()
            .flatten()
            .filter_map(|t| t.key.as_deref())
            .collect();
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
            "node.kubernetes.io/unschedulable",
            "node.kubernetes.io/disk-pressure",
        ] {
            assert!(
                tolerated.contains(key),
                "{key} not tolerated: {tolerated:?}"
            );
        }
    }

    // A new node gets its pod; a removed one loses it.
    let d = nodes.add("d", json!({}), json!({})).await;
    wait_placed(&pods, "agent", &[&a, &b, &c, &d]).await;
    wait_status(&dss, "agent", (4, 4, 4, 4, 4, 0)).await;
    nodes.remove(&b).await;
    wait_placed(&pods, "agent", &[&a, &c, &d]).await;
    wait_status(&dss, "agent", (3, 3, 3, 3, 3, 0)).await;

    // A pod deleted by hand is replaced on the same node.
    let victim = pods_by_node(&pods, "agent").await[0].clone();
    pods.delete(&victim.1.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    let again = wait_placed(&pods, "agent", &[&a, &c, &d]).await;
    assert!(again
        .iter()
        .all(|(_, p)| p.name_any() != victim.1.name_any()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_and_taints_exclude_nodes() {
    let mut env = env_with_nodes("ds-taints").await;
    env.fake_kubelet();
    start(&mut env);
    let mut nodes = Nodes::new(&env);
    let plain = nodes.add("plain", json!({}), json!({})).await;
    let tainted = nodes
        .add(
            "tainted",
            json!({}),
            json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}),
        )
        .await;
    // Cordoned and not ready: DaemonSet pods tolerate both.
    let cordoned = nodes
        .add(
            "cordoned",
            json!({}),
            json!({"unschedulable": true, "taints": [
                {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]}),
        )
        .await;
    let other = nodes.add("other", json!({"tier": "db"}), json!({})).await;
    let dss: Api<DaemonSet> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let mut ds = daemonset(&env.ns, "agent", "busybox", json!(null));
    // Required node affinity excludes tier=db.
    ds.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .affinity = Some(
        serde_json::from_value(json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}]}}}))
        .unwrap(),
    );
    dss.create(&PostParams::default(), &ds).await.unwrap();
    wait_placed(&pods, "agent", &[&plain, &cordoned]).await;
    wait_status(&dss, "agent", (2, 2, 2, 2, 2, 0)).await;
    let _ = other;

    // Tolerating the taint lets the daemon onto the tainted node.
    let patch = json!({"spec": {"template": {"spec": {"tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}}}});
    dss.patch("agent", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let placed = wait_placed(&pods, "agent", &[&plain, &tainted, &cordoned]).await;
    wait_status(&dss, "agent", (3, 3, 3, 3, 3, 0)).await;
    assert!(placed
        .iter()
        .all(|(_, p)| p.labels().contains_key(REVISION_HASH)));

    // An untolerated NoExecute taint evicts; a NoSchedule one only keeps
    // new daemons off, so the running one is misscheduled but stays.
    let taint = |t: Value| json!({"spec": {"taints": t}});
    let nodes_api: Api<Node> = Api::all(env.client.clone());
    nodes_api
        .patch(
            &plain,
            &PatchParams::default(),
            &Patch::Merge(&taint(json!([{"key": "maint", "effect": "NoExecute"}]))),
        )
        .await
        .unwrap();
    wait_placed(&pods, "agent", &[&tainted, &cordoned]).await;
    nodes_api
        .patch(
            &tainted,
            &PatchParams::default(),
            &Patch::Merge(&taint(json!([{"key": "other", "effect": "NoSchedule"}]))),
        )
        .await
        .unwrap();
    wait_status(&dss, "agent", (1, 1, 1, 1, 1, 1)).await;
    assert_eq!(pods_by_node(&pods, "agent").await.len(), 2);
    // A node whose labels stop matching loses its daemon.
    let unlabel = json!({"metadata": {"labels": {"dstest": null}}});
    nodes_api
        .patch(&cordoned, &PatchParams::default(), &Patch::Merge(&unlabel))
        .await
        .unwrap();
    wait_placed(&pods, "agent", &[&tainted]).await;
    wait_status(&dss, "agent", (0, 0, 0, 0, 0, 1)).await;
}

/// Marks every live pod of `ds` Ready that is not yet.
async fn ready_all(pods: &Api<Pod>, ds: &str) {
    for (_, p) in pods_by_node(pods, ds).await {
        if !is_ready(&p) {
            set_ready(pods, &p.name_any(), true, None)
                .await
                .expect("set ready");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_keeps_max_unavailable_and_rolls_back() {
    let mut env = env_with_nodes("ds-rolling").await;
    start(&mut env);
    let mut nodes = Nodes::new(&env);
    let mut names = Vec::new();
    for s in ["a", "b", "c"] {
        names.push(nodes.add(s, json!({}), json!({})).await);
    }
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let dss: Api<DaemonSet> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let revisions: Api<ControllerRevision> = Api::namespaced(env.client.clone(), &env.ns);
    dss.create(
        &PostParams::default(),
        &daemonset(
            &env.ns,
            "agent",
            "busybox:1",
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}),
        ),
    )
    .await
    .unwrap();
    let first = wait_placed(&pods, "agent", &all).await;
    ready_all(&pods, "agent").await;
    wait_status(&dss, "agent", (3, 3, 3, 3, 3, 0)).await;
    let old_hash = first[0].1.labels()[REVISION_HASH].clone();

    let image = |i: &str| json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": i}]}}}});
    dss.patch(
        "agent",
        &PatchParams::default(),
        &Patch::Strategic(image("busybox:2")),
    )
    .await
    .unwrap();
    // Step by step: one old pod goes, its node gets a new pod, and only
    // once that is ready does the next old pod go.
    let mut replaced = BTreeSet::new();
    let mut new_hash = String::new();
    for step in 1..=3 {
        let placed = eventually(&format!("rollout step {step}"), || async {
            let placed = pods_by_node(&pods, "agent").await;
            let old = placed
                .iter()
                .filter(|(_, p)| p.labels()[REVISION_HASH] == old_hash)
                .count();
            // Never more than one node without a ready pod.
            let ready = placed.iter().filter(|(_, p)| is_ready(p)).count();
            assert!(ready >= 2, "maxUnavailable 1 broken: {ready} ready of 3");
            (old == 3 - step && placed.len() == 3).then_some(placed)
        })
        .await;
        for (node, p) in &placed {
            if p.labels()[REVISION_HASH] != old_hash && !is_ready(p) {
                new_hash = p.labels()[REVISION_HASH].clone();
                assert!(replaced.insert(node.clone()), "{node} replaced twice");
            }
        }
        assert_eq!(replaced.len(), step, "{placed:?}");
        ready_all(&pods, "agent").await;
    }
    assert_ne!(new_hash, old_hash);
    wait_status(&dss, "agent", (3, 3, 3, 3, 3, 0)).await;
    let history = revisions.list(&ListParams::default()).await.unwrap().items;
    let mut revs: Vec<(i64, String)> = history
        .iter()
        .map(|r| (r.revision, r.labels()[REVISION_HASH].clone()))
        .collect();
    revs.sort();
    assert_eq!(revs, [(1, old_hash.clone()), (2, new_hash.clone())]);

    // Back to the first template (kubectl rollout undo's patch): its
    // revision is renumbered to 3, no new revision is made, and the pods
    // roll back to the old hash.
    let data = history
        .iter()
        .find(|r| r.revision == 1)
        .unwrap()
        .data
        .clone()
        .unwrap()
        .0;
    dss.patch("agent", &PatchParams::default(), &Patch::Strategic(data))
        .await
        .unwrap();
    eventually("rolled back", || async {
        ready_all(&pods, "agent").await;
        let placed = pods_by_node(&pods, "agent").await;
        (placed.len() == 3
            && placed
                .iter()
                .all(|(_, p)| p.labels()[REVISION_HASH] == old_hash && is_ready(p)))
        .then_some(())
    })
    .await;
    wait_status(&dss, "agent", (3, 3, 3, 3, 3, 0)).await;
    let mut revs: Vec<(i64, String)> = revisions
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| (r.revision, r.labels()[REVISION_HASH].clone()))
        .collect();
    revs.sort();
    assert_eq!(revs, [(2, new_hash), (3, old_hash)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_delete_replaces_only_deleted_pods_and_surge_overlaps() {
    let mut env = env_with_nodes("ds-ondelete").await;
    env.fake_kubelet();
    start(&mut env);
    let mut nodes = Nodes::new(&env);
    let a = nodes.add("a", json!({}), json!({})).await;
    let b = nodes.add("b", json!({}), json!({})).await;
    let dss: Api<DaemonSet> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    dss.create(
        &PostParams::default(),
        &daemonset(&env.ns, "agent", "busybox:1", json!({"type": "OnDelete"})),
    )
    .await
    .unwrap();
    let first = wait_placed(&pods, "agent", &[&a, &b]).await;
    wait_status(&dss, "agent", (2, 2, 2, 2, 2, 0)).await;
    let image = |i: &str| json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": i}]}}}});
    dss.patch(
        "agent",
        &PatchParams::default(),
        &Patch::Strategic(image("busybox:2")),
    )
    .await
    .unwrap();
    // Nothing is replaced: the status shows no node updated.
    wait_status(&dss, "agent", (2, 2, 2, 0, 2, 0)).await;
    let same = pods_by_node(&pods, "agent").await;
    assert_eq!(
        same.iter().map(|(_, p)| p.name_any()).collect::<Vec<_>>(),
        first.iter().map(|(_, p)| p.name_any()).collect::<Vec<_>>()
    );
    // The pod deleted by hand comes back with the new template.
    pods.delete(&first[0].1.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    wait_status(&dss, "agent", (2, 2, 2, 1, 2, 0)).await;
    let now = pods_by_node(&pods, "agent").await;
    let image_of = |p: &Pod| {
        p.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap()
    };
    assert_eq!(image_of(&now[0].1), "busybox:2");
    assert_eq!(now[1].1.name_any(), first[1].1.name_any());

    // maxSurge: the new pod starts beside the old one, which goes once
    // the new one is available.
    let surge = json!({"spec": {"updateStrategy": {"type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}}});
    dss.patch("agent", &PatchParams::default(), &Patch::Merge(&surge))
        .await
        .unwrap();
    wait_status(&dss, "agent", (2, 2, 2, 2, 2, 0)).await;
    let after = wait_placed(&pods, "agent", &[&a, &b]).await;
    assert!(after.iter().all(|(_, p)| image_of(p) == "busybox:2"));
    assert_ne!(after[1].1.name_any(), first[1].1.name_any());

    // Bad input: the apiserver refuses what Kubernetes refuses.
    let mut bad = daemonset(&env.ns, "bad", "busybox", json!(null));
    bad.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .restart_policy = Some("Never".into());
    let Err(kube::Error::Api(s)) = dss.create(&PostParams::default(), &bad).await else {
        panic!("restartPolicy Never accepted");
    };
    assert_eq!(s.code, 422);
    assert!(
        s.message.contains("supported values: \"Always\""),
        "{}",
        s.message
    );
    let mut unmatched = daemonset(&env.ns, "bad", "busybox", json!(null));
    unmatched.spec.as_mut().unwrap().selector.match_labels =
        Some([("app".to_string(), "other".to_string())].into());
    let Err(kube::Error::Api(s)) = dss.create(&PostParams::default(), &unmatched).await else {
        panic!("unmatched selector accepted");
    };
    assert_eq!(s.code, 422);
    assert!(
        s.message
            .contains("`selector` does not match template `labels`"),
        "{}",
        s.message
    );
    let sel = json!({"spec": {"selector": {"matchLabels": {"app": "agent", "x": "y"}}}});
    let Err(kube::Error::Api(s)) = dss
        .patch("agent", &PatchParams::default(), &Patch::Merge(&sel))
        .await
    else {
        panic!("selector change accepted");
    };
    assert_eq!(s.code, 422);
    assert!(s.message.contains("field is immutable"), "{}", s.message);
}
