//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`): their defaults
//! and validation (kube's messages), their deletion through the
//! `customresourcecleanup.apiextensions.k8s.io` finalizer, and the small
//! controller every apiserver runs over its CRD cache, as kube's
//! apiextensions-apiserver does:
//!
//! 1. rebuild the served set (`served`) from the CRDs — so an apiserver
//!    that restarts, or another one over the same storage, serves every
//!    CRD in storage;
//! 2. accept each CRD's names and mark it `NamesAccepted` and `Established`;
//! 3. for a CRD being deleted: delete its objects through the API (their
//!    own finalizers honoured), then drop the finalizer so the CRD goes.
//!
//! It runs on every CRD event and, while a CRD is being deleted, every
//! half second (its objects' deletions are not CRD events). Apiservers
//! racing on one CRD resolve through `resourceVersion` conflicts; the
//! loser sees the winner's write as its next event.

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::body::Bytes;
use axum::response::Response;
use futures::{FutureExt, StreamExt};
use serde_json::{json, Value};

use super::fields::{FieldValidation, WriteOptions};
use super::meta::now_rfc3339;
use super::{delete, json_response, AppState};
use crate::cache::WatchFrom;
use crate::crd_schema::Schema;
use crate::error::{Cause, Error, Result};
use crate::object::Object;
use crate::resources::Resource;
use crate::selector::Filter;
use crate::served::{self, Definition, Identity};

/// The API group of CustomResourceDefinitions.
pub const GROUP: &str = "apiextensions.k8s.io";

/// The finalizer that holds a deleted CRD until its objects are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// How often the controller looks again while a CRD is being deleted.
const CLEANUP_PAUSE: Duration = Duration::from_millis(500);
/// How often it looks again otherwise (events wake it sooner).
const IDLE_PAUSE: Duration = Duration::from_secs(10);

/// Whether `r` is the CustomResourceDefinitions resource.
pub fn is_crds(r: &Resource) -> bool {
    r.group == GROUP && r.name == "customresourcedefinitions"
}

fn crds() -> &'static Resource {
    Resource::find(GROUP, "customresourcedefinitions").expect("CRDs are served")
}

/// The version objects are stored at: the one with `storage: true`.
fn storage_version(crd: &Value) -> Option<&str> {
    crd["spec"]["versions"]
        .as_array()?
        .iter()
        .find(|v| v["storage"] == true)?["name"]
        .as_str()
}

/// kube's defaults: `singular` (the lower-case kind), `listKind`
/// (`<kind>List`), `conversion.strategy: None`.
fn default(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !kind.is_empty() {
            let empty = |v: Option<&Value>| v.and_then(Value::as_str).is_none_or(str::is_empty);
            if empty(names.get("singular")) {
                names.insert("singular".into(), json!(kind.to_lowercase()));
            }
            if empty(names.get("listKind")) {
                names.insert("listKind".into(), json!(format!("{kind}List")));
            }
        }
    }
    if !spec.get("conversion").is_some_and(Value::is_object) {
        spec.insert("conversion".into(), json!({"strategy": "None"}));
    }
}

/// Defaults, validates and gives a new CRD its first status (no
/// conditions yet, its storage version stored), as kube's strategy does.
pub fn prepare_create(obj: &mut Value) -> Result<()> {
    default(obj);
    validate(obj, None)?;
    let stored: Vec<&str> = storage_version(obj).into_iter().collect();
    obj["status"] = json!({
        "conditions": [],
        "acceptedNames": {"plural": "", "kind": ""},
        "storedVersions": stored,
    });
    Ok(())
}

/// Defaults and validates an update (the status is the stored one); a new
/// storage version joins `status.storedVersions`.
pub fn prepare_update(old: &Value, obj: &mut Value) -> Result<()> {
    default(obj);
    validate(obj, Some(old))?;
    if let Some(v) = storage_version(obj).map(str::to_string) {
        if !obj["status"].is_object() {
            obj["status"] = json!({});
        }
        let stored = &mut obj["status"]["storedVersions"];
        if !stored.is_array() {
            *stored = json!([]);
        }
        if let Some(list) = stored.as_array_mut() {
            if !list.iter().any(|s| s == v.as_str()) {
                list.push(json!(v));
            }
        }
    }
    Ok(())
}

fn cause(field: &str, reason: &'static str, message: String) -> Cause {
    Cause {
        field: field.into(),
        reason,
        message,
    }
}

fn required(field: &str) -> Cause {
    cause(field, "FieldValueRequired", "Required value".into())
}

fn invalid(field: &str, value: &str, detail: &str) -> Cause {
    cause(
        field,
        "FieldValueInvalid",
        format!("Invalid value: {value:?}: {detail}"),
    )
}

fn unsupported(field: &str, value: &str, supported: &[&str]) -> Cause {
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    cause(
        field,
        "FieldValueNotSupported",
        format!(
            "Unsupported value: {value:?}: supported values: {}",
            list.join(", ")
        ),
    )
}

const DNS1035: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_dns1035(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// kube's `ValidateCustomResourceDefinition` (the parts Ballast serves):
/// the name, group, scope, names, versions and printer columns, and on
/// update the immutable scope; 422 with every cause found.
fn validate(obj: &Value, old: Option<&Value>) -> Result<()> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let spec = &obj["spec"];
    let names = &spec["names"];
    let name = text(&obj["metadata"]["name"]);
    let group = text(&spec["group"]);
    let plural = text(&names["plural"]);
    let mut causes = Vec::new();
    if name != format!("{plural}.{group}") {
        causes.push(invalid(
            "metadata.name",
            &name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if group.is_empty() {
        causes.push(required("spec.group"));
    } else if !group.contains('.') {
        causes.push(invalid(
            "spec.group",
            &group,
            "should be a domain with at least one dot",
        ));
    } else if !is_dns1123_subdomain(&group) {
        causes.push(invalid("spec.group", &group, DNS1123_SUBDOMAIN));
    } else if super::discovery::groups().contains(&group.as_str()) {
        causes.push(invalid(
            "spec.group",
            &group,
            "is a group the apiserver serves itself",
        ));
    } else if is_protected(&group)
        && obj["metadata"]["annotations"]["api-approved.kubernetes.io"].is_null()
    {
        causes.push(cause(
            "metadata.annotations[api-approved.kubernetes.io]",
            "FieldValueRequired",
            "Required value: protected groups must have approval annotation \"api-approved.kubernetes.io\", see https://github.com/kubernetes/enhancements/pull/1111".into(),
        ));
    }
    let scope = text(&spec["scope"]);
    match scope.as_str() {
        "" => causes.push(required("spec.scope")),
        "Cluster" | "Namespaced" => {}
        other => causes.push(unsupported("spec.scope", other, &["Cluster", "Namespaced"])),
    }
    if let Some(old) = old {
        let before = text(&old["spec"]["scope"]);
        if !scope.is_empty() && scope != before {
            causes.push(invalid("spec.scope", &scope, "field is immutable"));
        }
    }
    validate_versions(spec, &mut causes);
    validate_names(names, &mut causes);
    causes.extend(crate::crd_schema::check_definition(obj));
    if causes.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid {
        group: GROUP,
        kind: "CustomResourceDefinition",
        name,
        causes,
    })
}

/// Groups only the Kubernetes project may define (kube's
/// `IsProtectedCommunityGroup`).
fn is_protected(group: &str) -> bool {
    ["k8s.io", "kubernetes.io"]
        .iter()
        .any(|d| group == *d || group.ends_with(&format!(".{d}")))
}

fn validate_versions(spec: &Value, causes: &mut Vec<Cause>) {
    let empty = Vec::new();
    let versions = spec["versions"].as_array().unwrap_or(&empty);
    let mut seen: Vec<&str> = Vec::new();
    let mut unique = true;
    for (i, v) in versions.iter().enumerate() {
        let at = format!("spec.versions[{i}]");
        let name = v["name"].as_str().unwrap_or_default();
        if !is_dns1035(name) {
            causes.push(invalid(&format!("{at}.name"), name, DNS1035));
        }
        if seen.contains(&name) {
            unique = false;
        }
        seen.push(name);
        validate_scale(
            &v["subresources"]["scale"],
            &format!("{at}.subresources"),
            causes,
        );
        let columns = v["additionalPrinterColumns"].as_array().unwrap_or(&empty);
        for (j, c) in columns.iter().enumerate() {
            let at = format!("{at}.additionalPrinterColumns[{j}]");
            if c["name"].as_str().is_none_or(str::is_empty) {
                causes.push(required(&format!("{at}.name")));
            }
            let types = ["boolean", "date", "integer", "number", "string"];
            match c["type"].as_str().unwrap_or_default() {
                "" => causes.push(cause(
                    &format!("{at}.type"),
                    "FieldValueRequired",
                    format!("Required value: must be one of {}", types.join(",")),
                )),
                t if !types.contains(&t) => {
                    causes.push(unsupported(&format!("{at}.type"), t, &types))
                }
                _ => {}
            }
            match c["jsonPath"].as_str().unwrap_or_default() {
                "" => causes.push(required(&format!("{at}.jsonPath"))),
                p if !p.starts_with('.') && !p.starts_with("{.") => causes.push(invalid(
                    &format!("{at}.jsonPath"),
                    p,
                    "must be a simple json path starting with .",
                )),
                _ => {}
            }
        }
    }
    if !unique {
        causes.push(invalid(
            "spec.versions",
            &spec["versions"].to_string(),
            "must contain unique version names",
        ));
    }
    let storage = versions.iter().filter(|v| v["storage"] == true).count();
    if storage != 1 {
        causes.push(invalid(
            "spec.versions",
            &spec["versions"].to_string(),
            "must have exactly one version marked as storage version",
        ));
    }
    if !versions.is_empty() && !versions.iter().any(|v| v["served"] == true) {
        causes.push(invalid(
            "spec.versions",
            &spec["versions"].to_string(),
            "must have at least one served version",
        ));
    }
}

/// kube's `validateSimpleJSONPath`: a path in the dot notation, from `.`.
fn simple_json_path(path: &str, field: &str) -> Option<Cause> {
    if path.is_empty() {
        Some(invalid(field, path, "must not be empty"))
    } else if !path.starts_with('.') {
        Some(invalid(
            field,
            path,
            "must be a simple json path starting with .",
        ))
    } else {
        None
    }
}

/// kube's checks of a version's `subresources.scale`: `specReplicasPath`
/// under `.spec.`, `statusReplicasPath` under `.status.`, an optional
/// `labelSelectorPath` under either.
fn validate_scale(scale: &Value, at: &str, causes: &mut Vec<Cause>) {
    if scale.is_null() {
        return;
    }
    let text = |k: &str| scale[k].as_str().unwrap_or_default();
    for (key, under, detail) in [
        (
            "specReplicasPath",
            ".spec.",
            "should be a json path under .spec",
        ),
        (
            "statusReplicasPath",
            ".status.",
            "should be a json path under .status",
        ),
    ] {
        let field = format!("{at}.scale.{key}");
        let path = text(key);
        if path.is_empty() {
            causes.push(required(&field));
        } else if let Some(c) = simple_json_path(path, &field) {
            causes.push(c);
        } else if !path.starts_with(under) {
            causes.push(invalid(&field, path, detail));
        }
    }
    let selector = text("labelSelectorPath");
    if !selector.is_empty() {
        let field = format!("{at}.scale.labelSelectorPath");
        if let Some(c) = simple_json_path(selector, &field) {
            causes.push(c);
        } else if !selector.starts_with(".spec.") && !selector.starts_with(".status.") {
            causes.push(invalid(
                &field,
                selector,
                "should be a json path under either .spec or .status",
            ));
        }
    }
}

/// The `Warning`s a write of the CRD `obj` is answered with: its CEL
/// rules this apiserver cannot evaluate. None for other resources.
pub(super) fn warnings(r: &Resource, obj: &Value) -> Vec<String> {
    if is_crds(r) {
        crate::crd_schema::unevaluated_rules(obj)
    } else {
        Vec::new()
    }
}

fn validate_names(names: &Value, causes: &mut Vec<Cause>) {
    let text = |k: &str| names[k].as_str().unwrap_or_default().to_string();
    for field in ["plural", "singular"] {
        let v = text(field);
        if v.is_empty() {
            causes.push(required(&format!("spec.names.{field}")));
        } else if !is_dns1035(&v) {
            causes.push(invalid(&format!("spec.names.{field}"), &v, DNS1035));
        }
    }
    let mixed = format!("may have mixed case, but should otherwise match: {DNS1035}");
    for field in ["kind", "listKind"] {
        let v = text(field);
        if v.is_empty() {
            causes.push(required(&format!("spec.names.{field}")));
        } else if !is_dns1035(&v.to_lowercase()) {
            causes.push(invalid(&format!("spec.names.{field}"), &v, &mixed));
        } else if field == "kind" && v == "List" {
            causes.push(invalid("spec.names.kind", &v, "kind cannot be List"));
        }
    }
    for (i, short) in names["shortNames"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let v = short.as_str().unwrap_or_default();
        if !is_dns1035(v) {
            causes.push(invalid(&format!("spec.names.shortNames[{i}]"), v, DNS1035));
        }
    }
}

/// DELETE of a CRD: marks it deleted with the cleanup finalizer and a
/// `Terminating` condition (200 with the object); the controller deletes
/// its objects, then the CRD.
pub(super) async fn delete(s: &AppState, name: &str, opts: delete::Options) -> Result<Response> {
    let o = mark_deleted(s, name, &opts).await?;
    Ok(json_response(200, o.json))
}

/// deletecollection of CRDs: each one the selectors match as [`delete`]
/// does it; the list of them as they stand after.
pub(super) async fn delete_collection(
    s: &AppState,
    filter: &Filter,
    opts: delete::Options,
) -> Result<Response> {
    let cache = s.cache(crds());
    cache.wait_fresh(None).await?;
    let mut items = Vec::new();
    for o in cache.list(filter, 0).items {
        match mark_deleted(s, &o.name, &opts).await {
            Ok(o) => items.push(o.value()?),
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let list = json!({"kind": "CustomResourceDefinitionList", "apiVersion": "apiextensions.k8s.io/v1",
        "metadata": {}, "items": items});
    Ok(json_response(200, list.to_string().into()))
}

/// Marks one CRD deleted (see [`delete`]); the object as it stands after.
async fn mark_deleted(s: &AppState, name: &str, opts: &delete::Options) -> Result<Object> {
    let r = crds();
    let mut last = None;
    for _ in 0..5 {
        let current = s.registry.get(r, None, name).await?;
        let mut obj = current.value()?;
        if let Some(uid) = &opts.uid {
            let have = obj["metadata"]["uid"].as_str().unwrap_or_default();
            if uid != have {
                return Err(Error::Conflict {
                    group: r.group,
                    resource: r.name,
                    name: name.to_string(),
                    detail: format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                    ),
                });
            }
        }
        if let Some(rv) = &opts.resource_version {
            if *rv != current.resource_version.to_string() {
                return Err(crate::registry::conflict(r, name));
            }
        }
        if !obj["metadata"]["deletionTimestamp"].is_null() || opts.dry_run {
            return Ok(current);
        }
        let meta = obj["metadata"].as_object_mut().expect("stored metadata");
        meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
        meta.insert("deletionGracePeriodSeconds".into(), json!(0));
        let finalizers = meta.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(list) = finalizers.as_array_mut() {
            if !list.iter().any(|f| f == CLEANUP_FINALIZER) {
                list.push(json!(CLEANUP_FINALIZER));
            }
        }
        set_condition(
            &mut obj,
            "Terminating",
            "InstanceDeletionPending",
            "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
        );
        match s
            .registry
            .update(r, None, name, obj, current.resource_version)
            .await
        {
            Ok(o) => return Ok(o),
            Err(e @ Error::Conflict { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| crate::registry::conflict(r, name)))
}

/// Sets (or replaces) a `True` condition of `type_` in a CRD's status.
fn set_condition(obj: &mut Value, type_: &str, reason: &str, message: &str) {
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    let conditions = &mut obj["status"]["conditions"];
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let list = conditions.as_array_mut().expect("made an array");
    let condition = json!({
        "type": type_,
        "status": "True",
        "lastTransitionTime": now_rfc3339(),
        "reason": reason,
        "message": message,
    });
    match list.iter_mut().find(|c| c["type"] == type_) {
        Some(c) if c["status"] == "True" && c["reason"] == reason => {}
        Some(c) => *c = condition,
        None => list.push(condition),
    }
}

fn condition_true(crd: &Value, type_: &str) -> bool {
    crd["status"]["conditions"].as_array().is_some_and(|l| {
        l.iter()
            .any(|c| c["type"] == type_ && c["status"] == "True")
    })
}

/// The names a CRD's objects are served under (its spec's, defaulted).
fn accepted_names(crd: &Value) -> Value {
    let mut names = crd["spec"]["names"].clone();
    if let Some(m) = names.as_object_mut() {
        let kind = m
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        m.entry("singular")
            .or_insert_with(|| json!(kind.to_lowercase()));
        m.entry("listKind")
            .or_insert_with(|| json!(format!("{kind}List")));
    }
    names
}

/// Called after this apiserver wrote a CRD at `revision`: once its cache
/// has it, the served set and the CRD's status follow at once (the next
/// request, through this apiserver, finds the resource served).
pub(super) async fn settle(s: &AppState, revision: i64) {
    if s.cache(crds()).wait_fresh(Some(revision)).await.is_ok() {
        reconcile(s).await;
    }
}

/// The controller: see the module doc. Ends when the apiserver is gone.
pub(super) async fn run(state: Weak<AppState>) {
    let mut events = None;
    loop {
        let Some(s) = state.upgrade() else {
            return;
        };
        let cache = s.cache(crds());
        if cache.wait_fresh(Some(0)).await.is_err() {
            drop((cache, s));
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        if events.is_none() {
            events = cache
                .watch(WatchFrom::Now, Filter::default(), false, false)
                .ok();
        }
        drop(cache);
        let cleaning = reconcile(&s).await;
        drop(s);
        let pause = if cleaning { CLEANUP_PAUSE } else { IDLE_PAUSE };
        match events.as_mut() {
            Some(stream) => match tokio::time::timeout(pause, stream.next()).await {
                Ok(Some(_)) => while let Some(Some(_)) = stream.next().now_or_never() {},
                Ok(None) => events = None,
                Err(_) => {}
            },
            None => tokio::time::sleep(pause).await,
        }
    }
}

/// Rebuilds the served set from the CRD cache, then accepts new CRDs and
/// cleans up deleted ones; whether any CRD is being deleted.
async fn reconcile(s: &AppState) -> bool {
    let _one = s.served.reconciling.lock().await;
    let listed = s.cache(crds()).list(&Filter::default(), 0).items;
    let crds: Vec<Value> = listed.iter().filter_map(|o| o.value().ok()).collect();
    let previous = s.served.snapshot();
    let mut definitions = Vec::new();
    for crd in &crds {
        let terminating = !crd["metadata"]["deletionTimestamp"].is_null();
        for (id, served) in served::identities(crd).unwrap_or_default() {
            if served && !super::discovery::groups().contains(&id.group.as_str()) {
                let schema = match (
                    previous.schema(served::intern(&id)),
                    Schema::of_version(crd, &id.version),
                ) {
                    (Some(old), Some(new)) if old.root() == new.root() => Some(old),
                    (_, new) => new.map(Arc::new),
                };
                definitions.push(Definition {
                    id,
                    terminating,
                    schema,
                });
            }
        }
    }
    drop(previous);
    s.served.replace(definitions);
    let mut cleaning = false;
    for crd in &crds {
        let name = crd["metadata"]["name"].as_str().unwrap_or_default();
        let done = if crd["metadata"]["deletionTimestamp"].is_null() {
            accept(s, crd).await
        } else {
            cleaning = true;
            clean_up(s, crd).await
        };
        if let Err(e) = done {
            tracing::debug!(error = %e, crd = name, "reconciling a CustomResourceDefinition");
        }
    }
    cleaning
}

/// Accepts a CRD's names: `NamesAccepted` and `Established` true, the
/// names in `status.acceptedNames`, its storage version stored.
async fn accept(s: &AppState, crd: &Value) -> Result<()> {
    let names = accepted_names(crd);
    let storage = storage_version(crd).unwrap_or_default();
    let stored = crd["status"]["storedVersions"]
        .as_array()
        .is_some_and(|l| l.iter().any(|v| v == storage));
    if condition_true(crd, "NamesAccepted")
        && condition_true(crd, "Established")
        && crd["status"]["acceptedNames"] == names
        && stored
    {
        return Ok(());
    }
    let mut obj = crd.clone();
    set_condition(
        &mut obj,
        "NamesAccepted",
        "NoConflicts",
        "no conflicts found",
    );
    set_condition(
        &mut obj,
        "Established",
        "InitialNamesAccepted",
        "the initial names have been accepted",
    );
    obj["status"]["acceptedNames"] = names;
    let versions = &mut obj["status"]["storedVersions"];
    if !versions.is_array() {
        *versions = json!([]);
    }
    if !stored && !storage.is_empty() {
        if let Some(l) = versions.as_array_mut() {
            l.push(json!(storage));
        }
    }
    let (name, rv) = name_and_version(crd)?;
    s.registry.update(crds(), None, &name, obj, rv).await?;
    Ok(())
}

fn name_and_version(crd: &Value) -> Result<(String, i64)> {
    let meta = &crd["metadata"];
    let rv = meta["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Internal("a cached CRD has no resourceVersion".into()))?;
    Ok((meta["name"].as_str().unwrap_or_default().to_string(), rv))
}

/// One step of deleting a CRD: delete its objects (each through the API,
/// so their finalizers hold them), or, once none is left, drop the
/// cleanup finalizer (and with the last finalizer, the CRD).
async fn clean_up(s: &AppState, crd: &Value) -> Result<()> {
    let has_finalizer = crd["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|l| l.iter().any(|f| f == CLEANUP_FINALIZER));
    if !has_finalizer {
        return Ok(());
    }
    let storage = served::identities(crd)
        .unwrap_or_default()
        .into_iter()
        .map(|(id, _)| id)
        .find(|id: &Identity| id.version == id.storage_version);
    if let Some(id) = storage {
        let r = served::intern(&id);
        let page = s.registry.list(r, &Filter::default(), 0, None, 0).await?;
        if !page.items.is_empty() {
            for o in page.items {
                let ns = (!o.namespace.is_empty()).then_some(o.namespace.as_str());
                match delete::delete(s, r, ns, &o.name, delete::Options::default()).await {
                    Ok(_) | Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(());
        }
    }
    let (name, _) = name_and_version(crd)?;
    let current = s.registry.get(crds(), None, &name).await?;
    let mut obj = current.value()?;
    if let Some(list) = obj["metadata"]["finalizers"].as_array_mut() {
        list.retain(|f| f != CLEANUP_FINALIZER);
    }
    if let Some(m) = obj["metadata"].as_object_mut() {
        if m.get("finalizers")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            m.remove("finalizers");
        }
    }
    if delete::deleted_by_update(&obj) {
        s.registry
            .delete(crds(), None, &name, current.resource_version)
            .await?;
    } else {
        s.registry
            .update(crds(), None, &name, obj, current.resource_version)
            .await?;
    }
    Ok(())
}

/// The first step of every write of an object (create, update, patch,
/// `status`): for a custom resource, the fields its schema does not
/// specify are pruned and its defaults filled in, and the pruned paths
/// are the `fieldValidation` findings (kube's strict decoding of a CR);
/// for a built-in kind, the typed check of `fields`. The warnings to
/// send, or 400 under `fieldValidation=Strict`.
pub(super) fn admit_fields(
    s: &AppState,
    r: &Resource,
    opts: &WriteOptions,
    obj: &mut Value,
) -> Result<Vec<String>> {
    let warnings = check_fields(s, r, opts, obj)?;
    if let Some(schema) = super::apply::custom_schema(s, r) {
        schema.default(obj);
    }
    Ok(warnings)
}

/// [`admit_fields`] without the defaults: what an applied configuration
/// gets (its manager owns what it sent, not the defaults).
pub(super) fn check_fields(
    s: &AppState,
    r: &Resource,
    opts: &WriteOptions,
    obj: &mut Value,
) -> Result<Vec<String>> {
    if !r.is_custom() {
        return opts.check(r.kind, obj);
    }
    let Some(schema) = super::apply::custom_schema(s, r) else {
        return Ok(Vec::new());
    };
    let unknown: Vec<String> = schema
        .prune(obj)
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    match opts.validation {
        _ if unknown.is_empty() => Ok(Vec::new()),
        FieldValidation::Strict => Err(Error::BadRequest(format!(
            "strict decoding error: {}",
            unknown.join(", ")
        ))),
        FieldValidation::Warn => Ok(unknown),
        FieldValidation::Ignore => Ok(Vec::new()),
    }
}

/// A custom resource pruned to its schema and defaulted, silently: for an
/// object merged from a checked configuration and the stored object.
pub(super) fn conform(s: &AppState, r: &Resource, obj: &mut Value) {
    if let Some(schema) = super::apply::custom_schema(s, r) {
        schema.prune(obj);
        schema.default(obj);
    }
}

/// Validates a custom resource against its version's schema and CEL
/// rules (`old`: the object an update replaces): 422 with every cause
/// (kube's messages); built-ins pass.
pub(super) fn validate_object(
    s: &AppState,
    r: &Resource,
    obj: &Value,
    old: Option<&Value>,
    name: &str,
) -> Result<()> {
    if !r.is_custom() {
        return Ok(());
    }
    let Some(schema) = s.served.snapshot().schema(r) else {
        return Ok(());
    };
    let causes = schema.validate(obj, old);
    if causes.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid {
        group: r.group,
        kind: r.kind,
        name: name.to_string(),
        causes,
    })
}

/// A stored custom resource as read now: its schema's defaults filled in
/// (kube defaults on every read from storage, so objects stored before a
/// default was added get it too). Other objects, and custom resources
/// without defaults, pass through untouched.
pub(super) fn read_defaulted(s: &AppState, r: &Resource, json: Bytes) -> Bytes {
    if !r.is_custom() {
        return json;
    }
    let Some(schema) = s.served.snapshot().schema(r).filter(|s| s.has_defaults()) else {
        return json;
    };
    let Ok(mut obj) = serde_json::from_slice::<Value>(&json) else {
        return json;
    };
    if schema.default(&mut obj) {
        obj.to_string().into()
    } else {
        json
    }
}

/// [`read_defaulted`] for a decoded object.
pub(super) fn default_read_value(s: &AppState, r: &Resource, obj: &mut Value) {
    if r.is_custom() {
        if let Some(schema) = s.served.snapshot().schema(r) {
            schema.default(obj);
        }
    }
}

/// 405 for a create of a custom resource whose CRD is being deleted.
pub(super) fn refuse_if_terminating(s: &AppState, r: &Resource) -> Result<()> {
    if s.served.snapshot().entry(r).is_some_and(|e| e.terminating) {
        return Err(Error::MethodNotAllowed(
            "create not allowed while custom resource definition is terminating".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crontabs() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "crontabs.stable.example.com"},
            "spec": {
                "group": "stable.example.com",
                "scope": "Namespaced",
                "names": {"plural": "crontabs", "kind": "CronTab", "shortNames": ["ct"]},
                "versions": [{"name": "v1", "served": true, "storage": true,
                              "schema": {"openAPIV3Schema": {"type": "object"}}}],
            },
        })
    }

    fn messages(obj: &Value) -> Vec<String> {
        match validate(obj, None) {
            Ok(()) => vec![],
            Err(Error::Invalid { causes, .. }) => causes
                .into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn defaults_and_a_first_status() {
        let mut crd = crontabs();
        prepare_create(&mut crd).unwrap();
        assert_eq!(crd["spec"]["names"]["singular"], "crontab");
        assert_eq!(crd["spec"]["names"]["listKind"], "CronTabList");
        assert_eq!(crd["spec"]["conversion"]["strategy"], "None");
        assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
    }

    #[test]
    fn invalid_definitions_get_kubes_messages() {
        let mut crd = crontabs();
        default(&mut crd);
        assert!(messages(&crd).is_empty());
        let mut bad = crd.clone();
        bad["metadata"]["name"] = json!("tabs.stable.example.com");
        bad["spec"]["scope"] = json!("Global");
        bad["spec"]["versions"][0]["storage"] = json!(false);
        let m = messages(&bad);
        assert!(m.contains(&"metadata.name: Invalid value: \"tabs.stable.example.com\": must be spec.names.plural+\".\"+spec.group".to_string()), "{m:?}");
        assert!(m.contains(&"spec.scope: Unsupported value: \"Global\": supported values: \"Cluster\", \"Namespaced\"".to_string()), "{m:?}");
        assert!(m
            .iter()
            .any(|x| x.starts_with("spec.versions: Invalid value: ")
                && x.ends_with("must have exactly one version marked as storage version")));
        let mut nodot = crd.clone();
        nodot["spec"]["group"] = json!("example");
        nodot["metadata"]["name"] = json!("crontabs.example");
        assert_eq!(
            messages(&nodot),
            ["spec.group: Invalid value: \"example\": should be a domain with at least one dot"]
        );
        let mut k8s = crd.clone();
        k8s["spec"]["group"] = json!("things.k8s.io");
        k8s["metadata"]["name"] = json!("crontabs.things.k8s.io");
        assert!(messages(&k8s)[0]
            .starts_with("metadata.annotations[api-approved.kubernetes.io]: Required value"));
        let mut scale = crd.clone();
        scale["spec"]["versions"][0]["subresources"] = json!({"scale": {}});
        assert_eq!(
            messages(&scale),
            [
                "spec.versions[0].subresources.scale.specReplicasPath: Required value",
                "spec.versions[0].subresources.scale.statusReplicasPath: Required value",
            ]
        );
        scale["spec"]["versions"][0]["subresources"]["scale"] = json!({
            "specReplicasPath": ".metadata", "statusReplicasPath": "status.replicas",
            "labelSelectorPath": ".labels"});
        assert_eq!(
            messages(&scale),
            [
                "spec.versions[0].subresources.scale.specReplicasPath: Invalid value: \".metadata\": should be a json path under .spec",
                "spec.versions[0].subresources.scale.statusReplicasPath: Invalid value: \"status.replicas\": must be a simple json path starting with .",
                "spec.versions[0].subresources.scale.labelSelectorPath: Invalid value: \".labels\": should be a json path under either .spec or .status",
            ]
        );
        scale["spec"]["versions"][0]["subresources"]["scale"] = json!({
            "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector"});
        assert!(messages(&scale).is_empty());
        let mut scope = crd.clone();
        scope["spec"]["scope"] = json!("Cluster");
        assert!(matches!(
            validate(&scope, Some(&crd)),
            Err(Error::Invalid { .. })
        ));
    }
}
