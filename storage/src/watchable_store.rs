//! Watches: the store wrapped so every committed revision reaches the
//! watchers of its keys.
//!
//! Watchers live on [`WatchStream`]s (one per client stream); each stream has
//! one queue shared by its watchers, so an idle watcher costs a small struct,
//! not a channel. The queue is bounded in responses and in bytes
//! ([`STREAM_QUEUE_BYTES`]): a response can carry a thousand revisions, so a
//! bound in responses alone let a few slow streams hold gigabytes. A watcher
//! is in one of three states:
//!
//! - **synced**: caught up; fed directly by [`WatchableStore::apply`] after
//!   each batch (one response per watcher per batch, revisions whole, in order).
//! - **unsynced**: behind (it started in the past, or was parked); a
//!   background thread catches it up from the engine a bounded number of
//!   revisions at a time, then moves it to synced.
//! - **victim**: its stream's queue was full; it holds the one response
//!   that did not fit and is retried every few milliseconds, then caught up
//!   as unsynced. A stalled consumer thus never blocks writes or other
//!   watchers, and costs at most one pending response per watcher.
//!
//! Each watcher remembers `next_rev`, the first revision it has not been
//! sent; everything below was delivered exactly once. That single number is
//! what rules out gaps and duplicates across the three states.

use std::collections::{HashMap, HashSet};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tokio::sync::mpsc::{
    self,
    error::{TryRecvError, TrySendError},
};

use crate::error::{Result, StorageError};
use crate::kv::{Event, EventKind};
use crate::kv_store::{KvStore, RevisionEvents};
use crate::request::{Applied, WriteOp};
use crate::watcher_group::{IdMap, WatcherGroup, WatcherKey};

/// Watch id meaning "every watcher of the stream" in progress responses.
pub const ALL_WATCHERS: i64 = -1;

/// Bytes of events (by [`Event::size`]) a stream's queue may hold. A
/// response larger than this still goes through when the queue is empty.
pub const STREAM_QUEUE_BYTES: usize = 4 << 20;

/// Revisions read per unsynced watcher per catch-up pass (etcd's
/// watchBatchMaxRevs)...
const CATCH_UP_REVISIONS: usize = 1000;
/// ... and bytes of events: a catch-up response never holds more than about
/// this much.
const CATCH_UP_BYTES: usize = 1 << 20;
/// Unsynced watchers caught up per pass (etcd's maxWatchersPerSync).
const WATCHERS_PER_SYNC: usize = 512;

/// What to watch (etcd's `WatchCreateRequest`, minus the wire details).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchRequest {
    /// 0 lets the stream choose the next free id.
    pub watch_id: i64,
    pub key: Vec<u8>,
    /// Empty for one key, `"\0"` for every key from `key` on.
    pub range_end: Vec<u8>,
    /// First revision to deliver; 0 for "from the next write".
    pub start_revision: i64,
    pub prev_kv: bool,
    /// Drop put events.
    pub no_put: bool,
    /// Drop delete events.
    pub no_delete: bool,
}

/// One message to a stream. Events are shared (`Arc`), never copied per
/// watcher; an empty `events` with `canceled == false` is a progress report.
#[derive(Debug, Clone)]
pub struct WatchResponse {
    pub watch_id: i64,
    /// The store's revision when this was sent (etcd's header revision).
    pub revision: i64,
    pub events: Arc<[Event]>,
    /// Set with `canceled` when the watcher's start was compacted away.
    pub compact_revision: i64,
    pub canceled: bool,
    pub cancel_reason: String,
    /// What the stream's queue counted for it (released when it is received).
    queued_bytes: usize,
}

impl WatchResponse {
    fn new(watch_id: i64, revision: i64, events: Arc<[Event]>) -> Self {
        WatchResponse {
            watch_id,
            revision,
            events,
            compact_revision: 0,
            canceled: false,
            cancel_reason: String::new(),
            queued_bytes: 0,
        }
    }

    /// Its size in a stream's queue: the events, and a little for the rest.
    fn size(&self) -> usize {
        64 + self.events.iter().map(Event::size).sum::<usize>()
    }
}

/// The sending half of a stream's queue, bounded in responses by the
/// channel and in bytes by `queued` (shared with the [`WatchReceiver`]).
/// Every send happens under the watchers' lock, so check-then-add is exact.
#[derive(Clone)]
struct QueueSender {
    tx: mpsc::Sender<WatchResponse>,
    queued: Arc<AtomicUsize>,
}

impl QueueSender {
    fn try_send(&self, mut resp: WatchResponse) -> Result<(), TrySendError<WatchResponse>> {
        let size = resp.size();
        let queued = self.queued.load(Ordering::Acquire);
        if queued != 0 && queued + size > STREAM_QUEUE_BYTES {
            return Err(TrySendError::Full(resp));
        }
        resp.queued_bytes = size;
        self.queued.fetch_add(size, Ordering::AcqRel);
        self.tx.try_send(resp).inspect_err(|_| {
            self.queued.fetch_sub(size, Ordering::AcqRel);
        })
    }

    /// Whether a response could be queued now (catch-up skips full streams
    /// without reading).
    fn has_room(&self) -> bool {
        self.tx.capacity() > 0 && self.queued.load(Ordering::Acquire) < STREAM_QUEUE_BYTES
    }
}

/// The receiving half of a stream's queue (see [`WatchableStore::watch_stream`]).
pub struct WatchReceiver {
    rx: mpsc::Receiver<WatchResponse>,
    queued: Arc<AtomicUsize>,
}

impl WatchReceiver {
    /// The next response; `None` once the stream is closed.
    pub async fn recv(&mut self) -> Option<WatchResponse> {
        let resp = self.rx.recv().await?;
        Some(self.release(resp))
    }

    /// The next response if one is queued.
    pub fn try_recv(&mut self) -> std::result::Result<WatchResponse, TryRecvError> {
        self.rx.try_recv().map(|r| self.release(r))
    }

    /// Bytes queued for this stream now.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    fn release(&self, mut resp: WatchResponse) -> WatchResponse {
        let size = std::mem::take(&mut resp.queued_bytes);
        self.queued.fetch_sub(size, Ordering::AcqRel);
        resp
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Synced,
    Unsynced,
    Victim,
}

/// One watcher: 48 bytes plus its key, as there may be hundreds of
/// thousands of idle ones.
struct Watcher {
    /// The key, then the range end (empty for a single key): one
    /// allocation, which the synced group shares for a single key.
    span: Arc<[u8]>,
    key_len: u32,
    stream: u64,
    id: i64,
    /// First revision not yet sent to this watcher.
    next_rev: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    state: State,
}

impl Watcher {
    fn key(&self) -> &[u8] {
        &self.span[..self.key_len as usize]
    }

    fn range_end(&self) -> &[u8] {
        &self.span[self.key_len as usize..]
    }

    fn wants(&self, ev: &Event) -> bool {
        ev.kv.mod_revision >= self.next_rev
            && !(self.no_put && ev.kind == EventKind::Put)
            && !(self.no_delete && ev.kind == EventKind::Delete)
    }
}

struct Stream {
    tx: QueueSender,
    ids: IdMap<i64, WatcherKey>,
    next_id: i64,
    /// A progress request waiting for every watcher to be synced.
    progress_pending: bool,
}

#[derive(Default)]
struct Watchers {
    next_key: WatcherKey,
    next_stream: u64,
    all: IdMap<WatcherKey, Watcher>,
    synced: WatcherGroup,
    unsynced: Vec<WatcherKey>,
    victims: Vec<(WatcherKey, WatchResponse)>,
    streams: IdMap<u64, Stream>,
}

impl Watchers {
    fn remove(&mut self, wk: WatcherKey) {
        if let Some(w) = self.all.remove(&wk) {
            match w.state {
                State::Synced => self.synced.remove(wk, w.key(), w.range_end()),
                State::Unsynced => self.unsynced.retain(|k| *k != wk),
                State::Victim => self.victims.retain(|(k, _)| *k != wk),
            }
            if let Some(s) = self.streams.get_mut(&w.stream) {
                s.ids.remove(&w.id);
            }
        }
    }

    fn set_synced(&mut self, wk: WatcherKey) {
        let w = self.all.get_mut(&wk).expect("known watcher");
        w.state = State::Synced;
        self.synced.insert(wk, &w.span, w.key_len as usize);
    }

    fn stream_synced(&self, stream: u64) -> bool {
        self.streams.get(&stream).is_none_or(|s| {
            s.ids
                .values()
                .all(|wk| self.all.get(wk).is_some_and(|w| w.state == State::Synced))
        })
    }
}

struct Inner {
    kv: KvStore,
    watchers: Mutex<Watchers>,
    /// Wakes the sync thread early (a watcher started in the past).
    wake: Condvar,
    wake_flag: Mutex<bool>,
    stop: AtomicBool,
}

/// The MVCC store with watches: what a storage member runs. Reads go
/// through `Deref` to [`KvStore`]; writes must go through [`Self::apply`]
/// so that watchers see them.
pub struct WatchableStore {
    inner: Arc<Inner>,
    syncer: Option<JoinHandle<()>>,
}

impl Deref for WatchableStore {
    type Target = KvStore;
    fn deref(&self) -> &KvStore {
        &self.inner.kv
    }
}

impl Drop for WatchableStore {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.kick();
        if let Some(t) = self.syncer.take() {
            let _ = t.join();
        }
    }
}

impl WatchableStore {
    pub fn new(kv: KvStore) -> Self {
        let inner = Arc::new(Inner {
            kv,
            watchers: Mutex::new(Watchers::default()),
            wake: Condvar::new(),
            wake_flag: Mutex::new(false),
            stop: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&inner);
        let syncer = std::thread::Builder::new()
            .name("ballast-watch-sync".into())
            .spawn(move || sync_loop(weak))
            .expect("spawn the watch sync thread");
        WatchableStore {
            inner,
            syncer: Some(syncer),
        }
    }

    /// Applies replicated writes (see [`KvStore::apply`]) and hands every
    /// new revision to the synced watchers. Returns one outcome per entry.
    pub fn apply(&self, entries: &[(u64, &WriteOp)]) -> Vec<Applied> {
        let outcome = self.inner.kv.apply(entries);
        if !outcome.revisions.is_empty() {
            self.inner.notify(outcome.revisions);
        }
        outcome.applied
    }

    /// Replaces the whole state with a snapshot image (see [`crate::snapshot`]).
    /// Every watcher is caught up again from its next revision, or cancelled
    /// if that was compacted away.
    /// The image is read twice from where `image` stands: once to verify
    /// it (nothing is touched if it is bad), once to install it; memory
    /// stays bounded whatever its size.
    pub fn restore<R: std::io::Read + std::io::Seek>(&self, image: &mut R) -> Result<()> {
        let io = |e: std::io::Error| StorageError::Engine(format!("snapshot i/o: {e}"));
        let start = image.stream_position().map_err(io)?;
        crate::snapshot::verify_image(&mut *image)?;
        image.seek(std::io::SeekFrom::Start(start)).map_err(io)?;
        // Held through the swap: a catch-up reading the engine half-restored
        // would skip events or cancel its watcher (etcd locks the same way).
        let mut guard = self.inner.watchers.lock();
        crate::snapshot::install(&self.inner.kv, image)?;
        let w = &mut *guard;
        for (wk, x) in &mut w.all {
            if x.state == State::Synced {
                x.state = State::Unsynced;
                w.synced.remove(*wk, x.key(), x.range_end());
                w.unsynced.push(*wk);
            }
        }
        drop(guard);
        self.inner.kick();
        Ok(())
    }

    /// Opens a stream whose watchers share one queue of at most `capacity`
    /// responses and [`STREAM_QUEUE_BYTES`] bytes.
    pub fn watch_stream(&self, capacity: usize) -> (WatchStream, WatchReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = (
            QueueSender {
                tx,
                queued: queued.clone(),
            },
            WatchReceiver { rx, queued },
        );
        let mut w = self.inner.watchers.lock();
        w.next_stream += 1;
        let id = w.next_stream;
        w.streams.insert(
            id,
            Stream {
                tx,
                ids: IdMap::default(),
                next_id: 0,
                progress_pending: false,
            },
        );
        (
            WatchStream {
                inner: self.inner.clone(),
                id,
            },
            rx,
        )
    }

    /// Watchers in total (synced, unsynced and parked).
    pub fn watcher_count(&self) -> usize {
        self.inner.watchers.lock().all.len()
    }

    /// Watchers waiting to be caught up or parked on a full stream.
    pub fn pending_watcher_count(&self) -> usize {
        let w = self.inner.watchers.lock();
        w.unsynced.len() + w.victims.len()
    }
}

/// A client's watch stream: creates and cancels watchers whose responses
/// arrive on the stream's one receiver. Dropping it cancels them all.
pub struct WatchStream {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let mut w = self.inner.watchers.lock();
        if let Some(s) = w.streams.remove(&self.id) {
            for wk in s.ids.into_values() {
                w.remove(wk);
            }
        }
    }
}

impl WatchStream {
    /// Starts a watcher; returns its id. Events from `start_revision` on
    /// are delivered; a start below the compacted revision gets a
    /// cancelation carrying the compacted revision.
    pub fn watch(&self, req: WatchRequest) -> Result<i64> {
        if req.key.is_empty() {
            return Err(StorageError::EmptyKey);
        }
        if !req.range_end.is_empty() && req.range_end != [0] && req.range_end < req.key {
            return Err(StorageError::InvalidRange);
        }
        let key_len = u32::try_from(req.key.len()).map_err(|_| StorageError::ValueTooLarge {
            size: req.key.len(),
            max: u32::MAX as usize,
        })?;
        let mut w = self.inner.watchers.lock();
        let current = self.inner.kv.current_revision();
        let stream = w
            .streams
            .get_mut(&self.id)
            .expect("stream open while its handle lives");
        let id = if req.watch_id != 0 {
            if req.watch_id < 0 || stream.ids.contains_key(&req.watch_id) {
                return Err(StorageError::WatchIdExists { id: req.watch_id });
            }
            req.watch_id
        } else {
            while stream.ids.contains_key(&stream.next_id) {
                stream.next_id += 1;
            }
            stream.next_id
        };
        w.next_key += 1;
        let wk = w.next_key;
        let synced = req.start_revision <= 0 || req.start_revision > current;
        let next_rev = if req.start_revision <= 0 {
            current + 1
        } else {
            req.start_revision
        };
        let watcher = Watcher {
            // Collected from a chain of slices: one allocation, exact size.
            span: req.key.iter().chain(&req.range_end).copied().collect(),
            key_len,
            stream: self.id,
            id,
            next_rev,
            prev_kv: req.prev_kv,
            no_put: req.no_put,
            no_delete: req.no_delete,
            state: State::Unsynced,
        };
        w.all.insert(wk, watcher);
        w.streams
            .get_mut(&self.id)
            .expect("checked")
            .ids
            .insert(id, wk);
        if synced {
            w.set_synced(wk);
        } else {
            w.unsynced.push(wk);
            drop(w);
            self.inner.kick();
        }
        Ok(id)
    }

    /// Cancels a watcher; false if the id is unknown on this stream.
    pub fn cancel(&self, watch_id: i64) -> bool {
        let mut w = self.inner.watchers.lock();
        let wk = w
            .streams
            .get(&self.id)
            .and_then(|s| s.ids.get(&watch_id).copied());
        match wk {
            Some(wk) => {
                w.remove(wk);
                true
            }
            None => false,
        }
    }

    /// Asks for a progress report: once every watcher of the stream is
    /// caught up, a response with watch id [`ALL_WATCHERS`], no events and
    /// the current revision (no event below it is still on its way).
    pub fn request_progress(&self) {
        let mut w = self.inner.watchers.lock();
        if w.stream_synced(self.id) {
            let current = self.inner.kv.current_revision();
            if let Some(s) = w.streams.get(&self.id) {
                let _ = s.tx.try_send(progress(ALL_WATCHERS, current));
            }
        } else if let Some(s) = w.streams.get_mut(&self.id) {
            s.progress_pending = true;
        }
    }

    /// A progress report for one watcher (etcd's progress_notify), sent only
    /// if it is caught up. Returns whether it was sent.
    pub fn notify_progress(&self, watch_id: i64) -> bool {
        let w = self.inner.watchers.lock();
        let Some(s) = w.streams.get(&self.id) else {
            return false;
        };
        let synced = s
            .ids
            .get(&watch_id)
            .and_then(|wk| w.all.get(wk))
            .is_some_and(|x| x.state == State::Synced);
        synced
            && s.tx
                .try_send(progress(watch_id, self.inner.kv.current_revision()))
                .is_ok()
    }
}

fn progress(watch_id: i64, revision: i64) -> WatchResponse {
    WatchResponse::new(watch_id, revision, Arc::from(Vec::new()))
}

/// Events shared by every watcher that takes all of them: one `Arc` for
/// those without prev_kv, one (built on first need) for those with it.
struct SharedEvents<'a> {
    kv: &'a KvStore,
    plain: Arc<[Event]>,
    with_prev: Option<Arc<[Event]>>,
}

impl SharedEvents<'_> {
    fn with_prev_kv(&self, ev: &Event) -> Event {
        let mut ev = ev.clone();
        ev.prev_kv = self.kv.prev_kv(&ev.kv.key, ev.kv.mod_revision);
        ev
    }

    fn all(&mut self, prev: bool) -> Arc<[Event]> {
        if !prev {
            return self.plain.clone();
        }
        if self.with_prev.is_none() {
            let evs: Vec<Event> = self.plain.iter().map(|e| self.with_prev_kv(e)).collect();
            self.with_prev = Some(Arc::from(evs));
        }
        self.with_prev.clone().expect("built above")
    }
}

impl Inner {
    fn kick(&self) {
        *self.wake_flag.lock() = true;
        self.wake.notify_one();
    }

    /// Sends a batch's revisions to the synced watchers of their keys.
    fn notify(&self, revisions: Vec<RevisionEvents>) {
        let current = self.kv.current_revision();
        let mut w = self.watchers.lock();
        if w.synced.is_empty() {
            return;
        }
        let events: Vec<Event> = revisions.into_iter().flat_map(|r| r.events).collect();
        // Per matched watcher, the indexes of the events it matches, in
        // order; `None` for all of them. A batch of one event (the common
        // case) needs no map, so no allocation per watcher.
        let mut keys = Vec::new();
        let matched: Vec<(WatcherKey, Option<Vec<u32>>)> = if events.len() == 1 {
            w.synced.matching(&events[0].kv.key, &mut keys);
            keys.into_iter().map(|wk| (wk, None)).collect()
        } else {
            let mut matched: IdMap<WatcherKey, Vec<u32>> = IdMap::default();
            for (i, ev) in events.iter().enumerate() {
                keys.clear();
                w.synced.matching(&ev.kv.key, &mut keys);
                for wk in &keys {
                    matched.entry(*wk).or_default().push(i as u32);
                }
            }
            let total = events.len();
            matched
                .into_iter()
                .map(|(wk, idxs)| (wk, (idxs.len() != total).then_some(idxs)))
                .collect()
        };
        let mut shared = SharedEvents {
            kv: &self.kv,
            plain: Arc::from(events),
            with_prev: None,
        };
        let mut parked = Vec::new();
        let Watchers { all, streams, .. } = &mut *w;
        // Watchers of one stream usually come together: remember the last.
        let mut stream: Option<(u64, &Stream)> = None;
        for (wk, idxs) in matched {
            let Some(watcher) = all.get_mut(&wk) else {
                continue;
            };
            let takes_all = idxs.is_none() && shared.plain.iter().all(|e| watcher.wants(e));
            let evs: Arc<[Event]> = if takes_all {
                shared.all(watcher.prev_kv)
            } else {
                let idxs = idxs.unwrap_or_else(|| (0..shared.plain.len() as u32).collect());
                let picked: Vec<Event> = idxs
                    .into_iter()
                    .map(|i| &shared.plain[i as usize])
                    .filter(|e| watcher.wants(e))
                    .map(|e| {
                        if watcher.prev_kv {
                            shared.with_prev_kv(e)
                        } else {
                            e.clone()
                        }
                    })
                    .collect();
                if picked.is_empty() {
                    continue;
                }
                Arc::from(picked)
            };
            let last = evs.last().expect("non-empty").kv.mod_revision;
            let resp = WatchResponse::new(watcher.id, current, evs);
            let tx = match stream {
                Some((id, s)) if id == watcher.stream => &s.tx,
                _ => match streams.get(&watcher.stream) {
                    Some(s) => {
                        stream = Some((watcher.stream, s));
                        &s.tx
                    }
                    None => continue,
                },
            };
            match tx.try_send(resp) {
                Ok(()) => watcher.next_rev = last + 1,
                Err(TrySendError::Full(resp)) => parked.push((wk, resp, last)),
                // The receiver is gone; the stream's handle will clean up.
                Err(TrySendError::Closed(_)) => {}
            }
        }
        let w = &mut *w;
        for (wk, resp, last) in parked {
            let x = w.all.get_mut(&wk).expect("present");
            x.state = State::Victim;
            x.next_rev = last + 1;
            w.synced.remove(wk, x.key(), x.range_end());
            w.victims.push((wk, resp));
        }
    }

    /// Retries parked responses; delivered victims go back to catching up.
    fn sync_victims(&self) {
        let mut w = self.watchers.lock();
        let victims = std::mem::take(&mut w.victims);
        for (wk, resp) in victims {
            let Some(x) = w.all.get(&wk) else { continue };
            let Some(stream) = w.streams.get(&x.stream) else {
                continue;
            };
            match stream.tx.try_send(resp) {
                Ok(()) => {
                    w.all.get_mut(&wk).expect("present").state = State::Unsynced;
                    w.unsynced.push(wk);
                }
                Err(TrySendError::Full(resp)) => w.victims.push((wk, resp)),
                Err(TrySendError::Closed(_)) => {}
            }
        }
    }

    /// Catches unsynced watchers up from the engine, a bounded amount each.
    /// Watchers parked together usually want the same revisions of the same
    /// keys: each distinct (keys, start) is read once per pass and shared,
    /// and a watcher whose stream is still full is skipped without a read.
    fn sync_unsynced(&self) {
        let mut w = self.watchers.lock();
        if w.unsynced.is_empty() {
            return;
        }
        let current = self.kv.current_revision();
        let batch: Vec<WatcherKey> = w.unsynced.iter().take(WATCHERS_PER_SYNC).copied().collect();
        let mut reads: HashMap<(Arc<[u8]>, u32, i64), Fetched> = HashMap::new();
        let mut done: HashSet<WatcherKey> = HashSet::new();
        for wk in batch {
            let Some(x) = w.all.get(&wk) else {
                done.insert(wk);
                continue;
            };
            let Some(tx) = w.streams.get(&x.stream).map(|s| s.tx.clone()) else {
                continue;
            };
            let (caught_up, next_rev) = if x.next_rev > current {
                (true, x.next_rev)
            } else {
                if !tx.has_room() {
                    continue;
                }
                let fetched = reads
                    .entry((x.span.clone(), x.key_len, x.next_rev))
                    .or_insert_with(|| {
                        self.kv
                            .events_between(
                                x.key(),
                                x.range_end(),
                                x.next_rev,
                                current,
                                CATCH_UP_REVISIONS,
                                CATCH_UP_BYTES,
                            )
                            .map(|revs| Arc::new(Read::new(revs)))
                    })
                    .clone();
                match self.catch_up(x, current, fetched) {
                    CatchUp::Compacted(compacted) => {
                        let sent = tx.try_send(WatchResponse {
                            compact_revision: compacted,
                            canceled: true,
                            cancel_reason: "mvcc: required revision has been compacted".into(),
                            ..WatchResponse::new(x.id, current, Arc::from(Vec::new()))
                        });
                        // A full stream gets the cancelation on a later pass:
                        // the client must learn that events were lost.
                        if !matches!(sent, Err(TrySendError::Full(_))) {
                            w.remove(wk);
                        }
                        continue;
                    }
                    CatchUp::Failed => continue,
                    CatchUp::Read {
                        response,
                        reached,
                        complete,
                    } => {
                        if let Some(resp) = response {
                            if tx.try_send(resp).is_err() {
                                // Full: try again next pass, from the same revision.
                                continue;
                            }
                        }
                        (complete, reached + 1)
                    }
                }
            };
            w.all.get_mut(&wk).expect("present").next_rev = next_rev;
            if caught_up {
                done.insert(wk);
                w.set_synced(wk);
            }
        }
        if !done.is_empty() {
            w.unsynced.retain(|k| !done.contains(k));
        }
        self.answer_pending_progress(&mut w, current);
    }

    /// What `x` has missed up to `current`, from a (shared) bounded read.
    /// A watcher that takes every event read shares the read's events.
    fn catch_up(&self, x: &Watcher, current: i64, fetched: Fetched) -> CatchUp {
        let read = match fetched {
            Err(StorageError::Compacted { compacted }) => return CatchUp::Compacted(compacted),
            Err(_) => return CatchUp::Failed,
            Ok(read) => read,
        };
        let complete = read.revisions < CATCH_UP_REVISIONS && read.bytes < CATCH_UP_BYTES;
        let reached = if complete {
            current
        } else {
            read.last_revision
        };
        let evs: Arc<[Event]> = if !x.prev_kv && !x.no_put && !x.no_delete {
            read.events.clone()
        } else {
            read.events
                .iter()
                .filter(|e| x.wants(e))
                .map(|e| {
                    let mut e = e.clone();
                    if x.prev_kv {
                        e.prev_kv = self.kv.prev_kv(&e.kv.key, e.kv.mod_revision);
                    }
                    e
                })
                .collect()
        };
        let response = (!evs.is_empty()).then(|| WatchResponse::new(x.id, current, evs));
        CatchUp::Read {
            response,
            reached,
            complete,
        }
    }

    fn answer_pending_progress(&self, w: &mut Watchers, current: i64) {
        let waiting: Vec<u64> = w
            .streams
            .iter()
            .filter(|(_, s)| s.progress_pending)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            if w.stream_synced(id) {
                let s = w.streams.get_mut(&id).expect("listed");
                if s.tx.try_send(progress(ALL_WATCHERS, current)).is_ok() {
                    s.progress_pending = false;
                }
            }
        }
    }
}

/// One bounded read of missed revisions, shared by the watchers that need it.
type Fetched = Result<Arc<Read>, StorageError>;

/// The events of a catch-up read, in revision order, in one shared slice.
struct Read {
    events: Arc<[Event]>,
    revisions: usize,
    /// The last revision read (0 if none).
    last_revision: i64,
    bytes: usize,
}

impl Read {
    fn new(revs: Vec<RevisionEvents>) -> Self {
        let revisions = revs.len();
        let last_revision = revs.last().map_or(0, |r| r.revision);
        let events: Arc<[Event]> = revs.into_iter().flat_map(|r| r.events).collect();
        let bytes = events.iter().map(Event::size).sum();
        Read {
            events,
            revisions,
            last_revision,
            bytes,
        }
    }
}

enum CatchUp {
    Compacted(i64),
    Failed,
    Read {
        response: Option<WatchResponse>,
        /// Every revision up to this one was read.
        reached: i64,
        /// `reached` is the current revision: the watcher is caught up.
        complete: bool,
    },
}

fn sync_loop(inner: Weak<Inner>) {
    loop {
        let Some(inner) = inner.upgrade() else { return };
        if inner.stop.load(Ordering::SeqCst) {
            return;
        }
        inner.sync_victims();
        inner.sync_unsynced();
        let busy = {
            let w = inner.watchers.lock();
            !w.victims.is_empty() || !w.unsynced.is_empty()
        };
        let wait = if busy {
            Duration::from_millis(10)
        } else {
            Duration::from_millis(100)
        };
        let mut flag = inner.wake_flag.lock();
        if !*flag {
            inner.wake.wait_for(&mut flag, wait);
        }
        *flag = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KeyValue;

    fn watcher(key: &[u8], range_end: &[u8]) -> Watcher {
        Watcher {
            span: Arc::from([key, range_end].concat()),
            key_len: key.len() as u32,
            stream: 1,
            id: 0,
            next_rev: 5,
            prev_kv: false,
            no_put: false,
            no_delete: true,
            state: State::Synced,
        }
    }

    fn put(key: &[u8], rev: i64) -> Event {
        Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.to_vec(),
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                value: b"v".to_vec(),
                lease: 0,
            },
            prev_kv: None,
        }
    }

    #[test]
    fn watcher_is_small() {
        assert!(std::mem::size_of::<Watcher>() <= 48);
    }

    #[test]
    fn watcher_splits_its_span() {
        let one = watcher(b"ab", b"");
        assert_eq!((one.key(), one.range_end()), (&b"ab"[..], &b""[..]));
        assert!(one.wants(&put(b"ab", 5)) && !one.wants(&put(b"ab", 4)));
        let mut del = put(b"ab", 6);
        del.kind = EventKind::Delete;
        assert!(!one.wants(&del));
        let range = watcher(b"a", b"c");
        assert_eq!((range.key(), range.range_end()), (&b"a"[..], &b"c"[..]));
        let open = watcher(b"m", &[0]);
        assert_eq!((open.key(), open.range_end()), (&b"m"[..], &[0][..]));
    }
}
