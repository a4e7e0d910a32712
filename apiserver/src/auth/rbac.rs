//! The RBAC authorizer (`rbac.authorization.k8s.io/v1`), evaluated from the
//! watch caches of Roles, ClusterRoles, RoleBindings and ClusterRoleBindings
//! — never an etcd read per request.
//!
//! The four caches are compiled into a [`Policy`] (rules parsed once, bindings
//! indexed by namespace), rebuilt only when one of their revisions moved.
//! A request is allowed when a ClusterRoleBinding, or a RoleBinding in the
//! request's namespace, binds a subject the user matches to a role with a
//! rule that covers the request (kube's `VisitRulesFor` + `RuleAllows`).
//! ClusterRole aggregation is not implemented.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use super::request::Attributes;
use super::User;
use crate::cache::WatchCache;
use crate::selector::Filter;

/// The RBAC API group.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// One PolicyRule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    /// Parses one entry of a role's `rules`.
    pub fn from_json(v: &Value) -> Rule {
        Rule {
            verbs: strings(&v["verbs"]),
            api_groups: strings(&v["apiGroups"]),
            resources: strings(&v["resources"]),
            resource_names: strings(&v["resourceNames"]),
            non_resource_urls: strings(&v["nonResourceURLs"]),
        }
    }

    /// Whether this rule covers the request (kube's `RuleAllows`).
    pub fn allows(&self, a: &Attributes) -> bool {
        let any = |list: &[String], want: &str| list.iter().any(|x| x == "*" || x == want);
        if !any(&self.verbs, &a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.non_resource_urls.iter().any(|u| {
                u == "*"
                    || *u == a.path
                    || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
            });
        }
        if !any(&self.api_groups, &a.api_group) {
            return false;
        }
        let combined = a.resource_and_sub();
        let resource_ok = self.resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource))
        });
        resource_ok && (self.resource_names.is_empty() || self.resource_names.contains(&a.name))
    }
}

/// A subject of a binding.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subject {
    kind: String,
    name: String,
    namespace: String,
}

impl Subject {
    /// kube's `appliesToUser`.
    fn applies_to(&self, user: &User, binding_namespace: &str) -> bool {
        match self.kind.as_str() {
            "User" => user.name == self.name,
            "Group" => user.groups.contains(&self.name),
            "ServiceAccount" => {
                let ns = if self.namespace.is_empty() {
                    binding_namespace
                } else {
                    &self.namespace
                };
                user.name == format!("system:serviceaccount:{ns}:{}", self.name)
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
struct Binding {
    subjects: Vec<Subject>,
    /// `Role` or `ClusterRole`.
    role_kind: String,
    role_name: String,
}

impl Binding {
    fn from_json(v: &Value) -> Binding {
        let subjects = v["subjects"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| Subject {
                        kind: s["kind"].as_str().unwrap_or_default().to_string(),
                        name: s["name"].as_str().unwrap_or_default().to_string(),
                        namespace: s["namespace"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Binding {
            subjects,
            role_kind: v["roleRef"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            role_name: v["roleRef"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        }
    }
}

/// The compiled contents of the four RBAC caches.
#[derive(Debug, Default)]
pub struct Policy {
    cluster_roles: HashMap<String, Vec<Rule>>,
    /// (namespace, name) → rules.
    roles: HashMap<(String, String), Vec<Rule>>,
    cluster_bindings: Vec<Binding>,
    /// namespace → its RoleBindings.
    bindings: HashMap<String, Vec<Binding>>,
}

fn rules_of(v: &Value) -> Vec<Rule> {
    v["rules"]
        .as_array()
        .map(|a| a.iter().map(Rule::from_json).collect())
        .unwrap_or_default()
}

fn meta(v: &Value, field: &str) -> String {
    v["metadata"][field]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The outcome of one authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No rule allowed it; the text explains problems met on the way (a
    /// binding to a missing role), possibly empty.
    NoOpinion(String),
}

impl Policy {
    /// Builds a policy from role and binding objects.
    pub fn build(
        cluster_roles: &[Value],
        roles: &[Value],
        cluster_bindings: &[Value],
        bindings: &[Value],
    ) -> Policy {
        let mut p = Policy::default();
        for r in cluster_roles {
            p.cluster_roles.insert(meta(r, "name"), rules_of(r));
        }
        for r in roles {
            p.roles
                .insert((meta(r, "namespace"), meta(r, "name")), rules_of(r));
        }
        p.cluster_bindings = cluster_bindings.iter().map(Binding::from_json).collect();
        for b in bindings {
            p.bindings
                .entry(meta(b, "namespace"))
                .or_default()
                .push(Binding::from_json(b));
        }
        p
    }

    /// Whether some binding grants the request.
    pub fn authorize(&self, a: &Attributes) -> Decision {
        let mut errors: Vec<String> = Vec::new();
        let cluster_role = |name: &str, errors: &mut Vec<String>| {
            let found = self.cluster_roles.get(name);
            if found.is_none() {
                errors.push(format!("clusterrole.{GROUP} \"{name}\" not found"));
            }
            found
        };
        for b in &self.cluster_bindings {
            if !b.subjects.iter().any(|s| s.applies_to(&a.user, "")) {
                continue;
            }
            if b.role_kind != "ClusterRole" {
                continue;
            }
            if let Some(rules) = cluster_role(&b.role_name, &mut errors) {
                if rules.iter().any(|r| r.allows(a)) {
                    return Decision::Allow;
                }
            }
        }
        if !a.namespace.is_empty() {
            for b in self.bindings.get(&a.namespace).into_iter().flatten() {
                if !b
                    .subjects
                    .iter()
                    .any(|s| s.applies_to(&a.user, &a.namespace))
                {
                    continue;
                }
                let rules = match b.role_kind.as_str() {
                    "ClusterRole" => cluster_role(&b.role_name, &mut errors),
                    "Role" => {
                        let found = self.roles.get(&(a.namespace.clone(), b.role_name.clone()));
                        if found.is_none() {
                            errors.push(format!("role.{GROUP} \"{}\" not found", b.role_name));
                        }
                        found
                    }
                    _ => None,
                };
                if rules.is_some_and(|rules| rules.iter().any(|r| r.allows(a))) {
                    return Decision::Allow;
                }
            }
        }
        if errors.is_empty() {
            Decision::NoOpinion(String::new())
        } else {
            Decision::NoOpinion(format!("RBAC: [{}]", errors.join(", ")))
        }
    }
}

/// The policy compiled from the caches, recompiled when they move.
#[derive(Default)]
pub struct PolicyCache {
    current: Mutex<Option<([i64; 4], Arc<Policy>)>>,
}

/// The four RBAC caches, in the order [`PolicyCache::policy`] wants them.
pub struct RbacCaches<'a> {
    pub cluster_roles: &'a WatchCache,
    pub roles: &'a WatchCache,
    pub cluster_bindings: &'a WatchCache,
    pub bindings: &'a WatchCache,
}

impl PolicyCache {
    /// The policy as the caches hold it now.
    pub fn policy(&self, c: &RbacCaches<'_>) -> Arc<Policy> {
        let all = [c.cluster_roles, c.roles, c.cluster_bindings, c.bindings];
        let key = all.map(|c| c.revision());
        let mut current = self.current.lock();
        if let Some((k, p)) = current.as_ref() {
            if *k == key {
                return p.clone();
            }
        }
        let values = |c: &WatchCache| -> Vec<Value> {
            c.list(&Filter::default(), 0)
                .items
                .iter()
                .filter_map(|o| o.value().ok())
                .collect()
        };
        let policy = Arc::new(Policy::build(
            &values(c.cluster_roles),
            &values(c.roles),
            &values(c.cluster_bindings),
            &values(c.bindings),
        ));
        *current = Some((key, policy.clone()));
        policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            extra: Default::default(),
        }
    }

    fn req(u: &User, method: &str, path: &str) -> Attributes {
        Attributes::from_request(u.clone(), method, path, "")
    }

    #[test]
    fn rules_match_verbs_groups_resources_names_and_urls() {
        let r = Rule::from_json(&json!({
            "verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]
        }));
        let u = user("alice", &[]);
        assert!(r.allows(&req(&u, "GET", "/api/v1/namespaces/a/pods")));
        assert!(r.allows(&req(&u, "GET", "/api/v1/namespaces/a/pods/x/log")));
        assert!(!r.allows(&req(&u, "GET", "/api/v1/namespaces/a/pods/x/status")));
        assert!(!r.allows(&req(&u, "POST", "/api/v1/namespaces/a/pods")));
        assert!(!r.allows(&req(&u, "GET", "/apis/apps/v1/namespaces/a/deployments")));
        let named = Rule::from_json(&json!({
            "verbs": ["*"], "apiGroups": ["*"], "resources": ["*/status"], "resourceNames": ["x"]
        }));
        assert!(named.allows(&req(&u, "PUT", "/api/v1/namespaces/a/pods/x/status")));
        assert!(!named.allows(&req(&u, "PUT", "/api/v1/namespaces/a/pods/y/status")));
        assert!(!named.allows(&req(&u, "PUT", "/api/v1/namespaces/a/pods/x")));
        let urls =
            Rule::from_json(&json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/apis/*"]}));
        assert!(urls.allows(&req(&u, "GET", "/healthz")));
        assert!(urls.allows(&req(&u, "GET", "/apis/apps/v1")));
        assert!(!urls.allows(&req(&u, "GET", "/version")));
        assert!(!urls.allows(&req(&u, "GET", "/api/v1/namespaces/a/pods")));
    }

    #[test]
    fn bindings_grant_through_users_groups_and_namespaces() {
        let reader = json!({"metadata": {"name": "reader", "namespace": "a"},
            "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]});
        let view = json!({"metadata": {"name": "view"},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["nodes"]}]});
        let rb = json!({"metadata": {"name": "rb", "namespace": "a"},
            "subjects": [{"kind": "User", "name": "alice"}],
            "roleRef": {"kind": "Role", "name": "reader", "apiGroup": GROUP}});
        let dangling = json!({"metadata": {"name": "d", "namespace": "b"},
            "subjects": [{"kind": "User", "name": "alice"}],
            "roleRef": {"kind": "Role", "name": "missing", "apiGroup": GROUP}});
        let crb = json!({"metadata": {"name": "crb"},
            "subjects": [{"kind": "Group", "name": "viewers"}],
            "roleRef": {"kind": "ClusterRole", "name": "view", "apiGroup": GROUP}});
        let p = Policy::build(&[view], &[reader], &[crb], &[rb, dangling]);
        let alice = user("alice", &[]);
        assert_eq!(
            p.authorize(&req(&alice, "GET", "/api/v1/namespaces/a/pods")),
            Decision::Allow
        );
        assert_eq!(
            p.authorize(&req(&alice, "GET", "/api/v1/namespaces/c/pods")),
            Decision::NoOpinion(String::new())
        );
        let Decision::NoOpinion(why) =
            p.authorize(&req(&alice, "GET", "/api/v1/namespaces/b/pods"))
        else {
            panic!("allowed")
        };
        assert!(
            why.contains("role.rbac.authorization.k8s.io \"missing\" not found"),
            "{why}"
        );
        let bob = user("bob", &["viewers"]);
        assert_eq!(
            p.authorize(&req(&bob, "GET", "/api/v1/nodes/n")),
            Decision::Allow
        );
        assert_ne!(
            p.authorize(&req(&bob, "GET", "/api/v1/namespaces/a/pods")),
            Decision::Allow
        );
    }
}
