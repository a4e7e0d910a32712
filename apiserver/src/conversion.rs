//! Stored forms and the views served over them.
//!
//! events.k8s.io/v1 Events are the core/v1 Events, as in kube-apiserver
//! (where both convert to one internal `Event` stored as core/v1): the
//! objects live under `/registry/events/` in the core/v1 form, and the
//! events.k8s.io/v1 resource converts each one on its way out (get, list,
//! watch) and its way in (create, update, patch). The fields map one to
//! one, as Kubernetes' `pkg/apis/events/v1` conversion maps them:
//!
//! ```text
//! events.k8s.io/v1            core/v1
//! regarding                   involvedObject
//! note                        message
//! reportingController         reportingComponent
//! deprecatedSource            source
//! deprecatedFirstTimestamp    firstTimestamp
//! deprecatedLastTimestamp     lastTimestamp
//! deprecatedCount             count
//! eventTime series related action reason type reportingInstance metadata: as they are
//! ```
//!
//! Worked example: `{"apiVersion":"events.k8s.io/v1","note":"pulled",
//! "regarding":{"kind":"Pod","name":"web"}}` is stored as
//! `{"apiVersion":"v1","message":"pulled","involvedObject":{"kind":"Pod",
//! "name":"web"}}` and read back through either group in that group's
//! form. A field of the other group's form sent to one group (`message` to
//! events.k8s.io) is not one of its fields; it is dropped on conversion, as
//! Kubernetes drops unknown fields, so it can never shadow the real one.

use serde_json::{Map, Value};

use crate::resources::Resource;

/// The events API group.
pub const EVENTS_GROUP: &str = "events.k8s.io";

/// The field-set name of events.k8s.io/v1 Events
/// ([`Resource::field_set`]).
pub const EVENTS_V1_FIELD_SET: &str = "events.events.k8s.io";

/// (events.k8s.io/v1 name, core/v1 name) of every field that differs.
const RENAMED: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// The field labels events.k8s.io/v1 Events may be selected by, each with
/// the core/v1 field-set name it means (Kubernetes'
/// `AddFieldLabelConversionsForEvent` of events/v1); `metadata.name` and
/// `metadata.namespace` as for every resource.
pub const EVENTS_V1_FIELD_LABELS: [(&str, &str); 11] = [
    ("reason", "reason"),
    ("regarding.kind", "involvedObject.kind"),
    ("regarding.namespace", "involvedObject.namespace"),
    ("regarding.name", "involvedObject.name"),
    ("regarding.uid", "involvedObject.uid"),
    ("regarding.apiVersion", "involvedObject.apiVersion"),
    (
        "regarding.resourceVersion",
        "involvedObject.resourceVersion",
    ),
    ("regarding.fieldPath", "involvedObject.fieldPath"),
    ("reportingController", "reportingComponent"),
    ("source", "source"),
    ("type", "type"),
];

/// Whether `r` is the events.k8s.io/v1 view of the core/v1 Events.
pub fn is_events_v1(r: &Resource) -> bool {
    r.group == EVENTS_GROUP && r.name == "events"
}

/// Whether objects of `r` are converted on their way out of storage:
/// events.k8s.io/v1 Events, and custom resources (whose objects may be
/// stored at another version of their CRD).
pub fn converts(r: &Resource) -> bool {
    is_events_v1(r) || r.is_custom()
}

/// Turns an object of `r` as clients see it into its stored form (in
/// place); a no-op for resources stored as served. A custom resource is
/// stored at its CRD's storage version, `None` conversion: only
/// `apiVersion` changes.
pub fn to_storage(r: &'static Resource, obj: &mut Value) {
    if is_events_v1(r) {
        events_v1_to_core(obj);
    } else if r.is_custom() {
        obj["apiVersion"] = Value::String(r.storage().api_version());
    }
}

/// Turns a stored object into `r`'s form (in place); a no-op for resources
/// stored as served.
pub fn from_storage(r: &Resource, obj: &mut Value) {
    if is_events_v1(r) {
        core_to_events_v1(obj);
    } else if r.is_custom() && obj.is_object() {
        obj["apiVersion"] = Value::String(r.api_version());
    }
}

/// An events.k8s.io/v1 Event as the core/v1 Event it is.
pub fn events_v1_to_core(obj: &mut Value) {
    let Some(m) = obj.as_object_mut() else {
        return;
    };
    rename(m, true);
    m.insert("apiVersion".into(), Value::String("v1".into()));
    // A struct, not a pointer, in Kubernetes' core/v1 Event: always there
    // (typed clients, the Python one among them, require it).
    if !m.get("involvedObject").is_some_and(Value::is_object) {
        m.insert("involvedObject".into(), Value::Object(Map::new()));
    }
}

/// A core/v1 Event as the events.k8s.io/v1 Event it is.
pub fn core_to_events_v1(obj: &mut Value) {
    let Some(m) = obj.as_object_mut() else {
        return;
    };
    rename(m, false);
    m.insert(
        "apiVersion".into(),
        Value::String(format!("{EVENTS_GROUP}/v1")),
    );
}

/// Moves each renamed field to its name in the other form (events.k8s.io
/// to core when `to_core`), after dropping every field of the target
/// form's names the object had: those are not fields of the form
/// converted from.
fn rename(m: &mut Map<String, Value>, to_core: bool) {
    let pairs = RENAMED.map(|(v1, core)| if to_core { (v1, core) } else { (core, v1) });
    for (_, to) in pairs {
        m.remove(to);
    }
    for (from, to) in pairs {
        if let Some(v) = m.remove(from) {
            m.insert(to.to_string(), v);
        }
    }
}

/// The value of each core/v1 Event field-set name (`involvedObject.name`,
/// `reportingComponent`, `source`, …) for an Event in either form, as
/// Kubernetes' `ToSelectableFields` computes them from the internal Event:
/// `source` is the source's component, or the reporting controller when
/// there is none.
pub fn event_field(obj: &Value, field: &str) -> String {
    let v1 = obj["apiVersion"].as_str() == Some("events.k8s.io/v1");
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let (involved, reporting, source) = if v1 {
        ("regarding", "reportingController", "deprecatedSource")
    } else {
        ("involvedObject", "reportingComponent", "source")
    };
    match field {
        "reportingComponent" => s(&obj[reporting]),
        "source" => match obj[source]["component"].as_str() {
            Some(c) if !c.is_empty() => c.to_string(),
            _ => s(&obj[reporting]),
        },
        f => match f.strip_prefix("involvedObject.") {
            Some(sub) => s(&obj[involved][sub]),
            None => s(&obj[f]),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v1_event() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "ns"},
            "eventTime": "2026-01-01T00:00:00.000001Z",
            "series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"},
            "reportingController": "example.com/ctl", "reportingInstance": "ctl-1",
            "action": "Pull", "reason": "Pulled", "type": "Normal", "note": "pulled",
            "regarding": {"kind": "Pod", "name": "web", "namespace": "ns", "fieldPath": "spec.containers{c}"},
            "related": {"kind": "Node", "name": "n1"},
            "deprecatedSource": {"component": "kubelet", "host": "n1"},
            "deprecatedFirstTimestamp": "2026-01-01T00:00:00Z",
            "deprecatedLastTimestamp": "2026-01-01T00:01:00Z",
            "deprecatedCount": 2,
        })
    }

    #[test]
    fn events_convert_both_ways_without_loss() {
        let mut core = v1_event();
        events_v1_to_core(&mut core);
        assert_eq!(
            core,
            json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "e", "namespace": "ns"},
                "eventTime": "2026-01-01T00:00:00.000001Z",
                "series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"},
                "reportingComponent": "example.com/ctl", "reportingInstance": "ctl-1",
                "action": "Pull", "reason": "Pulled", "type": "Normal", "message": "pulled",
                "involvedObject": {"kind": "Pod", "name": "web", "namespace": "ns", "fieldPath": "spec.containers{c}"},
                "related": {"kind": "Node", "name": "n1"},
                "source": {"component": "kubelet", "host": "n1"},
                "firstTimestamp": "2026-01-01T00:00:00Z",
                "lastTimestamp": "2026-01-01T00:01:00Z",
                "count": 2,
            })
        );
        core_to_events_v1(&mut core);
        assert_eq!(core, v1_event());
    }

    #[test]
    fn the_other_forms_fields_are_dropped_and_involved_object_is_always_there() {
        let mut v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                            "message": "shadow", "count": 7, "note": "real"});
        events_v1_to_core(&mut v1);
        assert_eq!(
            v1,
            json!({"apiVersion": "v1", "kind": "Event", "message": "real", "involvedObject": {}})
        );
        let mut core = json!({"apiVersion": "v1", "kind": "Event", "note": "shadow",
                              "message": "real", "involvedObject": {"name": "p"}});
        core_to_events_v1(&mut core);
        assert_eq!(
            core,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "note": "real",
                   "regarding": {"name": "p"}})
        );
    }

    #[test]
    fn only_the_events_view_converts() {
        let pods = Resource::find("", "pods").unwrap();
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "message": "x"});
        to_storage(pods, &mut pod);
        from_storage(pods, &mut pod);
        assert_eq!(pod["message"], "x");
        let v1 = Resource::find(EVENTS_GROUP, "events").unwrap();
        let mut e = v1_event();
        to_storage(v1, &mut e);
        assert_eq!(e["apiVersion"], "v1");
        from_storage(v1, &mut e);
        assert_eq!(e, v1_event());
    }

    #[test]
    fn selectable_fields_read_either_form() {
        let v1 = v1_event();
        let mut core = v1.clone();
        events_v1_to_core(&mut core);
        for e in [&v1, &core] {
            assert_eq!(event_field(e, "involvedObject.name"), "web");
            assert_eq!(
                event_field(e, "involvedObject.fieldPath"),
                "spec.containers{c}"
            );
            assert_eq!(event_field(e, "reportingComponent"), "example.com/ctl");
            assert_eq!(event_field(e, "source"), "kubelet");
            assert_eq!(event_field(e, "reason"), "Pulled");
            assert_eq!(event_field(e, "type"), "Normal");
        }
        // Without a source component, the reporting controller is the source.
        let new_style = json!({"apiVersion": "events.k8s.io/v1", "reportingController": "ctl"});
        assert_eq!(event_field(&new_style, "source"), "ctl");
        let new_style = json!({"apiVersion": "v1", "reportingComponent": "ctl", "source": {}});
        assert_eq!(event_field(&new_style, "source"), "ctl");
    }
}
