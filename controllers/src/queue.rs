//! A work queue with client-go's guarantees: a key queued many times is
//! processed once; a key is never processed by two workers at once (added
//! while in flight, it is processed again after); failures back off per
//! key; work can be scheduled for later.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

struct State<T> {
    queue: VecDeque<T>,
    /// Keys waiting to be processed (in `queue`, or re-added while processing).
    dirty: HashSet<T>,
    /// Keys a worker holds right now; re-adding one parks it in `dirty`.
    processing: HashSet<T>,
    failures: HashMap<T, u32>,
}

/// A deduplicating work queue of keys.
pub struct Queue<T> {
    state: Arc<Mutex<State<T>>>,
    notify: Arc<Notify>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            state: self.state.clone(),
            notify: self.notify.clone(),
        }
    }
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            state: Arc::new(Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
            })),
            notify: Arc::new(Notify::new()),
        }
    }
}

/// What a sync asks of the queue when it succeeds.
pub type Requeue = Option<Duration>;

impl<T: Hash + Eq + Clone + Send + Sync + 'static> Queue<T> {
    /// A new, empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `item` unless it is already waiting.
    pub fn add(&self, item: T) {
        let mut s = self.state.lock();
        if !s.dirty.insert(item.clone()) {
            return;
        }
        if s.processing.contains(&item) {
            return;
        }
        s.queue.push_back(item);
        drop(s);
        self.notify.notify_one();
    }

    /// Queues `item` after `delay`.
    pub fn add_after(&self, item: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(item);
        }
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(item);
        });
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

    async fn get(&self) -> T {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.state.lock();
                if let Some(item) = s.queue.pop_front() {
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
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Runs `workers` tasks that process keys with `sync` forever: an error
    /// re-queues the key with back-off, `Ok(Some(d))` re-queues it after `d`.
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
                    match sync(item.clone()).await {
                        Ok(requeue) => {
                            q.forget(&item);
                            if let Some(d) = requeue {
                                q.add_after(item.clone(), d);
                            }
                        }
                        Err(e) => {
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
}
