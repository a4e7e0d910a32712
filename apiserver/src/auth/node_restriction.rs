//! The NodeRestriction admission plugin: what a kubelet (`system:node:<name>`
//! in `system:nodes`) may write, judged from the request's objects, which
//! the Node authorizer ([`crate::auth::node`]) never sees. On whenever
//! `--authorization-mode` includes `Node`, as kube-apiserver deployments
//! pair the two.
//!
//! Two phases, as Kubernetes' one `Admit` call sees them:
//!
//! - [`admit_request`] — from the request's attributes, after authorization
//!   and before routing: deletes, updates of pods, subresources, names in
//!   the URL, the Lease namespace;
//! - [`admit_create`] / [`admit_update`] — from the decoded (and, for an
//!   update, the stored) object, just before validation: the name in a
//!   create's body, Node labels and taints, mirror pods.
//!
//! ```text
//! node-1 POST   nodes {name: node-2}           403 node "node-1" is not allowed to modify node "node-2"
//! node-1 POST   leases {name: node-2}          403 can only access node lease with the same name as the requesting node
//! node-1 POST   pods (no mirror annotation)    403 pod does not have "kubernetes.io/config.mirror" annotation, …
//! node-1 DELETE pods/x (bound to node-2)       403 node "node-1" can only delete pods with spec.nodeName set to itself
//! node-1 PATCH  nodes/node-1 (taints changed)  403 node "node-1" is not allowed to modify taints
//! ```
//!
//! Left out (Ballast serves none of these resources): PVC status,
//! ServiceAccount tokens, CSINodes, ResourceSlices. Pod lookups (delete,
//! status, eviction) read the pods watch cache, as Kubernetes reads its
//! informer's lister.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::auth::node::{node_identity, pod_node, LEASE_NAMESPACE};
use crate::auth::{Attributes, Auth, AuthorizationMode, User};
use crate::cache::WatchCache;
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::resources::Resource;
use crate::selector::go_quote;

/// The annotation that makes a pod a mirror of a kubelet's static pod.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Labels under this prefix (or a subdomain of it) are for administrators
/// to steer workloads; a node may never set them on itself.
pub const NODE_RESTRICTION_LABEL_PREFIX: &str = "node-restriction.kubernetes.io";

/// `kubernetes.io` / `k8s.io` labels a kubelet may set on its own Node
/// (`k8s.io/api/core/v1` `KubeletLabels`).
const KUBELET_LABELS: [&str; 11] = [
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];
/// Label namespaces (and their subdomains) a kubelet may use freely.
const KUBELET_LABEL_NAMESPACES: [&str; 2] = ["kubelet.kubernetes.io", "node.kubernetes.io"];

/// The admission operation, as Kubernetes names it in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// The node `user` is, when the plugin applies to it (Node mode on, and a
/// node identity; the name may be empty).
fn restricted<'a>(auth: &Auth, user: &'a User) -> Option<&'a str> {
    if !auth.config.modes.contains(&AuthorizationMode::Node) {
        return None;
    }
    node_identity(user)
}

/// `admission.NewForbidden`: `<resource> "<name>" is forbidden: <detail>`,
/// the name being `Unknown` when the request names none.
fn forbidden(r: &'static Resource, name: &str, detail: String) -> Error {
    Error::Forbidden {
        group: r.group,
        resource: r.name,
        name: if name.is_empty() { "Unknown" } else { name }.to_string(),
        detail,
    }
}

/// Checks a request of a node from its attributes alone; `caches` are the
/// apiserver's watch caches (pods are looked up in them). Creates, and the
/// object checks of updates, continue in [`admit_create`] and
/// [`admit_update`].
pub(crate) fn admit_request(auth: &Auth, a: &Attributes, caches: &[WatchCache]) -> Result<()> {
    let Some(node) = restricted(auth, &a.user) else {
        return Ok(());
    };
    if !a.resource_request {
        return Ok(());
    }
    let op = match a.verb.as_str() {
        "create" => Operation::Create,
        "update" | "patch" => Operation::Update,
        "delete" | "deletecollection" => Operation::Delete,
        _ => return Ok(()),
    };
    // A resource this server does not serve is answered 404 by the router.
    let Some(r) = Resource::find(&a.api_group, &a.resource) else {
        return Ok(());
    };
    let deny = |detail: String| Err(forbidden(r, &a.name, detail));
    if node.is_empty() {
        return deny(format!(
            "could not determine node from user {}",
            go_quote(&a.user.name)
        ));
    }
    let q = go_quote(node);
    match (r.group, r.name) {
        ("", "pods") => {
            let bound_here = || -> Result<bool> {
                let pods = find(caches, "pods")?;
                match pod_node(pods, &a.namespace, &a.name) {
                    Some(n) => Ok(n == node),
                    None => Err(Error::NotFound {
                        group: r.group,
                        resource: r.name,
                        name: a.name.clone(),
                    }),
                }
            };
            match (a.subresource.as_str(), op) {
                // The body is checked by `admit_create`.
                ("", Operation::Create) => Ok(()),
                ("", Operation::Delete) => {
                    if bound_here()? {
                        Ok(())
                    } else {
                        deny(format!(
                            "node {q} can only delete pods with spec.nodeName set to itself"
                        ))
                    }
                }
                ("", op) => deny(format!(
                    "unexpected operation {}, node {q} can only create and delete mirror pods",
                    go_quote(op.name())
                )),
                ("status", Operation::Update) => {
                    if bound_here()? {
                        Ok(())
                    } else {
                        deny(format!(
                            "node {q} can only update pod status for pods with spec.nodeName set to itself"
                        ))
                    }
                }
                ("status", op) => deny(format!("unexpected operation {}", go_quote(op.name()))),
                ("eviction", Operation::Create) => {
                    if bound_here()? {
                        Ok(())
                    } else {
                        deny(format!(
                            "node {node} can only evict pods with spec.nodeName set to itself"
                        ))
                    }
                }
                ("eviction", op) => deny(format!("unexpected operation {}", op.name())),
                (sub, _) => deny(format!(
                    "unexpected pod subresource {}, only 'status' and 'eviction' are allowed",
                    go_quote(sub)
                )),
            }
        }
        // The name of a create is in its body (`admit_create`).
        ("", "nodes") if op != Operation::Create && a.name != node => deny(format!(
            "node {q} is not allowed to modify node {}",
            go_quote(&a.name)
        )),
        ("coordination.k8s.io", "leases") => {
            if a.namespace != LEASE_NAMESPACE {
                return deny(format!(
                    "can only access leases in the {} system namespace",
                    go_quote(LEASE_NAMESPACE)
                ));
            }
            if op != Operation::Create && a.name != node {
                return deny(LEASE_NAME.into());
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

const LEASE_NAME: &str = "can only access node lease with the same name as the requesting node";

/// Checks the object a node creates (defaulted, named, not yet validated):
/// its own Node without restricted labels, its own Lease, and mirror pods
/// of its static pods only. `registry` reads the Node a mirror pod's owner
/// reference must match.
pub(crate) async fn admit_create(
    auth: &Auth,
    registry: &Registry,
    user: &User,
    r: &'static Resource,
    obj: &Value,
) -> Result<()> {
    let Some(node) = restricted(auth, user) else {
        return Ok(());
    };
    let meta = &obj["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    let deny = |detail: String| Err(forbidden(r, name, detail));
    let q = go_quote(node);
    if node.is_empty() {
        return deny(format!(
            "could not determine node from user {}",
            go_quote(&user.name)
        ));
    }
    match (r.group, r.name) {
        ("", "nodes") => {
            if name != node {
                return deny(format!(
                    "node {q} is not allowed to modify node {}",
                    go_quote(name)
                ));
            }
            if !obj["spec"]["configSource"].is_null() {
                return deny(format!(
                    "node {q} is not allowed to create pods with a non-nil configSource"
                ));
            }
            let bad = forbidden_labels(&modified_labels(&labels(obj), &BTreeMap::new()));
            if !bad.is_empty() {
                return deny(format!(
                    "node {q} is not allowed to set the following labels: {}",
                    bad.join(", ")
                ));
            }
            Ok(())
        }
        ("coordination.k8s.io", "leases") => {
            if meta["namespace"].as_str() != Some(LEASE_NAMESPACE) {
                return deny(format!(
                    "can only access leases in the {} system namespace",
                    go_quote(LEASE_NAMESPACE)
                ));
            }
            if name != node {
                return deny(LEASE_NAME.into());
            }
            Ok(())
        }
        ("", "pods") => admit_mirror_pod(registry, node, obj)
            .await
            .map_err(|e| match e {
                Refused::Forbidden(detail) => forbidden(r, name, detail),
                Refused::Error(e) => e,
            }),
        _ => Ok(()),
    }
}

/// Why a mirror pod is refused: a 403 detail, or an error of its own
/// (the Node is missing: 404, as Kubernetes answers).
enum Refused {
    Forbidden(String),
    Error(Error),
}

/// Kubernetes' `admitPodCreate`: a node creates only mirror pods, bound to
/// itself, owned (controller, no blockOwnerDeletion) by its own Node, and
/// referring to no other API object.
async fn admit_mirror_pod(
    registry: &Registry,
    node: &str,
    pod: &Value,
) -> std::result::Result<(), Refused> {
    let q = go_quote(node);
    let no = |detail: String| Err(Refused::Forbidden(detail));
    let meta = &pod["metadata"];
    if meta["annotations"].get(MIRROR_POD_ANNOTATION).is_none() {
        return no(format!(
            "pod does not have {} annotation, node {q} can only create mirror pods",
            go_quote(MIRROR_POD_ANNOTATION)
        ));
    }
    let spec = &pod["spec"];
    if spec["nodeName"].as_str().unwrap_or_default() != node {
        return no(format!(
            "node {q} can only create pods with spec.nodeName set to itself"
        ));
    }
    let owners = meta["ownerReferences"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let owner = match owners {
        [] => {
            return no(format!(
                "node {q} can only create pods with an owner reference set to itself"
            ))
        }
        [owner] => owner,
        _ => {
            return no(format!(
                "node {q} can only create pods with a single owner reference set to itself"
            ))
        }
    };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    if text(&owner["apiVersion"]) != "v1" || text(&owner["kind"]) != "Node" || owner["name"] != node
    {
        return no(format!(
            "node {q} can only create pods with an owner reference set to itself"
        ));
    }
    if owner["controller"] != Value::Bool(true) {
        return no(format!(
            "node {q} can only create pods with a controller owner reference set to itself"
        ));
    }
    if owner["blockOwnerDeletion"] == Value::Bool(true) {
        return no(format!(
            "node {q} must not set blockOwnerDeletion on an owner reference"
        ));
    }
    let nodes = Resource::find("", "nodes").expect("nodes are served");
    let node_obj = match registry.get(nodes, None, node).await {
        Ok(o) => o.value().map_err(Refused::Error)?,
        Err(e @ Error::NotFound { .. }) => return Err(Refused::Error(e)),
        Err(e) => return no(format!("error looking up node {node} to verify uid: {e}")),
    };
    let node_uid = text(&node_obj["metadata"]["uid"]);
    let owner_uid = text(&owner["uid"]);
    if owner_uid != node_uid {
        return no(format!(
            "node {node} UID mismatch: expected {owner_uid} got {node_uid}"
        ));
    }
    if !text(&spec["serviceAccountName"]).is_empty() {
        return no(format!(
            "node {q} can not create pods that reference a service account"
        ));
    }
    if references_secrets(spec) {
        return no(format!(
            "node {q} can not create pods that reference secrets"
        ));
    }
    if references_config_maps(spec) {
        return no(format!(
            "node {q} can not create pods that reference configmaps"
        ));
    }
    let volumes = spec["volumes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let projected = |v: &Value| {
        v["projected"]["sources"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    if volumes
        .iter()
        .flat_map(projected)
        .any(|s| !s["clusterTrustBundle"].is_null())
    {
        return no(format!(
            "node {q} can not create pods that reference clustertrustbundles"
        ));
    }
    if volumes
        .iter()
        .any(|v| !v["persistentVolumeClaim"].is_null())
    {
        return no(format!(
            "node {q} can not create pods that reference persistentvolumeclaims"
        ));
    }
    Ok(())
}

/// Every container of a pod spec: init, regular and ephemeral.
fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |list| spec[list].as_array().map(Vec::as_slice).unwrap_or_default())
}

/// Whether any of `items[*][field]` is set (not null).
fn any_set(items: &Value, field: &str) -> bool {
    items
        .as_array()
        .is_some_and(|a| a.iter().any(|i| !i[field].is_null()))
}

/// Kubernetes' `VisitPodSecretNames` finds anything: image pull secrets,
/// env and envFrom secret references, secret volumes and projections, and
/// the secret references of volume plugins.
fn references_secrets(spec: &Value) -> bool {
    if spec["imagePullSecrets"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        return true;
    }
    let in_env = containers(spec).any(|c| {
        any_set(&c["envFrom"], "secretRef")
            || c["env"].as_array().is_some_and(|env| {
                env.iter()
                    .any(|e| !e["valueFrom"]["secretKeyRef"].is_null())
            })
    });
    let in_volumes = spec["volumes"].as_array().is_some_and(|vols| {
        vols.iter().any(|v| {
            let Some(sources) = v.as_object() else {
                return false;
            };
            !v["secret"].is_null()
                || !v["azureFile"].is_null()
                || any_set(&v["projected"]["sources"], "secret")
                || sources
                    .values()
                    .any(|s| !s["secretRef"].is_null() || !s["nodePublishSecretRef"].is_null())
        })
    });
    in_env || in_volumes
}

/// Kubernetes' `VisitPodConfigmapNames` finds anything: env and envFrom
/// references, configMap volumes and projections.
fn references_config_maps(spec: &Value) -> bool {
    let in_env = containers(spec).any(|c| {
        any_set(&c["envFrom"], "configMapRef")
            || c["env"].as_array().is_some_and(|env| {
                env.iter()
                    .any(|e| !e["valueFrom"]["configMapKeyRef"].is_null())
            })
    });
    let in_volumes = spec["volumes"].as_array().is_some_and(|vols| {
        vols.iter()
            .any(|v| !v["configMap"].is_null() || any_set(&v["projected"]["sources"], "configMap"))
    });
    in_env || in_volumes
}

/// Checks an update of a node's own Node (`new` replacing the stored
/// `old`, defaulted, not yet validated): no new config source, the same
/// taints, no restricted label added, changed or removed. Other resources
/// were settled by [`admit_request`].
pub(crate) fn admit_update(
    auth: &Auth,
    user: &User,
    r: &'static Resource,
    old: &Value,
    new: &Value,
) -> Result<()> {
    let Some(node) = restricted(auth, user) else {
        return Ok(());
    };
    if (r.group, r.name) != ("", "nodes") {
        return Ok(());
    }
    let name = new["metadata"]["name"].as_str().unwrap_or_default();
    let deny = |detail: String| Err(forbidden(r, name, detail));
    let q = go_quote(node);
    if name != node {
        return deny(format!(
            "node {q} is not allowed to modify node {}",
            go_quote(name)
        ));
    }
    let source = &new["spec"]["configSource"];
    if !source.is_null() && *source != old["spec"]["configSource"] {
        return deny(format!(
            "node {q} is not allowed to update configSource to a new non-nil configSource"
        ));
    }
    // apimachinery's semantic equality: a missing, null or empty list alike.
    let taints = |o: &Value| {
        o["spec"]["taints"]
            .as_array()
            .filter(|t| !t.is_empty())
            .cloned()
    };
    if taints(new) != taints(old) {
        return deny(format!("node {q} is not allowed to modify taints"));
    }
    let bad = forbidden_labels(&modified_labels(&labels(new), &labels(old)));
    if !bad.is_empty() {
        return deny(format!(
            "is not allowed to modify labels: {}",
            bad.join(", ")
        ));
    }
    Ok(())
}

/// `metadata.labels` (string values).
fn labels(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The keys added, removed or changed between `a` and `b`.
fn modified_labels(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> BTreeSet<String> {
    let changed = |x: &BTreeMap<String, String>, y: &BTreeMap<String, String>| {
        x.iter()
            .filter(|(k, v)| y.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    };
    changed(a, b).into_iter().chain(changed(b, a)).collect()
}

/// The part of a label key before `/` (`""` without one).
fn label_namespace(key: &str) -> &str {
    key.split_once('/').map(|(ns, _)| ns).unwrap_or_default()
}

fn in_namespace(ns: &str, of: &str) -> bool {
    ns == of || ns.strip_suffix(of).is_some_and(|p| p.ends_with('.'))
}

/// Of `modified`, the keys a node may not touch on itself, sorted:
/// `node-restriction.kubernetes.io/…`, and `kubernetes.io` / `k8s.io`
/// labels that are not kubelet labels.
fn forbidden_labels(modified: &BTreeSet<String>) -> Vec<String> {
    modified
        .iter()
        .filter(|key| {
            let ns = label_namespace(key);
            let restricted = in_namespace(ns, NODE_RESTRICTION_LABEL_PREFIX);
            let kubernetes = in_namespace(ns, "kubernetes.io") || in_namespace(ns, "k8s.io");
            let kubelet = KUBELET_LABELS.contains(&key.as_str())
                || KUBELET_LABEL_NAMESPACES
                    .iter()
                    .any(|allowed| in_namespace(ns, allowed));
            restricted || (kubernetes && !kubelet)
        })
        .cloned()
        .collect()
}

fn find<'a>(caches: &'a [WatchCache], name: &str) -> Result<&'a WatchCache> {
    caches
        .iter()
        .find(|c| c.resource().group.is_empty() && c.resource().name == name)
        .ok_or_else(|| Error::Internal(format!("no watch cache for {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthConfig;
    use serde_json::json;

    fn node_user(name: &str) -> User {
        User {
            name: format!("system:node:{name}"),
            uid: String::new(),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
            extra: Default::default(),
        }
    }

    fn auth(modes: Vec<AuthorizationMode>) -> Auth {
        Auth::new(AuthConfig {
            modes,
            ..AuthConfig::default()
        })
    }

    fn request(user: User, method: &str, path: &str) -> Attributes {
        Attributes::from_request(user, method, path, "")
    }

    fn message(e: Error) -> String {
        assert_eq!(e.code(), 403, "{e}");
        e.to_string()
    }

    #[test]
    fn urls_name_the_nodes_own_objects() {
        let auth = auth(vec![AuthorizationMode::Node, AuthorizationMode::Rbac]);
        let n1 = || node_user("node-1");
        let ok = |method: &str, path: &str| admit_request(&auth, &request(n1(), method, path), &[]);
        assert!(ok("PATCH", "/api/v1/nodes/node-1").is_ok());
        assert!(ok("PUT", "/api/v1/nodes/node-1/status").is_ok());
        assert!(ok("POST", "/api/v1/nodes").is_ok());
        assert!(ok("GET", "/api/v1/nodes/node-2").is_ok());
        assert_eq!(
            message(ok("PATCH", "/api/v1/nodes/node-2").unwrap_err()),
            "nodes \"node-2\" is forbidden: node \"node-1\" is not allowed to modify node \"node-2\""
        );
        assert!(ok("DELETE", "/api/v1/nodes/node-2").is_err());
        let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
        assert!(ok("PUT", &format!("{leases}/node-1")).is_ok());
        assert!(ok("POST", leases).is_ok());
        assert_eq!(
            message(ok("DELETE", &format!("{leases}/node-2")).unwrap_err()),
            "leases.coordination.k8s.io \"node-2\" is forbidden: can only access node lease with the same name as the requesting node"
        );
        assert_eq!(
            message(
                ok("POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases").unwrap_err()
            ),
            "leases.coordination.k8s.io \"Unknown\" is forbidden: can only access leases in the \"kube-node-lease\" system namespace"
        );
        // Pods: no updates, no other subresources (the cache is not needed).
        assert_eq!(
            message(ok("PUT", "/api/v1/namespaces/a/pods/p").unwrap_err()),
            "pods \"p\" is forbidden: unexpected operation \"UPDATE\", node \"node-1\" can only create and delete mirror pods"
        );
        assert_eq!(
            message(ok("POST", "/api/v1/namespaces/a/pods/p/binding").unwrap_err()),
            "pods \"p\" is forbidden: unexpected pod subresource \"binding\", only 'status' and 'eviction' are allowed"
        );
        assert!(ok("GET", "/api/v1/namespaces/a/pods/p/log").is_ok());
        assert!(ok("POST", "/api/v1/namespaces/a/configmaps").is_ok());
        // A node name that is empty refuses every write.
        let nameless = request(node_user(""), "POST", "/api/v1/namespaces/a/configmaps");
        assert_eq!(
            message(admit_request(&auth, &nameless, &[]).unwrap_err()),
            "configmaps \"Unknown\" is forbidden: could not determine node from user \"system:node:\""
        );
    }

    #[test]
    fn only_nodes_and_only_with_the_node_mode() {
        let path = "/api/v1/nodes/node-2";
        let rbac_only = auth(vec![AuthorizationMode::Rbac]);
        assert!(admit_request(
            &rbac_only,
            &request(node_user("node-1"), "PATCH", path),
            &[]
        )
        .is_ok());
        let both = auth(vec![AuthorizationMode::Node, AuthorizationMode::Rbac]);
        let mut alice = node_user("node-1");
        alice.groups = vec!["system:authenticated".into()];
        assert!(admit_request(&both, &request(alice.clone(), "PATCH", path), &[]).is_ok());
        let nodes = Resource::find("", "nodes").unwrap();
        let other = json!({"metadata": {"name": "node-2", "labels": {"node-restriction.kubernetes.io/x": "1"}}});
        assert!(admit_update(&both, &alice, nodes, &other, &other).is_ok());
        assert!(admit_update(&rbac_only, &node_user("node-1"), nodes, &other, &other).is_ok());
    }

    #[test]
    fn node_updates_keep_taints_and_restricted_labels() {
        let auth = auth(vec![AuthorizationMode::Node]);
        let n1 = node_user("node-1");
        let nodes = Resource::find("", "nodes").unwrap();
        let old = json!({"metadata": {"name": "node-1", "labels": {
                "kubernetes.io/hostname": "node-1", "node-restriction.kubernetes.io/pool": "a"}},
            "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
        let with = |f: &dyn Fn(&mut Value)| {
            let mut new = old.clone();
            f(&mut new);
            admit_update(&auth, &n1, nodes, &old, &new)
        };
        assert!(with(&|_| {}).is_ok());
        assert!(with(&|n| {
            n["metadata"]["labels"]["kubernetes.io/hostname"] = json!("h");
            n["metadata"]["labels"]["node.kubernetes.io/exclude"] = json!("true");
            n["metadata"]["labels"]["example.com/team"] = json!("x");
            n["spec"]["podCIDR"] = json!("10.0.0.0/24");
        })
        .is_ok());
        assert_eq!(
            message(with(&|n| n["spec"]["taints"] = json!([])).unwrap_err()),
            "nodes \"node-1\" is forbidden: node \"node-1\" is not allowed to modify taints"
        );
        assert_eq!(
            message(
                with(&|n| {
                    n["metadata"]["labels"] = json!({"kubernetes.io/hostname": "node-1",
                        "a.node-restriction.kubernetes.io/b": "1", "node-role.kubernetes.io/master": ""});
                })
                .unwrap_err()
            ),
            "nodes \"node-1\" is forbidden: is not allowed to modify labels: a.node-restriction.kubernetes.io/b, node-restriction.kubernetes.io/pool, node-role.kubernetes.io/master"
        );
        assert!(with(&|n| n["spec"]["configSource"] = json!({"configMap": {}})).is_err());
        // Taints: missing, null and [] are the same.
        let bare = json!({"metadata": {"name": "node-1"}, "spec": {}});
        let empty = json!({"metadata": {"name": "node-1"}, "spec": {"taints": []}});
        assert!(admit_update(&auth, &n1, nodes, &bare, &empty).is_ok());
    }

    #[test]
    fn restricted_label_namespaces() {
        let set = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect();
        assert_eq!(
            forbidden_labels(&set(&[
                "app",
                "example.com/x",
                "kubernetes.io/os",
                "beta.kubernetes.io/arch",
                "kubelet.kubernetes.io/x",
                "foo.node.kubernetes.io/x",
                "k8s.io/x",
                "x.k8s.io/y",
                "node-restriction.kubernetes.io/a",
                "evilkubernetes.io/x",
            ])),
            vec!["k8s.io/x", "node-restriction.kubernetes.io/a", "x.k8s.io/y"]
        );
        let a: BTreeMap<String, String> = [("x".to_string(), "1".to_string())].into();
        let b: BTreeMap<String, String> = [("y".to_string(), "1".to_string())].into();
        assert_eq!(modified_labels(&a, &b), set(&["x", "y"]));
        assert!(modified_labels(&a, &a).is_empty());
    }

    #[test]
    fn pods_may_not_refer_to_other_objects() {
        let spec = |s: Value| s;
        assert!(!references_secrets(&spec(
            json!({"containers": [{"name": "c"}]})
        )));
        assert!(references_secrets(
            &json!({"imagePullSecrets": [{"name": "r"}]})
        ));
        assert!(references_secrets(
            &json!({"containers": [{"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]})
        ));
        assert!(references_secrets(
            &json!({"initContainers": [{"envFrom": [{"secretRef": {"name": "s"}}]}]})
        ));
        assert!(references_secrets(
            &json!({"volumes": [{"name": "v", "secret": {"secretName": "s"}}]})
        ));
        assert!(references_secrets(
            &json!({"volumes": [{"name": "v", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "s"}}}]})
        ));
        assert!(references_secrets(
            &json!({"volumes": [{"name": "v", "projected": {"sources": [{"secret": {"name": "s"}}]}}]})
        ));
        assert!(!references_secrets(
            &json!({"volumes": [{"name": "v", "emptyDir": {}}]})
        ));
        assert!(references_config_maps(
            &json!({"volumes": [{"name": "v", "configMap": {"name": "c"}}]})
        ));
        assert!(references_config_maps(
            &json!({"containers": [{"envFrom": [{"configMapRef": {"name": "c"}}]}]})
        ));
        assert!(!references_config_maps(
            &json!({"containers": [{"env": [{"name": "X", "value": "1"}]}]})
        ));
    }
}
