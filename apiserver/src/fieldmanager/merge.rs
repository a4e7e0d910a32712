//! The field-level operations on objects: which fields an object sets
//! (structured-merge-diff's `ToFieldSet`), merging an applied
//! configuration into a live object, comparing two objects field by
//! field, and removing fields.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::set::{Element, FieldSet, Path};
use super::types::{key_default, ListType, Types};

/// Fields no manager owns: identity and server-kept metadata.
const UNOWNED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "creationTimestamp",
    "selfLink",
    "uid",
    "clusterName",
    "generation",
    "managedFields",
    "resourceVersion",
];

/// Whether the field `name` of the value at `path` is left out of every
/// field set (with all below it).
fn unowned(path: &[Element], name: &str) -> bool {
    match path {
        [] => name == "apiVersion" || name == "kind",
        [m] => m == "f:metadata" && UNOWNED_METADATA.contains(&name),
        _ => false,
    }
}

/// The path element of a list's `index`th element `item`: its key fields
/// for a list map (`k:{"name":"a"}`), itself for a set (`v:"a"`), its
/// index when it has none of the keys.
pub fn element(list: &ListType, index: usize, item: &Value) -> Element {
    match list {
        ListType::Set => format!("v:{item}"),
        ListType::Map(keys) => {
            let fields: Vec<String> = keys
                .iter()
                .filter_map(|k| {
                    let v = item.get(k).cloned().or_else(|| key_default(k))?;
                    Some(format!("{}:{v}", Value::String(k.clone())))
                })
                .collect();
            if fields.is_empty() {
                format!("i:{index}")
            } else {
                format!("k:{{{}}}", fields.join(","))
            }
        }
        ListType::Atomic => format!("i:{index}"),
    }
}

/// Every path `v` sets, with the value found there: scalars, nulls, empty
/// maps, atomic lists and maps, and each element of a set or list map.
pub fn leaves<'v>(v: &'v Value, t: Types<'v>) -> BTreeMap<Path, &'v Value> {
    let mut out = BTreeMap::new();
    walk(v, t, &mut Vec::new(), &mut out);
    out
}

fn walk<'v>(v: &'v Value, t: Types<'v>, path: &mut Path, out: &mut BTreeMap<Path, &'v Value>) {
    match v {
        Value::Object(m) if !m.is_empty() && !t.atomic_map() => {
            for (k, c) in m {
                if unowned(path, k) {
                    continue;
                }
                path.push(format!("f:{k}"));
                walk(c, t.field(k), path, out);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let list = t.list_type(items);
            if list == ListType::Atomic {
                out.insert(path.clone(), v);
                return;
            }
            for (i, item) in items.iter().enumerate() {
                path.push(element(&list, i, item));
                out.insert(path.clone(), item);
                if matches!(list, ListType::Map(_)) {
                    walk(item, t.items(), path, out);
                }
                path.pop();
            }
        }
        _ if path.is_empty() || *path == ["f:metadata"] => {}
        _ => {
            out.insert(path.clone(), v);
        }
    }
}

/// The fields `v` sets.
pub fn field_set(v: &Value, t: Types<'_>) -> FieldSet {
    leaves(v, t).into_keys().collect()
}

/// `v` without the nulls of its maps (a null in an applied configuration
/// removes the field).
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, c)| !c.is_null())
                .map(|(k, c)| (k.clone(), without_nulls(c)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// The live object with an applied configuration merged in: maps field by
/// field, list maps and sets element by element, everything else replaced.
pub fn merge(live: &Value, config: &Value, t: Types<'_>) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) if !t.atomic_map() => {
            let mut out: Map<String, Value> = l.clone();
            for (k, cv) in c {
                if cv.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = match l.get(k) {
                    Some(lv) => merge(lv, cv, t.field(k)),
                    None => without_nulls(cv),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => {
            let list = t.list_type(if c.is_empty() { l } else { c });
            match list {
                ListType::Atomic => without_nulls(config),
                ListType::Set => {
                    let mut out = l.clone();
                    for item in c {
                        if !out.contains(item) {
                            out.push(item.clone());
                        }
                    }
                    Value::Array(out)
                }
                ListType::Map(_) => {
                    let mut out = l.clone();
                    for (i, item) in c.iter().enumerate() {
                        let id = element(&list, i, item);
                        let found = out
                            .iter()
                            .enumerate()
                            .position(|(j, x)| element(&list, j, x) == id);
                        match found {
                            Some(j) => out[j] = merge(&out[j], item, t.items()),
                            None => out.push(without_nulls(item)),
                        }
                    }
                    Value::Array(out)
                }
            }
        }
        _ => without_nulls(config),
    }
}

/// How `new` differs from `old`, field by field.
#[derive(Debug, Default)]
pub struct Comparison {
    /// Fields set in `new` and not in `old`, or set to another value.
    pub added_or_modified: FieldSet,
    /// Fields set in `old` and not in `new`.
    pub removed: FieldSet,
}

impl Comparison {
    pub fn is_empty(&self) -> bool {
        self.added_or_modified.is_empty() && self.removed.is_empty()
    }
}

/// Compares two objects of one kind. An element of a list map or set
/// counts by its presence (its fields are compared on their own).
pub fn compare(old: &Value, new: &Value, t: Types<'_>) -> Comparison {
    let before = leaves(old, t);
    let after = leaves(new, t);
    let mut c = Comparison::default();
    for (path, v) in &after {
        let element = path
            .last()
            .is_some_and(|e| e.starts_with("k:") || e.starts_with("v:"));
        match before.get(path) {
            None => c.added_or_modified.insert(path.clone()),
            Some(old) if !element && old != v => c.added_or_modified.insert(path.clone()),
            Some(_) => {}
        }
    }
    for path in before.keys() {
        if !after.contains_key(path) {
            c.removed.insert(path.clone());
        }
    }
    c
}

/// Removes the fields and list elements at `paths` from `v`.
pub fn remove(v: &mut Value, paths: &FieldSet, t: Types<'_>) {
    if !paths.is_empty() {
        remove_at(v, paths, t, &mut Vec::new());
    }
}

fn remove_at(v: &mut Value, paths: &FieldSet, t: Types<'_>, path: &mut Path) {
    match v {
        Value::Object(m) if !t.atomic_map() => {
            m.retain(|k, _| {
                path.push(format!("f:{k}"));
                let gone = paths.contains(path);
                path.pop();
                !gone
            });
            for (k, c) in m.iter_mut() {
                path.push(format!("f:{k}"));
                remove_at(c, paths, t.field(k), path);
                path.pop();
            }
        }
        Value::Array(items) => {
            let list = t.list_type(items);
            if list == ListType::Atomic {
                return;
            }
            let mut index = 0;
            items.retain(|item| {
                path.push(element(&list, index, item));
                index += 1;
                let gone = paths.contains(path);
                path.pop();
                !gone
            });
            if matches!(list, ListType::Map(_)) {
                for (i, item) in items.iter_mut().enumerate() {
                    path.push(element(&list, i, item));
                    remove_at(item, paths, t.items(), path);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(set: &FieldSet) -> Vec<String> {
        set.iter().map(|p| super::super::set::display(p)).collect()
    }

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "n", "labels": {"app": "d"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}},
                "template": {"spec": {"containers": [
                    {"name": "a", "image": "x:1", "ports": [{"containerPort": 80}],
                     "env": [{"name": "E", "value": "1"}], "args": ["-v"]}]}}}})
    }

    #[test]
    fn field_sets_follow_list_and_map_types() {
        let set = field_set(&deployment(), Types::built_in());
        assert_eq!(
            paths(&set),
            [
                ".metadata.labels.app",
                ".spec.replicas",
                ".spec.selector",
                ".spec.template.spec.containers[name=\"a\"]",
                ".spec.template.spec.containers[name=\"a\"].args",
                ".spec.template.spec.containers[name=\"a\"].env[name=\"E\"]",
                ".spec.template.spec.containers[name=\"a\"].env[name=\"E\"].name",
                ".spec.template.spec.containers[name=\"a\"].env[name=\"E\"].value",
                ".spec.template.spec.containers[name=\"a\"].image",
                ".spec.template.spec.containers[name=\"a\"].name",
                ".spec.template.spec.containers[name=\"a\"].ports[containerPort=80,protocol=\"TCP\"]",
                ".spec.template.spec.containers[name=\"a\"].ports[containerPort=80,protocol=\"TCP\"].containerPort",
            ]
        );
    }

    #[test]
    fn merge_by_keys_and_remove_elements() {
        let live = deployment();
        let config = json!({"spec": {"replicas": null, "template": {"spec": {"containers": [
            {"name": "b", "image": "y"},
            {"name": "a", "env": [{"name": "F", "value": "2"}]}]}}}});
        let mut merged = merge(&live, &config, Types::built_in());
        assert!(merged["spec"].get("replicas").is_none());
        let cs = &merged["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["image"], "x:1");
        assert_eq!(
            cs[0]["env"],
            json!([{"name": "E", "value": "1"}, {"name": "F", "value": "2"}])
        );
        assert_eq!(cs[1], json!({"name": "b", "image": "y"}));
        let c = compare(&live, &merged, Types::built_in());
        assert!(c
            .removed
            .contains(&vec!["f:spec".into(), "f:replicas".into()]));
        let gone: FieldSet = [vec![
            "f:spec".to_string(),
            "f:template".into(),
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"a\"}".into(),
        ]]
        .into_iter()
        .collect();
        remove(&mut merged, &gone, Types::built_in());
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"],
            json!([{"name": "b", "image": "y"}])
        );
    }

    #[test]
    fn custom_resources_follow_their_schema() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "items": {"type": "array", "x-kubernetes-list-type": "map",
                      "x-kubernetes-list-map-keys": ["id"],
                      "items": {"type": "object"}},
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "plain": {"type": "array", "items": {"type": "string"}},
            "config": {"type": "object", "x-kubernetes-map-type": "atomic"}}}}});
        let t = Types::CustomRoot(&schema);
        let live = json!({"spec": {"items": [{"id": 1, "v": "a"}], "tags": ["x"], "plain": ["p"],
                                   "config": {"a": 1}}});
        let config = json!({"spec": {"items": [{"id": 2, "v": "b"}], "tags": ["y"], "plain": ["q"],
                                     "config": {"b": 2}}});
        let merged = merge(&live, &config, t);
        assert_eq!(
            merged,
            json!({"spec": {"items": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}], "tags": ["x", "y"],
                            "plain": ["q"], "config": {"b": 2}}})
        );
        assert_eq!(
            paths(&field_set(&config, t)),
            [
                ".spec.config",
                ".spec.items[id=2]",
                ".spec.items[id=2].id",
                ".spec.items[id=2].v",
                ".spec.plain",
                ".spec.tags[=\"y\"]"
            ]
        );
    }
}
