//! Leases: TTLs that keys attach to; revoking a lease deletes its keys.
//!
//! Which leases exist, their granted TTLs and their keys are replicated
//! state, changed only by applied writes. When a lease expires is not: time
//! is local to each member. The member that decides expiry (the raft leader)
//! is made *primary*; it alone tracks deadlines, answers which leases have
//! expired at an instant, and proposes their revocation as an ordinary write.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Largest TTL a grant may ask for, in seconds (etcd's `MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// A lease as `TimeToLive` and `Leases` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    pub id: i64,
    /// The TTL granted, in seconds.
    pub granted_ttl: i64,
    /// Seconds left (rounded up); the granted TTL where no deadline is tracked.
    pub remaining_ttl: i64,
    /// Attached keys, sorted.
    pub keys: Vec<Vec<u8>>,
}

#[derive(Debug)]
struct Lease {
    ttl: i64,
    /// Set only on the primary.
    deadline: Option<Instant>,
    keys: BTreeSet<Vec<u8>>,
}

#[derive(Debug, Default)]
pub(crate) struct Lessor {
    leases: HashMap<i64, Lease>,
    /// Reverse of `Lease::keys`, so a put or delete detaches without a read.
    key_lease: HashMap<Vec<u8>, i64>,
    primary: bool,
}

fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

impl Lessor {
    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn grant(&mut self, id: i64, ttl: i64, now: Instant) {
        let deadline = self.primary.then(|| now + ttl_duration(ttl));
        self.leases.insert(
            id,
            Lease {
                ttl,
                deadline,
                keys: BTreeSet::new(),
            },
        );
    }

    /// Removes the lease; returns its keys (sorted).
    pub fn revoke(&mut self, id: i64) -> Vec<Vec<u8>> {
        let Some(lease) = self.leases.remove(&id) else {
            return vec![];
        };
        for k in &lease.keys {
            self.key_lease.remove(k);
        }
        lease.keys.into_iter().collect()
    }

    /// The lease `key` is attached to, if any.
    pub fn lease_of(&self, key: &[u8]) -> Option<i64> {
        self.key_lease.get(key).copied()
    }

    /// Attaches `key` to `id` (0 detaches it), leaving any previous lease.
    pub fn attach(&mut self, key: &[u8], id: i64) {
        if id == 0 {
            // The common case, cheap: no hashing while no key has a lease.
            if !self.key_lease.is_empty() {
                self.detach(key);
            }
            return;
        }
        if self.lease_of(key) == Some(id) {
            return;
        }
        self.detach(key);
        if id != 0 {
            if let Some(lease) = self.leases.get_mut(&id) {
                lease.keys.insert(key.to_vec());
                self.key_lease.insert(key.to_vec(), id);
            }
        }
    }

    pub fn detach(&mut self, key: &[u8]) {
        if let Some(id) = self.key_lease.remove(key) {
            if let Some(lease) = self.leases.get_mut(&id) {
                lease.keys.remove(key);
            }
        }
    }

    /// Restarts the lease's clock; returns its TTL, or `None` if unknown.
    pub fn renew(&mut self, id: i64, now: Instant) -> Option<i64> {
        let primary = self.primary;
        let lease = self.leases.get_mut(&id)?;
        if primary {
            lease.deadline = Some(now + ttl_duration(lease.ttl));
        }
        Some(lease.ttl)
    }

    /// Starts tracking deadlines, each lease getting its full TTL from `now`
    /// so that no lease expires early because leadership moved.
    pub fn promote(&mut self, now: Instant) {
        self.primary = true;
        for lease in self.leases.values_mut() {
            lease.deadline = Some(now + ttl_duration(lease.ttl));
        }
    }

    pub fn demote(&mut self) {
        self.primary = false;
        for lease in self.leases.values_mut() {
            lease.deadline = None;
        }
    }

    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// Leases whose deadline is at or before `now` (primary only), sorted.
    pub fn expired(&self, now: Instant) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    pub fn status(&self, id: i64, now: Instant, with_keys: bool) -> Option<LeaseStatus> {
        let lease = self.leases.get(&id)?;
        let remaining_ttl = match lease.deadline {
            Some(d) => {
                let left = d.saturating_duration_since(now);
                left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0)
            }
            None => lease.ttl,
        };
        Some(LeaseStatus {
            id,
            granted_ttl: lease.ttl,
            remaining_ttl,
            keys: if with_keys {
                lease.keys.iter().cloned().collect()
            } else {
                vec![]
            },
        })
    }

    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_detach_and_revoke() {
        let now = Instant::now();
        let mut l = Lessor::default();
        l.grant(1, 10, now);
        l.grant(2, 10, now);
        l.attach(b"a", 1);
        l.attach(b"b", 1);
        l.attach(b"b", 2);
        assert_eq!(l.lease_of(b"b"), Some(2));
        l.attach(b"c", 99); // unknown lease: not attached
        assert_eq!(l.lease_of(b"c"), None);
        l.attach(b"a", 0);
        assert_eq!(l.lease_of(b"a"), None);
        l.attach(b"a", 1);
        assert_eq!(l.revoke(1), vec![b"a".to_vec()]);
        assert_eq!(l.lease_of(b"a"), None);
        assert!(!l.contains(1));
        assert_eq!(l.revoke(1), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn only_the_primary_tracks_deadlines() {
        let t0 = Instant::now();
        let mut l = Lessor::default();
        l.grant(7, 5, t0);
        assert!(l.expired(t0 + Duration::from_secs(60)).is_empty());
        assert_eq!(l.status(7, t0, false).unwrap().remaining_ttl, 5);

        let t1 = t0 + Duration::from_secs(100);
        l.promote(t1);
        assert!(l.expired(t1 + Duration::from_secs(4)).is_empty());
        assert_eq!(l.expired(t1 + Duration::from_secs(5)), vec![7]);
        assert_eq!(
            l.status(7, t1 + Duration::from_millis(1500), false)
                .unwrap()
                .remaining_ttl,
            4
        );
        // A renewal restarts the clock.
        let t2 = t1 + Duration::from_secs(4);
        assert_eq!(l.renew(7, t2), Some(5));
        assert!(l.expired(t1 + Duration::from_secs(8)).is_empty());
        assert_eq!(l.renew(8, t2), None);

        l.demote();
        assert!(l.expired(t2 + Duration::from_secs(600)).is_empty());
    }
}
