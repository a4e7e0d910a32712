//! The check at CRD create and update (kube's `ValidateStructural` and
//! the schema parts of `ValidateCustomResourceDefinition`): every
//! version's `openAPIV3Schema` must be structural.
//!
//! - a type everywhere a value is specified (`properties[spec].type:
//!   Required value: must not be empty for specified object fields`),
//!   `object` at the root, `items` for arrays;
//! - `additionalProperties` neither beside `properties`, nor `false`, nor
//!   at the root; `uniqueItems` never true; no `$ref`, `patternProperties`,
//!   `definitions`, `dependencies`;
//! - `x-kubernetes-preserve-unknown-fields` true or absent, not with
//!   `x-kubernetes-int-or-string`; embedded resources are objects with
//!   properties or preserved fields;
//! - root `metadata` restricts only `name` and `generateName`;
//! - inside `allOf`/`anyOf`/`oneOf`/`not` only value validations (no
//!   types, defaults, descriptions, extensions, `metadata`), except the
//!   int-or-string `anyOf: [{type: integer}, {type: string}]`;
//! - patterns compile; defaults validate against their node and have no
//!   unknown fields;
//! - `x-kubernetes-validations` (CEL) rules each have a `rule`, are not
//!   used inside the junctors, and compile (the `cel` module's checks).
//!   Rules using Kubernetes CEL functions this apiserver does not
//!   implement are stored but not evaluated; [`unevaluated_rules`] words
//!   the `Warning` a CRD write is answered with.
//!
//! Errors come sorted by their text, as kube sorts them.

use regex::Regex;
use serde_json::{json, Value};

use super::{forbidden, invalid, not_supported, pruning, required, validation, Schema};
use crate::error::Cause;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Item,
    Field,
}

const TYPES: &[&str] = &["array", "boolean", "integer", "number", "object", "string"];

/// Every schema error of a CRD's versions, each at
/// `spec.versions[i].schema.openAPIV3Schema…`.
pub fn check_definition(crd: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    for (i, v) in crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("spec.versions[{i}].schema.openAPIV3Schema");
        match v["schema"].get("openAPIV3Schema") {
            Some(root) if root.is_object() => {
                let mut errors = Vec::new();
                walk(root, Level::Root, &path, &mut errors);
                super::cel::check_rules(root, &path, &mut errors);
                errors.sort_by_key(|c| format!("{}: {}", c.field, c.message));
                out.extend(errors);
            }
            _ => out.push(required(&path, "schemas are required")),
        }
    }
    out
}

fn at(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

fn property(path: &str, name: &str) -> String {
    format!("{path}.properties[{name}]")
}

fn walk(node: &Value, level: Level, path: &str, out: &mut Vec<Cause>) {
    let ty = node["type"].as_str().unwrap_or_default();
    let preserve = node.get("x-kubernetes-preserve-unknown-fields");
    let int_or_string = node["x-kubernetes-int-or-string"] == true;
    let embedded = node["x-kubernetes-embedded-resource"] == true;
    let properties = node["properties"].as_object();
    let additional = node.get("additionalProperties");

    for (key, what) in [
        ("$ref", "$ref is not supported"),
        ("$schema", "$schema is not supported"),
        ("id", "id is not supported"),
        ("patternProperties", "patternProperties is not supported"),
        ("definitions", "definitions is not supported"),
        ("dependencies", "dependencies is not supported"),
        ("additionalItems", "additionalItems is not supported"),
    ] {
        if node.get(key).is_some() {
            out.push(forbidden(&at(path, key), what));
        }
    }
    if !ty.is_empty() && !TYPES.contains(&ty) {
        let supported: Vec<String> = TYPES.iter().map(|t| t.to_string()).collect();
        out.push(not_supported(&at(path, "type"), &json!(ty), &supported));
    }
    if node["uniqueItems"] == true {
        out.push(forbidden(
            &at(path, "uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ));
    }
    match node.get("items") {
        Some(items) if items.is_object() => walk(items, Level::Item, &at(path, "items"), out),
        Some(Value::Array(_)) => out.push(forbidden(
            &at(path, "items"),
            "items must be a schema object and not an array",
        )),
        _ if ty == "array" => out.push(required(&at(path, "items"), "must be specified")),
        _ => {}
    }
    for (name, sub) in properties.into_iter().flatten() {
        if sub.is_object() {
            walk(sub, Level::Field, &property(path, name), out);
        }
    }
    match additional {
        Some(Value::Bool(false)) => out.push(forbidden(
            &at(path, "additionalProperties"),
            "additionalProperties cannot be set to false",
        )),
        Some(_) if properties.is_some() => out.push(forbidden(
            &at(path, "additionalProperties"),
            "additionalProperties and properties are mutual exclusive",
        )),
        _ => {}
    }
    if let Some(a) = additional {
        if level == Level::Root {
            out.push(forbidden(
                &at(path, "additionalProperties"),
                "must not be used at the root",
            ));
        }
        if embedded {
            out.push(forbidden(
                &at(path, "additionalProperties"),
                "must not be used if x-kubernetes-embedded-resource is set",
            ));
        }
        if a.is_object() {
            walk(a, Level::Field, &at(path, "additionalProperties"), out);
        }
    }
    if preserve == Some(&Value::Bool(false)) {
        out.push(invalid(
            &at(path, "x-kubernetes-preserve-unknown-fields"),
            &json!(false),
            "must be true or undefined",
        ));
    }
    if int_or_string && preserve == Some(&Value::Bool(true)) {
        out.push(invalid(
            &at(path, "x-kubernetes-preserve-unknown-fields"),
            &json!(true),
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }
    if int_or_string && embedded {
        out.push(invalid(
            &at(path, "x-kubernetes-embedded-resource"),
            &json!(true),
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }
    if embedded && ty != "object" {
        if ty.is_empty() {
            out.push(required(
                &at(path, "type"),
                "must be object if x-kubernetes-embedded-resource is true",
            ));
        } else {
            out.push(invalid(
                &at(path, "type"),
                &json!(ty),
                "must be object if x-kubernetes-embedded-resource is true",
            ));
        }
    } else if ty.is_empty() && !int_or_string && preserve != Some(&Value::Bool(true)) {
        let detail = match level {
            Level::Root => "must not be empty at the root",
            Level::Item => "must not be empty for specified array items",
            Level::Field => "must not be empty for specified object fields",
        };
        out.push(required(&at(path, "type"), detail));
    }
    if level == Level::Root && !ty.is_empty() && ty != "object" {
        out.push(invalid(
            &at(path, "type"),
            &json!(ty),
            "must be object at the root",
        ));
    }
    let check_metadata = level == Level::Root || embedded;
    if check_metadata {
        for field in ["kind", "apiVersion"] {
            if let Some(sub) = properties.and_then(|p| p.get(field)) {
                if sub["type"] != "string" {
                    out.push(invalid(
                        &at(&property(path, field), "type"),
                        &sub["type"],
                        "must be string",
                    ));
                }
            }
        }
    }
    if let Some(meta) = properties.and_then(|p| p.get("metadata")) {
        let meta_path = property(path, "metadata");
        if check_metadata && meta["type"] != "object" {
            out.push(invalid(
                &at(&meta_path, "type"),
                meta.get("type").unwrap_or(&json!("")),
                "must be object",
            ));
        }
        if level == Level::Root && !only_names(meta) {
            out.push(forbidden(
                &meta_path,
                "must not specify anything other than name and generateName, but metadata is implicitly specified",
            ));
        }
    }
    if embedded && preserve != Some(&Value::Bool(true)) && properties.is_none_or(|p| p.is_empty()) {
        out.push(required(
            &at(path, "properties"),
            "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
        ));
    }
    if let Some(p) = node["pattern"].as_str() {
        if let Err(e) = Regex::new(p) {
            let detail = format!("must be a valid regular expression, but isn't: {e}");
            out.push(invalid(&at(path, "pattern"), &json!(p), &detail));
        }
    }
    value_validations(node, path, out);
    list_types(node, path, out);
    if let Some(rules) = node.get("x-kubernetes-validations") {
        check_rules(rules, &at(path, "x-kubernetes-validations"), out);
    }
    if let Some(d) = node.get("default") {
        check_default(node, d, &at(path, "default"), out);
    }
}

/// `x-kubernetes-list-type` and `-list-map-keys` as kube checks them: a
/// known list type; map keys only on a `map` list, which needs them, and
/// object items whose key properties exist, are scalars and are named
/// once; a `set`'s items atomic.
fn list_types(node: &Value, path: &str, out: &mut Vec<Cause>) {
    let list_type = node.get("x-kubernetes-list-type").and_then(Value::as_str);
    let keys = &node["x-kubernetes-list-map-keys"];
    let key_names: Vec<&str> = keys
        .as_array()
        .map(|k| k.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let items = node.get("items").filter(|i| i.is_object());
    let type_path = at(path, "x-kubernetes-list-type");
    let keys_path = at(path, "x-kubernetes-list-map-keys");
    if let Some(t) = list_type.filter(|t| !["atomic", "set", "map"].contains(t)) {
        let supported = ["atomic", "set", "map"].map(String::from).to_vec();
        out.push(not_supported(&type_path, &json!(t), &supported));
    }
    if !key_names.is_empty() {
        match list_type {
            None => out.push(required(
                &type_path,
                "must be map if x-kubernetes-list-map-keys is non-empty",
            )),
            Some(t) if t != "map" => out.push(invalid(
                &type_path,
                &json!(t),
                "must be map if x-kubernetes-list-map-keys is non-empty",
            )),
            _ => {}
        }
    }
    if list_type == Some("map") {
        if key_names.is_empty() {
            out.push(required(
                &keys_path,
                "must not be empty if x-kubernetes-list-type is map",
            ));
        }
        match items {
            None => out.push(required(
                &at(path, "items"),
                "must have a schema if x-kubernetes-list-type is map",
            )),
            Some(items) if items["type"] != "object" => out.push(invalid(
                &at(&at(path, "items"), "type"),
                &items["type"],
                "must be object if parent array's x-kubernetes-list-type is map",
            )),
            Some(items) => {
                let mut seen = std::collections::HashSet::new();
                for k in &key_names {
                    match items["properties"].get(*k) {
                        Some(p) if p["type"] == "array" || p["type"] == "object" => out
                            .push(invalid(
                            &at(&property(&at(path, "items"), k), "type"),
                            &items["type"],
                            "must be a scalar type if parent array's x-kubernetes-list-type is map",
                        )),
                        Some(_) => {}
                        None => out.push(invalid(
                            &keys_path,
                            keys,
                            "entries must all be names of item properties",
                        )),
                    }
                    if !seen.insert(*k) {
                        out.push(invalid(
                            &keys_path,
                            keys,
                            "must not contain duplicate entries",
                        ));
                    }
                }
            }
        }
    }
    if let (Some("set"), Some(items)) = (list_type, items) {
        let items_path = at(path, "items");
        match items["type"].as_str() {
            Some("array")
                if items["x-kubernetes-list-type"]
                    .as_str()
                    .is_some_and(|t| t != "atomic") =>
            {
                out.push(invalid(
                    &at(&items_path, "x-kubernetes-list-type"),
                    &items["x-kubernetes-list-type"],
                    "must be atomic as item of a list with x-kubernetes-list-type=set",
                ))
            }
            Some("object") if items["x-kubernetes-map-type"] != "atomic" => out.push(invalid(
                &at(&items_path, "x-kubernetes-map-type"),
                &items["x-kubernetes-map-type"],
                "must be atomic as item of a list with x-kubernetes-list-type=set",
            )),
            _ => {}
        }
    }
}

/// Root `metadata` may only restrict `name` and `generateName`.
fn only_names(meta: &Value) -> bool {
    let Some(m) = meta.as_object() else {
        return false;
    };
    m.iter().all(|(k, v)| match k.as_str() {
        "type" => true,
        "properties" => v
            .as_object()
            .is_some_and(|p| p.keys().all(|k| k == "name" || k == "generateName")),
        _ => false,
    })
}

fn is_int_or_string_any_of(any: &Value) -> bool {
    *any == json!([{"type": "integer"}, {"type": "string"}])
}

/// The junctors of a structural node: only value validations inside.
fn value_validations(node: &Value, path: &str, out: &mut Vec<Cause>) {
    let skip_any_of = is_int_or_string_any_of(&node["anyOf"]);
    let skip_first_all_of = is_int_or_string_any_of(&node["allOf"][0]["anyOf"]);
    for (key, list) in [
        ("allOf", &node["allOf"]),
        ("anyOf", &node["anyOf"]),
        ("oneOf", &node["oneOf"]),
    ] {
        if key == "anyOf" && skip_any_of {
            continue;
        }
        for (i, sub) in list.as_array().into_iter().flatten().enumerate() {
            let skip = key == "allOf" && i == 0 && skip_first_all_of;
            nested(sub, skip, &format!("{path}.{key}[{i}]"), out);
        }
    }
    if let Some(not) = node.get("not") {
        nested(not, false, &at(path, "not"), out);
    }
}

fn nested(node: &Value, skip_any_of: bool, path: &str, out: &mut Vec<Cause>) {
    if !node.is_object() {
        return;
    }
    if !skip_any_of {
        for (i, sub) in node["anyOf"].as_array().into_iter().flatten().enumerate() {
            nested(sub, false, &format!("{path}.anyOf[{i}]"), out);
        }
    }
    for key in ["allOf", "oneOf"] {
        for (i, sub) in node[key].as_array().into_iter().flatten().enumerate() {
            nested(sub, false, &format!("{path}.{key}[{i}]"), out);
        }
    }
    for key in ["not", "items"] {
        if let Some(sub) = node.get(key).filter(|s| s.is_object()) {
            nested(sub, false, &at(path, key), out);
        }
    }
    for (name, sub) in node["properties"].as_object().into_iter().flatten() {
        if name == "metadata" {
            out.push(forbidden(
                &property(path, name),
                "must not be specified in a nested context",
            ));
        }
        nested(sub, false, &property(path, name), out);
    }
    let forbid = |key: &str, detail: &str, out: &mut Vec<Cause>| {
        if node
            .get(key)
            .is_some_and(|v| !v.is_null() && *v != json!(false) && *v != json!(""))
        {
            out.push(forbidden(&at(path, key), detail));
        }
    };
    forbid("type", "must be empty to be structural", out);
    forbid(
        "additionalProperties",
        "must be undefined to be structural",
        out,
    );
    forbid("default", "must be undefined to be structural", out);
    forbid("title", "must be empty to be structural", out);
    forbid("description", "must be empty to be structural", out);
    forbid("nullable", "must be false to be structural", out);
    forbid("externalDocs", "must be undefined to be structural", out);
    forbid(
        "x-kubernetes-preserve-unknown-fields",
        "must be false to be structural",
        out,
    );
    forbid(
        "x-kubernetes-embedded-resource",
        "must be false to be structural",
        out,
    );
    forbid(
        "x-kubernetes-int-or-string",
        "must be false to be structural",
        out,
    );
    forbid(
        "x-kubernetes-list-map-keys",
        "must be empty to be structural",
        out,
    );
    forbid(
        "x-kubernetes-list-type",
        "must be undefined to be structural",
        out,
    );
    forbid(
        "x-kubernetes-map-type",
        "must be undefined to be structural",
        out,
    );
    forbid(
        "x-kubernetes-validations",
        "must be empty to be structural",
        out,
    );
}

/// Each CEL rule names its expression (kube: `rule is not specified`).
fn check_rules(rules: &Value, path: &str, out: &mut Vec<Cause>) {
    let Some(list) = rules.as_array() else {
        out.push(invalid(path, rules, "must be a list of validation rules"));
        return;
    };
    for (i, rule) in list.iter().enumerate() {
        if rule["rule"].as_str().is_none_or(|r| r.trim().is_empty()) {
            out.push(required(
                &format!("{path}[{i}].rule"),
                "rule is not specified",
            ));
        }
    }
}

/// The `Warning`s for a CRD whose schemas hold CEL rules this apiserver
/// cannot evaluate (they use Kubernetes CEL functions it does not
/// implement): one per such rule.
pub fn unevaluated_rules(crd: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (i, v) in crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("spec.versions[{i}].schema.openAPIV3Schema");
        out.extend(super::cel::unevaluated_rules(
            &v["schema"]["openAPIV3Schema"],
            &path,
        ));
    }
    out
}

/// A default must validate against its own node and survive pruning.
fn check_default(node: &Value, default: &Value, path: &str, out: &mut Vec<Cause>) {
    let schema = Schema::new(node.clone());
    let errors = validation::validate_at(&schema, node, default, path);
    if !errors.is_empty() {
        out.extend(errors);
        return;
    }
    let mut pruned = default.clone();
    let mut removed = Vec::new();
    pruning::prune_value(node, &mut pruned, &mut removed);
    if !removed.is_empty() {
        out.push(invalid(path, default, "must not have unknown fields"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(schema: Value) -> Value {
        json!({"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": schema}}]}})
    }

    fn errors(schema: Value) -> Vec<String> {
        check_definition(&crd(schema))
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    const ROOT: &str = "spec.versions[0].schema.openAPIV3Schema";

    #[test]
    fn a_structural_schema_passes() {
        let ok = json!({"type": "object", "properties": {
            "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}}},
            "spec": {"type": "object", "required": ["a"], "properties": {
                "a": {"type": "string", "pattern": "^x", "default": "xy"},
                "port": {"x-kubernetes-int-or-string": true,
                         "anyOf": [{"type": "integer"}, {"type": "string"}]},
                "list": {"type": "array", "items": {"type": "string"}},
                "map": {"type": "object", "additionalProperties": {"type": "integer"}},
                "any": {"x-kubernetes-preserve-unknown-fields": true},
                "pod": {"type": "object", "x-kubernetes-embedded-resource": true,
                        "x-kubernetes-preserve-unknown-fields": true},
                "one": {"type": "integer", "oneOf": [{"minimum": 1}, {"maximum": -1}]}}}}});
        assert_eq!(errors(ok), Vec::<String>::new());
    }

    #[test]
    fn list_types_are_checked_as_kube_does() {
        let list = |extra: Value| {
            let mut l = json!({"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "ports": {"type": "array", "items": {"type": "integer"}}}}});
            for (k, v) in extra.as_object().unwrap() {
                l[k] = v.clone();
            }
            errors(json!({"type": "object", "properties": {"l": l}}))
        };
        let at = format!("{ROOT}.properties[l]");
        assert_eq!(
            list(json!({"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})),
            Vec::<String>::new()
        );
        assert_eq!(
            list(json!({"x-kubernetes-list-type": "bag"})),
            [format!("{at}.x-kubernetes-list-type: Unsupported value: \"bag\": supported values: \"atomic\", \"set\", \"map\"")]
        );
        assert_eq!(
            list(json!({"x-kubernetes-list-map-keys": ["name"]})),
            [format!("{at}.x-kubernetes-list-type: Required value: must be map if x-kubernetes-list-map-keys is non-empty")]
        );
        assert_eq!(
            list(json!({"x-kubernetes-list-type": "map"})),
            [format!("{at}.x-kubernetes-list-map-keys: Required value: must not be empty if x-kubernetes-list-type is map")]
        );
        let bad_keys = list(json!({"x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["ports", "nope", "ports"]}));
        assert_eq!(bad_keys.len(), 4, "{bad_keys:?}");
        assert!(bad_keys
            .iter()
            .any(|e| e.contains("entries must all be names of item properties")));
        assert!(bad_keys
            .iter()
            .any(|e| e.contains("must not contain duplicate entries")));
        assert!(bad_keys.iter().any(|e| e
            .starts_with(&format!("{at}.items.properties[ports].type:"))
            && e.ends_with(
                "must be a scalar type if parent array's x-kubernetes-list-type is map"
            )));
        assert_eq!(
            list(json!({"x-kubernetes-list-type": "set"})),
            [format!("{at}.items.x-kubernetes-map-type: Invalid value: \"null\": must be atomic as item of a list with x-kubernetes-list-type=set")]
        );
        let scalar_map = errors(
            json!({"type": "object", "properties": {"l": {"type": "array",
            "items": {"type": "string"}, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["a"]}}}),
        );
        assert_eq!(
            scalar_map,
            [format!("{at}.items.type: Invalid value: \"string\": must be object if parent array's x-kubernetes-list-type is map")]
        );
    }

    #[test]
    fn missing_schemas_and_types() {
        let none = json!({"spec": {"versions": [{"name": "v1"}]}});
        assert_eq!(
            check_definition(&none)[0].message,
            "Required value: schemas are required"
        );
        assert_eq!(
            errors(json!({"type": "object", "properties": {"spec": {"properties": {}}}})),
            [format!("{ROOT}.properties[spec].type: Required value: must not be empty for specified object fields")]
        );
        assert_eq!(
            errors(json!({"properties": {"list": {"type": "array"}}, "type": "object"})),
            [format!(
                "{ROOT}.properties[list].items: Required value: must be specified"
            )]
        );
        assert_eq!(
            errors(json!({"type": "object", "properties": {"l": {"type": "array", "items": {}}}})),
            [format!("{ROOT}.properties[l].items.type: Required value: must not be empty for specified array items")]
        );
        assert_eq!(
            errors(json!({"properties": {}})),
            [format!(
                "{ROOT}.type: Required value: must not be empty at the root"
            )]
        );
        assert_eq!(
            errors(json!({"type": "string"})),
            [format!(
                "{ROOT}.type: Invalid value: \"string\": must be object at the root"
            )]
        );
        assert_eq!(
            errors(json!({"type": "object", "properties": {"a": {"type": "map"}}})),
            [format!("{ROOT}.properties[a].type: Unsupported value: \"map\": supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\"")]
        );
    }

    #[test]
    fn additional_properties_rules() {
        let m = errors(
            json!({"type": "object", "properties": {"s": {"type": "object",
            "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}}}}),
        );
        assert_eq!(m, [format!("{ROOT}.properties[s].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive")]);
        let f = errors(
            json!({"type": "object", "properties": {"s": {"type": "object", "additionalProperties": false}}}),
        );
        assert_eq!(f, [format!("{ROOT}.properties[s].additionalProperties: Forbidden: additionalProperties cannot be set to false")]);
        let r = errors(json!({"type": "object", "additionalProperties": {"type": "string"}}));
        assert_eq!(
            r,
            [format!(
                "{ROOT}.additionalProperties: Forbidden: must not be used at the root"
            )]
        );
    }

    #[test]
    fn extensions_and_metadata() {
        assert_eq!(
            errors(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": false})),
            [format!("{ROOT}.x-kubernetes-preserve-unknown-fields: Invalid value: false: must be true or undefined")]
        );
        assert_eq!(
            errors(json!({"type": "object", "properties": {"p": {"x-kubernetes-int-or-string": true,
                "x-kubernetes-preserve-unknown-fields": true}}})),
            [format!("{ROOT}.properties[p].x-kubernetes-preserve-unknown-fields: Invalid value: true: must be false if x-kubernetes-int-or-string is true")]
        );
        assert_eq!(
            errors(json!({"type": "object", "properties": {"t": {"type": "object", "x-kubernetes-embedded-resource": true}}})),
            [format!("{ROOT}.properties[t].properties: Required value: must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields")]
        );
        assert_eq!(
            errors(json!({"type": "object", "properties": {"metadata": {"type": "object",
                "properties": {"labels": {"type": "object"}}}}})),
            [format!("{ROOT}.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified")]
        );
        let cel = json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.a > 0"}],
            "properties": {"a": {"type": "integer",
                "x-kubernetes-validations": [{"rule": "self > 0"}, {"rule": " ", "message": "m"}]}}});
        assert_eq!(
            errors(cel.clone()),
            [format!("{ROOT}.properties[a].x-kubernetes-validations[1].rule: Required value: rule is not specified")]
        );
        assert!(unevaluated_rules(&crd(cel)).is_empty());
        let unsupported = json!({"type": "object", "properties": {"u": {"type": "string",
            "x-kubernetes-validations": [{"rule": "isURL(self)"}]}}});
        assert_eq!(
            unevaluated_rules(&crd(unsupported)),
            ["spec.versions[0].schema.openAPIV3Schema: x-kubernetes-validations rule \"isURL(self)\" is stored but not evaluated: this apiserver does not implement the CEL function(s) isURL"]
        );
        let found = errors(
            json!({"type": "object", "properties": {"l": {"type": "array", "items": {"type": "object",
                "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}}},
                "x-kubernetes-validations": [{"rule": "self.l.size() >"}]}),
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            found[0],
            format!("{ROOT}.properties[l].items.x-kubernetes-validations[0].rule: Invalid value: \"self == oldSelf\": oldSelf cannot be used on the uncorrelatable portion of the schema within {ROOT}.properties[l].items")
        );
        assert!(
            found[1].starts_with(&format!("{ROOT}.x-kubernetes-validations[0].rule: Invalid value: apiextensions.ValidationRule{{Rule:\"self.l.size() >\", Message:\"\", MessageExpression:\"\", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:\"\", OptionalOldSelf:(*bool)(nil)}}: compilation failed: ERROR: <input>")),
            "{found:?}"
        );
        assert_eq!(
            errors(json!({"type": "object", "properties": {"a": {"type": "integer",
                "allOf": [{"x-kubernetes-validations": [{"rule": "self > 0"}]}]}}})),
            [format!("{ROOT}.properties[a].allOf[0].x-kubernetes-validations: Forbidden: must be empty to be structural")]
        );
        assert_eq!(
            errors(json!({"type": "object", "properties": {"l": {"type": "array", "uniqueItems": true, "items": {"type": "string"}}}})),
            [format!("{ROOT}.properties[l].uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic")]
        );
    }

    #[test]
    fn value_validations_stay_value_validations() {
        let e = errors(
            json!({"type": "object", "properties": {"a": {"type": "string",
            "anyOf": [{"type": "string", "description": "d"}]}}}),
        );
        assert_eq!(e, [
            format!("{ROOT}.properties[a].anyOf[0].description: Forbidden: must be empty to be structural"),
            format!("{ROOT}.properties[a].anyOf[0].type: Forbidden: must be empty to be structural"),
        ]);
        let m = errors(json!({"type": "object", "allOf": [{"properties": {"metadata": {}}}]}));
        assert_eq!(m, [format!("{ROOT}.allOf[0].properties[metadata]: Forbidden: must not be specified in a nested context")]);
    }

    #[test]
    fn patterns_and_defaults() {
        let p = errors(
            json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}}),
        );
        assert!(p[0].starts_with(&format!("{ROOT}.properties[a].pattern: Invalid value: \"(\": must be a valid regular expression, but isn't: ")), "{p:?}");
        let d = errors(
            json!({"type": "object", "properties": {"n": {"type": "integer", "default": "one"}}}),
        );
        let at = format!("{ROOT}.properties[n].default");
        assert_eq!(
            d,
            [format!(
                "{at}: Invalid value: \"string\": {at} in body must be of type integer: \"string\""
            )]
        );
        let u = errors(
            json!({"type": "object", "properties": {"o": {"type": "object",
            "properties": {"a": {"type": "string"}}, "default": {"a": "x", "b": 1}}}}),
        );
        assert_eq!(u, [format!("{ROOT}.properties[o].default: Invalid value: {{\"a\":\"x\",\"b\":1}}: must not have unknown fields")]);
    }
}
