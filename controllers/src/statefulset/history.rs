//! A StatefulSet's revision history, kept in apps/v1 ControllerRevisions
//! as kube-controller-manager keeps it.
//!
//! Each distinct pod template is one revision: its `data` is the patch
//! that restores the template,
//!
//! ```text
//! data: {"spec": {"template": {<the template>, "$patch": "replace"}}}
//! name: <set>-<hash>       hash = FNV-32a(data [+ collisionCount]),
//!                          decimal, in the "safe" alphabet (no vowels)
//! labels: <template labels> + controller.kubernetes.io/hash: <hash>
//! revision: 1, 2, … (one more than the newest)
//! ```
//!
//! The update revision is the set's template now: an existing revision
//! with the same data is reused (given the next revision number if it is
//! not the newest: a rollback), else a new one is created. A name taken by
//! different data is a hash collision: `status.collisionCount` goes up and
//! the next name is tried. The current revision is the one
//! `status.currentRevision` names (the update revision at first). History
//! beyond `revisionHistoryLimit` is deleted oldest first, never a revision
//! a pod, the current or the update revision uses.

use std::collections::HashSet;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::util::{is_conflict, owner_ref};

/// The label holding a revision's hash.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";
/// Names taken by other data tried before giving up for this sync.
const COLLISION_ATTEMPTS: usize = 8;
/// Kubernetes' alphabet for generated name parts: no vowels, no 0/1/3.
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The revision data for the set's current template.
pub fn data_of(set: &StatefulSet) -> Value {
    let template = set
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if !t.is_object() {
        t = json!({});
    }
    t["$patch"] = json!("replace");
    json!({"spec": {"template": t}})
}

/// The template a revision restores.
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

fn fnv32a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The revision hash of `data` under `collision_count`.
pub fn hash(data: &Value, collision_count: i32) -> String {
    let mut bytes = serde_json::to_vec(data).unwrap_or_default();
    if collision_count > 0 {
        bytes.extend_from_slice(collision_count.to_string().as_bytes());
    }
    fnv32a(&bytes)
        .to_string()
        .bytes()
        .map(|b| SAFE[usize::from(b) % SAFE.len()] as char)
        .collect()
}

/// `<set>-<hash>`, the set's name cut to 223 characters.
pub fn revision_name(set: &str, hash: &str) -> String {
    let prefix: String = set.chars().take(223).collect();
    format!("{prefix}-{hash}")
}

/// Whether the revision holds `data`.
pub fn holds(rev: &ControllerRevision, data: &Value) -> bool {
    rev.data.as_ref().is_some_and(|d| d.0 == *data)
}

/// Oldest first: by revision number, then creation time, then name.
pub fn sort(revisions: &mut [ControllerRevision]) {
    revisions.sort_by(|a, b| {
        let time = |r: &ControllerRevision| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (a.revision, time(a), a.name_any()).cmp(&(b.revision, time(b), b.name_any()))
    });
}

/// One more than the newest revision number (1 for none). `revisions`
/// must be sorted.
pub fn next_number(revisions: &[ControllerRevision]) -> i64 {
    revisions.last().map_or(1, |r| r.revision + 1)
}

fn new_revision(set: &StatefulSet, data: &Value, number: i64, hash: &str) -> ControllerRevision {
    let mut labels = set
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(&set.name_any(), hash)),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: set.metadata.annotations.clone(),
            owner_references: Some(vec![owner_ref(set)]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data.clone())),
        revision: number,
    }
}

/// Creates the revision of `data` numbered `number`; a name taken by the
/// same data is that revision, a name taken by other data a collision
/// (`collision_count` goes up and the next name is tried).
pub async fn create(
    api: &Api<ControllerRevision>,
    set: &StatefulSet,
    data: &Value,
    number: i64,
    collision_count: &mut i32,
) -> Result<ControllerRevision, kube::Error> {
    let mut last = None;
    for _ in 0..COLLISION_ATTEMPTS {
        let h = hash(data, *collision_count);
        let rev = new_revision(set, data, number, &h);
        match api.create(&PostParams::default(), &rev).await {
            Ok(created) => return Ok(created),
            Err(e) if is_conflict(&e) => {
                let name = rev.name_any();
                if let Some(existing) = api.get_opt(&name).await? {
                    let ours = existing
                        .owner_references()
                        .iter()
                        .any(|r| Some(&r.uid) == set.metadata.uid.as_ref());
                    if holds(&existing, data) && ours {
                        return Ok(existing);
                    }
                }
                *collision_count += 1;
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("COLLISION_ATTEMPTS > 0"))
}

/// Gives an existing revision a new number (a rollback to it).
pub async fn renumber(
    api: &Api<ControllerRevision>,
    rev: &ControllerRevision,
    number: i64,
) -> Result<ControllerRevision, kube::Error> {
    let patch = json!({"metadata": {"resourceVersion": rev.resource_version()},
                       "revision": number});
    api.patch(
        &rev.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
}

/// The revisions to delete to keep `limit` of those not `live`, oldest
/// first. `revisions` must be sorted.
pub fn to_truncate<'a>(
    revisions: &'a [ControllerRevision],
    live: &HashSet<&str>,
    limit: usize,
) -> Vec<&'a ControllerRevision> {
    let history: Vec<&ControllerRevision> = revisions
        .iter()
        .filter(|r| !live.contains(r.metadata.name.as_deref().unwrap_or_default()))
        .collect();
    let excess = history.len().saturating_sub(limit);
    history.into_iter().take(excess).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(image: &str) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}}
        }))
        .unwrap()
    }

    fn rev(name: &str, number: i64) -> ControllerRevision {
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            data: None,
            revision: number,
        }
    }

    #[test]
    fn fnv_matches_the_reference_vectors() {
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        assert_eq!(fnv32a(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn revisions_name_and_restore_the_template() {
        let a = data_of(&set("busybox"));
        let b = data_of(&set("pause"));
        assert_eq!(a["spec"]["template"]["$patch"], "replace");
        let (ha, hb) = (hash(&a, 0), hash(&b, 0));
        assert_ne!(ha, hb);
        assert_eq!(ha, hash(&a, 0), "stable");
        assert_ne!(ha, hash(&a, 1), "a collision count changes the name");
        assert!(ha.bytes().all(|c| SAFE.contains(&c)), "{ha}");
        let r = new_revision(&set("busybox"), &a, 3, &ha);
        assert_eq!(r.name_any(), format!("web-{ha}"));
        assert_eq!(r.labels()[HASH_LABEL], ha);
        assert_eq!(r.labels()["app"], "web");
        assert_eq!(r.revision, 3);
        assert!(holds(&r, &a) && !holds(&r, &b));
        let t = template_of(&r).unwrap();
        assert_eq!(t, set("busybox").spec.unwrap().template);
        assert_eq!(revision_name(&"x".repeat(300), "h").len(), 225);
    }

    #[test]
    fn history_is_cut_oldest_first_sparing_live_revisions() {
        let mut revs = vec![rev("d", 4), rev("a", 1), rev("c", 3), rev("b", 2)];
        sort(&mut revs);
        let names: Vec<String> = revs.iter().map(|r| r.name_any()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert_eq!(next_number(&revs), 5);
        assert_eq!(next_number(&[]), 1);
        let live: HashSet<&str> = ["a", "d"].into();
        let cut: Vec<String> = to_truncate(&revs, &live, 1)
            .iter()
            .map(|r| r.name_any())
            .collect();
        assert_eq!(cut, ["b"]);
        assert!(to_truncate(&revs, &live, 2).is_empty());
        assert_eq!(to_truncate(&revs, &HashSet::new(), 0).len(), 4);
    }
}
