//! The `scale` subresource of custom resources (a CRD version's
//! `subresources.scale`): an `autoscaling/v1` Scale whose `spec.replicas`
//! is the value at `specReplicasPath`, whose `status.replicas` is the
//! value at `statusReplicasPath`, and whose `status.selector` is the
//! string at `labelSelectorPath`. A write sets `specReplicasPath` in the
//! custom resource, which is validated against its schema like any
//! other write and recorded as its manager's update of the `scale`
//! subresource (kube's `pkg/registry/customresource` scale storage). A
//! path that names no field under `.spec` (a CRD stored before its paths
//! were checked at create and update) is a 500, never a broken object.
//! This is what `kubectl scale crontab/x --replicas=3` and a
//! HorizontalPodAutoscaler use.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde_json::{json, Value};

use super::fields::{with_warnings, WriteOptions};
use super::patch::PatchType;
use super::{json_response, AppState};
use crate::error::{Cause, Error, Result};
use crate::object::Object;
use crate::registry::conflict;
use crate::resources::Resource;
use crate::served::{self, ScalePaths};

/// Conflicting retries of an unpinned write before giving up.
const RETRIES: usize = 5;

/// Whether `r` is a custom resource with a `scale` subresource.
pub(super) fn has_scale(r: &Resource) -> bool {
    served::custom(r).is_some_and(|c| c.scale.is_some())
}

/// GET, PUT and PATCH on `…/<plural>/<name>/scale`.
#[allow(clippy::too_many_arguments)] // the parts of the request it reads
pub(super) async fn serve(
    s: &AppState,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    method: &Method,
    headers: &HeaderMap,
    body: Body,
    query: &[(String, String)],
) -> Result<Response> {
    let paths = served::custom(r)
        .and_then(|c| c.scale.as_ref())
        .ok_or(Error::NoRoute)?;
    match *method {
        Method::GET => {
            let o = s.registry.get(r, ns, name).await?;
            Ok(json_response(200, scale_of(paths, &o)?.to_string().into()))
        }
        Method::PUT | Method::PATCH => {
            let (patch, options) = match *method {
                Method::PATCH => (Some(super::patch_type(headers)?), "PatchOptions"),
                _ => (None, "UpdateOptions"),
            };
            let manager = super::apply::update_manager(query, headers, options)?;
            let body = super::read_body(headers, body, true).await?;
            let opts = WriteOptions::parse(query)?;
            let scale = Scaling {
                paths,
                patch,
                manager: &manager,
                opts,
            };
            update(s, r, ns, name, scale, body).await
        }
        _ => Err(Error::MethodNotAllowed(format!(
            "the server does not allow this method on the requested resource: {method}"
        ))),
    }
}

/// The field names of a simple JSONPath (`.spec.replicas`).
fn segments(path: &str) -> Vec<&str> {
    path.trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
        .collect()
}

fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return None;
    }
    segments(path).iter().try_fold(obj, |v, k| v.get(*k))
}

/// Sets the field at `path` under `.spec` (objects made on the way);
/// false, changing nothing, for a path that names no field under `.spec`
/// (a CRD stored before its scale paths were checked).
fn set(obj: &mut Value, path: &str, value: Value) -> bool {
    let keys = segments(path);
    if keys.len() < 2 || keys[0] != "spec" || !obj.is_object() {
        return false;
    }
    let mut at = obj;
    for k in keys {
        if !at.is_object() {
            *at = json!({});
        }
        let Some(map) = at.as_object_mut() else {
            return false;
        };
        at = map.entry(k.to_string()).or_insert(Value::Null);
    }
    *at = value;
    true
}

/// The Scale view of a stored custom resource.
fn scale_of(paths: &ScalePaths, o: &Object) -> Result<Value> {
    let v = o.value()?;
    let m = &v["metadata"];
    let mut scale = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"],
            "uid": m["uid"],
            "resourceVersion": o.resource_version.to_string(),
            "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": lookup(&v, &paths.spec_replicas).and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": lookup(&v, &paths.status_replicas).and_then(Value::as_i64).unwrap_or(0),
        },
    });
    if let Some(ns) = m["namespace"].as_str() {
        scale["metadata"]["namespace"] = json!(ns);
    }
    if let Some(sel) = lookup(&v, &paths.label_selector).and_then(Value::as_str) {
        scale["status"]["selector"] = json!(sel);
    }
    Ok(scale)
}

fn decode_scale(body: &[u8]) -> Result<Value> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Error::BadRequest(format!(
            "the object provided is unrecognized or malformed: json parse error: {e}"
        ))
    })?;
    match v["kind"].as_str() {
        _ if !v.is_object() => Err(Error::BadRequest(
            "the object provided is not a JSON object".into(),
        )),
        None | Some("" | "Scale") => Ok(v),
        Some(k) => Err(Error::BadRequest(format!(
            "the kind of the provided object ({k}) does not match Scale"
        ))),
    }
}

/// A write of the Scale, as the request asks it.
struct Scaling<'a> {
    paths: &'a ScalePaths,
    /// `None` for a PUT.
    patch: Option<PatchType>,
    /// Recorded as the `scale` subresource's updater.
    manager: &'a str,
    opts: WriteOptions,
}

/// PUT (a Scale) or PATCH (of the Scale): sets `specReplicasPath`; 200
/// with the new Scale.
async fn update(
    s: &AppState,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    scale: Scaling<'_>,
    body: Bytes,
) -> Result<Response> {
    let Scaling {
        paths,
        patch,
        manager,
        opts,
    } = scale;
    let mut last = None;
    for _ in 0..RETRIES {
        let current = s.registry.get(r, ns, name).await?;
        let given = match patch {
            Some(kind) => super::patch::apply(kind, &scale_of(paths, &current)?, &body)?,
            None => decode_scale(&body)?,
        };
        let warnings = opts.check("Scale", &given)?;
        let pinned = given["metadata"]["resourceVersion"]
            .as_str()
            .filter(|v| !v.is_empty());
        if pinned.is_some_and(|v| v != current.resource_version.to_string()) {
            return Err(conflict(r, name));
        }
        let replicas = &given["spec"]["replicas"];
        let n = match replicas {
            Value::Null => 0,
            v => v
                .as_i64()
                .filter(|n| *n >= 0 && *n <= i64::from(i32::MAX))
                .ok_or_else(|| Error::Invalid {
                    group: "autoscaling",
                    kind: "Scale",
                    name: name.to_string(),
                    causes: vec![Cause {
                        field: "spec.replicas".into(),
                        reason: "FieldValueInvalid",
                        message: format!("Invalid value: {v}: must be greater than or equal to 0"),
                    }],
                })?,
        };
        let old = current.value()?;
        let mut obj = old.clone();
        if !set(&mut obj, &paths.spec_replicas, json!(n)) {
            return Err(Error::Internal(format!(
                "the scale subresource's specReplicasPath {:?} is not a field under .spec",
                paths.spec_replicas
            )));
        }
        if obj == old {
            let resp = json_response(200, scale_of(paths, &current)?.to_string().into());
            return Ok(with_warnings(resp, &warnings));
        }
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("generation".into(), json!(generation));
        }
        super::crds::validate_object(s, r, &obj, name)?;
        super::apply::record_update(s, r, Some(&old), &mut obj, manager, "scale");
        if opts.dry_run {
            let dry = Object::from_value(current.key.clone(), &mut obj, current.resource_version)?;
            let resp = json_response(200, scale_of(paths, &dry)?.to_string().into());
            return Ok(with_warnings(resp, &warnings));
        }
        match s
            .registry
            .update(r, ns, name, obj, current.resource_version)
            .await
        {
            Ok(updated) => {
                let resp = json_response(200, scale_of(paths, &updated)?.to_string().into());
                return Ok(with_warnings(resp, &warnings));
            }
            Err(e @ Error::Conflict { .. }) if pinned.is_none() => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| conflict(r, name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_json_paths_read_and_write() {
        let mut v = json!({"spec": {"replicas": 2}, "status": {"sel": "a=b"}});
        assert_eq!(lookup(&v, ".spec.replicas"), Some(&json!(2)));
        assert_eq!(lookup(&v, ".status.sel"), Some(&json!("a=b")));
        assert_eq!(lookup(&v, ""), None);
        assert!(set(&mut v, ".spec.replicas", json!(5)));
        assert!(set(&mut v, ".spec.deep.count", json!(1)));
        assert_eq!(v["spec"], json!({"replicas": 5, "deep": {"count": 1}}));
        // Paths that name no field under .spec change nothing.
        let before = v.clone();
        for bad in ["", ".", ".spec", ".spec.", ".metadata", ".status.replicas"] {
            assert!(!set(&mut v, bad, json!(7)), "{bad}");
        }
        assert_eq!(v, before);
        assert!(!set(&mut json!(3), ".spec.replicas", json!(7)));
    }
}
