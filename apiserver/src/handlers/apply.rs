//! Server-side apply (`PATCH` with `application/apply-patch+yaml`, the
//! body YAML or JSON) and the field managers every other write records.
//!
//! An apply needs `fieldManager` (422 otherwise, as Kubernetes'
//! PatchOptions validation), may `force` conflicts, honours `dryRun=All`
//! and `fieldValidation`, and creates the object when it does not exist
//! (201). `kubectl apply --server-side` after client-side applies takes
//! over the fields its last-applied configuration still holds, as
//! Kubernetes' `lastAppliedManager`. A custom resource's configuration
//! is pruned to its schema
//! (the pruned fields are `fieldValidation`'s findings) and the merged
//! object pruned and defaulted again, as any write of it. An apply on
//! `…/status` applies the configuration's `status` only, as the
//! `status` subresource's manager. The merge, ownership and conflicts
//! are `crate::fieldmanager`'s; this module reads the request, the
//! schema of a custom resource's version, and stores through `rest`'s
//! create and update paths, which keep the server-owned metadata,
//! default and validate as for any write.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use serde_json::{json, Value};

use super::fields::{with_warnings, FieldValidation, WriteOptions};
use super::schema::Source;
use super::{json_response, AppState};
use crate::auth::User;
use crate::crd_schema::Schema;
use crate::error::{Cause, Error, Result};
use crate::fieldmanager::{self, Types, Writer};
use crate::object::Object;
use crate::registry::conflict;
use crate::resources::Resource;

/// The Content-Type of an apply.
pub const MEDIA_TYPE: &str = "application/apply-patch+yaml";

/// Conflicting retries of an apply before giving up.
const RETRIES: usize = 5;

/// How a write records field ownership.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Record<'a> {
    /// An update by this manager (create, PUT, a non-apply PATCH).
    Update(&'a str),
    /// An apply: the object already carries its new `managedFields`.
    Applied,
}

/// Whether a request's Content-Type is an apply.
pub(super) fn is_apply(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim() == MEDIA_TYPE)
}

fn query_value<'q>(query: &'q [(String, String)], key: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn options_invalid(options: &'static str, causes: Vec<Cause>) -> Error {
    Error::Invalid {
        group: "meta.k8s.io",
        kind: options,
        name: String::new(),
        causes,
    }
}

/// Kubernetes' `ValidateFieldManager`: at most 128 bytes, printable.
fn validate_manager(name: &str, options: &'static str) -> Result<()> {
    let mut causes = Vec::new();
    if name.len() > fieldmanager::MAX_MANAGER_LEN {
        causes.push(Cause {
            field: "fieldManager".into(),
            reason: "FieldValueTooLong",
            message: format!(
                "Too long: may not be more than {} bytes",
                fieldmanager::MAX_MANAGER_LEN
            ),
        });
    }
    for (i, c) in name.char_indices() {
        if c.is_control() {
            causes.push(Cause {
                field: "fieldManager".into(),
                reason: "FieldValueInvalid",
                message: format!(
                    "Invalid value: {}: invalid character U+{:04X} (at position {i})",
                    Value::String(name.into()),
                    c as u32
                ),
            });
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(options_invalid(options, causes))
    }
}

/// The manager a non-apply write records: `fieldManager`, else the
/// program name of the User-Agent (`kubectl/v1.33 …` → `kubectl`), its
/// printable characters up to 128 bytes, as Kubernetes does. `options`
/// names the kind the 422 speaks of (`CreateOptions`, `UpdateOptions`,
/// `PatchOptions`); `force` is refused for anything but an apply.
pub(super) fn update_manager(
    query: &[(String, String)],
    headers: &HeaderMap,
    options: &'static str,
) -> Result<String> {
    if options == "PatchOptions" && query_value(query, "force").is_some() {
        return Err(options_invalid(
            options,
            vec![Cause {
                field: "force".into(),
                reason: "FieldValueForbidden",
                message: "Forbidden: may not be specified for non-apply patch".into(),
            }],
        ));
    }
    if let Some(name) = query_value(query, "fieldManager").filter(|m| !m.is_empty()) {
        validate_manager(name, options)?;
        return Ok(name.to_string());
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut name = String::new();
    for c in agent.split('/').next().unwrap_or_default().chars() {
        if c.is_control() {
            continue;
        }
        if name.len() >= fieldmanager::MAX_MANAGER_LEN {
            break;
        }
        name.push(c);
    }
    Ok(name)
}

/// The structural schema of a custom resource's version as served now,
/// or `None` for a built-in or a version without one.
pub(super) fn custom_schema(s: &AppState, r: &Resource) -> Option<Arc<Schema>> {
    if !r.is_custom() {
        return None;
    }
    s.served.snapshot().schema(r)
}

/// The types of `r`'s objects: the built-in table, or `schema` (a custom
/// resource's; `Null` when it has none).
pub(super) fn types<'a>(r: &Resource, schema: &'a Value) -> Types<'a> {
    if r.is_custom() {
        Types::CustomRoot(schema)
    } else {
        Types::built_in()
    }
}

/// Records an update by `manager` from `old` (`None`: a create) to `obj`
/// in `obj`'s `metadata.managedFields`.
pub(super) fn record_update(
    s: &AppState,
    r: &'static Resource,
    old: Option<&Value>,
    obj: &mut Value,
    manager: &str,
    subresource: &str,
) {
    let schema = custom_schema(s, r);
    let null = Value::Null;
    let root = schema.as_deref().map_or(&null, Schema::root);
    let base = fieldmanager::base_entries(old, obj);
    let before = old
        .map(fieldmanager::without_managed_fields)
        .unwrap_or_else(|| json!({}));
    let after = fieldmanager::without_managed_fields(obj);
    let now = super::meta::now_rfc3339();
    let api_version = r.api_version();
    let w = Writer {
        manager,
        api_version: &api_version,
        subresource,
        types: types(r, root),
        now: &now,
    };
    let entries = fieldmanager::update(base, &before, &after, &w);
    fieldmanager::set_entries(obj, &entries);
}

/// An apply body: a YAML or JSON object.
pub(super) fn parse_body(body: &[u8]) -> Result<Value> {
    let parsed = match serde_json::from_slice::<Value>(body) {
        Ok(v) => v,
        Err(_) => {
            let text = std::str::from_utf8(body).map_err(|_| {
                Error::BadRequest("error decoding YAML: the body is not UTF-8".into())
            })?;
            serde_saphyr::from_str::<Value>(text)
                .map_err(|e| Error::BadRequest(format!("error decoding YAML: {e}")))?
        }
    };
    if !parsed.is_object() {
        return Err(Error::BadRequest(
            "the applied configuration is not an object".into(),
        ));
    }
    Ok(parsed)
}

/// An apply's `fieldManager` (422 unless given and valid) and `force`
/// (400 unless a boolean).
pub(super) fn manager_and_force(query: &[(String, String)]) -> Result<(&str, bool)> {
    let manager = query_value(query, "fieldManager").unwrap_or_default();
    if manager.is_empty() {
        return Err(options_invalid(
            "PatchOptions",
            vec![Cause {
                field: "fieldManager".into(),
                reason: "FieldValueRequired",
                message: "Required value: is required for apply patch".into(),
            }],
        ));
    }
    validate_manager(manager, "PatchOptions")?;
    let force = match query_value(query, "force").unwrap_or_default() {
        "" | "false" | "0" => false,
        "true" | "1" => true,
        other => return Err(Error::BadRequest(format!("invalid force: {other:?}"))),
    };
    Ok((manager, force))
}

/// What an apply request asks: its manager, whether it forces conflicts,
/// and its configuration (named after the URL).
struct Request<'q> {
    manager: &'q str,
    force: bool,
    config: Value,
}

impl<'q> Request<'q> {
    /// Reads the query and body of an apply on `r`'s object `name`: 422
    /// without a valid `fieldManager`, 400 for a bad `force`, body or name.
    fn parse(
        r: &'static Resource,
        name: &str,
        query: &'q [(String, String)],
        body: &[u8],
    ) -> Result<Request<'q>> {
        let (manager, force) = manager_and_force(query)?;
        let mut config = super::rest::decode(r, parse_body(body)?.to_string().as_bytes())?;
        match config["metadata"].get("name").and_then(Value::as_str) {
            None | Some("") => config["metadata"]["name"] = json!(name),
            Some(n) if n == name => {}
            Some(n) => {
                return Err(Error::BadRequest(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )))
            }
        }
        Ok(Request {
            manager,
            force,
            config,
        })
    }

    /// Whether the configuration pins a `resourceVersion`.
    fn pinned(&self) -> bool {
        self.config["metadata"]
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
    }
}

/// `PATCH` with an apply body on `r`'s object `name`.
#[allow(clippy::too_many_arguments)] // the request's parts, as rest::patch
pub(super) async fn apply(
    s: &AppState,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    query: &[(String, String)],
    body: Bytes,
    fv: WriteOptions,
    user: &User,
) -> Result<Response> {
    let request = Request::parse(r, name, query, &body)?;
    let pinned = request.pinned();
    let Request {
        manager,
        force,
        mut config,
    } = request;
    if super::has_status(r) {
        // The main resource never writes status: an apply's is ignored.
        if let Some(m) = config.as_object_mut() {
            m.remove("status");
        }
    }
    // A custom resource's configuration is pruned to its schema first, so
    // its manager never owns a field the object cannot keep.
    let mut warnings = super::crds::check_fields(s, r, &fv, &mut config)?;
    let schema = custom_schema(s, r);
    let null = Value::Null;
    let root = schema.as_deref().map_or(&null, Schema::root);
    let api_version = r.api_version();
    let mut last = None;
    for _ in 0..RETRIES {
        let now = super::meta::now_rfc3339();
        let w = Writer {
            manager,
            api_version: &api_version,
            subresource: "",
            types: types(r, root),
            now: &now,
        };
        let current = match s.registry.get(r, ns, name).await {
            Ok(c) => Some(c),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let (live, entries) = match &current {
            Some(c) => {
                let v = c.value()?;
                let entries = fieldmanager::decode(&v).unwrap_or_default();
                (fieldmanager::without_managed_fields(&v), entries)
            }
            None => (json!({}), Vec::new()),
        };
        let mut outcome = fieldmanager::apply(entries.clone(), &live, &config, &w, force);
        if let Err(conflicts) = &outcome {
            if manager == fieldmanager::KUBECTL
                && fieldmanager::last_applied_allows(&live, conflicts, w.types)
            {
                outcome = fieldmanager::apply(entries, &live, &config, &w, true);
            }
        }
        let applied = match outcome {
            Ok(a) => a,
            Err(conflicts) => {
                let status = fieldmanager::conflict_status(&conflicts);
                return Ok(json_response(409, status.to_string().into()));
            }
        };
        let mut obj = applied.object;
        fieldmanager::set_entries(&mut obj, &applied.entries);
        let Some(current) = current else {
            let body = Bytes::from(obj.to_string());
            // The configuration's fields were checked above: the create
            // prunes and defaults, and answers with those findings.
            let checked = WriteOptions {
                validation: FieldValidation::Ignore,
                ..fv
            };
            match super::rest::create(s, r, ns, body, checked, user, Record::Applied).await {
                Err(e @ Error::AlreadyExists { .. }) => last = Some(e),
                done => return done.map(|resp| with_warnings(resp, &warnings)),
            }
            continue;
        };
        if !pinned {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.insert(
                    "resourceVersion".into(),
                    json!(current.resource_version.to_string()),
                );
            }
        }
        // The stored object may hold fields a newer schema prunes, or
        // lack its defaults.
        super::crds::conform(s, r, &mut obj);
        if obj == current.value()? {
            // Nothing changes: nothing is written (the same resourceVersion).
            return Ok(with_warnings(json_response(200, current.json), &warnings));
        }
        let notes = super::crds::warnings(r, &obj);
        match super::rest::replace(
            s,
            r,
            ns,
            name,
            obj,
            current,
            Source::Patch,
            fv.dry_run,
            user,
            Record::Applied,
        )
        .await
        {
            Ok(updated) => {
                warnings.extend(notes);
                return Ok(with_warnings(json_response(200, updated.json), &warnings));
            }
            Err(e @ Error::Conflict { .. }) if !pinned => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| conflict(r, name)))
}

/// `PATCH` with an apply body on `…/<name>/status`: the configuration's
/// `status` is applied by its manager for the `status` subresource, and
/// nothing else of the object changes (kube's status strategy). The
/// object must exist (404 otherwise).
#[allow(clippy::too_many_arguments)] // the request's parts, as apply
pub(super) async fn apply_status(
    s: &AppState,
    r: &'static Resource,
    ns: Option<&str>,
    name: &str,
    query: &[(String, String)],
    body: Bytes,
    fv: WriteOptions,
) -> Result<Response> {
    let request = Request::parse(r, name, query, &body)?;
    let pinned = request.pinned();
    let Request {
        manager,
        force,
        mut config,
    } = request;
    if let Some(m) = config.as_object_mut() {
        m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
    }
    if let Some(m) = config["metadata"].as_object_mut() {
        m.retain(|k, _| matches!(k.as_str(), "name" | "namespace" | "resourceVersion"));
    }
    let warnings = super::crds::check_fields(s, r, &fv, &mut config)?;
    let schema = custom_schema(s, r);
    let null = Value::Null;
    let root = schema.as_deref().map_or(&null, Schema::root);
    let api_version = r.api_version();
    let mut last = None;
    for _ in 0..RETRIES {
        let current = s.registry.get(r, ns, name).await?;
        let pinned_to = config["metadata"]["resourceVersion"].as_str();
        if pinned && pinned_to != Some(current.resource_version.to_string().as_str()) {
            return Err(conflict(r, name));
        }
        let old = current.value()?;
        let now = super::meta::now_rfc3339();
        let w = Writer {
            manager,
            api_version: &api_version,
            subresource: "status",
            types: types(r, root),
            now: &now,
        };
        let entries = fieldmanager::decode(&old).unwrap_or_default();
        let live = fieldmanager::without_managed_fields(&old);
        let applied = match fieldmanager::apply(entries, &live, &config, &w, force) {
            Ok(a) => a,
            Err(conflicts) => {
                let status = fieldmanager::conflict_status(&conflicts);
                return Ok(json_response(409, status.to_string().into()));
            }
        };
        let mut obj = old.clone();
        match applied.object.get("status") {
            Some(st) if !st.is_null() => obj["status"] = st.clone(),
            _ => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        fieldmanager::set_entries(&mut obj, &applied.entries);
        super::crds::conform(s, r, &mut obj);
        if obj == old {
            return Ok(with_warnings(json_response(200, current.json), &warnings));
        }
        super::schema::check(r, &obj, Source::Patch)?;
        super::crds::validate_object(s, r, &obj, Some(&old), name)?;
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
            Err(e @ Error::Conflict { .. }) if !pinned => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| conflict(r, name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managers_from_the_query_or_the_user_agent() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::USER_AGENT,
            "kubectl/v1.33.0 (linux/amd64) kubernetes/abc"
                .parse()
                .unwrap(),
        );
        let q = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert_eq!(
            update_manager(&[], &headers, "UpdateOptions").unwrap(),
            "kubectl"
        );
        assert_eq!(
            update_manager(&q("fieldManager", "kubectl-edit"), &headers, "PatchOptions").unwrap(),
            "kubectl-edit"
        );
        let e = update_manager(&q("force", "true"), &headers, "PatchOptions").unwrap_err();
        assert_eq!(
            e.to_string(),
            "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch"
        );
        let long = "m".repeat(129);
        let e = update_manager(&q("fieldManager", &long), &headers, "CreateOptions").unwrap_err();
        assert_eq!(e.code(), 422);
    }

    #[test]
    fn bodies_are_yaml_or_json() {
        let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: \"1\"\n";
        assert_eq!(parse_body(yaml).unwrap()["data"]["a"], "1");
        assert_eq!(
            parse_body(br#"{"kind":"ConfigMap"}"#).unwrap()["kind"],
            "ConfigMap"
        );
        assert_eq!(parse_body(b"- a\n- b\n").unwrap_err().code(), 400);
        assert_eq!(parse_body(b"a: [").unwrap_err().code(), 400);
    }
}
