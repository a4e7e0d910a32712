//! Field ownership through the `scale` subresource against the real
//! apiserver over a real cluster, Kubernetes' own scenario
//! (`test/integration/apiserver/apply/scale_test.go`) for deployments,
//! replica sets, stateful sets and a custom resource: a merge patch, a
//! PUT or a server-side apply of the Scale makes its manager the owner of
//! the parent's `spec.replicas` (subresource `scale`); an apply of the
//! Scale conflicts (409, naming the owner) with another manager's
//! replicas until forced, and shares them when it sets the same value;
//! the parent's own apply then conflicts with the Scale's manager. The
//! real `kubectl apply --server-side --subresource=scale` does the same.
//! Bad applies get Kubernetes' codes and messages.

use crate::common;

use std::path::Path;
use std::time::Duration;

use crate::common::{endpoints, kubectl, kubectl_ok, namespace, plain_kubeconfig, Api};
use ballast_apiserver::CacheConfig;
use ballast_tests::ClusterKind;
use bytes::Bytes;
use serde_json::{json, Value};

const APPLY: &str = "application/apply-patch+yaml";

async fn start() -> Api {
    let eps = tokio::task::spawn_blocking(|| endpoints(ClusterKind::Ballast))
        .await
        .expect("cluster");
    common::start_on(eps, CacheConfig::default()).await
}

fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{:x}", nanos % 0xffff_ffff)
}

async fn apply(api: &Api, path: &str, query: &str, body: &Value) -> (u16, Value) {
    let body = Bytes::from(body.to_string());
    api.raw("PATCH", &format!("{path}?{query}"), Some(body), APPLY)
        .await
}

/// The managers whose entries own `field` (`["f:spec", "f:replicas"]`), sorted.
fn owners(obj: &Value, field: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = obj["metadata"]["managedFields"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|e| {
                    field
                        .iter()
                        .try_fold(&e["fieldsV1"], |v, k| v.get(*k))
                        .is_some()
                })
                .filter_map(|e| e["manager"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

const REPLICAS: &[&str] = &["f:spec", "f:replicas"];

fn workload(kind: &str, name: &str, replicas: i64) -> Value {
    let mut spec = json!({
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1"}]},
        },
    });
    if kind == "StatefulSet" {
        spec["serviceName"] = json!(name);
    }
    json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

fn scale(name: &str, replicas: i64) -> Value {
    json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
           "metadata": {"name": name}, "spec": {"replicas": replicas}})
}

/// Kubernetes' scale scenario on the object at `path`, created by
/// applying `object` (whose replicas are 1), its replicas at `field`,
/// `other` another field it sets.
async fn scenario(api: &Api, path: &str, object: &Value, field: &[&str], other: &[&str]) {
    let name = object["metadata"]["name"].as_str().expect("name");
    let scale_path = format!("{path}/scale");
    let get = || async {
        let (code, obj) = api.call("GET", path, None).await;
        assert_eq!(code, 200, "{obj}");
        obj
    };
    let replicas_of = |obj: &Value| {
        field
            .iter()
            .skip(1)
            .fold(&obj["spec"], |v, k| &v[k.trim_start_matches("f:")])
            .as_i64()
    };

    let (code, body) = apply(api, path, "fieldManager=apply_test", object).await;
    assert_eq!(code, 201, "{body}");
    let obj = get().await;
    assert_eq!(owners(&obj, field), ["apply_test"], "{obj}");

    // A merge patch of the Scale: scale_test owns the replicas.
    let (code, body) = api
        .raw(
            "PATCH",
            &format!("{scale_path}?fieldManager=scale_test"),
            Some(Bytes::from(r#"{"spec":{"replicas":5}}"#)),
            "application/merge-patch+json",
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["spec"]["replicas"], 5);
    let obj = get().await;
    assert_eq!(replicas_of(&obj), Some(5));
    assert_eq!(owners(&obj, field), ["scale_test"], "{obj}");
    let entry = obj["metadata"]["managedFields"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["manager"] == "scale_test")
        .expect("scale_test's entry")
        .clone();
    assert_eq!(entry["operation"], "Update");
    assert_eq!(entry["subresource"], "scale");
    assert_eq!(entry["apiVersion"], object["apiVersion"]);

    // The parent's apply of its old replicas conflicts with the Scale's manager.
    let (code, status) = apply(api, path, "fieldManager=apply_test", object).await;
    assert_eq!(code, 409, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("conflict with \"scale_test\" with subresource \"scale\""),
        "{status}"
    );
    let (code, body) = apply(api, path, "fieldManager=apply_test&force=true", object).await;
    assert_eq!(code, 200, "{body}");
    let obj = get().await;
    assert_eq!(replicas_of(&obj), Some(1));
    assert_eq!(owners(&obj, field), ["apply_test"], "{obj}");
    let generation = obj["metadata"]["generation"].as_i64().expect("generation");

    // An apply of the Scale conflicts with apply_test until forced.
    let (code, status) = apply(
        api,
        &scale_path,
        "fieldManager=apply_scale",
        &scale(name, 17),
    )
    .await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["message"],
        "Apply failed with 1 conflict: conflict with \"apply_test\": .spec.replicas"
    );
    assert_eq!(status["details"]["causes"][0]["field"], ".spec.replicas");
    assert_eq!(replicas_of(&get().await), Some(1));
    let (code, body) = apply(
        api,
        &scale_path,
        "fieldManager=apply_scale&force=true",
        &scale(name, 17),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["kind"], "Scale");
    assert_eq!(body["spec"]["replicas"], 17);
    let obj = get().await;
    assert_eq!(replicas_of(&obj), Some(17));
    assert_eq!(obj["metadata"]["generation"], generation + 1);
    assert_eq!(owners(&obj, field), ["apply_scale"], "{obj}");
    // apply_test keeps the rest of what it applied.
    assert_eq!(owners(&obj, other), ["apply_test"], "{obj}");

    // A PUT of the Scale: replace_test owns them.
    let (code, body) = api
        .call(
            "PUT",
            &format!("{scale_path}?fieldManager=replace_test"),
            Some(scale(name, 7)),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(owners(&get().await, field), ["replace_test"]);

    // The same replicas applied: both own them, nothing else changes.
    let rv = get().await["metadata"]["resourceVersion"].clone();
    let (code, body) = apply(
        api,
        &scale_path,
        "fieldManager=co_owning_test",
        &scale(name, 7),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let obj = get().await;
    assert_eq!(replicas_of(&obj), Some(7));
    assert_eq!(
        owners(&obj, field),
        ["co_owning_test", "replace_test"],
        "{obj}"
    );
    assert_ne!(
        obj["metadata"]["resourceVersion"], rv,
        "the entries are stored"
    );
    // Applied again unchanged: nothing is written.
    let rv = obj["metadata"]["resourceVersion"].clone();
    let (code, _) = apply(
        api,
        &scale_path,
        "fieldManager=co_owning_test",
        &scale(name, 7),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(get().await["metadata"]["resourceVersion"], rv);

    // Scaling again: this manager alone.
    let (code, body) = api
        .raw(
            "PATCH",
            &format!("{scale_path}?fieldManager=scale_test"),
            Some(Bytes::from(r#"{"spec":{"replicas":5}}"#)),
            "application/merge-patch+json",
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(owners(&get().await, field), ["scale_test"]);

    // A dry run changes nothing.
    let (code, body) = apply(
        api,
        &scale_path,
        "fieldManager=dry&force=true&dryRun=All",
        &scale(name, 9),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["spec"]["replicas"], 9);
    let obj = get().await;
    assert_eq!(replicas_of(&obj), Some(5));
    assert_eq!(owners(&obj, field), ["scale_test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_applies_track_replicas_on_every_kind() {
    let api = start().await;
    let ns = namespace(&api, "scale-apply").await;
    let id = run_id();
    for (kind, plural) in [
        ("Deployment", "deployments"),
        ("ReplicaSet", "replicasets"),
        ("StatefulSet", "statefulsets"),
    ] {
        println!("--- {kind}");
        let name = format!("{}-{id}", kind.to_lowercase());
        let path = format!("/apis/apps/v1/namespaces/{ns}/{plural}/{name}");
        let selector = ["f:spec", "f:selector"];
        scenario(&api, &path, &workload(kind, &name, 1), REPLICAS, &selector).await;
    }

    // A custom resource whose replicas live at .spec.size.
    let group = format!("s{id}.example.com");
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("pools.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "pools", "singular": "pool", "kind": "Pool"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "size": {"type": "integer", "minimum": 0},
                        "flavour": {"type": "string"}}},
                    "status": {"type": "object", "properties": {
                        "size": {"type": "integer"}}}}}},
                "subresources": {"status": {}, "scale": {
                    "specReplicasPath": ".spec.size",
                    "statusReplicasPath": ".status.size"}}}],
        },
    });
    let (code, body) = api
        .call(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            Some(crd),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let list = format!("/apis/{group}/v1/namespaces/{ns}/pools");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while api.call("GET", &list, None).await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{list} never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pool = json!({"apiVersion": format!("{group}/v1"), "kind": "Pool",
                      "metadata": {"name": "p"}, "spec": {"size": 1, "flavour": "vanilla"}});
    let (size, flavour) = (["f:spec", "f:size"], ["f:spec", "f:flavour"]);
    scenario(&api, &format!("{list}/p"), &pool, &size, &flavour).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_scale_applies_get_kubernetes_answers() {
    let api = start().await;
    let ns = namespace(&api, "scale-apply-bad").await;
    let name = format!("bad-{}", run_id());
    let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}");
    let scale_path = format!("{path}/scale");

    // The parent must exist.
    let (code, status) = apply(&api, &scale_path, "fieldManager=m", &scale(&name, 2)).await;
    assert_eq!(code, 404, "{status}");

    let (code, body) = apply(
        &api,
        &path,
        "fieldManager=m",
        &workload("Deployment", &name, 1),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (code, status) = apply(&api, &scale_path, "", &scale(&name, 2)).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    let (code, status) = apply(
        &api,
        &scale_path,
        "fieldManager=m",
        &workload("Deployment", &name, 2),
    )
    .await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        status["message"],
        "invalid object type: apps/v1, Kind=Deployment: only spec.replicas of a Deployment \
         is applied through its scale subresource, not spec.selector.matchLabels.app"
    );
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}});
    let (code, status) = apply(&api, &scale_path, "fieldManager=m", &pod).await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(status["message"], "invalid object type: /v1, Kind=Pod");
    let (code, status) = apply(&api, &scale_path, "fieldManager=m", &scale("other", 2)).await;
    assert_eq!(code, 400, "{status}");
    // (Forced: m's apply of the Deployment owns the replicas.)
    let (code, status) = apply(
        &api,
        &scale_path,
        "fieldManager=m&force=true",
        &scale(&name, -1),
    )
    .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "Invalid value: -1: must be greater than or equal to 0"
    );
    let (code, status) = apply(
        &api,
        &scale_path,
        "fieldManager=m&force=maybe",
        &scale(&name, 2),
    )
    .await;
    assert_eq!(code, 400, "{status}");
    let (code, status) = api
        .raw(
            "PATCH",
            &format!("{scale_path}?fieldManager=m"),
            Some(Bytes::from("spec: [")),
            APPLY,
        )
        .await;
    assert_eq!(code, 400, "{status}");
    // fieldValidation=Strict refuses what a Scale does not have.
    let mut odd = scale(&name, 2);
    odd["spec"]["bogus"] = json!(1);
    let (code, status) = apply(
        &api,
        &scale_path,
        "fieldManager=m&fieldValidation=Strict",
        &odd,
    )
    .await;
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown field \"spec.bogus\""),
        "{status}"
    );
    let (_, obj) = api.call("GET", &path, None).await;
    assert_eq!(obj["spec"]["replicas"], 1, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_the_scale_subresource() {
    if !Path::new(common::KUBECTL).exists() {
        println!("SKIPPED: {} is not installed", common::KUBECTL);
        return;
    }
    let api = start().await;
    let ns = namespace(&api, "scale-kubectl").await;
    let dir = tempfile::tempdir().expect("tempdir");
    plain_kubeconfig(dir.path(), api.addr);
    let d = dir.path().to_path_buf();
    let name = format!("web-{}", run_id());
    let web = workload("Deployment", &name, 1);
    let web_file = d.join("web.json");
    std::fs::write(&web_file, web.to_string()).expect("manifest");
    // The manifest kubectl sends to the scale subresource: the
    // Deployment's kind, only its replicas.
    let scale_file = d.join("scale.yaml");
    std::fs::write(
        &scale_file,
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  replicas: 4\n"
        ),
    )
    .expect("manifest");
    let (web_file, scale_file) = (
        web_file.to_string_lossy().into_owned(),
        scale_file.to_string_lossy().into_owned(),
    );
    let ns2 = ns.clone();
    tokio::task::spawn_blocking(move || {
        let ns = ns2.as_str();
        kubectl_ok(&d, &["apply", "--server-side", "-n", ns, "-f", &web_file]);
        // kubectl's apply of the Deployment owns the replicas: the Scale's
        // apply (another identity: subresource scale) conflicts.
        let scale_apply = [
            "apply",
            "--server-side",
            "--subresource=scale",
            "-f",
            &scale_file,
        ];
        let (ok, _, stderr) = kubectl(&d, &scale_apply);
        assert!(!ok, "a conflict");
        assert!(
            stderr.contains(
                "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"
            ),
            "{stderr}"
        );
        let replicas = [
            "get",
            "deployment",
            &name,
            "-n",
            ns,
            "-o",
            "jsonpath={.spec.replicas}",
        ];
        assert_eq!(kubectl_ok(&d, &replicas), "1");
        let mut forced = scale_apply.to_vec();
        forced.push("--force-conflicts");
        let out = kubectl_ok(&d, &forced);
        assert!(out.contains("serverside-applied"), "{out}");
        assert_eq!(kubectl_ok(&d, &replicas), "4");
        let entries = kubectl_ok(
            &d,
            &[
                "get",
                "deployment",
                &name,
                "-n",
                ns,
                "--show-managed-fields",
                "-o",
                "json",
            ],
        );
        let obj: Value = serde_json::from_str(&entries).expect("JSON");
        assert_eq!(owners(&obj, REPLICAS), ["kubectl"], "{obj}");
        let scale_entry = obj["metadata"]["managedFields"]
            .as_array()
            .expect("entries")
            .iter()
            .find(|e| e["subresource"] == "scale")
            .expect("the scale entry")
            .clone();
        assert_eq!(scale_entry["operation"], "Apply");
        assert_eq!(scale_entry["manager"], "kubectl");
        // kubectl scale then takes them (an update through the Scale).
        kubectl_ok(
            &d,
            &["scale", "deployment", &name, "-n", ns, "--replicas=2"],
        );
        assert_eq!(kubectl_ok(&d, &replicas), "2");
        let (ok, _, stderr) = kubectl(&d, &scale_apply);
        assert!(!ok, "a conflict with kubectl scale's manager");
        assert!(stderr.contains("with subresource \"scale\""), "{stderr}");
    })
    .await
    .expect("kubectl");
}
