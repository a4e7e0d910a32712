//! Discovery: what kubectl reads before anything else. The legacy,
//! unaggregated form (`APIVersions`, `APIGroupList`, one `APIResourceList`
//! per group version) is plain `application/json`, which every client
//! falls back to; the aggregated form of `/api` and `/apis`, all of it in
//! one answer, is [`aggregated`]'s. The built-in groups come first, in
//! kube-apiserver's group priority order, then the custom resources' groups
//! of the served [`Snapshot`], each with its versions in Kubernetes'
//! priority order (the first one preferred). Both
//! forms are written from [`resources`].

pub mod aggregated;

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

/// kube-apiserver's group priorities (its aggregator's
/// `groupPriorityMinimum` of each built-in group): discovery lists groups
/// from the highest down, and kubectl resolves a resource name found in
/// several groups (`events`) to the first. Custom resources' groups come
/// after all of these (a CRD's APIService has 1000).
const GROUP_PRIORITY: &[(&str, u32)] = &[
    ("apps", 17800),
    ("events.k8s.io", 17750),
    ("authentication.k8s.io", 17700),
    ("authorization.k8s.io", 17600),
    ("autoscaling", 17500),
    ("batch", 17400),
    ("certificates.k8s.io", 17300),
    ("networking.k8s.io", 17200),
    ("policy", 17100),
    ("rbac.authorization.k8s.io", 17000),
    ("storage.k8s.io", 16800),
    ("admissionregistration.k8s.io", 16700),
    ("apiextensions.k8s.io", 16700),
    ("scheduling.k8s.io", 16600),
    ("coordination.k8s.io", 16500),
    ("node.k8s.io", 16300),
    ("discovery.k8s.io", 16200),
    ("flowcontrol.apiserver.k8s.io", 16100),
];

/// Every built-in API group but the core one, in kube-apiserver's order:
/// by [`GROUP_PRIORITY`], highest first, ties by name.
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
    let priority = |group: &str| {
        GROUP_PRIORITY
            .iter()
            .find(|(g, _)| *g == group)
            .map_or(0, |(_, p)| *p)
    };
    g.sort_by(|a, b| priority(b).cmp(&priority(a)).then(a.cmp(b)));
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

/// One served resource as discovery describes it: the one table both
/// the per-group documents ([`resource_list`]) and the aggregated ones
/// ([`aggregated`]) are written from.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    /// Plural: the URL segment.
    pub name: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub namespaced: bool,
    pub verbs: Vec<&'static str>,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Sorted by name.
    pub subresources: Vec<Subresource>,
}

/// A subresource (`pods/status`, `deployments/scale`) and what it answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Subresource {
    pub name: &'static str,
    /// The group, version and kind of what it answers.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

/// Every resource served at `/api/v1` or `/apis/<group>/<version>`, in
/// the table's order; `None` when the group version is not served.
pub fn resources(group: &str, version: &str, served: &Snapshot) -> Option<Vec<Described>> {
    let builtin = version == "v1" && (group.is_empty() || groups().contains(&group));
    let all: Vec<&Resource> = if builtin {
        RESOURCES.iter().filter(|r| r.group == group).collect()
    } else {
        served
            .entries
            .iter()
            .map(|e| e.resource)
            .filter(|r| r.group == group && r.version == version)
            .collect()
    };
    let reviews = builtin && REVIEWS.iter().any(|(g, _, _)| *g == group);
    if all.is_empty() && !reviews {
        return None;
    }
    let mut out: Vec<Described> = all.into_iter().map(describe).collect();
    for (g, name, kind) in REVIEWS.iter().filter(|(g, _, _)| *g == group) {
        out.push(Described {
            name,
            singular: name.trim_end_matches('s'),
            kind,
            group: g,
            version: "v1",
            namespaced: false,
            verbs: vec!["create"],
            short_names: &[],
            categories: &[],
            subresources: Vec::new(),
        });
    }
    Some(out)
}

fn describe(r: &'static Resource) -> Described {
    let mut verbs = vec!["create", "delete"];
    // kube-apiserver serves no deletecollection on namespaces.
    if r.name != "namespaces" {
        verbs.push("deletecollection");
    }
    verbs.extend(["get", "list", "patch", "update", "watch"]);
    Described {
        name: r.name,
        singular: r.singular,
        kind: r.kind,
        group: r.group,
        version: r.version,
        namespaced: r.namespaced,
        verbs,
        short_names: r.short_names,
        categories: r.categories(),
        subresources: subresources(r),
    }
}

/// `pods/status`, `deployments/scale`, … as kube-apiserver lists them.
fn subresources(r: &'static Resource) -> Vec<Subresource> {
    let mut names: Vec<&'static str> = super::subresources::SUBRESOURCES
        .iter()
        .filter(|(of, _)| *of == r.name)
        .map(|(_, s)| *s)
        .collect();
    if super::has_status(r) {
        names.push("status");
    }
    if super::scale::has_scale(r) {
        names.push("scale");
    }
    names.sort_unstable();
    let sub = |name, group, kind, verbs| Subresource {
        name,
        group,
        version: "v1",
        kind,
        verbs,
    };
    names
        .into_iter()
        .map(|name| match name {
            "binding" => sub(name, "", "Binding", &["create"][..]),
            "log" => sub(name, "", "Pod", &["get"]),
            "exec" => sub(name, "", "PodExecOptions", &["create", "get"]),
            "attach" => sub(name, "", "PodAttachOptions", &["create", "get"]),
            "eviction" => sub(name, "policy", "Eviction", &["create"]),
            "token" => sub(name, "authentication.k8s.io", "TokenRequest", &["create"]),
            "scale" => sub(name, "autoscaling", "Scale", &["get", "patch", "update"]),
            _ => Subresource {
                name,
                group: r.group,
                version: r.version,
                kind: r.kind,
                verbs: &["get", "patch", "update"],
            },
        })
        .collect()
}

/// `/api/v1` or `/apis/<group>/<version>`, if served.
pub fn resource_list(group: &str, version: &str, served: &Snapshot) -> Option<Value> {
    let mut resources: Vec<Value> = Vec::new();
    for d in self::resources(group, version, served)? {
        let mut e = json!({
            "name": d.name,
            "singularName": d.singular,
            "namespaced": d.namespaced,
            "kind": d.kind,
            "verbs": d.verbs,
        });
        if !d.short_names.is_empty() {
            e["shortNames"] = json!(d.short_names);
        }
        if !d.categories.is_empty() {
            e["categories"] = json!(d.categories);
        }
        resources.push(e);
        for s in &d.subresources {
            let mut e = json!({
                "name": format!("{}/{}", d.name, s.name),
                "singularName": "",
                "namespaced": d.namespaced,
                "kind": s.kind,
                "verbs": s.verbs,
            });
            // Named only when another group's kind answers.
            if (s.group, s.version) != (d.group, d.version) {
                e["group"] = json!(s.group);
                e["version"] = json!(s.version);
            }
            resources.push(e);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_listed_in_kube_apiservers_priority_order() {
        assert_eq!(
            groups(),
            [
                "apps",
                "events.k8s.io",
                "authentication.k8s.io",
                "authorization.k8s.io",
                "batch",
                "policy",
                "rbac.authorization.k8s.io",
                "apiextensions.k8s.io",
                "coordination.k8s.io",
                "discovery.k8s.io",
            ]
        );
        // Every served group has kube's priority (none falls to the end
        // unranked).
        for g in groups() {
            assert!(GROUP_PRIORITY.iter().any(|(p, _)| *p == g), "{g}");
        }
    }
}
