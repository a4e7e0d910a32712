//! CRD structural schemas end to end against the real apiserver over a
//! real cluster: non-structural schemas and bad scale paths refused with
//! Kubernetes' messages, CEL rules stored (a `Warning` for those using
//! CEL functions this apiserver does not implement); custom resources
//! validated (type, enum, pattern,
//! required, bounds — every cause in one 422), defaulted (on write, and
//! on read for objects stored before the default existed), pruned of
//! unknown fields (a `Warning`, or 400 under `fieldValidation=Strict`),
//! on creates, updates and server-side applies alike; the `scale`
//! subresource; apply on `status`; the OpenAPI v3 document of the custom
//! group; a watch ending when its CRD goes. The real `kubectl` explains, scales
//! and strictly applies a custom resource, and the official Python
//! client's `CustomObjectsApi` sees validation and defaulting.

use crate::common;

use std::time::Duration;

use crate::common::{
    endpoints, kubectl, kubectl_ok, namespace, plain_kubeconfig, python_client, Api,
};
use ballast_apiserver::CacheConfig;
use ballast_tests::ClusterKind;
use http_body_util::BodyExt;
use serde_json::{json, Value};

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

/// A CRD of `plural` in `group` whose `spec` is fully specified: a
/// required `cronSpec` with a pattern, `replicas` in 0..=10 defaulting to
/// 1, a `mode` enum; `status` and `scale` subresources.
fn crd(group: &str, plural: &str, kind: &str) -> Value {
    let spec = json!({
        "type": "object",
        "description": "The desired schedule of the tab.",
        "required": ["cronSpec"],
        "properties": {
            "cronSpec": {"type": "string", "description": "When to run, in cron syntax.",
                         "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
            "replicas": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1},
            "mode": {"type": "string", "enum": ["Always", "Never"]},
            "image": {"type": "string"},
        },
    });
    let status = json!({"type": "object", "properties": {
        "replicas": {"type": "integer"}, "selector": {"type": "string"}}});
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "kind": kind},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec, "status": status}}},
                "subresources": {"status": {}, "scale": {
                    "specReplicasPath": ".spec.replicas",
                    "statusReplicasPath": ".status.replicas",
                    "labelSelectorPath": ".status.selector"}},
            }],
        },
    })
}

fn object(group: &str, kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": format!("{group}/v1"), "kind": kind,
           "metadata": {"name": name}, "spec": spec})
}

async fn start() -> Api {
    let eps = tokio::task::spawn_blocking(|| endpoints(ClusterKind::Ballast))
        .await
        .expect("cluster");
    common::start_on(eps, CacheConfig::default()).await
}

/// Polls a GET until `done` holds of its answer (at most 15 s); the last answer.
async fn until(api: &Api, path: &str, done: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (code, body) = api.call("GET", path, None).await;
        if done(code, &body) || tokio::time::Instant::now() >= deadline {
            return (code, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `field: message` of every cause of a Status.
fn causes(status: &Value) -> Vec<String> {
    status["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{}: {}",
                c["field"].as_str().unwrap_or_default(),
                c["message"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// One request with a JSON (or apply) body: the code, the body and the
/// `Warning` headers.
async fn send(
    api: &Api,
    method: &str,
    path: &str,
    body: Value,
    content_type: &str,
) -> (u16, Value, Vec<String>) {
    let resp = api
        .send_with(
            method,
            path,
            Some(body.to_string().into()),
            content_type,
            "application/json",
        )
        .await;
    let code = resp.status().as_u16();
    let warnings = resp
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (code, body, warnings)
}

const APPLY: &str = "application/apply-patch+yaml";

async fn create_crd(api: &Api, crd: Value) {
    let name = crd["metadata"]["name"].as_str().unwrap().to_string();
    let (code, body) = api.call("POST", CRDS, Some(crd)).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = until(api, &format!("{CRDS}/{name}"), |_, b| {
        b["status"]["conditions"]
            .as_array()
            .is_some_and(|l| l.iter().any(|c| c["type"] == "Established"))
    })
    .await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_structural_schemas_are_refused_and_cel_rules_stored() {
    let api = start().await;
    let group = "refused.example.com";
    let mut bad = crd(group, "things", "Thing");
    bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("type");
    bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["extra"] = json!({"type": "object", "properties": {"a": {"type": "string"}},
               "additionalProperties": {"type": "string"}});
    let (code, status) = api.call("POST", CRDS, Some(bad)).await;
    assert_eq!(code, 422, "{status}");
    let root = "spec.versions[0].schema.openAPIV3Schema";
    let found = causes(&status);
    assert!(
        found.contains(&format!("{root}.properties[spec].type: Required value: must not be empty for specified object fields")),
        "{found:?}"
    );
    assert!(
        found.contains(&format!("{root}.properties[extra].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive")),
        "{found:?}"
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("CustomResourceDefinition.apiextensions.k8s.io \"things.refused.example.com\" is invalid: "),
        "{status}"
    );

    // CEL rules are stored; one using a function this apiserver does not
    // implement is not evaluated, and the write says so; a rule without
    // its expression is refused.
    let mut cel = crd(group, "celthings", "CelThing");
    cel["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["x-kubernetes-validations"] = json!([{"rule": ""}]);
    let (code, status) = api.call("POST", CRDS, Some(cel.clone())).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        causes(&status),
        [format!("{root}.properties[spec].x-kubernetes-validations[0].rule: Required value: rule is not specified")]
    );
    cel["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["x-kubernetes-validations"] = json!([{"rule": "self.replicas <= 5"}]);
    cel["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["image"]["x-kubernetes-validations"] = json!([{"rule": "isURL(self)"}]);
    let warned = format!("299 - \"{root}: x-kubernetes-validations rule \\\"isURL(self)\\\" is stored but not evaluated: this apiserver does not implement the CEL function(s) isURL\"");
    let (code, created, warnings) = send(&api, "POST", CRDS, cel, "application/json").await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(warnings, std::slice::from_ref(&warned));
    assert_eq!(
        created["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["x-kubernetes-validations"],
        json!([{"rule": "self.replicas <= 5"}])
    );
    let cel_path = format!("{CRDS}/celthings.{group}");
    let (code, _, warnings) = send(
        &api,
        "PATCH",
        &cel_path,
        json!({"metadata": {"labels": {"a": "b"}}}),
        "application/merge-patch+json",
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(warnings, [warned]);
    let (code, _) = api.call("DELETE", &cel_path, None).await;
    assert_eq!(code, 200);

    // Scale paths are checked as kube checks them.
    let mut scale = crd(group, "things", "Thing");
    scale["spec"]["versions"][0]["subresources"]["scale"] = json!({});
    let (code, status) = api.call("POST", CRDS, Some(scale.clone())).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        causes(&status),
        [
            "spec.versions[0].subresources.scale.specReplicasPath: Required value",
            "spec.versions[0].subresources.scale.statusReplicasPath: Required value",
        ]
    );
    scale["spec"]["versions"][0]["subresources"]["scale"] =
        json!({"specReplicasPath": ".metadata", "statusReplicasPath": ".status.replicas"});
    let (code, status) = api.call("POST", CRDS, Some(scale)).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        causes(&status),
        ["spec.versions[0].subresources.scale.specReplicasPath: Invalid value: \".metadata\": should be a json path under .spec"]
    );

    let mut none = crd(group, "things", "Thing");
    none["spec"]["versions"][0]
        .as_object_mut()
        .unwrap()
        .remove("schema");
    let (code, status) = api.call("POST", CRDS, Some(none)).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        causes(&status),
        [format!("{root}: Required value: schemas are required")]
    );

    // A bad default is refused too; the same CRD with a good one passes.
    let mut default = crd(group, "things", "Thing");
    default["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["replicas"]["default"] = json!("one");
    let (code, status) = api.call("POST", CRDS, Some(default)).await;
    assert_eq!(code, 422, "{status}");
    let at = format!("{root}.properties[spec].properties[replicas].default");
    assert_eq!(
        causes(&status),
        [format!(
            "{at}: Invalid value: \"string\": {at} in body must be of type integer: \"string\""
        )]
    );
    let (code, body) = api
        .call("POST", CRDS, Some(crd(group, "things", "Thing")))
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, _) = api
        .call("DELETE", &format!("{CRDS}/things.{group}"), None)
        .await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_are_validated_defaulted_pruned_and_scaled() {
    let api = start().await;
    let (group, kind) = ("schema.example.com", "Widget");
    create_crd(&api, crd(group, "widgets", kind)).await;
    let ns = namespace(&api, "crd-schema").await;
    let widgets = format!("/apis/{group}/v1/namespaces/{ns}/widgets");
    let good = json!({"cronSpec": "*/5 * * * *"});

    // Each broken rule answers 422 with kube's message, all in one Status.
    let cases = [
        (
            json!({"cronSpec": "*/5 * * * *", "replicas": "five"}),
            "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
        ),
        (
            json!({"cronSpec": "*/5 * * * *", "mode": "Sometimes"}),
            "spec.mode: Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\"",
        ),
        (
            json!({"cronSpec": "every minute"}),
            "spec.cronSpec: Invalid value: \"every minute\": spec.cronSpec in body should match '^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$'",
        ),
        (json!({"replicas": 2}), "spec.cronSpec: Required value"),
        (
            json!({"cronSpec": "*/5 * * * *", "replicas": 11}),
            "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10",
        ),
    ];
    for (spec, want) in cases {
        let (code, status) = api
            .call("POST", &widgets, Some(object(group, kind, "bad", spec)))
            .await;
        assert_eq!(code, 422, "{status}");
        assert_eq!(status["reason"], "Invalid");
        assert_eq!(causes(&status), [want]);
        assert_eq!(
            status["message"],
            format!("{kind}.{group} \"bad\" is invalid: {want}")
        );
    }
    let all = json!({"replicas": "five", "mode": "Sometimes"});
    let (code, status) = api
        .call("POST", &widgets, Some(object(group, kind, "bad", all)))
        .await;
    assert_eq!(code, 422);
    assert_eq!(causes(&status).len(), 3, "{status}");

    // Unknown fields: 400 under Strict; pruned with a warning otherwise;
    // the default is filled in.
    let mut unknown = object(group, kind, "w1", good.clone());
    unknown["spec"]["colour"] = json!("red");
    unknown["metadata"]["bogus"] = json!(1);
    let (code, status) = api
        .call(
            "POST",
            &format!("{widgets}?fieldValidation=Strict"),
            Some(unknown.clone()),
        )
        .await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        status["message"],
        "strict decoding error: unknown field \"metadata.bogus\", unknown field \"spec.colour\""
    );
    let resp = api
        .send_with(
            "POST",
            &widgets,
            Some(unknown.to_string().into()),
            "application/json",
            "application/json",
        )
        .await;
    assert_eq!(resp.status().as_u16(), 201);
    let warnings: Vec<String> = resp
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        warnings,
        [
            "299 - \"unknown field \\\"metadata.bogus\\\"\"",
            "299 - \"unknown field \\\"spec.colour\\\"\""
        ]
    );
    let created: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        created["spec"],
        json!({"cronSpec": "*/5 * * * *", "replicas": 1})
    );
    assert!(created["metadata"].get("bogus").is_none());

    // Updates and patches are validated too; status writes as well.
    let (code, status) = api
        .merge_patch(&format!("{widgets}/w1"), json!({"spec": {"replicas": -1}}))
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        causes(&status),
        ["spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0"]
    );
    let (code, status) = api
        .merge_patch(
            &format!("{widgets}/w1/status"),
            json!({"status": {"replicas": "many"}}),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    let (code, body) = api
        .merge_patch(
            &format!("{widgets}/w1/status"),
            json!({"status": {"replicas": 1, "selector": "app=w1", "odd": true}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], json!({"replicas": 1, "selector": "app=w1"}));

    // The scale subresource reads and writes spec.replicas, validated.
    let scale = format!("{widgets}/w1/scale");
    let (code, s) = api.call("GET", &scale, None).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["kind"], "Scale");
    assert_eq!(s["apiVersion"], "autoscaling/v1");
    assert_eq!(s["spec"]["replicas"], 1);
    assert_eq!(s["status"], json!({"replicas": 1, "selector": "app=w1"}));
    let (code, s) = api
        .merge_patch(&scale, json!({"spec": {"replicas": 4}}))
        .await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["spec"]["replicas"], 4);
    let (_, w) = api.call("GET", &format!("{widgets}/w1"), None).await;
    assert_eq!(w["spec"]["replicas"], 4);
    assert_eq!(w["metadata"]["generation"], 2);
    let (code, status) = api
        .merge_patch(&scale, json!({"spec": {"replicas": 11}}))
        .await;
    assert_eq!(code, 422, "{status}");
    let (code, status) = api
        .merge_patch(&scale, json!({"spec": {"replicas": -3}}))
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        causes(&status),
        ["spec.replicas: Invalid value: -3: must be greater than or equal to 0"]
    );
    let (_, resources) = api.call("GET", &format!("/apis/{group}/v1"), None).await;
    let scale_entry = resources["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "widgets/scale")
        .cloned();
    assert_eq!(
        scale_entry.map(|e| (e["group"].clone(), e["kind"].clone())),
        Some((json!("autoscaling"), json!("Scale")))
    );

    // Apply on status: only status changes, its fields' owner conflicts
    // until forced.
    let ctl = format!("{widgets}/w1/status?fieldManager=ctl");
    let applied = json!({"apiVersion": format!("{group}/v1"), "kind": kind,
        "metadata": {"name": "w1"}, "spec": {"replicas": 9}, "status": {"replicas": 2}});
    let (code, status, _) = send(&api, "PATCH", &ctl, applied.clone(), APPLY).await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(
        status["message"],
        format!("Apply failed with 1 conflict: conflict with \"\" with subresource \"status\" using {group}/v1: .status.replicas")
    );
    let (code, w, _) = send(&api, "PATCH", &format!("{ctl}&force=true"), applied, APPLY).await;
    assert_eq!(code, 200, "{w}");
    assert_eq!(w["status"], json!({"replicas": 2, "selector": "app=w1"}));
    assert_eq!(w["spec"]["replicas"], 4);
    let entry = w["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "ctl")
        .cloned()
        .unwrap_or_else(|| panic!("no ctl entry: {w}"));
    assert_eq!(entry["operation"], "Apply");
    assert_eq!(entry["subresource"], "status");
    assert_eq!(entry["fieldsV1"], json!({"f:status": {"f:replicas": {}}}));
    let (code, status, _) = send(
        &api,
        "PATCH",
        &format!("{widgets}/nobody/status?fieldManager=ctl"),
        json!({"status": {"replicas": 1}}),
        APPLY,
    )
    .await;
    assert_eq!(code, 404, "{status}");

    // Apply to an existing object: unknown fields are refused under
    // Strict, else pruned with a warning (its manager does not own them).
    let tool = format!("{widgets}/w1?fieldManager=tool");
    let config = json!({"apiVersion": format!("{group}/v1"), "kind": kind,
        "metadata": {"name": "w1"}, "spec": {"cronSpec": "*/5 * * * *", "mode": "Never", "colour": "red"}});
    let (code, status, _) = send(
        &api,
        "PATCH",
        &format!("{tool}&fieldValidation=Strict"),
        config.clone(),
        APPLY,
    )
    .await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        status["message"],
        "strict decoding error: unknown field \"spec.colour\""
    );
    let (code, w, warnings) = send(&api, "PATCH", &tool, config, APPLY).await;
    assert_eq!(code, 200, "{w}");
    assert_eq!(warnings, ["299 - \"unknown field \\\"spec.colour\\\"\""]);
    assert_eq!(
        w["spec"],
        json!({"cronSpec": "*/5 * * * *", "replicas": 4, "mode": "Never"})
    );
    let tools = w["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "tool")
        .map(|e| e["fieldsV1"].clone());
    assert_eq!(
        tools,
        Some(json!({"f:spec": {"f:cronSpec": {}, "f:mode": {}}}))
    );

    // A default added later applies on read to objects stored before it.
    let crd_path = format!("{CRDS}/widgets.{group}");
    let (_, mut current) = api.call("GET", &crd_path, None).await;
    current["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["image"]["default"] = json!("busybox");
    let (code, body) = api.call("PUT", &crd_path, Some(current)).await;
    assert_eq!(code, 200, "{body}");
    let (code, w) = until(&api, &format!("{widgets}/w1"), |_, b| {
        b["spec"]["image"] == "busybox"
    })
    .await;
    assert_eq!(code, 200);
    assert_eq!(w["spec"]["image"], "busybox", "{w}");
    let (_, list) = api.call("GET", &widgets, None).await;
    assert_eq!(list["items"][0]["spec"]["image"], "busybox", "{list}");
    // And on watch: the initial ADDED event comes from the cache, which
    // holds w1 as it was stored.
    let resp = api
        .send_with(
            "GET",
            &format!(
                "{widgets}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true\
                 &resourceVersionMatch=NotOlderThan&timeoutSeconds=5"
            ),
            None,
            "application/json",
            "application/json",
        )
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.into_body();
    let mut text = String::new();
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        while !text.contains('\n') {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        text.push_str(&String::from_utf8_lossy(d));
                    }
                }
                _ => break,
            }
        }
        text.lines().next().map(str::to_string)
    })
    .await
    .expect("a watch event in time")
    .expect("an event line");
    let event: Value = serde_json::from_str(&first).expect("an event");
    assert_eq!(event["type"], "ADDED", "{event}");
    assert_eq!(event["object"]["spec"]["image"], "busybox", "{event}");

    // The OpenAPI v3 document of the group carries the schema.
    let (code, root) = api.call("GET", "/openapi/v3", None).await;
    assert_eq!(code, 200);
    let url = root["paths"][format!("apis/{group}/v1")]["serverRelativeURL"]
        .as_str()
        .expect("the custom group-version is listed")
        .to_string();
    let (code, doc) = api.call("GET", &url, None).await;
    assert_eq!(code, 200, "{doc}");
    let schema = &doc["components"]["schemas"]["com.example.schema.v1.Widget"];
    assert_eq!(
        schema["x-kubernetes-group-version-kind"],
        json!([{"group": group, "version": "v1", "kind": kind}])
    );
    assert_eq!(
        schema["properties"]["spec"]["properties"]["cronSpec"]["type"],
        "string"
    );
    let patch = &doc["paths"]
        [format!("/apis/{group}/v1/namespaces/{{namespace}}/widgets/{{name}}")]["patch"];
    assert!(patch["requestBody"]["content"]["application/merge-patch+json"].is_object());
    assert!(patch["requestBody"]["content"]["application/strategic-merge-patch+json"].is_null());

    // Deleting the CRD ends a watch on its resource.
    let resp = api
        .send_with(
            "GET",
            &format!("{widgets}?watch=true"),
            None,
            "application/json",
            "application/json",
        )
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.into_body();
    let (code, _) = api.call("DELETE", &crd_path, None).await;
    assert_eq!(code, 200);
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the watch did not end with its CRD");
    let (code, _) = until(&api, &crd_path, |c, _| c == 404).await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explains_scales_and_strictly_applies_custom_resources() {
    let api = start().await;
    let (group, kind) = ("kubectl.schema.example.com", "Gadget");
    create_crd(&api, crd(group, "gadgets", kind)).await;
    let ns = namespace(&api, "crd-schema-kubectl").await;
    let dir = tempfile::tempdir().expect("tempdir");
    plain_kubeconfig(dir.path(), api.addr);
    let d = dir.path().to_path_buf();
    let mut gadget = object(group, kind, "g1", json!({"cronSpec": "* * * * *"}));
    std::fs::write(d.join("good.json"), gadget.to_string()).unwrap();
    gadget["spec"]["colour"] = json!("red");
    std::fs::write(d.join("unknown.json"), gadget.to_string()).unwrap();
    let ns2 = ns.clone();
    tokio::task::spawn_blocking(move || {
        let explained = kubectl_ok(&d, &["explain", "gadgets.spec"]);
        assert!(
            explained.contains("The desired schedule of the tab."),
            "{explained}"
        );
        assert!(explained.contains("cronSpec"), "{explained}");
        assert!(
            explained.contains("When to run, in cron syntax."),
            "{explained}"
        );
        let explained = kubectl_ok(&d, &["explain", "gadgets.spec.replicas"]);
        assert!(explained.contains("<integer>"), "{explained}");

        let unknown = d.join("unknown.json").to_string_lossy().into_owned();
        let (ok, _, stderr) = kubectl(&d, &["apply", "-n", &ns2, "-f", &unknown]);
        assert!(!ok);
        assert!(
            stderr.contains("strict decoding error: unknown field \"spec.colour\""),
            "{stderr}"
        );
        let good = d.join("good.json").to_string_lossy().into_owned();
        kubectl_ok(&d, &["apply", "-n", &ns2, "-f", &good]);
        let out = kubectl_ok(&d, &["scale", "-n", &ns2, "gadgets/g1", "--replicas=3"]);
        assert!(out.contains("scaled"), "{out}");
        let replicas = kubectl_ok(
            &d,
            &[
                "get",
                "-n",
                &ns2,
                "gadgets",
                "g1",
                "-o",
                "jsonpath={.spec.replicas}",
            ],
        );
        assert_eq!(replicas, "3");
        let (ok, _, stderr) = kubectl(&d, &["scale", "-n", &ns2, "gadgets/g1", "--replicas=12"]);
        assert!(!ok);
        assert!(
            stderr.contains("spec.replicas in body should be less than or equal to 10"),
            "{stderr}"
        );
    })
    .await
    .expect("kubectl");
    let (code, _) = api
        .call("DELETE", &format!("{CRDS}/gadgets.{group}"), None)
        .await;
    assert_eq!(code, 200);
}

const PYTHON_VALIDATION: &str = r#"
import json, sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException
config.load_kube_config(sys.argv[1])
ns = sys.argv[2]
api = client.CustomObjectsApi()
g, v, p = "py.schema.example.com", "v1", "pyschemas"
def body(name, spec):
    return {"apiVersion": g + "/v1", "kind": "PySchema", "metadata": {"name": name}, "spec": spec}
made = api.create_namespaced_custom_object(g, v, ns, p, body("ok", {"cronSpec": "* * * * *"}))
print("defaulted", made["spec"]["replicas"])
try:
    api.create_namespaced_custom_object(g, v, ns, p, body("bad", {"cronSpec": "* * * * *", "replicas": "x"}))
except ApiException as e:
    status = json.loads(e.body)
    print("refused", e.status, status["reason"])
    print(status["details"]["causes"][0]["message"])
try:
    api.create_namespaced_custom_object(g, v, ns, p, body("strict", {"cronSpec": "* * * * *", "odd": 1}),
                                        field_validation="Strict")
except ApiException as e:
    print("strict", e.status, json.loads(e.body)["message"])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_sees_validation_and_defaulting() {
    let api = start().await;
    let group = "py.schema.example.com";
    create_crd(&api, crd(group, "pyschemas", "PySchema")).await;
    let ns = namespace(&api, "crd-schema-python").await;
    let dir = tempfile::tempdir().expect("tempdir");
    plain_kubeconfig(dir.path(), api.addr);
    let out = python_client(PYTHON_VALIDATION, &dir.path().join("kubeconfig"), &ns).await;
    if let Some(lines) = out {
        assert_eq!(
            lines,
            [
                "defaulted 1",
                "refused 422 Invalid",
                "Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
                "strict 400 strict decoding error: unknown field \"spec.odd\"",
            ]
        );
    }
    let (code, _) = api
        .call("DELETE", &format!("{CRDS}/pyschemas.{group}"), None)
        .await;
    assert_eq!(code, 200);
}
