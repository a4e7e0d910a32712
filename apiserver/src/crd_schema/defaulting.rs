//! Defaulting (kube's `schema/defaulting`): a field the schema gives a
//! `default` is filled in when absent, or when it is null and the field
//! is not nullable; other non-nullable nulls are dropped (kube's
//! `PruneNonNullableNullsWithoutDefaults`). A default that is an object
//! is defaulted in turn, as kube walks into what it filled in.

use serde_json::Value;

/// Defaults `value` against `node`; whether anything changed.
pub fn default(node: &Value, value: &mut Value) -> bool {
    let mut changed = false;
    match value {
        Value::Object(map) => {
            if let Some(properties) = node["properties"].as_object() {
                for (key, sub) in properties {
                    let nullable = sub["nullable"] == true;
                    match (map.get(key), sub.get("default")) {
                        (None, Some(d)) => {
                            map.insert(key.clone(), d.clone());
                            changed = true;
                        }
                        (Some(Value::Null), Some(d)) if !nullable => {
                            map.insert(key.clone(), d.clone());
                            changed = true;
                        }
                        (Some(Value::Null), None) if !nullable => {
                            map.remove(key);
                            changed = true;
                        }
                        _ => {}
                    }
                    if let Some(v) = map.get_mut(key) {
                        changed |= default(sub, v);
                    }
                }
            }
            if let Some(sub) = node.get("additionalProperties").filter(|a| a.is_object()) {
                let known = node["properties"].as_object();
                for (key, v) in map.iter_mut() {
                    if known.is_none_or(|p| !p.contains_key(key)) {
                        changed |= default(sub, v);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = node.get("items").filter(|i| i.is_object()) {
                for v in items.iter_mut() {
                    if v.is_null() && sub["nullable"] != true {
                        if let Some(d) = sub.get("default") {
                            *v = d.clone();
                            changed = true;
                        }
                    }
                    changed |= default(sub, v);
                }
            }
        }
        _ => {}
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_fill_absent_fields_and_nested_defaults() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "default": {}, "properties": {
                "replicas": {"type": "integer", "default": 1},
                "image": {"type": "string"},
                "note": {"type": "string", "nullable": true, "default": "n"},
                "ports": {"type": "array", "items": {"type": "object", "properties": {
                    "protocol": {"type": "string", "default": "TCP"}}}},
                "env": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                    "value": {"type": "string", "default": "v"}}}}}}}});
        let mut empty = json!({"metadata": {"name": "a"}});
        assert!(default(&schema, &mut empty));
        assert_eq!(empty["spec"], json!({"replicas": 1, "note": "n"}));

        let mut obj = json!({"spec": {"replicas": null, "image": null, "note": null,
                                      "ports": [{"port": 80}, {"protocol": "UDP"}],
                                      "env": {"A": {}}}});
        default(&schema, &mut obj);
        assert_eq!(
            obj["spec"],
            json!({"replicas": 1, "note": null,
                   "ports": [{"port": 80, "protocol": "TCP"}, {"protocol": "UDP"}],
                   "env": {"A": {"value": "v"}}})
        );
        assert!(!default(&schema, &mut obj));
    }
}
