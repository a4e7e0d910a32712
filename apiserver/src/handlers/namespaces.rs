//! Namespace lifecycle, as kube-apiserver keeps it: the default
//! namespaces exist from the start, the built-in ones cannot be deleted,
//! nothing new is created in a terminating namespace, and a namespace goes
//! only once its finalizers are done.
//!
//! ```text
//! POST   namespaces            spec.finalizers: [kubernetes], phase Active
//! DELETE namespaces/x          deletionTimestamp, phase Terminating
//!                              (creates in x now answer 403); nothing else —
//!                              the namespace controller deletes x's objects
//!                              through the API, with their grace periods
//! PUT    namespaces/x/finalize the controller drops `kubernetes` from
//!                              spec.finalizers; with no finalizers left
//!                              (spec or metadata) x is deleted
//! ```
//! A namespace created without spec finalizers is deleted at once.
//! `metadata.finalizers` (`orphan`, `foregroundDeletion`) keep it for the
//! garbage collector as for any object; an update dropping the last one
//! deletes it, again only once `spec.finalizers` is empty.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use super::delete::{gc_finalizers, Options};
use super::meta::{new_uid, now_rfc3339};
use super::AppState;
use crate::error::{Cause, Error, Result};
use crate::object::Object;
use crate::registry::conflict;
use crate::resources::Resource;

/// The namespaces kube-apiserver creates at start.
pub const DEFAULT_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Namespaces that may never be deleted (kube's NamespaceLifecycle
/// admission and its immortal namespaces).
const IMMORTAL: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// The finalizer of the namespace controller.
pub const KUBERNETES_FINALIZER: &str = "kubernetes";

fn spec_finalizers(v: &Value) -> Vec<Value> {
    v["spec"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Whether a deleting namespace `v` has nothing left to wait for.
fn finished(v: &Value) -> bool {
    spec_finalizers(v).is_empty()
        && v["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty())
}

/// An update of a namespace keeps its `spec.finalizers` (only `/finalize`
/// changes them, as kube's namespace strategy).
pub(crate) fn keep_spec_finalizers(old: &Value, new: &mut Value) {
    match old["spec"].get("finalizers") {
        Some(f) => {
            if !new["spec"].is_object() {
                new["spec"] = json!({});
            }
            new["spec"]["finalizers"] = f.clone();
        }
        None => {
            if let Some(spec) = new["spec"].as_object_mut() {
                spec.remove("finalizers");
            }
        }
    }
}

/// A standard finalizer name (`kubernetes`) or a fully qualified one
/// (`example.com/name`), as kube's `validateFinalizerName`.
fn finalizer_name_ok(f: &str) -> bool {
    if f == KUBERNETES_FINALIZER {
        return true;
    }
    let Some((prefix, name)) = f.split_once('/') else {
        return false;
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let qualified = |n: &str| {
        !n.is_empty()
            && n.len() <= 63
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && n.as_bytes()[0].is_ascii_alphanumeric()
            && n.as_bytes()[n.len() - 1].is_ascii_alphanumeric()
    };
    prefix.len() <= 253 && prefix.split('.').all(label) && qualified(name)
}

/// Creates the default namespaces that are missing; retries (forever, with
/// a capped backoff) until storage answers, then marks the state ready.
pub(crate) async fn bootstrap(s: &AppState) {
    let ns = Resource::namespaces();
    let mut backoff = Duration::from_millis(50);
    for name in DEFAULT_NAMESPACES {
        loop {
            let obj = json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": name,
                    "uid": new_uid(),
                    "creationTimestamp": now_rfc3339(),
                    "labels": {"kubernetes.io/metadata.name": name},
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            });
            let done = match s.registry.get(ns, None, name).await {
                Ok(_) => true,
                Err(Error::NotFound { .. }) => match s.registry.create(ns, None, name, obj).await {
                    Ok(_) | Err(Error::AlreadyExists { .. }) => true,
                    Err(e) => {
                        tracing::debug!(error = %e, name, "creating a default namespace");
                        false
                    }
                },
                Err(e) => {
                    tracing::debug!(error = %e, name, "reading a default namespace");
                    false
                }
            };
            if done {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
    s.namespaces_ready.store(true, Ordering::Release);
}

/// 404 when `ns` does not exist; 403 when it is terminating (for creates).
pub(crate) async fn require_active(
    s: &AppState,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
) -> Result<()> {
    let Some(ns) = ns else { return Ok(()) };
    let o = s.registry.get(Resource::namespaces(), None, ns).await?;
    let v = o.value()?;
    if !v["metadata"]["deletionTimestamp"].is_null() || v["status"]["phase"] == "Terminating" {
        return Err(Error::Forbidden {
            group: r.group,
            resource: r.name,
            name: name.to_string(),
            detail: format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        });
    }
    Ok(())
}

/// DELETE of a namespace (see the module doc); answers the namespace as
/// last stored (phase Terminating).
pub(crate) async fn delete(s: &AppState, name: &str, opts: &Options) -> Result<Object> {
    let r = Resource::namespaces();
    if IMMORTAL.contains(&name) {
        return Err(Error::Forbidden {
            group: "",
            resource: r.name,
            name: name.to_string(),
            detail: "this namespace may not be deleted".into(),
        });
    }
    // 1. Mark it terminating (once).
    let mut marked = None;
    for _ in 0..super::delete::RETRIES {
        let current = s.registry.get(r, None, name).await?;
        opts.check_preconditions(r, name, &current)?;
        let mut v = current.value()?;
        let (changed, finalizers) = gc_finalizers(&v, opts);
        if !v["metadata"]["deletionTimestamp"].is_null() && !changed {
            marked = Some(current);
            break;
        }
        if v["metadata"]["deletionTimestamp"].is_null() {
            v["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            v["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        }
        v["metadata"]["finalizers"] = json!(finalizers);
        if !v["status"].is_object() {
            v["status"] = json!({});
        }
        v["status"]["phase"] = json!("Terminating");
        if opts.dry_run {
            return Object::from_value(current.key.clone(), &mut v, current.resource_version);
        }
        match s
            .registry
            .update(r, None, name, v, current.resource_version)
            .await
        {
            Ok(o) => {
                marked = Some(o);
                break;
            }
            Err(Error::Conflict { .. }) if opts.resource_version.is_none() => continue,
            Err(e) => return Err(e),
        }
    }
    let marked = marked.ok_or_else(|| conflict(r, name))?;
    if opts.dry_run {
        return Ok(marked);
    }
    // 2. Nothing to wait for: gone now. Otherwise the namespace controller
    //    empties it and finalizes it.
    let v = marked.value()?;
    if !finished(&v) {
        return Ok(marked);
    }
    match s
        .registry
        .delete(r, None, name, marked.resource_version)
        .await
    {
        Ok(_) | Err(Error::NotFound { .. }) => Ok(marked),
        // Changed meanwhile (e.g. finalized by someone else): as stored.
        Err(Error::Conflict { .. }) => Ok(marked),
        Err(e) => Err(e),
    }
}

/// Serves `PUT namespaces/{name}/finalize` (see [`finalize`]).
pub(crate) async fn serve_finalize(
    s: &AppState,
    name: &str,
    body: &[u8],
) -> Result<axum::response::Response> {
    let o = finalize(s, name, body).await?;
    Ok(super::json_response(200, o.json))
}

/// `PUT namespaces/{name}/finalize`: replaces `spec.finalizers` with the
/// body's (nothing else of the body is taken); a deleting namespace left
/// with no finalizers is deleted. Answers the namespace as written.
pub(crate) async fn finalize(s: &AppState, name: &str, body: &[u8]) -> Result<Object> {
    let r = Resource::namespaces();
    let given: Value = serde_json::from_slice(body).map_err(|e| {
        Error::BadRequest(format!(
            "the object provided is unrecognized or malformed: json parse error: {e}"
        ))
    })?;
    if !given.is_object() {
        return Err(Error::BadRequest(
            "the object provided is unrecognized or malformed: expected a Namespace".into(),
        ));
    }
    if let Some(n) = given["metadata"]["name"].as_str().filter(|n| !n.is_empty()) {
        if n != name {
            return Err(Error::BadRequest(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
    }
    let wanted = match &given["spec"]["finalizers"] {
        Value::Null => Vec::new(),
        Value::Array(a) => a.clone(),
        other => {
            return Err(Error::BadRequest(format!(
                "the object provided is unrecognized or malformed: spec.finalizers: expected an array, got {other}"
            )))
        }
    };
    let mut causes = Vec::new();
    for (i, f) in wanted.iter().enumerate() {
        let ok = f.as_str().is_some_and(finalizer_name_ok);
        if !ok {
            causes.push(Cause {
                field: format!("spec.finalizers[{i}]"),
                reason: "FieldValueInvalid",
                message: format!(
                    "Invalid value: {f}: name is neither a standard finalizer name nor is it fully qualified"
                ),
            });
        }
    }
    if !causes.is_empty() {
        return Err(Error::Invalid {
            group: "",
            kind: r.kind,
            name: name.to_string(),
            causes,
        });
    }
    let pinned = given["metadata"]["resourceVersion"]
        .as_str()
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    for _ in 0..super::delete::RETRIES {
        let current = s.registry.get(r, None, name).await?;
        if pinned
            .as_deref()
            .is_some_and(|v| v != current.resource_version.to_string())
        {
            return Err(conflict(r, name));
        }
        let mut v = current.value()?;
        if !v["spec"].is_object() {
            v["spec"] = json!({});
        }
        v["spec"]["finalizers"] = Value::Array(wanted.clone());
        let result = if !v["metadata"]["deletionTimestamp"].is_null() && finished(&v) {
            s.registry
                .delete(r, None, name, current.resource_version)
                .await
                .and_then(|rev| Object::from_value(current.key.clone(), &mut v, rev))
        } else {
            s.registry
                .update(r, None, name, v, current.resource_version)
                .await
        };
        match result {
            Ok(o) => return Ok(o),
            Err(Error::Conflict { .. }) if pinned.is_none() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(conflict(r, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finalizer_names() {
        for ok in [
            "kubernetes",
            "example.com/x",
            "a.b/c_d.e",
            "foo.io/Mixed-1",
            "foo/x",
        ] {
            assert!(finalizer_name_ok(ok), "{ok}");
        }
        for bad in [
            "",
            "foo",
            "example.com/",
            "/x",
            "Ex.com/x",
            "a.b/-x",
            "a/b/c",
        ] {
            assert!(!finalizer_name_ok(bad), "{bad}");
        }
    }

    #[test]
    fn updates_keep_spec_finalizers() {
        let old = json!({"spec": {"finalizers": ["kubernetes"]}});
        let mut new = json!({"metadata": {}, "spec": {"finalizers": []}});
        keep_spec_finalizers(&old, &mut new);
        assert_eq!(new["spec"]["finalizers"], json!(["kubernetes"]));
        let mut new = json!({"metadata": {}});
        keep_spec_finalizers(&old, &mut new);
        assert_eq!(new["spec"]["finalizers"], json!(["kubernetes"]));
        let mut new = json!({"spec": {"finalizers": ["example.com/x"]}});
        keep_spec_finalizers(&json!({"spec": {}}), &mut new);
        assert_eq!(new["spec"], json!({}));
        assert!(finished(
            &json!({"metadata": {"finalizers": []}, "spec": {}})
        ));
        assert!(!finished(&json!({"spec": {"finalizers": ["kubernetes"]}})));
        assert!(!finished(&json!({"metadata": {"finalizers": ["orphan"]}})));
    }
}
