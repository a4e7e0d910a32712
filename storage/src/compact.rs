//! Physical compaction: removing old records from the engine in the
//! background, in bounded batches.
//!
//! Logical compaction (the index forgetting history, reads below the
//! revision failing) happens at once in the apply loop. Removing the records
//! is slow, so a background thread deletes them a batch at a time with a
//! pause between batches: writers are never stalled for long. The meta key
//! `compact_finished` marks the end; a store reopened before it resumes.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::engine::{Cf, KvEngine, WriteBatch};
use crate::kv_store::{StoreConfig, META_COMPACT_FINISHED};
use crate::revision::Revision;

struct Job {
    at: i64,
    keep: Vec<Revision>,
}

pub(crate) struct Compactor {
    jobs: Option<Sender<Job>>,
    /// Jobs scheduled and not finished; `wait_idle` polls it.
    pending: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Compactor {
    pub fn start(engine: Arc<dyn KvEngine>, config: &StoreConfig) -> Self {
        let (tx, rx) = channel::<Job>();
        let pending = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (batch, pause) = (config.compaction_batch.max(1), config.compaction_pause);
        let thread = {
            let (pending, stop) = (pending.clone(), stop.clone());
            std::thread::Builder::new()
                .name("ballast-compactor".into())
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        if !stop.load(Ordering::Relaxed) {
                            run(&*engine, job, batch, pause, &stop);
                        }
                        pending.fetch_sub(1, Ordering::SeqCst);
                    }
                })
                .expect("spawn the compactor thread")
        };
        Compactor {
            jobs: Some(tx),
            pending,
            stop,
            thread: Some(thread),
        }
    }

    pub fn schedule(&self, at: i64, keep: Vec<Revision>) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let sent = self.jobs.as_ref().map(|tx| tx.send(Job { at, keep }));
        if !matches!(sent, Some(Ok(()))) {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    pub fn wait_idle(&self) {
        while self.pending.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Compactor {
    /// Stops between two batches; an unfinished job resumes at the next open.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(engine: &dyn KvEngine, job: Job, batch_size: usize, pause: Duration, stop: &AtomicBool) {
    let keep: HashSet<Revision> = job.keep.into_iter().collect();
    // Records at the compaction point stay: watchers from there replay them.
    let end = Revision::new(job.at, 0).encode();
    let mut start = Revision::default().encode().to_vec();
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut batch = WriteBatch::default();
        let mut next = None;
        let mut seen = 0;
        // Heads name the same revisions as records, and are far smaller.
        let scanned = engine.scan(Cf::Head, &start, Some(&end), &mut |k, _| {
            if seen == batch_size {
                next = Some(k.to_vec());
                return false;
            }
            seen += 1;
            if let Ok(rev) = Revision::decode(k) {
                if !keep.contains(&rev) {
                    batch.delete(Cf::Kv, k);
                    batch.delete(Cf::Head, k);
                }
            }
            true
        });
        if next.is_none() {
            batch.put(Cf::Meta, META_COMPACT_FINISHED, job.at.to_be_bytes());
        }
        if scanned.is_err() || engine.write(batch).is_err() {
            // Left for the next open to resume (compact_finished not written).
            return;
        }
        match next {
            None => return,
            Some(k) => start = k,
        }
        std::thread::sleep(pause);
    }
}
