//! Hostile writes against a real etcd: fields of the wrong type, integers
//! out of range, JSON patches past Kubernetes' limits. Each is refused with
//! kube-apiserver's code, reason and message, and nothing is stored — so
//! typed clients (kube-rs lists, as the scheduler and kubelets run them)
//! keep working.

use crate::common::{namespace, pod, rv, start, Api};
use ballast_apiserver::CacheConfig;
use ballast_tests::ClusterKind;
use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

const LIMIT: usize = 3 << 20;

fn client(api: &Api) -> kube::Client {
    let url = format!("http://{}", api.addr).parse().expect("url");
    kube::Client::try_from(kube::Config::new(url)).expect("client")
}

/// Asserts a `Status` answer's code, reason and that its message starts
/// with `prefix`.
fn refused(got: &(u16, Value), code: u16, reason: &str, prefix: &str) {
    let (c, status) = got;
    assert_eq!(*c, code, "{status}");
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["reason"], reason, "{status}");
    assert_eq!(status["code"], code, "{status}");
    let msg = status["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with(prefix),
        "{msg:?} does not start with {prefix:?}"
    );
}

async fn json_patch(api: &Api, url: &str, ops: &Value) -> (u16, Value) {
    api.raw(
        "PATCH",
        url,
        Some(Bytes::from(ops.to_string())),
        "application/json-patch+json",
    )
    .await
}

/// Creates a ConfigMap; its URL and the stored object.
async fn create_config_map(api: &Api, cms: &str, name: &str, data: Value) -> (String, Value) {
    let body = json!({"metadata": {"name": name}, "data": data});
    let (code, o) = api.call("POST", cms, Some(body)).await;
    assert_eq!(code, 201, "{o}");
    (format!("{cms}/{name}"), o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_are_refused_and_typed_lists_keep_working() {
    let api = start(ClusterKind::Etcd, CacheConfig::default()).await;
    let ns = namespace(&api, "hostile-types").await;
    let pods = format!("/api/v1/namespaces/{ns}/pods");

    // spec.containers a string: kube's decoder message, nothing stored.
    let mut bad = pod("strings", json!({}), "");
    bad["spec"]["containers"] = json!("nginx");
    let got = api.call("POST", &pods, Some(bad)).await;
    refused(
        &got,
        400,
        "BadRequest",
        "Pod in version \"v1\" cannot be handled as a Pod: spec.containers: invalid type: string \"nginx\", expected a sequence",
    );
    assert_eq!(
        api.call("GET", &format!("{pods}/strings"), None).await.0,
        404
    );

    // Grace periods no int64 holds: 400; a negative one: 422.
    for (name, grace) in [
        ("float", json!(1e30)),
        ("past-int64", json!(9_223_372_036_854_775_808u64)),
    ] {
        let mut p = pod(name, json!({}), "");
        p["spec"]["terminationGracePeriodSeconds"] = grace;
        let got = api.call("POST", &pods, Some(p)).await;
        refused(
            &got,
            400,
            "BadRequest",
            "Pod in version \"v1\" cannot be handled as a Pod: spec.terminationGracePeriodSeconds: invalid",
        );
        assert_eq!(
            api.call("GET", &format!("{pods}/{name}"), None).await.0,
            404
        );
    }
    for (name, field, value, msg) in [
        (
            "negative-grace",
            "terminationGracePeriodSeconds",
            -1,
            "Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            "zero-deadline",
            "activeDeadlineSeconds",
            0,
            "Invalid value: 0: must be between 1 and 2147483647, inclusive",
        ),
    ] {
        let mut p = pod(name, json!({}), "");
        p["spec"][field] = json!(value);
        let got = api.call("POST", &pods, Some(p)).await;
        refused(
            &got,
            422,
            "Invalid",
            &format!("Pod \"{name}\" is invalid: spec.{field}: {msg}"),
        );
        let cause = &got.1["details"]["causes"][0];
        assert_eq!(cause["field"], format!("spec.{field}"));
        assert_eq!(cause["reason"], "FieldValueInvalid");
        assert_eq!(cause["message"], msg);
        assert_eq!(
            api.call("GET", &format!("{pods}/{name}"), None).await.0,
            404
        );
    }

    // A good pod; then an update, a patch and status writes of wrong types.
    let (code, good) = api
        .call("POST", &pods, Some(pod("good", json!({"a": "1"}), "")))
        .await;
    assert_eq!(code, 201, "{good}");
    let url = format!("{pods}/good");
    let mut put = good.clone();
    put["metadata"]["labels"]["a"] = json!(5);
    let got = api.call("PUT", &url, Some(put)).await;
    refused(
        &got,
        400,
        "BadRequest",
        "Pod in version \"v1\" cannot be handled as a Pod: metadata.labels.a: invalid type: integer `5`, expected a string",
    );
    // After a patch, as kube: 422 on the `patch` field.
    let got = api
        .merge_patch(&url, json!({"metadata": {"labels": {"a": 5}}}))
        .await;
    refused(
        &got,
        422,
        "Invalid",
        " \"\" is invalid: patch: Invalid value: \"{",
    );
    assert_eq!(got.1["details"]["causes"][0]["field"], "patch");
    let msg = got.1["message"].as_str().unwrap();
    assert!(
        msg.ends_with("metadata.labels.a: invalid type: integer `5`, expected a string"),
        "{msg}"
    );
    let got = api
        .merge_patch(&format!("{url}/status"), json!({"status": {"phase": 7}}))
        .await;
    refused(
        &got,
        422,
        "Invalid",
        " \"\" is invalid: patch: Invalid value: ",
    );
    let mut status = good.clone();
    status["status"]["startTime"] = json!("yesterday");
    let got = api
        .call("PUT", &format!("{url}/status"), Some(status))
        .await;
    refused(
        &got,
        400,
        "BadRequest",
        "Pod in version \"v1\" cannot be handled as a Pod: status.startTime: ",
    );
    let (_, now) = api.call("GET", &url, None).await;
    assert_eq!(rv(&now), rv(&good), "nothing was stored: {now}");

    // Every typed list still decodes: the namespace's and the cluster's.
    let client = client(&api);
    let listed = kube::Api::<Pod>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .expect("a typed list of the namespace's pods");
    let names: Vec<_> = listed
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["good"]);
    kube::Api::<Pod>::all(client)
        .list(&Default::default())
        .await
        .expect("a typed list of every pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_replicas_are_invalid() {
    let api = start(ClusterKind::Etcd, CacheConfig::default()).await;
    let ns = namespace(&api, "hostile-replicas").await;
    let deployments = format!("/apis/apps/v1/namespaces/{ns}/deployments");
    let deployment = |name: &str, replicas: i64| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "w"}},
                        "template": {"metadata": {"labels": {"app": "w"}},
                                     "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    };
    let got = api
        .call("POST", &deployments, Some(deployment("neg", -1)))
        .await;
    let msg = "Invalid value: -1: must be greater than or equal to 0";
    refused(
        &got,
        422,
        "Invalid",
        &format!("Deployment.apps \"neg\" is invalid: spec.replicas: {msg}"),
    );
    assert_eq!(got.1["details"]["causes"][0]["field"], "spec.replicas");
    assert_eq!(got.1["details"]["causes"][0]["message"], msg);
    assert_eq!(
        api.call("GET", &format!("{deployments}/neg"), None).await.0,
        404
    );
    // The same through a patch of a stored one.
    let (code, d) = api
        .call("POST", &deployments, Some(deployment("ok", 2)))
        .await;
    assert_eq!(code, 201, "{d}");
    let url = format!("{deployments}/ok");
    let got = api
        .merge_patch(&url, json!({"spec": {"replicas": -3}}))
        .await;
    refused(
        &got,
        422,
        "Invalid",
        "Deployment.apps \"ok\" is invalid: spec.replicas: Invalid value: -3",
    );
    let (_, now) = api.call("GET", &url, None).await;
    assert_eq!(now["spec"]["replicas"], 2);
    assert_eq!(rv(&now), rv(&d));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_patch_limits() {
    let api = start(ClusterKind::Etcd, CacheConfig::default()).await;
    let ns = namespace(&api, "hostile-patch").await;
    let cms = format!("/api/v1/namespaces/{ns}/configmaps");

    // 10,001 operations: kube's 413 and message; 10,000 are served.
    let (url, small) = create_config_map(&api, &cms, "ops", json!({"a": "1"})).await;
    let test = json!({"op": "test", "path": "/data/a", "value": "1"});
    let got = json_patch(&api, &url, &Value::Array(vec![test.clone(); 10_001])).await;
    refused(
        &got,
        413,
        "RequestEntityTooLarge",
        "Request entity too large: The allowed maximum operations in a JSON patch is 10000, got 10001",
    );
    let (code, o) = json_patch(&api, &url, &Value::Array(vec![test; 10_000])).await;
    assert_eq!(code, 200, "{o}");
    assert_eq!(o["data"], small["data"]);

    // Copies of the whole object, each doubling it: refused at the copy
    // budget (kube's json-patch AccumulatedCopySizeLimit), nothing stored.
    let (url, before) =
        create_config_map(&api, &cms, "doubling", json!({"a": "x".repeat(500_000)})).await;
    let ops: Vec<Value> = (0..8)
        .map(|i| json!({"op": "copy", "from": "", "path": format!("/metadata/annotations{i}")}))
        .collect();
    let got = json_patch(&api, &url, &Value::Array(ops)).await;
    refused(
        &got,
        422,
        "Invalid",
        "the server rejected our request due to an error in our request: Unable to complete the copy, the accumulated size increase of copy is ",
    );
    assert!(got.1["message"]
        .as_str()
        .unwrap()
        .ends_with(&format!("exceeding the limit {LIMIT}")));
    let (_, now) = api.call("GET", &url, None).await;
    assert_eq!(now, before);

    // Copies within the budget whose result is over the size limit: 413.
    // (Under etcd's 1.5 MiB request limit to begin with.)
    let (url, before) =
        create_config_map(&api, &cms, "over", json!({"a": "y".repeat(1_100_000)})).await;
    let got = json_patch(
        &api,
        &url,
        &json!([{"op": "copy", "from": "/data/a", "path": "/data/b"}, {"op": "copy", "from": "/data/a", "path": "/data/c"}]),
    )
    .await;
    refused(
        &got,
        413,
        "RequestEntityTooLarge",
        &format!("Request entity too large: limit is {LIMIT}"),
    );
    // Likewise a merge patch that grows it past the limit.
    let got = api
        .merge_patch(&url, json!({"data": {"c": "z".repeat(2_100_000)}}))
        .await;
    refused(
        &got,
        413,
        "RequestEntityTooLarge",
        &format!("Request entity too large: limit is {LIMIT}"),
    );
    let (_, now) = api.call("GET", &url, None).await;
    assert_eq!(now, before);

    // Under the apiserver's limit but over etcd's 1.5 MiB request limit:
    // 413 (not a 500 that clients retry), nothing stored.
    let body = json!({"metadata": {"name": "etcd-sized"}, "data": {"a": "e".repeat(2_000_000)}});
    let got = api.call("POST", &cms, Some(body)).await;
    refused(
        &got,
        413,
        "RequestEntityTooLarge",
        "Request entity too large: the object is larger than the storage accepts (etcdserver: request is too large)",
    );
    let (code, _) = api.call("GET", &format!("{cms}/etcd-sized"), None).await;
    assert_eq!(code, 404);

    // Copies into themselves cannot nest past what can be parsed again.
    let nested = (0..60).fold(json!([]), |v, _| json!([v]));
    let deeper = |n: usize| format!("/metadata/x{}", "/0".repeat(n));
    let ops = json!([
        {"op": "add", "path": "/metadata/x", "value": nested},
        {"op": "copy", "from": "/metadata/x", "path": deeper(61)},
        {"op": "copy", "from": "/metadata/x", "path": deeper(122)},
    ]);
    let got = json_patch(&api, &format!("{cms}/ops"), &ops).await;
    refused(
        &got,
        422,
        "Invalid",
        "the server rejected our request due to an error in our request: the patched object would nest deeper than 127 levels",
    );
}
