//! apps/v1 DaemonSets: defaulting, validation, update rules and Table rows
//! as kube-apiserver's DaemonSet strategy and printer have them.
//!
//! Worked example — a DaemonSet sent with only a selector and a template
//! is stored with:
//!
//! ```text
//! metadata.generation: 1
//! metadata.annotations: {deprecated.daemonset.template.generation: "1"}
//! spec.updateStrategy: {type: RollingUpdate,
//!                       rollingUpdate: {maxUnavailable: 1, maxSurge: 0}}
//! spec.revisionHistoryLimit: 10
//! spec.template.spec: the pod defaults (restartPolicy Always, …)
//! status: {currentNumberScheduled: 0, numberMisscheduled: 0,
//!          desiredNumberScheduled: 0, numberReady: 0}
//! ```
//!
//! An update that changes the template bumps the template generation
//! annotation (and, with any spec change, `metadata.generation`); the
//! selector never changes.

use serde_json::{json, Value};

use super::validation::{default_pod_spec, set_default, validate_pod_spec};
use crate::error::{Cause, Error, Result};

/// The annotation carrying the template generation (apps/v1's form of the
/// internal `spec.templateGeneration`).
pub const TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

fn cause(field: &str, reason: &'static str, message: String) -> Cause {
    Cause {
        field: field.into(),
        reason,
        message,
    }
}

/// Fills Kubernetes' DaemonSet defaults (and, on create, the zero status
/// and the first template generation).
pub(super) fn default(obj: &mut Value) {
    if obj.get("status").is_none_or(Value::is_null) {
        obj["status"] = json!({"currentNumberScheduled": 0, "numberMisscheduled": 0,
            "desiredNumberScheduled": 0, "numberReady": 0});
    }
    if obj["metadata"].is_object() {
        set_default(
            obj,
            &["metadata", "annotations", TEMPLATE_GENERATION],
            json!("1"),
        );
    }
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    set_default(spec, &["updateStrategy", "type"], json!("RollingUpdate"));
    if spec["updateStrategy"]["type"] == "RollingUpdate" {
        set_default(
            spec,
            &["updateStrategy", "rollingUpdate", "maxUnavailable"],
            json!(1),
        );
        set_default(
            spec,
            &["updateStrategy", "rollingUpdate", "maxSurge"],
            json!(0),
        );
    }
    set_default(spec, &["revisionHistoryLimit"], json!(10));
    if let Some(t) = spec.get_mut("template") {
        default_pod_spec(t.get_mut("spec"));
    }
}

fn nonnegative(v: &Value, field: &str, causes: &mut Vec<Cause>) {
    if let Some(n) = v.as_i64().filter(|n| *n < 0) {
        causes.push(cause(
            field,
            "FieldValueInvalid",
            format!("Invalid value: {n}: must be greater than or equal to 0"),
        ));
    }
}

/// An int-or-percent's value: `Some((n, is_percent))`, `None` when a
/// string is not a percentage.
fn int_or_percent(v: &Value) -> Option<(i64, bool)> {
    match v {
        Value::String(s) => {
            let digits = s.strip_suffix('%')?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((digits.parse().ok()?, true))
        }
        v => v.as_i64().map(|n| (n, false)),
    }
}

/// Kubernetes' `ValidateRollingUpdateDaemonSet`.
fn validate_rolling_update(ru: &Value, at: &str, causes: &mut Vec<Cause>) {
    let mut values = [0i64; 2];
    for (i, f) in ["maxUnavailable", "maxSurge"].iter().enumerate() {
        let v = &ru[*f];
        if v.is_null() {
            continue;
        }
        let field = format!("{at}.{f}");
        match int_or_percent(v) {
            None => causes.push(cause(
                &field,
                "FieldValueInvalid",
                format!("Invalid value: {v}: must be an integer or percentage (e.g '5%')"),
            )),
            Some((n, _)) if n < 0 => causes.push(cause(
                &field,
                "FieldValueInvalid",
                format!("Invalid value: {n}: must be greater than or equal to 0"),
            )),
            Some((n, true)) if n > 100 => causes.push(cause(
                &field,
                "FieldValueInvalid",
                format!("Invalid value: {v}: must not be greater than 100%"),
            )),
            Some((n, _)) => values[i] = n,
        }
    }
    match (values[0] != 0, values[1] != 0) {
        (true, true) => causes.push(cause(
            &format!("{at}.maxSurge"),
            "FieldValueInvalid",
            format!(
                "Invalid value: {}: may not be set when maxUnavailable is non-zero",
                ru["maxSurge"]
            ),
        )),
        (false, false) => causes.push(cause(
            &format!("{at}.maxUnavailable"),
            "FieldValueRequired",
            "Required value: cannot be 0 when maxSurge is 0".into(),
        )),
        _ => {}
    }
}

/// Whether `labels` satisfy a LabelSelector (matchLabels and
/// matchExpressions); an unknown operator matches nothing.
pub(super) fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let labels = labels.as_object();
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let plain = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| label(k) == v.as_str());
    plain
        && selector["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|e| {
                let key = e["key"].as_str().unwrap_or_default();
                let values: Vec<&str> = e["values"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                match e["operator"].as_str().unwrap_or_default() {
                    "In" => label(key).is_some_and(|v| values.contains(&v)),
                    "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
                    "Exists" => label(key).is_some(),
                    "DoesNotExist" => label(key).is_none(),
                    _ => false,
                }
            })
}

fn selector_is_empty(selector: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.is_empty())
        && selector["matchExpressions"]
            .as_array()
            .is_none_or(|m| m.is_empty())
}

/// Adds the causes that make `obj` an invalid DaemonSet (Kubernetes'
/// `ValidateDaemonSetSpec`).
pub(super) fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    let selector = &spec["selector"];
    if selector.is_null() {
        causes.push(cause(
            "spec.selector",
            "FieldValueRequired",
            "Required value".into(),
        ));
    } else if selector_is_empty(selector) {
        causes.push(cause(
            "spec.selector",
            "FieldValueInvalid",
            format!("Invalid value: {selector}: empty selector is invalid for daemonset"),
        ));
    } else if !selector_matches(selector, &spec["template"]["metadata"]["labels"]) {
        causes.push(cause(
            "spec.template.metadata.labels",
            "FieldValueInvalid",
            format!(
                "Invalid value: {}: `selector` does not match template `labels`",
                spec["template"]["metadata"]["labels"]
            ),
        ));
    }
    let pod = &spec["template"]["spec"];
    validate_pod_spec(pod, "spec.template.spec", causes);
    let policy = pod["restartPolicy"].as_str().unwrap_or_default();
    if policy != "Always" {
        causes.push(cause(
            "spec.template.spec.restartPolicy",
            "FieldValueNotSupported",
            format!("Unsupported value: \"{policy}\": supported values: \"Always\""),
        ));
    }
    if !pod["activeDeadlineSeconds"].is_null() {
        causes.push(cause(
            "spec.template.spec.activeDeadlineSeconds",
            "FieldValueForbidden",
            "Forbidden: activeDeadlineSeconds in DaemonSet is not Supported".into(),
        ));
    }
    nonnegative(&spec["minReadySeconds"], "spec.minReadySeconds", causes);
    nonnegative(
        &spec["revisionHistoryLimit"],
        "spec.revisionHistoryLimit",
        causes,
    );
    let strategy = &spec["updateStrategy"];
    match strategy["type"].as_str().unwrap_or_default() {
        "OnDelete" => {}
        "RollingUpdate" => {
            if strategy["rollingUpdate"].is_null() {
                causes.push(cause(
                    "spec.updateStrategy.rollingUpdate",
                    "FieldValueRequired",
                    "Required value".into(),
                ));
            } else {
                validate_rolling_update(
                    &strategy["rollingUpdate"],
                    "spec.updateStrategy.rollingUpdate",
                    causes,
                );
            }
        }
        t => causes.push(cause(
            "spec.updateStrategy",
            "FieldValueNotSupported",
            format!(
                "Unsupported value: \"{t}\": supported values: \"RollingUpdate\", \"OnDelete\""
            ),
        )),
    }
}

fn template_generation(obj: &Value) -> i64 {
    obj["metadata"]["annotations"][TEMPLATE_GENERATION]
        .as_str()
        .and_then(|g| g.parse().ok())
        .unwrap_or(1)
}

/// An update of `old` to `new`: the selector is immutable; a changed
/// template gets the next template generation.
pub(super) fn update(name: &str, old: &Value, new: &mut Value) -> Result<()> {
    if old["spec"]["selector"] != new["spec"]["selector"] {
        return Err(Error::Invalid {
            group: "apps",
            kind: "DaemonSet",
            name: name.to_string(),
            causes: vec![cause(
                "spec.selector",
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: field is immutable",
                    new["spec"]["selector"]
                ),
            )],
        });
    }
    let mut generation = template_generation(old);
    if old["spec"]["template"] != new["spec"]["template"] {
        generation += 1;
    }
    if new["metadata"].is_object() {
        set_default(new, &["metadata", "annotations"], json!({}));
        if let Some(a) = new["metadata"]["annotations"].as_object_mut() {
            a.insert(TEMPLATE_GENERATION.into(), json!(generation.to_string()));
        }
    }
    Ok(())
}

/// The Table columns, as kube's printer has them.
pub(super) const COLUMNS: &[(&str, &str, u8)] = &[
    ("Name", "string", 0),
    ("Desired", "integer", 0),
    ("Current", "integer", 0),
    ("Ready", "integer", 0),
    ("Up-to-date", "integer", 0),
    ("Available", "integer", 0),
    ("Node Selector", "string", 0),
    ("Age", "string", 0),
    ("Containers", "string", 1),
    ("Images", "string", 1),
    ("Selector", "string", 1),
];

/// `k=v,k2=v2` sorted by key, `<none>` when empty (`labels.FormatLabels`).
fn format_labels(m: &Value) -> String {
    let mut pairs: Vec<String> = m
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
}

/// A LabelSelector as kubectl prints it (`metav1.FormatLabelSelector`).
fn format_selector(s: &Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut labels: Vec<String> = s["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    labels.sort();
    parts.extend(labels);
    for e in s["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            op => format!("{key} {op} ({})", values.join(",")),
        });
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

/// A Table row's cells for `o`, given its printed name and age.
pub(super) fn cells(o: &Value, name: Value, age: Value) -> Vec<Value> {
    let (spec, status) = (&o["spec"], &o["status"]);
    let n = |f: &str| json!(status[f].as_i64().unwrap_or(0));
    let containers = spec["template"]["spec"]["containers"].as_array();
    let joined = |f: &str| {
        containers
            .map(|cs| {
                cs.iter()
                    .map(|c| c[f].as_str().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    vec![
        name,
        n("desiredNumberScheduled"),
        n("currentNumberScheduled"),
        n("numberReady"),
        n("updatedNumberScheduled"),
        n("numberAvailable"),
        json!(format_labels(&spec["template"]["spec"]["nodeSelector"])),
        age,
        json!(joined("name")),
        json!(joined("image")),
        json!(format_selector(&spec["selector"])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(spec: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
               "metadata": {"name": "agent"}, "spec": spec})
    }

    fn template() -> Value {
        json!({"metadata": {"labels": {"app": "agent"}},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    }

    fn causes_of(obj: &Value) -> Vec<String> {
        let mut c = Vec::new();
        validate(obj, &mut c);
        c.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults() {
        let mut d = ds(json!({"selector": {"matchLabels": {"app": "agent"}},
                              "template": template()}));
        default(&mut d);
        let s = &d["spec"];
        assert_eq!(s["updateStrategy"]["type"], "RollingUpdate");
        assert_eq!(s["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1);
        assert_eq!(s["updateStrategy"]["rollingUpdate"]["maxSurge"], 0);
        assert_eq!(s["revisionHistoryLimit"], 10);
        assert_eq!(s["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(d["status"]["desiredNumberScheduled"], 0);
        assert_eq!(d["metadata"]["annotations"][TEMPLATE_GENERATION], "1");
        assert!(causes_of(&d).is_empty(), "{:?}", causes_of(&d));
        let mut on_delete = ds(json!({"selector": {"matchLabels": {"app": "agent"}},
            "updateStrategy": {"type": "OnDelete"}, "template": template()}));
        default(&mut on_delete);
        assert!(on_delete["spec"]["updateStrategy"]["rollingUpdate"].is_null());
        assert!(causes_of(&on_delete).is_empty());
    }

    #[test]
    fn refusals_carry_kubernetes_messages() {
        let mut t = template();
        t["spec"]["restartPolicy"] = json!("Never");
        t["spec"]["activeDeadlineSeconds"] = json!(5);
        let mut d = ds(json!({"selector": {"matchLabels": {"app": "other"}}, "template": t}));
        default(&mut d);
        let c = causes_of(&d);
        assert_eq!(
            c,
            [
                "spec.template.metadata.labels: Invalid value: {\"app\":\"agent\"}: `selector` does not match template `labels`",
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
                "spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in DaemonSet is not Supported",
            ]
        );
        let mut both = ds(json!({"selector": {"matchLabels": {"app": "agent"}},
            "updateStrategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "10%", "maxSurge": 1}},
            "template": template()}));
        default(&mut both);
        assert_eq!(
            causes_of(&both),
            ["spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 1: may not be set when maxUnavailable is non-zero"]
        );
        let mut zero = both.clone();
        zero["spec"]["updateStrategy"]["rollingUpdate"] =
            json!({"maxUnavailable": 0, "maxSurge": "0%"});
        assert_eq!(
            causes_of(&zero),
            ["spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"]
        );
        let mut bad = both.clone();
        bad["spec"]["updateStrategy"]["rollingUpdate"] =
            json!({"maxUnavailable": "x", "maxSurge": "150%"});
        let c = causes_of(&bad);
        assert!(
            c[0].ends_with("must be an integer or percentage (e.g '5%')"),
            "{c:?}"
        );
        assert!(c[1].ends_with("must not be greater than 100%"), "{c:?}");
        let mut kind = both.clone();
        kind["spec"]["updateStrategy"] = json!({"type": "Recreate"});
        assert_eq!(
            causes_of(&kind),
            ["spec.updateStrategy: Unsupported value: \"Recreate\": supported values: \"RollingUpdate\", \"OnDelete\""]
        );
        let empty = ds(json!({"selector": {}, "template": template()}));
        assert!(causes_of(&empty)[0].ends_with("empty selector is invalid for daemonset"));
    }

    #[test]
    fn updates_bump_the_template_generation_and_keep_the_selector() {
        let mut old = ds(json!({"selector": {"matchLabels": {"app": "agent"}},
                                "template": template()}));
        default(&mut old);
        let mut same = old.clone();
        update("agent", &old, &mut same).unwrap();
        assert_eq!(same["metadata"]["annotations"][TEMPLATE_GENERATION], "1");
        let mut image = old.clone();
        image["spec"]["template"]["spec"]["containers"][0]["image"] = json!("pause");
        image["metadata"]["annotations"] = json!({});
        update("agent", &old, &mut image).unwrap();
        assert_eq!(image["metadata"]["annotations"][TEMPLATE_GENERATION], "2");
        let mut sel = old.clone();
        sel["spec"]["selector"] = json!({"matchLabels": {"app": "x"}});
        let Err(Error::Invalid { causes, .. }) = update("agent", &old, &mut sel) else {
            panic!("selector change accepted");
        };
        assert!(causes[0].message.ends_with("field is immutable"));
    }

    #[test]
    fn rows() {
        let mut d = ds(json!({"selector": {"matchLabels": {"app": "agent"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
            "template": template()}));
        d["spec"]["template"]["spec"]["nodeSelector"] = json!({"role": "edge", "os": "linux"});
        d["status"] = json!({"desiredNumberScheduled": 3, "currentNumberScheduled": 3,
            "numberReady": 2, "updatedNumberScheduled": 1, "numberAvailable": 2});
        let row = cells(&d, json!("agent"), json!("1m"));
        assert_eq!(
            row,
            [
                json!("agent"),
                json!(3),
                json!(3),
                json!(2),
                json!(1),
                json!(2),
                json!("os=linux,role=edge"),
                json!("1m"),
                json!("c"),
                json!("busybox"),
                json!("app=agent,tier in (a,b)"),
            ]
        );
    }
}
