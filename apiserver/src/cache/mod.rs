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
//! - Storage trouble: a lost etcd watch (a restarted member, a dropped
//!   connection) is re-created from the cache's revision, without a re-list,
//!   so watchers just see a pause. Only when etcd has compacted past the
//!   cache's revision does the cache re-list; it then sends its watchers the
//!   difference (ADDED/MODIFIED at the objects' versions, DELETED at the
//!   list's revision) and answers 410 only to watches resuming from inside
//!   the revisions it never saw.
//! - Fan-out: each event is encoded once; every watcher whose index bucket
//!   (namespace, `spec.nodeName`, or all) can match gets the same `Bytes`
//!   in its outbox, and consumers are woken after the cache's lock is
//!   released. The HTTP side drains a whole outbox into one write. A
//!   watcher's outbox is bounded, and a watcher whose outbox is full is
//!   closed on the spot (its client re-lists), so no watcher delays another
//!   or the cache.

mod reflector;
mod store;
mod watchers;

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
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
use watchers::{Outbox, Watcher, Watchers};

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
    /// Watchers with new lines are woken at most this often, so a busy
    /// watcher's lines go out in one write per interval instead of one per
    /// event; it bounds the latency it adds. Zero (the default): woken at
    /// once; under load, what queued while a watcher waited for a CPU
    /// still goes out in one write.
    pub flush_interval: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            window: 10_000,
            watcher_buffer: 1_000,
            bookmark_interval: Duration::from_secs(10),
            fresh_wait: Duration::from_secs(3),
            flush_interval: Duration::ZERO,
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
    /// The same object as ADDED / DELETED, for watchers whose filter it
    /// starts / stops matching: encoded once, on first use.
    as_added: OnceLock<Bytes>,
    as_deleted: OnceLock<Bytes>,
}

impl Event {
    fn new(
        revision: i64,
        kind: EventType,
        object: Arc<Object>,
        prev: Option<Arc<Object>>,
    ) -> Event {
        Event {
            revision,
            kind,
            line: event_line(kind.as_str(), &object.json),
            object,
            prev,
            as_added: OnceLock::new(),
            as_deleted: OnceLock::new(),
        }
    }
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

/// Everything the reflector changes and readers look at, under one lock so
/// that "snapshot + subscribe" is atomic with respect to new events.
struct State {
    store: Store,
    events: VecDeque<Arc<Event>>,
    /// Every event with a revision above this one is in `events`.
    window_start: i64,
    /// Revision ranges `(from, to)` the cache skipped in a re-list after a
    /// compaction: a watch from strictly inside one cannot be served.
    gaps: Vec<(i64, i64)>,
    /// The etcd revision the cache reflects.
    revision: i64,
    /// Whether the first list has completed.
    ready: bool,
    watchers: Watchers,
    /// Totals for metrics (see [`WatchCache::counters`]).
    counters: WatchCounters,
}

/// A cache's event and watcher totals since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchCounters {
    /// Events the cache took from etcd.
    pub events_received: u64,
    /// Events queued to watchers (one per watcher an event went to).
    pub events_dispatched: u64,
    /// Watchers closed because they could not keep up.
    pub terminated_watchers: u64,
}

/// A change to apply: the object's new version, or a deletion.
enum Change {
    Put(Object),
    Delete(String),
}

impl State {
    /// Applies one change at `revision` and queues it for the watchers it
    /// concerns; consumers to wake go to `wake`.
    fn apply(
        &mut self,
        revision: i64,
        change: Change,
        window: usize,
        wake: &mut Vec<Waker>,
    ) -> Result<()> {
        let event = match change {
            Change::Put(object) => {
                if self
                    .store
                    .get(&object.key)
                    .is_some_and(|o| o.resource_version >= object.resource_version)
                {
                    // Already seen (a re-created watch may overlap).
                    return Ok(());
                }
                let object = Arc::new(object);
                let prev = self.store.insert(object.clone());
                let kind = if prev.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                Event::new(revision, kind, object, prev)
            }
            Change::Delete(key) => {
                let Some(prev) = self.store.remove(&key) else {
                    self.revision = self.revision.max(revision);
                    return Ok(());
                };
                let object = Arc::new(prev.at_revision(revision)?);
                Event::new(revision, EventType::Deleted, object, Some(prev))
            }
        };
        let event = Arc::new(event);
        self.counters.events_received += 1;
        self.events.push_back(event.clone());
        while self.events.len() > window.max(1) {
            if let Some(old) = self.events.pop_front() {
                self.window_start = old.revision;
            }
        }
        let window_start = self.window_start;
        self.gaps.retain(|(_, to)| *to > window_start);
        self.revision = self.revision.max(revision);
        let mut closed = Vec::new();
        for (id, w) in self
            .watchers
            .candidates(&event.object, event.prev.as_deref())
        {
            if event.revision <= w.after {
                continue;
            }
            if let Some(line) = line_for(&event, &w.filter) {
                self.counters.events_dispatched += 1;
                match w.outbox.push(line) {
                    Ok(waker) => wake.extend(waker),
                    Err(waker) => {
                        wake.extend(waker);
                        closed.push(*id);
                    }
                }
            }
        }
        self.counters.terminated_watchers += closed.len() as u64;
        for id in closed {
            self.watchers.remove(id);
        }
        Ok(())
    }
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
    flusher: Arc<Flusher>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.flusher.close();
    }
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
                gaps: Vec::new(),
                revision: 0,
                ready: false,
                watchers: Watchers::default(),
                counters: WatchCounters::default(),
            }),
            revision: watch::channel(-1).0,
            _alive: alive_tx,
            flusher: Arc::default(),
        });
        if !inner.config.flush_interval.is_zero() {
            tokio::spawn(inner.flusher.clone().run(inner.config.flush_interval));
        }
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
    /// ends when the watcher is closed (too slow, or the cache had to start
    /// over).
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
                if let Some((_, to)) = state.gaps.iter().find(|(from, to)| *from < rv && rv < *to) {
                    return Err(Error::Expired(format!(
                        "too old resource version: {rv} (the cache re-listed at {to} after a compaction)"
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
        let outbox = Arc::new(Outbox::new(self.inner.config.watcher_buffer));
        let id = state.watchers.insert(Watcher {
            filter,
            after,
            bookmarks,
            outbox: outbox.clone(),
        });
        Ok(WatchStream {
            initial: initial.into(),
            outbox,
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

    /// The objects, watchers and event totals, read together (metrics).
    pub fn stats(&self) -> (usize, usize, WatchCounters) {
        let state = self.inner.state.read();
        (state.store.len(), state.watchers.len(), state.counters)
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
        (_, false, true) => Some(
            e.as_added
                .get_or_init(|| event_line("ADDED", &e.object.json))
                .clone(),
        ),
        (_, true, false) => Some(
            e.as_deleted
                .get_or_init(|| event_line("DELETED", &e.object.json))
                .clone(),
        ),
        (_, false, false) => None,
    }
}

fn wake_all(wakers: Vec<Waker>) {
    for w in wakers {
        w.wake();
    }
}

/// Wakes watchers in batches, `flush_interval` after the first of them
/// has something to send.
#[derive(Default)]
struct Flusher {
    pending: parking_lot::Mutex<Vec<Waker>>,
    notify: tokio::sync::Notify,
    closed: std::sync::atomic::AtomicBool,
}

impl Flusher {
    async fn run(self: Arc<Flusher>, interval: Duration) {
        use std::sync::atomic::Ordering;
        while !self.closed.load(Ordering::Acquire) {
            self.notify.notified().await;
            tokio::time::sleep(interval).await;
            let wakers = std::mem::take(&mut *self.pending.lock());
            wake_all(wakers);
        }
    }

    fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_one();
        wake_all(std::mem::take(&mut *self.pending.lock()));
    }
}

impl Inner {
    /// Takes in a (re-)list of every object at `revision`. The first one
    /// fills the cache. Later ones (after a compaction made the etcd watch
    /// unresumable) apply the difference as events, so open watchers stay
    /// correct, and mark the revisions in between as unservable. A list
    /// older than the cache (the storage went back in time) starts over:
    /// window emptied, watchers closed (their clients re-list).
    fn relist(&self, objects: Vec<Object>, revision: i64) {
        let mut state = self.state.write();
        let mut wake = Vec::new();
        if state.ready && revision >= state.revision {
            let old = state.revision;
            let mut listed: HashMap<String, Object> =
                objects.into_iter().map(|o| (o.key.clone(), o)).collect();
            let mut puts: Vec<Object> = Vec::new();
            let mut deletes: Vec<String> = Vec::new();
            for (key, have) in state.store.iter() {
                match listed.remove(key) {
                    Some(o) if o.resource_version != have.resource_version => puts.push(o),
                    Some(_) => {}
                    None => deletes.push(key.clone()),
                }
            }
            puts.extend(listed.into_values());
            puts.sort_by_key(|o| o.resource_version);
            let window = self.config.window;
            for o in puts {
                let rv = o.resource_version;
                if let Err(e) = state.apply(rv, Change::Put(o), window, &mut wake) {
                    tracing::error!(error = %e, "re-list: skipping an object");
                }
            }
            for key in deletes {
                if let Err(e) = state.apply(revision, Change::Delete(key), window, &mut wake) {
                    tracing::error!(error = %e, "re-list: skipping a deletion");
                }
            }
            if revision > old {
                state.gaps.push((old, revision));
            }
            state.revision = revision;
        } else {
            let mut store = Store::default();
            for o in objects {
                store.insert(Arc::new(o));
            }
            state.store = store;
            state.events.clear();
            state.gaps.clear();
            state.window_start = revision;
            state.revision = revision;
            state.ready = true;
            state.watchers.clear();
        }
        drop(state);
        self.wake(wake);
        self.revision.send_replace(revision);
    }

    /// Applies a batch of etcd events (one watch response) and fans them out.
    fn apply(&self, events: impl IntoIterator<Item = (i64, String, Option<(Vec<u8>, i64)>)>) {
        let mut wake = Vec::new();
        {
            let mut state = self.state.write();
            for (revision, key, put) in events {
                let change = match put {
                    Some((value, mod_rev)) => {
                        match Object::decode_as(self.resource, key.as_bytes(), &value, mod_rev) {
                            Ok(o) => Change::Put(o),
                            Err(e) => {
                                tracing::error!(error = %e, "skipping an undecodable object");
                                continue;
                            }
                        }
                    }
                    None => Change::Delete(key),
                };
                if let Err(e) = state.apply(revision, change, self.config.window, &mut wake) {
                    tracing::error!(error = %e, "skipping an event");
                }
            }
        }
        self.wake(wake);
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

    /// Wakes watchers now, or on the next flush.
    fn wake(&self, wakers: Vec<Waker>) {
        if wakers.is_empty() {
            return;
        }
        if self.config.flush_interval.is_zero() {
            wake_all(wakers);
        } else {
            self.flusher.pending.lock().extend(wakers);
            self.flusher.notify.notify_one();
        }
    }

    /// The revision the etcd watch must resume after.
    fn cache_revision(&self) -> i64 {
        self.state.read().revision
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
        let mut wake = Vec::new();
        {
            let mut state = self.state.write();
            if !state.ready {
                return;
            }
            let line = bookmark_line(self.resource, state.revision, false);
            let mut closed = Vec::new();
            for (id, w) in state.watchers.iter() {
                if !w.bookmarks {
                    continue;
                }
                match w.outbox.push(line.clone()) {
                    Ok(waker) => wake.extend(waker),
                    Err(waker) => {
                        wake.extend(waker);
                        closed.push(*id);
                    }
                }
            }
            for id in closed {
                state.watchers.remove(id);
            }
        }
        self.wake(wake);
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
            let removed = inner.state.write().watchers.remove(self.id);
            drop(removed);
        }
    }
}

/// A client's watch: the replayed (or initial) lines, then live ones. As a
/// [`Stream`] it yields one line at a time; [`WatchStream::batched`] yields
/// everything ready at once.
pub struct WatchStream {
    initial: VecDeque<Bytes>,
    outbox: Arc<Outbox>,
    _guard: WatcherGuard,
}

/// The most bytes of replayed lines joined into one chunk.
const MAX_INITIAL_CHUNK: usize = 1 << 20;

impl WatchStream {
    /// The same lines, but each item is everything that was ready when it
    /// was polled, joined: one write per wake-up instead of one per event.
    pub fn batched(self) -> WatchBatches {
        WatchBatches(self)
    }
}

impl Stream for WatchStream {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(line) = self.initial.pop_front() {
            return Poll::Ready(Some(line));
        }
        self.outbox.poll_one(cx)
    }
}

/// See [`WatchStream::batched`].
pub struct WatchBatches(WatchStream);

impl Stream for WatchBatches {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let initial = &mut self.0.initial;
        if !initial.is_empty() {
            let mut size = 0;
            let n = initial
                .iter()
                .take_while(|l| {
                    size += l.len();
                    size <= MAX_INITIAL_CHUNK
                })
                .count()
                .max(1);
            let chunk = watchers::concat(initial.range(..n));
            initial.drain(..n);
            return Poll::Ready(Some(chunk));
        }
        self.0.outbox.poll_all(cx)
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
        let e = Event::new(2, EventType::Modified, now, Some(prev));
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
