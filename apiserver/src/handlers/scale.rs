//! The `scale` subresource: an `autoscaling/v1` Scale over its parent's
//! replicas, for deployments, replica sets and stateful sets
//! (`spec.replicas`, `status.replicas`, the selector printed as a
//! string) and for custom resources whose CRD version has
//! `subresources.scale` (the values at `specReplicasPath`,
//! `statusReplicasPath` and `labelSelectorPath`). This is what `kubectl
//! scale`, `kubectl apply --server-side --subresource=scale` and a
//! HorizontalPodAutoscaler use.
//!
//! GET reads it; PUT, a PATCH, or a server-side apply write it: only the
//! parent's replicas change (its `generation` with them), validated as
//! any write of the parent. Field ownership is managed on the Scale and
//! recorded on the parent (`crate::fieldmanager::scale`, kube's
//! `ScaleHandler`): the writer owns the parent's replicas as the `scale`
//! subresource's manager, an apply conflicts (409) with another owner of
//! them unless forced (replicas nobody owns are kube's
//! `before-first-apply`'s on the Scale), and an update of a Scale whose
//! replicas nobody owns records no manager (kube starts tracking fields
//! on an apply, not on an update of an object with none). The parent's
//! kind naming only its replicas is applied as their Scale, as `kubectl
//! apply --subresource=scale` sends it (kube-apiserver refuses it). A
//! custom resource path that names no field under `.spec` (a CRD
//! stored before its paths were checked at create and update) is a 500,
//! never a broken object.

use axum::body::Body;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde_json::{json, Value};

use super::fields::{with_warnings, WriteOptions};
use super::patch::PatchType;
use super::schema::Source;
use super::{json_response, AppState};
use crate::error::{Cause, Error, Result};
use crate::fieldmanager::{self, Types, Writer};
use crate::object::Object;
use crate::registry::conflict;
use crate::resources::Resource;
use crate::served::{self, ScalePaths};

/// Conflicting retries of an unpinned write before giving up.
const RETRIES: usize = 5;

/// The Scale's apiVersion (the version its managers write at).
const SCALE_API_VERSION: &str = "autoscaling/v1";

/// Whether `r` is a custom resource with a `scale` subresource.
pub(super) fn has_scale(r: &Resource) -> bool {
    served::custom(r).is_some_and(|c| c.scale.is_some())
}

/// Where a parent keeps what its Scale shows.
#[derive(Clone, Copy)]
enum Parent {
    /// `spec.replicas`, `status.replicas`, `spec.selector`.
    BuiltIn,
    Custom(&'static ScalePaths),
}

impl Parent {
    fn of(r: &Resource) -> Option<Parent> {
        if let Some(c) = served::custom(r) {
            return c.scale.as_ref().map(Parent::Custom);
        }
        super::subresources::SUBRESOURCES
            .contains(&(r.name, "scale"))
            .then_some(Parent::BuiltIn)
    }

    fn replicas_path(self) -> &'static str {
        match self {
            Parent::BuiltIn => ".spec.replicas",
            Parent::Custom(p) => &p.spec_replicas,
        }
    }

    /// The Scale view of a stored parent.
    fn scale_of(self, o: &Object) -> Result<Value> {
        let v = o.value()?;
        let m = &v["metadata"];
        let (replicas, status_replicas, selector) = match self {
            Parent::BuiltIn => (
                v["spec"]["replicas"].as_i64(),
                v["status"]["replicas"].as_i64(),
                Some(super::subresources::selector_string(&v["spec"]["selector"])),
            ),
            Parent::Custom(p) => (
                lookup(&v, &p.spec_replicas).and_then(Value::as_i64),
                lookup(&v, &p.status_replicas).and_then(Value::as_i64),
                lookup(&v, &p.label_selector)
                    .and_then(Value::as_str)
                    .map(str::to_string),
            ),
        };
        let mut scale = json!({
            "kind": "Scale",
            "apiVersion": SCALE_API_VERSION,
            "metadata": {
                "name": m["name"],
                "uid": m["uid"],
                "resourceVersion": o.resource_version.to_string(),
                "creationTimestamp": m["creationTimestamp"],
            },
            "spec": {"replicas": replicas.unwrap_or(0)},
            "status": {"replicas": status_replicas.unwrap_or(0)},
        });
        if let Some(ns) = m["namespace"].as_str() {
            scale["metadata"]["namespace"] = json!(ns);
        }
        if let Some(sel) = selector {
            scale["status"]["selector"] = json!(sel);
        }
        Ok(scale)
    }

    /// Sets the parent's replicas in `obj`.
    fn set_replicas(self, obj: &mut Value, n: i64) -> Result<()> {
        match self {
            Parent::BuiltIn => {
                obj["spec"]["replicas"] = json!(n);
                Ok(())
            }
            Parent::Custom(p) if set(obj, &p.spec_replicas, json!(n)) => Ok(()),
            Parent::Custom(p) => Err(Error::Internal(format!(
                "the scale subresource's specReplicasPath {:?} is not a field under .spec",
                p.spec_replicas
            ))),
        }
    }

    /// Validates the parent as written through its Scale (`old`: as it was).
    fn validate(
        self,
        s: &AppState,
        r: &'static Resource,
        obj: &Value,
        old: &Value,
        name: &str,
    ) -> Result<()> {
        match self {
            Parent::BuiltIn => super::schema::check(r, obj, Source::Body),
            Parent::Custom(_) => super::crds::validate_object(s, r, obj, Some(old), name),
        }
    }
}

/// GET, PUT and PATCH (server-side apply included) on
/// `…/<plural>/<name>/scale`.
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
    let parent = Parent::of(r).ok_or(Error::NoRoute)?;
    let how = match *method {
        Method::GET => {
            let o = s.registry.get(r, ns, name).await?;
            return Ok(json_response(200, parent.scale_of(&o)?.to_string().into()));
        }
        Method::PATCH if super::apply::is_apply(headers) => {
            let (manager, force) = super::apply::manager_and_force(query)?;
            let body = super::read_body(headers, body, true).await?;
            let config = decode_applied(&body, r, parent, name)?;
            let opts = WriteOptions::parse(query)?;
            let how = How::Apply {
                manager,
                force,
                config,
            };
            return write(s, r, ns, name, parent, how, &body, opts).await;
        }
        Method::PATCH => How::Update {
            patch: Some(super::patch_type(headers)?),
            manager: super::apply::update_manager(query, headers, "PatchOptions")?,
        },
        Method::PUT => How::Update {
            patch: None,
            manager: super::apply::update_manager(query, headers, "UpdateOptions")?,
        },
        _ => {
            return Err(Error::MethodNotAllowed(format!(
                "the server does not allow this method on the requested resource: {method}"
            )))
        }
    };
    let body = super::read_body(headers, body, true).await?;
    let opts = WriteOptions::parse(query)?;
    write(s, r, ns, name, parent, how, &body, opts).await
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

/// The configuration of an apply on the Scale: a Scale, or the parent's
/// kind naming only its replicas (what `kubectl apply --server-side
/// --subresource=scale -f` sends, the manifest's own kind; kube-apiserver
/// refuses it, kubectl being unable to send a Scale), read as the Scale
/// of those replicas. Anything else is kube's 400 `invalid object type`;
/// the name must be the URL's.
fn decode_applied(body: &[u8], r: &Resource, parent: Parent, name: &str) -> Result<Value> {
    let mut config = super::apply::parse_body(body)?;
    let kind = config["kind"].as_str().unwrap_or_default().to_string();
    let api_version = config["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let invalid = |detail: &str| {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
        Error::BadRequest(format!(
            "invalid object type: {group}/{version}, Kind={kind}{detail}"
        ))
    };
    if kind == r.kind && api_version == r.api_version() {
        let replicas = parent.replicas_path();
        let mut fields = Vec::new();
        leaves(&config, String::new(), &mut fields);
        if let Some(other) = fields.iter().find(|f| {
            !matches!(
                f.as_str(),
                ".apiVersion" | ".kind" | ".metadata.name" | ".metadata.namespace"
            ) && *f != replicas
        }) {
            return Err(invalid(&format!(
                ": only {} of a {kind} is applied through its scale subresource, not {}",
                replicas.trim_start_matches('.'),
                other.trim_start_matches('.')
            )));
        }
        let mut scale = json!({
            "apiVersion": SCALE_API_VERSION,
            "kind": "Scale",
            "metadata": config["metadata"].clone(),
            "spec": {},
        });
        if let Some(n) = lookup(&config, replicas) {
            scale["spec"]["replicas"] = n.clone();
        }
        config = scale;
    } else if kind != "Scale" || api_version != SCALE_API_VERSION {
        return Err(invalid(""));
    }
    if !config["metadata"].is_object() {
        config["metadata"] = json!({});
    }
    match config["metadata"].get("name").and_then(Value::as_str) {
        None | Some("") => config["metadata"]["name"] = json!(name),
        Some(n) if n == name => {}
        Some(n) => {
            return Err(Error::BadRequest(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
    }
    Ok(config)
}

/// The simple JSONPaths of `v`'s leaves (scalars and lists).
fn leaves(v: &Value, at: String, out: &mut Vec<String>) {
    match v.as_object() {
        Some(m) => {
            for (k, c) in m {
                leaves(c, format!("{at}.{k}"), out);
            }
        }
        None => out.push(at),
    }
}

/// How the Scale is written.
enum How<'q> {
    /// PUT (`patch: None`) or a non-apply PATCH.
    Update {
        patch: Option<PatchType>,
        manager: String,
    },
    /// A server-side apply of `config`.
    Apply {
        manager: &'q str,
        force: bool,
        config: Value,
    },
}

/// The replicas a written Scale asks for (absent: 0): 422 unless a
/// non-negative 32-bit integer.
fn replicas(scale: &Value, name: &str) -> Result<i64> {
    match &scale["spec"]["replicas"] {
        Value::Null => Ok(0),
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
            }),
    }
}

/// A manager of the Scale (its fields are the Scale's).
fn writer<'a>(manager: &'a str, now: &'a str) -> Writer<'a> {
    Writer {
        manager,
        api_version: SCALE_API_VERSION,
        subresource: "scale",
        types: Types::built_in(),
        now,
    }
}

/// Writes the Scale `how` asks: the parent's replicas and managers
/// change; 200 with the new Scale, 409 with the conflicting managers of
/// an unforced apply.
#[allow(clippy::too_many_arguments)] // the request's parts
async fn write(
    s: &AppState,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    parent: Parent,
    how: How<'_>,
    body: &[u8],
    opts: WriteOptions,
) -> Result<Response> {
    let path = fieldmanager::scale::path(parent.replicas_path());
    let api_version = r.api_version();
    // An applied configuration is checked as it is decoded, before any
    // conflict (kube's strict decoding).
    let applied_warnings = match &how {
        How::Apply { config, .. } => opts.check("Scale", config)?,
        How::Update { .. } => Vec::new(),
    };
    let mut last = None;
    for _ in 0..RETRIES {
        let current = s.registry.get(r, ns, name).await?;
        let live = parent.scale_of(&current)?;
        let old = current.value()?;
        let entries = fieldmanager::decode(&old).unwrap_or_default();
        let on_scale = fieldmanager::scale::to_subresource(&entries, &path);
        let now = super::meta::now_rfc3339();
        let (given, n, entries) = match &how {
            How::Apply {
                manager,
                force,
                config,
            } => {
                let w = writer(manager, &now);
                let done = match fieldmanager::apply(on_scale, &live, config, &w, *force) {
                    Ok(done) => done,
                    Err(conflicts) => {
                        let status = fieldmanager::conflict_status(&conflicts);
                        return Ok(json_response(409, status.to_string().into()));
                    }
                };
                let n = replicas(&done.object, name)?;
                let entries =
                    fieldmanager::scale::to_parent(&entries, &done.entries, &path, &api_version);
                (config.clone(), n, entries)
            }
            How::Update { patch, manager } => {
                let given = match patch {
                    Some(kind) => super::patch::apply(*kind, &live, body)?,
                    None => decode_scale(body)?,
                };
                if !given.is_object() {
                    return Err(Error::BadRequest(
                        "the object provided is not a JSON object".into(),
                    ));
                }
                let n = replicas(&given, name)?;
                let mut after = live.clone();
                after["spec"]["replicas"] = json!(n);
                // Nobody owns the replicas: the update is not tracked.
                let entries = if on_scale.is_empty() {
                    entries
                } else {
                    let w = writer(manager, &now);
                    let done = fieldmanager::update(on_scale, &live, &after, &w);
                    fieldmanager::scale::to_parent(&entries, &done, &path, &api_version)
                };
                (given, n, entries)
            }
        };
        let warnings = match &how {
            How::Apply { .. } => applied_warnings.clone(),
            How::Update { .. } => opts.check("Scale", &given)?,
        };
        let pinned = given["metadata"]["resourceVersion"]
            .as_str()
            .filter(|v| !v.is_empty());
        if pinned.is_some_and(|v| v != current.resource_version.to_string()) {
            return Err(conflict(r, name));
        }
        let mut obj = old.clone();
        parent.set_replicas(&mut obj, n)?;
        let respec = obj != old;
        fieldmanager::set_entries(&mut obj, &entries);
        if obj == old {
            let resp = json_response(200, parent.scale_of(&current)?.to_string().into());
            return Ok(with_warnings(resp, &warnings));
        }
        if respec {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("generation".into(), json!(generation));
            }
        }
        parent.validate(s, r, &obj, &old, name)?;
        if opts.dry_run {
            let dry = Object::from_value(current.key.clone(), &mut obj, current.resource_version)?;
            let resp = json_response(200, parent.scale_of(&dry)?.to_string().into());
            return Ok(with_warnings(resp, &warnings));
        }
        match s
            .registry
            .update(r, ns, name, obj, current.resource_version)
            .await
        {
            Ok(updated) => {
                let resp = json_response(200, parent.scale_of(&updated)?.to_string().into());
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
