//! Deployment arithmetic shared by the strategies: the pod-template hash,
//! revisions and their annotations, maxSurge/maxUnavailable, conditions.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

/// The label (and RS-name suffix) naming one pod template.
pub const HASH_LABEL: &str = "pod-template-hash";
/// A ReplicaSet's (and its Deployment's) revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet had before a rollback reused it.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's replicas + maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Longest revision-history annotation kept, as Kubernetes.
const REVISION_HISTORY_LIMIT_CHARS: usize = 2000;

/// Annotations of the Deployment that are not copied to its ReplicaSets.
fn skip_annotation(k: &str) -> bool {
    matches!(
        k,
        "kubectl.kubernetes.io/last-applied-configuration"
            | REVISION
            | REVISION_HISTORY
            | DESIRED_REPLICAS
            | MAX_REPLICAS
            | "deprecated.deployment.rollback.to"
    )
}

/// Kubernetes' alphabet for generated names: no vowels, no confusables.
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The hash of a pod template (and the collision count), as a short
/// DNS-safe string: FNV-1a over the template's JSON, its decimal form
/// encoded in Kubernetes' safe alphabet (`7c5ddbdf54`-like).
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(c) = collision_count {
        feed(c.to_string().as_bytes());
    }
    h.to_string()
        .bytes()
        .map(|c| SAFE[usize::from(c) % SAFE.len()] as char)
        .collect()
}

/// A template with the hash label removed (and empty labels as none).
fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(meta) = t.metadata.as_mut() {
        if let Some(labels) = meta.labels.as_mut() {
            labels.remove(HASH_LABEL);
            if labels.is_empty() {
                meta.labels = None;
            }
        }
    }
    t
}

/// Whether two templates are equal but for the hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

/// A ReplicaSet's revision; 0 when absent or malformed.
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Makes `rs` carry the Deployment's annotations and revision `new_revision`,
/// recording the revision it had before in the revision history (a
/// rollback reusing an old ReplicaSet); whether anything changed.
pub fn set_new_rs_annotations(d: &Deployment, rs: &mut ReplicaSet, new_revision: i64) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if skip_annotation(k) || annotations.get(k) == Some(v) {
            continue;
        }
        annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = annotations.get(REVISION).cloned();
    let old_number: i64 = old.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
    if old_number < new_revision {
        annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = annotations
                .get(REVISION_HISTORY)
                .cloned()
                .unwrap_or_default();
            let mut revisions: Vec<&str> = history.split(',').filter(|s| !s.is_empty()).collect();
            revisions.push(&old);
            while revisions.join(",").len() > REVISION_HISTORY_LIMIT_CHARS && revisions.len() > 1 {
                revisions.remove(0);
            }
            annotations.insert(REVISION_HISTORY.into(), revisions.join(","));
        }
    }
    changed
}

/// Sets desired-replicas and max-replicas; whether they changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let (d, m) = (desired.to_string(), max.to_string());
    let changed = a.get(DESIRED_REPLICAS) != Some(&d) || a.get(MAX_REPLICAS) != Some(&m);
    a.insert(DESIRED_REPLICAS.into(), d);
    a.insert(MAX_REPLICAS.into(), m);
    changed
}

/// An annotation parsed as a number.
pub fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// `spec.replicas` (default 1).
pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// A ReplicaSet's `spec.replicas` (default 1).
pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// A ReplicaSet's `status.replicas`.
pub fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)
}

/// A ReplicaSet's `status.availableReplicas`.
pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// Whether the strategy is Recreate (anything else rolls).
pub fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

fn resolve(
    v: Option<&IntOrString>,
    default: &str,
    total: i32,
    round_up: bool,
) -> Result<i32, String> {
    match v {
        Some(IntOrString::Int(i)) => Ok(*i),
        Some(IntOrString::String(s)) => percent(s, total, round_up),
        None => percent(default, total, round_up),
    }
}

fn percent(s: &str, total: i32, round_up: bool) -> Result<i32, String> {
    let n: i64 = s
        .strip_suffix('%')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}: must be an integer or a percentage"))?;
    let scaled = n * i64::from(total);
    let v = if round_up {
        (scaled + 99).div_euclid(100)
    } else {
        scaled.div_euclid(100)
    };
    Ok(v as i32)
}

/// `(maxSurge, maxUnavailable)` for `replicas`: percentages round up for
/// surge and down for unavailable; both 0 would deadlock, so unavailable
/// becomes 1 then. (0, 0) for Recreate.
pub fn fenceposts(d: &Deployment) -> Result<(i32, i32), String> {
    if is_recreate(d) {
        return Ok((0, 0));
    }
    let total = replicas(d);
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), "25%", total, true)?;
    let mut unavailable = resolve(
        ru.and_then(|r| r.max_unavailable.as_ref()),
        "25%",
        total,
        false,
    )?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((surge.max(0), unavailable.max(0)))
}

/// The pods that may be unavailable during a rollout (never more than replicas).
pub fn max_unavailable(d: &Deployment) -> i32 {
    if is_recreate(d) || replicas(d) == 0 {
        return 0;
    }
    fenceposts(d).map(|(_, u)| u.min(replicas(d))).unwrap_or(0)
}

/// The pods that may exist above replicas during a rollout.
pub fn max_surge(d: &Deployment) -> i32 {
    fenceposts(d).map(|(s, _)| s).unwrap_or(0)
}

/// A condition of `type_`.
pub fn condition<'a>(s: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// A new condition stamped now.
pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> DeploymentCondition {
    let now = Time(Timestamp::now());
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// Sets a condition as Kubernetes does: unchanged when status and reason
/// are the same; the transition time kept when only the reason changes.
pub fn set_condition(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    let conditions = s.conditions.get_or_insert_with(Vec::new);
    if let Some(old) = conditions.iter().find(|o| o.type_ == c.type_) {
        if old.status == c.status && old.reason == c.reason {
            return;
        }
        if old.status == c.status {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
    conditions.retain(|o| o.type_ != c.type_);
    conditions.push(c);
}

/// Removes a condition.
pub fn remove_condition(s: &mut DeploymentStatus, type_: &str) {
    if let Some(cs) = s.conditions.as_mut() {
        cs.retain(|c| c.type_ != type_);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deployment(
        replicas: i32,
        surge: Option<IntOrString>,
        unavailable: Option<IntOrString>,
    ) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: surge,
                        max_unavailable: unavailable,
                    }),
                }),
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }
    }

    #[test]
    fn fenceposts_round_like_kubernetes() {
        assert_eq!(fenceposts(&deployment(3, None, None)), Ok((1, 0)));
        assert_eq!(fenceposts(&deployment(10, None, None)), Ok((3, 2)));
        let pct = |s: &str| Some(IntOrString::String(s.into()));
        assert_eq!(
            fenceposts(&deployment(10, pct("0%"), pct("0%"))),
            Ok((0, 1))
        );
        assert_eq!(
            fenceposts(&deployment(
                4,
                Some(IntOrString::Int(2)),
                Some(IntOrString::Int(1))
            )),
            Ok((2, 1))
        );
        assert!(fenceposts(&deployment(4, pct("lots"), None)).is_err());
        assert_eq!(
            max_unavailable(&deployment(2, None, Some(IntOrString::Int(5)))),
            2
        );
    }

    #[test]
    fn hash_is_stable_safe_and_depends_on_the_template() {
        let mut t = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..ObjectMeta::default()
            }),
            spec: None,
        };
        let a = template_hash(&t, None);
        assert_eq!(a, template_hash(&t, None));
        assert!(!a.is_empty() && a.len() <= 10);
        assert!(a.bytes().all(|c| SAFE.contains(&c)));
        assert_ne!(a, template_hash(&t, Some(1)));
        let mut hashed = t.clone();
        hashed
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), a.clone());
        assert!(equal_ignore_hash(&t, &hashed));
        t.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert("v".into(), "2".into());
        assert_ne!(a, template_hash(&t, None));
        assert!(!equal_ignore_hash(&t, &hashed));
    }

    #[test]
    fn a_reused_replicaset_keeps_its_old_revisions() {
        let d = Deployment {
            metadata: ObjectMeta {
                annotations: Some(
                    [("kubernetes.io/change-cause".to_string(), "v1".to_string())].into(),
                ),
                ..ObjectMeta::default()
            },
            ..Deployment::default()
        };
        let mut rs = ReplicaSet::default();
        assert!(set_new_rs_annotations(&d, &mut rs, 1));
        assert_eq!(revision(&rs), 1);
        assert!(!set_new_rs_annotations(&d, &mut rs, 1));
        assert!(set_new_rs_annotations(&d, &mut rs, 3));
        assert!(set_new_rs_annotations(&d, &mut rs, 5));
        let a = rs.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[REVISION], "5");
        assert_eq!(a[REVISION_HISTORY], "1,3");
        assert_eq!(a["kubernetes.io/change-cause"], "v1");
    }
}
