//! Discovery: what kubectl reads before anything else. Served as plain
//! `application/json` (the legacy, unaggregated form), which every client
//! falls back to. The built-in groups come first, then the custom
//! resources' groups of the served [`Snapshot`], each with its versions in
//! Kubernetes' priority order (the first one preferred).

use serde_json::{json, Value};

use crate::resources::{Resource, RESOURCES};
use crate::served::Snapshot;

/// The Kubernetes version reported: kubectl 1.33 accepts it, and
/// `/usr/bin/kubectl` picks its matching 1.33 client.
pub const KUBE_VERSION: &str = "v1.33.0";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": KUBE_VERSION,
        "gitCommit": "ballast",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    })
}

/// Served but never stored: the review APIs, create only (group, plural,
/// kind).
pub const REVIEWS: &[(&str, &str, &str)] = &[
    (
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
    ),
    (
        "authorization.k8s.io",
        "subjectaccessreviews",
        "SubjectAccessReview",
    ),
    (
        "authentication.k8s.io",
        "selfsubjectreviews",
        "SelfSubjectReview",
    ),
    ("authentication.k8s.io", "tokenreviews", "TokenReview"),
];

/// Every built-in API group but the core one.
pub fn groups() -> Vec<&'static str> {
    let mut g: Vec<&str> = Vec::new();
    let all = RESOURCES
        .iter()
        .map(|r| r.group)
        .chain(REVIEWS.iter().map(|(g, _, _)| *g));
    for group in all {
        if !group.is_empty() && !g.contains(&group) {
            g.push(group);
        }
    }
    g
}

/// A group with its versions, the first preferred.
fn group(name: &str, versions: &[String]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": gvs, "preferredVersion": gvs.first()})
}

pub fn api_group_list(served: &Snapshot) -> Value {
    let v1 = ["v1".to_string()];
    let groups: Vec<Value> = groups()
        .into_iter()
        .map(|g| group(g, &v1))
        .chain(served.groups.iter().map(|(g, v)| group(g, v)))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`, if served.
pub fn api_group(name: &str, served: &Snapshot) -> Option<Value> {
    let v1 = ["v1".to_string()];
    let versions = if groups().contains(&name) {
        &v1[..]
    } else {
        served.versions(name)?
    };
    let mut g = group(name, versions);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

/// `/api/v1` or `/apis/<group>/<version>`, if served.
pub fn resource_list(group: &str, version: &str, served: &Snapshot) -> Option<Value> {
    let mut resources: Vec<Value> = Vec::new();
    let builtin = version == "v1" && (group.is_empty() || groups().contains(&group));
    let custom = served
        .entries
        .iter()
        .map(|e| e.resource)
        .filter(|r| r.group == group && r.version == version);
    let all: Vec<&Resource> = if builtin {
        RESOURCES.iter().filter(|r| r.group == group).collect()
    } else {
        custom.collect()
    };
    let reviews = builtin && REVIEWS.iter().any(|(g, _, _)| *g == group);
    if all.is_empty() && !reviews {
        return None;
    }
    for r in all {
        resources.push(resource_entry(r));
        resources.extend(subresource_entries(r));
    }
    for (_, name, kind) in REVIEWS.iter().filter(|(g, _, _)| *g == group) {
        resources.push(json!({
            "name": name,
            "singularName": name.trim_end_matches('s'),
            "namespaced": false,
            "kind": kind,
            "verbs": ["create"],
        }));
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn resource_entry(r: &Resource) -> Value {
    let mut verbs = vec!["create", "delete"];
    // kube-apiserver serves no deletecollection on namespaces.
    if r.name != "namespaces" {
        verbs.push("deletecollection");
    }
    verbs.extend(["get", "list", "patch", "update", "watch"]);
    let mut e = json!({
        "name": r.name,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": verbs,
        "shortNames": r.short_names,
    });
    if !r.categories().is_empty() {
        e["categories"] = json!(r.categories());
    }
    e
}

/// `pods/status`, `deployments/scale`, … as kube-apiserver lists them.
fn subresource_entries(r: &Resource) -> Vec<Value> {
    let mut out = Vec::new();
    let entry = |sub: &str, kind: &str, group: Option<&str>, verbs: &[&str]| {
        let mut e = json!({
            "name": format!("{}/{sub}", r.name),
            "singularName": "",
            "namespaced": r.namespaced,
            "kind": kind,
            "verbs": verbs,
        });
        if let Some(g) = group {
            e["group"] = json!(g);
            e["version"] = json!("v1");
        }
        e
    };
    let mut subs: Vec<&str> = super::subresources::SUBRESOURCES
        .iter()
        .filter(|(of, _)| *of == r.name)
        .map(|(_, s)| *s)
        .collect();
    if super::has_status(r) {
        subs.push("status");
    }
    if super::crd_scale::has_scale(r) {
        subs.push("scale");
    }
    subs.sort_unstable();
    for sub in subs {
        out.push(match sub {
            "binding" => entry(sub, "Binding", None, &["create"]),
            "log" => entry(sub, "Pod", None, &["get"]),
            "exec" => entry(sub, "PodExecOptions", None, &["create", "get"]),
            "attach" => entry(sub, "PodAttachOptions", None, &["create", "get"]),
            "eviction" => entry(sub, "Eviction", Some("policy"), &["create"]),
            "token" => entry(
                sub,
                "TokenRequest",
                Some("authentication.k8s.io"),
                &["create"],
            ),
            "scale" => entry(
                sub,
                "Scale",
                Some("autoscaling"),
                &["get", "patch", "update"],
            ),
            _ => entry(sub, r.kind, None, &["get", "patch", "update"]),
        });
    }
    out
}
