//! create, get, list, update, delete.

use std::sync::Arc;

use axum::body::Bytes;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::apply::Record;
use super::fields::{with_warnings, WriteOptions};
use super::meta::{name_suffix, new_uid, now_rfc3339};
use super::patch::PatchType;
use super::schema::{self, Source};
use super::validation::{default, validate, validate_change};
use super::{json_response, AppState};
use crate::auth::User;
use crate::error::{Error, Result};
use crate::object::Object;
use crate::registry::conflict;
use crate::resources::Resource;
use crate::selector::{FieldSelector, Filter, LabelSelector};

/// Conflicting retries of a patch before giving up.
const PATCH_RETRIES: usize = 5;

/// The query parameters of list and watch.
#[derive(Debug)]
pub(crate) struct ListQuery {
    pub filter: Filter,
    pub watch: bool,
    pub resource_version: Option<i64>,
    pub exact: bool,
    pub limit: usize,
    pub continue_token: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
}

impl ListQuery {
    pub fn parse(
        q: &[(String, String)],
        r: &'static Resource,
        ns: Option<String>,
    ) -> Result<ListQuery> {
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let flag = |k: &str| matches!(get(k), Some("true" | "1"));
        let bad = |k: &str, v: &str| Error::BadRequest(format!("invalid {k}: {v:?}"));
        let resource_version = match get("resourceVersion").filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => Some(
                v.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| bad("resourceVersion", v))?,
            ),
        };
        let exact = match get("resourceVersionMatch").unwrap_or_default() {
            "" | "NotOlderThan" => false,
            "Exact" => true,
            other => return Err(bad("resourceVersionMatch", other)),
        };
        if exact && resource_version.unwrap_or(0) == 0 {
            return Err(Error::BadRequest(
                "resourceVersionMatch=Exact requires a non-zero resourceVersion".into(),
            ));
        }
        let limit = match get("limit").filter(|v| !v.is_empty()) {
            None => 0,
            Some(v) => v.parse::<i64>().map_err(|_| bad("limit", v))?.max(0) as usize,
        };
        let continue_token = get("continue")
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        if continue_token.is_some() && resource_version.is_some_and(|rv| rv != 0) {
            return Err(Error::BadRequest(
                "specifying resource version is not allowed when using continue".into(),
            ));
        }
        let timeout_seconds = match get("timeoutSeconds").filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => Some(v.parse::<u64>().map_err(|_| bad("timeoutSeconds", v))?),
        };
        let filter = Filter {
            namespace: ns,
            labels: LabelSelector::parse(get("labelSelector").unwrap_or_default())?,
            fields: FieldSelector::parse(get("fieldSelector").unwrap_or_default(), r.field_set())?,
        };
        Ok(ListQuery {
            filter,
            watch: super::meta::watch_flag(q),
            resource_version,
            exact,
            limit,
            continue_token,
            timeout_seconds,
            bookmarks: flag("allowWatchBookmarks"),
            send_initial_events: flag("sendInitialEvents"),
        })
    }
}

pub(crate) async fn get(
    s: &AppState,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    as_table: bool,
) -> Result<Response> {
    let o = s.registry.get(r, ns, name).await?;
    if as_table {
        let meta = json!({"resourceVersion": o.resource_version.to_string()});
        let mut obj = o.value()?;
        super::crds::default_read_value(s, r, &mut obj);
        let t = super::table::table(r, &[obj], meta);
        return Ok(json_response(200, t.to_string().into()));
    }
    Ok(json_response(
        200,
        super::crds::read_defaulted(s, r, o.json),
    ))
}

pub(crate) async fn list(
    s: &AppState,
    r: &'static Resource,
    q: ListQuery,
    as_table: bool,
) -> Result<Response> {
    let (items, revision, token): (Vec<Arc<Object>>, i64, Option<String>) =
        if q.continue_token.is_some() || q.exact {
            // Later pages and exact reads come from etcd at the page's revision,
            // so every page belongs to one consistent snapshot.
            let rv = if q.exact {
                q.resource_version.unwrap_or(0)
            } else {
                0
            };
            let page = s
                .registry
                .list(r, &q.filter, rv, q.continue_token.as_deref(), q.limit)
                .await?;
            (
                page.items.into_iter().map(Arc::new).collect(),
                page.revision,
                page.continue_token,
            )
        } else {
            let cache = s.cache(r);
            let fresh = match q.resource_version {
                None => cache.wait_fresh(None).await,
                Some(0) => cache.wait_fresh(Some(0)).await,
                Some(n) => cache.wait_fresh(Some(n)).await,
            };
            match fresh {
                Ok(_) => {
                    let l = cache.list(&q.filter, q.limit);
                    (l.items, l.revision, l.continue_token)
                }
                Err(Error::Timeout(_)) if q.resource_version.is_none() => {
                    // The cache is behind: a consistent read from etcd instead.
                    let page = s.registry.list(r, &q.filter, 0, None, q.limit).await?;
                    (
                        page.items.into_iter().map(Arc::new).collect(),
                        page.revision,
                        page.continue_token,
                    )
                }
                Err(e) => return Err(e),
            }
        };
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(t) = token {
        metadata["continue"] = json!(t);
    }
    if as_table {
        let mut values = items
            .iter()
            .map(|o| o.value())
            .collect::<Result<Vec<_>>>()?;
        for v in &mut values {
            super::crds::default_read_value(s, r, v);
        }
        let t = super::table::table(r, &values, metadata);
        return Ok(json_response(200, t.to_string().into()));
    }
    let head = format!(
        r#"{{"kind":"{}List","apiVersion":"{}","metadata":{},"items":["#,
        r.kind,
        r.api_version(),
        metadata
    );
    let mut body =
        Vec::with_capacity(head.len() + items.iter().map(|o| o.json.len() + 1).sum::<usize>() + 2);
    body.extend_from_slice(head.as_bytes());
    for (i, o) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        if r.is_custom() {
            body.extend_from_slice(&super::crds::read_defaulted(s, r, o.json.clone()));
        } else {
            body.extend_from_slice(&o.json);
        }
    }
    body.extend_from_slice(b"]}");
    Ok(json_response(200, body.into()))
}

/// Parses a body into a JSON object of `r`'s kind, filling in kind and
/// apiVersion when absent; 400 otherwise.
/// A request body as a JSON object of `r`'s kind: 400 for malformed JSON,
/// a non-object, another kind or apiVersion, or non-object metadata;
/// `kind`, `apiVersion` and `metadata` filled in when missing.
pub(super) fn decode(r: &'static Resource, body: &[u8]) -> Result<Value> {
    let mut obj: Value = serde_json::from_slice(body).map_err(|e| {
        Error::BadRequest(format!(
            "the object provided is unrecognized or malformed: json parse error: {e}"
        ))
    })?;
    let Some(map) = obj.as_object_mut() else {
        return Err(Error::BadRequest(
            "the object provided is not a JSON object".into(),
        ));
    };
    let api_version = r.api_version();
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), json!(r.kind));
        }
        Some(k) if k == r.kind => {}
        Some(k) => {
            return Err(Error::BadRequest(format!(
                "the kind of the provided object ({k}) does not match the resource ({})",
                r.kind
            )))
        }
    }
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), json!(api_version));
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(Error::BadRequest(format!(
                "the API version of the provided object ({v}) does not match {api_version}"
            )))
        }
    }
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        return Err(Error::BadRequest("metadata must be an object".into()));
    }
    Ok(obj)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    obj["metadata"]
        .as_object_mut()
        .expect("decode checked metadata")
}

/// Makes the object's namespace agree with the URL's.
fn settle_namespace(r: &'static Resource, obj: &mut Value, ns: Option<&str>) -> Result<()> {
    let meta = meta_mut(obj);
    match ns {
        Some(ns) => match meta.get("namespace").and_then(Value::as_str) {
            Some(have) if !have.is_empty() && have != ns => Err(Error::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            )),
            _ => {
                meta.insert("namespace".into(), json!(ns));
                Ok(())
            }
        },
        None => {
            if !r.namespaced {
                meta.remove("namespace");
            }
            Ok(())
        }
    }
}

/// Creates the object in `body`, recording field ownership as `record` says.
#[allow(clippy::too_many_arguments)] // the requesting user, for admission
pub(crate) async fn create(
    s: &AppState,
    r: &'static Resource,
    ns: Option<&str>,
    body: Bytes,
    fv: WriteOptions,
    user: &User,
    record: Record<'_>,
) -> Result<Response> {
    let mut obj = decode(r, &body)?;
    let mut warnings = super::crds::admit_fields(s, r, &fv, &mut obj)?;
    warnings.extend(super::crds::warnings(r, &obj));
    settle_namespace(r, &mut obj, ns)?;
    if r.is_custom() {
        super::crds::refuse_if_terminating(s, r)?;
    }
    super::serviceaccounts::admit_pod(s, r, ns, &mut obj).await?;
    let meta = meta_mut(&mut obj);
    let mut name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        let prefix = meta
            .get("generateName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if prefix.is_empty() {
            return Err(Error::Invalid {
                group: r.group,
                kind: r.kind,
                name: String::new(),
                causes: vec![crate::error::Cause {
                    field: "metadata.name".into(),
                    reason: "FieldValueRequired",
                    message: "Required value: name or generateName is required".into(),
                }],
            });
        }
        name = format!("{prefix}{}", name_suffix());
        meta.insert("name".into(), json!(name));
    }
    meta.insert("uid".into(), json!(new_uid()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    if matches!(
        r.name,
        "deployments" | "replicasets" | "jobs" | "cronjobs" | "statefulsets"
    ) {
        meta.insert("generation".into(), json!(1));
    }
    if r.name == "daemonsets" {
        meta.insert("generation".into(), json!(1));
    }
    if r.name == "poddisruptionbudgets" {
        meta.insert("generation".into(), json!(1));
        // A new budget's status is the controller's to fill in.
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }
    if r.is_custom() || super::crds::is_crds(r) {
        meta_mut(&mut obj).insert("generation".into(), json!(1));
    }
    default(r, &mut obj);
    if super::crds::is_crds(r) {
        super::crds::prepare_create(&mut obj)?;
    }
    schema::check(r, &obj, Source::Body)?;
    crate::auth::node_restriction::admit_create(&s.auth, &s.registry, user, r, &obj).await?;
    validate(r, &obj, &name)?;
    super::crds::validate_object(s, r, &obj, None, &name)?;
    super::namespaces::require_active(s, r, ns, &name).await?;
    if let Record::Update(manager) = record {
        super::apply::record_update(s, r, None, &mut obj, manager, "");
    }
    if r.name == "services" && r.group.is_empty() {
        // Addresses are allocated with the write (a dry run checks them).
        let ns = ns.unwrap_or_default();
        let created = super::services::create(s, ns, &name, obj, fv.dry_run).await?;
        return Ok(with_warnings(json_response(201, created.json), &warnings));
    }
    if fv.dry_run {
        // Everything but the store: a name that is taken still conflicts.
        if s.registry.get(r, ns, &name).await.is_ok() {
            return Err(Error::AlreadyExists {
                group: r.group,
                resource: r.name,
                name,
            });
        }
        return Ok(with_warnings(
            json_response(201, obj.to_string().into()),
            &warnings,
        ));
    }
    let created = s.registry.create(r, ns, &name, obj).await?;
    if super::crds::is_crds(r) {
        super::crds::settle(s, created.resource_version).await;
    }
    Ok(with_warnings(json_response(201, created.json), &warnings))
}

#[allow(clippy::too_many_arguments)] // the requesting user, for admission
pub(crate) async fn update(
    s: &AppState,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    body: Bytes,
    fv: WriteOptions,
    user: &User,
    manager: &str,
) -> Result<Response> {
    let mut obj = decode(r, &body)?;
    let mut warnings = super::crds::admit_fields(s, r, &fv, &mut obj)?;
    warnings.extend(super::crds::warnings(r, &obj));
    let current = s.registry.get(r, ns, name).await?;
    let record = Record::Update(manager);
    let updated = replace(
        s,
        r,
        ns,
        name,
        obj,
        current,
        Source::Body,
        fv.dry_run,
        user,
        record,
    )
    .await?;
    Ok(with_warnings(json_response(200, updated.json), &warnings))
}

/// Applies a patch to the current object and stores the result; a patch
/// that does not pin `resourceVersion` is retried on a conflicting write.
#[allow(clippy::too_many_arguments)] // the requesting user, for admission
pub(crate) async fn patch(
    s: &AppState,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    kind: PatchType,
    body: Bytes,
    fv: WriteOptions,
    user: &User,
    manager: &str,
) -> Result<Response> {
    let mut last = None;
    for _ in 0..PATCH_RETRIES {
        let current = s.registry.get(r, ns, name).await?;
        let patched = super::patch::apply(kind, &current.value()?, &body)?;
        let pinned =
            patched["metadata"]["resourceVersion"] != json!(current.resource_version.to_string());
        let mut obj = decode(r, &Bytes::from(patched.to_string()))?;
        let mut warnings = super::crds::admit_fields(s, r, &fv, &mut obj)?;
        warnings.extend(super::crds::warnings(r, &obj));
        match replace(
            s,
            r,
            ns,
            name,
            obj,
            current,
            Source::Patch,
            fv.dry_run,
            user,
            Record::Update(manager),
        )
        .await
        {
            Ok(updated) => return Ok(with_warnings(json_response(200, updated.json), &warnings)),
            Err(e @ Error::Conflict { .. }) if !pinned => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| conflict(r, name)))
}

/// A write to `…/status`: the stored object with only its `status`
/// replaced by the body's (or, for a PATCH, by the patched object's),
/// recorded as `manager`'s update of the `status` subresource.
#[allow(clippy::too_many_arguments)] // the request's parts
pub(crate) async fn update_status(
    s: &AppState,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    patch: Option<PatchType>,
    body: Bytes,
    fv: WriteOptions,
    manager: &str,
) -> Result<Response> {
    let mut last = None;
    for _ in 0..PATCH_RETRIES {
        let current = s.registry.get(r, ns, name).await?;
        let old = current.value()?;
        let mut given = match patch {
            Some(kind) => super::patch::apply(kind, &old, &body)?,
            None => decode(r, &body)?,
        };
        let warnings = super::crds::admit_fields(s, r, &fv, &mut given)?;
        let pinned = given["metadata"]["resourceVersion"]
            .as_str()
            .filter(|v| !v.is_empty());
        if pinned.is_some_and(|v| v != current.resource_version.to_string()) {
            return Err(conflict(r, name));
        }
        let mut obj = old.clone();
        match given.get("status") {
            Some(st) if !st.is_null() => obj["status"] = st.clone(),
            _ => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        let source = match patch {
            Some(_) => Source::Patch,
            None => Source::Body,
        };
        schema::check(r, &obj, source)?;
        super::crds::validate_object(s, r, &obj, Some(&old), name)?;
        super::apply::record_update(s, r, Some(&old), &mut obj, manager, "status");
        if fv.dry_run {
            let dry = Object::from_value(current.key.clone(), &mut obj, current.resource_version)?;
            return Ok(with_warnings(json_response(200, dry.json), &warnings));
        }
        match s
            .registry
            .update(r, ns, name, obj, current.resource_version)
            .await
        {
            Ok(updated) => return Ok(with_warnings(json_response(200, updated.json), &warnings)),
            // A patch is applied again to what is stored then: one that
            // pins a resourceVersion gets its 409 from the check above.
            Err(e @ Error::Conflict { .. }) if patch.is_some() => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| conflict(r, name)))
}

/// A Node's pod ranges, once set, are fixed (kube's `ValidateNodeUpdate`:
/// only from none to some).
fn check_pod_cidrs(name: &str, old: &Value, new: &Value) -> Result<()> {
    let ranges = |o: &Value| {
        let spec = &o["spec"];
        match spec["podCIDRs"].as_array() {
            Some(all) if !all.is_empty() => all.clone(),
            _ => spec["podCIDR"]
                .as_str()
                .map(|c| vec![json!(c)])
                .unwrap_or_default(),
        }
    };
    let (was, now) = (ranges(old), ranges(new));
    if was.is_empty() || was == now {
        return Ok(());
    }
    let field = if was.len() != now.len() {
        "spec.podCIDRs".to_string()
    } else {
        let i = was.iter().zip(&now).position(|(a, b)| a != b).unwrap_or(0);
        format!("spec.podCIDRs[{i}]")
    };
    Err(Error::Invalid {
        group: "",
        kind: "Node",
        name: name.to_string(),
        causes: vec![crate::error::Cause {
            field,
            reason: "FieldValueForbidden",
            message: "Forbidden: node updates may not change podCIDR except from \"\" to valid"
                .into(),
        }],
    })
}

/// Pod spec fields an update may change (Kubernetes: images, the active
/// deadline, added tolerations); everything else in a pod's spec is fixed.
fn mutable_pod_fields_removed(spec: &Value) -> Value {
    let mut spec = spec.clone();
    if let Some(m) = spec.as_object_mut() {
        m.remove("activeDeadlineSeconds");
        m.remove("tolerations");
        m.remove("terminationGracePeriodSeconds");
        for list in ["containers", "initContainers"] {
            if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
                for c in cs {
                    if let Some(c) = c.as_object_mut() {
                        c.remove("image");
                    }
                }
            }
        }
    }
    spec
}

/// Stores `obj` in place of `current`: the server-owned metadata and the
/// status are kept, `resourceVersion` (if given) must match; 409 otherwise.
/// `source` says whether `obj` is a body or a patch's result (the answer
/// to a type error differs, as in Kubernetes); `record` says how field
/// ownership is kept.
#[allow(clippy::too_many_arguments)] // the requesting user, for admission
pub(super) async fn replace(
    s: &AppState,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    mut obj: Value,
    current: Object,
    source: Source,
    dry_run: bool,
    user: &User,
    record: Record<'_>,
) -> Result<Object> {
    settle_namespace(r, &mut obj, ns)?;
    let meta = meta_mut(&mut obj);
    match meta.get("name").and_then(Value::as_str) {
        Some(n) if n == name => {}
        None | Some("") => {
            meta.insert("name".into(), json!(name));
        }
        Some(n) => {
            return Err(Error::BadRequest(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
    }
    let expected = match meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
    {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| Error::BadRequest(format!("invalid resourceVersion {v:?}")))?,
        ),
    };
    if expected.is_some_and(|rv| rv != current.resource_version) {
        return Err(conflict(r, name));
    }
    let old = current.value()?;
    let meta = meta_mut(&mut obj);
    if let Some(uid) = meta.get("uid").and_then(Value::as_str) {
        if !uid.is_empty() && old["metadata"]["uid"] != uid {
            return Err(Error::Conflict {
                group: r.group,
                resource: r.name,
                name: name.to_string(),
                detail: format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old["metadata"]["uid"].as_str().unwrap_or_default()
                ),
            });
        }
    }
    for keep in ["uid", "creationTimestamp", "generation"] {
        match old["metadata"].get(keep) {
            Some(v) => meta.insert(keep.into(), v.clone()),
            None => meta.remove(keep),
        };
    }
    // Writes to the main resource never change status (that is /status's job).
    if matches!(
        r.name,
        "pods"
            | "deployments"
            | "replicasets"
            | "services"
            | "namespaces"
            | "nodes"
            | "jobs"
            | "cronjobs"
            | "statefulsets"
            | "daemonsets"
            | "poddisruptionbudgets"
    ) || (super::has_status(r) && (r.is_custom() || super::crds::is_crds(r)))
    {
        match old.get("status") {
            Some(st) => obj["status"] = st.clone(),
            None => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    if r.name == "services" && r.group.is_empty() {
        super::services::carry_over(&old, &mut obj);
    }
    if r.name == "namespaces" {
        super::namespaces::keep_spec_finalizers(&old, &mut obj);
    }
    default(r, &mut obj);
    schema::check(r, &obj, source)?;
    if r.name == "pods"
        && mutable_pod_fields_removed(&obj["spec"]) != mutable_pod_fields_removed(&old["spec"])
    {
        return Err(Error::Invalid {
            group: r.group,
            kind: r.kind,
            name: name.to_string(),
            causes: vec![crate::error::Cause {
                field: "spec".into(),
                reason: "FieldValueForbidden",
                message: "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations) or `spec.terminationGracePeriodSeconds`".into(),
            }],
        });
    }
    // A binding's roleRef is immutable (kube: delete and recreate instead).
    if matches!(r.name, "rolebindings" | "clusterrolebindings") && obj["roleRef"] != old["roleRef"]
    {
        return Err(Error::Invalid {
            group: r.group,
            kind: r.kind,
            name: name.to_string(),
            causes: vec![crate::error::Cause {
                field: "roleRef".into(),
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {}: cannot change roleRef", obj["roleRef"]),
            }],
        });
    }
    if r.name == "nodes" {
        check_pod_cidrs(name, &old, &obj)?;
    }
    if r.name == "jobs" {
        super::jobs::check_update(name, &old, &obj)?;
    }
    if r.name == "statefulsets" {
        super::statefulsets::check_update(name, &old, &obj)?;
    }
    if r.name == "controllerrevisions" {
        super::controllerrevisions::check_update(name, &old, &obj)?;
    }
    if r.name == "poddisruptionbudgets" && obj["spec"] != old["spec"] {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        meta_mut(&mut obj).insert("generation".into(), json!(generation));
    }
    if r.name == "daemonsets" {
        super::daemonsets::update(name, &old, &mut obj)?;
        if obj["spec"] != old["spec"] {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            meta_mut(&mut obj).insert("generation".into(), json!(generation));
        }
    }
    if matches!(
        r.name,
        "deployments" | "replicasets" | "jobs" | "cronjobs" | "statefulsets"
    ) && obj["spec"] != old["spec"]
    {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        meta_mut(&mut obj).insert("generation".into(), json!(generation));
    }
    if super::crds::is_crds(r) {
        super::crds::prepare_update(&old, &mut obj)?;
    }
    // A custom resource's generation counts changes to anything but its
    // metadata and status (kube's CR strategy).
    let generation_bumps = r.is_custom() || super::crds::is_crds(r);
    if generation_bumps && without_metadata_and_status(&obj) != without_metadata_and_status(&old) {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        meta_mut(&mut obj).insert("generation".into(), json!(generation));
    }
    super::delete::check_update(r, name, &old, &mut obj)?;
    crate::auth::node_restriction::admit_update(&s.auth, user, r, &old, &obj)?;
    validate_change(r, &obj, name, Some(&old))?;
    super::crds::validate_object(s, r, &obj, Some(&old), name)?;
    if let Record::Update(manager) = record {
        super::apply::record_update(s, r, Some(&old), &mut obj, manager, "");
    }
    if dry_run {
        return Object::from_value(current.key.clone(), &mut obj, current.resource_version);
    }
    if super::delete::deleted_by_update(&obj) {
        // The last finalizer is gone: the object goes (watchers see DELETED).
        let rev = s
            .registry
            .delete(r, ns, name, current.resource_version)
            .await?;
        return Object::from_value(current.key.clone(), &mut obj, rev);
    }
    if r.name == "services" && r.group.is_empty() {
        let ns = ns.unwrap_or_default();
        return super::services::update(s, ns, name, &old, obj, current.resource_version).await;
    }
    let updated = s
        .registry
        .update(r, ns, name, obj, current.resource_version)
        .await?;
    if super::crds::is_crds(r) {
        super::crds::settle(s, updated.resource_version).await;
    }
    Ok(updated)
}

/// An object without `metadata` and `status`: what a custom resource's
/// generation counts.
fn without_metadata_and_status(obj: &Value) -> Value {
    let mut rest = obj.clone();
    if let Some(m) = rest.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    rest
}
