//! An in-process network for tests: every node's [`MemTransport`] endpoint
//! routes through one [`MemNetwork`], which can drop, delay, duplicate and
//! partition (also one way) messages, changed at run time. Random choices come
//! from one seeded generator; print [`MemNetwork::seed`] so a failure can be
//! replayed (thread timing still varies between runs).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use raft::prelude::{Message, MessageType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Inbox, Transport};

#[derive(Debug, Default, Clone)]
struct Faults {
    drop_rate: f64,
    duplicate_rate: f64,
    delay_min: Duration,
    delay_max: Duration,
    /// Links `(from, to)` that lose every message.
    blocked: HashSet<(u64, u64)>,
}

struct Net {
    seed: u64,
    inboxes: Mutex<HashMap<u64, Inbox>>,
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
    runtime: tokio::runtime::Handle,
    delivered: AtomicU64,
    dropped: AtomicU64,
}

/// The shared in-memory network. Cheap to clone.
#[derive(Clone)]
pub struct MemNetwork {
    net: Arc<Net>,
}

impl std::fmt::Debug for MemNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemNetwork")
            .field("seed", &self.net.seed)
            .finish()
    }
}

impl MemNetwork {
    /// A fault-free network whose random choices follow `seed`. Must be called
    /// inside a tokio runtime (delayed messages are delivered by its tasks).
    pub fn new(seed: u64) -> Self {
        MemNetwork {
            net: Arc::new(Net {
                seed,
                inboxes: Mutex::new(HashMap::new()),
                faults: Mutex::new(Faults::default()),
                rng: Mutex::new(StdRng::seed_from_u64(seed)),
                runtime: tokio::runtime::Handle::current(),
                delivered: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// The seed the network was made with.
    pub fn seed(&self) -> u64 {
        self.net.seed
    }

    /// The endpoint node `id` sends through.
    pub fn endpoint(&self, id: u64) -> MemTransport {
        MemTransport {
            id,
            net: self.net.clone(),
        }
    }

    /// Loses each message with probability `p`.
    pub fn set_drop_rate(&self, p: f64) {
        self.net.faults.lock().drop_rate = p.clamp(0.0, 1.0);
    }

    /// Delivers each message twice with probability `p`.
    pub fn set_duplicate_rate(&self, p: f64) {
        self.net.faults.lock().duplicate_rate = p.clamp(0.0, 1.0);
    }

    /// Delays each message by a uniform random time in `[min, max]`
    /// (messages then arrive out of order).
    pub fn set_delay(&self, min: Duration, max: Duration) {
        let mut f = self.net.faults.lock();
        f.delay_min = min;
        f.delay_max = max.max(min);
    }

    /// Loses every message from `from` to `to` (one way).
    pub fn block(&self, from: u64, to: u64) {
        self.net.faults.lock().blocked.insert((from, to));
    }

    /// Undoes [`block`](MemNetwork::block).
    pub fn unblock(&self, from: u64, to: u64) {
        self.net.faults.lock().blocked.remove(&(from, to));
    }

    /// Cuts every link between nodes of different groups, both ways. Nodes in
    /// no group keep their links.
    pub fn partition(&self, groups: &[&[u64]]) {
        let mut f = self.net.faults.lock();
        for (i, a) in groups.iter().enumerate() {
            for b in groups.iter().skip(i + 1) {
                for &x in a.iter() {
                    for &y in b.iter() {
                        f.blocked.insert((x, y));
                        f.blocked.insert((y, x));
                    }
                }
            }
        }
    }

    /// Cuts `id` off from `others`, both ways.
    pub fn isolate(&self, id: u64, others: &[u64]) {
        self.partition(&[&[id], others]);
    }

    /// Restores every link (probabilistic faults stay).
    pub fn heal(&self) {
        self.net.faults.lock().blocked.clear();
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        *self.net.faults.lock() = Faults::default();
    }

    /// Messages delivered and dropped so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.net.delivered.load(Ordering::Relaxed),
            self.net.dropped.load(Ordering::Relaxed),
        )
    }
}

/// One node's endpoint on a [`MemNetwork`].
pub struct MemTransport {
    id: u64,
    net: Arc<Net>,
}

impl std::fmt::Debug for MemTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemTransport")
            .field("id", &self.id)
            .finish()
    }
}

impl Net {
    fn inbox(&self, id: u64) -> Option<Inbox> {
        self.inboxes.lock().get(&id).cloned()
    }

    /// Hands `m` to its recipient now, reporting to the sender what a real
    /// transport would.
    fn deliver(&self, m: Message) {
        let (from, to) = (m.from, m.to);
        let is_snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
        let ok = match (self.inbox(to), self.inbox(from)) {
            (Some(inbox), Some(sender)) if is_snapshot => {
                match super::copy_image(&sender, &inbox, &m) {
                    Ok(()) => inbox.deliver(vec![m]).is_ok(),
                    Err(e) => {
                        tracing::warn!(from, to, error = %e, "copying a snapshot image");
                        false
                    }
                }
            }
            (Some(inbox), _) => inbox.deliver(vec![m]).is_ok(),
            (None, _) => false,
        };
        if ok {
            self.delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(sender) = self.inbox(from) {
            if is_snapshot {
                sender.report_snapshot(to, ok);
            } else if !ok {
                sender.report_unreachable(to);
            }
        }
    }

    fn drop_message(&self, m: &Message) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if m.get_msg_type() == MessageType::MsgSnapshot {
            if let Some(sender) = self.inbox(m.from) {
                sender.report_snapshot(m.to, false);
            }
        }
    }
}

impl Transport for MemTransport {
    fn bind(&self, inbox: Inbox) {
        self.net.inboxes.lock().insert(self.id, inbox);
    }

    fn send(&self, msgs: Vec<Message>) {
        let faults = self.net.faults.lock().clone();
        for m in msgs {
            if faults.blocked.contains(&(m.from, m.to)) {
                self.net.drop_message(&m);
                continue;
            }
            let (lose, copies, delays) = {
                let mut rng = self.net.rng.lock();
                let lose = faults.drop_rate > 0.0 && rng.random_bool(faults.drop_rate);
                let copies =
                    if faults.duplicate_rate > 0.0 && rng.random_bool(faults.duplicate_rate) {
                        2
                    } else {
                        1
                    };
                let delays: Vec<Duration> = (0..copies)
                    .map(|_| {
                        if faults.delay_max.is_zero() {
                            Duration::ZERO
                        } else {
                            rng.random_range(faults.delay_min..=faults.delay_max)
                        }
                    })
                    .collect();
                (lose, copies, delays)
            };
            if lose {
                self.net.drop_message(&m);
                continue;
            }
            debug_assert_eq!(delays.len(), copies);
            for delay in delays {
                let m = m.clone();
                if delay.is_zero() {
                    self.net.deliver(m);
                } else {
                    let net = self.net.clone();
                    self.net.runtime.spawn(async move {
                        tokio::time::sleep(delay).await;
                        net.deliver(m);
                    });
                }
            }
        }
    }
}
