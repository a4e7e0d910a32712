//! OpenAPI v3 discovery: `/openapi/v3` (the root, one entry per
//! group-version) and `/openapi/v3/api/v1`, `/openapi/v3/apis/<g>/v1`
//! (paths and operations of the served resources).
//!
//! What clients use it for: kubectl's default `create`/`apply` validation
//! (`--validate=strict`) asks whether the PATCH operation of the object's
//! group-version-kind lists the `fieldValidation` query parameter; when it
//! does, kubectl leaves validation to the server (`?fieldValidation=Strict`,
//! see `fields`) instead of downloading `/openapi/v2`. The documents list
//! every path and operation served, with their parameters, request body
//! media types and `x-kubernetes-group-version-kind`.
//!
//! Component schemas of built-in kinds are placeholders (`type: object`)
//! without `x-kubernetes-group-version-kind`: kubectl then computes
//! apply's strategic merge patches from its built-in types, as it does
//! without OpenAPI, rather than from an incomplete schema. (So `kubectl
//! explain` has no field documentation to show for them.)
//!
//! Custom resources are documented as kube's apiextensions-apiserver
//! documents them: one document per served custom group-version, made
//! from the served set on each request, whose component schema
//! (`com.example.stable.v1.CronTab`) is the CRD version's structural
//! schema with `apiVersion`, `kind` and `metadata` added and its
//! `x-kubernetes-group-version-kind`, so `kubectl explain crontab.spec`
//! shows the CRD's fields. Their PATCH operations offer JSON patch, merge
//! patch and apply patch, never strategic merge patch (kubectl then
//! applies a custom resource with a merge patch, as against kube).

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use axum::body::Bytes;

use super::discovery::KUBE_VERSION;
use crate::resources::{Resource, RESOURCES};
use crate::served::Snapshot;

/// One served group-version: its root key (`api/v1`, `apis/apps/v1`) and
/// document, encoded once.
struct Doc {
    key: String,
    hash: String,
    body: String,
}

fn docs() -> &'static [Doc] {
    static DOCS: OnceLock<Vec<Doc>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut groups: Vec<&str> = Vec::new();
        for r in RESOURCES {
            if !groups.contains(&r.group) {
                groups.push(r.group);
            }
        }
        groups
            .into_iter()
            .map(|g| {
                let key = if g.is_empty() {
                    "api/v1".to_string()
                } else {
                    format!("apis/{g}/v1")
                };
                let body = document(g).to_string();
                let hash = format!("{:016X}", fnv1a(body.as_bytes()));
                Doc { key, hash, body }
            })
            .collect()
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `GET /openapi/v3`: the built-in group-versions and the custom ones
/// `served` now.
pub fn root(served: &Snapshot) -> Value {
    let mut paths: Map<String, Value> = docs()
        .iter()
        .map(|d| {
            (
                d.key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{}?hash={}", d.key, d.hash)}),
            )
        })
        .collect();
    for (group, versions) in &served.groups {
        for version in versions {
            let key = format!("apis/{group}/{version}");
            let body = custom_document(group, version, served).to_string();
            let url = format!("/openapi/v3/{key}?hash={:016X}", fnv1a(body.as_bytes()));
            paths.insert(key, json!({ "serverRelativeURL": url }));
        }
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3/<key>` (`api/v1`, `apis/apps/v1`,
/// `apis/<custom group>/<version>`, …), if served.
pub fn group_version(key: &str, served: &Snapshot) -> Option<Bytes> {
    let key = key.trim_matches('/');
    if let Some(d) = docs().iter().find(|d| d.key == key) {
        return Some(Bytes::from_static(d.body.as_bytes()));
    }
    let (group, version) = key.strip_prefix("apis/")?.split_once('/')?;
    served
        .versions(group)?
        .iter()
        .any(|v| v == version)
        .then(|| custom_document(group, version, served).to_string().into())
}

fn schema_name(group: &str, kind: &str) -> String {
    match group {
        "" => format!("io.k8s.api.core.v1.{kind}"),
        "coordination.k8s.io" => format!("io.k8s.api.coordination.v1.{kind}"),
        "rbac.authorization.k8s.io" => format!("io.k8s.api.rbac.v1.{kind}"),
        "events.k8s.io" => format!("io.k8s.api.events.v1.{kind}"),
        g => format!("io.k8s.api.{g}.v1.{kind}"),
    }
}

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": ty, "uniqueItems": true}})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "description": description, "required": true,
           "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params() -> Vec<Value> {
    vec![
        query("dryRun", "string", "When present, indicates that modifications should not be persisted. Valid value: All."),
        query("fieldManager", "string", "A name associated with the actor or entity that is making these changes."),
        query("fieldValidation", "string", "How the server handles unknown fields in the object: Ignore, Warn (the default) or Strict."),
    ]
}

fn list_params() -> Vec<Value> {
    vec![
        query(
            "allowWatchBookmarks",
            "boolean",
            "Requests watch events with type BOOKMARK.",
        ),
        query(
            "continue",
            "string",
            "The continue token of a previous paginated list.",
        ),
        query("fieldSelector", "string", "Restricts the list by fields."),
        query("labelSelector", "string", "Restricts the list by labels."),
        query("limit", "integer", "The most items to return."),
        query(
            "resourceVersion",
            "string",
            "Which version of the list to serve.",
        ),
        query(
            "resourceVersionMatch",
            "string",
            "How resourceVersion applies: NotOlderThan or Exact.",
        ),
        query(
            "sendInitialEvents",
            "boolean",
            "Starts a watch with the current state as ADDED events.",
        ),
        query(
            "timeoutSeconds",
            "integer",
            "Ends the call after this many seconds.",
        ),
        query("watch", "boolean", "Watch for changes instead of listing."),
    ]
}

fn delete_params() -> Vec<Value> {
    vec![
        query(
            "dryRun",
            "string",
            "When present, indicates that modifications should not be persisted. Valid value: All.",
        ),
        query(
            "gracePeriodSeconds",
            "integer",
            "The duration in seconds before the object should be deleted.",
        ),
        query(
            "propagationPolicy",
            "string",
            "Whether and how garbage collection is performed: Orphan, Background or Foreground.",
        ),
    ]
}

fn json_body(schema: &str) -> Value {
    json!({"content": {"application/json": {"schema": schema_ref(schema)}}, "required": true})
}

fn responses(codes: &[&str], schema: &str) -> Value {
    let mut out = Map::new();
    for c in codes {
        out.insert(
            c.to_string(),
            json!({"description": if *c == "201" { "Created" } else { "OK" },
                   "content": {"application/json": {"schema": schema_ref(schema)}}}),
        );
    }
    out.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(out)
}

struct Op<'a> {
    action: &'a str,
    verb_id: &'a str,
    description: String,
    params: Vec<Value>,
    body: Option<Value>,
    response: (&'a [&'a str], String),
    gvk: (&'a str, &'a str),
}

fn operation(r: &Resource, op: Op<'_>, id_suffix: &str) -> Value {
    let group_tag = if r.group.is_empty() {
        "core_v1".to_string()
    } else {
        format!("{}_v1", r.group.split('.').next().unwrap_or(r.group))
    };
    let group_id: String = if r.group.is_empty() {
        "CoreV1".into()
    } else {
        let first = r.group.split('.').next().unwrap_or(r.group);
        let mut c = first.chars();
        match c.next() {
            Some(f) => format!("{}{}V1", f.to_uppercase(), c.as_str()),
            None => "V1".into(),
        }
    };
    let mut o = json!({
        "tags": [group_tag],
        "description": op.description,
        "operationId": format!("{}{group_id}{id_suffix}", op.verb_id),
        "parameters": op.params,
        "responses": responses(op.response.0, &op.response.1),
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": {"group": op.gvk.0, "version": "v1", "kind": op.gvk.1},
    });
    if let Some(b) = op.body {
        o["requestBody"] = b;
    }
    o
}

fn patch_body() -> Value {
    let patch = schema_ref(&format!("{META}.Patch"));
    json!({"content": {
        "application/json-patch+json": {"schema": patch},
        "application/merge-patch+json": {"schema": patch},
        "application/strategic-merge-patch+json": {"schema": patch},
    }, "required": true})
}

/// The paths of one resource (and its subresources).
fn resource_paths(r: &Resource, paths: &mut Map<String, Value>) {
    let base = if r.group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{}/v1", r.group)
    };
    let (scope, id_scope) = if r.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", r.name),
            "Namespaced",
        )
    } else {
        (format!("{base}/{}", r.name), "")
    };
    let kind = r.kind;
    let object = schema_name(r.group, kind);
    let list = schema_name(r.group, &format!("{kind}List"));
    let gvk = (r.group, kind);
    let mut scope_params = vec![query(
        "pretty",
        "string",
        "If 'true', the output is pretty printed.",
    )];
    if r.namespaced {
        scope_params.insert(
            0,
            path_param(
                "namespace",
                "object name and auth scope, such as for teams and projects",
            ),
        );
    }
    let item_params = {
        let mut p = vec![path_param("name", &format!("name of the {kind}"))];
        p.extend(scope_params.iter().cloned());
        p
    };

    // The collection: list (and watch), create, deletecollection.
    let mut collection = json!({"parameters": scope_params.clone()});
    collection["get"] = operation(
        r,
        Op {
            action: "list",
            verb_id: "list",
            description: format!("list or watch objects of kind {kind}"),
            params: list_params(),
            body: None,
            response: (&["200"], list.clone()),
            gvk,
        },
        &format!("{id_scope}{kind}"),
    );
    collection["post"] = operation(
        r,
        Op {
            action: "post",
            verb_id: "create",
            description: format!("create a {kind}"),
            params: write_params(),
            body: Some(json_body(&object)),
            response: (&["200", "201"], object.clone()),
            gvk,
        },
        &format!("{id_scope}{kind}"),
    );
    if r.name != "namespaces" {
        let mut params = delete_params();
        params.extend(list_params());
        collection["delete"] = operation(
            r,
            Op {
                action: "deletecollection",
                verb_id: "deleteCollection",
                description: format!("delete collection of {kind}"),
                params,
                body: Some(json_body(&format!("{META}.DeleteOptions"))),
                response: (&["200"], format!("{META}.Status")),
                gvk,
            },
            &format!("{id_scope}{kind}"),
        );
    }
    paths.insert(scope.clone(), collection);
    if r.namespaced {
        let mut all = json!({"parameters": [query("pretty", "string", "If 'true', the output is pretty printed.")]});
        all["get"] = operation(
            r,
            Op {
                action: "list",
                verb_id: "list",
                description: format!("list or watch objects of kind {kind} in all namespaces"),
                params: list_params(),
                body: None,
                response: (&["200"], list.clone()),
                gvk,
            },
            &format!("{kind}ForAllNamespaces"),
        );
        paths.insert(format!("{base}/{}", r.name), all);
    }

    // One object: read, replace, patch, delete.
    let id = format!("{id_scope}{kind}");
    let mut item = json!({"parameters": item_params.clone()});
    item["get"] = operation(
        r,
        Op {
            action: "get",
            verb_id: "read",
            description: format!("read the specified {kind}"),
            params: vec![],
            body: None,
            response: (&["200"], object.clone()),
            gvk,
        },
        &id,
    );
    item["put"] = operation(
        r,
        Op {
            action: "put",
            verb_id: "replace",
            description: format!("replace the specified {kind}"),
            params: write_params(),
            body: Some(json_body(&object)),
            response: (&["200", "201"], object.clone()),
            gvk,
        },
        &id,
    );
    item["patch"] = operation(
        r,
        Op {
            action: "patch",
            verb_id: "patch",
            description: format!("partially update the specified {kind}"),
            params: write_params(),
            body: Some(patch_body()),
            response: (&["200", "201"], object.clone()),
            gvk,
        },
        &id,
    );
    item["delete"] = operation(
        r,
        Op {
            action: "delete",
            verb_id: "delete",
            description: format!("delete a {kind}"),
            params: delete_params(),
            body: Some(json_body(&format!("{META}.DeleteOptions"))),
            response: (&["200", "202"], object.clone()),
            gvk,
        },
        &id,
    );
    paths.insert(format!("{scope}/{{name}}"), item);

    // Subresources.
    let mut subs: Vec<&str> = super::subresources::SUBRESOURCES
        .iter()
        .filter(|(of, _)| *of == r.name)
        .map(|(_, s)| *s)
        .collect();
    if super::has_status(r) {
        subs.push("status");
    }
    for sub in subs {
        let cap = format!("{}{}", sub[..1].to_uppercase(), &sub[1..]);
        let id = format!("{id_scope}{kind}{cap}");
        let mut p = json!({"parameters": item_params.clone()});
        match sub {
            "status" | "scale" => {
                let (schema, gvk) = if sub == "scale" {
                    (
                        "io.k8s.api.autoscaling.v1.Scale".to_string(),
                        ("autoscaling", "Scale"),
                    )
                } else {
                    (object.clone(), gvk)
                };
                p["get"] = operation(
                    r,
                    Op {
                        action: "get",
                        verb_id: "read",
                        description: format!("read {sub} of the specified {kind}"),
                        params: vec![],
                        body: None,
                        response: (&["200"], schema.clone()),
                        gvk,
                    },
                    &id,
                );
                p["put"] = operation(
                    r,
                    Op {
                        action: "put",
                        verb_id: "replace",
                        description: format!("replace {sub} of the specified {kind}"),
                        params: write_params(),
                        body: Some(json_body(&schema)),
                        response: (&["200", "201"], schema.clone()),
                        gvk,
                    },
                    &id,
                );
                p["patch"] = operation(
                    r,
                    Op {
                        action: "patch",
                        verb_id: "patch",
                        description: format!("partially update {sub} of the specified {kind}"),
                        params: write_params(),
                        body: Some(patch_body()),
                        response: (&["200", "201"], schema.clone()),
                        gvk,
                    },
                    &id,
                );
            }
            "binding" => {
                let binding = schema_name("", "Binding");
                p["post"] = operation(
                    r,
                    Op {
                        action: "post",
                        verb_id: "create",
                        description: format!("create binding of a {kind}"),
                        params: write_params(),
                        body: Some(json_body(&binding)),
                        response: (&["200", "201"], binding.clone()),
                        gvk: ("", "Binding"),
                    },
                    &id,
                );
            }
            "eviction" => {
                let eviction = schema_name("policy", "Eviction");
                p["post"] = operation(
                    r,
                    Op {
                        action: "post",
                        verb_id: "create",
                        description: format!("create eviction of a {kind}"),
                        params: write_params(),
                        body: Some(json_body(&eviction)),
                        response: (&["200", "201"], eviction.clone()),
                        gvk: ("policy", "Eviction"),
                    },
                    &id,
                );
            }
            "log" => {
                let params = vec![
                    query(
                        "container",
                        "string",
                        "The container for which to stream logs.",
                    ),
                    query("follow", "boolean", "Follow the log stream of the pod."),
                    query("limitBytes", "integer", "The most bytes to return."),
                    query(
                        "previous",
                        "boolean",
                        "Return previous terminated container logs.",
                    ),
                    query(
                        "sinceSeconds",
                        "integer",
                        "Only logs newer than this many seconds.",
                    ),
                    query(
                        "tailLines",
                        "integer",
                        "The number of lines from the end of the logs to show.",
                    ),
                    query(
                        "timestamps",
                        "boolean",
                        "Add an RFC3339 timestamp to every line.",
                    ),
                ];
                let mut op = operation(
                    r,
                    Op {
                        action: "get",
                        verb_id: "read",
                        description: format!("read log of the specified {kind}"),
                        params,
                        body: None,
                        response: (&["200"], String::new()),
                        gvk,
                    },
                    &id,
                );
                op["responses"] = json!({"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}},
                                         "401": {"description": "Unauthorized"}});
                p["get"] = op;
            }
            _ => continue,
        }
        paths.insert(format!("{scope}/{{name}}/{sub}"), p);
    }
}

/// Every `$ref` target in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x.as_str()) {
                    ("$ref", Some(r)) => {
                        if let Some(name) = r.strip_prefix("#/components/schemas/") {
                            if !out.iter().any(|o| o == name) {
                                out.push(name.to_string());
                            }
                        }
                    }
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

fn document(group: &str) -> Value {
    let mut paths = Map::new();
    for r in RESOURCES.iter().filter(|r| r.group == group) {
        resource_paths(r, &mut paths);
    }
    let paths = Value::Object(paths);
    let mut names = Vec::new();
    refs(&paths, &mut names);
    names.sort();
    let schemas: Map<String, Value> = names
        .into_iter()
        .map(|n| {
            let short = n.rsplit('.').next().unwrap_or_default().to_string();
            (n, json!({"type": "object", "description": short}))
        })
        .collect();
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBE_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// `com.example.stable.v1.CronTab`: kube's name of a custom kind's schema.
fn custom_schema_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// One operation of a custom resource's path.
fn custom_operation(
    action: &str,
    id: String,
    gvk: &Value,
    params: Vec<Value>,
    body: Option<Value>,
    response: &str,
) -> Value {
    let mut o = json!({
        "operationId": id,
        "parameters": params,
        "responses": responses(&["200"], response),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    });
    if let Some(b) = body {
        o["requestBody"] = b;
    }
    o
}

fn custom_patch_body() -> Value {
    let patch = schema_ref(&format!("{META}.Patch"));
    json!({"content": {
        "application/json-patch+json": {"schema": patch},
        "application/merge-patch+json": {"schema": patch},
        "application/apply-patch+yaml": {"schema": patch},
    }, "required": true})
}

/// The paths of one served custom resource version.
fn custom_paths(r: &Resource, schema: &str, paths: &mut Map<String, Value>) {
    let base = format!("/apis/{}/{}", r.group, r.version);
    let collection = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.name)
    } else {
        format!("{base}/{}", r.name)
    };
    let item = format!("{collection}/{{name}}");
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let scale_gvk = json!({"group": "autoscaling", "version": "v1", "kind": "Scale"});
    let mut scope = vec![];
    if r.namespaced {
        scope.push(path_param(
            "namespace",
            "object name and auth scope, such as for teams and projects",
        ));
    }
    let mut named = scope.clone();
    named.insert(0, path_param("name", &format!("name of the {}", r.kind)));
    let id = |verb: &str, what: &str| {
        let ns = if r.namespaced { "Namespaced" } else { "" };
        format!("{verb}{ns}{}{what}", r.kind)
    };
    let list = format!("{schema}List");
    let with = |mut base: Vec<Value>, extra: Vec<Value>| {
        base.extend(extra);
        base
    };
    paths.insert(
        collection,
        json!({
            "get": custom_operation("list", id("list", ""), &gvk, with(scope.clone(), list_params()), None, &list),
            "post": custom_operation("post", id("create", ""), &gvk, with(scope.clone(), write_params()), Some(json_body(schema)), schema),
            "delete": custom_operation("deletecollection", id("deleteCollection", ""), &gvk,
                                       with(scope.clone(), delete_params()), None, &format!("{META}.Status")),
        }),
    );
    paths.insert(
        item.clone(),
        json!({
            "get": custom_operation("get", id("read", ""), &gvk, named.clone(), None, schema),
            "put": custom_operation("put", id("replace", ""), &gvk, with(named.clone(), write_params()), Some(json_body(schema)), schema),
            "patch": custom_operation("patch", id("patch", ""), &gvk, with(named.clone(), write_params()), Some(custom_patch_body()), schema),
            "delete": custom_operation("delete", id("delete", ""), &gvk, with(named.clone(), delete_params()), None, &format!("{META}.Status")),
        }),
    );
    let custom = crate::served::custom(r);
    if custom.is_some_and(|c| c.status) {
        paths.insert(
            format!("{item}/status"),
            json!({
                "get": custom_operation("get", id("read", "Status"), &gvk, named.clone(), None, schema),
                "put": custom_operation("put", id("replace", "Status"), &gvk, with(named.clone(), write_params()), Some(json_body(schema)), schema),
                "patch": custom_operation("patch", id("patch", "Status"), &gvk, with(named.clone(), write_params()), Some(custom_patch_body()), schema),
            }),
        );
    }
    if custom.is_some_and(|c| c.scale.is_some()) {
        let scale = "io.k8s.api.autoscaling.v1.Scale";
        paths.insert(
            format!("{item}/scale"),
            json!({
                "get": custom_operation("get", id("read", "Scale"), &scale_gvk, named.clone(), None, scale),
                "put": custom_operation("put", id("replace", "Scale"), &scale_gvk, with(named.clone(), write_params()), Some(json_body(scale)), scale),
                "patch": custom_operation("patch", id("patch", "Scale"), &scale_gvk, with(named, write_params()), Some(custom_patch_body()), scale),
            }),
        );
    }
}

/// The OpenAPI v3 document of one served custom group-version.
fn custom_document(group: &str, version: &str, served: &Snapshot) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for e in served
        .entries
        .iter()
        .filter(|e| e.resource.group == group && e.resource.version == version)
    {
        let r = e.resource;
        let name = custom_schema_name(group, version, r.kind);
        let mut schema = match &e.schema {
            Some(s) => s.root().clone(),
            None => json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        };
        let api_version = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."});
        let kind = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."});
        if let Some(m) = schema.as_object_mut() {
            let props = m.entry("properties").or_insert_with(|| json!({}));
            if let Some(p) = props.as_object_mut() {
                p.insert("apiVersion".into(), api_version.clone());
                p.insert("kind".into(), kind.clone());
                p.insert(
                    "metadata".into(),
                    json!({"allOf": [schema_ref(&format!("{META}.ObjectMeta"))],
                           "description": "Standard object's metadata."}),
                );
            }
            m.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": group, "version": version, "kind": r.kind}]),
            );
        }
        let list = json!({
            "type": "object",
            "required": ["items"],
            "description": format!("{}List is a list of {}", r.kind, r.kind),
            "properties": {
                "apiVersion": api_version,
                "kind": kind,
                "items": {"type": "array", "items": schema_ref(&name)},
                "metadata": {"allOf": [schema_ref(&format!("{META}.ListMeta"))]},
            },
            "x-kubernetes-group-version-kind": [{"group": group, "version": version, "kind": format!("{}List", r.kind)}],
        });
        custom_paths(r, &name, &mut paths);
        schemas.insert(format!("{name}List"), list);
        schemas.insert(name, schema);
    }
    let paths = Value::Object(paths);
    let mut names = Vec::new();
    refs(&paths, &mut names);
    refs(&Value::Object(schemas.clone()), &mut names);
    for n in names {
        if !schemas.contains_key(&n) {
            let short = n.rsplit('.').next().unwrap_or_default().to_string();
            schemas.insert(n, json!({"type": "object", "description": short}));
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_operations_advertise_field_validation() {
        let root = root(&Snapshot::default());
        let url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="));
        let none = Snapshot::default();
        let doc: Value =
            serde_json::from_slice(&group_version("apis/apps/v1", &none).unwrap()).unwrap();
        let op = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            op["x-kubernetes-group-version-kind"],
            json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        );
        let names: Vec<&str> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(names.contains(&"fieldValidation"));
        assert!(op["requestBody"]["content"]["application/strategic-merge-patch+json"].is_object());
        // Every $ref resolves.
        let mut targets = Vec::new();
        refs(&doc["paths"], &mut targets);
        for t in targets {
            assert!(doc["components"]["schemas"][&t].is_object(), "{t}");
        }
        let core: Value = serde_json::from_slice(&group_version("api/v1", &none).unwrap()).unwrap();
        assert!(
            core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/binding"]["post"].is_object()
        );
        assert!(core["paths"]["/api/v1/nodes/{name}"]["patch"].is_object());
        assert!(group_version("apis/widgets/v1", &none).is_none());
    }
}
