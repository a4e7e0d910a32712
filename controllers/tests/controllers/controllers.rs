//! The controller manager against an in-process apiserver over a real etcd:
//! Deployments, ReplicaSets, Endpoints, node lifecycle and garbage
//! collection, observed through the API as a user would.

use crate::common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Event, Node, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;

const ALL: &[&str] = &["deployment", "replicaset", "endpoints", "garbagecollector"];

fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("manifest")
}

fn controller_of<K: kube::Resource>(obj: &K) -> Option<String> {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}

async fn list<K>(api: &Api<K>) -> Vec<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default()).await.expect("list").items
}

fn status_of(d: &Deployment) -> (i32, i32, i32, i32) {
    let s = d.status.clone().unwrap_or_default();
    (
        s.replicas.unwrap_or(0),
        s.updated_replicas.unwrap_or(0),
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

fn condition(d: &Deployment, t: &str) -> Option<(String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

/// Waits until the Deployment has rolled out: every replica updated and
/// available, old ones gone, the generation observed.
async fn rolled_out(deploys: &Api<Deployment>, name: &str, replicas: i32) -> Deployment {
    eventually(
        &format!("deployment {name} rolled out to {replicas}"),
        || async {
            let d = deploys.get(name).await.ok()?;
            let s = d.status.clone()?;
            (s.observed_generation >= d.metadata.generation
                && status_of(&d) == (replicas, replicas, replicas, replicas))
                .then_some(d)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_creates_replicaset_and_pods_then_becomes_available() {
    let mut env = env("ctl-deploy").await;
    env.start(ALL, quick_nodes());
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let d = deploys
        .create(
            &PostParams::default(),
            &from(deployment("web", 3, "busybox:1.36")),
        )
        .await
        .expect("create deployment");
    let pod_list = eventually("3 pods", || async {
        let p = list(&pods).await;
        (p.len() == 3).then_some(p)
    })
    .await;
    let rs_list = list(&rss).await;
    assert_eq!(rs_list.len(), 1, "one ReplicaSet");
    let rs = &rs_list[0];
    let hash = rs.labels()["pod-template-hash"].clone();
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    let spec = rs.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(
        spec.selector.match_labels.as_ref().unwrap()["pod-template-hash"],
        hash
    );
    assert_eq!(
        spec.template
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap()["pod-template-hash"],
        hash
    );
    assert_eq!(rs.annotations()["deployment.kubernetes.io/revision"], "1");
    let owner = &rs.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Deployment", "web")
    );
    assert_eq!(owner.uid, d.uid().unwrap());
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true))
    );
    for p in &pod_list {
        assert!(
            p.name_any().starts_with(&format!("web-{hash}-")),
            "{}",
            p.name_any()
        );
        assert_eq!(p.labels()["app"], "web");
        assert_eq!(p.labels()["pod-template-hash"], hash);
        let r = &p.owner_references()[0];
        assert_eq!(
            (r.kind.as_str(), r.uid.clone()),
            ("ReplicaSet", rs.uid().unwrap())
        );
        assert_eq!(
            (r.controller, r.block_owner_deletion),
            (Some(true), Some(true))
        );
    }
    // Not ready yet: nothing is available.
    let d = eventually("status observed", || async {
        let d = deploys.get("web").await.ok()?;
        (status_of(&d).0 == 3).then_some(d)
    })
    .await;
    assert_eq!(status_of(&d).3, 0);
    assert_eq!(condition(&d, "Available").unwrap().0, "False");
    for p in &pod_list {
        set_ready(&pods, &p.name_any(), true, Some("127.0.0.9"))
            .await
            .expect("ready");
    }
    let d = rolled_out(&deploys, "web", 3).await;
    assert_eq!(
        condition(&d, "Available"),
        Some(("True".into(), "MinimumReplicasAvailable".into()))
    );
    let d = eventually("Progressing NewReplicaSetAvailable", || async {
        let d = deploys.get("web").await.ok()?;
        (condition(&d, "Progressing")? == ("True".into(), "NewReplicaSetAvailable".into()))
            .then_some(d)
    })
    .await;
    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "1");
    assert_eq!(d.status.as_ref().unwrap().unavailable_replicas, Some(0));
    let rs = rss.get(&rs.name_any()).await.expect("rs");
    let st = rs.status.unwrap();
    assert_eq!(
        (
            st.replicas,
            st.fully_labeled_replicas,
            st.ready_replicas,
            st.available_replicas
        ),
        (3, Some(3), Some(3), Some(3))
    );
    assert_eq!(st.observed_generation, rs.metadata.generation);
    // The story as `kubectl describe` tells it.
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    let messages = eventually("events", || async {
        let m: Vec<String> = list(&events)
            .await
            .into_iter()
            .filter_map(|e| e.message)
            .collect();
        (m.iter().any(|m| m.starts_with("Created pod: web-"))
            && m.iter()
                .any(|m| m == &format!("Scaled up replica set web-{hash} from 0 to 3")))
        .then_some(m)
    })
    .await;
    assert!(messages.len() >= 4, "{messages:?}");
}

/// (most pods, fewest ready pods, live pods → ready).
type Census = Arc<Mutex<(usize, usize, HashMap<String, bool>)>>;

/// Watches the pods of a namespace and records the most pods and the
/// fewest ready pods seen at once (pods being deleted do not count).
fn pod_census(env: &mut common::Env) -> Census {
    let state = Arc::new(Mutex::new((0usize, usize::MAX, HashMap::new())));
    let s = state.clone();
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    env.spawn(async move {
        let mut stream = watcher(pods, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut started = false;
        while let Some(Ok(ev)) = stream.next().await {
            let mut g = s.lock().unwrap();
            match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    if p.metadata.deletion_timestamp.is_some() {
                        g.2.remove(&p.name_any());
                    } else {
                        g.2.insert(p.name_any(), is_ready(&p));
                    }
                }
                watcher::Event::Delete(p) => {
                    g.2.remove(&p.name_any());
                }
                watcher::Event::InitDone => started = true,
                watcher::Event::Init => {}
            }
            if started {
                let total = g.2.len();
                let ready = g.2.values().filter(|r| **r).count();
                g.0 = g.0.max(total);
                g.1 = g.1.min(ready);
            }
        }
    });
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_stays_within_max_surge_and_max_unavailable() {
    let mut env = env("ctl-rolling").await;
    env.start(ALL, quick_nodes());
    env.fake_kubelet();
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.ns);
    let mut manifest = deployment("roll", 4, "busybox:1.36");
    manifest["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}});
    deploys
        .create(&PostParams::default(), &from(manifest))
        .await
        .expect("create");
    rolled_out(&deploys, "roll", 4).await;
    let census = pod_census(&mut env);
    eventually("census sees 4 ready pods", || async {
        let g = census.lock().unwrap();
        (g.2.values().filter(|r| **r).count() == 4).then_some(())
    })
    .await;
    census.lock().unwrap().1 = usize::MAX;
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1.37"}]}}}});
    deploys
        .patch("roll", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("image change");
    let d = eventually("rollout to the new image", || async {
        let d = deploys.get("roll").await.ok()?;
        let rs = list(&rss).await;
        let settled = |r: &ReplicaSet| -> Option<bool> {
            let image = r
                .spec
                .as_ref()?
                .template
                .as_ref()?
                .spec
                .as_ref()?
                .containers[0]
                .image
                .clone();
            let want = if image.as_deref() == Some("busybox:1.37") {
                4
            } else {
                0
            };
            Some(
                r.status.as_ref()?.available_replicas.unwrap_or(0) == want
                    && r.spec.as_ref()?.replicas == Some(want),
            )
        };
        let done = rs.len() == 2 && rs.iter().all(|r| settled(r) == Some(true));
        (done && status_of(&d) == (4, 4, 4, 4)).then_some(d)
    })
    .await;
    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "2");
    let (most, fewest_ready, now) = {
        let g = census.lock().unwrap();
        (g.0, g.1, g.2.len())
    };
    println!("rolling update: at most {most} pods, at least {fewest_ready} ready, {now} now");
    assert!(most <= 5, "maxSurge 1 over 4 replicas, saw {most} pods");
    assert!(
        fewest_ready >= 3,
        "maxUnavailable 25% of 4 = 1, saw only {fewest_ready} ready"
    );
    assert_eq!(now, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_up_to_ten_and_down_to_zero() {
    let mut env = env("ctl-scale").await;
    env.start(ALL, quick_nodes());
    env.fake_kubelet();
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    deploys
        .create(
            &PostParams::default(),
            &from(deployment("sc", 3, "busybox:1.36")),
        )
        .await
        .expect("create");
    rolled_out(&deploys, "sc", 3).await;
    for n in [10, 0, 2] {
        deploys
            .patch(
                "sc",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"replicas": n}})),
            )
            .await
            .expect("scale");
        rolled_out(&deploys, "sc", n).await;
        eventually(&format!("{n} pods"), || async {
            (list(&pods).await.len() == n as usize).then_some(())
        })
        .await;
        assert_eq!(list(&rss).await.len(), 1, "scaling makes no new ReplicaSet");
    }
    let rs = &list(&rss).await[0];
    assert_eq!(
        rs.annotations()["deployment.kubernetes.io/desired-replicas"],
        "2"
    );
    assert_eq!(
        rs.annotations()["deployment.kubernetes.io/max-replicas"],
        "3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_never_runs_old_and_new_pods_together() {
    let mut env = env("ctl-recreate").await;
    env.start(ALL, quick_nodes());
    env.fake_kubelet();
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let mut manifest = deployment("rc", 3, "busybox:1.36");
    manifest["spec"]["strategy"] = json!({"type": "Recreate"});
    deploys
        .create(&PostParams::default(), &from(manifest))
        .await
        .expect("create");
    rolled_out(&deploys, "rc", 3).await;
    // Record every moment both templates had live pods.
    let overlap = Arc::new(Mutex::new((HashMap::<String, String>::new(), false)));
    let o = overlap.clone();
    env.spawn(async move {
        let mut stream = watcher(pods, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(Ok(ev)) = stream.next().await {
            let mut g = o.lock().unwrap();
            match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    let hash = p
                        .labels()
                        .get("pod-template-hash")
                        .cloned()
                        .unwrap_or_default();
                    g.0.insert(p.name_any(), hash);
                }
                watcher::Event::Delete(p) => {
                    g.0.remove(&p.name_any());
                }
                _ => {}
            }
            let distinct: std::collections::HashSet<&String> = g.0.values().collect();
            if distinct.len() > 1 {
                g.1 = true;
            }
        }
    });
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1.37"}]}}}});
    deploys
        .patch("rc", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("image change");
    eventually("recreated", || async {
        let d = deploys.get("rc").await.ok()?;
        (d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str)
            == Some("2")
            && status_of(&d) == (3, 3, 3, 3))
            .then_some(())
    })
    .await;
    assert!(
        !overlap.lock().unwrap().1,
        "old and new pods ran at the same time"
    );
}

/// Runs the real kubectl against `env`'s apiserver; (exit code, stdout+stderr).
async fn kubectl(env: &common::Env, dir: &std::path::Path, args: &[&str]) -> (i32, String) {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: {}\nusers:\n- name: u\n  user: {{}}\ncurrent-context: c\n",
            env.url, env.ns
        ),
    )
    .expect("kubeconfig");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let home = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        println!("$ kubectl {}", args.join(" "));
        let out = std::process::Command::new(KUBECTL)
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", &home)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run kubectl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{text}");
        (out.status.code().unwrap_or(-1), text)
    })
    .await
    .expect("kubectl task")
}

const KUBECTL: &str = "/usr/bin/kubectl";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_reuses_the_old_replicaset_and_history_is_pruned() {
    let mut env = env("ctl-rollback").await;
    env.start(ALL, quick_nodes());
    env.fake_kubelet();
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.ns);
    let mut manifest = deployment("rb", 2, "busybox:1.36");
    manifest["spec"]["revisionHistoryLimit"] = json!(1);
    deploys
        .create(&PostParams::default(), &from(manifest))
        .await
        .expect("create");
    rolled_out(&deploys, "rb", 2).await;
    let first = list(&rss).await.remove(0);
    let image = |v: &str| json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": v}]}}}});
    deploys
        .patch(
            "rb",
            &PatchParams::default(),
            &Patch::Strategic(&image("busybox:1.37")),
        )
        .await
        .expect("v2");
    eventually("revision 2 rolled out", || async {
        let d = deploys.get("rb").await.ok()?;
        (d.annotations().get("deployment.kubernetes.io/revision")? == "2"
            && status_of(&d) == (2, 2, 2, 2))
            .then_some(())
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out) = kubectl(
        &env,
        dir.path(),
        &["rollout", "status", "deployment/rb", "--timeout=30s"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("successfully rolled out"), "{out}");
    let (code, out) = kubectl(&env, dir.path(), &["rollout", "history", "deployment/rb"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("REVISION")
            && out.lines().any(|l| l.starts_with('1'))
            && out.lines().any(|l| l.starts_with('2')),
        "{out}"
    );
    let (code, out) = kubectl(&env, dir.path(), &["rollout", "undo", "deployment/rb"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rolled back"), "{out}");
    let (code, out) = kubectl(
        &env,
        dir.path(),
        &["rollout", "status", "deployment/rb", "--timeout=30s"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let d = eventually("rolled back to revision 3", || async {
        let d = deploys.get("rb").await.ok()?;
        (d.annotations().get("deployment.kubernetes.io/revision")? == "3"
            && status_of(&d) == (2, 2, 2, 2))
            .then_some(d)
    })
    .await;
    let image_of = |d: &Deployment| {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone()
    };
    assert_eq!(image_of(&d).as_deref(), Some("busybox:1.36"));
    let reused = rss
        .get(&first.name_any())
        .await
        .expect("first ReplicaSet still there");
    assert_eq!(
        reused.uid(),
        first.uid(),
        "the old ReplicaSet is reused, not recreated"
    );
    assert_eq!(
        reused.annotations()["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(
        reused.annotations()["deployment.kubernetes.io/revision-history"],
        "1"
    );
    assert_eq!(list(&rss).await.len(), 2);
    // Two more revisions: with revisionHistoryLimit 1 only one old ReplicaSet stays.
    for (i, v) in ["busybox:1.38", "busybox:1.39"].iter().enumerate() {
        deploys
            .patch("rb", &PatchParams::default(), &Patch::Strategic(&image(v)))
            .await
            .expect("new image");
        let rev = (4 + i).to_string();
        eventually(&format!("revision {rev}"), || async {
            let d = deploys.get("rb").await.ok()?;
            (d.annotations().get("deployment.kubernetes.io/revision")? == &rev
                && status_of(&d) == (2, 2, 2, 2))
                .then_some(())
        })
        .await;
    }
    let left = eventually("old ReplicaSets pruned to 1", || async {
        let l = list(&rss).await;
        (l.len() == 2).then_some(l)
    })
    .await;
    let mut revisions: Vec<String> = left
        .iter()
        .map(|r| r.annotations()["deployment.kubernetes.io/revision"].clone())
        .collect();
    revisions.sort();
    assert_eq!(revisions, ["4", "5"]);
}

fn replicaset(name: &str, replicas: i32, app: &str) -> ReplicaSet {
    from(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {"metadata": {"labels": {"app": app, "tier": "x"}},
                         "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_never_over_creates_while_its_cache_lags() {
    let mut env = env("ctl-expect").await;
    env.start(&["replicaset"], quick_nodes());
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let census = pod_census(&mut env);
    eventually("census started", || async {
        (census.lock().unwrap().1 == 0).then_some(())
    })
    .await;
    rss.create(&PostParams::default(), &replicaset("many", 40, "many"))
        .await
        .expect("create");
    // Poke the ReplicaSet while it creates, so it syncs again and again.
    for i in 0..20 {
        let patch = json!({"metadata": {"annotations": {"poke": i.to_string()}}});
        rss.patch("many", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("poke");
    }
    let rs = eventually("status replicas 40", || async {
        let rs = rss.get("many").await.ok()?;
        let st = rs.status.clone()?;
        (st.replicas == 40 && st.observed_generation == rs.metadata.generation).then_some(rs)
    })
    .await;
    let st = rs.status.unwrap();
    assert_eq!(
        (
            st.fully_labeled_replicas,
            st.ready_replicas,
            st.available_replicas
        ),
        (Some(40), Some(0), Some(0))
    );
    // More syncs after the fact change nothing.
    rss.patch(
        "many",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .expect("poke");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(list(&pods).await.len(), 40);
    assert_eq!(
        census.lock().unwrap().0,
        40,
        "never more than 40 pods at once"
    );
    let names: Vec<String> = list(&pods).await.iter().map(|p| p.name_any()).collect();
    assert!(
        names.iter().all(|n| n.starts_with("many-") && n.len() > 5),
        "{names:?}"
    );
}

fn pod(name: &str, labels: serde_json::Value, node: Option<&str>) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "busybox:1.36",
        "ports": [{"name": "web", "containerPort": 8080}]}]});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    from(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_adopts_releases_and_deletes_the_least_useful_pods_first() {
    let mut env = env("ctl-adopt").await;
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let pp = PostParams::default();
    pods.create(
        &pp,
        &pod("orphan", json!({"app": "a", "tier": "x"}), Some("n1")),
    )
    .await
    .expect("orphan");
    pods.create(&pp, &pod("stranger", json!({"app": "b"}), None))
        .await
        .expect("stranger");
    set_ready(&pods, "orphan", true, Some("127.0.1.1"))
        .await
        .expect("ready");
    // Started after the orphan exists, so its first list holds it (a pod
    // created at the same time as the ReplicaSet may be seen after it, in
    // Kubernetes too).
    env.start(&["replicaset"], quick_nodes());
    let rs = rss.create(&pp, &replicaset("a", 3, "a")).await.expect("rs");
    let owned = eventually("3 pods owned", || async {
        let l: Vec<Pod> = list(&pods)
            .await
            .into_iter()
            .filter(|p| controller_of(p) == rs.uid())
            .collect();
        (l.len() == 3).then_some(l)
    })
    .await;
    assert!(
        owned.iter().any(|p| p.name_any() == "orphan"),
        "the orphan is adopted"
    );
    assert_eq!(
        list(&pods).await.len(),
        4,
        "only 2 created; the stranger is left alone"
    );
    assert!(controller_of(&pods.get("stranger").await.unwrap()).is_none());
    // A pod that stops matching is released and replaced.
    let victim = owned
        .iter()
        .find(|p| p.name_any() != "orphan")
        .unwrap()
        .name_any();
    pods.patch(
        &victim,
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"app": "gone"}}})),
    )
    .await
    .expect("relabel");
    eventually("released", || async {
        let p = pods.get(&victim).await.ok()?;
        controller_of(&p).is_none().then_some(())
    })
    .await;
    eventually("replaced", || async {
        let l = list(&pods).await;
        (l.iter().filter(|p| controller_of(*p) == rs.uid()).count() == 3).then_some(())
    })
    .await;
    // Scale to 1: the bound, ready pod is the one kept.
    rss.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 1}})),
    )
    .await
    .expect("scale down");
    let left = eventually("1 owned pod", || async {
        let l: Vec<Pod> = list(&pods)
            .await
            .into_iter()
            .filter(|p| controller_of(p) == rs.uid())
            .collect();
        (l.len() == 1).then_some(l)
    })
    .await;
    assert_eq!(left[0].name_any(), "orphan");
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    eventually("SuccessfulDelete event", || async {
        list(&events)
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("SuccessfulDelete"))
            .then_some(())
    })
    .await;
}

/// A pod with these labels, ownerReferences and finalizers.
fn claimable(name: &str, app: &str, owners: serde_json::Value, finalizers: &[&str]) -> Pod {
    let mut p = pod(name, json!({"app": app}), None);
    p.metadata.owner_references = from(owners);
    p.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
    p
}

fn controlled_by(rs: &ReplicaSet) -> serde_json::Value {
    json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs.name_any(),
        "uid": rs.uid(), "controller": true}])
}

/// Every pod of the namespace, as an informer would hand them to `claim`.
async fn candidates(pods: &Api<Pod>) -> Vec<Arc<Pod>> {
    list(pods).await.into_iter().map(Arc::new).collect()
}

async fn claimed_names(
    env: &common::Env,
    owner: &ReplicaSet,
    pods: &Api<Pod>,
) -> Result<Vec<String>, ballast_controllers::Error> {
    let selector = ballast_controllers::util::Selector::from_label_selector(
        owner.spec.as_ref().map(|s| &s.selector),
    )
    .expect("selector");
    let claimed =
        ballast_controllers::util::claim(&env.client, owner, candidates(pods).await, |p| {
            selector.matches(p.labels())
        })
        .await?;
    let mut names: Vec<String> = claimed.iter().map(|p| p.name_any()).collect();
    names.sort();
    Ok(names)
}

/// The one ControllerRefManager claim all workload controllers use, case
/// by case as kube's `ClaimObject` decides them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_adopts_releases_and_leaves_alone_as_kubernetes_does() {
    let env = env("ctl-claim").await;
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let pp = PostParams::default();
    let hold = "example.com/hold";
    let owner = rss
        .create(&pp, &replicaset("owner", 0, "claim"))
        .await
        .expect("owner");
    let other = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "other",
        "uid": "7f1c1a52-0000-4000-8000-000000000001", "controller": true}]);
    for p in [
        claimable("orphan", "claim", json!(null), &[]),
        claimable("strangers", "claim", other.clone(), &[]),
        claimable("mismatch", "elsewhere", controlled_by(&owner), &[]),
        claimable("kept", "claim", controlled_by(&owner), &[]),
        claimable("unselected", "elsewhere", json!(null), &[]),
        claimable("going", "claim", json!(null), &[hold]),
    ] {
        pods.create(&pp, &p).await.expect("pod");
    }
    pods.delete("going", &DeleteParams::default())
        .await
        .expect("mark going deleting");

    assert_eq!(
        claimed_names(&env, &owner, &pods).await.expect("claim"),
        ["kept", "orphan"]
    );
    let live = |name: &'static str| {
        let pods = pods.clone();
        async move { controller_of(&pods.get(name).await.expect(name)) }
    };
    assert_eq!(live("orphan").await, owner.uid(), "orphan adopted");
    assert_eq!(
        live("strangers").await.as_deref(),
        Some("7f1c1a52-0000-4000-8000-000000000001"),
        "owned by another: untouched"
    );
    assert_eq!(live("mismatch").await, None, "selector mismatch released");
    assert_eq!(live("unselected").await, None);
    assert_eq!(
        live("going").await,
        None,
        "an object being deleted is not adopted"
    );

    // An owner being deleted adopts nothing and releases nothing; what it
    // already owns and selects it still claims.
    let doomed = rss
        .create(&pp, &{
            let mut rs = replicaset("doomed", 0, "doomed");
            rs.metadata.finalizers = Some(vec![hold.to_string()]);
            rs
        })
        .await
        .expect("doomed");
    for p in [
        claimable("doomed-orphan", "doomed", json!(null), &[]),
        claimable("doomed-mismatch", "elsewhere", controlled_by(&doomed), &[]),
        claimable("doomed-kept", "doomed", controlled_by(&doomed), &[]),
    ] {
        pods.create(&pp, &p).await.expect("pod");
    }
    rss.delete("doomed", &DeleteParams::default())
        .await
        .expect("mark doomed deleting");
    let deleting = rss.get("doomed").await.expect("doomed");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert_eq!(
        claimed_names(&env, &deleting, &pods).await.expect("claim"),
        ["doomed-kept"]
    );
    assert_eq!(live("doomed-orphan").await, None, "not adopted");
    assert_eq!(live("doomed-mismatch").await, doomed.uid(), "not released");

    // A cached copy that does not show the deletion yet: the live recheck
    // refuses the adoption, and the claim fails so the sync is retried.
    let err = claimed_names(&env, &doomed, &pods)
        .await
        .expect_err("adoption refused");
    assert!(
        err.to_string().contains("can't adopt Pod")
            && err.to_string().contains("has just been deleted"),
        "{err}"
    );
    assert_eq!(live("doomed-orphan").await, None, "still not adopted");

    pods.patch(
        "going",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release the finalizer");
    rss.patch(
        "doomed",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release the finalizer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_pod_readiness() {
    let mut env = env("ctl-endpoints").await;
    env.start(&["endpoints"], quick_nodes());
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let svcs: Api<Service> = Api::namespaced(env.client.clone(), &env.ns);
    let eps: Api<Endpoints> = Api::namespaced(env.client.clone(), &env.ns);
    let pp = PostParams::default();
    svcs.create(&pp, &from(json!({"metadata": {"name": "web", "labels": {"team": "t"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}})))
        .await
        .expect("service");
    svcs.create(
        &pp,
        &from(json!({"metadata": {"name": "manual"}, "spec": {"ports": [{"port": 80}]}})),
    )
    .await
    .expect("selectorless service");
    for (name, node) in [("p1", "n1"), ("p2", "n2")] {
        pods.create(&pp, &pod(name, json!({"app": "web"}), Some(node)))
            .await
            .expect("pod");
    }
    pods.create(&pp, &pod("other", json!({"app": "db"}), Some("n1")))
        .await
        .expect("pod");
    set_ready(&pods, "p1", true, Some("127.0.2.1"))
        .await
        .expect("p1");
    set_ready(&pods, "p2", false, Some("127.0.2.2"))
        .await
        .expect("p2");
    set_ready(&pods, "other", true, Some("127.0.2.3"))
        .await
        .expect("other");
    let addrs = |e: &Endpoints| -> (Vec<String>, Vec<String>) {
        let s = e.subsets.clone().unwrap_or_default();
        let ips = |v: Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| {
            v.unwrap_or_default()
                .into_iter()
                .map(|a| a.ip)
                .collect::<Vec<_>>()
        };
        (
            s.iter().flat_map(|x| ips(x.addresses.clone())).collect(),
            s.iter()
                .flat_map(|x| ips(x.not_ready_addresses.clone()))
                .collect(),
        )
    };
    let e = eventually("endpoints with p1 ready and p2 not", || async {
        let e = eps.get("web").await.ok()?;
        (addrs(&e) == (vec!["127.0.2.1".to_string()], vec!["127.0.2.2".to_string()])).then_some(e)
    })
    .await;
    assert_eq!(e.labels()["team"], "t");
    let subset = &e.subsets.as_ref().unwrap()[0];
    let port = &subset.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port, port.protocol.as_deref()),
        (Some("http"), 8080, Some("TCP"))
    );
    let a = &subset.addresses.as_ref().unwrap()[0];
    assert_eq!(a.node_name.as_deref(), Some("n1"));
    let t = a.target_ref.as_ref().unwrap();
    assert_eq!(
        (t.kind.as_deref(), t.name.as_deref()),
        (Some("Pod"), Some("p1"))
    );
    assert_eq!(t.uid, pods.get("p1").await.unwrap().uid());
    // Readiness flips move the addresses.
    set_ready(&pods, "p1", false, None)
        .await
        .expect("p1 not ready");
    set_ready(&pods, "p2", true, None).await.expect("p2 ready");
    eventually("swapped", || async {
        let e = eps.get("web").await.ok()?;
        (addrs(&e) == (vec!["127.0.2.2".to_string()], vec!["127.0.2.1".to_string()])).then_some(())
    })
    .await;
    pods.delete("p2", &DeleteParams::default())
        .await
        .expect("delete p2");
    eventually("p2 gone", || async {
        let e = eps.get("web").await.ok()?;
        (addrs(&e) == (vec![], vec!["127.0.2.1".to_string()])).then_some(())
    })
    .await;
    assert!(
        eps.get_opt("manual").await.unwrap().is_none(),
        "a selectorless Service's Endpoints are the user's"
    );
    svcs.delete("web", &DeleteParams::default())
        .await
        .expect("delete service");
    eventually("endpoints deleted with the service", || async {
        eps.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
}

fn ready_status(node: &Node) -> Option<(String, String)> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_goes_unknown_then_its_pods_are_evicted() {
    let mut env = crate::common::env_with_nodes("ctl-nodes").await;
    env.start(&["nodelifecycle"], quick_nodes());
    let nodes: Api<Node> = Api::all(env.client.clone());
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kube-node-lease");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let pp = PostParams::default();
    let (silent, alive) = ("ctl-nodes-silent", "ctl-nodes-alive");
    let cfg = quick_nodes();
    // The silent node's grace period runs from when the controller last saw
    // its heartbeat or lease change, which is after that write is sent: an
    // instant taken just before it is a lower bound however slow the rest
    // of the setup is.
    let mut started = std::time::Instant::now();
    for n in [silent, alive] {
        let _ = nodes.delete(n, &DeleteParams::default()).await;
        let _ = leases.delete(n, &DeleteParams::default()).await;
        if n == silent {
            started = std::time::Instant::now();
        }
        nodes
            .create(&pp, &from(json!({"metadata": {"name": n}})))
            .await
            .expect("node");
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": now},
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
        nodes
            .patch_status(n, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("node status");
        leases
            .create(&pp, &from(json!({"metadata": {"name": n}, "spec": {"holderIdentity": n, "leaseDurationSeconds": 40, "renewTime": now}})))
            .await
            .expect("lease");
    }
    // The alive node's kubelet keeps renewing its lease.
    let l2 = leases.clone();
    env.spawn(async move {
        for _ in 0..600 {
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let _ = l2
                .patch(
                    alive,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"spec": {"renewTime": now}})),
                )
                .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    pods.create(&pp, &pod("on-silent", json!({"app": "x"}), Some(silent)))
        .await
        .expect("pod");
    pods.create(&pp, &pod("on-alive", json!({"app": "x"}), Some(alive)))
        .await
        .expect("pod");
    set_ready(&pods, "on-silent", true, Some("127.0.3.1"))
        .await
        .expect("ready");
    set_ready(&pods, "on-alive", true, Some("127.0.3.2"))
        .await
        .expect("ready");
    let node = eventually("silent node Unknown", || async {
        let n = nodes.get(silent).await.ok()?;
        (ready_status(&n)? == ("Unknown".into(), "NodeStatusUnknown".into())).then_some(n)
    })
    .await;
    assert!(
        started.elapsed() >= cfg.grace_period,
        "not before the grace period"
    );
    let conds = node.status.as_ref().unwrap().conditions.clone().unwrap();
    let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        ready.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    let mem = conds.iter().find(|c| c.type_ == "MemoryPressure").unwrap();
    assert_eq!(mem.status, "Unknown");
    eventually("unreachable taints", || async {
        let n = nodes.get(silent).await.ok()?;
        let t = n.spec.as_ref()?.taints.clone()?;
        let mut effects: Vec<String> = t
            .iter()
            .filter(|t| t.key == "node.kubernetes.io/unreachable")
            .map(|t| t.effect.clone())
            .collect();
        effects.sort();
        (effects == ["NoExecute", "NoSchedule"]).then_some(())
    })
    .await;
    eventually("pod on the silent node not ready", || async {
        let p = pods.get("on-silent").await.ok()?;
        (!is_ready(&p)).then_some(())
    })
    .await;
    // Evicted: deleted (on a bound pod, a graceful delete that only the
    // silent node's kubelet could finish, as in Kubernetes).
    eventually("pod on the silent node evicted", || async {
        match pods.get_opt("on-silent").await.ok()? {
            None => Some(()),
            Some(p) => p.metadata.deletion_timestamp.map(|_| ()),
        }
    })
    .await;
    // Not ready only once Unknown, evicted only after the eviction timeout.
    assert!(
        started.elapsed() >= cfg.grace_period + cfg.eviction_timeout,
        "evicted only after the eviction timeout"
    );
    let a = nodes.get(alive).await.expect("alive");
    assert_eq!(ready_status(&a).unwrap().0, "True");
    assert!(a
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_none_or(|t| t.is_empty()));
    let kept = pods.get("on-alive").await.expect("still there");
    assert!(is_ready(&kept) && kept.metadata.deletion_timestamp.is_none());
    // The kubelet comes back: Ready again, the taints come off.
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    nodes
        .patch_status(silent, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("node status");
    eventually("taints removed", || async {
        let n = nodes.get(silent).await.ok()?;
        n.spec
            .as_ref()?
            .taints
            .as_ref()
            .is_none_or(|t| t.is_empty())
            .then_some(())
    })
    .await;
    for n in [silent, alive] {
        let _ = nodes.delete(n, &DeleteParams::default()).await;
        let _ = leases.delete(n, &DeleteParams::default()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collector_deletes_dependents_of_deleted_owners() {
    let mut env = env("ctl-gc").await;
    env.start(&["replicaset", "garbagecollector"], quick_nodes());
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let pp = PostParams::default();
    let rs = rss.create(&pp, &replicaset("g", 3, "g")).await.expect("rs");
    let keeper = rss
        .create(&pp, &replicaset("keeper", 0, "keeper"))
        .await
        .expect("keeper");
    eventually("3 pods", || async {
        (list(&pods).await.len() == 3).then_some(())
    })
    .await;
    // A pod owned by both: it loses only the dangling reference.
    let mut shared = pod("shared", json!({"app": "none"}), None);
    let refs = |r: &ReplicaSet, controller: bool| {
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": r.name_any(), "uid": r.uid(), "controller": controller})
    };
    shared.metadata.owner_references =
        Some(vec![from(refs(&rs, false)), from(refs(&keeper, false))]);
    pods.create(&pp, &shared).await.expect("shared");
    // A pod whose owner's name exists with another uid: gone.
    let mut impostor = pod("impostor", json!({"app": "none"}), None);
    impostor.metadata.owner_references = Some(vec![from(
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "keeper", "uid": "00000000-0000-0000-0000-000000000000"}),
    )]);
    pods.create(&pp, &impostor).await.expect("impostor");
    rss.delete("g", &DeleteParams::default())
        .await
        .expect("delete rs");
    let left = eventually("dependents collected", || async {
        let l = list(&pods).await;
        (l.len() == 1).then_some(l)
    })
    .await;
    assert_eq!(left[0].name_any(), "shared");
    let remaining: Vec<String> = eventually("dangling reference removed", || async {
        let p = pods.get("shared").await.ok()?;
        let r: Vec<String> = p
            .owner_references()
            .iter()
            .map(|r| r.name.clone())
            .collect();
        (r.len() == 1).then_some(r)
    })
    .await;
    assert_eq!(remaining, ["keeper"]);
}

/// Whether this apiserver implements propagationPolicy with finalizers
/// (a DELETE with Orphan leaves the object with the `orphan` finalizer).
async fn apiserver_has_finalizers(env: &common::Env) -> bool {
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(env.client.clone(), &env.ns);
    let _ = cms
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": "probe", "finalizers": ["example.com/hold"]}})),
        )
        .await;
    let r = cms.delete("probe", &DeleteParams::default()).await;
    let held = cms
        .get_opt("probe")
        .await
        .ok()
        .flatten()
        .is_some_and(|c| c.metadata.deletion_timestamp.is_some());
    if held {
        let _ = cms
            .patch(
                "probe",
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
            )
            .await;
    }
    r.is_ok() && held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collector_orphans_and_deletes_in_the_foreground() {
    let mut env = env("ctl-gc-fg").await;
    if !apiserver_has_finalizers(&env).await {
        println!("SKIPPED: the apiserver does not keep objects with finalizers yet");
        return;
    }
    env.start(&["replicaset", "garbagecollector"], quick_nodes());
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let pp = PostParams::default();
    // Orphan: the pods stay, without their owner reference.
    let o = rss.create(&pp, &replicaset("o", 2, "o")).await.expect("rs");
    eventually("2 pods", || async {
        (list(&pods).await.len() == 2).then_some(())
    })
    .await;
    rss.delete("o", &DeleteParams::orphan())
        .await
        .expect("orphan delete");
    eventually("rs gone", || async {
        rss.get_opt("o").await.ok()?.is_none().then_some(())
    })
    .await;
    let left = eventually("pods orphaned", || async {
        let l = list(&pods).await;
        (l.len() == 2 && l.iter().all(|p| p.owner_references().is_empty())).then_some(l)
    })
    .await;
    assert!(left.iter().all(|p| controller_of(p) != o.uid()));
    for p in left {
        pods.delete(&p.name_any(), &DeleteParams::default())
            .await
            .expect("cleanup");
    }
    // Foreground: the owner goes only after its pods.
    rss.create(&pp, &replicaset("f", 2, "f")).await.expect("rs");
    eventually("2 pods", || async {
        (list(&pods).await.len() == 2).then_some(())
    })
    .await;
    rss.delete("f", &DeleteParams::foreground())
        .await
        .expect("foreground delete");
    eventually("owner and pods gone", || async {
        let rs = rss.get_opt("f").await.ok()?;
        let n = list(&pods).await.len();
        assert!(!(rs.is_none() && n > 0), "owner gone before its dependents");
        (rs.is_none() && n == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_replicas_are_created_exactly() {
    let mut env = env("ctl-3000").await;
    env.start(&["replicaset"], quick_nodes());
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let census = pod_census(&mut env);
    eventually("census started", || async {
        (census.lock().unwrap().1 == 0).then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    rss.create(&PostParams::default(), &replicaset("big", 3000, "big"))
        .await
        .expect("create");
    eventually("status replicas 3000", || async {
        let rs = rss.get("big").await.ok()?;
        (rs.status?.replicas == 3000).then_some(())
    })
    .await;
    println!("3000 pods created and counted in {:?}", started.elapsed());
    assert_eq!(list(&pods).await.len(), 3000);
    assert_eq!(census.lock().unwrap().0, 3000, "never more than 3000 pods");
    let started = std::time::Instant::now();
    rss.patch(
        "big",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 0}})),
    )
    .await
    .expect("scale to 0");
    eventually("all deleted", || async {
        list(&pods).await.is_empty().then_some(())
    })
    .await;
    println!("3000 pods deleted in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_progress_deadline_and_min_ready_seconds() {
    let mut env = env("ctl-paused").await;
    env.start(ALL, quick_nodes());
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    // No kubelet: the pods never get ready, so the rollout times out.
    let mut manifest = deployment("stuck", 2, "busybox:1.36");
    manifest["spec"]["progressDeadlineSeconds"] = json!(1);
    deploys
        .create(&PostParams::default(), &from(manifest))
        .await
        .expect("create");
    let d = eventually("ProgressDeadlineExceeded", || async {
        let d = deploys.get("stuck").await.ok()?;
        (condition(&d, "Progressing")? == ("False".into(), "ProgressDeadlineExceeded".into()))
            .then_some(d)
    })
    .await;
    assert_eq!(condition(&d, "Available").unwrap().0, "False");
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out) = kubectl(
        &env,
        dir.path(),
        &["rollout", "status", "deployment/stuck", "--timeout=20s"],
    )
    .await;
    assert_ne!(code, 0);
    assert!(out.contains("exceeded its progress deadline"), "{out}");

    // Paused: a template change makes no ReplicaSet until resumed.
    let mut manifest = deployment("slow", 2, "busybox:1.36");
    manifest["spec"]["minReadySeconds"] = json!(2);
    deploys
        .create(&PostParams::default(), &from(manifest))
        .await
        .expect("create");
    let slow_pods = eventually("2 pods", || async {
        let l: Vec<Pod> = list(&pods)
            .await
            .into_iter()
            .filter(|p| p.labels()["app"] == "slow")
            .collect();
        (l.len() == 2).then_some(l)
    })
    .await;
    for p in &slow_pods {
        set_ready(&pods, &p.name_any(), true, Some("127.0.4.1"))
            .await
            .expect("ready");
    }
    let ready_at = k8s_openapi::jiff::Timestamp::now();
    eventually("available after minReadySeconds", || async {
        let d = deploys.get("slow").await.ok()?;
        let s = d.status?;
        if s.available_replicas == Some(2) {
            // Ready for 2 s before it counts as available (1 s of clock granularity).
            assert!(k8s_openapi::jiff::Timestamp::now().as_second() > ready_at.as_second());
            return Some(());
        }
        None
    })
    .await;
    deploys
        .patch(
            "slow",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"paused": true}})),
        )
        .await
        .expect("pause");
    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1.37"}]}}}});
    deploys
        .patch("slow", &PatchParams::default(), &Patch::Strategic(&image))
        .await
        .expect("image");
    eventually("DeploymentPaused", || async {
        let d = deploys.get("slow").await.ok()?;
        (condition(&d, "Progressing")? == ("Unknown".into(), "DeploymentPaused".into())
            && d.status.as_ref()?.observed_generation == d.metadata.generation)
            .then_some(())
    })
    .await;
    let slow_rs = |l: Vec<ReplicaSet>| {
        l.into_iter()
            .filter(|r| r.name_any().starts_with("slow-"))
            .count()
    };
    assert_eq!(slow_rs(list(&rss).await), 1, "paused: no new ReplicaSet");
    deploys
        .patch(
            "slow",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"paused": false}})),
        )
        .await
        .expect("resume");
    eventually("resumed: a new ReplicaSet", || async {
        (slow_rs(list(&rss).await) == 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_deployment_collects_its_replicasets_and_pods() {
    let mut env = env("ctl-gc-deploy").await;
    env.start(ALL, quick_nodes());
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    for name in ["bg", "fg"] {
        deploys
            .create(
                &PostParams::default(),
                &from(deployment(name, 2, "busybox:1.36")),
            )
            .await
            .expect("create");
    }
    eventually("4 pods", || async {
        (list(&pods).await.len() == 4).then_some(())
    })
    .await;
    // Background (kubectl's default): the Deployment goes at once, then
    // its ReplicaSet, then the pods.
    deploys
        .delete("bg", &DeleteParams::background())
        .await
        .expect("delete");
    eventually("bg collected", || async {
        let rs = list(&rss)
            .await
            .iter()
            .filter(|r| r.name_any().starts_with("bg-"))
            .count();
        let p = list(&pods)
            .await
            .iter()
            .filter(|p| p.labels()["app"] == "bg")
            .count();
        (rs == 0 && p == 0).then_some(())
    })
    .await;
    // Foreground: the Deployment is the last to go.
    deploys
        .delete("fg", &DeleteParams::foreground())
        .await
        .expect("delete");
    eventually("fg collected, owner last", || async {
        let d = deploys.get_opt("fg").await.ok()?;
        let rs = list(&rss).await.len();
        let p = list(&pods).await.len();
        assert!(
            d.is_some() || (rs == 0 && p == 0),
            "deployment gone before its dependents"
        );
        (d.is_none()).then_some(())
    })
    .await;
    assert!(list(&pods).await.is_empty() && list(&rss).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_mid_rollout_is_proportional() {
    let mut env = env("ctl-proportional").await;
    env.start(ALL, quick_nodes());
    let deploys: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let rss: Api<ReplicaSet> = Api::namespaced(env.client.clone(), &env.ns);
    // No kubelet: no pod ever gets ready, so the rollout stalls half way.
    let mut manifest = deployment("prop", 10, "busybox:1.36");
    manifest["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}});
    deploys
        .create(&PostParams::default(), &from(manifest))
        .await
        .expect("create");
    eventually("10 pods counted", || async {
        let d = deploys.get("prop").await.ok()?;
        (status_of(&d).0 == 10).then_some(())
    })
    .await;
    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1.37"}]}}}});
    deploys
        .patch("prop", &PatchParams::default(), &Patch::Strategic(&image))
        .await
        .expect("image");
    let sizes = || async {
        let mut l = list(&rss).await;
        l.sort_by_key(|r| r.annotations()["deployment.kubernetes.io/revision"].clone());
        l.iter()
            .map(|r| {
                (
                    r.spec.as_ref().unwrap().replicas.unwrap(),
                    r.status.as_ref().map(|s| s.replicas),
                )
            })
            .collect::<Vec<_>>()
    };
    // 2 unavailable old pods go, 3 surge, then 2 more new: 8 old, 5 new.
    eventually("stalled at 8 + 5", || async {
        (sizes().await == [(8, Some(8)), (5, Some(5))]).then_some(())
    })
    .await;
    deploys
        .patch(
            "prop",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 20}})),
        )
        .await
        .expect("scale");
    // 20 + 3 surge = 23, shared as 8:5 of the 13 they were sized for.
    eventually("scaled proportionally to 14 + 9", || async {
        (sizes().await == [(14, Some(14)), (9, Some(9))]).then_some(())
    })
    .await;
}
