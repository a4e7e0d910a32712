//! apps/v1 StatefulSets: defaulting, validation, update rules and the
//! printed row, as kube-apiserver's StatefulSet strategy has them.
//!
//! Worked example — a manifest with `replicas`, `serviceName`, `selector`
//! and a template is stored with:
//!
//! ```text
//! spec.podManagementPolicy: OrderedReady   spec.revisionHistoryLimit: 10
//! spec.updateStrategy: {type: RollingUpdate, rollingUpdate: {partition: 0}}
//! spec.persistentVolumeClaimRetentionPolicy: {whenDeleted: Retain, whenScaled: Retain}
//! status: {replicas: 0, availableReplicas: 0}
//! ```
//!
//! An update may change only `replicas`, `ordinals`, `template`,
//! `updateStrategy`, `revisionHistoryLimit`,
//! `persistentVolumeClaimRetentionPolicy` and `minReadySeconds` (422 with
//! Kubernetes' message otherwise). There are no PersistentVolumeClaims in
//! this cluster yet, so `volumeClaimTemplates` is refused with a 422 that
//! says so instead of pods started without their storage; so is
//! `rollingUpdate.maxUnavailable` (an alpha feature the controller does not
//! implement).

use serde_json::{json, Map, Value};

use super::validation::{
    default_pod_spec, is_dns1035_label, set_default, validate_pod_spec, DNS1035_MSG,
};
use crate::error::{Cause, Error, Result};

/// The `kubectl get statefulsets` columns: (name, type, priority).
pub(super) const COLUMNS: &[(&str, &str, u8)] = &[
    ("Name", "string", 0),
    ("Ready", "string", 0),
    ("Age", "string", 0),
    ("Containers", "string", 1),
    ("Images", "string", 1),
];

/// The spec fields an update may change (kube's `ValidateStatefulSetUpdate`).
const MUTABLE: [&str; 7] = [
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

const UPDATE_FORBIDDEN: &str = "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";

fn cause(field: &str, reason: &'static str, message: String) -> Cause {
    Cause {
        field: field.into(),
        reason,
        message,
    }
}

/// Fills Kubernetes' StatefulSet defaults (apps/v1 `SetDefaults_StatefulSet`).
pub(super) fn default(obj: &mut Value) {
    // StatefulSetStatus is a struct whose counts Go always writes: a new
    // StatefulSet reads `replicas: 0`, which typed clients require.
    if obj.get("status").is_none_or(Value::is_null) {
        obj["status"] = json!({"replicas": 0, "availableReplicas": 0});
    }
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    set_default(spec, &["podManagementPolicy"], json!("OrderedReady"));
    set_default(spec, &["updateStrategy", "type"], json!("RollingUpdate"));
    if spec["updateStrategy"]["type"] == "RollingUpdate" {
        set_default(
            spec,
            &["updateStrategy", "rollingUpdate", "partition"],
            json!(0),
        );
    }
    set_default(spec, &["replicas"], json!(1));
    set_default(spec, &["revisionHistoryLimit"], json!(10));
    for f in ["whenDeleted", "whenScaled"] {
        set_default(
            spec,
            &["persistentVolumeClaimRetentionPolicy", f],
            json!("Retain"),
        );
    }
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

/// Adds the causes that make `obj` an invalid StatefulSet
/// (kube's `ValidateStatefulSetSpec`).
pub(super) fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    match spec["podManagementPolicy"].as_str().unwrap_or_default() {
        "" => causes.push(cause(
            "spec.podManagementPolicy",
            "FieldValueRequired",
            "Required value".into(),
        )),
        "OrderedReady" | "Parallel" => {}
        p => causes.push(cause(
            "spec.podManagementPolicy",
            "FieldValueInvalid",
            format!("Invalid value: \"{p}\": must be 'OrderedReady' or 'Parallel'"),
        )),
    }
    let strategy = &spec["updateStrategy"];
    let rolling = &strategy["rollingUpdate"];
    match strategy["type"].as_str().unwrap_or_default() {
        "" => causes.push(cause(
            "spec.updateStrategy",
            "FieldValueRequired",
            "Required value".into(),
        )),
        "OnDelete" => {
            if !rolling.is_null() {
                causes.push(cause(
                    "spec.updateStrategy.rollingUpdate",
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: {rolling}: only allowed for updateStrategy 'RollingUpdate'"
                    ),
                ));
            }
        }
        "RollingUpdate" => {
            nonnegative(
                &rolling["partition"],
                "spec.updateStrategy.rollingUpdate.partition",
                causes,
            );
            if !rolling["maxUnavailable"].is_null() {
                causes.push(cause(
                    "spec.updateStrategy.rollingUpdate.maxUnavailable",
                    "FieldValueForbidden",
                    "Forbidden: not supported by this cluster's statefulset controller (the MaxUnavailableStatefulSet feature is off): pods are updated one at a time".into(),
                ));
            }
        }
        _ => causes.push(cause(
            "spec.updateStrategy",
            "FieldValueInvalid",
            format!("Invalid value: {strategy}: must be 'RollingUpdate' or 'OnDelete'"),
        )),
    }
    nonnegative(&spec["replicas"], "spec.replicas", causes);
    nonnegative(&spec["minReadySeconds"], "spec.minReadySeconds", causes);
    nonnegative(
        &spec["revisionHistoryLimit"],
        "spec.revisionHistoryLimit",
        causes,
    );
    nonnegative(&spec["ordinals"]["start"], "spec.ordinals.start", causes);
    if let Some(service) = spec["serviceName"].as_str().filter(|s| !s.is_empty()) {
        if !is_dns1035_label(service) {
            causes.push(cause(
                "spec.serviceName",
                "FieldValueInvalid",
                format!("Invalid value: \"{service}\": {DNS1035_MSG}"),
            ));
        }
    }
    let policy = &spec["persistentVolumeClaimRetentionPolicy"];
    for f in ["whenDeleted", "whenScaled"] {
        if let Some(v) = policy[f]
            .as_str()
            .filter(|v| !matches!(*v, "Retain" | "Delete"))
        {
            causes.push(cause(
                &format!("spec.persistentVolumeClaimRetentionPolicy.{f}"),
                "FieldValueNotSupported",
                format!("Unsupported value: \"{v}\": supported values: \"Retain\", \"Delete\""),
            ));
        }
    }
    if spec["volumeClaimTemplates"]
        .as_array()
        .is_some_and(|v| !v.is_empty())
    {
        causes.push(cause(
            "spec.volumeClaimTemplates",
            "FieldValueForbidden",
            "Forbidden: this cluster has no PersistentVolumeClaims or volume provisioner yet: the pods would run without the storage their claims ask for; remove volumeClaimTemplates (and the volumeMounts that use them)".into(),
        ));
    }
    validate_selector(spec, causes);
    let template = &spec["template"];
    let restart = template["spec"]["restartPolicy"]
        .as_str()
        .unwrap_or_default();
    if restart != "Always" {
        causes.push(cause(
            "spec.template.spec.restartPolicy",
            "FieldValueNotSupported",
            format!("Unsupported value: \"{restart}\": supported values: \"Always\""),
        ));
    }
    let deadline = &template["spec"]["activeDeadlineSeconds"];
    if !deadline.is_null() {
        causes.push(cause(
            "spec.template.spec.activeDeadlineSeconds",
            "FieldValueInvalid",
            format!("Invalid value: {deadline}: must not be specified"),
        ));
    }
    if let Some(labels) = template["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            if !v.is_string() {
                causes.push(cause(
                    &format!("spec.template.metadata.labels.{k}"),
                    "FieldValueInvalid",
                    format!("Invalid value: {v}: must be a string"),
                ));
            }
        }
    }
    validate_pod_spec(&template["spec"], "spec.template.spec", causes);
}

fn validate_selector(spec: &Value, causes: &mut Vec<Cause>) {
    let selector = &spec["selector"];
    if selector.is_null() {
        causes.push(cause(
            "spec.selector",
            "FieldValueRequired",
            "Required value".into(),
        ));
        return;
    }
    let count = |f: &str| {
        selector[f].as_object().map_or(0, Map::len) + selector[f].as_array().map_or(0, Vec::len)
    };
    if count("matchLabels") + count("matchExpressions") == 0 {
        causes.push(cause(
            "spec.selector",
            "FieldValueInvalid",
            format!("Invalid value: {selector}: empty selector is not valid for statefulset."),
        ));
        return;
    }
    let template_labels = &spec["template"]["metadata"]["labels"];
    let labels = template_labels.as_object();
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
        match e["operator"].as_str().unwrap_or_default() {
            "In" => matches &= label(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => matches &= label(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => matches &= label(key).is_some(),
            "DoesNotExist" => matches &= label(key).is_none(),
            op => {
                causes.push(cause(
                    "spec.selector.matchExpressions.operator",
                    "FieldValueInvalid",
                    format!("Invalid value: \"{op}\": not a valid selector operator"),
                ));
                return;
            }
        }
    }
    if !matches {
        let shown = if template_labels.is_null() {
            json!({})
        } else {
            template_labels.clone()
        };
        causes.push(cause(
            "spec.template.metadata.labels",
            "FieldValueInvalid",
            format!("Invalid value: {shown}: `selector` does not match template `labels`"),
        ));
    }
}

/// The spec without the fields an update may change, and without unset
/// (null or empty-string) fields, which Go's DeepEqual cannot tell apart.
fn fixed_part(spec: &Value) -> Map<String, Value> {
    let mut m = spec.as_object().cloned().unwrap_or_default();
    for f in MUTABLE {
        m.remove(f);
    }
    m.retain(|_, v| !v.is_null() && *v != "");
    m
}

/// Refuses an update that changes a fixed spec field (422, Kubernetes'
/// message).
pub(super) fn check_update(name: &str, old: &Value, new: &Value) -> Result<()> {
    if fixed_part(&old["spec"]) == fixed_part(&new["spec"]) {
        return Ok(());
    }
    Err(Error::Invalid {
        group: "apps",
        kind: "StatefulSet",
        name: name.to_string(),
        causes: vec![cause(
            "spec",
            "FieldValueForbidden",
            UPDATE_FORBIDDEN.into(),
        )],
    })
}

/// The printed row: NAME, READY (ready/desired), AGE, CONTAINERS, IMAGES.
pub(super) fn cells(o: &Value, name: Value, age: Value) -> Vec<Value> {
    let containers = o["spec"]["template"]["spec"]["containers"].as_array();
    let list = |f: &str| {
        containers
            .into_iter()
            .flatten()
            .map(|c| c[f].as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(",")
    };
    vec![
        name,
        json!(format!(
            "{}/{}",
            o["status"]["readyReplicas"].as_i64().unwrap_or(0),
            o["spec"]["replicas"].as_i64().unwrap_or(0)
        )),
        age,
        json!(list("name")),
        json!(list("image")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(spec: Value) -> Value {
        let mut spec = spec;
        if spec.get("template").is_none() {
            spec["template"] = json!({"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        }
        if spec.get("selector").is_none() {
            spec["selector"] = json!({"matchLabels": {"app": "web"}});
        }
        let mut o = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
               "metadata": {"name": "web"}, "spec": spec});
        default(&mut o);
        o
    }

    fn causes_of(obj: &Value) -> Vec<String> {
        let mut c = Vec::new();
        validate(obj, &mut c);
        c.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults_as_kubernetes() {
        let o = sts(json!({"serviceName": "web"}));
        let s = &o["spec"];
        assert_eq!(s["replicas"], 1);
        assert_eq!(s["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            s["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(s["revisionHistoryLimit"], 10);
        assert_eq!(
            s["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(s["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(o["status"], json!({"replicas": 0, "availableReplicas": 0}));
        assert!(causes_of(&o).is_empty(), "{:?}", causes_of(&o));
        // OnDelete gets no rollingUpdate.
        let o = sts(json!({"updateStrategy": {"type": "OnDelete"}}));
        assert!(o["spec"]["updateStrategy"]["rollingUpdate"].is_null());
        assert!(causes_of(&o).is_empty(), "{:?}", causes_of(&o));
    }

    #[test]
    fn refusals_carry_kubernetes_messages() {
        let c = causes_of(&sts(json!({"selector": {"matchLabels": {"app": "db"}}})));
        assert_eq!(
            c,
            ["spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`"]
        );
        let c = causes_of(&sts(json!({"selector": {}})));
        assert_eq!(
            c,
            ["spec.selector: Invalid value: {}: empty selector is not valid for statefulset."]
        );
        let mut bad = sts(json!({"replicas": -1, "podManagementPolicy": "Random",
            "serviceName": "Web_1",
            "updateStrategy": {"type": "OnDelete", "rollingUpdate": {"partition": 1}}}));
        bad["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        bad["spec"]["template"]["spec"]["activeDeadlineSeconds"] = json!(5);
        let c = causes_of(&bad);
        for want in [
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "spec.podManagementPolicy: Invalid value: \"Random\": must be 'OrderedReady' or 'Parallel'",
            "spec.updateStrategy.rollingUpdate: Invalid value: {\"partition\":1}: only allowed for updateStrategy 'RollingUpdate'",
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            "spec.template.spec.activeDeadlineSeconds: Invalid value: 5: must not be specified",
        ] {
            assert!(c.iter().any(|c| c == want), "{want} not in {c:?}");
        }
        assert!(
            c.iter().any(|c| c.starts_with(
                "spec.serviceName: Invalid value: \"Web_1\": a DNS-1035 label must consist"
            )),
            "{c:?}"
        );
        let c = causes_of(&sts(json!({"updateStrategy": {"type": "Recreate"}})));
        assert_eq!(
            c,
            ["spec.updateStrategy: Invalid value: {\"type\":\"Recreate\"}: must be 'RollingUpdate' or 'OnDelete'"]
        );
        let c = causes_of(&sts(
            json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": -2}}}),
        ));
        assert_eq!(
            c,
            ["spec.updateStrategy.rollingUpdate.partition: Invalid value: -2: must be greater than or equal to 0"]
        );
    }

    #[test]
    fn volume_claim_templates_are_refused_with_the_reason() {
        let c = causes_of(&sts(json!({"volumeClaimTemplates": [
            {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
             "resources": {"requests": {"storage": "1Gi"}}}}]})));
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(c[0].starts_with(
            "spec.volumeClaimTemplates: Forbidden: this cluster has no PersistentVolumeClaims"
        ));
        // An empty list asks for nothing.
        assert!(causes_of(&sts(json!({"volumeClaimTemplates": []}))).is_empty());
    }

    #[test]
    fn updates_change_only_the_mutable_fields() {
        let old = sts(json!({"serviceName": "web", "replicas": 3}));
        let mut ok = old.clone();
        ok["spec"]["replicas"] = json!(5);
        ok["spec"]["template"]["spec"]["containers"][0]["image"] = json!("pause");
        ok["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = json!(2);
        ok["spec"]["minReadySeconds"] = json!(3);
        ok["spec"]["ordinals"] = json!({"start": 1});
        ok["spec"]["revisionHistoryLimit"] = json!(2);
        assert!(check_update("web", &old, &ok).is_ok());
        for (field, value) in [
            ("serviceName", json!("other")),
            ("podManagementPolicy", json!("Parallel")),
            ("selector", json!({"matchLabels": {"app": "web", "x": "y"}})),
        ] {
            let mut bad = old.clone();
            bad["spec"][field] = value;
            let Err(Error::Invalid { causes, .. }) = check_update("web", &old, &bad) else {
                panic!("{field} change accepted");
            };
            assert_eq!(causes[0].field, "spec");
            assert_eq!(causes[0].message, UPDATE_FORBIDDEN);
        }
        // An unset serviceName and an empty one are the same.
        let mut unset = old.clone();
        unset["spec"]["serviceName"] = json!("");
        let mut none = old.clone();
        none["spec"].as_object_mut().unwrap().remove("serviceName");
        assert!(check_update("web", &unset, &none).is_ok());
    }

    #[test]
    fn rows_show_ready_of_desired() {
        let mut o = sts(json!({"replicas": 3}));
        o["status"]["readyReplicas"] = json!(2);
        let row = cells(&o, json!("web"), json!("5s"));
        assert_eq!(
            row,
            [
                json!("web"),
                json!("2/3"),
                json!("5s"),
                json!("c"),
                json!("busybox")
            ]
        );
    }
}
