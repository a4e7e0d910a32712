//! `POST /api/v1/namespaces/{ns}/pods/{name}/eviction`: a pod deletion
//! that respects the pod's PodDisruptionBudget, as kube-apiserver's
//! `EvictionREST` does it (pkg/registry/core/pod/storage/eviction.go).
//!
//! ```text
//! pod Pending, Succeeded, Failed or being deleted   → deleted, no budget consulted
//! more than one budget selects the pod              → 500 (unsupported)
//! no budget                                         → deleted
//! pod not Ready, and the budget is healthy enough   → deleted if still at the version read
//!   (or unhealthyPodEvictionPolicy: AlwaysAllow)      (else 429: the budget is being processed)
//! budget's observedGeneration behind its generation → 429, retry
//! budget's disruptionsAllowed is 0                  → 429 TooManyRequests, cause DisruptionBudget
//! otherwise                                         → disruptionsAllowed - 1 and
//!                                                     disruptedPods[pod] = now, written with the
//!                                                     budget's resourceVersion (retried on a
//!                                                     conflict), then the pod is deleted
//! ```
//!
//! The Eviction's `deleteOptions` (grace period, preconditions, dryRun)
//! govern the deletion; a dry run decides everything and writes nothing.
//! Both policy/v1 and policy/v1beta1 Eviction bodies are accepted.

use axum::body::Bytes;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use serde_json::{json, Value};

use super::delete::{delete_one, Options};
use super::meta::now_rfc3339;
use super::{json_response, AppState};
use crate::error::{Error, Result};
use crate::object::Object;
use crate::resources::Resource;
use crate::selector::Filter;

/// More entries than this in a budget's `disruptedPods` means the
/// controller is not keeping up: evictions are refused (kube's
/// `MaxDisruptedPodSize`).
const MAX_DISRUPTED_PODS: usize = 2000;

/// Conflicting writes retried before giving up (kube's `EvictionsRetry`
/// steps).
const RETRIES: usize = 20;

/// The 429 message Kubernetes gives when a budget stands in the way.
const VIOLATES_BUDGET: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

fn pods() -> &'static Resource {
    Resource::find("", "pods").expect("pods are served")
}

fn budgets() -> &'static Resource {
    Resource::find("policy", "poddisruptionbudgets").expect("poddisruptionbudgets are served")
}

/// A 429 `TooManyRequests` Status with a `DisruptionBudget` cause, as
/// `errors.NewTooManyRequests` writes it (with `Retry-After` when > 0).
fn too_many_requests(cause: String, retry_after: u64) -> Response {
    let mut details = json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]});
    if retry_after > 0 {
        details["retryAfterSeconds"] = json!(retry_after);
    }
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": VIOLATES_BUDGET, "reason": "TooManyRequests",
        "details": details, "code": 429,
    });
    let mut resp = json_response(429, status.to_string().into());
    if retry_after > 0 {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    }
    resp
}

/// The 429 of a budget the controller has not caught up with.
fn still_processing(pdb: &str) -> Response {
    too_many_requests(
        format!("The disruption budget {pdb} is still being processed by the server."),
        10,
    )
}

fn success() -> Response {
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
    json_response(201, status.to_string().into())
}

/// Reads the Eviction body and its delete options (the request's
/// `dryRun` merged in, as kube's `propagateDryRun`).
fn parse(name: &str, query: &[(String, String)], body: &[u8]) -> Result<Options> {
    let eviction: Value = serde_json::from_slice(body).map_err(|e| {
        Error::BadRequest(format!(
            "the object provided is unrecognized or malformed: json parse error: {e}"
        ))
    })?;
    if !eviction.is_object() {
        return Err(Error::BadRequest(
            "the object provided is not a JSON object".into(),
        ));
    }
    match eviction["kind"].as_str().unwrap_or_default() {
        "" | "Eviction" => {}
        k => {
            return Err(Error::BadRequest(format!(
            "not a Eviction object: the kind of the provided object ({k}) does not match Eviction"
        )))
        }
    }
    match eviction["apiVersion"].as_str().unwrap_or_default() {
        "" | "policy/v1" | "policy/v1beta1" => {}
        v => {
            return Err(Error::BadRequest(format!(
            "the API version in the data ({v}) does not match the expected API version (policy/v1)"
        )))
        }
    }
    if eviction["metadata"]["name"].as_str() != Some(name) {
        return Err(Error::BadRequest(
            "name in URL does not match name in Eviction object".into(),
        ));
    }
    let delete_options = match &eviction["deleteOptions"] {
        Value::Null => Vec::new(),
        v => v.to_string().into_bytes(),
    };
    let dry_run: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| k == "dryRun")
        .cloned()
        .collect();
    let given_in_body = eviction["deleteOptions"]["dryRun"]
        .as_array()
        .is_some_and(|d| !d.is_empty());
    if given_in_body && !dry_run.is_empty() {
        let body_all = eviction["deleteOptions"]["dryRun"] == json!(["All"]);
        let query_all = dry_run.iter().all(|(_, v)| v == "All");
        if body_all != query_all {
            return Err(Error::BadRequest(format!(
                "Non-matching dry-run options in request and content: {:?} and {}",
                dry_run.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(),
                eviction["deleteOptions"]["dryRun"]
            )));
        }
    }
    Options::parse(&dry_run, &delete_options)
}

fn copy(o: &Options) -> Options {
    Options {
        grace: o.grace,
        uid: o.uid.clone(),
        resource_version: o.resource_version.clone(),
        policy: o.policy,
        dry_run: o.dry_run,
    }
}

/// Whether the pod's condition `Ready` is `True`.
fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or_default()
}

fn being_deleted(pod: &Value) -> bool {
    !pod["metadata"]["deletionTimestamp"].is_null()
}

/// Pods whose eviction disrupts nothing a budget counts: not yet running,
/// finished, or already going (kube's `canIgnorePDB`).
fn can_ignore_budget(pod: &Value) -> bool {
    matches!(phase(pod), "Pending" | "Succeeded" | "Failed") || being_deleted(pod)
}

/// The budgets of the pod's namespace whose selector matches it; a budget
/// with an empty or missing selector matches nothing here.
async fn budgets_of(s: &AppState, ns: &str, pod: &Value) -> Result<Vec<Object>> {
    let filter = Filter {
        namespace: Some(ns.to_string()),
        ..Filter::default()
    };
    let page = s.registry.list(budgets(), &filter, 0, None, 0).await?;
    let mut matching = Vec::new();
    for o in page.items {
        let selector = &o.value()?["spec"]["selector"];
        let empty = selector["matchLabels"]
            .as_object()
            .is_none_or(|m| m.is_empty())
            && selector["matchExpressions"]
                .as_array()
                .is_none_or(|e| e.is_empty());
        if !empty && super::daemonsets::selector_matches(selector, &pod["metadata"]["labels"]) {
            matching.push(o);
        }
    }
    Ok(matching)
}

/// Sets the `DisruptionAllowed` condition to match `disruptionsAllowed`
/// (kube's `UpdateDisruptionAllowedCondition`).
fn set_disruption_allowed(status: &mut Value) {
    let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0) > 0;
    let (state, reason) = if allowed {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let observed = status["observedGeneration"].clone();
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let conditions = status["conditions"].as_array_mut().expect("made an array");
    let now = now_rfc3339();
    match conditions
        .iter_mut()
        .find(|c| c["type"] == "DisruptionAllowed")
    {
        Some(c) => {
            if c["status"] != state {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!(state);
            c["reason"] = json!(reason);
            c["message"] = json!("");
            c["observedGeneration"] = observed;
        }
        None => conditions.push(json!({
            "type": "DisruptionAllowed", "status": state, "reason": reason, "message": "",
            "observedGeneration": observed, "lastTransitionTime": now,
        })),
    }
}

/// What the budget says about evicting `pod`.
enum Verdict {
    /// Allowed; the budget was charged (or need not be).
    Go,
    /// Refused: the answer to send.
    Refuse(Response),
}

/// Checks the budget and charges it one disruption (kube's
/// `checkAndDecrement`), retrying on a conflicting write with a fresh read.
async fn charge(
    s: &AppState,
    ns: &str,
    pod_name: &str,
    mut pdb: Object,
    dry_run: bool,
) -> Result<Verdict> {
    for _ in 0..RETRIES {
        let mut v = pdb.value()?;
        let name = pdb.name.clone();
        let status = &v["status"];
        let generation = v["metadata"]["generation"].as_i64().unwrap_or(0);
        if status["observedGeneration"].as_i64().unwrap_or(0) < generation {
            return Ok(Verdict::Refuse(still_processing(&name)));
        }
        let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
        let forbidden = |detail: &str| Error::Forbidden {
            group: "policy",
            resource: "poddisruptionbudget",
            name: name.clone(),
            detail: detail.into(),
        };
        if allowed < 0 {
            return Err(forbidden("pdb disruptions allowed is negative"));
        }
        let disrupted = status["disruptedPods"].as_object().map_or(0, |m| m.len());
        if disrupted > MAX_DISRUPTED_PODS {
            return Err(forbidden(
                "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
            ));
        }
        if allowed == 0 {
            return Ok(Verdict::Refuse(too_many_requests(
                format!(
                    "The disruption budget {name} needs {} healthy pods and has {} currently",
                    status["desiredHealthy"].as_i64().unwrap_or(0),
                    status["currentHealthy"].as_i64().unwrap_or(0)
                ),
                0,
            )));
        }
        if dry_run {
            return Ok(Verdict::Go);
        }
        let status = &mut v["status"];
        status["disruptionsAllowed"] = json!(allowed - 1);
        if allowed == 1 {
            set_disruption_allowed(status);
        }
        if !status["disruptedPods"].is_object() {
            status["disruptedPods"] = json!({});
        }
        status["disruptedPods"][pod_name] = json!(now_rfc3339());
        match s
            .registry
            .update(budgets(), Some(ns), &name, v, pdb.resource_version)
            .await
        {
            Ok(_) => return Ok(Verdict::Go),
            Err(Error::Conflict { .. }) => {
                pdb = s.registry.get(budgets(), Some(ns), &name).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Timeout(format!(
        "couldn't update PodDisruptionBudget {:?} due to conflicts",
        pdb.name
    )))
}

/// POST `…/pods/{name}/eviction`: 201 with a Success Status once the pod
/// is deleted (or marked for its graceful deletion); see the module doc.
pub(crate) async fn evict(
    s: &AppState,
    ns: &str,
    name: &str,
    query: &[(String, String)],
    body: Bytes,
) -> Result<Response> {
    let mut opts = parse(name, query, &body)?;
    let pinned = opts.resource_version.is_some();
    let mut pod = None;
    for _ in 0..RETRIES {
        let current = s.registry.get(pods(), Some(ns), name).await?;
        let v = current.value()?;
        if !can_ignore_budget(&v) {
            pod = Some((current, v));
            break;
        }
        // A pod that is not yet (or no longer) running is deleted as it
        // is; one that is Pending is pinned to the version read, so it
        // cannot have become Ready in between.
        let enforce = !matches!(phase(&v), "Succeeded" | "Failed") && !being_deleted(&v);
        let mut direct = copy(&opts);
        if enforce && !pinned {
            direct.resource_version = Some(current.resource_version.to_string());
        }
        match delete_one(s, pods(), Some(ns), name, &direct).await {
            Ok(_) => return Ok(success()),
            Err(Error::Conflict { .. }) if !pinned => continue,
            Err(e) => return Err(e),
        }
    }
    let Some((current, pod)) = pod else {
        return Err(crate::registry::conflict(pods(), name));
    };
    let mut matching = budgets_of(s, ns, &pod).await?;
    let mut pin_pod = false;
    let mut budget_name = String::new();
    if matching.len() > 1 {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            "code": 500,
        });
        return Ok(json_response(500, status.to_string().into()));
    }
    if let Some(pdb) = matching.pop() {
        budget_name = pdb.name.clone();
        let v = pdb.value()?;
        let status = &v["status"];
        let (current_healthy, desired_healthy) = (
            status["currentHealthy"].as_i64().unwrap_or(0),
            status["desiredHealthy"].as_i64().unwrap_or(0),
        );
        let always_allow = v["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
        // An unready pod does not count as healthy: deleting it costs the
        // budget nothing, when the policy or the budget's health allows.
        if !ready(&pod)
            && (always_allow || (current_healthy >= desired_healthy && desired_healthy > 0))
        {
            pin_pod = true;
        } else {
            match charge(s, ns, name, pdb, opts.dry_run).await? {
                Verdict::Go => {}
                Verdict::Refuse(resp) => return Ok(resp),
            }
        }
    }
    let pinned_here = pin_pod && !pinned;
    if pinned_here {
        opts.resource_version = Some(current.resource_version.to_string());
    }
    match delete_one(s, pods(), Some(ns), name, &opts).await {
        Ok(_) => Ok(success()),
        // The unready pod changed (it may be Ready now): the client retries.
        Err(Error::Conflict { .. }) if pinned_here => Ok(still_processing(&budget_name)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eviction(name: &str) -> Vec<u8> {
        json!({"apiVersion": "policy/v1", "kind": "Eviction",
               "metadata": {"name": name, "namespace": "default"}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn bodies_are_checked_as_kubernetes_does() {
        assert!(parse("web-0", &[], &eviction("web-0")).is_ok());
        let e = parse("web-1", &[], &eviction("web-0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "name in URL does not match name in Eviction object"
        );
        let beta = json!({"apiVersion": "policy/v1beta1", "kind": "Eviction",
                          "metadata": {"name": "p"}, "deleteOptions": {"gracePeriodSeconds": 0}});
        let o = parse("p", &[], beta.to_string().as_bytes()).unwrap();
        assert_eq!(o.grace, Some(0));
        let apps = json!({"apiVersion": "apps/v1", "kind": "Eviction", "metadata": {"name": "p"}});
        assert_eq!(
            parse("p", &[], apps.to_string().as_bytes())
                .unwrap_err()
                .code(),
            400
        );
        let dry = [("dryRun".to_string(), "All".to_string())];
        assert!(parse("p", &dry, &eviction("p")).unwrap().dry_run);
        let mismatch = json!({"kind": "Eviction", "metadata": {"name": "p"},
                              "deleteOptions": {"dryRun": ["All"]}});
        let empty = [("dryRun".to_string(), String::new())];
        assert!(parse("p", &empty, mismatch.to_string().as_bytes())
            .unwrap_err()
            .to_string()
            .starts_with("Non-matching dry-run options"));
    }

    #[test]
    fn terminal_pending_and_deleting_pods_skip_the_budget() {
        assert!(can_ignore_budget(&json!({"status": {"phase": "Pending"}})));
        assert!(can_ignore_budget(&json!({"status": {"phase": "Failed"}})));
        assert!(can_ignore_budget(
            &json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Running"}})
        ));
        assert!(!can_ignore_budget(&json!({"status": {"phase": "Running"}})));
    }

    #[test]
    fn the_condition_follows_the_allowed_count() {
        let mut status = json!({"disruptionsAllowed": 0, "observedGeneration": 3});
        set_disruption_allowed(&mut status);
        let c = &status["conditions"][0];
        assert_eq!(
            (&c["type"], &c["status"], &c["reason"]),
            (
                &json!("DisruptionAllowed"),
                &json!("False"),
                &json!("InsufficientPods")
            )
        );
        assert_eq!(c["observedGeneration"], 3);
        status["disruptionsAllowed"] = json!(1);
        set_disruption_allowed(&mut status);
        assert_eq!(status["conditions"][0]["reason"], "SufficientPods");
        assert_eq!(status["conditions"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn refusals_are_429_with_the_budget_cause() {
        let resp = too_many_requests(
            "The disruption budget web needs 2 healthy pods and has 2 currently".into(),
            0,
        );
        assert_eq!(resp.status(), 429);
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
        let resp = still_processing("web");
        assert_eq!(resp.headers()[header::RETRY_AFTER], "10");
    }
}
