//! apps/v1 ControllerRevisions: the immutable snapshots of a workload's
//! template that DaemonSets and StatefulSets keep for rollbacks, checked
//! as kube-apiserver's ControllerRevision strategy checks them.
//!
//! Worked example — what the DaemonSet controller stores for `ds/web`:
//!
//! ```text
//! metadata.name: web-5d4f8c7b9        (<owner>-<hash>)
//! metadata.labels: {controller-revision-hash: 5d4f8c7b9, <the DaemonSet's selector labels>}
//! metadata.ownerReferences: [{kind: DaemonSet, name: web, controller: true, …}]
//! data: {spec: {template: {…, $patch: replace}}}
//! revision: 1
//! ```
//!
//! `data` is required and never changes; `revision` may (a rollback
//! renumbers the revision it returns to) but not below 0. `kubectl get
//! controllerrevisions` shows NAME, CONTROLLER (`daemonset.apps/web`),
//! REVISION and AGE.

use serde_json::{json, Value};

use crate::error::{Cause, Error, Result};

/// The Table columns, as kube's printer has them.
pub(super) const COLUMNS: &[(&str, &str, u8)] = &[
    ("Name", "string", 0),
    ("Controller", "string", 0),
    ("Revision", "integer", 0),
    ("Age", "string", 0),
];

/// A Table row's cells for `o`, given its printed name and age.
pub(super) fn cells(o: &Value, name: Value, age: Value) -> Vec<Value> {
    let owner = o["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|refs| refs.iter().find(|r| r["controller"] == true));
    let controller = match owner {
        Some(r) => {
            let kind = r["kind"].as_str().unwrap_or_default().to_lowercase();
            let group = r["apiVersion"]
                .as_str()
                .and_then(|v| v.rsplit_once('/'))
                .map(|(g, _)| g)
                .unwrap_or_default();
            let name = r["name"].as_str().unwrap_or_default();
            if group.is_empty() {
                format!("{kind}/{name}")
            } else {
                format!("{kind}.{group}/{name}")
            }
        }
        None => "<none>".into(),
    };
    vec![
        name,
        json!(controller),
        json!(o["revision"].as_i64().unwrap_or(0)),
        age,
    ]
}

/// Adds the causes that make `obj` an invalid ControllerRevision.
pub(super) fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    if obj.get("data").is_none_or(Value::is_null) {
        causes.push(Cause {
            field: "data".into(),
            reason: "FieldValueRequired",
            message: "Required value: data is mandatory".into(),
        });
    }
    if let Some(n) = obj["revision"].as_i64().filter(|n| *n < 0) {
        causes.push(Cause {
            field: "revision".into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {n}: must be greater than or equal to 0"),
        });
    }
}

/// An update may not change `data`.
pub(super) fn check_update(name: &str, old: &Value, new: &Value) -> Result<()> {
    if old.get("data") == new.get("data") {
        return Ok(());
    }
    Err(Error::Invalid {
        group: "apps",
        kind: "ControllerRevision",
        name: name.to_string(),
        causes: vec![Cause {
            field: "data".into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {}: field is immutable", new["data"]),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(data: Value, n: i64) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
               "metadata": {"name": "web-abc", "ownerReferences": [
                   {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "web",
                    "uid": "u", "controller": true}]},
               "data": data, "revision": n})
    }

    #[test]
    fn validation_and_immutable_data() {
        let ok = revision(json!({"spec": {}}), 1);
        let mut c = Vec::new();
        validate(&ok, &mut c);
        assert!(c.is_empty());
        let mut bad = revision(Value::Null, -2);
        bad.as_object_mut().unwrap().remove("data");
        validate(&bad, &mut c);
        let msgs: Vec<String> = c
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            msgs,
            [
                "data: Required value: data is mandatory",
                "revision: Invalid value: -2: must be greater than or equal to 0"
            ]
        );
        let mut renumbered = ok.clone();
        renumbered["revision"] = json!(3);
        assert!(check_update("web-abc", &ok, &renumbered).is_ok());
        let changed = revision(json!({"spec": {"x": 1}}), 1);
        let Err(Error::Invalid { causes, .. }) = check_update("web-abc", &ok, &changed) else {
            panic!("data change accepted");
        };
        assert_eq!(causes[0].field, "data");
        assert!(causes[0].message.ends_with("field is immutable"));
    }

    #[test]
    fn rows_name_the_controller() {
        let row = cells(&revision(json!({}), 4), json!("web-abc"), json!("5s"));
        assert_eq!(
            row,
            [
                json!("web-abc"),
                json!("daemonset.apps/web"),
                json!(4),
                json!("5s")
            ]
        );
        let orphan = json!({"metadata": {"name": "x"}, "data": {}, "revision": 0});
        assert_eq!(cells(&orphan, json!("x"), json!("1s"))[1], "<none>");
    }
}
