//! The bootstrap RBAC policy, created at start when RBAC is enabled and the
//! objects are missing (kube's `rbac/bootstrap-roles` post-start hook, cut
//! down to what a Ballast cluster uses). Existing objects are left alone,
//! so an administrator's edits survive restarts.
//!
//! | ClusterRole                      | bound to (ClusterRoleBinding of the same name)      |
//! |----------------------------------|------------------------------------------------------|
//! | `cluster-admin`                  | group `system:masters`                               |
//! | `system:discovery`               | group `system:authenticated`                         |
//! | `system:public-info-viewer`      | groups `system:authenticated`, `system:unauthenticated` |
//! | `system:basic-user`              | group `system:authenticated`                         |
//! | `system:monitoring`              | group `system:monitoring` (`/metrics`, health paths) |
//! | `system:kube-scheduler`          | user `system:kube-scheduler`                         |
//! | `system:kube-controller-manager` | user `system:kube-controller-manager`                |
//! | `system:node-proxier`            | user `system:kube-proxy`                             |
//! | `system:service-account-issuer-discovery` | group `system:serviceaccounts`              |
//! | `system:auth-delegator`, `system:kubelet-api-admin` | (not bound)                       |
//! | `view`, `edit`, `admin`          | (not bound: for RoleBindings)                        |

use serde_json::{json, Value};

use super::rbac::GROUP;

/// The scheduler's user name.
pub const SCHEDULER_USER: &str = "system:kube-scheduler";
/// The controller-manager's user name.
pub const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";
/// kube-proxy's (`ballast proxy`'s) user name.
pub const PROXY_USER: &str = "system:kube-proxy";

const ALL_VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];
const READ: [&str; 3] = ["get", "list", "watch"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn url_rule(urls: &[&str], verbs: &[&str]) -> Value {
    json!({"nonResourceURLs": urls, "verbs": verbs})
}

fn meta(name: &str) -> Value {
    json!({
        "name": name,
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    })
}

/// The rules of the user-facing roles (view, edit, admin): `verbs` on the
/// workloads, read access to logs, pod status and namespaces.
fn user_facing_rules(workloads: &[&str], apps: &[&str], verbs: &[&str]) -> Vec<Value> {
    vec![
        rule(&[""], workloads, verbs),
        rule(&[""], &["pods/log", "pods/status", "namespaces"], &READ),
        rule(&["apps"], apps, verbs),
        rule(
            &["apps"],
            &["deployments/scale", "replicasets/scale"],
            verbs,
        ),
        rule(&["coordination.k8s.io"], &["leases"], verbs),
        rule(&[""], &["serviceaccounts"], verbs),
        rule(&["batch"], &["jobs", "cronjobs"], verbs),
        rule(&["batch"], &["jobs/status", "cronjobs/status"], &READ),
        rule(&["apps"], &["statefulsets", "statefulsets/scale"], verbs),
        rule(&["apps"], &["statefulsets/status"], &READ),
        rule(&["apps"], &["controllerrevisions"], &READ),
        rule(&["discovery.k8s.io"], &["endpointslices"], &READ),
        rule(&["apps"], &["daemonsets"], verbs),
        rule(&["apps"], &["daemonsets/status"], &READ),
        rule(&["policy"], &["poddisruptionbudgets"], verbs),
        rule(&["policy"], &["poddisruptionbudgets/status"], &READ),
    ]
}

fn cluster_role(name: &str, rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "ClusterRole",
        "metadata": meta(name),
        "rules": rules,
    })
}

fn binding(name: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, n)| json!({"apiGroup": GROUP, "kind": kind, "name": n}))
        .collect();
    json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "ClusterRoleBinding",
        "metadata": meta(name),
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": name},
        "subjects": subjects,
    })
}

/// The bootstrap ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    let workloads = ["pods", "services", "endpoints", "configmaps", "events"];
    let apps = ["deployments", "replicasets"];
    vec![
        cluster_role(
            "cluster-admin",
            vec![rule(&["*"], &["*"], &["*"]), url_rule(&["*"], &["*"])],
        ),
        cluster_role(
            "system:discovery",
            vec![url_rule(
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/readyz",
                    "/version",
                    "/version/",
                    "/openapi",
                    "/openapi/*",
                ],
                &["get"],
            )],
        ),
        // Prometheus' scrape identity, as kube's bootstrap policy has it.
        cluster_role(
            "system:monitoring",
            vec![url_rule(
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/readyz",
                    "/readyz/*",
                    "/metrics",
                    "/metrics/slis",
                ],
                &["get"],
            )],
        ),
        cluster_role(
            "system:public-info-viewer",
            vec![url_rule(
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
                &["get"],
            )],
        ),
        cluster_role(
            "system:basic-user",
            vec![
                rule(
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    &["create"],
                ),
                rule(
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                    &["create"],
                ),
            ],
        ),
        // What controllers/src/scheduler reads and writes.
        cluster_role(
            "system:kube-scheduler",
            vec![
                rule(
                    &["", "events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
                rule(
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["create", "get", "update"],
                ),
                rule(&[""], &["nodes", "namespaces", "services"], &READ),
                rule(&[""], &["pods"], &["get", "list", "watch", "delete"]),
                rule(&[""], &["pods/binding", "bindings"], &["create"]),
                rule(&[""], &["pods/status"], &["patch", "update"]),
                rule(&["apps"], &["replicasets"], &READ),
            ],
        ),
        // The deployment, replicaset, endpoints, node-lifecycle and garbage
        // collector controllers of controllers/src (kube gives each its
        // own service account; Ballast's run as one user).
        cluster_role(
            "system:kube-controller-manager",
            vec![
                rule(&[""], &workloads, &ALL_VERBS),
                rule(&[""], &["serviceaccounts", "secrets"], &ALL_VERBS),
                rule(
                    &[""],
                    &["pods/status", "nodes", "nodes/status", "namespaces"],
                    &ALL_VERBS,
                ),
                rule(
                    &["apps"],
                    &[
                        "deployments",
                        "deployments/status",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/status",
                        "replicasets/scale",
                    ],
                    &ALL_VERBS,
                ),
                rule(&["coordination.k8s.io"], &["leases"], &ALL_VERBS),
                rule(
                    &["batch"],
                    &["jobs", "jobs/status", "cronjobs", "cronjobs/status"],
                    &ALL_VERBS,
                ),
                rule(
                    &["apps"],
                    &["statefulsets", "statefulsets/status", "statefulsets/scale"],
                    &ALL_VERBS,
                ),
                rule(&["apps"], &["controllerrevisions"], &ALL_VERBS),
                rule(&["apps"], &["daemonsets", "daemonsets/status"], &ALL_VERBS),
                rule(
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                    &ALL_VERBS,
                ),
                rule(&["discovery.k8s.io"], &["endpointslices"], &ALL_VERBS),
                rule(
                    &["events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
                // The garbage collector reads and patches owners and
                // dependents of every kind.
                rule(
                    &["*"],
                    &["*"],
                    &["get", "list", "watch", "patch", "update", "delete"],
                ),
            ],
        ),
        // What kube-proxy (`ballast proxy`) reads, as kube's role has it.
        cluster_role(
            "system:node-proxier",
            vec![
                rule(&[""], &["services", "endpoints"], &["list", "watch"]),
                rule(&[""], &["nodes"], &READ),
                rule(
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                    &["list", "watch"],
                ),
                rule(
                    &["", "events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
            ],
        ),
        cluster_role("view", user_facing_rules(&workloads, &apps, &READ)),
        // view never reads Secrets (kube's aggregated roles neither).
        cluster_role("edit", {
            let mut rules = user_facing_rules(&workloads, &apps, &ALL_VERBS);
            rules.push(rule(&[""], &["secrets"], &ALL_VERBS));
            rules.push(rule(&[""], &["pods/eviction"], &["create"]));
            rules.push(rule(
                &[""],
                &["pods/exec", "pods/attach", "pods/portforward"],
                &["get", "create"],
            ));
            rules
        }),
        cluster_role("admin", {
            let mut rules = user_facing_rules(&workloads, &apps, &ALL_VERBS);
            rules.push(rule(&[GROUP], &["roles", "rolebindings"], &ALL_VERBS));
            rules.push(rule(&[""], &["secrets"], &ALL_VERBS));
            rules.push(rule(&[""], &["pods/eviction"], &["create"]));
            rules.push(rule(
                &[""],
                &["pods/exec", "pods/attach", "pods/portforward"],
                &["get", "create"],
            ));
            rules
        }),
        // Who may read the service account issuer's OIDC documents.
        cluster_role(
            "system:service-account-issuer-discovery",
            vec![url_rule(
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                    "/openid/v1/jwks/",
                ],
                &["get"],
            )],
        ),
        // For servers that delegate authentication and authorization.
        cluster_role(
            "system:auth-delegator",
            vec![
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
            ],
        ),
        // Everything on the kubelet API.
        cluster_role(
            "system:kubelet-api-admin",
            vec![
                rule(&[""], &["nodes"], &["get", "list", "watch", "proxy"]),
                rule(
                    &[""],
                    &[
                        "nodes/log",
                        "nodes/metrics",
                        "nodes/proxy",
                        "nodes/stats",
                        "nodes/pods",
                        "nodes/healthz",
                        "nodes/configz",
                    ],
                    &["*"],
                ),
            ],
        ),
    ]
}

/// The bootstrap ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding("cluster-admin", &[("Group", super::MASTERS)]),
        binding(
            "system:discovery",
            &[("Group", super::authn::AUTHENTICATED)],
        ),
        binding(
            "system:public-info-viewer",
            &[
                ("Group", super::authn::AUTHENTICATED),
                ("Group", super::authn::UNAUTHENTICATED),
            ],
        ),
        binding(
            "system:basic-user",
            &[("Group", super::authn::AUTHENTICATED)],
        ),
        binding("system:monitoring", &[("Group", "system:monitoring")]),
        binding("system:kube-scheduler", &[("User", SCHEDULER_USER)]),
        binding(
            "system:kube-controller-manager",
            &[("User", CONTROLLER_MANAGER_USER)],
        ),
        binding("system:node-proxier", &[("User", PROXY_USER)]),
        binding(
            "system:service-account-issuer-discovery",
            &[("Group", super::tokens::SERVICE_ACCOUNTS_GROUP)],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::rbac::{Decision, Policy};
    use super::super::{Attributes, User};
    use super::*;

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            extra: Default::default(),
        }
    }

    #[test]
    fn bootstrap_policy_grants_components_and_discovery() {
        let p = Policy::build(&cluster_roles(), &[], &cluster_role_bindings(), &[]);
        let allowed = |u: &User, m: &str, path: &str| {
            p.authorize(&Attributes::from_request(u.clone(), m, path, "")) == Decision::Allow
        };
        let sched = user(SCHEDULER_USER, &["system:authenticated"]);
        assert!(allowed(
            &sched,
            "POST",
            "/api/v1/namespaces/a/pods/x/binding"
        ));
        assert!(allowed(&sched, "GET", "/api/v1/nodes"));
        assert!(!allowed(&sched, "POST", "/api/v1/namespaces/a/pods"));
        let cm = user(CONTROLLER_MANAGER_USER, &["system:authenticated"]);
        assert!(allowed(
            &cm,
            "POST",
            "/apis/apps/v1/namespaces/a/replicasets"
        ));
        assert!(allowed(&cm, "PUT", "/api/v1/nodes/n/status"));
        let proxy = user(PROXY_USER, &["system:authenticated"]);
        assert!(allowed(
            &proxy,
            "GET",
            "/apis/discovery.k8s.io/v1/endpointslices"
        ));
        assert!(allowed(&proxy, "GET", "/api/v1/services"));
        assert!(allowed(&proxy, "GET", "/api/v1/nodes/n"));
        assert!(!allowed(&proxy, "POST", "/api/v1/namespaces/a/services"));
        let anyone = user("alice", &["system:authenticated"]);
        assert!(allowed(&anyone, "GET", "/apis/apps/v1"));
        assert!(allowed(
            &anyone,
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
        ));
        assert!(!allowed(&anyone, "GET", "/api/v1/namespaces/a/pods"));
        let anon = user("system:anonymous", &["system:unauthenticated"]);
        assert!(allowed(&anon, "GET", "/healthz"));
        assert!(!allowed(&anon, "GET", "/api"));
        let admin = user("root", &["system:masters"]);
        assert!(allowed(&admin, "DELETE", "/api/v1/nodes/n"));
    }
}
