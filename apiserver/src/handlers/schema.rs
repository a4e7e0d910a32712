//! The write path's gate: every object a client's request would store is
//! first decoded into its `k8s-openapi` type (the schema oracle) and
//! measured. The typed value is thrown away — the object is stored as the
//! client sent it, unknown fields and all — but a field of the wrong type
//! never reaches storage, where it would break every typed client's list
//! and watch of that resource.
//!
//! | found                                   | answer                                   |
//! |-----------------------------------------|------------------------------------------|
//! | serialized object over [`MAX_BODY`]      | 413 `Request entity too large: limit is 3145728` |
//! | a wrong type in a create or update body | 400 `Pod in version "v1" cannot be handled as a Pod: spec.containers: invalid type: …` |
//! | a wrong type after a patch              | 422 `"" is invalid: patch: Invalid value: "<patched object>": spec.containers: …` |
//!
//! The first two answers are kube-apiserver's (its create/update decoder
//! and its storage size limit); the third is its patch handler's, which
//! decodes the patched object into the type and reports a failure as an
//! invalid `patch` field.

use std::io;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::MAX_BODY;
use crate::error::{Cause, Error, Result};
use crate::resources::Resource;

/// The deepest nesting of arrays and objects a stored object may have:
/// the most `serde_json` parses back (its recursion limit is 128 levels,
/// the 128th refused), so every stored object can be read again.
pub(crate) const MAX_DEPTH: usize = 127;

/// How the object to store arrived; it picks the answer to a type error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A create's or update's body (also a status or scale write).
    Body,
    /// The result of applying a patch to the stored object.
    Patch,
}

/// Refuses `obj` unless it fits the request size limit and decodes as
/// `r`'s kind.
pub(crate) fn check(r: &'static Resource, obj: &Value, source: Source) -> Result<()> {
    if encoded_len(obj) > MAX_BODY {
        return Err(Error::TooLarge(MAX_BODY));
    }
    let Err(e) = decode_as(r, obj) else {
        return Ok(());
    };
    Err(match source {
        Source::Body => Error::BadRequest(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {e}",
            kind = r.kind,
            version = r.version,
        )),
        Source::Patch => Error::Invalid {
            group: "",
            kind: "",
            name: String::new(),
            causes: vec![Cause {
                field: "patch".into(),
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {}: {e}", Value::String(obj.to_string())),
            }],
        },
    })
}

/// Decodes `obj` into the `k8s-openapi` type of `r`; the error names the
/// path of the offending field. Resources without a built-in type (none
/// today) are not checked.
fn decode_as(r: &Resource, obj: &Value) -> std::result::Result<(), String> {
    use k8s_openapi::api::{apps, batch, coordination, core as corev, rbac};
    let obj = &numbers_as_quantities(obj);
    match (r.group, r.name) {
        ("", "namespaces") => typed::<corev::v1::Namespace>(obj),
        ("", "pods") => typed::<corev::v1::Pod>(obj),
        ("", "configmaps") => typed::<corev::v1::ConfigMap>(obj),
        ("", "secrets") => typed::<corev::v1::Secret>(obj),
        ("", "serviceaccounts") => typed::<corev::v1::ServiceAccount>(obj),
        ("", "services") => typed::<corev::v1::Service>(obj),
        ("", "nodes") => typed::<corev::v1::Node>(obj),
        ("", "endpoints") => typed::<corev::v1::Endpoints>(obj),
        ("", "events") => typed::<corev::v1::Event>(obj),
        ("events.k8s.io", "events") => {
            typed::<k8s_openapi::api::events::v1::Event>(&super::events::type_check_form(obj))
        }
        ("apps", "deployments") => typed::<apps::v1::Deployment>(obj),
        ("apps", "replicasets") => typed::<apps::v1::ReplicaSet>(obj),
        ("apps", "controllerrevisions") => typed::<apps::v1::ControllerRevision>(obj),
        ("apps", "daemonsets") => typed::<apps::v1::DaemonSet>(obj),
        ("apps", "statefulsets") => typed::<apps::v1::StatefulSet>(obj),
        ("policy", "poddisruptionbudgets") => {
            typed::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(obj)
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => typed::<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        >(obj),
        ("discovery.k8s.io", "endpointslices") => {
            typed::<k8s_openapi::api::discovery::v1::EndpointSlice>(obj)
        }
        ("batch", "jobs") => typed::<batch::v1::Job>(obj),
        ("batch", "cronjobs") => typed::<batch::v1::CronJob>(obj),
        ("coordination.k8s.io", "leases") => typed::<coordination::v1::Lease>(obj),
        ("rbac.authorization.k8s.io", "roles") => typed::<rbac::v1::Role>(obj),
        ("rbac.authorization.k8s.io", "rolebindings") => typed::<rbac::v1::RoleBinding>(obj),
        ("rbac.authorization.k8s.io", "clusterroles") => typed::<rbac::v1::ClusterRole>(obj),
        ("rbac.authorization.k8s.io", "clusterrolebindings") => {
            typed::<rbac::v1::ClusterRoleBinding>(obj)
        }
        _ => Ok(()),
    }
}

fn typed<T: DeserializeOwned>(obj: &Value) -> std::result::Result<(), String> {
    serde_path_to_error::deserialize::<_, T>(obj)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The maps whose values are resource quantities, and the single
/// quantity fields, as the kinds served here define them.
const QUANTITY_MAPS: &[&str] = &[
    "limits",
    "requests",
    "capacity",
    "allocatable",
    "overhead",
    "allocatedResources",
];
const QUANTITY_FIELDS: &[&str] = &["sizeLimit"];

/// `obj` with numeric quantities (`cpu: 1`) as strings: Kubernetes parses
/// a quantity from a JSON number or string, `k8s-openapi` from a string
/// only. Only the copy being checked changes; borrowed when nothing does.
fn numbers_as_quantities(obj: &Value) -> std::borrow::Cow<'_, Value> {
    fn has(v: &Value) -> bool {
        let mut stack = vec![v];
        while let Some(v) = stack.pop() {
            match v {
                Value::Array(a) => stack.extend(a),
                Value::Object(m) => {
                    for (k, v) in m {
                        let numeric = match v {
                            Value::Number(_) => QUANTITY_FIELDS.contains(&k.as_str()),
                            Value::Object(q) if QUANTITY_MAPS.contains(&k.as_str()) => {
                                q.values().any(Value::is_number)
                            }
                            _ => false,
                        };
                        if numeric {
                            return true;
                        }
                        stack.push(v);
                    }
                }
                _ => {}
            }
        }
        false
    }
    fn fix(v: &mut Value) {
        let mut stack = vec![v];
        while let Some(v) = stack.pop() {
            match v {
                Value::Array(a) => stack.extend(a.iter_mut()),
                Value::Object(m) => {
                    for (k, v) in m.iter_mut() {
                        if let Value::Number(n) = v {
                            if QUANTITY_FIELDS.contains(&k.as_str()) {
                                *v = Value::String(n.to_string());
                            }
                        } else if let Value::Object(q) = v {
                            if QUANTITY_MAPS.contains(&k.as_str()) {
                                for q in q.values_mut() {
                                    if let Value::Number(n) = q {
                                        *q = Value::String(n.to_string());
                                    }
                                }
                            }
                        }
                        stack.push(v);
                    }
                }
                _ => {}
            }
        }
    }
    if !has(obj) {
        return std::borrow::Cow::Borrowed(obj);
    }
    let mut copy = obj.clone();
    fix(&mut copy);
    std::borrow::Cow::Owned(copy)
}

/// The length of `v` serialized as JSON, without building the bytes.
pub(crate) fn encoded_len(v: &Value) -> usize {
    struct Count(usize);
    impl io::Write for Count {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // Writing to a counter cannot fail, and a Value always serializes.
    let _ = serde_json::to_writer(&mut n, v);
    n.0
}

/// The nesting depth of `v` (a scalar 0, `[]` 1, `[{}]` 2), walked without
/// recursion so any depth is safe to measure.
pub(crate) fn depth(v: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(a) => {
                max = max.max(d + 1);
                stack.extend(a.iter().map(|x| (x, d + 1)));
            }
            Value::Object(m) => {
                max = max.max(d + 1);
                stack.extend(m.values().map(|x| (x, d + 1)));
            }
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::RESOURCES;
    use serde_json::json;

    fn pods() -> &'static Resource {
        Resource::find("", "pods").unwrap()
    }

    #[test]
    fn every_served_kind_has_a_type() {
        for r in RESOURCES {
            let ok =
                json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": {"name": "x"}});
            check(r, &ok, Source::Body).unwrap_or_else(|e| panic!("{}: {e}", r.name));
            let bad =
                json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": {"name": 5}});
            let Err(Error::BadRequest(msg)) = check(r, &bad, Source::Body) else {
                panic!("{}: a numeric name was accepted", r.name)
            };
            let prefix = format!(
                "{k} in version \"v1\" cannot be handled as a {k}: metadata.name: invalid type",
                k = r.kind
            );
            assert!(msg.starts_with(&prefix), "{msg}");
        }
    }

    #[test]
    fn wrong_types_are_refused_with_their_path() {
        let pod = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"},
                         "spec": {"containers": "nginx"}});
        let e = check(pods(), &pod, Source::Body).unwrap_err();
        assert_eq!((e.code(), e.reason()), (400, "BadRequest"));
        assert_eq!(
            e.to_string(),
            "Pod in version \"v1\" cannot be handled as a Pod: spec.containers: invalid type: string \"nginx\", expected a sequence"
        );
        // The same after a patch: kube's 422 on the `patch` field.
        let e = check(pods(), &pod, Source::Patch).unwrap_err();
        assert_eq!((e.code(), e.reason()), (422, "Invalid"));
        let status = e.status();
        assert_eq!(status["details"]["causes"][0]["field"], "patch");
        assert!(e
            .to_string()
            .starts_with(" \"\" is invalid: patch: Invalid value: \"{"));
        assert!(e
            .to_string()
            .ends_with("spec.containers: invalid type: string \"nginx\", expected a sequence"));
        // int64 grace periods beyond int64, or not integers at all.
        for grace in [json!(1e30), json!(9223372036854775808u64), json!("30")] {
            let pod = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"},
                             "spec": {"containers": [], "terminationGracePeriodSeconds": grace}});
            let e = check(pods(), &pod, Source::Body).unwrap_err();
            assert_eq!(e.code(), 400, "{grace}");
            assert!(
                e.to_string()
                    .contains("spec.terminationGracePeriodSeconds: invalid"),
                "{e}"
            );
        }
    }

    #[test]
    fn unknown_fields_missing_fields_and_numeric_quantities_pass() {
        let pod = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "extra": 1},
            "spec": {"containers": [{"image": "x", "resources": {"limits": {"cpu": 1, "memory": "1Gi"}}}],
                     "volumes": [{"name": "v", "emptyDir": {"sizeLimit": 1000}}], "bogus": [1]}});
        check(pods(), &pod, Source::Body).unwrap();
        let pod = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": true}}}]}});
        assert_eq!(check(pods(), &pod, Source::Body).unwrap_err().code(), 400);
    }

    #[test]
    fn objects_over_the_body_limit_are_too_large() {
        let cms = Resource::find("", "configmaps").unwrap();
        let big = json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c"},
                         "data": {"x": "y".repeat(MAX_BODY)}});
        let e = check(cms, &big, Source::Body).unwrap_err();
        assert_eq!((e.code(), e.reason()), (413, "RequestEntityTooLarge"));
        assert_eq!(e.to_string(), "Request entity too large: limit is 3145728");
        assert_eq!(
            encoded_len(&json!({"a": [1, "b"]})),
            r#"{"a":[1,"b"]}"#.len()
        );
    }

    #[test]
    fn max_depth_is_what_serde_json_parses_back() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let ok: Value = serde_json::from_str(&nested(MAX_DEPTH)).unwrap();
        assert_eq!(depth(&ok), MAX_DEPTH);
        assert!(serde_json::from_str::<Value>(&nested(MAX_DEPTH + 1)).is_err());
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!([{}])), 2);
    }
}
