//! Namespace lifecycle, as kube-apiserver and its namespace controller
//! keep it: the default namespaces exist from the start, the immortal ones
//! cannot be deleted, nothing new is created in a terminating namespace,
//! and deleting a namespace deletes what is in it.
//!
//! Deleting `ns` (here, synchronously, in place of the namespace
//! controller): the namespace gets `deletionTimestamp` and phase
//! `Terminating` (creates into it now answer 403), every object in it is
//! removed, the `kubernetes` finalizer is dropped from `spec.finalizers`,
//! and the namespace itself is deleted unless `metadata.finalizers` (e.g.
//! `orphan`/`foregroundDeletion`) keep it for the garbage collector.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::delete::{gc_finalizers, Options};
use super::meta::{new_uid, now_rfc3339};
use super::AppState;
use crate::error::{Error, Result};
use crate::object::Object;
use crate::registry::conflict;
use crate::resources::{Resource, RESOURCES};

/// The namespaces kube-apiserver creates at start.
pub const DEFAULT_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Namespaces that may never be deleted (kube's NamespaceLifecycle).
const IMMORTAL: [&str; 3] = ["default", "kube-system", "kube-public"];

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
    // 2. Delete the contents.
    for res in RESOURCES.iter().filter(|x| x.namespaced) {
        s.registry.delete_namespace_contents(res, name).await?;
    }
    // 3. Drop the `kubernetes` finalizer; delete unless metadata finalizers remain.
    for _ in 0..super::delete::RETRIES {
        let current = match s.registry.get(r, None, name).await {
            Ok(o) => o,
            Err(Error::NotFound { .. }) => return Ok(marked),
            Err(e) => return Err(e),
        };
        let mut v = current.value()?;
        let has_meta_finalizers = v["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_meta_finalizers {
            if let Some(spec) = v["spec"].as_object_mut() {
                spec.remove("finalizers");
            }
            match s
                .registry
                .update(r, None, name, v, current.resource_version)
                .await
            {
                Ok(o) => return Ok(o),
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        match s
            .registry
            .delete(r, None, name, current.resource_version)
            .await
        {
            Ok(_) => return Ok(current),
            Err(Error::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(conflict(r, name))
}
