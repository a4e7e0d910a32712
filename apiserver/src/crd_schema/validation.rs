//! Validation of custom resources (kube's `pkg/apiserver/validation` over
//! kube-openapi's validator), each error converted as kube converts it:
//!
//! | broken                  | cause                                                         |
//! |-------------------------|---------------------------------------------------------------|
//! | `type`, `format`        | `spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"` |
//! | `enum`                  | `spec.mode: Unsupported value: "x": supported values: "a", "b"` |
//! | `required`              | `spec.cronSpec: Required value`                               |
//! | `maxLength`             | `spec.name: Too long: may not be more than 5 bytes`           |
//! | `maxItems`, `maxProperties` | `spec.list: Too many: 4: must have at most 3 items`       |
//! | anything else           | `spec.replicas: Invalid value: 12: spec.replicas in body should be less than or equal to 10` |

use serde_json::Value;

use super::{cause, child, formats, invalid, not_supported, required, Schema};
use crate::error::Cause;

/// Every error of `obj` against `schema`.
pub fn validate(schema: &Schema, obj: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    check(schema, schema.root(), obj, "", true, &mut out);
    out
}

/// Every error of `value` against `node`, with paths under `path` (for a
/// schema's `default`, checked at CRD time).
pub fn validate_at(schema: &Schema, node: &Value, value: &Value, path: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    check(schema, node, value, path, false, &mut out);
    out
}

/// The JSON type name of `v`, as kube's messages name it.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) if is_integer(v) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(v: &Value) -> bool {
    v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0)
}

fn has_type(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_number() && is_integer(v),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    }
}

/// A number as Go's `%v` prints a float64 (`10`, `0.5`).
fn number(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        Some(f) => format!("{f}"),
        None => v.to_string(),
    }
}

fn type_invalid(path: &str, shown_as: &str, ty: &str, data: &str) -> Cause {
    cause(
        path,
        "FieldValueTypeInvalid",
        format!("Invalid value: {shown_as:?}: {path} in body must be of type {ty}: {data:?}"),
    )
}

fn check(s: &Schema, node: &Value, v: &Value, path: &str, resource: bool, out: &mut Vec<Cause>) {
    if v.is_null() {
        let ty = node["type"].as_str().unwrap_or_default();
        if node["nullable"] != true && !ty.is_empty() {
            out.push(type_invalid(path, "null", ty, "null"));
        }
        return;
    }
    let int_or_string = node["x-kubernetes-int-or-string"] == true;
    if int_or_string && !(v.is_string() || (v.is_number() && is_integer(v))) {
        out.push(type_invalid(
            path,
            type_name(v),
            "integer,string",
            type_name(v),
        ));
        return;
    }
    let ty = node["type"].as_str().unwrap_or_default();
    if !int_or_string && !has_type(ty, v) {
        out.push(type_invalid(path, type_name(v), ty, type_name(v)));
        return;
    }
    if let Some(format) = node["format"].as_str() {
        check_format(format, v, path, out);
    }
    if let Some(values) = node["enum"].as_array() {
        if !values.contains(v) {
            let supported: Vec<String> = values
                .iter()
                .map(|e| match e {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            out.push(not_supported(path, v, &supported));
        }
    }
    match v {
        Value::Number(_) => check_number(node, v, path, out),
        Value::String(text) => check_string(s, node, v, text, path, out),
        Value::Array(items) => {
            let n = items.len();
            if let Some(max) = node["maxItems"].as_u64().filter(|m| n as u64 > *m) {
                out.push(too_many(path, n, max));
            }
            if let Some(min) = node["minItems"].as_u64().filter(|m| (n as u64) < *m) {
                let detail = format!("{path} in body should have at least {min} items");
                out.push(invalid(path, v, &detail));
            }
            if node["uniqueItems"] == true
                && items
                    .iter()
                    .enumerate()
                    .any(|(i, x)| items[..i].contains(x))
            {
                let detail = format!("{path} in body shouldn't contain duplicates");
                out.push(invalid(path, v, &detail));
            }
            if let Some(sub) = node.get("items").filter(|i| i.is_object()) {
                let embedded = sub["x-kubernetes-embedded-resource"] == true;
                for (i, x) in items.iter().enumerate() {
                    check(s, sub, x, &format!("{path}[{i}]"), embedded, out);
                }
            }
        }
        Value::Object(map) => {
            let n = map.len();
            if let Some(max) = node["maxProperties"].as_u64().filter(|m| n as u64 > *m) {
                out.push(too_many(path, n, max));
            }
            if let Some(min) = node["minProperties"].as_u64().filter(|m| (n as u64) < *m) {
                let detail = format!("{path} in body should have at least {min} properties");
                out.push(invalid(path, v, &detail));
            }
            if resource && node["x-kubernetes-embedded-resource"] == true {
                for field in ["apiVersion", "kind"] {
                    if map
                        .get(field)
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        out.push(required(&child(path, field), "must not be empty"));
                    }
                }
            }
            for name in node["required"].as_array().into_iter().flatten() {
                if let Some(name) = name.as_str() {
                    if !map.contains_key(name) {
                        out.push(required(&child(path, name), ""));
                    }
                }
            }
            let properties = node["properties"].as_object();
            let additional = node.get("additionalProperties").filter(|a| a.is_object());
            for (key, x) in map {
                if resource && key == "metadata" {
                    continue;
                }
                let at = child(path, key);
                if let Some(sub) = properties.and_then(|p| p.get(key)).or(additional) {
                    let embedded = sub["x-kubernetes-embedded-resource"] == true;
                    check(s, sub, x, &at, embedded, out);
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
    check_junctors(s, node, v, path, resource, out);
}

fn too_many(path: &str, actual: usize, max: u64) -> Cause {
    cause(
        path,
        "FieldValueTooMany",
        format!("Too many: {actual}: must have at most {max} items"),
    )
}

fn check_format(format: &str, v: &Value, path: &str, out: &mut Vec<Cause>) {
    match v {
        Value::String(text) if !formats::valid(format, text) => {
            out.push(type_invalid(path, text, format, text));
        }
        Value::Number(_) => {
            let fits = match format {
                "int32" => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
                "int64" => v.as_i64().is_some(),
                "float" => v.as_f64().is_some_and(|f| f.abs() <= f64::from(f32::MAX)),
                _ => true,
            };
            if !fits {
                let n = number(v);
                out.push(type_invalid(path, &n, format, &n));
            }
        }
        _ => {}
    }
}

fn check_number(node: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    let x = v.as_f64().unwrap_or_default();
    if let Some(max) = node["maximum"].as_f64() {
        let exclusive = node["exclusiveMaximum"] == true;
        if (exclusive && x >= max) || (!exclusive && x > max) {
            let rel = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            let detail = format!(
                "{path} in body should be {rel} {}",
                number(&node["maximum"])
            );
            out.push(invalid(path, v, &detail));
        }
    }
    if let Some(min) = node["minimum"].as_f64() {
        let exclusive = node["exclusiveMinimum"] == true;
        if (exclusive && x <= min) || (!exclusive && x < min) {
            let rel = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            let detail = format!(
                "{path} in body should be {rel} {}",
                number(&node["minimum"])
            );
            out.push(invalid(path, v, &detail));
        }
    }
    if let Some(m) = node["multipleOf"].as_f64().filter(|m| *m > 0.0) {
        let q = x / m;
        if (q - q.round()).abs() > 1e-9 {
            let detail = format!(
                "{path} in body should be a multiple of {}",
                number(&node["multipleOf"])
            );
            out.push(invalid(path, v, &detail));
        }
    }
}

fn check_string(s: &Schema, node: &Value, v: &Value, text: &str, path: &str, out: &mut Vec<Cause>) {
    let chars = text.chars().count() as u64;
    if let Some(max) = node["maxLength"].as_u64().filter(|m| chars > *m) {
        let unit = if max == 1 { "byte" } else { "bytes" };
        out.push(cause(
            path,
            "FieldValueTooLong",
            format!("Too long: may not be more than {max} {unit}"),
        ));
    }
    if let Some(min) = node["minLength"].as_u64().filter(|m| chars < *m) {
        let detail = format!("{path} in body should be at least {min} chars long");
        out.push(invalid(path, v, &detail));
    }
    if let Some(p) = node["pattern"].as_str() {
        if s.pattern(p).is_some_and(|re| !re.is_match(text)) {
            let detail = format!("{path} in body should match '{p}'");
            out.push(invalid(path, v, &detail));
        }
    }
}

/// `allOf` (each schema's errors), `anyOf`, `oneOf` and `not`.
fn check_junctors(
    s: &Schema,
    node: &Value,
    v: &Value,
    path: &str,
    resource: bool,
    out: &mut Vec<Cause>,
) {
    let passes = |sub: &Value| {
        let mut errors = Vec::new();
        check(s, sub, v, path, resource, &mut errors);
        errors.is_empty()
    };
    for sub in node["allOf"].as_array().into_iter().flatten() {
        check(s, sub, v, path, resource, out);
    }
    if let Some(any) = node["anyOf"].as_array() {
        if !any.is_empty() && !any.iter().any(passes) {
            let detail = format!("{path} in body must validate at least one schema (anyOf)");
            out.push(invalid(path, v, &detail));
        }
    }
    if let Some(one) = node["oneOf"].as_array() {
        if !one.is_empty() && one.iter().filter(|x| passes(x)).count() != 1 {
            let detail = format!("{path} in body must validate one and only one schema (oneOf)");
            out.push(invalid(path, v, &detail));
        }
    }
    if let Some(not) = node.get("not").filter(|n| n.is_object()) {
        if passes(not) {
            let detail = format!("{path} in body must not validate the schema (not)");
            out.push(invalid(path, v, &detail));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(schema: Value, obj: Value) -> Vec<String> {
        let s = Schema::new(json!({"type": "object", "properties": {"spec": schema}}));
        validate(&s, &json!({"metadata": {"name": "a"}, "spec": obj}))
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn types() {
        assert_eq!(
            errors(json!({"type": "object", "properties": {"replicas": {"type": "integer"}}}),
                   json!({"replicas": "five"})),
            ["spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""]
        );
        assert!(errors(json!({"type": "integer"}), json!(3.0)).is_empty());
        assert_eq!(
            errors(json!({"type": "integer"}), json!(3.5)),
            ["spec: Invalid value: \"number\": spec in body must be of type integer: \"number\""]
        );
        assert_eq!(
            errors(json!({"type": "string"}), json!(null)),
            ["spec: Invalid value: \"null\": spec in body must be of type string: \"null\""]
        );
        assert!(errors(json!({"type": "string", "nullable": true}), json!(null)).is_empty());
        assert!(errors(json!({"type": "boolean"}), json!(true)).is_empty());
        assert_eq!(errors(json!({"type": "array", "items": {"type": "string"}}), json!(["a", 1])),
            ["spec[1]: Invalid value: \"integer\": spec[1] in body must be of type string: \"integer\""]);
    }

    #[test]
    fn int_or_string() {
        let s = json!({"x-kubernetes-int-or-string": true});
        assert!(errors(s.clone(), json!(80)).is_empty());
        assert!(errors(s.clone(), json!("80%")).is_empty());
        assert_eq!(errors(s, json!(true)).len(), 1);
    }

    #[test]
    fn formats() {
        assert_eq!(
            errors(
                json!({"type": "string", "format": "date-time"}),
                json!("soon")
            ),
            ["spec: Invalid value: \"soon\": spec in body must be of type date-time: \"soon\""]
        );
        assert!(errors(json!({"type": "string", "format": "byte"}), json!("aGk=")).is_empty());
        assert_eq!(
            errors(
                json!({"type": "integer", "format": "int32"}),
                json!(1i64 << 40)
            )
            .len(),
            1
        );
        assert!(errors(
            json!({"type": "integer", "format": "int64"}),
            json!(1i64 << 40)
        )
        .is_empty());
    }

    #[test]
    fn enums() {
        assert_eq!(
            errors(
                json!({"type": "string", "enum": ["Always", "Never"]}),
                json!("Sometimes")
            ),
            ["spec: Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\""]
        );
        assert_eq!(
            errors(json!({"type": "integer", "enum": [1, 2]}), json!(3)),
            ["spec: Unsupported value: 3: supported values: \"1\", \"2\""]
        );
    }

    #[test]
    fn numeric_bounds_and_multiples() {
        let s = json!({"type": "integer", "minimum": 1, "maximum": 10, "multipleOf": 2});
        assert_eq!(
            errors(s.clone(), json!(12)),
            ["spec: Invalid value: 12: spec in body should be less than or equal to 10"]
        );
        assert_eq!(
            errors(s.clone(), json!(0)),
            ["spec: Invalid value: 0: spec in body should be greater than or equal to 1"]
        );
        assert_eq!(
            errors(s.clone(), json!(3)),
            ["spec: Invalid value: 3: spec in body should be a multiple of 2"]
        );
        assert!(errors(s, json!(4)).is_empty());
        let ex = json!({"type": "number", "minimum": 0, "exclusiveMinimum": true,
                        "maximum": 1.5, "exclusiveMaximum": true});
        assert_eq!(
            errors(ex.clone(), json!(0)),
            ["spec: Invalid value: 0: spec in body should be greater than 0"]
        );
        assert_eq!(
            errors(ex.clone(), json!(1.5)),
            ["spec: Invalid value: 1.5: spec in body should be less than 1.5"]
        );
        assert!(errors(ex, json!(0.5)).is_empty());
    }

    #[test]
    fn string_lengths_and_patterns() {
        let s = json!({"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-z]+$"});
        assert_eq!(
            errors(s.clone(), json!("abcdef")),
            ["spec: Too long: may not be more than 5 bytes"]
        );
        assert_eq!(
            errors(s.clone(), json!("a")),
            ["spec: Invalid value: \"a\": spec in body should be at least 2 chars long"]
        );
        assert_eq!(
            errors(s.clone(), json!("AB")),
            ["spec: Invalid value: \"AB\": spec in body should match '^[a-z]+$'"]
        );
        assert!(errors(s, json!("abc")).is_empty());
    }

    #[test]
    fn array_counts_and_uniqueness() {
        let s = json!({"type": "array", "minItems": 1, "maxItems": 2, "uniqueItems": true,
                       "items": {"type": "integer"}});
        assert_eq!(
            errors(s.clone(), json!([1, 2, 3])),
            ["spec: Too many: 3: must have at most 2 items"]
        );
        assert_eq!(
            errors(s.clone(), json!([])),
            ["spec: Invalid value: []: spec in body should have at least 1 items"]
        );
        assert_eq!(
            errors(s, json!([1, 1])),
            ["spec: Invalid value: [1,1]: spec in body shouldn't contain duplicates"]
        );
    }

    #[test]
    fn object_counts_required_and_maps() {
        let s = json!({"type": "object", "required": ["cronSpec"], "minProperties": 1, "maxProperties": 2,
                       "properties": {"cronSpec": {"type": "string"}},
                       "additionalProperties": {"type": "integer"}});
        assert_eq!(
            errors(s.clone(), json!({"a": 1})),
            ["spec.cronSpec: Required value"]
        );
        assert_eq!(errors(s.clone(), json!({})).len(), 2);
        assert_eq!(
            errors(s.clone(), json!({"cronSpec": "x", "a": 1, "b": 2})),
            ["spec: Too many: 3: must have at most 2 items"]
        );
        assert_eq!(errors(s, json!({"cronSpec": "x", "a": "one"})),
            ["spec.a: Invalid value: \"string\": spec.a in body must be of type integer: \"string\""]);
    }

    #[test]
    fn junctors() {
        let any = json!({"type": "integer", "anyOf": [{"minimum": 10}, {"maximum": 0}]});
        assert!(errors(any.clone(), json!(11)).is_empty());
        assert_eq!(
            errors(any, json!(5)),
            ["spec: Invalid value: 5: spec in body must validate at least one schema (anyOf)"]
        );
        let one = json!({"type": "integer", "oneOf": [{"minimum": 0}, {"minimum": 5}]});
        assert!(errors(one.clone(), json!(1)).is_empty());
        assert_eq!(errors(one, json!(6)).len(), 1);
        let all = json!({"type": "integer", "allOf": [{"minimum": 0}, {"maximum": 5}]});
        assert_eq!(
            errors(all, json!(6)),
            ["spec: Invalid value: 6: spec in body should be less than or equal to 5"]
        );
        let not = json!({"type": "string", "not": {"enum": ["forbidden"]}});
        assert_eq!(errors(not, json!("forbidden")),
            ["spec: Invalid value: \"forbidden\": spec in body must not validate the schema (not)"]);
    }

    #[test]
    fn embedded_resources_need_api_version_and_kind() {
        let s = json!({"type": "object", "x-kubernetes-embedded-resource": true,
                       "x-kubernetes-preserve-unknown-fields": true});
        assert_eq!(
            errors(s.clone(), json!({"metadata": {"name": "x"}})),
            [
                "spec.apiVersion: Required value: must not be empty",
                "spec.kind: Required value: must not be empty"
            ]
        );
        assert!(errors(s, json!({"apiVersion": "v1", "kind": "Pod"})).is_empty());
    }
}
