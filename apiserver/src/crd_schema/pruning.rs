//! Pruning (kube's `schema/pruning`): fields the schema does not specify
//! are removed, unless a node says `x-kubernetes-preserve-unknown-fields`.
//! `apiVersion`, `kind` and `metadata` of the root and of embedded
//! resources are always specified; their `metadata` keeps only
//! ObjectMeta's fields (kube decodes it into ObjectMeta, which drops the
//! rest).

use serde_json::Value;

use super::child;

/// The fields of ObjectMeta.
const OBJECT_META: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Prunes `obj` (a whole custom resource) against `root`; the removed paths.
pub fn prune(root: &Value, obj: &mut Value) -> Vec<String> {
    let mut removed = Vec::new();
    walk(root, obj, "", true, &mut removed);
    removed
}

/// Prunes a value below the root (a schema's `default`) against `node`,
/// adding the removed paths to `removed`.
pub fn prune_value(node: &Value, value: &mut Value, removed: &mut Vec<String>) {
    walk(node, value, "", embedded(node), removed);
}

fn preserves(node: &Value) -> bool {
    node["x-kubernetes-preserve-unknown-fields"] == true
}

fn walk(node: &Value, value: &mut Value, path: &str, resource: bool, removed: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let properties = node["properties"].as_object();
            let additional = node.get("additionalProperties");
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let at = child(path, &key);
                if resource && (key == "apiVersion" || key == "kind") {
                    continue;
                }
                if resource && key == "metadata" {
                    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
                        let unknown: Vec<String> = meta
                            .keys()
                            .filter(|k| !OBJECT_META.contains(&k.as_str()))
                            .cloned()
                            .collect();
                        for k in unknown {
                            meta.remove(&k);
                            removed.push(child(&at, &k));
                        }
                    }
                    continue;
                }
                let Some(v) = map.get_mut(&key) else { continue };
                if let Some(sub) = properties.and_then(|p| p.get(&key)) {
                    walk(sub, v, &at, embedded(sub), removed);
                } else if let Some(sub) = additional.filter(|a| a.is_object()) {
                    walk(sub, v, &at, embedded(sub), removed);
                } else if additional == Some(&Value::Bool(true)) || preserves(node) {
                    // Kept as is: nothing below is specified.
                } else {
                    map.remove(&key);
                    removed.push(at);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = node.get("items").filter(|i| i.is_object()) {
                for (i, v) in items.iter_mut().enumerate() {
                    walk(sub, v, &format!("{path}[{i}]"), embedded(sub), removed);
                }
            }
        }
        _ => {}
    }
}

fn embedded(node: &Value) -> bool {
    node["x-kubernetes-embedded-resource"] == true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "replicas": {"type": "integer"},
                "list": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                         "properties": {"n": {"type": "object", "properties": {}}}},
                "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                             "properties": {"spec": {"type": "object"}}}}}}})
    }

    #[test]
    fn unknown_fields_go_and_are_reported_at_their_paths() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "K",
            "metadata": {"name": "a", "bogus": 1, "labels": {"k": "v"}},
            "spec": {"replicas": 1, "colour": "red",
                     "list": [{"a": "x", "b": 1}],
                     "labels": {"any": "thing"},
                     "free": {"anything": {"deep": 1}, "n": {"gone": 1}},
                     "template": {"apiVersion": "v1", "kind": "Pod",
                                  "metadata": {"name": "p", "odd": 1}, "spec": {}, "extra": 1}},
            "status": {"x": 1}});
        let removed = prune(&schema(), &mut obj);
        assert_eq!(
            removed,
            [
                "metadata.bogus",
                "spec.colour",
                "spec.free.n.gone",
                "spec.list[0].b",
                "spec.template.extra",
                "spec.template.metadata.odd",
                "status"
            ]
        );
        assert_eq!(
            obj,
            json!({"apiVersion": "x/v1", "kind": "K",
                "metadata": {"name": "a", "labels": {"k": "v"}},
                "spec": {"replicas": 1, "list": [{"a": "x"}], "labels": {"any": "thing"},
                         "free": {"anything": {"deep": 1}, "n": {}},
                         "template": {"apiVersion": "v1", "kind": "Pod",
                                      "metadata": {"name": "p"}, "spec": {}}}})
        );
    }

    #[test]
    fn a_preserving_root_keeps_everything() {
        let mut obj = json!({"spec": {"anything": 1}, "metadata": {"name": "a"}});
        let root = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        assert!(prune(&root, &mut obj).is_empty());
        assert_eq!(obj["spec"]["anything"], 1);
    }
}
