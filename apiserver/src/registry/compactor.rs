//! The compactor: keeps etcd's history to about one interval, as
//! kube-apiserver does (`k8s.io/apiserver/pkg/storage/etcd3/compact.go`),
//! and in a way that several apiservers sharing one etcd cooperate.
//!
//! Every interval the compactor runs one `Txn` on [`COMPACT_REV_KEY`]:
//! `If Version(key) == known Then Put(key, <revision seen last round>) Else
//! Get(key)`. The key's version is a logical clock shared by every
//! apiserver on the storage:
//!
//! - the compare holds: this compactor won the round. It compacts to the
//!   revision it saw one interval earlier (nothing in its first round),
//!   and remembers the Txn's revision for the next round;
//! - the compare fails: another apiserver won since this one last looked.
//!   It adopts the key's version and the current revision, and tries again
//!   one interval later.
//!
//! A worked example, interval 5 min, apiservers A and B:
//!
//! ```text
//! t=5:00  A: If Version==0 → Put("0")      version 1, saw rev 100, no compaction
//! t=5:30  B: If Version==0 → fails         adopts version 1, saw rev 130
//! t=10:00 A: If Version==1 → Put("100")    version 2, Compact(100), saw rev 200
//! t=10:30 B: If Version==1 → fails         adopts version 2, saw rev 230
//! (A stops)
//! t=15:30 B: If Version==2 → Put("230")    version 3, Compact(230), saw rev 330
//! ```
//!
//! So the history kept is at least one interval long, a round's winner is
//! the only one to compact, and when the winner stops another apiserver
//! takes over within two intervals. Two successes are always at least an
//! interval apart: a loser learns the new version only by losing, and
//! waits a whole interval before it tries again.
//!
//! The key and its value (the decimal revision compacted) are
//! kube-apiserver's, so Ballast and Kubernetes apiservers sharing one etcd
//! take turns the same way. Unlike kube-apiserver, one process may run
//! several compactors on one storage (tests start several apiservers in
//! one process); the protocol keeps them from compacting twice all the
//! same.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::etcd::{Etcd, VersionCas};
use crate::error::Result;

/// The key whose version orders the compactions of every apiserver on one
/// etcd, and whose value is the revision last compacted.
pub const COMPACT_REV_KEY: &str = "compact_rev_key";

/// A running compaction loop; dropping it stops the loop.
pub struct Compactor {
    /// Dropped with the compactor: the loop sees the channel close and ends
    /// (also in the middle of an etcd call).
    _stop: oneshot::Sender<()>,
    /// The revision the storage was last compacted to, as far as this
    /// compactor knows (its own compaction, or the key's value when it lost
    /// a round); 0 before it knows any.
    compacted: Arc<AtomicI64>,
}

/// What the compactor carries from one round to the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Known {
    /// The last version of [`COMPACT_REV_KEY`] this compactor saw.
    version: i64,
    /// The store's revision at the last round: what the next won round
    /// compacts to (0: nothing yet).
    revision: i64,
}

impl Compactor {
    /// Starts compacting `etcd` every `interval` (non-zero) on the current
    /// Tokio runtime; the first round runs one interval from now.
    pub fn start(etcd: Etcd, interval: Duration) -> Compactor {
        assert!(!interval.is_zero(), "a compaction interval of 0 means off");
        let (stop, stopped) = oneshot::channel();
        let compacted = Arc::new(AtomicI64::new(0));
        tokio::spawn(run(etcd, interval, compacted.clone(), stopped));
        Compactor {
            _stop: stop,
            compacted,
        }
    }

    /// The revision the storage was last compacted to, as far as this
    /// compactor knows; 0 before it knows any.
    pub fn compacted_revision(&self) -> i64 {
        self.compacted.load(Ordering::Relaxed)
    }
}

async fn run(
    etcd: Etcd,
    interval: Duration,
    compacted: Arc<AtomicI64>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut known = Known::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut stopped => return,
        }
        let (next, outcome) = tokio::select! {
            r = round(&etcd, known) => r,
            _ = &mut stopped => return,
        };
        known = next;
        match outcome {
            Ok(Some(rev)) => {
                compacted.fetch_max(rev, Ordering::Relaxed);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, revision = known.revision, "etcd compaction failed");
            }
        }
    }
}

/// One round: the compare-and-swap on [`COMPACT_REV_KEY`], and the
/// compaction when this compactor won. Returns what to carry to the next
/// round (unchanged when etcd could not be asked) and the revision the
/// storage is now known to be compacted to, if any.
async fn round(etcd: &Etcd, known: Known) -> (Known, Result<Option<i64>>) {
    let value = known.revision.to_string().into_bytes();
    let cas = match etcd
        .put_if_version(COMPACT_REV_KEY, known.version, value)
        .await
    {
        Ok(cas) => cas,
        Err(e) => return (known, Err(e)),
    };
    match cas {
        VersionCas::Changed {
            version,
            value,
            revision,
        } => {
            // Another apiserver won: follow its clock. Its value is the
            // revision it compacted to (a garbled one is just not reported).
            let theirs = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse::<i64>().ok())
                .filter(|rev| *rev > 0);
            (Known { version, revision }, Ok(theirs))
        }
        VersionCas::Put { revision } => {
            let next = Known {
                version: known.version + 1,
                revision,
            };
            if known.revision == 0 {
                // The first round only notes where history starts.
                return (next, Ok(None));
            }
            match etcd.compact(known.revision).await {
                Ok(()) => {
                    tracing::debug!(revision = known.revision, "etcd compacted");
                    (next, Ok(Some(known.revision)))
                }
                Err(e) => (next, Err(e)),
            }
        }
    }
}
