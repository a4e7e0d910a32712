//! Validation of Events, as Kubernetes' `ValidateEventCreate` and
//! `ValidateEventUpdate` do it for the group-version of the request:
//!
//! - Every Event, through either group, passes the legacy checks. An Event
//!   without `eventTime` (the old style, as `kubectl create` and client-go's
//!   `record` write them) needs only `involvedObject.namespace` to agree
//!   with its own namespace; one with `eventTime` (the new style) also
//!   needs `reportingController` (a qualified name), `reportingInstance`,
//!   `action` and `reason` (each at most 128 characters) and a message of
//!   at most 1024.
//! - Created through events.k8s.io/v1, an Event must be new-style:
//!   `eventTime` set, `type` Normal or Warning, a `series` (if any) of at
//!   least 2 with its `lastObservedTime`, and none of the deprecated
//!   fields (`deprecatedCount`, `deprecatedFirstTimestamp`, …) set.
//! - Updated through events.k8s.io/v1, everything but `series` and the
//!   metadata is immutable.
//!
//! As in Kubernetes, the causes name the fields of the internal Event —
//! the core/v1 names (`message`, `involvedObject.namespace`, `count`) —
//! whichever group the request came through; the message texts are
//! Kubernetes'.

use std::borrow::Cow;

use serde_json::{json, Value};

use crate::conversion;
use crate::error::Cause;
use crate::resources::Resource;

/// Kubernetes' limits on new-style Events.
const REPORTING_INSTANCE_MAX: usize = 128;
const ACTION_MAX: usize = 128;
const REASON_MAX: usize = 128;
const NOTE_MAX: usize = 1024;
/// A qualified name's name part.
const QUALIFIED_NAME_MAX: usize = 63;
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// The fields an events.k8s.io/v1 update may not change (core/v1 names).
const IMMUTABLE: [&str; 13] = [
    "involvedObject",
    "reason",
    "message",
    "source",
    "firstTimestamp",
    "lastTimestamp",
    "count",
    "type",
    "eventTime",
    "action",
    "related",
    "reportingComponent",
    "reportingInstance",
];

/// Adds the causes that make `obj` (an Event of `r`, created when `old` is
/// `None`, else replacing `old`) invalid.
pub(super) fn validate(r: &Resource, obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let e = core_form(r, obj);
    legacy(&e, causes);
    if !conversion::is_events_v1(r) {
        return;
    }
    match old {
        None => strict_create(&e, causes),
        Some(old) => {
            let old = core_form(r, old);
            if e["series"] != old["series"] {
                series(&e, causes);
            }
            for field in IMMUTABLE {
                if !same(&e[field], &old[field]) {
                    let path = match field {
                        "reportingComponent" => "reportingController",
                        f => f,
                    };
                    causes.push(invalid(path, &e[field], "field is immutable"));
                }
            }
        }
    }
}

/// The object a type check of an events.k8s.io/v1 Event decodes: `obj`,
/// with a stand-in for a missing `series.lastObservedTime`, which the
/// typed schema requires but Kubernetes decodes as zero and reports in
/// validation (422 `series.lastObservedTime: Required value`).
pub(super) fn type_check_form(obj: &Value) -> Cow<'_, Value> {
    let series = &obj["series"];
    if !series.is_object() || !series["lastObservedTime"].is_null() {
        return Cow::Borrowed(obj);
    }
    let mut copy = obj.clone();
    copy["series"]["lastObservedTime"] = json!("1970-01-01T00:00:00.000000Z");
    Cow::Owned(copy)
}

fn core_form<'a>(r: &Resource, obj: &'a Value) -> Cow<'a, Value> {
    if !conversion::is_events_v1(r) {
        return Cow::Borrowed(obj);
    }
    let mut copy = obj.clone();
    conversion::events_v1_to_core(&mut copy);
    Cow::Owned(copy)
}

/// Kubernetes' `legacyValidateEvent`.
fn legacy(e: &Value, causes: &mut Vec<Cause>) {
    let namespace = text(&e["metadata"]["namespace"]);
    let involved_ns = text(&e["involvedObject"]["namespace"]);
    let mismatch = || {
        invalid(
            "involvedObject.namespace",
            &json!(involved_ns),
            "does not match event.namespace",
        )
    };
    if !is_set(&e["eventTime"]) {
        let agrees = if involved_ns.is_empty() {
            namespace.is_empty() || namespace == "default"
        } else {
            namespace == involved_ns
        };
        if !agrees {
            causes.push(mismatch());
        }
        return;
    }
    if involved_ns.is_empty() && namespace != "default" && namespace != "kube-system" {
        causes.push(mismatch());
    }
    let controller = text(&e["reportingComponent"]);
    if controller.is_empty() {
        causes.push(required("reportingController"));
    }
    for msg in qualified_name_errors(controller) {
        causes.push(invalid("reportingController", &json!(controller), &msg));
    }
    let too_long = |field: &str, max: usize| {
        invalid(
            field,
            &json!(""),
            &format!("can have at most {max} characters"),
        )
    };
    for (field, max) in [
        ("reportingInstance", REPORTING_INSTANCE_MAX),
        ("action", ACTION_MAX),
        ("reason", REASON_MAX),
    ] {
        let v = text(&e[field]);
        if v.is_empty() {
            causes.push(required(field));
        }
        if v.len() > max {
            causes.push(too_long(field, max));
        }
    }
    if text(&e["message"]).len() > NOTE_MAX {
        causes.push(too_long("message", NOTE_MAX));
    }
}

/// What only a create through events.k8s.io/v1 must meet.
fn strict_create(e: &Value, causes: &mut Vec<Cause>) {
    series(e, causes);
    if !is_set(&e["eventTime"]) {
        causes.push(required("eventTime"));
    }
    let kind = text(&e["type"]);
    if kind != "Normal" && kind != "Warning" {
        causes.push(invalid(
            "type",
            &json!(""),
            &format!("has invalid value: {kind}"),
        ));
    }
    let unset = |field: &str| invalid(field, &json!(""), "needs to be unset");
    for field in ["firstTimestamp", "lastTimestamp"] {
        if is_set(&e[field]) {
            causes.push(unset(field));
        }
    }
    if e["count"].as_i64().is_some_and(|n| n != 0) {
        causes.push(unset("count"));
    }
    let source = &e["source"];
    if !text(&source["component"]).is_empty() || !text(&source["host"]).is_empty() {
        causes.push(unset("source"));
    }
}

/// Kubernetes' `validateV1EventSeries`.
fn series(e: &Value, causes: &mut Vec<Cause>) {
    let s = &e["series"];
    if !s.is_object() {
        return;
    }
    if s["count"].as_i64().unwrap_or(0) < 2 {
        causes.push(invalid("series.count", &json!(""), "should be at least 2"));
    }
    if !is_set(&s["lastObservedTime"]) {
        causes.push(required("series.lastObservedTime"));
    }
}

/// Kubernetes' `IsQualifiedName`: `[prefix/]name`, the prefix a DNS
/// subdomain, the name at most 63 alphanumerics, `-`, `_` or `.`, starting
/// and ending with an alphanumeric.
fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else if !super::validation::is_dns1123_subdomain(prefix) {
                errs.push(format!("prefix part {SUBDOMAIN_MSG}"));
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {QUALIFIED_NAME_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )]
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX {
        errs.push(format!(
            "name part must be no more than {QUALIFIED_NAME_MAX} characters"
        ));
    }
    let b = name.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    let inner = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    let well_formed =
        b.first().is_some_and(edge) && b.last().is_some_and(edge) && b.iter().all(inner);
    if !well_formed {
        errs.push(format!("name part {QUALIFIED_NAME_MSG}"));
    }
    errs
}

/// Whether a timestamp field holds a time (Kubernetes decodes a missing or
/// null one as the zero time, which counts as unset).
fn is_set(v: &Value) -> bool {
    v.as_str().is_some_and(|s| !s.is_empty())
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// Equal as Kubernetes compares the decoded fields: a missing field, a
/// null and the zero value are the same.
fn same(a: &Value, b: &Value) -> bool {
    a == b || (is_zero(a) && is_zero(b))
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Object(m) => m.values().all(is_zero),
        _ => false,
    }
}

/// `Invalid value: <value>: <detail>`, the value printed as Kubernetes
/// prints it (strings quoted, numbers bare, anything else as JSON).
fn invalid(field: &str, value: &Value, detail: &str) -> Cause {
    let shown = match value {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".to_string(),
        v => v.to_string(),
    };
    Cause {
        field: field.into(),
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {shown}: {detail}"),
    }
}

fn required(field: &str) -> Cause {
    Cause {
        field: field.into(),
        reason: "FieldValueRequired",
        message: "Required value".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> &'static Resource {
        Resource::find("", "events").unwrap()
    }

    fn v1() -> &'static Resource {
        Resource::find("events.k8s.io", "events").unwrap()
    }

    fn causes(r: &Resource, obj: &Value, old: Option<&Value>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        validate(r, obj, old, &mut out);
        out.into_iter().map(|c| (c.field, c.message)).collect()
    }

    fn new_style() -> Value {
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
               "metadata": {"name": "e", "namespace": "ns"},
               "eventTime": "2026-01-01T00:00:00.000000Z",
               "reportingController": "example.com/ctl", "reportingInstance": "ctl-1",
               "action": "Pull", "reason": "Pulled", "type": "Normal", "note": "pulled",
               "regarding": {"kind": "Pod", "name": "web", "namespace": "ns"}})
    }

    #[test]
    fn a_complete_new_style_event_passes_through_either_group() {
        assert!(causes(v1(), &new_style(), None).is_empty());
        let mut core_form = new_style();
        conversion::events_v1_to_core(&mut core_form);
        assert!(causes(core(), &core_form, None).is_empty());
    }

    #[test]
    fn an_events_k8s_io_create_needs_the_new_style_fields() {
        let e = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                       "metadata": {"name": "e", "namespace": "ns"},
                       "regarding": {"kind": "Pod", "name": "web", "namespace": "ns"},
                       "type": "Sometimes", "series": {"count": 1},
                       "deprecatedCount": 3, "deprecatedSource": {"component": "kubelet"},
                       "deprecatedFirstTimestamp": "2026-01-01T00:00:00Z"});
        assert_eq!(
            causes(v1(), &e, None),
            [
                ("series.count", "Invalid value: \"\": should be at least 2"),
                ("series.lastObservedTime", "Required value"),
                ("eventTime", "Required value"),
                ("type", "Invalid value: \"\": has invalid value: Sometimes"),
                ("firstTimestamp", "Invalid value: \"\": needs to be unset"),
                ("count", "Invalid value: \"\": needs to be unset"),
                ("source", "Invalid value: \"\": needs to be unset"),
            ]
            .map(|(f, m)| (f.to_string(), m.to_string()))
        );
        // The same object through core/v1 is an old-style Event: valid.
        let mut old_style = e.clone();
        conversion::events_v1_to_core(&mut old_style);
        assert!(causes(core(), &old_style, None).is_empty());
    }

    #[test]
    fn new_style_events_need_reporter_action_and_reason_within_limits() {
        let mut e = new_style();
        e["reportingController"] = json!("");
        e["reportingInstance"] = json!("i".repeat(129));
        e["action"] = json!("");
        e["reason"] = json!("r".repeat(129));
        e["note"] = json!("n".repeat(1025));
        e["regarding"]["namespace"] = json!("");
        let found = causes(v1(), &e, None);
        let fields: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "involvedObject.namespace",
                "reportingController",
                "reportingController",
                "reportingController",
                "reportingInstance",
                "action",
                "reason",
                "message",
            ]
        );
        assert_eq!(
            found[0].1,
            "Invalid value: \"\": does not match event.namespace"
        );
        assert_eq!(
            found[2].1,
            "Invalid value: \"\": name part must be non-empty"
        );
        assert_eq!(
            found[4].1,
            "Invalid value: \"\": can have at most 128 characters"
        );
        assert_eq!(
            found[7].1,
            "Invalid value: \"\": can have at most 1024 characters"
        );
    }

    #[test]
    fn old_style_events_need_only_matching_namespaces() {
        let e = |ns: &str, involved: Option<&str>| {
            let mut e = json!({"apiVersion": "v1", "kind": "Event",
                               "metadata": {"name": "e", "namespace": ns},
                               "involvedObject": {"kind": "Node", "name": "n1"}});
            if let Some(i) = involved {
                e["involvedObject"]["namespace"] = json!(i);
            }
            e
        };
        assert!(causes(core(), &e("default", None), None).is_empty());
        assert!(causes(core(), &e("a", Some("a")), None).is_empty());
        assert_eq!(
            causes(core(), &e("a", None), None),
            [(
                "involvedObject.namespace".to_string(),
                "Invalid value: \"\": does not match event.namespace".to_string()
            )]
        );
        assert_eq!(causes(core(), &e("a", Some("b")), None).len(), 1);
    }

    #[test]
    fn events_k8s_io_updates_change_only_the_series() {
        let old = new_style();
        let mut next = old.clone();
        next["series"] = json!({"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"});
        next["metadata"]["labels"] = json!({"a": "b"});
        assert!(causes(v1(), &next, Some(&old)).is_empty());
        next["note"] = json!("changed");
        next["reportingController"] = json!("other");
        next["series"] = json!({"count": 1, "lastObservedTime": "2026-01-01T00:01:00.000000Z"});
        assert_eq!(
            causes(v1(), &next, Some(&old)),
            [
                ("series.count", "Invalid value: \"\": should be at least 2"),
                ("message", "Invalid value: \"changed\": field is immutable"),
                (
                    "reportingController",
                    "Invalid value: \"other\": field is immutable"
                ),
            ]
            .map(|(f, m)| (f.to_string(), m.to_string()))
        );
        // Through core/v1, only the legacy checks apply.
        let (mut c_old, mut c_next) = (old, next);
        conversion::events_v1_to_core(&mut c_old);
        conversion::events_v1_to_core(&mut c_next);
        assert!(causes(core(), &c_next, Some(&c_old)).is_empty());
    }

    #[test]
    fn qualified_names_as_kubernetes_checks_them() {
        for ok in ["kubelet", "example.com/my-ctl_1", "A.b"] {
            assert!(qualified_name_errors(ok).is_empty(), "{ok}");
        }
        assert_eq!(qualified_name_errors("-x").len(), 1);
        assert_eq!(qualified_name_errors("a/b/c").len(), 1);
        assert_eq!(
            qualified_name_errors("/x"),
            ["prefix part must be non-empty"]
        );
        assert_eq!(
            qualified_name_errors(&"x".repeat(64)),
            ["name part must be no more than 63 characters"]
        );
        assert!(qualified_name_errors("Bad_Prefix/x")[0].starts_with("prefix part a lowercase"));
    }

    #[test]
    fn a_series_without_its_time_still_type_checks() {
        let e = json!({"series": {"count": 2}});
        assert_eq!(
            type_check_form(&e)["series"]["lastObservedTime"],
            "1970-01-01T00:00:00.000000Z"
        );
        let full = json!({"series": {"count": 2, "lastObservedTime": "x"}});
        assert!(matches!(type_check_form(&full), Cow::Borrowed(_)));
    }
}
