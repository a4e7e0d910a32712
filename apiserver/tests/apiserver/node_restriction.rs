//! NodeRestriction admission end to end: an in-process apiserver on the
//! shared real etcd, HTTPS with client certificates and
//! `--authorization-mode Node,RBAC`; kubelets (`system:node:<name>` in
//! `system:nodes`) write only their own Node, Lease and mirror pods. Also
//! the 400 answers to label selectors with values Kubernetes rejects.

use crate::common;

use crate::common::{start_secure, SecureApi, TlsClient};
use ballast_apiserver::{AuthConfig, AuthorizationMode};
use serde_json::{json, Value};

const NODE_1: &str = "nr-node-1";
const NODE_2: &str = "nr-node-2";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";

fn node_and_rbac() -> AuthConfig {
    AuthConfig {
        modes: vec![AuthorizationMode::Node, AuthorizationMode::Rbac],
        ..AuthConfig::default()
    }
}

fn kubelet(api: &SecureApi, node: &str) -> TlsClient {
    api.cert_client(&format!("system:node:{node}"), &["system:nodes"])
}

/// Removes what an earlier run left (trusted plain port; 404 is fine).
async fn remove(api: &SecureApi, path: &str) {
    let (code, body) = api.plain.call("DELETE", path, None).await;
    assert!(code == 200 || code == 404, "DELETE {path}: {code} {body}");
}

/// Asserts a 403 `Forbidden` Status with exactly `message`.
fn assert_forbidden(got: (u16, Value), message: &str) {
    let (code, status) = got;
    assert_eq!(code, 403, "{status}");
    assert_eq!(status["reason"], "Forbidden", "{status}");
    assert_eq!(status["message"], message, "{status}");
}

fn lease(name: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": name, "namespace": "kube-node-lease"},
           "spec": {"holderIdentity": name, "leaseDurationSeconds": 40}})
}

/// A mirror pod of `node`'s static pod `name`, owned by the Node `uid`.
fn mirror_pod(name: &str, node: &str, uid: &str) -> Value {
    let mut pod = common::pod(name, json!({"tier": "static"}), node);
    pod["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "hash"});
    pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Node",
        "name": node, "uid": uid, "controller": true}]);
    pod
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelets_write_only_their_own_node_lease_and_mirror_pods() {
    let api = start_secure(node_and_rbac()).await;
    let ns = common::namespace(&api.plain, "node-restriction").await;
    common::namespace(&api.plain, "kube-node-lease").await;
    for node in [NODE_1, NODE_2] {
        remove(&api, &format!("/api/v1/nodes/{node}")).await;
        remove(&api, &format!("{LEASES}/{node}")).await;
    }
    for pod in ["static-web", "on-2", "static-other"] {
        remove(
            &api,
            &format!("/api/v1/namespaces/{ns}/pods/{pod}?gracePeriodSeconds=0"),
        )
        .await;
    }
    let k1 = kubelet(&api, NODE_1);

    // Nodes: its own, and only with labels a kubelet may set.
    let (code, created) = k1
        .call(
            "POST",
            "/api/v1/nodes",
            Some(json!({"metadata": {"name": NODE_1,
                "labels": {"kubernetes.io/hostname": NODE_1, "node.kubernetes.io/pool": "a"}}})),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let node_uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    assert_forbidden(
        k1.call(
            "POST",
            "/api/v1/nodes",
            Some(json!({"metadata": {"name": NODE_2}})),
        )
        .await,
        "nodes \"nr-node-2\" is forbidden: node \"nr-node-1\" is not allowed to modify node \"nr-node-2\"",
    );
    assert_eq!(
        api.plain
            .call("GET", &format!("/api/v1/nodes/{NODE_2}"), None)
            .await
            .0,
        404,
        "the refused Node was not stored"
    );
    assert_forbidden(
        k1.call(
            "POST",
            "/api/v1/nodes",
            Some(json!({"metadata": {"name": NODE_1,
                "labels": {"node-restriction.kubernetes.io/pool": "gpu"}}})),
        )
        .await,
        "nodes \"nr-node-1\" is forbidden: node \"nr-node-1\" is not allowed to set the following labels: node-restriction.kubernetes.io/pool",
    );
    // Updates of its own Node: labels of its own namespaces yes; restricted
    // labels and taints no.
    let node_path = format!("/api/v1/nodes/{NODE_1}");
    let (code, body) = k1
        .merge_patch(
            &node_path,
            json!({"metadata": {"labels": {"example.com/team": "x"}},
                   "spec": {"podCIDR": "10.244.7.0/24"}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["metadata"]["labels"]["example.com/team"], "x");
    assert_forbidden(
        k1.merge_patch(
            &node_path,
            json!({"metadata": {"labels": {"node-restriction.kubernetes.io/pool": "gpu"}}}),
        )
        .await,
        "nodes \"nr-node-1\" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/pool",
    );
    assert_forbidden(
        k1.merge_patch(
            &node_path,
            json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
        )
        .await,
        "nodes \"nr-node-1\" is forbidden: node \"nr-node-1\" is not allowed to modify taints",
    );
    // An administrator's taint stays; the kubelet may still update the rest.
    let (code, body) = api
        .plain
        .merge_patch(
            &node_path,
            json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let mut whole = body.clone();
    whole["metadata"]["labels"]["example.com/team"] = json!("y");
    let (code, body) = k1.call("PUT", &node_path, Some(whole)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["spec"]["taints"][0]["key"], "k");

    // Leases: its own, in kube-node-lease.
    let (code, body) = k1.call("POST", LEASES, Some(lease(NODE_1))).await;
    assert_eq!(code, 201, "{body}");
    assert_forbidden(
        k1.call("POST", LEASES, Some(lease(NODE_2))).await,
        "leases.coordination.k8s.io \"nr-node-2\" is forbidden: can only access node lease with the same name as the requesting node",
    );
    assert_eq!(
        api.plain
            .call("GET", &format!("{LEASES}/{NODE_2}"), None)
            .await
            .0,
        404,
        "the refused Lease was not stored"
    );

    // Pods: mirror pods bound to itself only.
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    assert_forbidden(
        k1.call("POST", &pods, Some(common::pod("static-web", json!({}), NODE_1)))
            .await,
        "pods \"static-web\" is forbidden: pod does not have \"kubernetes.io/config.mirror\" annotation, node \"nr-node-1\" can only create mirror pods",
    );
    assert_forbidden(
        k1.call(
            "POST",
            &pods,
            Some(mirror_pod("static-other", NODE_2, &node_uid)),
        )
        .await,
        "pods \"static-other\" is forbidden: node \"nr-node-1\" can only create pods with spec.nodeName set to itself",
    );
    assert_forbidden(
        k1.call(
            "POST",
            &pods,
            Some(mirror_pod("static-web", NODE_1, "not-the-uid")),
        )
        .await,
        &format!("pods \"static-web\" is forbidden: node nr-node-1 UID mismatch: expected not-the-uid got {node_uid}"),
    );
    let (code, body) = k1
        .call(
            "POST",
            &pods,
            Some(mirror_pod("static-web", NODE_1, &node_uid)),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    // Updates of pods are not a kubelet's (status is): the authorizer
    // already refuses them, as Kubernetes' node rules do.
    let mut changed = body.clone();
    changed["metadata"]["labels"]["tier"] = json!("changed");
    assert_forbidden(
        k1.call("PUT", &format!("{pods}/static-web"), Some(changed)).await,
        &format!("pods \"static-web\" is forbidden: User \"system:node:nr-node-1\" cannot update resource \"pods\" in API group \"\" in the namespace \"{ns}\""),
    );
    // Deletes: pods bound to itself only (looked up in the pods cache,
    // which follows the store asynchronously).
    let (code, body) = api
        .plain
        .call("POST", &pods, Some(common::pod("on-2", json!({}), NODE_2)))
        .await;
    assert_eq!(code, 201, "{body}");
    assert_forbidden(
        k1.eventually("DELETE", &format!("{pods}/on-2?gracePeriodSeconds=0"), None, 403).await,
        "pods \"on-2\" is forbidden: node \"nr-node-1\" can only delete pods with spec.nodeName set to itself",
    );
    let (code, body) = k1
        .eventually(
            "DELETE",
            &format!("{pods}/static-web?gracePeriodSeconds=0"),
            None,
            200,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = kubelet(&api, NODE_2)
        .eventually(
            "DELETE",
            &format!("{pods}/on-2?gracePeriodSeconds=0"),
            None,
            200,
        )
        .await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selectors_with_invalid_values_or_keys_are_400() {
    let api = start_secure(node_and_rbac()).await;
    let ns = common::namespace(&api.plain, "node-restriction-selectors").await;
    let list = |selector: &str| format!("/api/v1/namespaces/{ns}/pods?labelSelector={selector}");
    let admin = api.cert_client("nr-admin", &["system:masters"]);
    let (code, status) = admin.call("GET", &list("app%3Dbad%20value!"), None).await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(status["reason"], "BadRequest");
    assert_eq!(
        status["message"],
        "unable to parse requirement: values[0][app]: Invalid value: \"bad value!\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
    );
    let (code, status) = admin.call("GET", &list("tier%20in%20(web,-x)"), None).await;
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("unable to parse requirement: values[0][tier]: Invalid value: \"-x\": "),
        "{status}"
    );
    let (code, status) = admin.call("GET", &list("Bad.Prefix/app"), None).await;
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"].as_str().unwrap().starts_with(
            "unable to parse requirement: <nil>: Invalid value: \"Bad.Prefix/app\": prefix part a lowercase RFC 1123 subdomain"
        ),
        "{status}"
    );
    // Valid ones still select; watches parse the same way.
    let (code, body) = admin
        .call("GET", &list("example.com/app%3D,tier%20notin%20()"), None)
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = admin
        .call(
            "GET",
            &format!("{}&watch=true&timeoutSeconds=1", list("a%3D_")),
            None,
        )
        .await;
    assert_eq!(code, 400);
}
