//! Leases for objects that expire (Events: kube-apiserver's `--event-ttl`).
//! One etcd lease serves every write of a short window, as kube-apiserver's
//! lease manager does: a burst of events costs one lease, not one each, and
//! etcd revokes them — deleting their keys, which watchers see as DELETED —
//! a few at a time.
//!
//! A lease is granted for the TTL plus the reuse window and handed out
//! while it still has at least the TTL to live, so no object expires early
//! and none outlives its TTL by more than the window. The window is 5 % of
//! the TTL, at most 60 s and at least 1 s (leases count whole seconds).
//! Worked example, TTL 1h (window 60 s):
//!
//! ```text
//! t=0     write A → grant L1 for 3660 s (expires t=3660)    A lives 3660 s
//! t=30    write B → t+3600=3630 < 3660: reuse L1            B lives 3630 s
//! t=61    write C → t+3600=3661 ≥ 3660: grant L2 (t=3721)   C lives 3660 s
//! t=62    update A → reuse L2: A now lives until t=3721
//! ```

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::Etcd;
use crate::error::Result;

/// The longest window one lease is handed out in (kube-apiserver's
/// `--lease-reuse-duration-seconds`).
const MAX_REUSE_WINDOW_SECS: i64 = 60;
/// The window as a share of the TTL, in percent.
const REUSE_WINDOW_PERCENT: i64 = 5;
/// etcd's longest lease (`MaxLeaseTTL`; longer grants are refused).
const MAX_LEASE_TTL_SECS: i64 = 9_000_000_000;
/// The most writes attached to one lease: revoking it deletes them all in
/// one storage transaction (kube-apiserver's default limit too).
const MAX_ATTACHED: usize = 1000;

/// Hands out a lease of at least `ttl` seconds for each write, shared by
/// the writes of one reuse window.
pub struct LeaseManager {
    etcd: Etcd,
    ttl_secs: i64,
    window_secs: i64,
    /// Held across the grant, so concurrent writes at a window's start
    /// wait for one lease instead of granting one each.
    current: Mutex<Option<Current>>,
}

/// The lease being handed out.
struct Current {
    id: i64,
    expires: Instant,
    attached: usize,
}

impl LeaseManager {
    /// Leases for objects that live `ttl` (rounded up to whole seconds)
    /// after their last write. `ttl` must not be zero.
    pub fn new(etcd: Etcd, ttl: Duration) -> LeaseManager {
        let ttl_secs = whole_secs(ttl);
        LeaseManager {
            etcd,
            ttl_secs,
            window_secs: reuse_window_secs(ttl_secs),
            current: Mutex::new(None),
        }
    }

    /// The lease the next write attaches to: the current one while it has
    /// the TTL left to live (and room), else a newly granted one.
    pub async fn lease(&self) -> Result<i64> {
        let now = Instant::now();
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_mut() {
            let lives_long_enough = now
                .checked_add(secs(self.ttl_secs))
                .is_some_and(|t| t < c.expires);
            if lives_long_enough && c.attached < MAX_ATTACHED {
                c.attached += 1;
                return Ok(c.id);
            }
        }
        let granted = self.ttl_secs + self.window_secs;
        let id = self.etcd.grant_lease(granted).await?;
        *current = Some(Current {
            id,
            // Past what an Instant holds: never reused.
            expires: now.checked_add(secs(granted)).unwrap_or(now),
            attached: 1,
        });
        Ok(id)
    }

    /// Stops handing out `id` (storage no longer knows it: revoked by
    /// someone else, or expired during a long storage outage).
    pub async fn forget(&self, id: i64) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|c| c.id == id) {
            *current = None;
        }
    }
}

/// `d` in whole seconds, rounded up, between 1 and etcd's longest lease
/// less the longest window.
fn whole_secs(d: Duration) -> i64 {
    let up = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    i64::try_from(up)
        .unwrap_or(i64::MAX)
        .clamp(1, MAX_LEASE_TTL_SECS - MAX_REUSE_WINDOW_SECS)
}

fn reuse_window_secs(ttl_secs: i64) -> i64 {
    (ttl_secs.saturating_mul(REUSE_WINDOW_PERCENT) / 100).clamp(1, MAX_REUSE_WINDOW_SECS)
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_five_percent_of_the_ttl_between_one_and_sixty_seconds() {
        assert_eq!(reuse_window_secs(2), 1);
        assert_eq!(reuse_window_secs(100), 5);
        assert_eq!(reuse_window_secs(600), 30);
        assert_eq!(reuse_window_secs(3600), 60);
        assert_eq!(reuse_window_secs(i64::MAX / 2), 60);
    }

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(whole_secs(Duration::from_millis(1)), 1);
        assert_eq!(whole_secs(Duration::from_secs(2)), 2);
        assert_eq!(whole_secs(Duration::from_millis(2001)), 3);
        assert_eq!(whole_secs(Duration::MAX), 9_000_000_000 - 60);
    }
}
