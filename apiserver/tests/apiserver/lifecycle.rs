//! The pod flow's API against a real etcd 3.4: default namespaces, binding,
//! graceful deletion, finalizers and propagation policies,
//! deletecollection, the scale subresource, `pods/log` through a kubelet,
//! and event field selectors — over raw HTTP and through kube-rs.

use std::time::Duration;

use crate::common::{names, namespace, pod, start, Api};
use ballast_apiserver::CacheConfig;
use ballast_tests::ClusterKind;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

async fn start_api() -> Api {
    start(ClusterKind::Etcd, CacheConfig::default()).await
}

fn client(api: &Api) -> kube::Client {
    let url = format!("http://{}", api.addr).parse().expect("url");
    kube::Client::try_from(kube::Config::new(url)).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_namespaces_exist_and_the_immortal_ones_stay() {
    let api = start_api().await;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let (code, body) = api
            .call("GET", &format!("/api/v1/namespaces/{ns}"), None)
            .await;
        assert_eq!(code, 200, "{ns}: {body}");
        assert_eq!(body["status"]["phase"], "Active");
        assert_eq!(
            body["metadata"]["labels"]["kubernetes.io/metadata.name"],
            ns
        );
    }
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let (code, status) = api
            .call("DELETE", &format!("/api/v1/namespaces/{ns}"), None)
            .await;
        assert_eq!(
            (code, status["reason"].as_str()),
            (403, Some("Forbidden")),
            "{status}"
        );
        assert_eq!(
            status["message"],
            format!("namespaces \"{ns}\" is forbidden: this namespace may not be deleted")
        );
    }
    // A second apiserver on the same storage finds them and is ready too.
    let second = start_api().await;
    let (code, _) = second
        .call("GET", "/api/v1/namespaces/kube-system", None)
        .await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_assigns_a_node_once() {
    let api = start_api().await;
    let ns = namespace(&api, "lc-binding").await;
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    assert_eq!(
        api.call("POST", &pods, Some(pod("p", json!({}), "")))
            .await
            .0,
        201
    );
    let mut watch = api
        .watch(&format!("{pods}?watch=1&fieldSelector=spec.nodeName%3Dn1"))
        .await;

    // Through kube-rs, as the scheduler binds.
    let kube_pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client(&api), &ns);
    use k8s_openapi::api::core::v1::{Binding, ObjectReference};
    let binding = Binding {
        metadata: kube::api::ObjectMeta {
            name: Some("p".into()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some("n1".into()),
            ..Default::default()
        },
    };
    let status: Value = kube_pods
        .create_subresource("binding", "p", &Default::default(), &binding)
        .await
        .expect("bind through kube-rs");
    assert_eq!(
        (status["kind"].as_str(), status["status"].as_str()),
        (Some("Status"), Some("Success"))
    );
    let (_, got) = api.call("GET", &format!("{pods}/p"), None).await;
    assert_eq!(got["spec"]["nodeName"], "n1");
    let cond = got["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"))
        .cloned()
        .expect("PodScheduled condition");
    assert_eq!(cond["status"], "True");
    // The node's watch (spec.nodeName index) sees the pod arrive.
    let e = watch.next_event(WAIT).await.expect("event on n1's watch");
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("p"))
    );

    // Raw HTTP: 201 with a Success Status; again → 409.
    assert_eq!(
        api.call("POST", &pods, Some(pod("q", json!({}), "")))
            .await
            .0,
        201
    );
    let bind =
        |node: &str| json!({"metadata": {"name": "q"}, "target": {"kind": "Node", "name": node}});
    let (code, body) = api
        .call("POST", &format!("{pods}/q/binding"), Some(bind("n2")))
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
    );
    let (code, status) = api
        .call("POST", &format!("{pods}/q/binding"), Some(bind("n3")))
        .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (409, Some("Conflict")),
        "{status}"
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("pod q is already assigned to node \"n2\""),
        "{status}"
    );
    let (_, q) = api.call("GET", &format!("{pods}/q"), None).await;
    assert_eq!(q["spec"]["nodeName"], "n2");

    // Errors: no such pod, no target, a target that is not a node, a name mismatch.
    let (code, status) = api
        .call(
            "POST",
            &format!("{pods}/nope/binding"),
            Some(json!({"metadata": {"name": "nope"}, "target": {"kind": "Node", "name": "n1"}})),
        )
        .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (404, Some("NotFound")),
        "{status}"
    );
    assert_eq!(
        api.call("POST", &pods, Some(pod("r", json!({}), "")))
            .await
            .0,
        201
    );
    let (code, status) = api
        .call(
            "POST",
            &format!("{pods}/r/binding"),
            Some(json!({"metadata": {"name": "r"}})),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["details"]["causes"][0]["field"], "target.name");
    let (code, _) = api
        .call(
            "POST",
            &format!("{pods}/r/binding"),
            Some(json!({"metadata": {"name": "r"}, "target": {"kind": "Pod", "name": "x"}})),
        )
        .await;
    assert_eq!(code, 422);
    let (code, _) = api
        .call(
            "POST",
            &format!("{pods}/r/binding"),
            Some(json!({"metadata": {"name": "other"}, "target": {"kind": "Node", "name": "n1"}})),
        )
        .await;
    assert_eq!(code, 400);
    let (code, _) = api.call("GET", &format!("{pods}/r/binding"), None).await;
    assert_eq!(code, 405);
    let (_, r) = api.call("GET", &format!("{pods}/r"), None).await;
    assert!(r["spec"]["nodeName"].is_null(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_deleted_gracefully_when_bound() {
    let api = start_api().await;
    let ns = namespace(&api, "lc-graceful").await;
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    assert_eq!(
        api.call("POST", &pods, Some(pod("bound", json!({}), "n1")))
            .await
            .0,
        201
    );
    assert_eq!(
        api.call("POST", &pods, Some(pod("loose", json!({}), "")))
            .await
            .0,
        201
    );
    let mut watch = api
        .watch(&format!(
            "{pods}?watch=1&fieldSelector=metadata.name%3Dbound"
        ))
        .await;
    assert_eq!(
        watch.next_event(WAIT).await.expect("initial ADDED")["type"],
        "ADDED"
    );

    // Unbound: removed at once.
    let (code, _) = api.call("DELETE", &format!("{pods}/loose"), None).await;
    assert_eq!(code, 200);
    assert_eq!(api.call("GET", &format!("{pods}/loose"), None).await.0, 404);

    // Bound: deletionTimestamp = now + 30 s, kept.
    let (code, first) = api.call("DELETE", &format!("{pods}/bound"), None).await;
    assert_eq!(code, 200, "{first}");
    assert_eq!(first["metadata"]["deletionGracePeriodSeconds"], 30);
    let at = first["metadata"]["deletionTimestamp"]
        .as_str()
        .expect("deletionTimestamp")
        .to_string();
    let (code, got) = api.call("GET", &format!("{pods}/bound"), None).await;
    assert_eq!(
        (code, &got["metadata"]["deletionTimestamp"]),
        (200, &json!(at))
    );
    let e = watch.next_event(WAIT).await.expect("MODIFIED");
    assert_eq!(e["type"], "MODIFIED");
    assert_eq!(e["object"]["metadata"]["deletionGracePeriodSeconds"], 30);

    // Clients cannot move deletionTimestamp.
    let mut edit = got.clone();
    edit["metadata"]["deletionTimestamp"] = json!("2000-01-01T00:00:00Z");
    edit["metadata"]["labels"] = json!({"edited": "yes"});
    let (code, edited) = api.call("PUT", &format!("{pods}/bound"), Some(edit)).await;
    assert_eq!(code, 200, "{edited}");
    assert_eq!(edited["metadata"]["deletionTimestamp"], json!(at));
    let _ = watch.next_event(WAIT).await.expect("MODIFIED (label)");

    // A longer grace changes nothing; a shorter one moves the deadline.
    let (code, same) = api
        .call(
            "DELETE",
            &format!("{pods}/bound"),
            Some(json!({"gracePeriodSeconds": 60})),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(same["metadata"]["deletionGracePeriodSeconds"], 30);
    let (code, shorter) = api
        .call(
            "DELETE",
            &format!("{pods}/bound?gracePeriodSeconds=10"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{shorter}");
    assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 10);
    assert!(shorter["metadata"]["deletionTimestamp"].as_str().unwrap() < at.as_str());

    // Preconditions.
    let (code, status) = api
        .call(
            "DELETE",
            &format!("{pods}/bound"),
            Some(json!({"gracePeriodSeconds": 0, "preconditions": {"resourceVersion": "1"}})),
        )
        .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (409, Some("Conflict")),
        "{status}"
    );
    let (code, _) = api
        .call(
            "DELETE",
            &format!("{pods}/bound"),
            Some(json!({"gracePeriodSeconds": 0, "preconditions": {"uid": "someone-else"}})),
        )
        .await;
    assert_eq!(code, 409);
    // dryRun changes nothing.
    let (code, _) = api
        .call(
            "DELETE",
            &format!("{pods}/bound?gracePeriodSeconds=0&dryRun=All"),
            None,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(api.call("GET", &format!("{pods}/bound"), None).await.0, 200);

    // The kubelet's final delete (grace 0, through kube-rs): gone.
    let kube_pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client(&api), &ns);
    let uid = got["metadata"]["uid"].as_str().unwrap().to_string();
    let dp = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(kube::api::Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    kube_pods.delete("bound", &dp).await.expect("final delete");
    assert_eq!(api.call("GET", &format!("{pods}/bound"), None).await.0, 404);
    let mut saw_deleted = false;
    for _ in 0..10 {
        match watch.next_event(WAIT).await {
            Some(e) if e["type"] == "DELETED" => {
                saw_deleted = true;
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    assert!(saw_deleted, "watchers see DELETED");

    // A finished pod goes at once even when bound.
    assert_eq!(
        api.call("POST", &pods, Some(pod("done", json!({}), "n1")))
            .await
            .0,
        201
    );
    let (code, _) = api
        .call(
            "PATCH",
            &format!("{pods}/done/status"),
            Some(json!({"status": {"phase": "Succeeded"}})),
        )
        .await;
    assert_eq!(code, 415); // PATCH needs a patch content type...
    let (code, _) = api
        .raw(
            "PATCH",
            &format!("{pods}/done/status"),
            Some(Bytes::from(
                json!({"status": {"phase": "Succeeded"}}).to_string(),
            )),
            "application/merge-patch+json",
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        api.call("DELETE", &format!("{pods}/done"), None).await.0,
        200
    );
    assert_eq!(api.call("GET", &format!("{pods}/done"), None).await.0, 404);

    // Bad options.
    let (code, _) = api
        .call("DELETE", &format!("{pods}/x?gracePeriodSeconds=soon"), None)
        .await;
    assert_eq!(code, 400);
    let (code, _) = api
        .call(
            "DELETE",
            &format!("{pods}/x"),
            Some(json!({"propagationPolicy": "Sometimes"})),
        )
        .await;
    assert_eq!(code, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_hold_objects_until_removed() {
    let api = start_api().await;
    let ns = namespace(&api, "lc-finalizers").await;
    let cms = format!("/api/v1/namespaces/{ns}/configmaps");
    let merge = |body: Value| Some(Bytes::from(body.to_string()));
    let cm = json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}, "data": {"a": "1"}});
    assert_eq!(api.call("POST", &cms, Some(cm)).await.0, 201);
    let mut watch = api.watch(&format!("{cms}?watch=1")).await;
    assert_eq!(
        watch.next_event(WAIT).await.expect("initial ADDED")["type"],
        "ADDED"
    );

    let (code, held) = api.call("DELETE", &format!("{cms}/held"), None).await;
    assert_eq!(code, 200, "{held}");
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(held["metadata"]["deletionGracePeriodSeconds"], 0);
    assert_eq!(api.call("GET", &format!("{cms}/held"), None).await.0, 200);
    assert_eq!(
        watch.next_event(WAIT).await.expect("MODIFIED")["type"],
        "MODIFIED"
    );

    // No new finalizers once deleting.
    let (code, status) = api
        .raw(
            "PATCH",
            &format!("{cms}/held"),
            merge(json!({"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}})),
            "application/merge-patch+json",
        )
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "metadata.finalizers"
    );
    // Other updates are fine; the last finalizer's removal deletes it.
    let (code, _) = api
        .raw(
            "PATCH",
            &format!("{cms}/held"),
            merge(json!({"data": {"a": "2"}})),
            "application/merge-patch+json",
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        watch.next_event(WAIT).await.expect("MODIFIED")["type"],
        "MODIFIED"
    );
    let (code, _) = api
        .raw(
            "PATCH",
            &format!("{cms}/held"),
            merge(json!({"metadata": {"finalizers": null}})),
            "application/merge-patch+json",
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(api.call("GET", &format!("{cms}/held"), None).await.0, 404);
    let e = watch.next_event(WAIT).await.expect("DELETED");
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("DELETED"), Some("held"))
    );

    // Propagation policies: Foreground and Orphan leave the object to the
    // garbage collector with its finalizer; Background deletes at once.
    for (policy, finalizer) in [("Foreground", "foregroundDeletion"), ("Orphan", "orphan")] {
        let name = policy.to_lowercase();
        assert_eq!(
            api.call("POST", &cms, Some(json!({"metadata": {"name": name}})))
                .await
                .0,
            201
        );
        let (code, kept) = api
            .call("DELETE", &format!("{cms}/{name}"), Some(json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": policy})))
            .await;
        assert_eq!(code, 200, "{kept}");
        assert_eq!(kept["metadata"]["finalizers"], json!([finalizer]));
        assert!(kept["metadata"]["deletionTimestamp"].is_string());
        // The garbage collector's update removing it finishes the delete.
        let mut done = kept.clone();
        done["metadata"]["finalizers"] = json!([]);
        assert_eq!(
            api.call("PUT", &format!("{cms}/{name}"), Some(done))
                .await
                .0,
            200
        );
        assert_eq!(api.call("GET", &format!("{cms}/{name}"), None).await.0, 404);
    }
    assert_eq!(
        api.call("POST", &cms, Some(json!({"metadata": {"name": "bg"}})))
            .await
            .0,
        201
    );
    let (code, _) = api
        .call(
            "DELETE",
            &format!("{cms}/bg?propagationPolicy=Background"),
            None,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(api.call("GET", &format!("{cms}/bg"), None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletecollection_by_selector() {
    let api = start_api().await;
    let ns = namespace(&api, "lc-collection").await;
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    for (name, app, node) in [("a1", "a", ""), ("a2", "a", "n1"), ("b1", "b", "")] {
        assert_eq!(
            api.call("POST", &pods, Some(pod(name, json!({"app": app}), node)))
                .await
                .0,
            201
        );
    }
    let (code, list) = api
        .call("DELETE", &format!("{pods}?labelSelector=app%3Da"), None)
        .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["kind"], "PodList");
    let mut deleted = names(&list);
    deleted.sort();
    assert_eq!(deleted, ["a1", "a2"]);
    // a1 (unbound) is gone; a2 (bound) is terminating; b1 untouched.
    assert_eq!(api.call("GET", &format!("{pods}/a1"), None).await.0, 404);
    let (_, a2) = api.call("GET", &format!("{pods}/a2"), None).await;
    assert!(a2["metadata"]["deletionTimestamp"].is_string(), "{a2}");
    let (_, b1) = api.call("GET", &format!("{pods}/b1"), None).await;
    assert!(b1["metadata"]["deletionTimestamp"].is_null());

    // Field selectors and options apply too.
    let (code, list) = api
        .call(
            "DELETE",
            &format!("{pods}?fieldSelector=metadata.name%3Da2"),
            Some(json!({"gracePeriodSeconds": 0})),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(names(&list), ["a2"]);
    assert_eq!(api.call("GET", &format!("{pods}/a2"), None).await.0, 404);

    // Configmaps, through kube-rs.
    let cms = format!("/api/v1/namespaces/{ns}/configmaps");
    for n in ["c1", "c2"] {
        assert_eq!(
            api.call(
                "POST",
                &cms,
                Some(json!({"metadata": {"name": n, "labels": {"x": "y"}}}))
            )
            .await
            .0,
            201
        );
    }
    let kube_cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client(&api), &ns);
    let lp = kube::api::ListParams::default().labels("x=y");
    let out = kube_cms
        .delete_collection(&Default::default(), &lp)
        .await
        .expect("delete_collection");
    let gone = out.left().expect("a list of what was deleted");
    assert_eq!(gone.items.len(), 2);
    let (_, left) = api.call("GET", &cms, None).await;
    assert!(names(&left).is_empty(), "{left}");

    // Not on all namespaces, not on namespaces.
    assert_eq!(api.call("DELETE", "/api/v1/pods", None).await.0, 405);
    assert_eq!(api.call("DELETE", "/api/v1/namespaces", None).await.0, 405);
    // Discovery says so.
    let (_, v1) = api.call("GET", "/api/v1", None).await;
    let verbs = |name: &str| {
        v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["verbs"].clone())
    };
    assert!(verbs("pods")
        .unwrap()
        .as_array()
        .unwrap()
        .contains(&json!("deletecollection")));
    assert!(!verbs("namespaces")
        .unwrap()
        .as_array()
        .unwrap()
        .contains(&json!("deletecollection")));
    assert_eq!(verbs("pods/binding"), Some(json!(["create"])));
    assert_eq!(verbs("pods/log"), Some(json!(["get"])));
    assert_eq!(
        verbs("pods/status"),
        Some(json!(["get", "patch", "update"]))
    );
}

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_subresource() {
    let api = start_api().await;
    let ns = namespace(&api, "lc-scale").await;
    let deps = format!("/apis/apps/v1/namespaces/{ns}/deployments");
    assert_eq!(
        api.call("POST", &deps, Some(deployment("web"))).await.0,
        201
    );
    let (code, scale) = api.call("GET", &format!("{deps}/web/scale"), None).await;
    assert_eq!(code, 200, "{scale}");
    assert_eq!(
        (scale["kind"].as_str(), scale["apiVersion"].as_str()),
        (Some("Scale"), Some("autoscaling/v1"))
    );
    assert_eq!(scale["spec"]["replicas"], 2);
    assert_eq!(
        scale["status"],
        json!({"replicas": 0, "selector": "app=web"})
    );

    // PATCH (what `kubectl scale` sends).
    let (code, scaled) = api
        .raw(
            "PATCH",
            &format!("{deps}/web/scale"),
            Some(Bytes::from(r#"{"spec":{"replicas":5}}"#)),
            "application/merge-patch+json",
        )
        .await;
    assert_eq!(code, 200, "{scaled}");
    assert_eq!(scaled["spec"]["replicas"], 5);
    let (_, d) = api.call("GET", &format!("{deps}/web"), None).await;
    assert_eq!(
        (
            d["spec"]["replicas"].as_i64(),
            d["metadata"]["generation"].as_i64()
        ),
        (Some(5), Some(2))
    );
    assert_eq!(
        scaled["metadata"]["resourceVersion"],
        d["metadata"]["resourceVersion"]
    );

    // PUT with the current resourceVersion, then a stale one → 409.
    let mut put = scaled.clone();
    put["spec"]["replicas"] = json!(1);
    let (code, after) = api
        .call("PUT", &format!("{deps}/web/scale"), Some(put.clone()))
        .await;
    assert_eq!(code, 200, "{after}");
    assert_eq!(after["spec"]["replicas"], 1);
    let (code, status) = api
        .call("PUT", &format!("{deps}/web/scale"), Some(put))
        .await;
    assert_eq!((code, status["reason"].as_str()), (409, Some("Conflict")));
    // Negative → 422; unknown → 404; wrong kind → 400.
    let (code, status) = api
        .call(
            "PUT",
            &format!("{deps}/web/scale"),
            Some(json!({"spec": {"replicas": -1}})),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["details"]["causes"][0]["field"], "spec.replicas");
    assert_eq!(
        api.call("GET", &format!("{deps}/nope/scale"), None).await.0,
        404
    );
    let (code, _) = api
        .call(
            "PUT",
            &format!("{deps}/web/scale"),
            Some(json!({"kind": "Pod", "spec": {"replicas": 1}})),
        )
        .await;
    assert_eq!(code, 400);

    // Replica sets too, through kube-rs.
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"},
        "spec": {"selector": {"matchLabels": {"app": "rs"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]},
                 "template": {"metadata": {"labels": {"app": "rs", "tier": "a"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
    assert_eq!(
        api.call(
            "POST",
            &format!("/apis/apps/v1/namespaces/{ns}/replicasets"),
            Some(rs)
        )
        .await
        .0,
        201
    );
    let kube_rs: kube::Api<k8s_openapi::api::apps::v1::ReplicaSet> =
        kube::Api::namespaced(client(&api), &ns);
    let patch = kube::api::Patch::Merge(json!({"spec": {"replicas": 4}}));
    let s = kube_rs
        .patch_scale("rs", &Default::default(), &patch)
        .await
        .expect("patch_scale");
    assert_eq!(s.spec.and_then(|s| s.replicas), Some(4));
    let s = kube_rs.get_scale("rs").await.expect("get_scale");
    assert_eq!(
        s.status.map(|s| s.selector),
        Some(Some("app=rs,tier in (a,b)".to_string()))
    );
    let (_, v1) = api.call("GET", "/apis/apps/v1", None).await;
    let scale_entry = v1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "deployments/scale")
        .cloned()
        .expect("deployments/scale listed");
    assert_eq!(
        (scale_entry["group"].as_str(), scale_entry["kind"].as_str()),
        (Some("autoscaling"), Some("Scale"))
    );
}

/// A stand-in for the kubelet's `/containerLogs` endpoint (the real kubelet
/// lives in another crate, written in parallel): records the request line,
/// answers two chunks of log, the second only once `release` fires, so the
/// test can see that the apiserver streams.
async fn fake_kubelet() -> (
    u16,
    tokio::sync::mpsc::Receiver<String>,
    tokio::sync::mpsc::Sender<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (req_tx, req_rx) = tokio::sync::mpsc::channel(16);
    let (release_tx, mut release_rx) = tokio::sync::mpsc::channel::<()>(16);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let line = head.lines().next().unwrap_or_default().to_string();
            let _ = req_tx.send(line.clone()).await;
            if line.contains("/missing ") {
                let body = "container not found";
                let resp = format!("HTTP/1.1 404 Not Found\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n{body}", body.len());
                let _ = sock.write_all(resp.as_bytes()).await;
                continue;
            }
            let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n").await;
            let _ = sock.write_all(b"6\r\nline1\n\r\n").await;
            let _ = sock.flush().await;
            let _ = tokio::time::timeout(WAIT, release_rx.recv()).await;
            let _ = sock.write_all(b"6\r\nline2\n\r\n0\r\n\r\n").await;
        }
    });
    (port, req_rx, release_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_logs_stream_from_the_kubelet() {
    let api = start_api().await;
    let ns = namespace(&api, "lc-logs").await;
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    let (port, mut requests, release) = fake_kubelet().await;
    let node = json!({"metadata": {"name": "lc-logs-node"}, "status": {
        "addresses": [{"type": "Hostname", "address": "ignored.invalid"}, {"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
    let (code, body) = api.call("POST", "/api/v1/nodes", Some(node)).await;
    assert_eq!(code, 201, "{body}");
    // Status is not written by create: set it through /status.
    let status = json!({"status": {
        "addresses": [{"type": "Hostname", "address": "ignored.invalid"}, {"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
    let (code, _) = api
        .raw(
            "PATCH",
            "/api/v1/nodes/lc-logs-node/status",
            Some(Bytes::from(status.to_string())),
            "application/merge-patch+json",
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        api.call("POST", &pods, Some(pod("web", json!({}), "lc-logs-node")))
            .await
            .0,
        201
    );

    // follow=true streams: the first chunk arrives before the second exists.
    let resp = api
        .send_with(
            "GET",
            &format!("{pods}/web/log?follow=true&tailLines=10&timestamps=true"),
            None,
            "application/json",
            "*/*",
        )
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    let line = requests.recv().await.expect("the kubelet was asked");
    assert_eq!(
        line,
        format!("GET /containerLogs/{ns}/web/c?follow=true&tailLines=10&timestamps=true HTTP/1.1")
    );
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while !got.ends_with(b"line1\n") {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("first chunk in time");
        let Some(Ok(frame)) = frame else {
            panic!("stream ended early")
        };
        if let Ok(d) = frame.into_data() {
            got.extend_from_slice(&d);
        }
    }
    release.send(()).await.expect("release");
    let rest = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("rest in time")
        .expect("rest");
    got.extend_from_slice(&rest.to_bytes());
    assert_eq!(String::from_utf8_lossy(&got), "line1\nline2\n");

    // Several containers: one must be named.
    let mut two = pod("two", json!({}), "lc-logs-node");
    two["spec"]["containers"] = json!([{"name": "a", "image": "x"}, {"name": "b", "image": "x"}]);
    assert_eq!(api.call("POST", &pods, Some(two)).await.0, 201);
    let (code, status) = api.call("GET", &format!("{pods}/two/log"), None).await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        status["message"],
        "a container name must be specified for pod two, choose one of: [a b]"
    );
    let (code, status) = api
        .call("GET", &format!("{pods}/two/log?container=zz"), None)
        .await;
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")));
    // Through kube-rs, naming the container.
    release.send(()).await.expect("release");
    let kube_pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client(&api), &ns);
    let lp = kube::api::LogParams {
        container: Some("b".into()),
        ..Default::default()
    };
    let text = kube_pods
        .logs("two", &lp)
        .await
        .expect("logs through kube-rs");
    assert_eq!(text, "line1\nline2\n");
    assert_eq!(
        requests.recv().await.unwrap(),
        format!("GET /containerLogs/{ns}/two/b HTTP/1.1")
    );

    // The kubelet's errors are passed on; unbound pods have no logs.
    let mut missing = pod("missing", json!({}), "lc-logs-node");
    missing["spec"]["containers"][0]["name"] = json!("missing");
    assert_eq!(api.call("POST", &pods, Some(missing)).await.0, 201);
    let (code, status) = api.call("GET", &format!("{pods}/missing/log"), None).await;
    assert_eq!(
        (code, status["message"].as_str()),
        (404, Some("container not found")),
        "{status}"
    );
    assert_eq!(
        api.call("POST", &pods, Some(pod("pending", json!({}), "")))
            .await
            .0,
        201
    );
    let (code, status) = api.call("GET", &format!("{pods}/pending/log"), None).await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        api.call("GET", &format!("{pods}/nope/log"), None).await.0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_select_by_involved_object() {
    let api = start_api().await;
    let ns = namespace(&api, "lc-events").await;
    let events = format!("/api/v1/namespaces/{ns}/events");
    for (name, kind, obj, reason, ty) in [
        ("e1", "Pod", "web", "Scheduled", "Normal"),
        ("e2", "Pod", "web", "BackOff", "Warning"),
        ("e3", "Pod", "db", "Scheduled", "Normal"),
        ("e4", "Node", "n1", "Ready", "Normal"),
    ] {
        let ev = json!({"metadata": {"name": name},
            "involvedObject": {"kind": kind, "name": obj, "namespace": ns, "uid": format!("uid-{obj}")},
            "reason": reason, "type": ty, "message": "m", "source": {"component": "kubelet"}});
        assert_eq!(api.call("POST", &events, Some(ev)).await.0, 201);
    }
    let sel = |s: &str| {
        format!(
            "{events}?fieldSelector={}",
            s.replace('=', "%3D").replace(',', "%2C")
        )
    };
    let (code, l) = api
        .call(
            "GET",
            &sel("involvedObject.kind=Pod,involvedObject.name=web"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{l}");
    assert_eq!(names(&l), ["e1", "e2"]);
    let (_, l) = api
        .call(
            "GET",
            &sel(&format!(
                "involvedObject.uid=uid-db,involvedObject.namespace={ns}"
            )),
            None,
        )
        .await;
    assert_eq!(names(&l), ["e3"]);
    let (_, l) = api.call("GET", &sel("type=Warning"), None).await;
    assert_eq!(names(&l), ["e2"]);
    let (_, l) = api
        .call("GET", &sel("reason!=Scheduled,source=kubelet"), None)
        .await;
    assert_eq!(names(&l), ["e2", "e4"]);
    let (code, _) = api
        .call("GET", &sel("involvedObject.color=red"), None)
        .await;
    assert_eq!(code, 400);
    // The same selector on a watch.
    let mut w = api
        .watch(&format!("{}&watch=1", sel("involvedObject.name=db")))
        .await;
    let e = w.next_event(WAIT).await.expect("initial ADDED");
    assert_eq!(e["object"]["metadata"]["name"], "e3");
}

/// Issue 21: DELETE only marks a namespace Terminating; its content is the
/// namespace controller's to delete through the API (none runs here, so
/// the content stays), and the namespace goes when `PUT …/finalize` leaves
/// it without finalizers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_waits_for_its_finalizers() {
    let api = start_api().await;
    let ns = namespace(&api, "lc-nsdel").await;
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    assert_eq!(
        api.call("POST", &pods, Some(pod("bound", json!({}), "n1")))
            .await
            .0,
        201
    );
    let (_, created) = api
        .call("GET", &format!("/api/v1/namespaces/{ns}"), None)
        .await;
    assert_eq!(created["spec"]["finalizers"], json!(["kubernetes"]));
    let mut watch = api
        .watch("/api/v1/namespaces?watch=1&fieldSelector=metadata.name%3Dlc-nsdel")
        .await;
    let _ = watch.next_event(WAIT).await.expect("ADDED");
    let (code, body) = api
        .call("DELETE", &format!("/api/v1/namespaces/{ns}"), None)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"]["phase"], "Terminating");
    assert_eq!(body["spec"]["finalizers"], json!(["kubernetes"]));
    let e = watch
        .next_event(WAIT)
        .await
        .expect("MODIFIED (Terminating)");
    assert_eq!(
        (e["type"].as_str(), e["object"]["status"]["phase"].as_str()),
        (Some("MODIFIED"), Some("Terminating"))
    );
    // No storage-level wipe: the pod is still there, not even deleting.
    let (code, p) = api.call("GET", &format!("{pods}/bound"), None).await;
    assert_eq!(code, 200, "{p}");
    assert!(p["metadata"]["deletionTimestamp"].is_null(), "{p}");
    // An ordinary update cannot drop the spec finalizers.
    let (_, mut current) = api
        .call("GET", &format!("/api/v1/namespaces/{ns}"), None)
        .await;
    current["spec"]["finalizers"] = json!([]);
    let (code, updated) = api
        .call("PUT", &format!("/api/v1/namespaces/{ns}"), Some(current))
        .await;
    assert_eq!(code, 200, "{updated}");
    assert_eq!(updated["spec"]["finalizers"], json!(["kubernetes"]));
    // /finalize checks the names it is given.
    let finalize = format!("/api/v1/namespaces/{ns}/finalize");
    let (code, status) = api
        .call(
            "PUT",
            &finalize,
            Some(json!({"metadata": {"name": ns}, "spec": {"finalizers": ["kubernetes", "nope"]}})),
        )
        .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (422, Some("Invalid")),
        "{status}"
    );
    assert_eq!(
        status["message"],
        "Namespace \"lc-nsdel\" is invalid: spec.finalizers[1]: Invalid value: \"nope\": name is neither a standard finalizer name nor is it fully qualified"
    );
    // Another finalizer keeps it; dropping the last deletes it.
    let (code, kept) = api
        .call(
            "PUT",
            &finalize,
            Some(json!({"metadata": {"name": ns}, "spec": {"finalizers": ["example.com/x"]}})),
        )
        .await;
    assert_eq!(code, 200, "{kept}");
    assert_eq!(kept["spec"]["finalizers"], json!(["example.com/x"]));
    let _ = watch.next_event(WAIT).await.expect("MODIFIED (finalizers)");
    let (code, body) = api
        .call(
            "PUT",
            &finalize,
            Some(json!({"metadata": {"name": ns}, "spec": {}})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    // MODIFIED for each write above (the plain PUT included), then DELETED.
    let mut deleted = false;
    for _ in 0..4 {
        let e = watch.next_event(WAIT).await.expect("an event");
        if e["type"] == "DELETED" {
            deleted = true;
            break;
        }
        assert_eq!(e["type"], "MODIFIED", "{e}");
    }
    assert!(deleted, "no DELETED event");
    assert_eq!(
        api.call("GET", &format!("/api/v1/namespaces/{ns}"), None)
            .await
            .0,
        404
    );
    assert_eq!(api.call("PUT", &finalize, Some(json!({}))).await.0, 404);
    // A namespace kept by a finalizer stays Terminating: nothing new in it.
    let kept = namespace(&api, "lc-nsdel-kept").await;
    let (code, body) = api
        .call(
            "DELETE",
            &format!("/api/v1/namespaces/{kept}?propagationPolicy=Foreground"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    let (code, status) = api
        .call(
            "POST",
            &format!("/api/v1/namespaces/{kept}/configmaps"),
            Some(json!({"metadata": {"name": "late"}})),
        )
        .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (403, Some("Forbidden")),
        "{status}"
    );
    assert_eq!(
        status["message"],
        "configmaps \"late\" is forbidden: unable to create new content in namespace lc-nsdel-kept because it is being terminated"
    );
    let (_, ns_obj) = api
        .call("GET", &format!("/api/v1/namespaces/{kept}"), None)
        .await;
    assert_eq!(ns_obj["status"]["phase"], "Terminating");
    // Finalized by the namespace controller: the GC's finalizer still
    // holds it.
    let (code, body) = api
        .call(
            "PUT",
            &format!("/api/v1/namespaces/{kept}/finalize"),
            Some(json!({"spec": {"finalizers": []}})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    let (_, mut ns_obj) = api
        .call("GET", &format!("/api/v1/namespaces/{kept}"), None)
        .await;
    ns_obj["metadata"]["finalizers"] = json!([]);
    let (code, _) = api
        .call("PUT", &format!("/api/v1/namespaces/{kept}"), Some(ns_obj))
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        api.call("GET", &format!("/api/v1/namespaces/{kept}"), None)
            .await
            .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_validation_and_openapi_v3() {
    let api = start_api().await;
    let ns = namespace(&api, "lc-fields").await;
    let cms = format!("/api/v1/namespaces/{ns}/configmaps");
    let body = |name: &str| {
        Some(Bytes::from(
            json!({"metadata": {"name": name}, "data": {"a": "1"}, "colour": "red"}).to_string(),
        ))
    };
    // Strict: 400, nothing stored.
    let (code, status) = api
        .raw(
            "POST",
            &format!("{cms}?fieldValidation=Strict"),
            body("s"),
            "application/json",
        )
        .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (400, Some("BadRequest")),
        "{status}"
    );
    assert_eq!(
        status["message"],
        "strict decoding error: unknown field \"colour\""
    );
    assert_eq!(api.call("GET", &format!("{cms}/s"), None).await.0, 404);
    // Warn (also the default): stored, one Warning header per field.
    for (query, name) in [("?fieldValidation=Warn", "w"), ("", "d")] {
        let resp = api
            .send_with(
                "POST",
                &format!("{cms}{query}"),
                body(name),
                "application/json",
                "application/json",
            )
            .await;
        assert_eq!(resp.status().as_u16(), 201);
        let warnings: Vec<&str> = resp
            .headers()
            .get_all("warning")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(warnings, ["299 - \"unknown field \\\"colour\\\"\""]);
    }
    // Ignore: no warning. Strict on a patch and on an update too.
    let resp = api
        .send_with(
            "POST",
            &format!("{cms}?fieldValidation=Ignore"),
            body("i"),
            "application/json",
            "application/json",
        )
        .await;
    assert_eq!(resp.status().as_u16(), 201);
    assert!(resp.headers().get("warning").is_none());
    let (code, status) = api
        .raw(
            "PATCH",
            &format!("{cms}/i?fieldValidation=Strict"),
            Some(Bytes::from(
                r#"{"data":{"b":"2"},"metadata":{"colours":["red"]}}"#,
            )),
            "application/merge-patch+json",
        )
        .await;
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"metadata.colours\""),
        "{status}"
    );
    let (code, _) = api
        .call(
            "PUT",
            &format!("{cms}/i?fieldValidation=Strict"),
            Some(json!({"metadata": {"name": "i"}, "datum": {}})),
        )
        .await;
    assert_eq!(code, 400);
    let (code, _) = api
        .raw(
            "POST",
            &format!("{cms}?fieldValidation=Loose"),
            body("l"),
            "application/json",
        )
        .await;
    assert_eq!(code, 400);

    // dryRun=All: answered as if written, nothing stored.
    let (code, dry) = api
        .call(
            "POST",
            &format!("{cms}?dryRun=All"),
            Some(json!({"metadata": {"name": "dry"}})),
        )
        .await;
    assert_eq!(
        (code, dry["metadata"]["name"].as_str()),
        (201, Some("dry")),
        "{dry}"
    );
    assert_eq!(api.call("GET", &format!("{cms}/dry"), None).await.0, 404);
    let (code, _) = api
        .call(
            "POST",
            &format!("{cms}?dryRun=All"),
            Some(json!({"metadata": {"name": "d"}})),
        )
        .await;
    assert_eq!(code, 409, "a taken name conflicts in a dry run too");
    let (code, patched) = api
        .raw(
            "PATCH",
            &format!("{cms}/d?dryRun=All"),
            Some(Bytes::from(r#"{"data":{"a":"changed"}}"#)),
            "application/merge-patch+json",
        )
        .await;
    assert_eq!(
        (code, patched["data"]["a"].as_str()),
        (200, Some("changed"))
    );
    let (_, stored) = api.call("GET", &format!("{cms}/d"), None).await;
    assert_eq!(stored["data"]["a"], "1");
    assert_eq!(
        api.call(
            "POST",
            &format!("{cms}?dryRun=Some"),
            Some(json!({"metadata": {"name": "x"}}))
        )
        .await
        .0,
        400
    );

    // The OpenAPI v3 documents kubectl reads to choose server-side validation.
    let (code, root) = api.call("GET", "/openapi/v3", None).await;
    assert_eq!(code, 200);
    let url = root["paths"]["api/v1"]["serverRelativeURL"]
        .as_str()
        .expect("api/v1 listed");
    let (code, doc) = api.call("GET", url, None).await;
    assert_eq!(code, 200);
    let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"]["kind"],
        "ConfigMap"
    );
    assert!(patch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "fieldValidation"));
    assert_eq!(
        api.call("GET", "/openapi/v3/apis/widgets/v1", None).await.0,
        404
    );
}
