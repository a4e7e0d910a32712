//! Server-side field validation (`?fieldValidation=Strict|Warn|Ignore` on
//! create, update and patch): which fields of a request's object the kind
//! does not define.
//!
//! The kind's schema is its `k8s-openapi` type: the object is decoded into
//! it and encoded back, and every non-null field of the input missing from
//! that round trip is unknown (`spec.containers[0].foo`). Strict answers
//! 400 `strict decoding error: unknown field "spec.foo"`; Warn (the default,
//! as in kube-apiserver) adds one `Warning: 299 - "unknown field \"spec.foo\""`
//! header per field. An object the typed decode rejects outright (a missing
//! required field, a wrong type) is left to validation, which answers 422.
//! The object is stored as sent (unknown fields included), as the crate's
//! design stores what clients write.

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use k8s_openapi::api::{apps, autoscaling, coordination, core, events};
use serde_json::Value;

use crate::error::{Error, Result};

/// The `fieldValidation` directive of one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    /// From the query string; 400 for an unknown directive.
    pub fn parse(query: &[(String, String)]) -> Result<FieldValidation> {
        match query
            .iter()
            .find(|(k, _)| k == "fieldValidation")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
        {
            "" | "Warn" => Ok(FieldValidation::Warn),
            "Ignore" => Ok(FieldValidation::Ignore),
            "Strict" => Ok(FieldValidation::Strict),
            other => Err(Error::BadRequest(format!(
                "fieldValidation parameter unsupported: {other:?}; use one of \"Ignore\", \"Warn\" or \"Strict\""
            ))),
        }
    }

    /// Checks `obj` (of `kind`): `Ok` with the warnings to send, or 400
    /// in Strict mode when a field is unknown.
    pub fn check(self, kind: &str, obj: &Value) -> Result<Vec<String>> {
        if self == FieldValidation::Ignore {
            return Ok(Vec::new());
        }
        let unknown = unknown_fields(kind, obj);
        if unknown.is_empty() {
            return Ok(Vec::new());
        }
        let each: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        match self {
            FieldValidation::Strict => Err(Error::BadRequest(format!(
                "strict decoding error: {}",
                each.join(", ")
            ))),
            _ => Ok(each),
        }
    }
}

/// The query options every write (create, update, patch) shares:
/// `fieldValidation`, and `dryRun=All` (everything but the store).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WriteOptions {
    pub validation: FieldValidation,
    pub dry_run: bool,
}

impl WriteOptions {
    /// From the query string; 400 for an unknown directive or dryRun value.
    pub fn parse(query: &[(String, String)]) -> Result<WriteOptions> {
        let mut dry_run = false;
        for (k, v) in query.iter().filter(|(k, _)| k == "dryRun") {
            match v.as_str() {
                "" => {}
                "All" => dry_run = true,
                other => {
                    return Err(Error::BadRequest(format!(
                        "Invalid dry run value: {other:?}: supported values: \"All\" ({k})"
                    )))
                }
            }
        }
        Ok(WriteOptions {
            validation: FieldValidation::parse(query)?,
            dry_run,
        })
    }

    /// [`FieldValidation::check`] with this write's directive.
    pub fn check(&self, kind: &str, obj: &Value) -> Result<Vec<String>> {
        self.validation.check(kind, obj)
    }
}

/// Adds one `Warning` header per message (RFC 7234 form, code 299).
pub(crate) fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut()
                .append(HeaderName::from_static("warning"), v);
        }
    }
    resp
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(obj: &Value) -> Option<Value> {
    let typed: T = serde_json::from_value(obj.clone()).ok()?;
    serde_json::to_value(&typed).ok()
}

/// The paths of `obj`'s fields that `kind` does not define (empty for a
/// kind without a schema here, or an object the typed decode rejects).
/// Two groups have an `Event`: the object's `apiVersion` (set by the
/// time this runs) picks core/v1's or events.k8s.io/v1's.
pub(crate) fn unknown_fields(kind: &str, obj: &Value) -> Vec<String> {
    let known = match kind {
        "Pod" => round_trip::<core::v1::Pod>(obj),
        "Namespace" => round_trip::<core::v1::Namespace>(obj),
        "ConfigMap" => round_trip::<core::v1::ConfigMap>(obj),
        "Secret" => round_trip::<core::v1::Secret>(obj),
        "ServiceAccount" => round_trip::<core::v1::ServiceAccount>(obj),
        "Service" => round_trip::<core::v1::Service>(obj),
        "Node" => round_trip::<core::v1::Node>(obj),
        "Endpoints" => round_trip::<core::v1::Endpoints>(obj),
        "Event" if obj["apiVersion"] == "events.k8s.io/v1" => round_trip::<events::v1::Event>(obj),
        "Event" => round_trip::<core::v1::Event>(obj),
        "Deployment" => round_trip::<apps::v1::Deployment>(obj),
        "ReplicaSet" => round_trip::<apps::v1::ReplicaSet>(obj),
        "ControllerRevision" => round_trip::<apps::v1::ControllerRevision>(obj),
        "DaemonSet" => round_trip::<apps::v1::DaemonSet>(obj),
        "StatefulSet" => round_trip::<apps::v1::StatefulSet>(obj),
        "PodDisruptionBudget" => {
            round_trip::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(obj)
        }
        "Eviction" => round_trip::<k8s_openapi::api::policy::v1::Eviction>(obj),
        "Job" => round_trip::<k8s_openapi::api::batch::v1::Job>(obj),
        "EndpointSlice" => round_trip::<k8s_openapi::api::discovery::v1::EndpointSlice>(obj),
        "CronJob" => round_trip::<k8s_openapi::api::batch::v1::CronJob>(obj),
        "Lease" => round_trip::<coordination::v1::Lease>(obj),
        "Scale" => round_trip::<autoscaling::v1::Scale>(obj),
        _ => None,
    };
    let mut out = Vec::new();
    if let Some(known) = known {
        diff(obj, &known, "", &mut out);
    }
    out
}

fn diff(given: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (given, known) {
        (Value::Object(g), Value::Object(k)) => {
            for (key, v) in g {
                if v.is_null() {
                    continue;
                }
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    None => out.push(at),
                    Some(kv) => diff(v, kv, &at, out),
                }
            }
        }
        (Value::Array(g), Value::Array(k)) if g.len() == k.len() => {
            for (i, (gv, kv)) in g.iter().zip(k).enumerate() {
                diff(gv, kv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_found_at_their_paths() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"any": "key"}, "bogus": 1},
            "spec": {"containers": [{"name": "c", "image": "x", "imagePullPolicy": "Always", "colour": "red"}],
                     "foo": {"bar": 1}, "restartPolicy": null}});
        assert_eq!(
            unknown_fields("Pod", &pod),
            ["metadata.bogus", "spec.containers[0].colour", "spec.foo"]
        );
        let clean = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}},
                     "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                     "template": {"metadata": {"labels": {"a": "b"}},
                                  "spec": {"securityContext": {}, "containers": [{"name": "c", "image": "x",
                                           "resources": {"limits": {"cpu": "1"}}, "ports": [{"containerPort": 80}]}]}}}});
        assert!(unknown_fields("Deployment", &clean).is_empty());
        let strict = FieldValidation::Strict.check("Pod", &pod).unwrap_err();
        assert_eq!(
            strict.to_string(),
            "strict decoding error: unknown field \"metadata.bogus\", unknown field \"spec.containers[0].colour\", unknown field \"spec.foo\""
        );
        assert_eq!(FieldValidation::Warn.check("Pod", &pod).unwrap().len(), 3);
        assert!(FieldValidation::Ignore
            .check("Pod", &pod)
            .unwrap()
            .is_empty());
        let q = vec![("fieldValidation".to_string(), "Sometimes".to_string())];
        assert!(FieldValidation::parse(&q).is_err());
    }

    #[test]
    fn events_are_checked_against_their_groups_type() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "eventTime": "2026-01-01T00:00:00.000000Z", "note": "n", "regarding": {"kind": "Pod"},
            "deprecatedCount": 1, "message": "core's", "involvedObject": {}});
        assert_eq!(unknown_fields("Event", &v1), ["involvedObject", "message"]);
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
            "message": "m", "involvedObject": {"kind": "Pod"}, "count": 1, "note": "v1's"});
        assert_eq!(unknown_fields("Event", &core), ["note"]);
    }
}
