//! The scheduling queue, after kube-scheduler's: pending pods are *active*
//! (ready to try, highest `spec.priority` first, then oldest), *backing off*
//! (a failed attempt waits 1 s, doubling to 10 s), *unschedulable* (no node
//! fitted; they wait for a cluster change, or the periodic flush), or *in
//! flight* (assumed and being bound).
//!
//! ```text
//! add ──▶ active ──pop──▶ in flight ──bind ok──▶ (gone when the watch shows it bound)
//!           ▲               │  no node fits ──▶ unschedulable ──cluster change──▶ backoff ─┐
//!           │               └─ bind failed ───────────────────────────────────▶ backoff ─┤
//!           └─────────────────────────────── backoff expired ◀──────────────────────────┘
//! ```
//! Heaps are lazily cleaned: an entry is live only while its sequence number
//! matches the pod's current state.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use super::affinity::Namespaces;
use super::pod_info::{PodInfo, PodMeta};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active(u64),
    Backoff(u64),
    Unschedulable { since: Instant },
    InFlight,
}

/// `(status, reason, message)` of a pod's PodScheduled condition.
pub type Condition = (String, String, String);

/// One pending pod.
#[derive(Debug)]
pub struct Entry {
    pub info: PodInfo,
    /// The PodScheduled condition the pod carries now.
    pub condition: Option<Condition>,
    attempts: u32,
    last_attempt: Option<Instant>,
    state: State,
    /// When the pod entered the queue (scheduling latency is from here).
    pub added: Instant,
}

/// Pending pods by sub-queue, kube-scheduler's `scheduler_pending_pods`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingCounts {
    pub active: usize,
    pub backoff: usize,
    pub unschedulable: usize,
}

/// Queue timings.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// Unschedulable pods are retried at least this often.
    pub flush: Duration,
}

/// Pending pods by key.
#[derive(Debug)]
pub struct Queue {
    pods: HashMap<String, Entry>,
    active: BinaryHeap<(i32, Reverse<u64>, String)>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    /// Keys in the unschedulable state, so a cluster change costs nothing
    /// when there are none.
    unschedulable: HashSet<String>,
    /// The unschedulable keys whose pods have required pod affinity or a
    /// `DoNotSchedule` spread constraint: the only ones a placed pod can
    /// let fit, so a bind looks at these and not at every unschedulable pod.
    waiting_on_pods: HashSet<String>,
    seq: u64,
    timing: Backoff,
}

impl Queue {
    /// An empty queue.
    pub fn new(timing: Backoff) -> Queue {
        Queue {
            pods: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            unschedulable: HashSet::new(),
            waiting_on_pods: HashSet::new(),
            seq: 0,
            timing,
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn set_state(&mut self, key: &str, state: State) {
        if let Some(e) = self.pods.get_mut(key) {
            e.state = state;
            if matches!(state, State::Unschedulable { .. }) {
                self.unschedulable.insert(key.to_string());
                if e.info.waits_on_pods() {
                    self.waiting_on_pods.insert(key.to_string());
                }
            } else {
                self.unschedulable.remove(key);
                self.waiting_on_pods.remove(key);
            }
        }
    }

    fn activate(&mut self, key: &str) {
        let seq = self.next_seq();
        self.set_state(key, State::Active(seq));
        if let Some(e) = self.pods.get(key) {
            self.active
                .push((e.info.priority, Reverse(seq), key.to_string()));
        }
    }

    fn delay(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(20);
        self.timing
            .initial
            .saturating_mul(1 << shift)
            .min(self.timing.max)
    }

    /// Sends `key` to back off from its last attempt, or straight to
    /// active if that has passed.
    fn back_off(&mut self, key: &str, now: Instant) {
        let Some(e) = self.pods.get(key) else {
            return;
        };
        let until = e.last_attempt.map(|t| t + self.delay(e.attempts));
        match until {
            Some(until) if until > now => {
                let seq = self.next_seq();
                self.set_state(key, State::Backoff(seq));
                self.backoff.push(Reverse((until, seq, key.to_string())));
            }
            _ => self.activate(key),
        }
    }

    /// Adds a pod or updates what is known of it. A changed pod waiting for
    /// a retry is retried (its new spec may fit); a pod in flight is left
    /// alone.
    pub fn upsert(&mut self, info: PodInfo, condition: Option<Condition>, now: Instant) {
        let key = info.uid.clone();
        match self.pods.get_mut(&key) {
            None => {
                self.pods.insert(
                    key.clone(),
                    Entry {
                        info,
                        condition,
                        attempts: 0,
                        last_attempt: None,
                        state: State::Active(0),
                        added: now,
                    },
                );
                self.activate(&key);
            }
            Some(e) => {
                e.condition = condition;
                if e.info == info {
                    return;
                }
                e.info = info;
                if matches!(e.state, State::Unschedulable { .. } | State::Backoff(_)) {
                    self.back_off(&key, now);
                }
            }
        }
    }

    /// Removes a pod (bound, deleted, or no longer ours).
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        self.unschedulable.remove(key);
        self.waiting_on_pods.remove(key);
        self.pods.remove(key)
    }

    /// The entry for `key`.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.pods.get(key)
    }

    /// Sets the condition the pod is known to carry.
    pub fn set_condition(&mut self, key: &str, condition: Condition) {
        if let Some(e) = self.pods.get_mut(key) {
            e.condition = Some(condition);
        }
    }

    /// The next active pod, now in flight.
    pub fn pop(&mut self, now: Instant) -> Option<&Entry> {
        while let Some((_, Reverse(seq), key)) = self.active.pop() {
            let live = self
                .pods
                .get(&key)
                .is_some_and(|e| e.state == State::Active(seq));
            if live {
                self.set_state(&key, State::InFlight);
                let e = self.pods.get_mut(&key).expect("live entry");
                e.attempts += 1;
                e.last_attempt = Some(now);
                return self.pods.get(&key);
            }
        }
        None
    }

    /// No node fitted the pod just popped.
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        self.set_state(key, State::Unschedulable { since: now });
    }

    /// The bind of a pod failed: retry after its back-off.
    pub fn retry(&mut self, key: &str, now: Instant) {
        if self.pods.contains_key(key) {
            self.back_off(key, now);
        }
    }

    /// Something changed that may make unschedulable pods fit: each goes
    /// to back off (or active).
    pub fn cluster_changed(&mut self, now: Instant) {
        if self.unschedulable.is_empty() {
            return;
        }
        let keys: Vec<String> = self.unschedulable.iter().cloned().collect();
        for k in keys {
            self.back_off(&k, now);
        }
    }

    /// A pod was placed: the unschedulable pods whose required pod
    /// affinity or `DoNotSchedule` spread selector it matches go to back
    /// off (or active); the others cannot fit because of it. Only the
    /// pods with such terms are looked at.
    pub fn pod_added(&mut self, pod: &PodMeta, namespaces: &Namespaces, now: Instant) {
        if self.waiting_on_pods.is_empty() {
            return;
        }
        let keys: Vec<String> = self
            .waiting_on_pods
            .iter()
            .filter(|k| {
                self.pods
                    .get(*k)
                    .is_some_and(|e| e.info.may_fit_with(pod, namespaces))
            })
            .cloned()
            .collect();
        for k in keys {
            self.back_off(&k, now);
        }
    }

    /// Moves expired back-offs to active.
    pub fn tick(&mut self, now: Instant) {
        while let Some(Reverse((until, seq, _))) = self.backoff.peek() {
            if *until > now {
                break;
            }
            let seq = *seq;
            let Some(Reverse((_, _, key))) = self.backoff.pop() else {
                break;
            };
            if self
                .pods
                .get(&key)
                .is_some_and(|e| e.state == State::Backoff(seq))
            {
                self.activate(&key);
            }
        }
    }

    /// Sends pods unschedulable for longer than the flush interval to back
    /// off (called periodically; it scans every pending pod).
    pub fn flush(&mut self, now: Instant) {
        let flush = self.timing.flush;
        let stale: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|k| {
                self.pods.get(*k).is_some_and(|e| {
                    matches!(e.state, State::Unschedulable { since } if now.duration_since(since) >= flush)
                })
            })
            .cloned()
            .collect();
        for k in stale {
            self.back_off(&k, now);
        }
    }

    /// When the earliest back-off expires.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Whether an active pod is waiting.
    #[cfg(test)]
    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// Whether no pod is pending.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// How many pods wait in each sub-queue (pods in flight in none).
    pub fn pending_counts(&self) -> PendingCounts {
        let mut counts = PendingCounts {
            unschedulable: self.unschedulable.len(),
            ..PendingCounts::default()
        };
        for e in self.pods.values() {
            match e.state {
                State::Active(_) => counts.active += 1,
                State::Backoff(_) => counts.backoff += 1,
                State::Unschedulable { .. } | State::InFlight => {}
            }
        }
        counts
    }

    /// Keys of every pending pod.
    pub fn keys(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info(uid: &str, priority: i32, cpu: &str) -> PodInfo {
        PodInfo::new(
            &serde_json::from_value(json!({
                "metadata": {"name": uid, "namespace": "ns", "uid": uid},
                "spec": {"priority": priority, "containers": [{"name": "c", "image": "i",
                    "resources": {"requests": {"cpu": cpu}}}]}
            }))
            .expect("pod"),
        )
    }

    fn timing() -> Backoff {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            flush: Duration::from_secs(60),
        }
    }

    #[test]
    fn priority_then_fifo() {
        let now = Instant::now();
        let mut q = Queue::new(timing());
        q.upsert(info("a", 0, "1"), None, now);
        q.upsert(info("b", 10, "1"), None, now);
        q.upsert(info("c", 0, "1"), None, now);
        let order: Vec<String> =
            std::iter::from_fn(|| q.pop(now).map(|e| e.info.uid.clone())).collect();
        assert_eq!(order, ["b", "a", "c"]);
        assert!(!q.has_active());
    }

    #[test]
    fn unschedulable_waits_for_a_change_then_backs_off() {
        let t0 = Instant::now();
        let mut q = Queue::new(timing());
        q.upsert(info("a", 0, "1"), None, t0);
        assert!(q.pop(t0).is_some());
        q.unschedulable("a", t0);
        assert!(q.pop(t0).is_none());
        // The same pod seen again (e.g. our own status write) stays put.
        q.upsert(info("a", 0, "1"), None, t0);
        assert!(q.pop(t0).is_none());
        // A cluster change half a second later: back off until t0 + 1 s.
        q.cluster_changed(t0 + Duration::from_millis(500));
        assert!(q.pop(t0 + Duration::from_millis(500)).is_none());
        assert_eq!(q.next_wakeup(), Some(t0 + Duration::from_secs(1)));
        q.tick(t0 + Duration::from_secs(1));
        let t1 = t0 + Duration::from_secs(1);
        assert!(q.pop(t1).is_some());
        // Second failure: 2 s back-off after a change.
        q.unschedulable("a", t1);
        q.cluster_changed(t1);
        q.tick(t1 + Duration::from_millis(1999));
        assert!(!q.has_active());
        q.tick(t1 + Duration::from_secs(2));
        assert!(q.pop(t1 + Duration::from_secs(2)).is_some());
    }

    #[test]
    fn a_changed_pod_and_the_periodic_flush_retry() {
        let t0 = Instant::now();
        let mut q = Queue::new(timing());
        q.upsert(info("a", 0, "1"), None, t0);
        q.pop(t0);
        q.unschedulable("a", t0);
        // Its spec changed after the back-off passed: straight to active.
        q.upsert(info("a", 0, "2"), None, t0 + Duration::from_secs(5));
        assert!(q.pop(t0 + Duration::from_secs(5)).is_some());
        let t1 = t0 + Duration::from_secs(5);
        q.unschedulable("a", t1);
        assert_eq!(q.next_wakeup(), None);
        q.flush(t1 + Duration::from_secs(59));
        assert!(!q.has_active());
        q.flush(t1 + Duration::from_secs(60));
        assert!(q.has_active());
    }

    #[test]
    fn in_flight_pods_are_not_requeued_and_failed_binds_retry() {
        let t0 = Instant::now();
        let mut q = Queue::new(timing());
        q.upsert(info("a", 0, "1"), None, t0);
        q.pop(t0);
        q.upsert(info("a", 0, "3"), None, t0);
        assert!(!q.has_active(), "in flight");
        q.retry("a", t0);
        q.tick(t0 + Duration::from_secs(1));
        assert_eq!(
            q.pop(t0 + Duration::from_secs(1))
                .map(|e| e.info.uid.clone()),
            Some("a".to_string())
        );
        assert!(q.remove("a").is_some());
        q.retry("a", t0);
        assert!(q.is_empty());
        // Removed pods leave dead heap entries that pop skips.
        q.upsert(info("b", 0, "1"), None, t0);
        q.remove("b");
        assert!(q.pop(t0).is_none());
    }

    #[test]
    fn a_placed_pod_retries_only_the_pods_it_may_let_fit() {
        let t0 = Instant::now();
        let mut q = Queue::new(timing());
        let with_affinity = |uid: &str| {
            PodInfo::new(
                &serde_json::from_value(json!({
                    "metadata": {"name": uid, "namespace": "ns", "uid": uid},
                    "spec": {"containers": [], "affinity": {"podAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": [{
                            "labelSelector": {"matchLabels": {"app": "db"}},
                            "topologyKey": "zone"}]}}}
                }))
                .expect("pod"),
            )
        };
        q.upsert(with_affinity("aff"), None, t0);
        q.upsert(info("plain", 0, "1"), None, t0);
        for _ in 0..2 {
            let key = q.pop(t0).map(|e| e.info.uid.clone()).expect("a pod");
            q.unschedulable(&key, t0);
        }
        // Only the pod with a required term is looked at on a bind.
        assert_eq!(q.unschedulable.len(), 2);
        assert_eq!(q.waiting_on_pods, HashSet::from(["aff".to_string()]));
        let placed = |ns: &str, app: &str| PodMeta {
            namespace: ns.to_string(),
            labels: [("app".to_string(), app.to_string())].into(),
            ..PodMeta::default()
        };
        let later = t0 + Duration::from_secs(5);
        q.pod_added(&placed("ns", "web"), &Namespaces::new(), later);
        q.pod_added(&placed("other", "db"), &Namespaces::new(), later);
        assert!(!q.has_active(), "neither matches the term");
        q.pod_added(&placed("ns", "db"), &Namespaces::new(), later);
        assert_eq!(
            q.pop(later).map(|e| e.info.uid.clone()).as_deref(),
            Some("aff")
        );
        assert!(q.pop(later).is_none(), "the plain pod waits for a change");
        assert!(
            q.waiting_on_pods.is_empty(),
            "aff left the unschedulable set"
        );
        // Unschedulable again, then gone: no key is left behind.
        q.unschedulable("aff", later);
        assert_eq!(q.waiting_on_pods.len(), 1);
        q.remove("aff");
        assert!(q.waiting_on_pods.is_empty());
        q.cluster_changed(later);
        assert_eq!(
            q.pop(later).map(|e| e.info.uid.clone()).as_deref(),
            Some("plain")
        );
    }

    #[test]
    fn backoff_is_capped() {
        let q = Queue::new(timing());
        assert_eq!(q.delay(1), Duration::from_secs(1));
        assert_eq!(q.delay(3), Duration::from_secs(4));
        assert_eq!(q.delay(5), Duration::from_secs(10));
        assert_eq!(q.delay(1000), Duration::from_secs(10));
    }
}
