//! The garbage collector: deletes objects whose owners are all gone and
//! carries out foreground and orphan deletion.
//!
//! It keeps a graph of every watched object (uid → kind, name, owner
//! references, deletion state) and, per owner uid, its dependents, fed by
//! the shared informers. Three kinds of work:
//!
//! - **attempt delete** (an object with owners): an owner counts as gone
//!   when it is not in the graph and a live GET finds no object of that
//!   name with that uid (a uid mismatch is gone too — the name was reused).
//!   All owners gone → the object is deleted (background propagation, or
//!   the finalizer it already carries). Some gone, some not → the dangling
//!   references are removed instead. Owners known gone are remembered, so
//!   3,000 pods of a deleted ReplicaSet cost one lookup, not 3,000.
//! - **foreground** (an owner being deleted with `foregroundDeletion`):
//!   its dependents are deleted; once none with `blockOwnerDeletion` is
//!   left, the finalizer is removed and the apiserver completes the delete.
//! - **orphan** (an owner being deleted with `orphan`): its reference is
//!   removed from each dependent, then the finalizer.
//!
//! Owners of kinds outside the built-in table (custom resources) are
//! found through the apiserver's discovery. They are not watched, so a
//! dependent of a present custom owner looks again every
//! [`CUSTOM_OWNER_RECHECK`] instead of waiting for an event.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    Preconditions, PropagationPolicy,
};
use kube::{Client, Resource, ResourceExt};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::informer::Informer;
use crate::queue::{Queue, Requeue};
use crate::util::{is_conflict, is_not_found};
use crate::Error;

/// The finalizer of a foreground (dependents first) deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an orphaning deletion.
pub const ORPHAN: &str = "orphan";

/// Owner uids remembered as gone before the memory is cleared.
const ABSENT_LIMIT: usize = 100_000;

/// `(apiVersion, kind, plural, namespaced)` of the kinds the apiserver serves.
const KINDS: &[(&str, &str, &str, bool)] = &[
    ("v1", "Pod", "pods", true),
    ("v1", "Service", "services", true),
    ("v1", "Endpoints", "endpoints", true),
    ("v1", "ConfigMap", "configmaps", true),
    ("v1", "Event", "events", true),
    ("v1", "Node", "nodes", false),
    ("v1", "Namespace", "namespaces", false),
    ("apps/v1", "ReplicaSet", "replicasets", true),
    ("apps/v1", "Deployment", "deployments", true),
    ("apps/v1", "DaemonSet", "daemonsets", true),
    ("apps/v1", "ControllerRevision", "controllerrevisions", true),
    ("apps/v1", "StatefulSet", "statefulsets", true),
    ("batch/v1", "Job", "jobs", true),
    ("batch/v1", "CronJob", "cronjobs", true),
    ("coordination.k8s.io/v1", "Lease", "leases", true),
];

/// How often a dependent of a present custom-resource owner looks at its
/// owners again (no watch tells the collector that such an owner went).
pub const CUSTOM_OWNER_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// `(apiVersion, kind)` → the resource and whether it is namespaced.
type DiscoveredKinds = HashMap<(String, String), (ApiResource, bool)>;

fn kind_info(api_version: &str, kind: &str) -> Option<(ApiResource, bool)> {
    let (_, _, plural, namespaced) = KINDS
        .iter()
        .find(|(v, k, _, _)| *v == api_version && *k == kind)?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Some((ApiResource::from_gvk_with_plural(&gvk, plural), *namespaced))
}

#[derive(Debug, Clone)]
struct GNode {
    api_version: String,
    kind: String,
    namespace: Option<String>,
    name: String,
    resource_version: Option<String>,
    owners: Vec<OwnerReference>,
    finalizers: Vec<String>,
    deleting: bool,
}

impl GNode {
    fn waiting_for_dependents(&self) -> bool {
        self.deleting && self.finalizers.iter().any(|f| f == FOREGROUND)
    }
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, GNode>,
    /// Owner uid → uids of objects naming it as an owner.
    dependents: HashMap<String, HashSet<String>>,
}

/// One unit of work, by object uid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Item {
    AttemptDelete(String),
    Foreground(String),
    Orphan(String),
}

type ReadyFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The garbage collector; see the module doc.
#[derive(Clone)]
pub struct GarbageCollector {
    client: Client,
    graph: Arc<Mutex<Graph>>,
    /// Owner uids known to be gone for good (uids are never reused).
    absent: Arc<Mutex<HashSet<String>>>,
    queue: Queue<Item>,
    ready: Arc<Mutex<Vec<ReadyFuture>>>,
    /// Custom owner kinds found through discovery.
    discovered: Arc<Mutex<DiscoveredKinds>>,
}

impl GarbageCollector {
    /// A collector with nothing watched yet; add kinds with [`watch`](Self::watch).
    pub fn new(client: Client) -> GarbageCollector {
        GarbageCollector {
            client,
            graph: Arc::default(),
            absent: Arc::default(),
            queue: Queue::new(),
            ready: Arc::default(),
            discovered: Arc::default(),
        }
    }

    /// Feeds the graph from one kind's shared informer.
    pub fn watch<K>(&self, informer: &mut Informer<K>)
    where
        K: Resource<DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let cache = informer.cache();
        self.ready
            .lock()
            .push(Box::pin(async move { cache.wait_ready().await }));
        let gc = self.clone();
        informer.on_change(move |old, new| match new {
            Some(obj) => gc.upsert(obj),
            None => {
                if let Some(obj) = old {
                    gc.remove(obj)
                }
            }
        });
    }

    fn upsert<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        let Some(uid) = obj.uid() else { return };
        let meta = obj.meta();
        let node = GNode {
            api_version: K::api_version(&()).to_string(),
            kind: K::kind(&()).to_string(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone(),
            owners: meta.owner_references.clone().unwrap_or_default(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
        };
        let mut g = self.graph.lock();
        let old = g.nodes.get(&uid).cloned();
        let old_owners: Vec<String> = old
            .as_ref()
            .map(|o| o.owners.iter().map(|r| r.uid.clone()).collect())
            .unwrap_or_default();
        for o in &old_owners {
            if let Some(d) = g.dependents.get_mut(o) {
                d.remove(&uid);
            }
        }
        for r in &node.owners {
            g.dependents
                .entry(r.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        let owners_changed = old.as_ref().is_none_or(|o| o.owners != node.owners);
        if !node.owners.is_empty() && owners_changed {
            self.queue.add(Item::AttemptDelete(uid.clone()));
        }
        if node.deleting && node.finalizers.iter().any(|f| f == ORPHAN) {
            self.queue.add(Item::Orphan(uid.clone()));
        }
        if node.waiting_for_dependents() {
            self.queue.add(Item::Foreground(uid.clone()));
        }
        // A dependent changing may unblock an owner waiting for it.
        for r in old_owners.iter().chain(node.owners.iter().map(|r| &r.uid)) {
            if g.nodes.get(r).is_some_and(GNode::waiting_for_dependents) {
                self.queue.add(Item::Foreground(r.clone()));
            }
        }
        g.nodes.insert(uid, node);
    }

    fn remove<K: Resource<DynamicType = ()>>(&self, obj: &K) {
        let Some(uid) = obj.uid() else { return };
        let mut g = self.graph.lock();
        let node = g.nodes.remove(&uid);
        {
            let mut absent = self.absent.lock();
            if absent.len() >= ABSENT_LIMIT {
                // Forgetting only costs a live lookup later.
                absent.clear();
            }
            absent.insert(uid.clone());
        }
        for dep in g.dependents.remove(&uid).into_iter().flatten() {
            self.queue.add(Item::AttemptDelete(dep));
        }
        for r in node.iter().flat_map(|n| n.owners.iter()) {
            if let Some(d) = g.dependents.get_mut(&r.uid) {
                d.remove(&uid);
            }
            if g.nodes
                .get(&r.uid)
                .is_some_and(GNode::waiting_for_dependents)
            {
                self.queue.add(Item::Foreground(r.uid.clone()));
            }
        }
    }

    /// Processes work with `workers` tasks until dropped, once every
    /// watched kind has been listed.
    pub async fn run(self, workers: usize) {
        let ready: Vec<ReadyFuture> = std::mem::take(&mut *self.ready.lock());
        futures::future::join_all(ready).await;
        let gc = self.clone();
        self.queue
            .run(workers, move |item| {
                let gc = gc.clone();
                async move {
                    match item {
                        Item::AttemptDelete(uid) => gc.attempt_delete(&uid).await,
                        Item::Foreground(uid) => gc.foreground(&uid).await,
                        Item::Orphan(uid) => gc.orphan(&uid).await,
                    }
                }
            })
            .await
    }

    fn api(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Option<Api<DynamicObject>> {
        let (ar, namespaced) = kind_info(api_version, kind)?;
        Some(match (namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            (true, None) => return None,
            (false, _) => Api::all_with(self.client.clone(), &ar),
        })
    }

    /// An owner's kind and whether it is namespaced: a built-in, or one
    /// the apiserver's discovery serves (a custom resource); `None` when no
    /// such kind is served.
    async fn owner_kind(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<(ApiResource, bool)>, Error> {
        if let Some(known) = kind_info(api_version, kind) {
            return Ok(Some(known));
        }
        let key = (api_version.to_string(), kind.to_string());
        if let Some(known) = self.discovered.lock().get(&key).cloned() {
            return Ok(Some(known));
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok((ar, caps)) => {
                let namespaced = caps.scope == kube::discovery::Scope::Namespaced;
                self.discovered.lock().insert(key, (ar.clone(), namespaced));
                Ok(Some((ar, namespaced)))
            }
            Err(kube::Error::Discovery(_)) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Owner state: `Some(true)` present and solid, `Some(false)` present
    /// and waiting for its dependents, `None` gone.
    async fn owner_state(
        &self,
        dependent: &GNode,
        r: &OwnerReference,
    ) -> Result<Option<bool>, Error> {
        if let Some(o) = self.graph.lock().nodes.get(&r.uid) {
            return Ok(Some(!o.waiting_for_dependents()));
        }
        if self.absent.lock().contains(&r.uid) {
            return Ok(None);
        }
        let Some((ar, namespaced)) = self.owner_kind(&r.api_version, &r.kind).await? else {
            // A kind this cluster does not serve: never collect on a guess.
            return Ok(Some(true));
        };
        let api: Api<DynamicObject> = match (namespaced, dependent.namespace.as_deref()) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            // A namespaced owner of a cluster-scoped object cannot exist.
            (true, None) => return Ok(None),
            (false, _) => Api::all_with(self.client.clone(), &ar),
        };
        match api.get_opt(&r.name).await? {
            Some(o) if o.uid().as_deref() == Some(r.uid.as_str()) => {
                let waiting = o.meta().deletion_timestamp.is_some()
                    && o.finalizers().iter().any(|f| f == FOREGROUND);
                Ok(Some(!waiting))
            }
            _ => {
                let mut absent = self.absent.lock();
                if absent.len() >= ABSENT_LIMIT {
                    absent.clear();
                }
                absent.insert(r.uid.clone());
                Ok(None)
            }
        }
    }

    async fn attempt_delete(&self, uid: &str) -> Result<Requeue, Error> {
        let (node, has_dependents) = {
            let g = self.graph.lock();
            let Some(n) = g.nodes.get(uid).cloned() else {
                return Ok(None);
            };
            let deps = g.dependents.get(uid).is_some_and(|d| !d.is_empty());
            (n, deps)
        };
        if node.deleting || node.owners.is_empty() {
            return Ok(None);
        }
        let mut solid = 0;
        let mut gone: Vec<String> = Vec::new();
        let mut waiting = 0;
        for r in &node.owners {
            match self.owner_state(&node, r).await? {
                Some(true) => solid += 1,
                Some(false) => {
                    waiting += 1;
                    gone.push(r.uid.clone());
                }
                None => gone.push(r.uid.clone()),
            }
        }
        if gone.is_empty() {
            let custom = node
                .owners
                .iter()
                .any(|r| kind_info(&r.api_version, &r.kind).is_none());
            return Ok(custom.then_some(CUSTOM_OWNER_RECHECK));
        }
        let Some(api) = self.api(&node.api_version, &node.kind, node.namespace.as_deref()) else {
            return Ok(None);
        };
        if solid > 0 {
            // Other owners remain: only drop the references to gone ones.
            let refs: Vec<&OwnerReference> = node
                .owners
                .iter()
                .filter(|r| !gone.contains(&r.uid))
                .collect();
            let patch = json!({"metadata": {"ownerReferences": refs,
                "resourceVersion": node.resource_version, "uid": uid}});
            return match api
                .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Ok(None),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(e.into()),
            };
        }
        let policy = if waiting > 0 && has_dependents {
            PropagationPolicy::Foreground
        } else if node.finalizers.iter().any(|f| f == ORPHAN) {
            PropagationPolicy::Orphan
        } else if node.finalizers.iter().any(|f| f == FOREGROUND) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        tracing::debug!(kind = %node.kind, name = %node.name, "garbage collecting");
        match api.delete(&node.name, &dp).await {
            Ok(_) => Ok(None),
            Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes `finalizer` from the live object, if it still has it.
    async fn remove_finalizer(&self, node: &GNode, finalizer: &str) -> Result<(), Error> {
        let Some(api) = self.api(&node.api_version, &node.kind, node.namespace.as_deref()) else {
            return Ok(());
        };
        let Some(live) = api.get_opt(&node.name).await? else {
            return Ok(());
        };
        if !live.finalizers().iter().any(|f| f == finalizer) {
            return Ok(());
        }
        let rest: Vec<&String> = live
            .finalizers()
            .iter()
            .filter(|f| *f != finalizer)
            .collect();
        let patch =
            json!({"metadata": {"finalizers": rest, "resourceVersion": live.resource_version()}});
        match api
            .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn dependents_of(&self, uid: &str) -> Vec<(String, GNode)> {
        let g = self.graph.lock();
        g.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| g.nodes.get(d).map(|n| (d.clone(), n.clone())))
            .collect()
    }

    async fn foreground(&self, uid: &str) -> Result<Requeue, Error> {
        let Some(node) = self.graph.lock().nodes.get(uid).cloned() else {
            return Ok(None);
        };
        if !node.waiting_for_dependents() {
            return Ok(None);
        }
        let deps = self.dependents_of(uid);
        let blocking = deps.iter().filter(|(_, d)| {
            d.owners
                .iter()
                .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
        });
        if blocking.count() == 0 {
            self.remove_finalizer(&node, FOREGROUND).await?;
            return Ok(None);
        }
        for (dep_uid, dep) in deps {
            if !dep.deleting {
                self.queue.add(Item::AttemptDelete(dep_uid));
            }
        }
        Ok(None)
    }

    async fn orphan(&self, uid: &str) -> Result<Requeue, Error> {
        let Some(node) = self.graph.lock().nodes.get(uid).cloned() else {
            return Ok(None);
        };
        if !(node.deleting && node.finalizers.iter().any(|f| f == ORPHAN)) {
            return Ok(None);
        }
        for (dep_uid, dep) in self.dependents_of(uid) {
            let Some(api) = self.api(&dep.api_version, &dep.kind, dep.namespace.as_deref()) else {
                continue;
            };
            let refs: Vec<&OwnerReference> = dep.owners.iter().filter(|r| r.uid != uid).collect();
            let patch = json!({"metadata": {"ownerReferences": refs,
                "resourceVersion": dep.resource_version, "uid": dep_uid}});
            match api
                .patch(&dep.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.remove_finalizer(&node, ORPHAN).await?;
        Ok(None)
    }
}
