//! CRD validation rules (`x-kubernetes-validations`, CEL) end to end
//! against the real apiserver over a real cluster: a CRD with a
//! cross-field rule, a transition rule (`oldSelf`), `messageExpression`,
//! list item and map value rules, `reason` and `fieldPath`, and a root
//! rule on `metadata.name`; valid objects accepted, invalid ones refused
//! with kube's 422 causes on create, update, merge patch, server-side
//! apply and `/status`; a rule that does not compile refused with the
//! CRD; a rule that would spin stopped by the cost limit; schema errors
//! blocking the rules as kube blocks them. The official Python client
//! sees a rule's message.

use crate::common;

use std::time::Duration;

use crate::common::{endpoints, namespace, plain_kubeconfig, python_client, Api};
use ballast_apiserver::CacheConfig;
use ballast_tests::ClusterKind;
use serde_json::{json, Value};

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const ROOT: &str = "spec.versions[0].schema.openAPIV3Schema";

/// The rules under test, on a `CelTab` whose `spec` holds replicas bounds,
/// an immutable `image`, a `mode`, `ports` and `labels`.
fn crd(group: &str, plural: &str, kind: &str) -> Value {
    let spec = json!({
        "type": "object",
        "properties": {
            "minReplicas": {"type": "integer"},
            "maxReplicas": {"type": "integer"},
            "image": {"type": "string", "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "image is immutable"}]},
            "mode": {"type": "string"},
            "ports": {"type": "array", "items": {"type": "object",
                "properties": {"name": {"type": "string"}, "port": {"type": "integer"}},
                "x-kubernetes-validations": [{"rule": "self.port > 1024",
                    "messageExpression": "'port ' + string(self.port) + ' is privileged'"}]}},
            "labels": {"type": "object", "additionalProperties": {"type": "string",
                "x-kubernetes-validations": [{"rule": "self.size() <= 10"}]}},
            "loops": {"type": "array", "items": {"type": "integer"}},
        },
        "x-kubernetes-validations": [
            {"rule": "self.minReplicas <= self.maxReplicas",
             "message": "minReplicas must not exceed maxReplicas"},
            {"rule": "!has(self.mode) || self.mode != 'Locked' || !has(self.image)", "reason": "FieldValueForbidden",
             "fieldPath": ".image", "message": "image may not be set when Locked"},
            {"rule": "!has(self.loops) || self.loops.all(a, self.loops.all(b, self.loops.all(c, a + b + c >= 0)))"},
        ],
    });
    let status = json!({"type": "object", "properties": {"phase": {"type": "string"}},
        "x-kubernetes-validations": [{"rule": "self.phase != 'Broken'", "reason": "FieldValueRequired",
            "message": "a working phase is required"}]});
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
                "schema": {"openAPIV3Schema": {"type": "object",
                    "properties": {"spec": spec, "status": status},
                    "x-kubernetes-validations": [{"rule": "!self.metadata.name.startsWith('forbidden')",
                        "message": "this name is reserved"}]}},
                "subresources": {"status": {}},
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

/// The `field: message` of every cause of a Status, sorted.
fn causes(status: &Value) -> Vec<String> {
    let mut out: Vec<String> = status["details"]["causes"]
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
        .collect();
    out.sort();
    out
}

/// Creates `crd` and waits (at most 15 s) until its resource is served.
async fn create_crd(api: &Api, crd: Value, objects: &str) {
    let (code, body) = api.call("POST", CRDS, Some(crd)).await;
    assert_eq!(code, 201, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (code, body) = api.call("GET", objects, None).await;
        if code == 200 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{code} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_rules_are_evaluated_on_every_write() {
    let api = start().await;
    let (group, kind) = ("cel.example.com", "CelTab");
    let ns = namespace(&api, "crd-cel").await;
    let objects = format!("/apis/{group}/v1/namespaces/{ns}/celtabs");
    create_crd(&api, crd(group, "celtabs", kind), &objects).await;

    // A valid object is accepted.
    let good = json!({"minReplicas": 1, "maxReplicas": 3, "image": "nginx:1",
        "ports": [{"name": "web", "port": 8080}], "labels": {"team": "a"}});
    let (code, made) = api
        .call("POST", &objects, Some(object(group, kind, "good", good)))
        .await;
    assert_eq!(code, 201, "{made}");

    // Every failed rule is one cause, worded as kube words it.
    let bad = json!({"minReplicas": 5, "maxReplicas": 3, "image": "nginx:1", "mode": "Locked",
        "ports": [{"name": "ok", "port": 8443}, {"name": "ssh", "port": 22}],
        "labels": {"team": "a-very-long-team-name"}});
    let (code, status) = api
        .call("POST", &objects, Some(object(group, kind, "bad", bad)))
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        causes(&status),
        [
            "spec.image: Forbidden: image may not be set when Locked",
            "spec.labels[team]: Invalid value: \"string\": failed rule: self.size() <= 10",
            "spec.ports[1]: Invalid value: \"object\": port 22 is privileged",
            "spec: Invalid value: \"object\": minReplicas must not exceed maxReplicas",
        ]
    );
    let reasons: Vec<&str> = status["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"FieldValueForbidden"), "{reasons:?}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{kind}.{group} \"bad\" is invalid: ")),
        "{status}"
    );

    // A rule at the resource root sees `metadata.name`.
    let (code, status) = api
        .call(
            "POST",
            &objects,
            Some(object(
                group,
                kind,
                "forbidden-1",
                json!({"minReplicas": 1, "maxReplicas": 1}),
            )),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        causes(&status),
        ["<nil>: Invalid value: \"object\": this name is reserved"]
    );

    // The transition rule runs on updates: by PUT, merge patch and
    // server-side apply alike.
    let path = format!("{objects}/good");
    let mut changed = made.clone();
    changed["spec"]["image"] = json!("nginx:2");
    let immutable = ["spec.image: Invalid value: \"string\": image is immutable"];
    let (code, status) = api.call("PUT", &path, Some(changed)).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(causes(&status), immutable);
    let (code, status) = api
        .merge_patch(&path, json!({"spec": {"image": "nginx:2"}}))
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(causes(&status), immutable);
    let applied = object(group, kind, "good", json!({"image": "nginx:3"}));
    let resp = api
        .send_with(
            "PATCH",
            &format!("{path}?fieldManager=tester&force=true"),
            Some(applied.to_string().into()),
            "application/apply-patch+yaml",
            "application/json",
        )
        .await;
    assert_eq!(resp.status().as_u16(), 422);
    let (code, ok) = api
        .merge_patch(&path, json!({"spec": {"maxReplicas": 4}}))
        .await;
    assert_eq!(code, 200, "{ok}");

    // `/status` runs the status rules, with the rule's reason.
    let mut with_status = ok.clone();
    with_status["status"] = json!({"phase": "Broken"});
    let (code, status) = api
        .call("PUT", &format!("{path}/status"), Some(with_status.clone()))
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        causes(&status),
        ["status: Required value: a working phase is required"]
    );
    with_status["status"] = json!({"phase": "Running"});
    let (code, body) = api
        .call("PUT", &format!("{path}/status"), Some(with_status))
        .await;
    assert_eq!(code, 200, "{body}");

    // A rule that would spin is stopped by the per-call cost limit.
    let loops: Vec<i64> = (0..300).collect();
    let (code, status) = api
        .call(
            "POST",
            &objects,
            Some(object(
                group,
                kind,
                "spin",
                json!({"minReplicas": 1, "maxReplicas": 1, "loops": loops}),
            )),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        causes(&status),
        ["spec: Invalid value: \"object\": 'operation cancelled: actual cost limit exceeded': no further validation rules will be run due to call cost exceeds limit for rule: !has(self.loops) || self.loops.all(a, self.loops.all(b, self.loops.all(c, a + b + c >= 0)))"]
    );

    // A wrongly typed field blocks the rules, as in kube.
    let (code, status) = api
        .call(
            "POST",
            &objects,
            Some(object(
                group,
                kind,
                "typed",
                json!({"minReplicas": "x", "maxReplicas": 1}),
            )),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        causes(&status),
        [
            "<nil>: Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            "spec.minReplicas: Invalid value: \"string\": spec.minReplicas in body must be of type integer: \"string\"",
        ]
    );

    // The official Python client sees the rule's message.
    let dir = tempfile::tempdir().expect("tempdir");
    plain_kubeconfig(dir.path(), api.addr);
    let out = python_client(PYTHON_RULE, &dir.path().join("kubeconfig"), &ns).await;
    if let Some(lines) = out {
        assert_eq!(
            lines,
            [
                "created py-ok",
                "refused 422 Invalid",
                "spec minReplicas must not exceed maxReplicas",
            ]
        );
    }

    let (code, _) = api
        .call("DELETE", &format!("{CRDS}/celtabs.{group}"), None)
        .await;
    assert_eq!(code, 200);
}

const PYTHON_RULE: &str = r#"
import json, sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException
config.load_kube_config(sys.argv[1])
ns = sys.argv[2]
api = client.CustomObjectsApi()
g, v, p = "cel.example.com", "v1", "celtabs"
def body(name, spec):
    return {"apiVersion": g + "/v1", "kind": "CelTab", "metadata": {"name": name}, "spec": spec}
made = api.create_namespaced_custom_object(g, v, ns, p, body("py-ok", {"minReplicas": 1, "maxReplicas": 2}))
print("created", made["metadata"]["name"])
try:
    api.create_namespaced_custom_object(g, v, ns, p, body("py-bad", {"minReplicas": 3, "maxReplicas": 2}))
except ApiException as e:
    status = json.loads(e.body)
    print("refused", e.status, status["reason"])
    cause = status["details"]["causes"][0]
    print(cause["field"], cause["message"].split(": ")[-1])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_that_do_not_compile_are_refused_with_the_crd() {
    let api = start().await;
    let group = "celbad.example.com";
    let mut bad = crd(group, "celbads", "CelBad");
    let spec_rules = &mut bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        ["spec"]["x-kubernetes-validations"];
    spec_rules[0]["rule"] = json!("self.minReplicas <=");
    spec_rules[1]["reason"] = json!("FieldValueBogus");
    spec_rules[2]["rule"] = json!("self.nope(1)");
    bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["ports"]["items"]["x-kubernetes-validations"] =
        json!([{"rule": "self.port == oldSelf.port"}]);
    let (code, status) = api.call("POST", CRDS, Some(bad)).await;
    assert_eq!(code, 422, "{status}");
    let at = format!("{ROOT}.properties[spec]");
    let found = causes(&status);
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(
        found[0].starts_with(&format!("{at}.properties[ports].items.x-kubernetes-validations[0].rule: Invalid value: \"self.port == oldSelf.port\": oldSelf cannot be used on the uncorrelatable portion of the schema within {at}.properties[ports].items")),
        "{found:?}"
    );
    assert!(
        found[1].starts_with(&format!("{at}.x-kubernetes-validations[0].rule: Invalid value: apiextensions.ValidationRule{{Rule:\"self.minReplicas <=\", Message:\"minReplicas must not exceed maxReplicas\", MessageExpression:\"\", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:\"\", OptionalOldSelf:(*bool)(nil)}}: compilation failed: ERROR: <input>")),
        "{found:?}"
    );
    assert_eq!(
        found[2],
        format!("{at}.x-kubernetes-validations[1].reason: Unsupported value: \"FieldValueBogus\": supported values: \"FieldValueDuplicate\", \"FieldValueForbidden\", \"FieldValueInvalid\", \"FieldValueRequired\"")
    );
    assert!(
        found[3].ends_with(
            "compilation failed: ERROR: <input>: undeclared reference to 'nope' (in container '')"
        ),
        "{found:?}"
    );
    assert!(
        status["message"].as_str().unwrap().starts_with(&format!(
            "CustomResourceDefinition.apiextensions.k8s.io \"celbads.{group}\" is invalid: "
        )),
        "{status}"
    );
    let (code, _) = api
        .call("GET", &format!("{CRDS}/celbads.{group}"), None)
        .await;
    assert_eq!(code, 404);
}
