//! Helpers every controller uses: label selectors, controller references
//! and the claim of owned objects ([`claim`]), pod readiness and
//! availability, and error classification.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::Error;

/// A parsed label selector (`matchLabels` and `matchExpressions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    reqs: Vec<Requirement>,
    /// A selector that selects nothing (a nil selector, in Kubernetes).
    nothing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    /// From a `LabelSelector`; an unknown operator is an error. An empty
    /// selector selects everything; `None` selects nothing.
    pub fn from_label_selector(s: Option<&LabelSelector>) -> Result<Selector, String> {
        let Some(s) = s else {
            return Ok(Selector {
                reqs: Vec::new(),
                nothing: true,
            });
        };
        let mut reqs = Vec::new();
        for (k, v) in s.match_labels.iter().flatten() {
            reqs.push(Requirement::In(k.clone(), vec![v.clone()]));
        }
        for e in s.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            reqs.push(match e.operator.as_str() {
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                op => return Err(format!("{op:?} is not a valid label selector operator")),
            });
        }
        Ok(Selector {
            reqs,
            nothing: false,
        })
    }

    /// A Service's map selector; an empty map selects nothing.
    pub fn from_map(m: &BTreeMap<String, String>) -> Selector {
        Selector {
            reqs: m
                .iter()
                .map(|(k, v)| Requirement::In(k.clone(), vec![v.clone()]))
                .collect(),
            nothing: m.is_empty(),
        }
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing
            && self.reqs.iter().all(|r| match r {
                Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
                Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
                Requirement::Exists(k) => labels.contains_key(k),
                Requirement::DoesNotExist(k) => !labels.contains_key(k),
            })
    }

    /// Whether this selects nothing at all.
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }
}

/// The ownerReference marked `controller: true`, if any.
pub fn controller_ref<K: Resource>(obj: &K) -> Option<&OwnerReference> {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// A controller ownerReference to `owner` (blockOwnerDeletion set, as
/// Kubernetes' controllers set it).
pub fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether the object is being deleted.
pub fn deleting<K: Resource>(obj: &K) -> bool {
    obj.meta().deletion_timestamp.is_some()
}

/// A pod that counts: not terminal and not being deleted.
pub fn pod_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && !deleting(pod)
}

/// The time the pod's Ready condition became True, if it is ready.
pub fn pod_ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    pod.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Whether the pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

/// Whether the pod has been ready for `min_ready_seconds` at `now`.
pub fn pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match pod_ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => now.as_second() - since.as_second() >= i64::from(min_ready_seconds),
    }
}

/// Whether a kube error is 404 Not Found.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether a kube error is 409 Conflict / AlreadyExists.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Replaces `obj`'s ownerReferences (to adopt or release it), guarded by
/// its uid and resourceVersion; `None` if it is gone.
pub async fn set_owner_refs<K>(
    api: &Api<K>,
    obj: &K,
    refs: Vec<OwnerReference>,
) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({"metadata": {"ownerReferences": refs,
        "resourceVersion": obj.resource_version(), "uid": obj.uid()}});
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(updated) => Ok(Some(updated)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `obj`'s ownerReferences without the one to `owner_uid` (a release).
pub fn refs_without<K: Resource>(obj: &K, owner_uid: &str) -> Vec<OwnerReference> {
    obj.owner_references()
        .iter()
        .filter(|r| r.uid != owner_uid)
        .cloned()
        .collect()
}

/// Whether a kube error is 422 Invalid.
fn is_invalid(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 422)
}

/// Takes ownership of the objects `owner` selects among `candidates` (of
/// its namespace) and lets go of those it no longer selects; returns the
/// ones it now controls. Kubernetes' `ControllerRefManager.ClaimObject`:
///
/// | candidate | `matches` | owner being deleted | owner live | result |
/// |---|---|---|---|---|
/// | controlled by another | any | any | any | left alone |
/// | controlled by `owner` | yes | any | any | claimed, no write |
/// | controlled by `owner` | no | no | any | released |
/// | controlled by `owner` | no | yes | any | left alone |
/// | orphan, being deleted | any | any | any | left alone |
/// | orphan | yes | no | same uid, not deleting | adopted |
/// | orphan | yes | no | gone, recreated or deleting | error, not adopted |
/// | orphan | no, or owner deleting | | | left alone |
///
/// Before the first adoption the owner is read live from the apiserver
/// (kube's `RecheckDeletionTimestamp`): the cached copy may not show yet
/// that it is being deleted, or that it was deleted and recreated under
/// the same name. Every candidate is tried; the first failure (a refused
/// adoption, a write that failed) is returned after all of them, so the
/// caller's sync is retried, as kube's aggregated error makes it.
/// Adoption and release are patches guarded by the object's uid and
/// resourceVersion; one that finds the object gone is not an error, nor a
/// release refused as invalid (the reference was already gone).
pub async fn claim<O, K>(
    client: &Client,
    owner: &O,
    candidates: impl IntoIterator<Item = Arc<K>>,
    matches: impl Fn(&K) -> bool,
) -> Result<Vec<Arc<K>>, Error>
where
    O: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let ns = owner.namespace().unwrap_or_default();
    let uid = owner.uid().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let mut claimed = Vec::new();
    let mut first_error: Option<Error> = None;
    let mut can_adopt: Option<Result<(), String>> = None;
    for obj in candidates {
        if obj.namespace().unwrap_or_default() != ns {
            continue;
        }
        match controller_ref(obj.as_ref()) {
            Some(r) if r.uid != uid => {}
            Some(_) if matches(obj.as_ref()) => claimed.push(obj),
            Some(_) => {
                if deleting(owner) {
                    continue;
                }
                let refs = refs_without(obj.as_ref(), &uid);
                match set_owner_refs(&api, obj.as_ref(), refs).await {
                    Ok(_) => {}
                    Err(e) if is_invalid(&e) => {}
                    Err(e) => {
                        first_error.get_or_insert(e.into());
                    }
                }
            }
            None => {
                if deleting(owner) || deleting(obj.as_ref()) || !matches(obj.as_ref()) {
                    continue;
                }
                if can_adopt.is_none() {
                    can_adopt = Some(recheck_owner(client, owner).await?);
                }
                if let Some(Err(why)) = &can_adopt {
                    first_error.get_or_insert_with(|| {
                        Error::Other(format!(
                            "can't adopt {} {ns}/{} ({}): {why}",
                            K::kind(&()),
                            obj.name_any(),
                            obj.uid().unwrap_or_default()
                        ))
                    });
                    continue;
                }
                let mut refs = obj.owner_references().to_vec();
                refs.push(owner_ref(owner));
                match set_owner_refs(&api, obj.as_ref(), refs).await {
                    Ok(Some(adopted)) => claimed.push(Arc::new(adopted)),
                    Ok(None) => {}
                    Err(e) => {
                        first_error.get_or_insert(e.into());
                    }
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(claimed),
    }
}

/// Reads `owner` live: `Err(why)` when it is gone, was recreated (another
/// uid) or is being deleted, so nothing may be adopted for it.
async fn recheck_owner<O>(client: &Client, owner: &O) -> Result<Result<(), String>, Error>
where
    O: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let ns = owner.namespace().unwrap_or_default();
    let name = owner.name_any();
    let api: Api<O> = Api::namespaced(client.clone(), &ns);
    let uid = owner.uid().unwrap_or_default();
    Ok(match api.get_opt(&name).await? {
        None => Err(format!("original {} {ns}/{name} is gone", O::kind(&()))),
        Some(fresh) if fresh.uid().as_deref() != Some(uid.as_str()) => Err(format!(
            "original {} {ns}/{name} is gone: got uid {}, wanted {uid}",
            O::kind(&()),
            fresh.uid().unwrap_or_default()
        )),
        Some(fresh) if deleting(&fresh) => Err(format!("{ns}/{name} has just been deleted")),
        Some(_) => Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_like_kubernetes() {
        let s = Selector::from_label_selector(Some(&LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        }))
        .unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "b")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a"), ("canary", "1")])));
        assert!(!Selector::from_label_selector(None)
            .unwrap()
            .matches(&labels(&[])));
        assert!(
            Selector::from_label_selector(Some(&LabelSelector::default()))
                .unwrap()
                .matches(&labels(&[("x", "y")]))
        );
        assert!(!Selector::from_map(&BTreeMap::new()).matches(&labels(&[("x", "y")])));
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "k".into(),
                operator: "Near".into(),
                values: None,
            }]),
            ..LabelSelector::default()
        };
        assert!(Selector::from_label_selector(Some(&bad)).is_err());
    }
}
