//! DELETE and deletecollection with Kubernetes' `DeleteOptions`: graceful
//! pod deletion, finalizers, propagation policy, preconditions, dry run.
//!
//! What one DELETE does (kube-apiserver's generic store):
//!
//! ```text
//! pod, bound, not Succeeded/Failed, grace > 0   → deletionTimestamp = now + grace,
//!                                                 deletionGracePeriodSeconds = grace, kept
//! pod already graceful, shorter grace given     → the deadline moves earlier (0 → removed)
//! pod already graceful, no shorter grace        → nothing changes (200 with the object)
//! propagationPolicy Orphan / Foreground         → finalizer "orphan" / "foregroundDeletion"
//! object with finalizers (after the above)      → deletionTimestamp = now, grace 0, kept
//! anything else                                 → removed at once
//! ```
//!
//! An object kept by finalizers goes away when an update leaves its
//! finalizer list empty (see [`deleted_by_update`]); until then no new
//! finalizer may be added.

use std::sync::Arc;

use axum::response::Response;
use serde_json::{json, Value};

use super::meta::{parse_rfc3339, rfc3339, unix_now};
use super::rest::ListQuery;
use super::{json_response, AppState};
use crate::error::{Cause, Error, Result};
use crate::object::Object;
use crate::registry::conflict;
use crate::resources::Resource;

/// Conflicting retries of a delete without a resourceVersion precondition.
pub(crate) const RETRIES: usize = 5;

pub(crate) const ORPHAN: &str = "orphan";
pub(crate) const FOREGROUND: &str = "foregroundDeletion";

/// `propagationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    Orphan,
    Background,
    Foreground,
}

/// The `DeleteOptions` of one request (query parameters, then the body's
/// fields on top, as kube-apiserver reads them).
#[derive(Debug, Default)]
pub(crate) struct Options {
    pub grace: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub policy: Option<Policy>,
    pub dry_run: bool,
}

fn invalid_options(field: &str, message: String) -> Error {
    Error::Invalid {
        group: "meta.k8s.io",
        kind: "DeleteOptions",
        name: String::new(),
        causes: vec![Cause {
            field: field.into(),
            reason: "FieldValueNotSupported",
            message,
        }],
    }
}

fn parse_policy(v: &str) -> Result<Policy> {
    match v {
        "Orphan" => Ok(Policy::Orphan),
        "Background" => Ok(Policy::Background),
        "Foreground" => Ok(Policy::Foreground),
        other => Err(invalid_options(
            "propagationPolicy",
            format!("Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\""),
        )),
    }
}

fn parse_dry_run(v: &str) -> Result<bool> {
    match v {
        "" => Ok(false),
        "All" => Ok(true),
        other => Err(Error::BadRequest(format!(
            "Invalid dry run value: {other:?}: supported values: \"All\""
        ))),
    }
}

impl Options {
    /// Reads the query parameters and the (optional) JSON body.
    pub fn parse(query: &[(String, String)], body: &[u8]) -> Result<Options> {
        let mut o = Options::default();
        let mut orphan_dependents: Option<bool> = None;
        for (k, v) in query {
            match k.as_str() {
                "gracePeriodSeconds" if !v.is_empty() => {
                    o.grace = Some(v.parse().map_err(|_| {
                        Error::BadRequest(format!("invalid gracePeriodSeconds: {v:?}"))
                    })?)
                }
                "propagationPolicy" if !v.is_empty() => o.policy = Some(parse_policy(v)?),
                "orphanDependents" if !v.is_empty() => orphan_dependents = Some(v == "true"),
                "dryRun" => o.dry_run |= parse_dry_run(v)?,
                _ => {}
            }
        }
        if !body.iter().all(u8::is_ascii_whitespace) {
            let b: Value = serde_json::from_slice(body)
                .map_err(|e| Error::BadRequest(format!("invalid DeleteOptions: {e}")))?;
            if !b.is_object() {
                return Err(Error::BadRequest(
                    "invalid DeleteOptions: not a JSON object".into(),
                ));
            }
            match b["kind"].as_str() {
                None | Some("" | "DeleteOptions") => {}
                Some(k) => {
                    return Err(Error::BadRequest(format!(
                        "invalid DeleteOptions: unexpected kind {k:?}"
                    )))
                }
            }
            if let Some(g) = b.get("gracePeriodSeconds").filter(|g| !g.is_null()) {
                o.grace = Some(g.as_i64().ok_or_else(|| {
                    Error::BadRequest(format!("invalid DeleteOptions: gracePeriodSeconds {g}"))
                })?);
            }
            if let Some(p) = b["propagationPolicy"].as_str() {
                o.policy = Some(parse_policy(p)?);
            }
            if let Some(d) = b["orphanDependents"].as_bool() {
                orphan_dependents = Some(d);
            }
            if let Some(list) = b["dryRun"].as_array() {
                for d in list {
                    o.dry_run |= parse_dry_run(d.as_str().unwrap_or("?"))?;
                }
            }
            let pre = &b["preconditions"];
            o.uid = pre["uid"].as_str().map(str::to_string);
            o.resource_version = pre["resourceVersion"].as_str().map(str::to_string);
        }
        if let Some(orphan) = orphan_dependents {
            if o.policy.is_some() {
                return Err(invalid_options(
                    "propagationPolicy",
                    "Invalid value: \"null\": orphanDependents and deletionPropagation cannot be both set".into(),
                ));
            }
            o.policy = Some(if orphan {
                Policy::Orphan
            } else {
                Policy::Foreground
            });
        }
        Ok(o)
    }

    /// 409 when a uid or resourceVersion precondition does not hold.
    pub fn check_preconditions(&self, r: &'static Resource, name: &str, o: &Object) -> Result<()> {
        let fail = |detail: String| Error::Conflict {
            group: r.group,
            resource: r.name,
            name: name.to_string(),
            detail,
        };
        if let Some(uid) = &self.uid {
            let v = o.value()?;
            let have = v["metadata"]["uid"].as_str().unwrap_or_default();
            if uid != have {
                return Err(fail(format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                )));
            }
        }
        if let Some(rv) = &self.resource_version {
            if *rv != o.resource_version.to_string() {
                return Err(fail(format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    o.resource_version
                )));
            }
        }
        Ok(())
    }
}

fn finalizers(v: &Value) -> Vec<String> {
    v["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The finalizers `v` should carry after a delete with `opts` (the
/// garbage collector's `orphan` / `foregroundDeletion`), and whether that
/// differs from what it has.
pub(crate) fn gc_finalizers(v: &Value, opts: &Options) -> (bool, Vec<String>) {
    let old = finalizers(v);
    let has = |f: &str| old.iter().any(|x| x == f);
    let orphan = match opts.policy {
        Some(p) => p == Policy::Orphan,
        None => has(ORPHAN),
    };
    let foreground = match opts.policy {
        Some(p) => p == Policy::Foreground,
        None => !orphan && has(FOREGROUND),
    };
    let mut new: Vec<String> = old
        .iter()
        .filter(|f| *f != ORPHAN && *f != FOREGROUND)
        .cloned()
        .collect();
    if orphan {
        new.push(ORPHAN.into());
    }
    if foreground {
        new.push(FOREGROUND.into());
    }
    let set = |l: &[String]| l.iter().cloned().collect::<std::collections::BTreeSet<_>>();
    (set(&old) != set(&new), new)
}

/// What a DELETE does to the current object.
enum Plan {
    /// Already being deleted gracefully: nothing changes.
    Pending,
    /// Remove it now.
    Now,
    /// Store this version (deletionTimestamp and/or finalizers set).
    Keep(Value),
}

fn plan(r: &'static Resource, v: &Value, opts: &Options) -> Plan {
    let meta = &v["metadata"];
    let now = unix_now();
    let deletion = meta["deletionTimestamp"].as_str();
    let given = opts.grace.map(|g| if g < 0 { 1 } else { g });
    let mut new = v.clone();
    let mut graceful = None;
    if r.name == "pods" {
        match (deletion, meta["deletionGracePeriodSeconds"].as_i64()) {
            (Some(_), None | Some(0)) => {}
            (Some(at), Some(old)) => match given {
                Some(p) if p < old => {
                    let start = parse_rfc3339(at).unwrap_or(now) - old;
                    new["metadata"]["deletionTimestamp"] = json!(rfc3339(start + p));
                    new["metadata"]["deletionGracePeriodSeconds"] = json!(p);
                    graceful = Some(p);
                }
                _ => return Plan::Pending,
            },
            (None, _) => {
                let spec = &v["spec"];
                let mut period = given
                    .or_else(|| spec["terminationGracePeriodSeconds"].as_i64())
                    .unwrap_or(30);
                let phase = v["status"]["phase"].as_str().unwrap_or_default();
                if spec["nodeName"].as_str().is_none_or(str::is_empty)
                    || matches!(phase, "Succeeded" | "Failed")
                {
                    period = 0;
                }
                if period < 0 {
                    period = 1;
                }
                new["metadata"]["deletionTimestamp"] = json!(rfc3339(now + period));
                new["metadata"]["deletionGracePeriodSeconds"] = json!(period);
                graceful = Some(period);
            }
        }
    }
    let (gc_changed, fins) = gc_finalizers(v, opts);
    let pending_finalizers = !finalizers(v).is_empty();
    if graceful.is_none() && !pending_finalizers && !gc_changed {
        return Plan::Now;
    }
    let m = new["metadata"]
        .as_object_mut()
        .expect("objects have metadata");
    if fins.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".into(), json!(fins));
    }
    match graceful {
        Some(grace) => {
            if fins.is_empty() && grace == 0 {
                return Plan::Now;
            }
        }
        None => {
            if fins.is_empty() {
                return Plan::Now;
            }
            let later = deletion.and_then(parse_rfc3339).is_none_or(|at| at > now);
            if later {
                m.insert("deletionTimestamp".into(), json!(rfc3339(now)));
            }
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
        }
    }
    Plan::Keep(new)
}

/// Deletes (or marks for deletion) one object; the object as it stands
/// afterwards (the last version, for one removed).
pub(crate) async fn delete_one(
    s: &AppState,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    opts: &Options,
) -> Result<Object> {
    if r.name == "namespaces" {
        return super::namespaces::delete(s, name, opts).await;
    }
    for _ in 0..RETRIES {
        let current = s.registry.get(r, ns, name).await?;
        opts.check_preconditions(r, name, &current)?;
        let outcome = match plan(r, &current.value()?, opts) {
            Plan::Pending => return Ok(current),
            Plan::Now if opts.dry_run => return Ok(current),
            Plan::Now => s
                .registry
                .delete(r, ns, name, current.resource_version)
                .await
                .map(|_| current.clone()),
            Plan::Keep(mut v) if opts.dry_run => {
                return Object::from_value(current.key.clone(), &mut v, current.resource_version)
            }
            Plan::Keep(v) => {
                s.registry
                    .update(r, ns, name, v, current.resource_version)
                    .await
            }
        };
        match outcome {
            Ok(o) => return Ok(o),
            Err(Error::Conflict { .. }) if opts.resource_version.is_none() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(conflict(r, name))
}

/// DELETE of one object: 200 with the object as it stands afterwards.
pub(crate) async fn delete(
    s: &AppState,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    opts: Options,
) -> Result<Response> {
    let o = delete_one(s, r, ns, name, &opts).await?;
    Ok(json_response(200, o.json))
}

/// DELETE of a collection: every object the selectors match, each as
/// [`delete_one`] does it; answers the list of them as they stand after.
pub(crate) async fn delete_collection(
    s: &AppState,
    r: &'static Resource,
    q: ListQuery,
    opts: Options,
) -> Result<Response> {
    let cache = s.cache(r);
    let items: Vec<Arc<Object>> = match cache.wait_fresh(None).await {
        Ok(_) => cache.list(&q.filter, 0).items,
        Err(Error::Timeout(_)) => s
            .registry
            .list(r, &q.filter, 0, None, 0)
            .await?
            .items
            .into_iter()
            .map(Arc::new)
            .collect(),
        Err(e) => return Err(e),
    };
    let mut out = Vec::with_capacity(items.len());
    for o in items {
        let ns = (!o.namespace.is_empty()).then_some(o.namespace.as_str());
        match delete_one(s, r, ns, &o.name, &opts).await {
            Ok(d) => out.push(d),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let mut body = format!(
        r#"{{"kind":"{}List","apiVersion":"{}","metadata":{{}},"items":["#,
        r.kind,
        r.api_version()
    )
    .into_bytes();
    for (i, o) in out.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&o.json);
    }
    body.extend_from_slice(b"]}");
    Ok(json_response(200, body.into()))
}

/// On an update of an object that is being deleted: `deletionTimestamp`
/// and `deletionGracePeriodSeconds` stay as stored, and no finalizer may be
/// added (422). On any other update neither may be set by the client.
pub(crate) fn check_update(
    r: &'static Resource,
    name: &str,
    old: &Value,
    new: &mut Value,
) -> Result<()> {
    let Some(m) = new["metadata"].as_object_mut() else {
        return Ok(());
    };
    for keep in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
        match old["metadata"].get(keep) {
            Some(v) if !v.is_null() => m.insert(keep.into(), v.clone()),
            _ => m.remove(keep),
        };
    }
    if old["metadata"]["deletionTimestamp"].is_null() {
        return Ok(());
    }
    let before = finalizers(old);
    let added: Vec<String> = finalizers(new)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    if added.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid {
        group: r.group,
        kind: r.kind,
        name: name.to_string(),
        causes: vec![Cause {
            field: "metadata.finalizers".into(),
            reason: "FieldValueForbidden",
            message: format!(
                "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
            ),
        }],
    })
}

/// Whether storing `new` should instead remove the object: it is being
/// deleted, has no finalizers left (a namespace's `spec.finalizers`
/// included) and no grace period pending.
pub(crate) fn deleted_by_update(new: &Value) -> bool {
    let meta = &new["metadata"];
    !meta["deletionTimestamp"].is_null()
        && finalizers(new).is_empty()
        && new["spec"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty())
        && meta["deletionGracePeriodSeconds"].as_i64().unwrap_or(0) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static Resource {
        Resource::find("", "pods").unwrap()
    }

    #[test]
    fn options_from_query_and_body() {
        let q = vec![("gracePeriodSeconds".to_string(), "5".to_string())];
        let o = Options::parse(&q, br#"{"kind":"DeleteOptions","propagationPolicy":"Foreground","preconditions":{"uid":"u"}}"#).unwrap();
        assert_eq!(o.grace, Some(5));
        assert_eq!(o.policy, Some(Policy::Foreground));
        assert_eq!(o.uid.as_deref(), Some("u"));
        let o = Options::parse(&[], br#"{"orphanDependents":true}"#).unwrap();
        assert_eq!(o.policy, Some(Policy::Orphan));
        assert!(Options::parse(&[], br#"{"propagationPolicy":"Sometimes"}"#).is_err());
        assert!(Options::parse(&[], b"[1]").is_err());
        let q = vec![("dryRun".to_string(), "All".to_string())];
        assert!(Options::parse(&q, b"").unwrap().dry_run);
    }

    #[test]
    fn pod_grace_rules() {
        let bound = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n", "terminationGracePeriodSeconds": 30}, "status": {"phase": "Running"}});
        let Plan::Keep(kept) = plan(pods(), &bound, &Options::default()) else {
            panic!("a bound pod is deleted gracefully")
        };
        assert_eq!(kept["metadata"]["deletionGracePeriodSeconds"], 30);
        // Only a shorter grace changes anything; 0 removes it.
        let five = Options {
            grace: Some(5),
            ..Default::default()
        };
        let Plan::Keep(shorter) = plan(pods(), &kept, &five) else {
            panic!("shortened")
        };
        assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 5);
        let longer = Options {
            grace: Some(60),
            ..Default::default()
        };
        assert!(matches!(plan(pods(), &shorter, &longer), Plan::Pending));
        let zero = Options {
            grace: Some(0),
            ..Default::default()
        };
        assert!(matches!(plan(pods(), &shorter, &zero), Plan::Now));
        // Unbound and finished pods go at once.
        let mut unbound = bound.clone();
        unbound["spec"]["nodeName"] = json!("");
        assert!(matches!(
            plan(pods(), &unbound, &Options::default()),
            Plan::Now
        ));
        let mut done = bound.clone();
        done["status"]["phase"] = json!("Succeeded");
        assert!(matches!(
            plan(pods(), &done, &Options::default()),
            Plan::Now
        ));
    }

    #[test]
    fn finalizers_and_policies() {
        let cms = Resource::find("", "configmaps").unwrap();
        let plain = json!({"metadata": {"name": "c"}});
        assert!(matches!(plan(cms, &plain, &Options::default()), Plan::Now));
        let fg = Options {
            policy: Some(Policy::Foreground),
            ..Default::default()
        };
        let Plan::Keep(v) = plan(cms, &plain, &fg) else {
            panic!("kept")
        };
        assert_eq!(v["metadata"]["finalizers"], json!([FOREGROUND]));
        assert_eq!(v["metadata"]["deletionGracePeriodSeconds"], 0);
        // Background drops the GC finalizers again: nothing left, removed.
        let bg = Options {
            policy: Some(Policy::Background),
            ..Default::default()
        };
        assert!(matches!(plan(cms, &v, &bg), Plan::Now));
        let mut other = v.clone();
        other["metadata"]["finalizers"] = json!(["example.com/x"]);
        assert!(matches!(
            plan(cms, &other, &Options::default()),
            Plan::Keep(_)
        ));
        assert!(deleted_by_update(
            &json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 0}})
        ));
        assert!(!deleted_by_update(&other));
    }
}
