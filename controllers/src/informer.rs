//! Shared informers: one list+watch per resource (kube-runtime's
//! `watcher`, which re-lists on 410 Gone and backs off on errors) feeding
//! an in-memory cache that every controller reads, plus change handlers
//! that turn each event into work-queue keys.
//!
//! Why not one `kube::runtime::Controller` per controller: pods are needed
//! by four controllers (replicaset, endpoints, node lifecycle, garbage
//! collector); a `Controller` each would mean four watches and four copies
//! of 3,000 pods, and its reconciler gets no "old object", which the
//! ReplicaSet's expectations and the endpoints' label changes need. One
//! informer per resource, shared, is client-go's design and the cheapest.
//!
//! The cache is also written through by controllers after their own
//! successful writes ([`Cache::write_through`]), so a controller's next
//! sync sees what it just wrote even if the watch lags; an event older
//! than what the cache holds (a smaller `resourceVersion`) is then dropped.
//! Write-through only replaces a cached object with a newer version; new
//! objects enter the cache from the watch alone, so a write that races a
//! deletion cannot bring the deleted object back.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Resource, ResourceExt};
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub type Key = (String, String);

/// The key of `obj`.
pub fn key_of<K: Resource>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// A change handler: `(old, new)`; `new` is `None` for a deletion.
pub type Handler<K> = Box<dyn Fn(Option<&K>, Option<&K>) + Send + Sync>;

/// The objects of one resource as last seen, ordered by namespace then name.
pub struct Cache<K> {
    objects: Arc<RwLock<BTreeMap<Key, Arc<K>>>>,
    ready: watch::Receiver<bool>,
}

impl<K> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Cache {
            objects: self.objects.clone(),
            ready: self.ready.clone(),
        }
    }
}

fn rv_number<K: Resource>(obj: &K) -> Option<u64> {
    obj.meta().resource_version.as_deref()?.parse().ok()
}

impl<K: Resource + Clone> Cache<K> {
    /// One object.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.objects
            .read()
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every object of one namespace.
    pub fn namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.namespace_filter(namespace, |_| true)
    }

    /// The objects of one namespace that satisfy `keep`.
    pub fn namespace_filter(&self, namespace: &str, keep: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        let start = (namespace.to_string(), String::new());
        self.objects
            .read()
            .range(start..)
            .take_while(|((ns, _), _)| ns == namespace)
            .filter(|(_, o)| keep(o))
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Every object.
    pub fn all(&self) -> Vec<Arc<K>> {
        self.objects.read().values().cloned().collect()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.objects.read().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.objects.read().is_empty()
    }

    /// Waits until the first list has been loaded.
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Records an object this process just wrote (the apiserver's answer)
    /// over the cached version when it is newer. A key the cache does not
    /// hold is left to the watch: its DELETED event may already have been
    /// handled, and inserting would resurrect a deleted object.
    pub fn write_through(&self, obj: K) {
        let key = key_of(&obj);
        let mut objects = self.objects.write();
        let Some(have) = objects.get(&key) else {
            return;
        };
        let newer = match (rv_number(have.as_ref()), rv_number(&obj)) {
            (Some(have), Some(new)) => new > have,
            _ => false,
        };
        if newer {
            objects.insert(key, Arc::new(obj));
        }
    }

    /// Stores `obj` unless it is older than the cached version; returns
    /// `None` when dropped as stale, else `Some(previous)`.
    fn upsert(&self, obj: K) -> Option<Option<Arc<K>>> {
        let key = key_of(&obj);
        let mut objects = self.objects.write();
        let old = objects.get(&key).cloned();
        if let (Some(have), Some(new)) = (old.as_deref().and_then(rv_number), rv_number(&obj)) {
            if new < have {
                return None;
            }
        }
        objects.insert(key, Arc::new(obj));
        Some(old)
    }

    fn remove(&self, key: &Key) -> Option<Arc<K>> {
        self.objects.write().remove(key)
    }
}

/// A list+watch of one resource, its cache and its change handlers.
pub struct Informer<K: Resource + Clone> {
    api: Api<K>,
    config: watcher::Config,
    objects: Arc<RwLock<BTreeMap<Key, Arc<K>>>>,
    ready_tx: watch::Sender<bool>,
    ready_rx: watch::Receiver<bool>,
    handlers: Vec<Handler<K>>,
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    /// An informer over `api` (namespaced or all namespaces).
    pub fn new(api: Api<K>, config: watcher::Config) -> Self {
        let (ready_tx, ready_rx) = watch::channel(false);
        Informer {
            api,
            config,
            objects: Arc::default(),
            ready_tx,
            ready_rx,
            handlers: Vec::new(),
        }
    }

    /// A read handle on the cache.
    pub fn cache(&self) -> Cache<K> {
        Cache {
            objects: self.objects.clone(),
            ready: self.ready_rx.clone(),
        }
    }

    /// Adds a handler called on every change, after the cache is updated.
    pub fn on_change(&mut self, f: impl Fn(Option<&K>, Option<&K>) + Send + Sync + 'static) {
        self.handlers.push(Box::new(f));
    }

    fn notify(&self, old: Option<&K>, new: Option<&K>) {
        for h in &self.handlers {
            h(old, new);
        }
    }

    /// Lists and watches until the task is dropped.
    pub async fn run(self) {
        let cache = self.cache();
        let mut stream = watcher(self.api.clone(), self.config.clone())
            .default_backoff()
            .boxed();
        let mut buffer: BTreeMap<Key, Arc<K>> = BTreeMap::new();
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Apply(obj)) => {
                    if let Some(old) = cache.upsert(obj.clone()) {
                        self.notify(old.as_deref(), Some(&obj));
                    }
                }
                Ok(Event::Delete(obj)) => {
                    let old = cache.remove(&key_of(&obj));
                    self.notify(Some(old.as_deref().unwrap_or(&obj)), None);
                }
                Ok(Event::Init) => buffer.clear(),
                Ok(Event::InitApply(obj)) => {
                    buffer.insert(key_of(&obj), Arc::new(obj));
                }
                Ok(Event::InitDone) => {
                    let listed = std::mem::take(&mut buffer);
                    let previous = std::mem::replace(&mut *self.objects.write(), listed.clone());
                    for (key, old) in &previous {
                        if !listed.contains_key(key) {
                            self.notify(Some(old), None);
                        }
                    }
                    for (key, new) in &listed {
                        self.notify(previous.get(key).map(|o| o.as_ref()), Some(new));
                    }
                    let _ = self.ready_tx.send(true);
                }
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&K::DynamicType::default()), error = %e, "watch failed; retrying");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(name: &str, rv: &str, data: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            data: Some([("v".to_string(), data.to_string())].into()),
            ..ConfigMap::default()
        }
    }

    fn value(cache: &Cache<ConfigMap>, name: &str) -> Option<String> {
        cache.get("ns", name)?.data.as_ref()?.get("v").cloned()
    }

    #[test]
    fn write_through_replaces_only_cached_objects_with_newer_versions() {
        let cache: Cache<ConfigMap> = Cache {
            objects: Arc::default(),
            ready: watch::channel(false).1,
        };
        // Unknown key: left to the watch.
        cache.write_through(cm("a", "5", "created"));
        assert!(cache.get("ns", "a").is_none());
        assert!(cache.upsert(cm("a", "5", "watched")).is_some());
        // Older and equal versions are ignored, a newer one replaces.
        cache.write_through(cm("a", "4", "older"));
        cache.write_through(cm("a", "5", "same"));
        assert_eq!(value(&cache, "a").as_deref(), Some("watched"));
        cache.write_through(cm("a", "7", "newer"));
        assert_eq!(value(&cache, "a").as_deref(), Some("newer"));
        // A write that lands after the DELETED event does not resurrect it.
        assert!(cache.remove(&("ns".into(), "a".into())).is_some());
        cache.write_through(cm("a", "8", "ghost"));
        assert!(cache.get("ns", "a").is_none());
        // An unparsable version cannot be ordered: the cache keeps its own.
        assert!(cache.upsert(cm("b", "3", "watched")).is_some());
        cache.write_through(cm("b", "x", "bad"));
        assert_eq!(value(&cache, "b").as_deref(), Some("watched"));
    }
}
