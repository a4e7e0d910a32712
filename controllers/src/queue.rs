//! A work queue with client-go's guarantees: a key queued many times is
//! processed once; a key is never processed by two workers at once (added
//! while in flight, it is processed again after); failures back off per
//! key; work can be scheduled for later (one pending timer per key, the
//! earliest); a sync that panics is logged and retried with back-off, and
//! its worker carries on.
//!
//! Each queue has a name (client-go's `workqueue_*{name}` label): given to
//! [`Queue::named`], or by [`Queue::new`] the controller's own — the file
//! that created the queue (`deployment/mod.rs` → `deployment`). Every
//! queue's depth and adds are process-wide series ([`register_metrics`]):
//! two counters per queue, no lock of their own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ballast_metrics::prometheus_client::metrics::counter::Counter;
use ballast_metrics::prometheus_client::metrics::family::Family;
use ballast_metrics::prometheus_client::metrics::gauge::Gauge;
use ballast_metrics::prometheus_client::registry::Registry;
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

struct State<T> {
    queue: VecDeque<T>,
    /// Keys waiting to be processed (in `queue`, or re-added while processing).
    dirty: HashSet<T>,
    /// Keys a worker holds right now; re-adding one parks it in `dirty`.
    processing: HashSet<T>,
    failures: HashMap<T, u32>,
    /// Keys with a delayed add pending: its deadline and its timer task.
    delayed: HashMap<T, (Instant, AbortHandle)>,
}

/// A deduplicating work queue of keys.
pub struct Queue<T> {
    state: Arc<Mutex<State<T>>>,
    notify: Arc<Notify>,
    metrics: QueueMetrics,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            state: self.state.clone(),
            notify: self.notify.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<T> Default for Queue<T> {
    #[track_caller]
    fn default() -> Self {
        Queue::named(&caller_name(std::panic::Location::caller().file()))
    }
}

type NameLabel = [(&'static str, String); 1];

/// client-go's workqueue series, shared by every queue of the process.
struct WorkqueueFamilies {
    depth: Family<NameLabel, Gauge>,
    adds: Family<NameLabel, Counter>,
}

fn families() -> &'static WorkqueueFamilies {
    static FAMILIES: OnceLock<WorkqueueFamilies> = OnceLock::new();
    FAMILIES.get_or_init(|| WorkqueueFamilies {
        depth: Family::default(),
        adds: Family::default(),
    })
}

/// Registers `workqueue_depth` and `workqueue_adds_total` of every queue
/// of this process in `registry`.
pub fn register_metrics(registry: &mut Registry) {
    let f = families();
    registry.register(
        "workqueue_depth",
        "Current depth of workqueue",
        f.depth.clone(),
    );
    registry.register(
        "workqueue_adds",
        "Total number of adds handled by workqueue",
        f.adds.clone(),
    );
}

/// One queue's handles on its series.
#[derive(Clone)]
struct QueueMetrics {
    depth: Gauge,
    adds: Counter,
}

/// The controller a source file holds: its stem, or its directory's name
/// for a `mod.rs`.
fn caller_name(file: &str) -> String {
    let path = std::path::Path::new(file);
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("queue");
    if stem == "mod" {
        if let Some(dir) = path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|s| s.to_str())
        {
            return dir.to_string();
        }
    }
    stem.to_string()
}

impl<T> Queue<T> {
    /// A new, empty queue whose metrics carry `name`.
    pub fn named(name: &str) -> Self {
        let label = [("name", name.to_string())];
        let f = families();
        Queue {
            state: Arc::new(Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
                delayed: HashMap::new(),
            })),
            notify: Arc::new(Notify::new()),
            metrics: QueueMetrics {
                depth: f.depth.get_or_create_owned(&label),
                adds: f.adds.get_or_create_owned(&label),
            },
        }
    }
}

/// What a sync asks of the queue when it succeeds.
pub type Requeue = Option<Duration>;

impl<T: Hash + Eq + Clone + Send + Sync + 'static> Queue<T> {
    /// A new, empty queue named after the file that creates it (see the
    /// module doc).
    #[track_caller]
    pub fn new() -> Self {
        Queue::named(&caller_name(std::panic::Location::caller().file()))
    }

    /// Queues `item` unless it is already waiting.
    pub fn add(&self, item: T) {
        let mut s = self.state.lock();
        if !s.dirty.insert(item.clone()) {
            return;
        }
        self.metrics.adds.inc();
        if s.processing.contains(&item) {
            return;
        }
        s.queue.push_back(item);
        self.metrics.depth.inc();
        drop(s);
        self.notify.notify_one();
    }

    /// Queues `item` after `delay`. A key has at most one delayed add
    /// pending, the earliest: a later deadline is ignored, an earlier one
    /// replaces it.
    pub fn add_after(&self, item: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(item);
        }
        let deadline = Instant::now() + delay;
        let mut s = self.state.lock();
        if let Some((pending, timer)) = s.delayed.get(&item) {
            if *pending <= deadline {
                return;
            }
            timer.abort();
        }
        let q = self.clone();
        let key = item.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            let due = {
                let mut s = q.state.lock();
                let ours = s.delayed.get(&key).is_some_and(|(d, _)| *d == deadline);
                if ours {
                    s.delayed.remove(&key);
                }
                ours
            };
            if due {
                q.add(key);
            }
        })
        .abort_handle();
        s.delayed.insert(item, (deadline, timer));
    }

    /// Queues `item` after a back-off that doubles with each failure
    /// (5 ms to 60 s).
    pub fn add_rate_limited(&self, item: T) {
        let n = {
            let mut s = self.state.lock();
            let n = s.failures.entry(item.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let delay =
            Duration::from_millis(5u64.saturating_mul(1 << n.min(14))).min(Duration::from_secs(60));
        self.add_after(item, delay);
    }

    /// Forgets `item`'s failures.
    pub fn forget(&self, item: &T) {
        self.state.lock().failures.remove(item);
    }

    /// Queued keys (for tests and metrics).
    pub fn len(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys with a delayed add pending (for tests and metrics).
    pub fn delayed_len(&self) -> usize {
        self.state.lock().delayed.len()
    }

    async fn get(&self) -> T {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.state.lock();
                if let Some(item) = s.queue.pop_front() {
                    self.metrics.depth.dec();
                    s.dirty.remove(&item);
                    s.processing.insert(item.clone());
                    let more = !s.queue.is_empty();
                    drop(s);
                    if more {
                        self.notify.notify_one();
                    }
                    return item;
                }
            }
            notified.await;
        }
    }

    fn done(&self, item: &T) {
        let mut s = self.state.lock();
        s.processing.remove(item);
        if s.dirty.contains(item) {
            s.queue.push_back(item.clone());
            self.metrics.depth.inc();
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Runs `workers` tasks that process keys with `sync` forever: an error
    /// re-queues the key with back-off, `Ok(Some(d))` re-queues it after `d`;
    /// a panic in `sync` is logged and treated as an error (the worker lives).
    pub async fn run<F, Fut, E>(self, workers: usize, sync: F)
    where
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Requeue, E>> + Send,
        E: std::fmt::Display,
        T: std::fmt::Debug,
    {
        let sync = Arc::new(sync);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers.max(1) {
            let q = self.clone();
            let sync = sync.clone();
            tasks.spawn(async move {
                loop {
                    let item = q.get().await;
                    let attempt = AssertUnwindSafe(async { sync(item.clone()).await });
                    match attempt.catch_unwind().await {
                        Err(panic) => {
                            let message = panic
                                .downcast_ref::<&str>()
                                .map(|m| m.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_default();
                            tracing::error!(?item, panic = %message, "sync panicked; retrying");
                            q.add_rate_limited(item.clone());
                        }
                        Ok(Ok(requeue)) => {
                            q.forget(&item);
                            if let Some(d) = requeue {
                                q.add_after(item.clone(), d);
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(?item, error = %e, "sync failed; retrying");
                            q.add_rate_limited(item.clone());
                        }
                    }
                    q.done(&item);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_key_added_many_times_is_processed_once() {
        let q: Queue<u32> = Queue::new();
        for _ in 0..10 {
            q.add(1);
        }
        q.add(2);
        assert_eq!(q.len(), 2);
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        let task = tokio::spawn(q.clone().run(2, move |_k| {
            let s = s.clone();
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(None)
            }
        }));
        for _ in 0..200 {
            if seen.load(Ordering::SeqCst) >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        task.abort();
    }

    #[tokio::test]
    async fn failures_are_retried() {
        let q: Queue<u32> = Queue::new();
        q.add(7);
        let tries = Arc::new(AtomicUsize::new(0));
        let t = tries.clone();
        let task = tokio::spawn(q.clone().run(1, move |_k| {
            let t = t.clone();
            async move {
                if t.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err("not yet".to_string())
                } else {
                    Ok(None)
                }
            }
        }));
        for _ in 0..400 {
            if tries.load(Ordering::SeqCst) >= 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(tries.load(Ordering::SeqCst), 4);
        task.abort();
    }

    /// Polls `f` every 5 ms for up to 10 s.
    async fn until(mut f: impl FnMut() -> bool) -> bool {
        for _ in 0..2000 {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_panicking_sync_is_retried_and_the_worker_lives_on() {
        let q: Queue<u32> = Queue::new();
        q.add(1);
        let tries = Arc::new(AtomicUsize::new(0));
        let t = tries.clone();
        let task = tokio::spawn(q.clone().run(1, move |k| {
            let t = t.clone();
            async move {
                if k == 1 && t.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom");
                }
                if k == 2 {
                    t.fetch_add(100, Ordering::SeqCst);
                }
                Ok::<_, String>(None)
            }
        }));
        assert!(
            until(|| tries.load(Ordering::SeqCst) >= 3).await,
            "key 1 retried after its panics"
        );
        q.add(2);
        assert!(
            until(|| tries.load(Ordering::SeqCst) >= 103).await,
            "the single worker still runs"
        );
        assert!(!task.is_finished());
        assert!(q.state.lock().processing.is_empty());
        task.abort();
    }

    #[tokio::test]
    async fn depth_and_adds_are_counted_under_the_queues_name() {
        let q: Queue<u32> = Queue::named("metrics-test");
        for k in [1, 1, 2] {
            q.add(k);
        }
        let mut registry = Registry::default();
        register_metrics(&mut registry);
        let text = ballast_metrics::encode(&registry);
        for line in [
            "workqueue_depth{name=\"metrics-test\"} 2",
            "workqueue_adds_total{name=\"metrics-test\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        let _ = q.get().await;
        assert_eq!(q.metrics.depth.get(), 1);
        let default: Queue<u32> = Queue::new();
        default.add(1);
        let text = ballast_metrics::encode(&registry);
        assert!(
            text.contains("workqueue_adds_total{name=\"queue\"}"),
            "{text}"
        );
        assert_eq!(
            caller_name("controllers/src/deployment/mod.rs"),
            "deployment"
        );
        assert_eq!(caller_name("controllers/src/gc.rs"), "gc");
    }

    #[tokio::test]
    async fn delayed_adds_keep_one_timer_per_key_the_earliest() {
        let q: Queue<u32> = Queue::new();
        for _ in 0..100 {
            q.add_after(1, Duration::from_millis(50));
        }
        q.add_after(2, Duration::from_secs(3600));
        q.add_after(2, Duration::from_millis(30));
        q.add_after(2, Duration::from_secs(7200));
        assert_eq!(q.delayed_len(), 2);
        assert!(until(|| q.len() == 2).await, "both keys come due");
        assert_eq!(q.delayed_len(), 0);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(q.len(), 2, "no duplicate adds from replaced timers");
    }
}
