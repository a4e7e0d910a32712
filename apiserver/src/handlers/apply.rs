//! Server-side apply (`PATCH` with `application/apply-patch+yaml`, the
//! body YAML or JSON) and the field managers every other write records.
//!
//! An apply needs `fieldManager` (422 otherwise, as Kubernetes'
//! PatchOptions validation), may `force` conflicts, honours `dryRun=All`
//! and `fieldValidation`, and creates the object when it does not exist
//! (201). The merge, ownership and conflicts are `crate::fieldmanager`'s;
//! this module reads the request, the schema of a custom resource's
//! version, and stores through `rest`'s create and update paths, which
//! keep the server-owned metadata, default and validate as for any write.

use axum::body::Bytes;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use serde_json::{json, Value};

use super::fields::{with_warnings, WriteOptions};
use super::schema::Source;
use super::{json_response, AppState};
use crate::auth::User;
use crate::error::{Cause, Error, Result};
use crate::fieldmanager::{self, Types, Writer};
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

/// The OpenAPI schema of a custom resource's version (from its CRD), or
/// `None` for a built-in or a CRD without one.
pub(super) async fn custom_schema(s: &AppState, r: &'static Resource) -> Option<Value> {
    if !r.is_custom() {
        return None;
    }
    let crds = Resource::find("apiextensions.k8s.io", "customresourcedefinitions")?;
    let crd = s
        .registry
        .get(crds, None, &format!("{}.{}", r.name, r.group))
        .await
        .ok()?
        .value()
        .ok()?;
    crd["spec"]["versions"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == r.version)
        .map(|v| v["schema"]["openAPIV3Schema"].clone())
        .filter(Value::is_object)
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
pub(super) async fn record_update(
    s: &AppState,
    r: &'static Resource,
    old: Option<&Value>,
    obj: &mut Value,
    manager: &str,
    subresource: &str,
) {
    let schema = custom_schema(s, r).await.unwrap_or(Value::Null);
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
        types: types(r, &schema),
        now: &now,
    };
    let entries = fieldmanager::update(base, &before, &after, &w);
    fieldmanager::set_entries(obj, &entries);
}

/// An apply body: a YAML or JSON object.
fn parse_body(body: &[u8]) -> Result<Value> {
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
    let mut config = super::rest::decode(r, parse_body(&body)?.to_string().as_bytes())?;
    match config["metadata"].get("name").and_then(Value::as_str) {
        None | Some("") => config["metadata"]["name"] = json!(name),
        Some(n) if n == name => {}
        Some(n) => {
            return Err(Error::BadRequest(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )))
        }
    }
    if super::has_status(r) {
        // The main resource never writes status: an apply's is ignored.
        if let Some(m) = config.as_object_mut() {
            m.remove("status");
        }
    }
    let warnings = fv.check(r.kind, &config)?;
    let pinned = config["metadata"]
        .get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|v| !v.is_empty());
    let schema = custom_schema(s, r).await.unwrap_or(Value::Null);
    let api_version = r.api_version();
    let mut last = None;
    for _ in 0..RETRIES {
        let now = super::meta::now_rfc3339();
        let w = Writer {
            manager,
            api_version: &api_version,
            subresource: "",
            types: types(r, &schema),
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
        let applied = match fieldmanager::apply(entries, &live, &config, &w, force) {
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
            // The create answers with the field validation's warnings.
            match super::rest::create(s, r, ns, body, fv, user, Record::Applied).await {
                Err(e @ Error::AlreadyExists { .. }) => last = Some(e),
                done => return done,
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
        if obj == current.value()? {
            // Nothing changes: nothing is written (the same resourceVersion).
            return Ok(with_warnings(json_response(200, current.json), &warnings));
        }
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
