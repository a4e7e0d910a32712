//! The pods of a Job: what the controller creates from the template, and
//! what it reads back from them (outcome, completion index, restarts).

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::{COMPLETION_INDEX, COMPLETION_INDEX_ENV, TRACKING_FINALIZER};
use crate::util::{deleting, owner_ref, pod_ready};

pub(super) fn has_finalizer(pod: &Pod) -> bool {
    pod.finalizers().iter().any(|f| f == TRACKING_FINALIZER)
}

pub(super) fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// A finished pod: Succeeded, Failed, or deleted before it succeeded.
pub(super) fn outcome(pod: &Pod) -> Option<bool> {
    match phase(pod) {
        "Succeeded" => Some(true),
        "Failed" => Some(false),
        _ if deleting(pod) => Some(false),
        _ => None,
    }
}

pub(super) fn index_of(pod: &Pod) -> Option<i32> {
    pod.annotations()
        .get(COMPLETION_INDEX)
        .and_then(|v| v.parse().ok())
        .filter(|i: &i32| *i >= 0)
}

/// `"0-2,4"` → {0, 1, 2, 4}; malformed parts are skipped.
pub(super) fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<i32>().ok()),
        }
    }
    out
}

/// {0, 1, 2, 4} → `"0-2,4"`, Kubernetes' interval form.
pub(super) fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end = it.next().expect("peeked");
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// The `n` pods least worth keeping: not ready before ready, newest first.
pub(super) fn excess(pods: &[Arc<Pod>], n: usize) -> Vec<Arc<Pod>> {
    let mut v = pods.to_vec();
    v.sort_by_key(|p| {
        let created = p
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(i64::MAX);
        (pod_ready(p), std::cmp::Reverse(created))
    });
    v.truncate(n);
    v
}

/// Under `restartPolicy: OnFailure` container restarts count against the
/// backoff limit (Kubernetes' `pastBackoffLimitOnFailure`).
pub(super) fn restarts_exceed(spec: &JobSpec, active: &[Arc<Pod>], limit: i32) -> bool {
    let policy = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref());
    if policy != Some("OnFailure") {
        return false;
    }
    let restarts: i32 = active
        .iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum();
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

/// The pod a Job creates from its template: owned by the Job, carrying
/// the tracking finalizer, and for an Indexed Job its index.
pub fn pod_for(job: &Job, index: Option<i32>) -> Pod {
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    let mut finalizers = meta.finalizers.unwrap_or_default();
    finalizers.push(TRACKING_FINALIZER.to_string());
    let mut spec = template.spec.unwrap_or_default();
    let name = job.name_any();
    let mut generate_name = format!("{name}-");
    if let Some(i) = index {
        labels.insert(COMPLETION_INDEX.into(), i.to_string());
        annotations.insert(COMPLETION_INDEX.into(), i.to_string());
        generate_name = format!("{name}-{i}-");
        if spec.hostname.is_none() {
            spec.hostname = Some(format!("{name}-{i}"));
        }
        let env = EnvVar {
            name: COMPLETION_INDEX_ENV.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                }),
                ..EnvVarSource::default()
            }),
        };
        let containers = spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten());
        for c in containers {
            let vars = c.env.get_or_insert_with(Vec::new);
            if !vars.iter().any(|v| v.name == COMPLETION_INDEX_ENV) {
                vars.push(env.clone());
            }
        }
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(finalizers),
            owner_references: Some(vec![owner_ref(job)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn indexes_round_trip_in_interval_form() {
        let set = parse_indexes("0-2,4,7-8");
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 4, 7, 8]);
        assert_eq!(format_indexes(&set), "0-2,4,7-8");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert!(parse_indexes("x,-").is_empty());
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "pi", "namespace": "ns", "uid": "u-1"},
            "spec": {"completionMode": "Indexed", "completions": 3, "template": {
                "metadata": {"labels": {"app": "pi"}},
                "spec": {"restartPolicy": "Never",
                         "containers": [{"name": "c", "image": "busybox"}]}}}
        }))
        .unwrap();
        let pod = pod_for(&job, Some(2));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("pi-2-"));
        assert_eq!(pod.annotations()[COMPLETION_INDEX], "2");
        assert_eq!(pod.labels()["app"], "pi");
        assert_eq!(pod.finalizers(), [TRACKING_FINALIZER]);
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
        let env = &spec.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, COMPLETION_INDEX_ENV);
        let r = &pod.owner_references()[0];
        assert_eq!((r.kind.as_str(), r.controller), ("Job", Some(true)));
        assert!(pod_for(&job, None).annotations().is_empty());
    }
}
