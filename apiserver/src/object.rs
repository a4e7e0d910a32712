//! [`Object`]: one stored object as the cache and the handlers see it — the
//! JSON bytes (serialized once, with `metadata.resourceVersion` set to the
//! etcd `mod_revision`) plus the few fields selectors and indexes need.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::Value;

use crate::conversion;
use crate::error::{Error, Result};
use crate::resources::Resource;

/// A decoded, immutable object version.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// The etcd key.
    pub key: String,
    /// `""` for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `spec.nodeName` (pods), `""` when unset.
    pub node_name: String,
    /// `status.phase`, `""` when unset.
    pub phase: String,
    /// Further fields field selectors may name, per kind (events:
    /// `involvedObject.*`, `reason`, `type`, `source`, …).
    pub fields: Vec<(&'static str, String)>,
    /// The etcd mod_revision this version was written at.
    pub resource_version: i64,
    /// The full object as JSON, resourceVersion included.
    pub json: Bytes,
}

impl Object {
    /// Decodes a stored value written at `revision`.
    pub fn decode(key: &[u8], value: &[u8], revision: i64) -> Result<Object> {
        let key = String::from_utf8(key.to_vec())
            .map_err(|_| Error::Internal("a registry key is not UTF-8".into()))?;
        let mut value: Value = serde_json::from_slice(value)
            .map_err(|e| Error::Internal(format!("stored object at {key} is not JSON: {e}")))?;
        Self::from_value(key, &mut value, revision)
    }

    /// Decodes a stored value of `r` written at `revision`, in `r`'s form
    /// (an events.k8s.io/v1 Event from its stored core/v1 form).
    pub fn decode_as(r: &Resource, key: &[u8], value: &[u8], revision: i64) -> Result<Object> {
        if !conversion::converts(r) {
            return Self::decode(key, value, revision);
        }
        let key = String::from_utf8(key.to_vec())
            .map_err(|_| Error::Internal("a registry key is not UTF-8".into()))?;
        let mut value: Value = serde_json::from_slice(value)
            .map_err(|e| Error::Internal(format!("stored object at {key} is not JSON: {e}")))?;
        conversion::from_storage(r, &mut value);
        Self::from_value(key, &mut value, revision)
    }

    /// Sets `metadata.resourceVersion` in `value` and encodes it.
    pub fn from_value(key: String, value: &mut Value, revision: i64) -> Result<Object> {
        set_resource_version(value, revision);
        let json =
            Bytes::from(serde_json::to_vec(&value).map_err(|e| Error::Internal(e.to_string()))?);
        let meta = &value["metadata"];
        let labels = meta["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Object {
            key,
            namespace: str_at(meta, "namespace"),
            name: str_at(meta, "name"),
            labels,
            node_name: str_at(&value["spec"], "nodeName"),
            phase: str_at(&value["status"], "phase"),
            fields: selectable_fields(value),
            resource_version: revision,
            json,
        })
    }

    /// The object as a JSON value.
    pub fn value(&self) -> Result<Value> {
        serde_json::from_slice(&self.json).map_err(|e| Error::Internal(e.to_string()))
    }

    /// This object re-encoded with another resourceVersion (the revision of
    /// its deletion, for a DELETED event).
    pub fn at_revision(&self, revision: i64) -> Result<Object> {
        let mut v = self.value()?;
        Object::from_value(self.key.clone(), &mut v, revision)
    }
}

/// Field-selector fields beyond name, namespace, nodeName and phase, as
/// kube-apiserver's field sets for the kind define them (Events: the
/// core/v1 names, whichever group's form the Event is in; events.k8s.io
/// labels map onto them, see `conversion::EVENTS_V1_FIELD_LABELS`).
pub const EVENT_FIELDS: [&str; 11] = [
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

fn selectable_fields(v: &Value) -> Vec<(&'static str, String)> {
    match v["kind"].as_str() {
        Some("Event") => EVENT_FIELDS
            .iter()
            .map(|f| (*f, conversion::event_field(v, f)))
            .collect(),
        _ => Vec::new(),
    }
}

fn str_at(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_default().to_string()
}

/// Writes `metadata.resourceVersion` as Kubernetes spells it: a string.
pub fn set_resource_version(value: &mut Value, revision: i64) {
    if let Some(obj) = value.as_object_mut() {
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(
                "resourceVersion".into(),
                Value::String(revision.to_string()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_extracts_selector_fields_and_sets_the_revision() {
        let raw = br#"{"kind":"Pod","metadata":{"name":"a","namespace":"ns","labels":{"app":"web"}},"spec":{"nodeName":"n1"},"status":{"phase":"Running"}}"#;
        let o = Object::decode(b"/registry/pods/ns/a", raw, 42).unwrap();
        assert_eq!((o.namespace.as_str(), o.name.as_str()), ("ns", "a"));
        assert_eq!(o.labels["app"], "web");
        assert_eq!(o.node_name, "n1");
        assert_eq!(o.phase, "Running");
        assert_eq!(o.value().unwrap()["metadata"]["resourceVersion"], "42");
        assert_eq!(
            o.at_revision(50).unwrap().value().unwrap()["metadata"]["resourceVersion"],
            "50"
        );
    }

    #[test]
    fn events_decode_in_the_form_of_the_resource_asked_for() {
        let raw = br#"{"apiVersion":"v1","kind":"Event","metadata":{"name":"e","namespace":"ns"},"involvedObject":{"kind":"Pod","name":"web"},"message":"m","reportingComponent":"kubelet","source":{}}"#;
        let core = Resource::find("", "events").unwrap();
        let v1 = Resource::find("events.k8s.io", "events").unwrap();
        let a = Object::decode_as(core, b"/registry/events/ns/e", raw, 7).unwrap();
        let b = Object::decode_as(v1, b"/registry/events/ns/e", raw, 7).unwrap();
        assert_eq!(a.value().unwrap()["message"], "m");
        let bv = b.value().unwrap();
        assert_eq!(bv["apiVersion"], "events.k8s.io/v1");
        assert_eq!(bv["note"], "m");
        assert_eq!(bv["regarding"]["name"], "web");
        // The same selectable fields from either form.
        assert_eq!(a.fields, b.fields);
        let field = |o: &Object, f: &str| {
            o.fields
                .iter()
                .find(|(n, _)| *n == f)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(field(&b, "involvedObject.name").as_deref(), Some("web"));
        assert_eq!(field(&b, "source").as_deref(), Some("kubelet"));
    }
}
