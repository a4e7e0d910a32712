//! The Node authorizer: what a kubelet (`system:node:<name>` in
//! `system:nodes`) may do, judged from the objects it touches.
//!
//! Allowed:
//! - read (get/list/watch) nodes, pods, services, endpoints, configmaps,
//!   namespaces; get a Secret a pod bound to the node refers to;
//! - create nodes; update/patch its own Node and `nodes/status`;
//! - get/create/update/patch/delete its own Lease in `kube-node-lease`;
//! - create and delete pods (Kubernetes' node rules, for mirror pods);
//! - update/patch `pods/status` of pods bound to it (`spec.nodeName`, read
//!   from the pods watch cache);
//! - create/update/patch events;
//! - create subjectaccessreviews and tokenreviews (the kubelet's API
//!   asks them who may use it);
//! - create `serviceaccounts/token` for a ServiceAccount a pod bound to
//!   it runs as (its projected token volume).
//!
//! Everything else gets no opinion (RBAC may still allow it).
//!
//! What the authorizer cannot judge without the request's body — the name
//! of a created Node or Lease, whether a created pod is a mirror pod bound
//! to the node, whose pod a delete removes, Node labels and taints — the
//! NodeRestriction admission plugin ([`super::node_restriction`]) checks,
//! for any node request however it was authorized.
//!
//! Intentional simplification against kube-apiserver's graph-based Node
//! authorizer: reads of pods and configmaps are not narrowed to the
//! objects related to the node (kube keeps a graph of pod →
//! configmap/secret/volume edges and narrows pod lists to a
//! `spec.nodeName` field selector).

use super::rbac::Decision;
use super::request::Attributes;
use super::User;
use crate::cache::WatchCache;
use crate::selector::{FieldSelector, Filter};
use serde_json::Value;

/// The group of node identities.
pub const NODES_GROUP: &str = "system:nodes";
/// The user-name prefix of node identities.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// Where nodes keep their heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

const READ: [&str; 3] = ["get", "list", "watch"];
const WRITE: [&str; 2] = ["update", "patch"];

/// The node a user is, if it is one: `name` for `system:node:<name>` in
/// `system:nodes` (Kubernetes' default node identifier; the name may be
/// empty).
pub fn node_identity(user: &User) -> Option<&str> {
    if !user.groups.iter().any(|g| g == NODES_GROUP) {
        return None;
    }
    user.name.strip_prefix(NODE_USER_PREFIX)
}

/// The node the user making `a` is, if it is one.
pub fn node_name(a: &Attributes) -> Option<&str> {
    node_identity(&a.user)
}

/// Authorizes `a` for a node identity; no opinion for anyone else.
pub fn authorize(a: &Attributes, pods: &WatchCache) -> Decision {
    let Some(node) = node_name(a) else {
        return Decision::NoOpinion(String::new());
    };
    if node.is_empty() {
        return Decision::NoOpinion(format!("unknown node for user {:?}", a.user.name));
    }
    if !a.resource_request {
        return Decision::NoOpinion(String::new());
    }
    let verb = a.verb.as_str();
    let allow = |ok: bool, why: String| {
        if ok {
            Decision::Allow
        } else {
            Decision::NoOpinion(why)
        }
    };
    let unrelated = || format!("no relationship found between node '{node}' and this object");
    match (
        a.api_group.as_str(),
        a.resource.as_str(),
        a.subresource.as_str(),
    ) {
        ("", "nodes", "" | "status") => {
            if READ.contains(&verb) && a.subresource.is_empty() || verb == "create" {
                return Decision::Allow;
            }
            if WRITE.contains(&verb) || (verb == "get" && a.subresource == "status") {
                return allow(
                    a.name == node,
                    format!("node {node:?} is not allowed to modify node {:?}", a.name),
                );
            }
            Decision::NoOpinion(String::new())
        }
        ("", "pods", "") if READ.contains(&verb) => Decision::Allow,
        ("", "pods", "status") if WRITE.contains(&verb) || verb == "get" => {
            allow(bound_to(pods, a, node), unrelated())
        }
        // Node-pressure eviction (kube's node rules); NodeRestriction
        // admits only pods bound to the node.
        ("", "pods", "eviction") if verb == "create" => Decision::Allow,
        // NodeRestriction admits mirror pods of the node, and deletes of
        // its own pods, only.
        ("", "pods", "") if matches!(verb, "create" | "delete") => Decision::Allow,
        ("coordination.k8s.io", "leases", "") => {
            let verb_ok = matches!(verb, "get" | "create" | "update" | "patch" | "delete");
            let name_ok = a.name == node || (verb == "create" && a.name.is_empty());
            allow(
                verb_ok && a.namespace == LEASE_NAMESPACE && name_ok,
                format!("can only access node lease with the same name as the requesting node ({node:?})"),
            )
        }
        ("" | "events.k8s.io", "events", "") if matches!(verb, "create" | "update" | "patch") => {
            Decision::Allow
        }
        // The kubelet authorizes requests to its own API with these
        // (Kubernetes' node rules).
        ("authorization.k8s.io", "subjectaccessreviews", "")
        | ("authentication.k8s.io", "tokenreviews", "")
            if verb == "create" =>
        {
            Decision::Allow
        }
        ("", "services" | "endpoints" | "configmaps" | "namespaces", "")
            if READ.contains(&verb) =>
        {
            Decision::Allow
        }
        // A Secret only by name, and only when a pod bound to the node
        // refers to it (kube's graph: pod → secret edges).
        ("", "secrets", "") if verb == "get" => allow(
            secret_referenced(pods, &a.namespace, &a.name, node),
            unrelated(),
        ),
        // A token for a ServiceAccount a pod bound to the node runs as
        // (kube's graph: serviceaccount → pod → node edges), for the pod's
        // projected token volume.
        ("", "serviceaccounts", "token") if verb == "create" => {
            allow(account_used(pods, &a.namespace, &a.name, node), unrelated())
        }
        _ => Decision::NoOpinion(String::new()),
    }
}

/// Whether a pod in `ns` bound to `node` (in the pods cache) runs as the
/// ServiceAccount `name`.
fn account_used(pods: &WatchCache, ns: &str, name: &str, node: &str) -> bool {
    bound_pods(pods, ns, node).any(|p| p["spec"]["serviceAccountName"].as_str() == Some(name))
}

/// The pods in `ns` bound to `node`, from the pods cache.
fn bound_pods<'a>(pods: &'a WatchCache, ns: &str, node: &str) -> impl Iterator<Item = Value> + 'a {
    let fields = FieldSelector::parse(&format!("spec.nodeName={node}"), "pods").ok();
    let items = fields
        .map(|fields| {
            let filter = Filter {
                namespace: Some(ns.to_string()),
                fields,
                ..Filter::default()
            };
            pods.list(&filter, 0).items
        })
        .unwrap_or_default();
    items.into_iter().filter_map(|p| p.value().ok())
}

/// Whether a pod in `ns` bound to `node` (in the pods cache) refers to
/// the Secret `name`.
fn secret_referenced(pods: &WatchCache, ns: &str, name: &str, node: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let Ok(fields) = FieldSelector::parse(&format!("spec.nodeName={node}"), "pods") else {
        return false;
    };
    let filter = Filter {
        namespace: Some(ns.to_string()),
        fields,
        ..Filter::default()
    };
    pods.list(&filter, 0).items.iter().any(|p| {
        p.value()
            .is_ok_and(|p| pod_secret_names(&p["spec"]).any(|n| n == name))
    })
}

/// Kubernetes' `VisitPodSecretNames`: the Secrets a pod spec names — image
/// pull secrets, env and envFrom references of every container, secret
/// volumes and projections, and the secret references of volume plugins.
pub(crate) fn pod_secret_names(spec: &Value) -> impl Iterator<Item = &str> {
    let containers = ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |l| spec[l].as_array().into_iter().flatten());
    let env = containers.flat_map(|c| {
        let from = c["envFrom"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| &e["secretRef"]["name"]);
        let vars = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| &e["valueFrom"]["secretKeyRef"]["name"]);
        from.chain(vars)
    });
    let pull = spec["imagePullSecrets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| &s["name"]);
    let volumes = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|v| {
            let projected = v["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| &s["secret"]["name"]);
            let plugins = v.as_object().into_iter().flatten().flat_map(|(_, s)| {
                [
                    &s["secretName"],
                    &s["secretRef"]["name"],
                    &s["nodePublishSecretRef"]["name"],
                ]
            });
            projected.chain(plugins)
        });
    pull.chain(env)
        .chain(volumes)
        .filter_map(Value::as_str)
        .filter(|n| !n.is_empty())
}

/// Whether the pod `a` names is bound to `node`, as the pods cache has it.
fn bound_to(pods: &WatchCache, a: &Attributes, node: &str) -> bool {
    pod_node(pods, &a.namespace, &a.name).is_some_and(|n| n == node)
}

/// The `spec.nodeName` of pod `ns/name` in the pods cache (`""` when
/// unbound); `None` when the cache has no such pod.
pub(crate) fn pod_node(pods: &WatchCache, ns: &str, name: &str) -> Option<String> {
    let Ok(fields) = FieldSelector::parse(&format!("metadata.name={name}"), "pods") else {
        return None;
    };
    let filter = Filter {
        namespace: Some(ns.to_string()),
        fields,
        ..Filter::default()
    };
    pods.list(&filter, 1)
        .items
        .first()
        .map(|p| p.node_name.clone())
}
