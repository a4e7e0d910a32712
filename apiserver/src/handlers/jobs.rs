//! batch/v1 Jobs: defaulting, validation and update rules as
//! kube-apiserver's Job strategy applies them.
//!
//! Worked example — `kubectl create job pi --image=busybox -- sh -c 'exit 0'`
//! sends a template with `restartPolicy: Never` and nothing else; stored:
//!
//! ```text
//! spec.parallelism: 1   spec.completions: 1   spec.backoffLimit: 6
//! spec.completionMode: NonIndexed   spec.suspend: false
//! spec.podReplacementPolicy: TerminatingOrFailed
//! spec.selector.matchLabels: {batch.kubernetes.io/controller-uid: <uid>}
//! spec.template.metadata.labels: {batch.kubernetes.io/controller-uid: <uid>,
//!   batch.kubernetes.io/job-name: pi, controller-uid: <uid>, job-name: pi}
//! ```
//!
//! A selector is generated unless `manualSelector: true`; a selector the
//! client wrote without it is refused (`selector` not auto-generated), as
//! is a template whose restartPolicy is not Never or OnFailure. Features
//! the controller does not implement (`podFailurePolicy`, `successPolicy`,
//! `backoffLimitPerIndex`, `maxFailedIndexes`, a foreign `managedBy`) are
//! refused with 422 rather than accepted and ignored.

use serde_json::{json, Value};

use super::validation::{default_pod_spec, set_default, validate_pod_spec};
use crate::error::{Cause, Error, Result};

/// The label on a Job's pods naming its uid (and its selector's key).
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// The label on a Job's pods naming the Job.
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// The controller Kubernetes names as the default `managedBy`.
const JOB_CONTROLLER: &str = "kubernetes.io/job-controller";

fn cause(field: &str, reason: &'static str, message: String) -> Cause {
    Cause {
        field: field.into(),
        reason,
        message,
    }
}

fn generated_selector(uid: &str) -> Value {
    json!({"matchLabels": {CONTROLLER_UID: uid}})
}

fn manual(spec: &Value) -> bool {
    spec["manualSelector"] == true
}

/// Fills Kubernetes' Job defaults and, unless `manualSelector`, the
/// generated selector and pod labels. Needs `metadata.uid` set.
pub(super) fn default(obj: &mut Value) {
    // JobStatus is a struct in Kubernetes: a new Job reads `status: {}`
    // (the official Python client's `V1Job.status` is then not None).
    if obj.get("status").is_none_or(Value::is_null) {
        obj["status"] = json!({});
    }
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let uid = obj["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    // Both unset: a non-parallel Job, 1 and 1. A parallelism alone leaves
    // completions unset (any success completes the Job: a work queue).
    let unset = |v: &Value, f: &str| v.get(f).is_none_or(Value::is_null);
    if unset(spec, "completions") && unset(spec, "parallelism") {
        spec["completions"] = json!(1);
    }
    set_default(spec, &["parallelism"], json!(1));
    set_default(spec, &["backoffLimit"], json!(6));
    set_default(spec, &["completionMode"], json!("NonIndexed"));
    set_default(spec, &["suspend"], json!(false));
    if spec.get("podFailurePolicy").is_none_or(Value::is_null) {
        set_default(
            spec,
            &["podReplacementPolicy"],
            json!("TerminatingOrFailed"),
        );
    }
    if !manual(spec) && !uid.is_empty() {
        if spec.get("selector").is_none_or(Value::is_null) {
            spec["selector"] = generated_selector(&uid);
        }
        let labels = [
            (CONTROLLER_UID, uid.as_str()),
            (JOB_NAME, name.as_str()),
            ("controller-uid", uid.as_str()),
            ("job-name", name.as_str()),
        ];
        for (k, v) in labels {
            set_default(spec, &["template", "metadata", "labels", k], json!(v));
        }
    }
    if let Some(t) = spec.get_mut("template") {
        default_pod_spec(t.get_mut("spec"));
    }
}

/// Adds the causes that make `obj` an invalid Job.
pub(super) fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    for field in [
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ] {
        if let Some(n) = spec[field].as_i64().filter(|n| *n < 0) {
            causes.push(cause(
                &format!("spec.{field}"),
                "FieldValueInvalid",
                format!("Invalid value: {n}: must be greater than or equal to 0"),
            ));
        }
    }
    if spec["activeDeadlineSeconds"] == 0 {
        causes.push(cause(
            "spec.activeDeadlineSeconds",
            "FieldValueInvalid",
            "Invalid value: 0: must be greater than 0".into(),
        ));
    }
    let mode = spec["completionMode"].as_str().unwrap_or("NonIndexed");
    if !matches!(mode, "NonIndexed" | "Indexed") {
        causes.push(cause(
            "spec.completionMode",
            "FieldValueNotSupported",
            format!("Unsupported value: \"{mode}\": supported values: \"NonIndexed\", \"Indexed\""),
        ));
    }
    if mode == "Indexed" {
        match spec["completions"].as_i64() {
            None => causes.push(cause(
                "spec.completions",
                "FieldValueRequired",
                "Required value: when completion mode is Indexed".into(),
            )),
            Some(c) if c > 100_000 => causes.push(cause(
                "spec.completions",
                "FieldValueInvalid",
                format!("Invalid value: {c}: must be less than or equal to 100000 when completion mode is Indexed"),
            )),
            _ => {}
        }
    }
    for field in [
        "podFailurePolicy",
        "successPolicy",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        if !spec[field].is_null() {
            causes.push(cause(
                &format!("spec.{field}"),
                "FieldValueForbidden",
                "Forbidden: not supported by this apiserver's job controller".into(),
            ));
        }
    }
    if let Some(m) = spec["managedBy"].as_str().filter(|m| *m != JOB_CONTROLLER) {
        causes.push(cause(
            "spec.managedBy",
            "FieldValueForbidden",
            format!("Forbidden: {m:?}: only {JOB_CONTROLLER:?} manages Jobs here"),
        ));
    }
    if let Some(p) = spec["podReplacementPolicy"]
        .as_str()
        .filter(|p| !matches!(*p, "TerminatingOrFailed" | "Failed"))
    {
        causes.push(cause(
            "spec.podReplacementPolicy",
            "FieldValueNotSupported",
            format!(
                "Unsupported value: \"{p}\": supported values: \"Failed\", \"TerminatingOrFailed\""
            ),
        ));
    }
    validate_selector(obj, causes);
    let policy = spec["template"]["spec"]["restartPolicy"]
        .as_str()
        .unwrap_or_default();
    if !matches!(policy, "OnFailure" | "Never") {
        causes.push(cause(
            "spec.template.spec.restartPolicy",
            "FieldValueNotSupported",
            format!("Unsupported value: \"{policy}\": supported values: \"OnFailure\", \"Never\""),
        ));
    }
    validate_pod_spec(&spec["template"]["spec"], "spec.template.spec", causes);
}

fn validate_selector(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    let selector = &spec["selector"];
    if selector.is_null() {
        causes.push(cause(
            "spec.selector",
            "FieldValueRequired",
            "Required value".into(),
        ));
        return;
    }
    if !manual(spec) {
        let uid = obj["metadata"]["uid"].as_str().unwrap_or_default();
        if *selector != generated_selector(uid) {
            causes.push(cause(
                "spec.selector",
                "FieldValueInvalid",
                format!("Invalid value: {selector}: `selector` not auto-generated"),
            ));
            return;
        }
    }
    let labels = spec["template"]["metadata"]["labels"].as_object();
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let mut matches = true;
    for (k, v) in selector["matchLabels"].as_object().into_iter().flatten() {
        matches &= label(k) == v.as_str();
    }
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        matches &= match e["operator"].as_str().unwrap_or_default() {
            "In" => label(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => label(key).is_some(),
            "DoesNotExist" => label(key).is_none(),
            _ => false,
        };
    }
    if !matches {
        causes.push(cause(
            "spec.template.metadata.labels",
            "FieldValueInvalid",
            format!(
                "Invalid value: {}: `selector` does not match template `labels`",
                spec["template"]["metadata"]["labels"]
            ),
        ));
    }
}

/// The fields an update may not change (kube's `ValidateJobSpecUpdate`):
/// selector, template (unless the Job is suspended), completionMode, and
/// completions (except an Indexed Job scaled with parallelism).
pub(super) fn check_update(name: &str, old: &Value, new: &Value) -> Result<()> {
    let (o, n) = (&old["spec"], &new["spec"]);
    let mut causes = Vec::new();
    let immutable = |field: &str, causes: &mut Vec<Cause>| {
        causes.push(cause(
            &format!("spec.{field}"),
            "FieldValueInvalid",
            format!("Invalid value: {}: field is immutable", n[field]),
        ))
    };
    for field in ["selector", "completionMode"] {
        if o[field] != n[field] {
            immutable(field, &mut causes);
        }
    }
    let suspended = o["suspend"] == true && n["suspend"] == true;
    if o["template"] != n["template"] && !suspended {
        immutable("template", &mut causes);
    }
    let elastic = n["completionMode"] == "Indexed" && n["completions"] == n["parallelism"];
    if o["completions"] != n["completions"] && !elastic {
        immutable("completions", &mut causes);
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid {
            group: "batch",
            kind: "Job",
            name: name.to_string(),
            causes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(spec: Value) -> Value {
        json!({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": "pi", "uid": "u-1"}, "spec": spec})
    }

    fn template(policy: &str) -> Value {
        json!({"spec": {"restartPolicy": policy,
                        "containers": [{"name": "c", "image": "busybox"}]}})
    }

    fn causes_of(obj: &Value) -> Vec<String> {
        let mut c = Vec::new();
        validate(obj, &mut c);
        c.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults_and_generated_selector() {
        let mut j = job(json!({"template": template("Never")}));
        default(&mut j);
        let s = &j["spec"];
        assert_eq!(s["parallelism"], 1);
        assert_eq!(s["completions"], 1);
        assert_eq!(s["backoffLimit"], 6);
        assert_eq!(s["completionMode"], "NonIndexed");
        assert_eq!(s["suspend"], false);
        assert_eq!(
            s["selector"],
            json!({"matchLabels": {CONTROLLER_UID: "u-1"}})
        );
        let labels = &s["template"]["metadata"]["labels"];
        assert_eq!(labels[JOB_NAME], "pi");
        assert_eq!(labels["controller-uid"], "u-1");
        assert!(causes_of(&j).is_empty(), "{:?}", causes_of(&j));
        // A parallelism alone leaves completions unset (a work queue).
        let mut wq = job(json!({"parallelism": 3, "template": template("Never")}));
        default(&mut wq);
        assert!(wq["spec"]["completions"].is_null());
    }

    #[test]
    fn refusals_carry_kubernetes_messages() {
        let mut always = job(json!({"template": {"spec": {
            "containers": [{"name": "c", "image": "busybox"}]}}}));
        default(&mut always);
        assert_eq!(
            causes_of(&always),
            ["spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""]
        );
        let mut own = job(json!({"selector": {"matchLabels": {"a": "b"}},
                                 "template": template("Never")}));
        default(&mut own);
        assert!(causes_of(&own)[0].contains("`selector` not auto-generated"));
        let mut manual = job(json!({"manualSelector": true,
            "selector": {"matchLabels": {"a": "b"}}, "template": template("OnFailure")}));
        default(&mut manual);
        assert!(causes_of(&manual)[0].contains("does not match template `labels`"));
        let mut bad = job(
            json!({"completionMode": "Indexed", "backoffLimit": -1, "parallelism": 2,
            "podFailurePolicy": {"rules": []}, "template": template("Never")}),
        );
        default(&mut bad);
        let c = causes_of(&bad);
        assert!(
            c.iter()
                .any(|c| c
                    == "spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0"),
            "{c:?}"
        );
        assert!(
            c.iter()
                .any(|c| c == "spec.completions: Required value: when completion mode is Indexed"),
            "{c:?}"
        );
        assert!(
            c.iter()
                .any(|c| c.starts_with("spec.podFailurePolicy: Forbidden")),
            "{c:?}"
        );
    }

    #[test]
    fn updates_keep_the_fixed_fields() {
        let mut old = job(json!({"template": template("Never")}));
        default(&mut old);
        let mut parallel = old.clone();
        parallel["spec"]["parallelism"] = json!(4);
        assert!(check_update("pi", &old, &parallel).is_ok());
        let mut image = old.clone();
        image["spec"]["template"]["spec"]["containers"][0]["image"] = json!("pause");
        let Err(Error::Invalid { causes, .. }) = check_update("pi", &old, &image) else {
            panic!("template change accepted");
        };
        assert_eq!(causes[0].field, "spec.template");
        let mut completions = old.clone();
        completions["spec"]["completions"] = json!(3);
        assert!(check_update("pi", &old, &completions).is_err());
    }
}
