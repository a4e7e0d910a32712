//! Structural schemas of CustomResourceDefinitions, as kube's
//! apiextensions-apiserver uses them (`pkg/apiserver/schema`,
//! `…/validation`, `…/schema/defaulting`, `…/schema/pruning`).
//!
//! # Layout
//!
//! - `structural` — the check at CRD create and update: every
//!   `openAPIV3Schema` is structural (types specified, no
//!   `additionalProperties` beside `properties`, the `x-kubernetes-*`
//!   rules, root `metadata` restricted to `name`/`generateName`), its
//!   patterns compile, its defaults validate and survive pruning.
//! - `cel` — CEL rules (`x-kubernetes-validations`): compiled and
//!   checked at CRD time, evaluated on every write of a custom resource
//!   (`oldSelf` on updates), with kube's messages and cost limits.
//! - `validation` — a custom resource against its schema: type, format,
//!   enum, bounds, lengths, pattern, items, properties, required,
//!   nullable, `allOf`/`anyOf`/`oneOf`/`not`, int-or-string, embedded
//!   resources; every error in kube's field-path form.
//! - `defaulting` — `default`s filled in where a field is absent (and
//!   non-nullable nulls dropped), on writes and on reads from storage.
//! - `pruning` — fields the schema does not specify removed (kept under
//!   `x-kubernetes-preserve-unknown-fields`), root and embedded
//!   `metadata` pruned to ObjectMeta; the removed paths are what
//!   `fieldValidation` reports.
//! - `formats` — the string formats kube's validator knows.
//!
//! Worked example, a CronTab schema with `spec.replicas` (integer,
//! default 1) and no `preserve-unknown-fields`: a create of
//! `{"spec": {"cronSpec": "* * * * */5", "colour": "red"}}` prunes
//! `spec.colour` (a `Warning`, or 400 under `fieldValidation=Strict`),
//! defaults `spec.replicas: 1`, then validates; an object stored before
//! the default existed reads back with `replicas: 1` too.

mod cel;
mod defaulting;
mod formats;
mod pruning;
mod structural;
mod validation;

use std::collections::HashMap;

use regex::Regex;
use serde_json::Value;

pub use structural::{check_definition, unevaluated_rules};

use crate::error::Cause;

/// One version's `openAPIV3Schema`, checked structural at CRD time, with
/// its patterns compiled once.
#[derive(Debug)]
pub struct Schema {
    root: Value,
    patterns: HashMap<String, Regex>,
    /// Whether any node has a `default` (reads need no defaulting otherwise).
    has_defaults: bool,
    /// The CEL rules, compiled once; `None` when the schema has none.
    rules: Option<cel::Rules>,
}

/// Schema errors after which kube does not evaluate CEL rules (its
/// `hasBlockingErr`): the object is not of the shape the rules expect.
const BLOCKING: &[&str] = &[
    "FieldValueNotSupported",
    "FieldValueRequired",
    "FieldValueTooLong",
    "FieldValueTooMany",
    "FieldValueTypeInvalid",
];

impl Schema {
    /// The schema of `version` in a stored (so already checked) CRD.
    pub fn of_version(crd: &Value, version: &str) -> Option<Schema> {
        let v = crd["spec"]["versions"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == version)?;
        let root = &v["schema"]["openAPIV3Schema"];
        root.is_object().then(|| Schema::new(root.clone()))
    }

    /// Wraps a schema root, compiling its patterns (one that does not
    /// compile is skipped: the CRD check refused it already).
    pub fn new(root: Value) -> Schema {
        let mut patterns = HashMap::new();
        collect_patterns(&root, &mut patterns);
        let mut has_defaults = false;
        each_node(&root, &mut |n| has_defaults |= n.get("default").is_some());
        let rules = cel::Rules::new(&root);
        Schema {
            root,
            patterns,
            has_defaults,
            rules,
        }
    }

    /// The schema as the CRD gave it (what server-side apply reads
    /// `x-kubernetes-list-type` and `-map-keys` from).
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// Removes the fields the schema does not specify; the removed paths
    /// (`spec.colour`, `metadata.bogus`), in order.
    pub fn prune(&self, obj: &mut Value) -> Vec<String> {
        pruning::prune(&self.root, obj)
    }

    /// Fills in the schema's defaults; whether anything changed.
    pub fn default(&self, obj: &mut Value) -> bool {
        defaulting::default(&self.root, obj)
    }

    /// Every way `obj` breaks the schema and its CEL rules, as 422
    /// causes; `old` is the object an update replaces (transition rules
    /// run only with it). Rules are not run on an object whose shape is
    /// wrong (kube's cause for that closes the list).
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = validation::validate(self, obj);
        let Some(rules) = &self.rules else {
            return causes;
        };
        if causes.iter().any(|c| BLOCKING.contains(&c.reason)) {
            causes.push(invalid(
                "<nil>",
                &Value::Null,
                "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ));
        } else {
            causes.extend(rules.validate(obj, old));
        }
        causes
    }

    /// Whether any node has a `default` (reads need no defaulting otherwise).
    pub fn has_defaults(&self) -> bool {
        self.has_defaults
    }

    fn pattern(&self, p: &str) -> Option<&Regex> {
        self.patterns.get(p)
    }
}

fn collect_patterns(root: &Value, out: &mut HashMap<String, Regex>) {
    each_node(root, &mut |n| {
        if let Some(p) = n["pattern"].as_str() {
            if let Ok(re) = Regex::new(p) {
                out.insert(p.to_string(), re);
            }
        }
    });
}

/// Calls `f` on `node` and every schema node below it (properties,
/// items, additionalProperties, the junctors), never on values such as
/// a `default` or an `enum`.
fn each_node(node: &Value, f: &mut impl FnMut(&Value)) {
    if !node.is_object() {
        return;
    }
    f(node);
    for sub in node["properties"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        each_node(sub, f);
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(sub) = node.get(key) {
            each_node(sub, f);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for sub in node[key].as_array().into_iter().flatten() {
            each_node(sub, f);
        }
    }
}

/// A field path one step down: `spec` + `replicas` = `spec.replicas`.
fn child(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// A value as kube prints it in `Invalid value: …`: strings quoted,
/// numbers and booleans bare, anything else as JSON.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "\"null\"".into(),
        other => other.to_string(),
    }
}

fn cause(field: &str, reason: &'static str, message: String) -> Cause {
    Cause {
        field: field.to_string(),
        reason,
        message,
    }
}

fn required(field: &str, detail: &str) -> Cause {
    let message = if detail.is_empty() {
        "Required value".to_string()
    } else {
        format!("Required value: {detail}")
    };
    cause(field, "FieldValueRequired", message)
}

fn forbidden(field: &str, detail: &str) -> Cause {
    cause(field, "FieldValueForbidden", format!("Forbidden: {detail}"))
}

fn invalid(field: &str, value: &Value, detail: &str) -> Cause {
    cause(
        field,
        "FieldValueInvalid",
        format!("Invalid value: {}: {detail}", shown(value)),
    )
}

fn not_supported(field: &str, value: &Value, supported: &[String]) -> Cause {
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    cause(
        field,
        "FieldValueNotSupported",
        format!(
            "Unsupported value: {}: supported values: {}",
            shown(value),
            list.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_patterns_are_found_in_schema_nodes_only() {
        let plain = Schema::new(json!({"type": "object", "properties": {
            "a": {"type": "object", "enum": [{"default": 1}]},
            "default": {"type": "string", "pattern": "^x"}}}));
        assert!(!plain.has_defaults());
        assert!(plain.pattern("^x").is_some());
        let nested = Schema::new(json!({"type": "object", "properties": {
            "a": {"type": "array", "items": {"type": "string", "default": "x"}}}}));
        assert!(nested.has_defaults());
    }
}
