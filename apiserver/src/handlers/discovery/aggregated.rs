//! Aggregated discovery (`apidiscovery.k8s.io`): `GET /api` and `GET
//! /apis` answer every group version with all its resources in one
//! `APIGroupDiscoveryList` when the client asks for it in `Accept`, so a
//! client needs two requests where the per-group documents take one per
//! group version (kubectl 1.26–1.29 ask for `v2beta1`, 1.30+ for `v2`).
//!
//! Negotiation, as kube-apiserver's: the `Accept` entries are tried by
//! quality, first listed first among equals. `application/json` (or a
//! wildcard) with `g=apidiscovery.k8s.io;v=v2|v2beta1;as=APIGroupDiscoveryList`
//! is answered aggregated; any other entry gets the legacy document
//! (`APIVersions`, `APIGroupList`), as before. Protobuf is not spoken: an
//! `Accept` naming only aggregated forms this server cannot write is 406.
//!
//! Worked example: kubectl 1.33 sends
//! `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,
//! application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,
//! application/json;q=0.9`, so it reads `v2` (Content-Type naming it), and
//! `deployments` there as
//! `{"resource": "deployments", "responseKind": {"group": "apps",
//! "version": "v1", "kind": "Deployment"}, "scope": "Namespaced", …,
//! "subresources": [{"subresource": "scale", "responseKind": {"group":
//! "autoscaling", …}, "verbs": ["get", "patch", "update"]}, …]}`.
//! The documents are written from [`super::resources`], the table the
//! per-group documents come from, over the served custom resources of the
//! moment: a CRD's resource is in them once established, and gone once
//! deleted.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::{groups, resources, Described};
use crate::error::{Error, Result};
use crate::served::Snapshot;

/// The group, and the kind that holds the aggregated documents.
const GROUP: &str = "apidiscovery.k8s.io";
const KIND: &str = "APIGroupDiscoveryList";
/// The versions served, newest first.
const VERSIONS: [&str; 2] = ["v2", "v2beta1"];

/// What a discovery request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `APIVersions` / `APIGroupList`.
    Legacy,
    /// `APIGroupDiscoveryList` at this version of `apidiscovery.k8s.io`.
    Aggregated(&'static str),
}

/// The Content-Type of an aggregated answer at `version`.
pub fn content_type(version: &str) -> String {
    format!("application/json;g={GROUP};v={version};as={KIND}")
}

/// One entry of an `Accept` header: its media type and parameters.
struct MediaRange<'a> {
    media: &'a str,
    params: Vec<(String, &'a str)>,
    quality: f32,
}

impl<'a> MediaRange<'a> {
    fn parse(entry: &'a str) -> Option<MediaRange<'a>> {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().filter(|m| !m.is_empty())?;
        let mut params = Vec::new();
        let mut quality = 1.0;
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"'));
            if k == "q" {
                quality = v.parse().unwrap_or(0.0);
            } else {
                params.push((k, v));
            }
        }
        Some(MediaRange {
            media,
            params,
            quality,
        })
    }

    fn param(&self, key: &str) -> Option<&'a str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// What this entry asks for: `None` when it names an aggregated form
    /// this server cannot write (protobuf, an unknown version).
    fn format(&self) -> Option<Format> {
        if self.param("g") != Some(GROUP) {
            return Some(Format::Legacy);
        }
        let json = matches!(
            self.media.to_ascii_lowercase().as_str(),
            "application/json" | "application/*" | "*/*"
        );
        let version = VERSIONS.into_iter().find(|v| self.param("v") == Some(*v))?;
        (json && self.param("as") == Some(KIND)).then_some(Format::Aggregated(version))
    }
}

/// Chooses the form of a discovery answer from the request's `Accept`;
/// 406 when it names only aggregated forms this server cannot write.
pub fn negotiate(headers: &HeaderMap) -> Result<Format> {
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter(|e| !e.trim().is_empty())
        .collect();
    if accept.is_empty() {
        return Ok(Format::Legacy);
    }
    let mut ranges: Vec<MediaRange> = accept
        .into_iter()
        .filter_map(MediaRange::parse)
        .filter(|r| r.quality > 0.0)
        .collect();
    // Stable: equals keep the client's order.
    ranges.sort_by(|a, b| b.quality.total_cmp(&a.quality));
    ranges.iter().find_map(MediaRange::format).ok_or_else(|| {
        let mut offered: Vec<String> = VERSIONS.into_iter().map(content_type).collect();
        offered.push("application/json".into());
        Error::NotAcceptable(offered.join(", "))
    })
}

/// One group's `APIGroupDiscovery`: each version (preferred first) with
/// its resources, sorted by name.
fn group(name: &str, versions: &[String], served: &Snapshot) -> Option<Value> {
    let versions: Vec<Value> = versions
        .iter()
        .filter_map(|v| {
            let mut listed = resources(name, v, served)?;
            listed.sort_by_key(|d| d.name);
            let listed: Vec<Value> = listed.iter().map(resource).collect();
            Some(json!({"version": v, "resources": listed, "freshness": "Current"}))
        })
        .collect();
    if versions.is_empty() {
        return None;
    }
    let metadata = if name.is_empty() {
        json!({})
    } else {
        json!({"name": name})
    };
    Some(json!({"metadata": metadata, "versions": versions}))
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

/// One `APIResourceDiscovery`.
fn resource(d: &Described) -> Value {
    let mut r = json!({
        "resource": d.name,
        "responseKind": gvk(d.group, d.version, d.kind),
        "scope": if d.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": d.singular,
        "verbs": d.verbs,
    });
    if !d.short_names.is_empty() {
        r["shortNames"] = json!(d.short_names);
    }
    if !d.categories.is_empty() {
        r["categories"] = json!(d.categories);
    }
    if !d.subresources.is_empty() {
        let subs: Vec<Value> = d
            .subresources
            .iter()
            .map(|s| {
                json!({
                    "subresource": s.name,
                    "responseKind": gvk(s.group, s.version, s.kind),
                    "verbs": s.verbs,
                })
            })
            .collect();
        r["subresources"] = json!(subs);
    }
    r
}

fn list(version: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": KIND,
        "apiVersion": format!("{GROUP}/{version}"),
        "metadata": {},
        "items": items,
    })
}

/// `GET /api`: the core group.
pub fn core(version: &str, served: &Snapshot) -> Value {
    let v1 = ["v1".to_string()];
    list(version, group("", &v1, served).into_iter().collect())
}

/// `GET /apis`: every other group, built-ins first, in priority order.
pub fn apis(version: &str, served: &Snapshot) -> Value {
    let v1 = ["v1".to_string()];
    let items = groups()
        .into_iter()
        .filter_map(|g| group(g, &v1, served))
        .chain(
            served
                .groups
                .iter()
                .filter_map(|(g, v)| group(g, v, served)),
        )
        .collect();
    list(version, items)
}

/// The answer to a discovery GET in `format`, with `Vary: Accept` (the
/// same URL answers differently by `Accept`) and an `ETag` of the body;
/// 304 when `If-None-Match` names it (as kube-apiserver, which clients'
/// HTTP caches revalidate with).
pub fn respond(format: Format, body: Value, headers: &HeaderMap) -> Response {
    let body = body.to_string();
    let etag = format!(
        "\"{}\"",
        ring::digest::digest(&ring::digest::SHA256, body.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let content_type = match format {
        Format::Legacy => "application/json".to_string(),
        Format::Aggregated(v) => content_type(v),
    };
    let unchanged = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == etag || t.trim() == "*");
    let mut resp = if unchanged {
        let mut r = Response::new(axum::body::Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(axum::body::Body::from(body))
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn accept_headers_choose_the_form() {
        let kubectl_133 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,\
            application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,\
            application/json;q=0.9";
        assert_eq!(
            negotiate(&accept(kubectl_133)).unwrap(),
            Format::Aggregated("v2")
        );
        let kubectl_128 =
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,\
            application/json";
        assert_eq!(
            negotiate(&accept(kubectl_128)).unwrap(),
            Format::Aggregated("v2beta1")
        );
        // Protobuf first: skipped for the JSON it also accepts.
        let proto = "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,\
            application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;q=0.9";
        assert_eq!(negotiate(&accept(proto)).unwrap(), Format::Aggregated("v2"));
        // Quality orders, not position.
        let legacy_first =
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;q=0.5,\
            application/json";
        assert_eq!(negotiate(&accept(legacy_first)).unwrap(), Format::Legacy);
        for plain in [
            "application/json",
            "*/*",
            "",
            "application/vnd.kubernetes.protobuf",
        ] {
            assert_eq!(
                negotiate(&accept(plain)).unwrap(),
                Format::Legacy,
                "{plain}"
            );
        }
        assert_eq!(negotiate(&HeaderMap::new()).unwrap(), Format::Legacy);
        let only_proto =
            "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
        let e = negotiate(&accept(only_proto)).unwrap_err();
        assert_eq!(e.code(), 406);
        assert!(e.to_string().starts_with(
            "only the following media types are accepted: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        ));
        let unknown_version =
            "application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList";
        assert_eq!(negotiate(&accept(unknown_version)).unwrap_err().code(), 406);
    }

    #[test]
    fn documents_list_resources_with_scope_kinds_and_subresources() {
        let none = Snapshot::default();
        let core = core("v2", &none);
        assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2");
        assert_eq!(core["kind"], "APIGroupDiscoveryList");
        let items = core["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["metadata"], json!({}));
        let v1 = &items[0]["versions"][0];
        assert_eq!(v1["version"], "v1");
        assert_eq!(v1["freshness"], "Current");
        let res = v1["resources"].as_array().unwrap();
        let names: Vec<&str> = res.iter().filter_map(|r| r["resource"].as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        let pods = res.iter().find(|r| r["resource"] == "pods").unwrap();
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["singularResource"], "pod");
        assert_eq!(pods["responseKind"], gvk("", "v1", "Pod"));
        let eviction = pods["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subresource"] == "eviction")
            .unwrap();
        assert_eq!(eviction["responseKind"], gvk("policy", "v1", "Eviction"));
        let nodes = res.iter().find(|r| r["resource"] == "nodes").unwrap();
        assert_eq!(nodes["scope"], "Cluster");

        let apis = apis("v2beta1", &none);
        assert_eq!(apis["apiVersion"], "apidiscovery.k8s.io/v2beta1");
        let apps = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .unwrap();
        let deployments = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deployments["categories"], json!(["all"]));
        assert_eq!(
            deployments["subresources"],
            json!([
                {"subresource": "scale", "responseKind": gvk("autoscaling", "v1", "Scale"),
                 "verbs": ["get", "patch", "update"]},
                {"subresource": "status", "responseKind": gvk("apps", "v1", "Deployment"),
                 "verbs": ["get", "patch", "update"]},
            ])
        );
        // The review APIs: create only, no short names.
        let authz = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "authorization.k8s.io")
            .unwrap();
        let reviews = &authz["versions"][0]["resources"];
        assert!(reviews
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["verbs"] == json!(["create"]) && r.get("shortNames").is_none()));
    }

    #[test]
    fn answers_carry_their_type_and_revalidate() {
        let body = json!({"kind": KIND});
        let resp = respond(Format::Aggregated("v2"), body.clone(), &HeaderMap::new());
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        );
        assert_eq!(resp.headers()[header::VARY], "Accept");
        let etag = resp.headers()[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, etag);
        let resp = respond(Format::Aggregated("v2"), body.clone(), &again);
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
        let resp = respond(Format::Legacy, json!({"kind": "APIGroupList"}), &again);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    }
}
