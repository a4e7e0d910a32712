//! The watch cache: per resource, one list and then ONE etcd watch from the
//! list's revision keep an in-memory copy of every object, a bounded window
//! of recent events, and the set of client watchers.
//!
//! Consistency contract (Kubernetes'):
//! - [`WatchCache::wait_fresh`]`(None)` returns once the cache has seen
//!   everything etcd had committed when the call started (a consistent
//!   read); it gives up after a bounded wait. A quiet resource catches up
//!   without events: one keys-only Range at the target revision with
//!   `min_mod_revision = cache revision + 1` returns the keys changed since
//!   and the total count; none changed and the same count means the cache
//!   already equals etcd at the target, so its revision advances. (etcd 3.4's
//!   watch progress reports can overtake pending events, so they are not
//!   trusted for this.)
//! - A watch from revision `N` receives every event after `N` exactly once,
//!   in order, if `N` is inside the window; older answers 410 Expired.
//! - Each event is encoded once; every watcher gets the same `Bytes`. A
//!   watcher's buffer is bounded, and a watcher whose buffer is full is
//!   closed on the spot (its client re-lists), so no watcher delays another
//!   or the cache.

mod reflector;
mod store;

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use parking_lot::RwLock;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::error::{Error, Result};
use crate::object::Object;
use crate::registry::{encode_continue, Registry};
use crate::resources::Resource;
use crate::selector::Filter;
use store::Store;

/// Tunables of every resource's cache.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Recent events kept for watches that resume from a resourceVersion.
    pub window: usize,
    /// Encoded events buffered per watcher before it is closed as too slow.
    pub watcher_buffer: usize,
    /// How often watchers that allow bookmarks get one.
    pub bookmark_interval: Duration,
    /// The longest a request waits for the cache to catch up.
    pub fresh_wait: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            window: 10_000,
            watcher_buffer: 1_000,
            bookmark_interval: Duration::from_secs(10),
            fresh_wait: Duration::from_secs(3),
        }
    }
}

/// Kubernetes' watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, encoded once as a watch-stream line.
#[derive(Debug)]
pub struct Event {
    pub revision: i64,
    pub kind: EventType,
    /// The new version (for DELETED: the last one, at the deletion's revision).
    pub object: Arc<Object>,
    /// The version before (MODIFIED and DELETED).
    pub prev: Option<Arc<Object>>,
    /// `{"type":"…","object":…}\n`, shared by every watcher.
    pub line: Bytes,
}

/// Encodes one watch-stream line around already-encoded object bytes.
pub fn event_line(kind: &str, object: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(object.len() + 32);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

struct Watcher {
    filter: Filter,
    /// Events at or below this revision were replayed (or are part of the
    /// initial state) and are skipped live.
    after: i64,
    bookmarks: bool,
    tx: mpsc::Sender<Bytes>,
}

/// Everything the reflector changes and readers look at, under one lock so
/// that "snapshot + subscribe" is atomic with respect to new events.
struct State {
    store: Store,
    events: VecDeque<Arc<Event>>,
    /// Every event with a revision above this one is in `events`.
    window_start: i64,
    /// The etcd revision the cache reflects.
    revision: i64,
    /// Whether the first list has completed.
    ready: bool,
    watchers: HashMap<u64, Watcher>,
    next_watcher: u64,
}

struct Inner {
    resource: &'static Resource,
    registry: Registry,
    config: CacheConfig,
    state: RwLock<State>,
    /// The cache's revision, published after each change, for waiters;
    /// -1 until the first list.
    revision: watch::Sender<i64>,
    /// Never sent on: its closing tells the reflector the cache is gone.
    _alive: mpsc::Sender<()>,
}

/// One resource's watch cache. Cheap to clone.
#[derive(Clone)]
pub struct WatchCache {
    inner: Arc<Inner>,
}

/// A list served from the cache.
#[derive(Debug)]
pub struct CacheList {
    pub items: Vec<Arc<Object>>,
    pub revision: i64,
    pub continue_token: Option<String>,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// Synthetic ADDED events for the current objects, then live events.
    Now,
    /// Every event after this revision.
    Revision(i64),
}

impl WatchCache {
    /// Starts the cache's reflector task; the task ends when every clone of
    /// the cache is dropped.
    pub fn start(
        resource: &'static Resource,
        registry: Registry,
        config: CacheConfig,
    ) -> WatchCache {
        let (alive_tx, alive_rx) = mpsc::channel(1);
        let inner = Arc::new(Inner {
            resource,
            registry,
            config,
            state: RwLock::new(State {
                store: Store::default(),
                events: VecDeque::new(),
                window_start: 0,
                revision: 0,
                ready: false,
                watchers: HashMap::new(),
                next_watcher: 0,
            }),
            revision: watch::channel(-1).0,
            _alive: alive_tx,
        });
        tokio::spawn(reflector::run(Arc::downgrade(&inner), alive_rx));
        WatchCache { inner }
    }

    pub fn resource(&self) -> &'static Resource {
        self.inner.resource
    }

    /// The revision the cache reflects now.
    pub fn revision(&self) -> i64 {
        *self.inner.revision.borrow()
    }

    /// Waits until the cache reflects at least `min` (`Some(0)`: has
    /// listed at all; `None`: everything etcd has committed now); 504
    /// Timeout after the bounded wait.
    pub async fn wait_fresh(&self, min: Option<i64>) -> Result<i64> {
        let target = match min {
            Some(rv) => rv.max(0),
            None => self.inner.registry.etcd().current_revision().await?,
        };
        let mut rx = self.inner.revision.subscribe();
        let deadline = tokio::time::Instant::now() + self.inner.config.fresh_wait;
        let step = Duration::from_millis(50);
        loop {
            let have = *rx.borrow_and_update();
            if have >= target {
                return Ok(have);
            }
            if have >= 0 && self.inner.try_advance(target).await {
                continue;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(format!(
                    "Too large resource version: {target}, current: {have}"
                )));
            }
            let _ = tokio::time::timeout_at(deadline.min(now + step), rx.changed()).await;
        }
    }

    /// Lists matching objects from memory: the first `limit` (0 = all) after
    /// `after` (a key), with a continue token that lets the registry serve
    /// the rest from etcd at the same revision.
    pub fn list(&self, filter: &Filter, limit: usize) -> CacheList {
        let state = self.inner.state.read();
        let (items, more) = state.store.select(filter, None, limit);
        let prefix_len = self.inner.resource.prefix().len();
        let continue_token = match items.last() {
            Some(last) if more => Some(encode_continue(
                state.revision,
                &format!("{}\0", &last.key[prefix_len..]),
            )),
            _ => None,
        };
        CacheList {
            items,
            revision: state.revision,
            continue_token,
        }
    }

    /// Registers a watcher. The returned stream yields encoded lines and
    /// ends when the watcher is closed (too slow, or a re-list).
    pub fn watch(
        &self,
        from: WatchFrom,
        filter: Filter,
        bookmarks: bool,
        initial_events_end: bool,
    ) -> Result<WatchStream> {
        let mut state = self.inner.state.write();
        let mut initial = Vec::new();
        match from {
            WatchFrom::Now => {
                for o in state.store.select(&filter, None, 0).0 {
                    initial.push(event_line("ADDED", &o.json));
                }
                if initial_events_end {
                    initial.push(self.bookmark_line(state.revision, true));
                }
            }
            WatchFrom::Revision(rv) => {
                if rv < state.window_start {
                    return Err(Error::Expired(format!(
                        "too old resource version: {rv} ({})",
                        state.window_start
                    )));
                }
                for e in state.events.iter().filter(|e| e.revision > rv) {
                    if let Some(line) = line_for(e, &filter) {
                        initial.push(line);
                    }
                }
            }
        }
        let after = match from {
            WatchFrom::Now => state.revision,
            WatchFrom::Revision(rv) => rv,
        };
        let (tx, rx) = mpsc::channel(self.inner.config.watcher_buffer.max(1));
        let id = state.next_watcher;
        state.next_watcher += 1;
        state.watchers.insert(
            id,
            Watcher {
                filter,
                after,
                bookmarks,
                tx,
            },
        );
        Ok(WatchStream {
            initial: initial.into(),
            rx,
            _guard: WatcherGuard {
                cache: Arc::downgrade(&self.inner),
                id,
            },
        })
    }

    /// How many objects the cache holds.
    pub fn object_count(&self) -> usize {
        self.inner.state.read().store.len()
    }

    /// How many watchers are registered (for tests and metrics).
    pub fn watcher_count(&self) -> usize {
        self.inner.state.read().watchers.len()
    }

    fn bookmark_line(&self, revision: i64, initial_events_end: bool) -> Bytes {
        bookmark_line(self.inner.resource, revision, initial_events_end)
    }
}

fn bookmark_line(r: &Resource, revision: i64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let object = json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": metadata});
    event_line("BOOKMARK", object.to_string().as_bytes())
}

/// The line a watcher with `filter` gets for `e`, if any. An object that
/// starts (stops) matching is ADDED (DELETED) for that watcher, as in
/// Kubernetes; the shared line is used whenever the type is unchanged.
fn line_for(e: &Event, filter: &Filter) -> Option<Bytes> {
    let now = e.kind != EventType::Deleted && filter.matches(&e.object);
    let before = e.prev.as_ref().is_some_and(|p| filter.matches(p));
    match (e.kind, before, now) {
        (EventType::Deleted, true, _) => Some(e.line.clone()),
        (EventType::Deleted, false, _) => None,
        (_, false, true) if e.kind == EventType::Added => Some(e.line.clone()),
        (_, true, true) => Some(e.line.clone()),
        (_, false, true) => Some(event_line("ADDED", &e.object.json)),
        (_, true, false) => Some(event_line("DELETED", &e.object.json)),
        (_, false, false) => None,
    }
}

impl Inner {
    /// Replaces the whole content after a (re-)list. Open watchers are
    /// closed: they cannot be told what changed in between, so their
    /// clients re-list, as with kube-apiserver.
    fn replace(&self, objects: Vec<Object>, revision: i64) {
        let mut state = self.state.write();
        let mut store = Store::default();
        for o in objects {
            store.insert(Arc::new(o));
        }
        state.store = store;
        state.events.clear();
        state.window_start = revision;
        state.revision = revision;
        state.ready = true;
        state.watchers.clear();
        drop(state);
        self.revision.send_replace(revision);
    }

    /// Applies one etcd event and fans it out.
    fn apply(&self, revision: i64, key: String, put: Option<(&[u8], i64)>) -> Result<()> {
        let mut state = self.state.write();
        let event = match put {
            Some((value, mod_rev)) => {
                let object = Arc::new(Object::decode(key.as_bytes(), value, mod_rev)?);
                let prev = state.store.insert(object.clone());
                let kind = if prev.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                let line = event_line(kind.as_str(), &object.json);
                Event {
                    revision,
                    kind,
                    object,
                    prev,
                    line,
                }
            }
            None => {
                let Some(prev) = state.store.remove(&key) else {
                    state.revision = state.revision.max(revision);
                    return Ok(());
                };
                let object = Arc::new(prev.at_revision(revision)?);
                let line = event_line("DELETED", &object.json);
                Event {
                    revision,
                    kind: EventType::Deleted,
                    object,
                    prev: Some(prev),
                    line,
                }
            }
        };
        let event = Arc::new(event);
        state.events.push_back(event.clone());
        while state.events.len() > self.config.window.max(1) {
            if let Some(old) = state.events.pop_front() {
                state.window_start = old.revision;
            }
        }
        state.revision = state.revision.max(revision);
        let mut closed = Vec::new();
        for (id, w) in &state.watchers {
            if event.revision <= w.after {
                continue;
            }
            if let Some(line) = line_for(&event, &w.filter) {
                if w.tx.try_send(line).is_err() {
                    closed.push(*id);
                }
            }
        }
        for id in closed {
            state.watchers.remove(&id);
        }
        Ok(())
    }

    /// Advances the cache's revision to `target` if etcd shows no change
    /// to this resource between the cache's revision and `target` (see the
    /// module comment); whether the cache now reflects `target`.
    async fn try_advance(&self, target: i64) -> bool {
        let (have, count) = {
            let s = self.state.read();
            if !s.ready {
                return false;
            }
            (s.revision, s.store.len())
        };
        if have >= target {
            return true;
        }
        let prefix = self.resource.prefix();
        let Ok((total, changed)) = self
            .registry
            .etcd()
            .changes(&prefix, target, have + 1)
            .await
        else {
            return false;
        };
        if changed || total != count as i64 {
            return false;
        }
        let advanced = {
            let mut s = self.state.write();
            if s.revision == have {
                s.revision = target;
            }
            s.revision >= target
        };
        self.publish();
        advanced
    }

    /// Publishes the revision to waiters.
    fn publish(&self) {
        let rev = {
            let s = self.state.read();
            if !s.ready {
                return;
            }
            s.revision
        };
        self.revision.send_if_modified(|r| {
            let changed = *r != rev;
            *r = rev;
            changed
        });
    }

    /// Sends a bookmark at the current revision to every watcher that
    /// allows them; a watcher with a full buffer is closed.
    fn bookmark(&self) {
        let mut state = self.state.write();
        if !state.ready {
            return;
        }
        let line = bookmark_line(self.resource, state.revision, false);
        let mut closed = Vec::new();
        for (id, w) in &state.watchers {
            if w.bookmarks && w.tx.try_send(line.clone()).is_err() {
                closed.push(*id);
            }
        }
        for id in closed {
            state.watchers.remove(&id);
        }
    }
}

/// Unregisters its watcher when the client goes away.
struct WatcherGuard {
    cache: Weak<Inner>,
    id: u64,
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.cache.upgrade() {
            inner.state.write().watchers.remove(&self.id);
        }
    }
}

/// A client's watch: the replayed (or initial) lines, then live ones.
pub struct WatchStream {
    initial: VecDeque<Bytes>,
    rx: mpsc::Receiver<Bytes>,
    _guard: WatcherGuard,
}

impl Stream for WatchStream {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(line) = self.initial.pop_front() {
            return Poll::Ready(Some(line));
        }
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::LabelSelector;

    fn object(labels: &str, rv: i64) -> Arc<Object> {
        let raw = format!(r#"{{"metadata":{{"name":"a","namespace":"n","labels":{{{labels}}}}}}}"#);
        Arc::new(Object::decode(b"/registry/pods/n/a", raw.as_bytes(), rv).unwrap())
    }

    #[test]
    fn label_transitions_become_added_and_deleted() {
        let prev = object(r#""app":"db""#, 1);
        let now = object(r#""app":"web""#, 2);
        let e = Event {
            revision: 2,
            kind: EventType::Modified,
            line: event_line("MODIFIED", &now.json),
            object: now,
            prev: Some(prev),
        };
        let web = Filter {
            labels: LabelSelector::parse("app=web").unwrap(),
            ..Default::default()
        };
        let db = Filter {
            labels: LabelSelector::parse("app=db").unwrap(),
            ..Default::default()
        };
        let line = |f: &Filter| {
            let l = line_for(&e, f).unwrap();
            serde_json::from_slice::<serde_json::Value>(&l).unwrap()["type"].clone()
        };
        assert_eq!(line(&web), "ADDED");
        assert_eq!(line(&db), "DELETED");
        assert_eq!(line(&Filter::default()), "MODIFIED");
        let other = Filter {
            labels: LabelSelector::parse("app=x").unwrap(),
            ..Default::default()
        };
        assert!(line_for(&e, &other).is_none());
    }
}
