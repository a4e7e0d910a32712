//! batch/v1 CronJobs: defaulting, validation and the Table row, as
//! kube-apiserver's CronJob strategy and printers have them.
//!
//! Worked example — `kubectl create cronjob tick --image=busybox
//! --schedule='*/1 * * * *'` sends a schedule and a job template whose pod
//! template has `restartPolicy: OnFailure`; stored:
//!
//! ```text
//! spec.concurrencyPolicy: Allow   spec.suspend: false
//! spec.successfulJobsHistoryLimit: 3   spec.failedJobsHistoryLimit: 1
//! spec.jobTemplate.spec.template.spec: the pod defaults (dnsPolicy, …)
//! status: {}
//! ```
//!
//! The job template gets only the pod template's defaults, as in
//! Kubernetes (whose Job defaults apply to Jobs, not to `JobSpec`s): the
//! Job the controller makes from it is defaulted when it is created, and
//! gets its selector then. The template is validated as a Job's spec
//! (`jobs::validate`), without a selector: one there is refused (`selector`
//! will be auto-generated), as is `manualSelector: true`.
//!
//! The schedule is parsed by `ballast_cron` (robfig/cron's grammar and
//! messages); `TZ=`/`CRON_TZ=` in it is refused unless the stored
//! schedule already had one (kube's `allowTZInSchedule`); `timeZone` must
//! name a zone of the tz database, checked when it is set or changed.

use serde_json::{json, Value};

use super::validation::{default_pod_spec, set_default};
use crate::error::Cause;

/// The longest CronJob name: Job names get an 11-character `-<minutes>`
/// suffix and must stay DNS-1035 labels (63).
pub const MAX_NAME_LEN: usize = 52;

fn cause(field: &str, reason: &'static str, message: String) -> Cause {
    Cause {
        field: field.into(),
        reason,
        message,
    }
}

fn quoted(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// Fills Kubernetes' CronJob defaults.
pub(super) fn default(obj: &mut Value) {
    if obj.get("status").is_none_or(Value::is_null) {
        obj["status"] = json!({});
    }
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    set_default(spec, &["concurrencyPolicy"], json!("Allow"));
    set_default(spec, &["suspend"], json!(false));
    set_default(spec, &["successfulJobsHistoryLimit"], json!(3));
    set_default(spec, &["failedJobsHistoryLimit"], json!(1));
    let template = spec
        .get_mut("jobTemplate")
        .and_then(|t| t.get_mut("spec"))
        .and_then(|s| s.get_mut("template"));
    if let Some(t) = template {
        default_pod_spec(t.get_mut("spec"));
    }
}

/// Adds the causes that make `obj` an invalid CronJob; `old` is the stored
/// object on an update (kube's `ValidateCronJobUpdate`: no name length
/// check, `TZ=` kept if it was there, the zone checked only if changed).
pub(super) fn validate(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    if old.is_none() && name.len() > MAX_NAME_LEN {
        causes.push(cause(
            "metadata.name",
            "FieldValueInvalid",
            format!(
                "Invalid value: {}: must be no more than {MAX_NAME_LEN} characters",
                quoted(name)
            ),
        ));
    }
    let spec = &obj["spec"];
    let old_spec = old.map(|o| &o["spec"]);
    let zone = spec["timeZone"].as_str();
    match spec["schedule"].as_str().filter(|s| !s.is_empty()) {
        None => causes.push(cause(
            "spec.schedule",
            "FieldValueRequired",
            "Required value".into(),
        )),
        Some(schedule) => {
            let invalid = |why: &str| {
                cause(
                    "spec.schedule",
                    "FieldValueInvalid",
                    format!("Invalid value: {}: {why}", quoted(schedule)),
                )
            };
            if let Err(e) = ballast_cron::Schedule::parse(schedule) {
                causes.push(invalid(&e.0));
            }
            let allow_tz = old_spec
                .and_then(|s| s["schedule"].as_str())
                .is_some_and(|s| s.contains("TZ"));
            if schedule.contains("TZ") {
                if !allow_tz {
                    causes.push(invalid(
                        "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                    ));
                } else if zone.is_some() {
                    causes.push(invalid(
                        "cannot use both timeZone field and TZ or CRON_TZ in schedule",
                    ));
                }
            }
        }
    }
    if let Some(n) = spec["startingDeadlineSeconds"].as_i64().filter(|n| *n < 0) {
        causes.push(cause(
            "spec.startingDeadlineSeconds",
            "FieldValueInvalid",
            format!("Invalid value: {n}: must be greater than or equal to 0"),
        ));
    }
    if old_spec.is_none_or(|o| o["timeZone"] != spec["timeZone"]) {
        if let Some(message) = zone.and_then(time_zone_error) {
            causes.push(cause(
                "spec.timeZone",
                "FieldValueInvalid",
                format!("Invalid value: {}: {message}", quoted(zone.unwrap_or(""))),
            ));
        }
    }
    match spec["concurrencyPolicy"].as_str().unwrap_or_default() {
        "Allow" | "Forbid" | "Replace" => {}
        "" => causes.push(cause(
            "spec.concurrencyPolicy",
            "FieldValueRequired",
            "Required value".into(),
        )),
        other => causes.push(cause(
            "spec.concurrencyPolicy",
            "FieldValueNotSupported",
            format!(
                "Unsupported value: {}: supported values: \"Allow\", \"Forbid\", \"Replace\"",
                quoted(other)
            ),
        )),
    }
    for field in ["successfulJobsHistoryLimit", "failedJobsHistoryLimit"] {
        if let Some(n) = spec[field].as_i64().filter(|n| *n < 0) {
            causes.push(cause(
                &format!("spec.{field}"),
                "FieldValueInvalid",
                format!("Invalid value: {n}: must be greater than or equal to 0"),
            ));
        }
    }
    validate_job_template(name, &spec["jobTemplate"], causes);
}

/// Why `zone` is not a usable `timeZone` (kube's `validateTimeZone`).
fn time_zone_error(zone: &str) -> Option<String> {
    if zone.is_empty() {
        return Some("timeZone must be nil or non-empty string".into());
    }
    // IANA naming rules, with digits and `+` tolerated for legacy names.
    let part_ok = |p: &str| {
        p != "."
            && p != ".."
            && !p.starts_with('-')
            && (1..=14).contains(&p.len())
            && p.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b".-_+".contains(&c))
    };
    if !zone.split('/').all(part_ok) {
        return Some(format!("unknown time zone {zone}"));
    }
    if zone.eq_ignore_ascii_case("Local") {
        return Some(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                .into(),
        );
    }
    ballast_cron::time_zone(zone).err()
}

/// The job template: a Job's spec without a selector (kube's
/// `ValidateJobTemplateSpec`), checked by the Job validation with the
/// causes moved under `spec.jobTemplate.spec`.
fn validate_job_template(name: &str, template: &Value, causes: &mut Vec<Cause>) {
    let spec = &template["spec"];
    if !spec["selector"].is_null() {
        causes.push(cause(
            "spec.jobTemplate.spec.selector",
            "FieldValueInvalid",
            format!(
                "Invalid value: {}: `selector` will be auto-generated",
                spec["selector"]
            ),
        ));
    }
    if spec["manualSelector"] == true {
        causes.push(cause(
            "spec.jobTemplate.spec.manualSelector",
            "FieldValueNotSupported",
            "Unsupported value: true: supported values: \"nil\", \"false\"".into(),
        ));
    }
    // As a Job with a selector of its own that selects everything, so only
    // the rest of the spec is judged.
    let mut as_job = json!({"metadata": {"name": name}, "spec": {}});
    if spec.is_object() {
        as_job["spec"] = spec.clone();
    }
    as_job["spec"]["selector"] = json!({});
    as_job["spec"]["manualSelector"] = json!(true);
    let mut job_causes = Vec::new();
    super::jobs::validate(&as_job, &mut job_causes);
    for mut c in job_causes {
        c.field = match c.field.strip_prefix("spec.") {
            Some(rest) => format!("spec.jobTemplate.spec.{rest}"),
            None => format!("spec.jobTemplate.{}", c.field),
        };
        causes.push(c);
    }
}

/// The Table columns (kube's `printCronJob`); priority 1 only with `-o wide`.
pub(super) const COLUMNS: &[(&str, &str, u8)] = &[
    ("Name", "string", 0),
    ("Schedule", "string", 0),
    ("Timezone", "string", 0),
    ("Suspend", "boolean", 0),
    ("Active", "integer", 0),
    ("Last Schedule", "string", 0),
    ("Age", "string", 0),
    ("Containers", "string", 1),
    ("Images", "string", 1),
    ("Selector", "string", 1),
];

/// One CronJob's cells, `now` in Unix seconds.
pub(super) fn cells(o: &Value, now: i64) -> Vec<Value> {
    let ago = |v: &Value| {
        v.as_str()
            .and_then(super::meta::parse_rfc3339)
            .map(|t| super::table::human_duration(now - t))
    };
    let (spec, status) = (&o["spec"], &o["status"]);
    let suspend = match spec["suspend"].as_bool() {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let containers = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let list = |f: &str| {
        containers
            .iter()
            .map(|c| c[f].as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(",")
    };
    let selector = spec["jobTemplate"]["spec"]["selector"]["matchLabels"]
        .as_object()
        .filter(|m| !m.is_empty())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_else(|| "<none>".into());
    vec![
        o["metadata"]["name"].clone(),
        json!(spec["schedule"].as_str().unwrap_or_default()),
        json!(spec["timeZone"].as_str().unwrap_or("<none>")),
        json!(suspend),
        json!(status["active"].as_array().map_or(0, Vec::len)),
        json!(ago(&status["lastScheduleTime"]).unwrap_or_else(|| "<none>".into())),
        json!(ago(&o["metadata"]["creationTimestamp"]).unwrap_or_else(|| "<unknown>".into())),
        json!(list("name")),
        json!(list("image")),
        json!(selector),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron_job(name: &str, spec: Value) -> Value {
        let mut spec = spec;
        if spec.get("jobTemplate").is_none() {
            spec["jobTemplate"] = json!({"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure",
                "containers": [{"name": "c", "image": "busybox"}]}}}});
        }
        json!({"apiVersion": "batch/v1", "kind": "CronJob",
               "metadata": {"name": name, "creationTimestamp": "2026-12-07T00:00:00Z"},
               "spec": spec})
    }

    fn causes_of(obj: &Value, old: Option<&Value>) -> Vec<String> {
        let mut c = Vec::new();
        validate(obj, old, &mut c);
        c.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults_leave_the_job_spec_to_the_job() {
        let mut cj = cron_job("tick", json!({"schedule": "*/1 * * * *"}));
        default(&mut cj);
        let s = &cj["spec"];
        assert_eq!(s["concurrencyPolicy"], "Allow");
        assert_eq!(s["suspend"], false);
        assert_eq!(s["successfulJobsHistoryLimit"], 3);
        assert_eq!(s["failedJobsHistoryLimit"], 1);
        assert_eq!(cj["status"], json!({}));
        let job = &s["jobTemplate"]["spec"];
        assert!(job["selector"].is_null() && job["backoffLimit"].is_null());
        assert_eq!(job["template"]["spec"]["dnsPolicy"], "ClusterFirst");
        assert!(
            causes_of(&cj, None).is_empty(),
            "{:?}",
            causes_of(&cj, None)
        );
        for ok in [
            "@hourly",
            "0 9 * * mon-fri",
            "@every 5m",
            "*/5 0-23/2 1,15 * *",
        ] {
            let mut cj = cron_job("tick", json!({"schedule": ok, "timeZone": "Europe/Berlin"}));
            default(&mut cj);
            assert!(causes_of(&cj, None).is_empty(), "{ok}");
        }
    }

    #[test]
    fn refusals_carry_kubernetes_messages() {
        let long = "a".repeat(53);
        let mut cj = cron_job(
            &long,
            json!({"schedule": "61 * * * *", "startingDeadlineSeconds": -1,
                   "concurrencyPolicy": "Sometimes", "successfulJobsHistoryLimit": -2,
                   "timeZone": "Mars/Olympus"}),
        );
        default(&mut cj);
        let c = causes_of(&cj, None);
        let expect = [
            format!("metadata.name: Invalid value: \"{long}\": must be no more than 52 characters"),
            "spec.schedule: Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61".into(),
            "spec.startingDeadlineSeconds: Invalid value: -1: must be greater than or equal to 0".into(),
            "spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus".into(),
            "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\"".into(),
            "spec.successfulJobsHistoryLimit: Invalid value: -2: must be greater than or equal to 0".into(),
        ];
        assert_eq!(c, expect);
        let mut tz = cron_job("tick", json!({"schedule": "TZ=UTC 0 * * * *"}));
        default(&mut tz);
        assert_eq!(
            causes_of(&tz, None),
            ["spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"]
        );
        // A schedule stored with TZ= may keep it, but not beside timeZone.
        assert!(causes_of(&tz, Some(&tz)).is_empty());
        let mut both = tz.clone();
        both["spec"]["timeZone"] = json!("UTC");
        assert_eq!(
            causes_of(&both, Some(&tz)),
            ["spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use both timeZone field and TZ or CRON_TZ in schedule"]
        );
        let mut local = cron_job("tick", json!({"schedule": "@daily", "timeZone": "local"}));
        default(&mut local);
        assert!(
            causes_of(&local, None)[0].ends_with("as defined in https://www.iana.org/time-zones")
        );
        let mut dots = cron_job("tick", json!({"schedule": "@daily", "timeZone": "../etc"}));
        default(&mut dots);
        assert_eq!(
            causes_of(&dots, None),
            ["spec.timeZone: Invalid value: \"../etc\": unknown time zone ../etc"]
        );
        let missing = cron_job("tick", json!({"schedule": ""}));
        assert_eq!(
            causes_of(&missing, None)[0],
            "spec.schedule: Required value"
        );
    }

    #[test]
    fn the_job_template_is_a_job_spec_without_selector() {
        let mut cj = cron_job(
            "tick",
            json!({"schedule": "@daily", "jobTemplate": {"spec": {
                "selector": {"matchLabels": {"a": "b"}}, "manualSelector": true,
                "backoffLimit": -1,
                "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}}),
        );
        default(&mut cj);
        let c = causes_of(&cj, None);
        assert_eq!(
            c[0],
            "spec.jobTemplate.spec.selector: Invalid value: {\"matchLabels\":{\"a\":\"b\"}}: `selector` will be auto-generated"
        );
        assert_eq!(
            c[1],
            "spec.jobTemplate.spec.manualSelector: Unsupported value: true: supported values: \"nil\", \"false\""
        );
        assert!(c.contains(
            &"spec.jobTemplate.spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0".to_string()
        ), "{c:?}");
        assert!(c.contains(
            &"spec.jobTemplate.spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"".to_string()
        ), "{c:?}");
    }

    #[test]
    fn table_row_as_kubectl_prints_it() {
        let mut cj = cron_job(
            "tick",
            json!({"schedule": "*/1 * * * *", "timeZone": "Asia/Tokyo"}),
        );
        default(&mut cj);
        cj["status"] = json!({"active": [{"name": "tick-1"}],
                              "lastScheduleTime": "2026-12-07T00:09:00Z"});
        let now = super::super::meta::parse_rfc3339("2026-12-07T00:10:00Z").unwrap();
        let row = cells(&cj, now);
        assert_eq!(row.len(), COLUMNS.len());
        assert_eq!(
            row,
            [
                json!("tick"),
                json!("*/1 * * * *"),
                json!("Asia/Tokyo"),
                json!("False"),
                json!(1),
                json!("60s"),
                json!("10m"),
                json!("c"),
                json!("busybox"),
                json!("<none>")
            ]
        );
    }
}
