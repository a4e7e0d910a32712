//! policy/v1 PodDisruptionBudgets: validation and printing as
//! kube-apiserver's PodDisruptionBudget strategy and printers have them.
//!
//! Worked example — `kubectl create pdb web --selector=app=web --min-available=2`
//! stores the spec as sent (policy/v1 has no spec defaults) and a zero
//! status, which the disruption controller then fills in:
//!
//! ```text
//! spec:   {minAvailable: 2, selector: {matchLabels: {app: web}}}
//! status: {currentHealthy: 0, desiredHealthy: 0, disruptionsAllowed: 0, expectedPods: 0}
//! NAME  MIN AVAILABLE  MAX UNAVAILABLE  ALLOWED DISRUPTIONS  AGE
//! web   2              N/A              0                    3s
//! ```
//!
//! The spec may change after creation (policy/v1 allows it); a change bumps
//! `metadata.generation`, and until the controller's `observedGeneration`
//! catches up the eviction subresource answers 429 for the budget's pods.

use serde_json::{json, Value};

use crate::error::Cause;

/// `spec.unhealthyPodEvictionPolicy` values, sorted as Kubernetes lists them.
const UNHEALTHY_POLICIES: [&str; 2] = ["AlwaysAllow", "IfHealthyBudget"];

/// The status fields Kubernetes always writes (none is `omitempty`).
const COUNTS: [&str; 4] = [
    "currentHealthy",
    "desiredHealthy",
    "disruptionsAllowed",
    "expectedPods",
];

fn cause(field: &str, reason: &'static str, message: String) -> Cause {
    Cause {
        field: field.into(),
        reason,
        message,
    }
}

/// A new budget's status: the four counts at zero (kube resets the status
/// of a created PodDisruptionBudget to its zero value).
pub(super) fn default(obj: &mut Value) {
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    for field in COUNTS {
        if obj["status"][field].is_null() {
            obj["status"][field] = json!(0);
        }
    }
}

/// How a value prints in a field error (numbers bare, strings quoted).
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// `ValidatePositiveIntOrPercent` and `IsNotMoreThan100Percent`.
fn validate_int_or_percent(v: &Value, field: &str, causes: &mut Vec<Cause>) {
    match v {
        Value::Number(n) => {
            if n.as_i64().is_none_or(|n| n < 0) {
                causes.push(cause(
                    field,
                    "FieldValueInvalid",
                    format!("Invalid value: {n}: must be greater than or equal to 0"),
                ));
            }
        }
        Value::String(s) => {
            let digits = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
            match digits {
                None => causes.push(cause(
                    field,
                    "FieldValueInvalid",
                    format!("Invalid value: {}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')", shown(v)),
                )),
                Some(d) if d.parse::<u64>().is_ok_and(|p| p > 100) || d.len() > 18 => {
                    causes.push(cause(
                        field,
                        "FieldValueInvalid",
                        format!("Invalid value: {}: must not be greater than 100%", shown(v)),
                    ))
                }
                Some(_) => {}
            }
        }
        other => causes.push(cause(
            field,
            "FieldValueInvalid",
            format!(
                "Invalid value: {}: must be an integer or percentage (e.g '5%')",
                shown(other)
            ),
        )),
    }
}

/// `metav1validation.ValidateLabelSelector`: each expression's operator
/// and its values.
fn validate_selector(selector: &Value, causes: &mut Vec<Cause>) {
    for (i, e) in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("spec.selector.matchExpressions[{i}]");
        let has_values = e["values"].as_array().is_some_and(|v| !v.is_empty());
        match e["operator"].as_str().unwrap_or_default() {
            "In" | "NotIn" if !has_values => causes.push(cause(
                &format!("{at}.values"),
                "FieldValueRequired",
                "Required value: must be specified when `operator` is 'In' or 'NotIn'".into(),
            )),
            "Exists" | "DoesNotExist" if has_values => causes.push(cause(
                &format!("{at}.values"),
                "FieldValueForbidden",
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                    .into(),
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => causes.push(cause(
                &format!("{at}.operator"),
                "FieldValueInvalid",
                format!("Invalid value: {op:?}: not a valid selector operator"),
            )),
        }
    }
}

/// Adds the causes that make `obj` an invalid PodDisruptionBudget
/// (Kubernetes' `ValidatePodDisruptionBudget`: spec and status).
pub(super) fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    let (min, max) = (&spec["minAvailable"], &spec["maxUnavailable"]);
    if !min.is_null() && !max.is_null() {
        causes.push(cause(
            "spec",
            "FieldValueInvalid",
            format!("Invalid value: {spec}: minAvailable and maxUnavailable cannot be both set"),
        ));
    }
    if !min.is_null() {
        validate_int_or_percent(min, "spec.minAvailable", causes);
    }
    if !max.is_null() {
        validate_int_or_percent(max, "spec.maxUnavailable", causes);
    }
    validate_selector(&spec["selector"], causes);
    if let Some(p) = spec["unhealthyPodEvictionPolicy"]
        .as_str()
        .filter(|p| !UNHEALTHY_POLICIES.contains(p))
    {
        causes.push(cause(
            "spec.unhealthyPodEvictionPolicy",
            "FieldValueNotSupported",
            format!("Unsupported value: \"{p}\": supported values: \"AlwaysAllow\", \"IfHealthyBudget\""),
        ));
    }
    let status = &obj["status"];
    for field in COUNTS {
        if let Some(n) = status[field].as_i64().filter(|n| *n < 0) {
            causes.push(cause(
                &format!("status.{field}"),
                "FieldValueInvalid",
                format!("Invalid value: {n}: must be greater than or equal to 0"),
            ));
        }
    }
}

/// The printed columns (kube's printers).
pub(super) const COLUMNS: &[(&str, &str, u8)] = &[
    ("Name", "string", 0),
    ("Min Available", "string", 0),
    ("Max Unavailable", "string", 0),
    ("Allowed Disruptions", "integer", 0),
    ("Age", "string", 0),
];

/// The printed row: an unset bound prints `N/A`.
pub(super) fn cells(o: &Value, name: Value, age: Value) -> Vec<Value> {
    let bound = |v: &Value| match v {
        Value::Null => "N/A".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    vec![
        name,
        json!(bound(&o["spec"]["minAvailable"])),
        json!(bound(&o["spec"]["maxUnavailable"])),
        json!(o["status"]["disruptionsAllowed"].as_i64().unwrap_or(0)),
        age,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes_of(spec: Value) -> Vec<String> {
        let mut obj = json!({"metadata": {"name": "web"}, "spec": spec});
        default(&mut obj);
        let mut causes = Vec::new();
        validate(&obj, &mut causes);
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn a_new_budget_has_a_zero_status() {
        let mut obj = json!({"spec": {"minAvailable": 1}});
        default(&mut obj);
        assert_eq!(
            obj["status"],
            json!({"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0})
        );
        let mut kept = json!({"status": {"disruptionsAllowed": 2, "currentHealthy": 3}});
        default(&mut kept);
        assert_eq!(kept["status"]["disruptionsAllowed"], 2);
    }

    #[test]
    fn refusals_carry_kubernetes_messages() {
        let sel = json!({"matchLabels": {"app": "web"}});
        assert!(causes_of(json!({"minAvailable": 2, "selector": sel})).is_empty());
        assert!(causes_of(json!({"maxUnavailable": "50%", "selector": sel})).is_empty());
        let both = causes_of(json!({"minAvailable": 1, "maxUnavailable": 1}));
        assert!(both[0].ends_with("minAvailable and maxUnavailable cannot be both set"));
        assert_eq!(
            causes_of(json!({"minAvailable": -1})),
            ["spec.minAvailable: Invalid value: -1: must be greater than or equal to 0"]
        );
        assert_eq!(
            causes_of(json!({"maxUnavailable": "150%"})),
            ["spec.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%"]
        );
        assert!(causes_of(json!({"minAvailable": "half"}))[0]
            .contains("a valid percent string must be a numeric string followed by an ending '%'"));
        assert_eq!(
            causes_of(json!({"minAvailable": 1, "unhealthyPodEvictionPolicy": "Never"})),
            ["spec.unhealthyPodEvictionPolicy: Unsupported value: \"Never\": supported values: \"AlwaysAllow\", \"IfHealthyBudget\""]
        );
        let bad_op = json!({"matchExpressions": [{"key": "a", "operator": "Has"}]});
        assert_eq!(
            causes_of(json!({"minAvailable": 1, "selector": bad_op})),
            ["spec.selector.matchExpressions[0].operator: Invalid value: \"Has\": not a valid selector operator"]
        );
        let no_values = json!({"matchExpressions": [{"key": "a", "operator": "In"}]});
        assert_eq!(
            causes_of(json!({"minAvailable": 1, "selector": no_values})),
            ["spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"]
        );
    }

    #[test]
    fn rows_print_unset_bounds_as_not_applicable() {
        let o = json!({"spec": {"maxUnavailable": "25%"}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            cells(&o, json!("web"), json!("3s")),
            [
                json!("web"),
                json!("N/A"),
                json!("25%"),
                json!(1),
                json!("3s")
            ]
        );
    }
}
