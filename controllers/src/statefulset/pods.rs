//! A StatefulSet's pods: the stable identity each ordinal gets (name,
//! hostname, identity labels), the pod made from a revision's template,
//! and what is read back from a pod (its ordinal, its revision, whether
//! it is healthy).
//!
//! Worked example — `web` (serviceName `nginx`), ordinal 2, revision
//! `web-5d8f7c9b4`:
//!
//! ```text
//! metadata.name: web-2
//! metadata.labels: <template labels>
//!   statefulset.kubernetes.io/pod-name: web-2
//!   apps.kubernetes.io/pod-index: "2"
//!   controller-revision-hash: web-5d8f7c9b4
//! metadata.ownerReferences: [StatefulSet web, controller]
//! spec.hostname: web-2   spec.subdomain: nginx
//! ```

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::util::{deleting, owner_ref, pod_available, pod_ready};

/// The label naming a StatefulSet pod (a Service can select one pod).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label carrying a StatefulSet pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The label naming the ControllerRevision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The parent name and ordinal in a pod name `<parent>-<ordinal>`; `None`
/// when the name does not end in `-<digits>` (such a pod is ignored, as
/// Kubernetes ignores it).
pub fn parent_and_ordinal(name: &str) -> Option<(&str, i32)> {
    let (parent, ord) = name.rsplit_once('-')?;
    if ord.is_empty() || !ord.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, ord.parse().ok()?))
}

/// The pod's ordinal if it belongs to `set` by name.
pub fn ordinal_in(set: &StatefulSet, pod: &Pod) -> Option<i32> {
    let name = pod.metadata.name.as_deref()?;
    let (parent, ord) = parent_and_ordinal(name)?;
    (parent == set.name_any()).then_some(ord)
}

/// The name of the pod with ordinal `ord`.
pub fn pod_name(set: &StatefulSet, ord: i32) -> String {
    format!("{}-{ord}", set.name_any())
}

/// The ControllerRevision the pod was made from (its
/// `controller-revision-hash` label), or `""`.
pub fn revision_of(pod: &Pod) -> &str {
    pod.labels()
        .get(REVISION_LABEL)
        .map(String::as_str)
        .unwrap_or_default()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// Succeeded or Failed: the pod will not run again and is replaced.
pub fn finished(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Running with its Ready condition True.
pub fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && pod_ready(pod)
}

/// Running and ready for `min_ready_seconds`.
pub fn running_and_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    phase(pod) == "Running" && pod_available(pod, min_ready_seconds, now)
}

/// Not (running, available and not being deleted): what blocks an
/// ordered scale or an update step.
pub fn unavailable(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    !running_and_available(pod, min_ready_seconds, now) || deleting(pod)
}

/// Whether the pod carries the identity of its ordinal: the pod-name and
/// pod-index labels (kube's `identityMatches`; the name is the key it was
/// found by).
pub fn identity_matches(pod: &Pod, ord: i32) -> bool {
    let labels = pod.labels();
    labels.get(POD_NAME_LABEL) == pod.metadata.name.as_ref()
        && labels.get(POD_INDEX_LABEL) == Some(&ord.to_string())
}

/// The pod of ordinal `ord` made from `template` (the template of the
/// revision named `revision`), controlled by `set`.
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, revision: &str, ord: i32) -> Pod {
    let name = pod_name(set, ord);
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ord.to_string());
    labels.insert(REVISION_LABEL.into(), revision.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    spec.subdomain = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty());
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner_ref(set)]),
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

    fn set() -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"serviceName": "nginx", "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
        }))
        .unwrap()
    }

    #[test]
    fn names_parse_into_parent_and_ordinal() {
        assert_eq!(parent_and_ordinal("web-0"), Some(("web", 0)));
        assert_eq!(parent_and_ordinal("my-db-12"), Some(("my-db", 12)));
        assert_eq!(parent_and_ordinal("web"), None);
        assert_eq!(parent_and_ordinal("web-"), None);
        assert_eq!(parent_and_ordinal("web-x1"), None);
        assert_eq!(parent_and_ordinal("web-99999999999"), None);
    }

    #[test]
    fn pods_carry_their_identity() {
        let s = set();
        let template = s.spec.as_ref().unwrap().template.clone();
        let pod = new_pod(&s, &template, "web-abc", 2);
        assert_eq!(pod.name_any(), "web-2");
        let labels = pod.labels();
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[POD_NAME_LABEL], "web-2");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(revision_of(&pod), "web-abc");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let owner = &pod.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("StatefulSet", "u1")
        );
        assert_eq!(owner.controller, Some(true));
        assert!(identity_matches(&pod, 2));
        assert!(!identity_matches(&pod, 3));
        assert_eq!(ordinal_in(&s, &pod), Some(2));
        let mut other = pod.clone();
        other.metadata.name = Some("webby-2".into());
        assert_eq!(ordinal_in(&s, &other), None);
    }
}
