//! The namespace controller: empties a deleting namespace through the API,
//! then finalizes it, as kube-controller-manager's namespace controller.
//!
//! A namespace being deleted (`deletionTimestamp` set) that still carries
//! the `kubernetes` finalizer in `spec.finalizers` is synced:
//!
//! 1. discovery: every namespaced resource that can be listed and deleted;
//! 2. each object of each such resource in the namespace is deleted with an
//!    ordinary API delete (background propagation) — so a bound pod gets its
//!    grace period and preStop hook from its kubelet, and objects with
//!    finalizers wait for them, rather than vanishing from storage;
//! 3. what is left is counted, and the namespace's status conditions say so
//!    (`NamespaceContentRemaining`: "Some resources are remaining: pods. has
//!    1 resource instances", `NamespaceFinalizersRemaining`,
//!    `NamespaceDeletionContentFailure`, `NamespaceDeletionDiscoveryFailure`);
//!    while content is going, the namespace is queued again after half the
//!    estimated time plus a second, as kube's controller does: the longest
//!    grace period of its unfinished pods, else 15 s when what is left waits
//!    for finalizers. Content left for no known reason, and any failure,
//!    is retried with the queue's back-off (5 ms doubling to 60 s);
//! 4. once nothing is left, `kubernetes` is removed through
//!    `PUT namespaces/{name}/finalize`; the apiserver deletes the namespace
//!    when no finalizer remains.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams, Preconditions};
use kube::discovery::{verbs, ApiResource, Discovery, Scope};
use kube::{Client, ResourceExt};

use crate::informer::{Cache, Informer};
use crate::queue::{Queue, Requeue};
use crate::util::is_not_found;
use crate::Error;

/// The finalizer this controller owns in a namespace's `spec.finalizers`.
pub const FINALIZER: &str = "kubernetes";

/// The estimate, in seconds, for objects left with finalizers (kube's
/// `finalizerEstimateSeconds`).
const FINALIZER_ESTIMATE: i64 = 15;

/// The condition types this controller writes, in kube's order.
const CONDITIONS: [&str; 4] = [
    "NamespaceDeletionDiscoveryFailure",
    "NamespaceDeletionContentFailure",
    "NamespaceContentRemaining",
    "NamespaceFinalizersRemaining",
];

/// The namespace controller; see the module doc.
#[derive(Clone)]
pub struct NamespaceController {
    client: Client,
    namespaces: Cache<Namespace>,
    queue: Queue<String>,
}

/// What one pass over a namespace's content found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Content {
    /// Discovery failed: the message.
    pub discovery_error: Option<String>,
    /// Deletes or lists that failed.
    pub errors: Vec<String>,
    /// Objects left, by `resource.group`.
    pub remaining: BTreeMap<String, usize>,
    /// Objects left carrying each finalizer.
    pub finalizers: BTreeMap<String, usize>,
    /// Seconds the content left may still take to go (kube's estimate).
    pub estimate: i64,
}

impl Content {
    /// When to look again while content is going: half the estimate plus
    /// a second (kube's namespace controller).
    pub fn recheck_after(&self) -> Duration {
        Duration::from_secs(self.estimate.max(0) as u64 / 2 + 1)
    }

    /// Whether the namespace may be finalized.
    pub fn is_empty(&self) -> bool {
        self.discovery_error.is_none()
            && self.errors.is_empty()
            && self.remaining.is_empty()
            && self.finalizers.is_empty()
    }

    /// The `(type, status, reason, message)` of each condition, with kube's
    /// reasons and messages.
    pub fn conditions(&self) -> Vec<(&'static str, &'static str, &'static str, String)> {
        let discovery = match &self.discovery_error {
            None => (
                "False",
                "ResourcesDiscovered",
                "All resources successfully discovered".to_string(),
            ),
            Some(e) => ("True", "DiscoveryFailed", format!("Discovery failed: {e}")),
        };
        let content = if self.errors.is_empty() {
            (
                "False",
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".to_string(),
            )
        } else {
            (
                "True",
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    self.errors.len(),
                    self.errors.join(", ")
                ),
            )
        };
        let remaining = if self.remaining.is_empty() {
            (
                "False",
                "ContentRemoved",
                "All content successfully removed".to_string(),
            )
        } else {
            let parts: Vec<String> = self
                .remaining
                .iter()
                .map(|(r, n)| format!("{r} has {n} resource instances"))
                .collect();
            (
                "True",
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", parts.join(", ")),
            )
        };
        let finalizers = if self.finalizers.is_empty() {
            (
                "False",
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".to_string(),
            )
        } else {
            let parts: Vec<String> = self
                .finalizers
                .iter()
                .map(|(f, n)| format!("{f} in {n} resource instances"))
                .collect();
            (
                "True",
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    parts.join(", ")
                ),
            )
        };
        CONDITIONS
            .iter()
            .zip([discovery, content, remaining, finalizers])
            .map(|(t, (s, r, m))| (*t, s, r, m))
            .collect()
    }
}

/// Whether `ar` is core/v1 pods.
fn is_pods(ar: &ApiResource) -> bool {
    ar.group.is_empty() && ar.plural == "pods"
}

/// How long the deletion of these pods may take: the longest
/// `terminationGracePeriodSeconds` of those not yet finished (kube's
/// `estimateGracefulTerminationForPods`).
fn grace_estimate(pods: &[DynamicObject]) -> i64 {
    pods.iter()
        .filter(|p| {
            !matches!(
                p.data["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            )
        })
        .filter_map(|p| p.data["spec"]["terminationGracePeriodSeconds"].as_i64())
        .max()
        .unwrap_or(0)
        .max(0)
}

/// `resource.group` as kube names a resource in its messages (`pods.`,
/// `deployments.apps`).
fn resource_name(ar: &ApiResource) -> String {
    format!("{}.{}", ar.plural, ar.group)
}

impl NamespaceController {
    /// Wires the controller to the shared namespace informer.
    pub fn new(client: Client, namespaces: &mut Informer<Namespace>) -> NamespaceController {
        let c = NamespaceController {
            client,
            namespaces: namespaces.cache(),
            queue: Queue::new(),
        };
        let q = c.queue.clone();
        namespaces.on_change(move |_, new| {
            if let Some(ns) = new.filter(|n| n.metadata.deletion_timestamp.is_some()) {
                q.add(ns.name_any());
            }
        });
        c
    }

    /// Processes deleting namespaces with `workers` tasks until dropped.
    pub async fn run(self, workers: usize) {
        self.namespaces.wait_ready().await;
        let c = self.clone();
        self.queue
            .run(workers, move |name| {
                let c = c.clone();
                async move { c.sync(name).await }
            })
            .await
    }

    async fn sync(&self, name: String) -> Result<Requeue, Error> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        // Fresh from the apiserver: the cache may lag a finalize just done.
        let Some(ns) = api.get_opt(&name).await? else {
            return Ok(None);
        };
        let ours = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.as_ref())
            .is_some_and(|f| f.iter().any(|f| f == FINALIZER));
        if ns.metadata.deletion_timestamp.is_none() || !ours {
            return Ok(None);
        }
        let content = self.delete_content(&name).await;
        self.write_conditions(&api, &ns, &content).await?;
        if !content.errors.is_empty() || content.discovery_error.is_some() {
            return Err(Error::Other(format!(
                "namespace {name}: content not deleted: {:?}",
                content.conditions()
            )));
        }
        if !content.is_empty() {
            return Ok(Some(content.recheck_after()));
        }
        self.finalize(&api, &name).await?;
        Ok(None)
    }

    /// Every namespaced resource that can be listed and deleted.
    async fn resources(&self) -> Result<Vec<ApiResource>, kube::Error> {
        let discovery = Discovery::new(self.client.clone()).run().await?;
        let mut out = Vec::new();
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                if caps.scope == Scope::Namespaced
                    && caps.supports_operation(verbs::LIST)
                    && caps.supports_operation(verbs::DELETE)
                {
                    out.push(ar);
                }
            }
        }
        Ok(out)
    }

    /// Deletes what is in namespace `ns` (one API delete per object), then
    /// counts what is left.
    async fn delete_content(&self, ns: &str) -> Content {
        let mut content = Content::default();
        let resources = match self.resources().await {
            Ok(r) => r,
            Err(e) => {
                content.discovery_error = Some(e.to_string());
                return content;
            }
        };
        let mut pods_estimate = 0;
        for ar in &resources {
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, ar);
            let list = match api.list(&ListParams::default()).await {
                Ok(l) => l,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => {
                    content.errors.push(format!("{}: {e}", resource_name(ar)));
                    continue;
                }
            };
            if is_pods(ar) {
                pods_estimate = grace_estimate(&list.items);
            }
            for obj in list.items {
                if obj.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: obj.uid(),
                        resource_version: None,
                    }),
                    ..DeleteParams::background()
                };
                match api.delete(&obj.name_any(), &dp).await {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    // Replaced by a new object of the same name meanwhile:
                    // the next pass deletes that one.
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => content.errors.push(format!(
                        "{} {}: {e}",
                        resource_name(ar),
                        obj.name_any()
                    )),
                }
            }
        }
        // What is left after the deletes (graceful pods, finalizers).
        for ar in &resources {
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, ar);
            let list = match api.list(&ListParams::default()).await {
                Ok(l) => l,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => {
                    content.errors.push(format!("{}: {e}", resource_name(ar)));
                    continue;
                }
            };
            if list.items.is_empty() {
                continue;
            }
            let mut with_finalizers = false;
            for obj in &list.items {
                for f in obj.finalizers() {
                    *content.finalizers.entry(f.clone()).or_default() += 1;
                    with_finalizers = true;
                }
            }
            let resource = resource_name(ar);
            if is_pods(ar) && pods_estimate > 0 {
                content.estimate = content.estimate.max(pods_estimate);
            } else if with_finalizers {
                content.estimate = content.estimate.max(FINALIZER_ESTIMATE);
            } else {
                // Nothing holds these back: they should have gone.
                content.errors.push(format!(
                    "unexpected items still remain in namespace: {ns} for gvr: {resource}"
                ));
            }
            content.remaining.insert(resource, list.items.len());
        }
        content
    }

    /// Writes the deletion conditions when they changed.
    async fn write_conditions(
        &self,
        api: &Api<Namespace>,
        ns: &Namespace,
        content: &Content,
    ) -> Result<(), Error> {
        let now = Time(Timestamp::now());
        let old = ns
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let mut conditions: Vec<NamespaceCondition> = old
            .iter()
            .filter(|c| !CONDITIONS.contains(&c.type_.as_str()))
            .cloned()
            .collect();
        let mut changed = false;
        for (type_, status, reason, message) in content.conditions() {
            let prev = old.iter().find(|c| c.type_ == type_);
            let same = prev.is_some_and(|c| {
                c.status == status
                    && c.reason.as_deref() == Some(reason)
                    && c.message.as_deref() == Some(message.as_str())
            });
            changed |= !same;
            conditions.push(NamespaceCondition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: Some(reason.to_string()),
                message: Some(message),
                last_transition_time: match prev {
                    Some(c) if c.status == status => c.last_transition_time.clone(),
                    _ => Some(now.clone()),
                },
            });
        }
        if !changed {
            return Ok(());
        }
        let mut updated = ns.clone();
        let status = updated.status.get_or_insert_with(Default::default);
        status.conditions = Some(conditions);
        match api
            .replace_status(&ns.name_any(), &PostParams::default(), &updated)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // Changed meanwhile: the next pass writes them.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes our finalizer through `/finalize`.
    async fn finalize(&self, api: &Api<Namespace>, name: &str) -> Result<(), Error> {
        for _ in 0..5 {
            let Some(mut ns) = api.get_opt(name).await? else {
                return Ok(());
            };
            let spec = ns.spec.get_or_insert_with(Default::default);
            let finalizers = spec.finalizers.take().unwrap_or_default();
            spec.finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
            match api
                .replace_subresource("finalize", name, &PostParams::default(), &ns)
                .await
            {
                Ok(_) => {
                    tracing::info!(namespace = %name, "namespace finalized");
                    return Ok(());
                }
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Other(format!(
            "namespace {name}: finalize kept conflicting"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str, grace: Option<i64>) -> DynamicObject {
        let mut spec = serde_json::json!({});
        if let Some(g) = grace {
            spec["terminationGracePeriodSeconds"] = g.into();
        }
        DynamicObject {
            types: None,
            metadata: Default::default(),
            data: serde_json::json!({"spec": spec, "status": {"phase": phase}}),
        }
    }

    #[test]
    fn content_going_is_rechecked_after_half_its_estimate() {
        let pods = [
            pod("Running", Some(30)),
            pod("Pending", Some(7)),
            pod("Succeeded", Some(600)),
            pod("Running", None),
        ];
        assert_eq!(grace_estimate(&pods), 30, "finished pods do not count");
        assert_eq!(grace_estimate(&pods[2..]), 0);
        let mut content = Content::default();
        assert_eq!(content.recheck_after(), Duration::from_secs(1));
        content.estimate = 30;
        assert_eq!(content.recheck_after(), Duration::from_secs(16));
        content.estimate = FINALIZER_ESTIMATE;
        assert_eq!(content.recheck_after(), Duration::from_secs(8));
    }

    #[test]
    fn conditions_as_kube_words_them() {
        let done = Content::default();
        assert!(done.is_empty());
        let c = done.conditions();
        assert_eq!(
            c.iter().map(|c| (c.0, c.1, c.2)).collect::<Vec<_>>(),
            [
                (
                    "NamespaceDeletionDiscoveryFailure",
                    "False",
                    "ResourcesDiscovered"
                ),
                ("NamespaceDeletionContentFailure", "False", "ContentDeleted"),
                ("NamespaceContentRemaining", "False", "ContentRemoved"),
                (
                    "NamespaceFinalizersRemaining",
                    "False",
                    "ContentHasNoFinalizers"
                ),
            ]
        );
        let mut left = Content::default();
        left.remaining.insert("pods.".into(), 2);
        left.remaining.insert("configmaps.".into(), 1);
        left.finalizers.insert("example.com/x".into(), 1);
        left.errors.push("pods. p: boom".into());
        assert!(!left.is_empty());
        let c = left.conditions();
        assert_eq!(
            c[1].3,
            "Failed to delete all resource types, 1 remaining: pods. p: boom"
        );
        assert_eq!(
            (c[2].1, c[2].2, c[2].3.as_str()),
            (
                "True",
                "SomeResourcesRemain",
                "Some resources are remaining: configmaps. has 1 resource instances, pods. has 2 resource instances"
            )
        );
        assert_eq!(
            c[3].3,
            "Some content in the namespace has finalizers remaining: example.com/x in 1 resource instances"
        );
    }
}
