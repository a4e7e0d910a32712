//! The history of one key: generations of revisions.
//!
//! A generation runs from the put that creates a key to the delete that
//! ends it (the tombstone is the generation's last revision); the next put
//! starts a new generation. The last generation is empty while the key is
//! deleted.
//!
//! Worked example — key `foo`:
//!
//! ```text
//! put@1  put@2  del@3  put@4  put@5      generations: {1,2,3(t)} {4,5} {}... (live)
//! ```
//! - `get(at=2)` → rev 2, created 1, version 2; `get(at=3)` → none (deleted);
//!   `get(at=4)` → rev 4, created 4, version 1.
//! - `compact(2)` keeps rev 2 (the newest at or below 2, still needed to read
//!   at 2): `{2,3(t)} {4,5}`. Revision 1 may be removed from disk.
//! - `compact(3)` keeps only the tombstone of the first generation: a read
//!   at 3 needs nothing of it, but a watcher from 3 must still see the
//!   delete: `{3(t)} {4,5}`.
//! - `compact(4)` drops the first generation entirely — its tombstone is
//!   below 4, so nothing at or after 4 can see it: `{4,5}`; nothing is kept.
//! - `compact(5)` keeps 5: `{5}`. After `del@6`, `compact(6)` keeps the
//!   tombstone alone, `{6(t)}`; `compact(7)` leaves no generation at all,
//!   and the key leaves the index.
//!
//! The rule: every revision whose main is at or after the compaction point
//! stays (watchers from there replay them); of the older ones, only the
//! version a read at the compaction point returns.

use smallvec::SmallVec;

use crate::revision::Revision;

/// What a read at some revision sees of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyRev {
    /// The revision of the version visible (its record holds the value).
    pub modified: Revision,
    pub create_revision: i64,
    pub version: i64,
}

#[derive(Debug, Clone, Default)]
struct Generation {
    /// Number of changes in the generation since its creation, including
    /// ones compacted away and the tombstone.
    version: i64,
    create_revision: i64,
    /// Most keys hold one revision: it is kept inline, not on the heap.
    revs: SmallVec<[Revision; 1]>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct KeyIndex {
    /// Oldest first. The last one is live (non-empty) or empty (deleted).
    /// Inline while there is one: a million keys cost no allocation each
    /// beyond the key itself.
    generations: SmallVec<[Generation; 1]>,
}

impl KeyIndex {
    fn current(&mut self) -> &mut Generation {
        if self.generations.is_empty() {
            self.generations.push(Generation::default());
        }
        self.generations.last_mut().expect("just ensured")
    }

    /// Records a put at `rev`; returns the new version.
    pub fn put(&mut self, rev: Revision) -> KeyRev {
        let g = self.current();
        if g.revs.is_empty() {
            g.create_revision = rev.main;
        }
        g.revs.push(rev);
        g.version += 1;
        KeyRev {
            modified: rev,
            create_revision: g.create_revision,
            version: g.version,
        }
    }

    /// Rebuilds from a stored record whose generation may have lost its
    /// early revisions to compaction.
    pub fn restore_put(&mut self, rev: Revision, create_revision: i64, version: i64) {
        let g = self.current();
        g.create_revision = create_revision;
        g.version = version;
        g.revs.push(rev);
    }

    /// Rebuilds a tombstone from a stored record. A tombstone whose puts were
    /// all compacted away (it sat at the compacted revision) becomes a
    /// generation of its own, so watchers from there still see the delete.
    pub fn restore_tombstone(&mut self, rev: Revision) {
        if !self.tombstone(rev) {
            let g = self.current();
            g.revs.push(rev);
            g.version += 1;
            self.generations.push(Generation::default());
        }
    }

    /// Ends the live generation with a tombstone at `rev`. Returns false (and
    /// changes nothing) when the key is not live.
    pub fn tombstone(&mut self, rev: Revision) -> bool {
        match self.generations.last_mut() {
            Some(g) if !g.revs.is_empty() => {
                g.revs.push(rev);
                g.version += 1;
                self.generations.push(Generation::default());
                true
            }
            _ => false,
        }
    }

    /// The version visible at main revision `at`, or `None` if the key did
    /// not exist then.
    pub fn get(&self, at: i64) -> Option<KeyRev> {
        let last = self.generations.len().checked_sub(1)?;
        for (i, g) in self.generations.iter().enumerate().rev() {
            let Some(first) = g.revs.first() else {
                continue;
            };
            if first.main > at {
                continue;
            }
            // A closed generation (not the last) ends with its tombstone.
            if i != last && g.revs.last().expect("non-empty").main <= at {
                return None;
            }
            let n = g.revs.partition_point(|r| r.main <= at) - 1;
            return Some(KeyRev {
                modified: g.revs[n],
                create_revision: g.create_revision,
                version: g.version - (g.revs.len() - n - 1) as i64,
            });
        }
        None
    }

    /// Revisions with main in `[from, ..]`, oldest first (for watch catch-up
    /// and HashKV; tombstones included).
    pub fn revisions_since(&self, from: i64, out: &mut Vec<Revision>) {
        for g in &self.generations {
            let start = g.revs.partition_point(|r| r.main < from);
            out.extend_from_slice(&g.revs[start..]);
        }
    }

    /// Forgets what no read at or after `at`, and no watcher from `at`, can
    /// see (see the module docs); pushes the revision it keeps below `at`
    /// (if any) into `keep`. Returns true when the key has no history left
    /// and should leave the index.
    pub fn compact(&mut self, at: i64, keep: &mut Vec<Revision>) -> bool {
        let last = self.generations.len().saturating_sub(1);
        // Closed generations whose tombstone is below `at` are dead.
        let dead = self
            .generations
            .iter()
            .enumerate()
            .take_while(|(i, g)| *i != last && g.revs.last().is_some_and(|tomb| tomb.main < at))
            .count();
        self.generations.drain(..dead);
        // Only the first generation left can hold revisions below `at`.
        if let Some(g) = self.generations.first_mut() {
            let below = g.revs.partition_point(|r| r.main < at);
            let from = if g.revs.get(below).is_some_and(|r| r.main == at) {
                below
            } else {
                below.saturating_sub(1)
            };
            if from < below {
                keep.push(g.revs[from]);
            }
            g.revs.drain(..from);
        }
        self.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.generations.iter().all(|g| g.revs.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// The worked example of the module docs.
    fn example() -> KeyIndex {
        let mut ki = KeyIndex::default();
        ki.put(r(1));
        ki.put(r(2));
        assert!(ki.tombstone(r(3)));
        ki.put(r(4));
        ki.put(r(5));
        ki
    }

    #[test]
    fn get_follows_generations() {
        let ki = example();
        assert_eq!(ki.get(0), None);
        let at2 = ki.get(2).unwrap();
        assert_eq!(
            (at2.modified, at2.create_revision, at2.version),
            (r(2), 1, 2)
        );
        assert_eq!(ki.get(3), None);
        let at4 = ki.get(4).unwrap();
        assert_eq!(
            (at4.modified, at4.create_revision, at4.version),
            (r(4), 4, 1)
        );
        let at9 = ki.get(9).unwrap();
        assert_eq!((at9.modified, at9.version), (r(5), 2));
        assert_eq!(ki.get(i64::MAX), Some(at9));
    }

    #[test]
    fn tombstone_on_deleted_key_is_refused() {
        let mut ki = example();
        assert!(ki.tombstone(r(6)));
        assert!(!ki.tombstone(r(7)));
        assert_eq!(ki.get(i64::MAX), None);
    }

    #[test]
    fn compaction_as_documented() {
        let mut keep = vec![];
        let mut ki = example();
        assert!(!ki.compact(2, &mut keep));
        assert!(
            keep.is_empty(),
            "2 is at the compaction point: never removed"
        );
        assert_eq!(ki.get(2).unwrap().modified, r(2));
        assert_eq!(ki.get(2).unwrap().version, 2);
        assert_eq!(ki.get(3), None);

        keep.clear();
        assert!(!ki.compact(3, &mut keep));
        assert!(keep.is_empty());
        let mut revs = vec![];
        ki.revisions_since(3, &mut revs);
        assert_eq!(revs, vec![r(3), r(4), r(5)], "the tombstone at 3 stays");
        assert_eq!(ki.get(3), None);

        keep.clear();
        assert!(!ki.compact(4, &mut keep));
        assert!(keep.is_empty());
        assert_eq!(ki.get(4).unwrap().modified, r(4));
        revs.clear();
        ki.revisions_since(0, &mut revs);
        assert_eq!(revs, vec![r(4), r(5)]);

        keep.clear();
        assert!(!ki.compact(5, &mut keep));
        assert!(keep.is_empty(), "5 is at the compaction point, not below");
        assert_eq!(ki.get(5).unwrap().version, 2);

        assert!(ki.tombstone(r(6)));
        keep.clear();
        assert!(!ki.compact(6, &mut keep));
        assert!(keep.is_empty());
        revs.clear();
        ki.revisions_since(0, &mut revs);
        assert_eq!(revs, vec![r(6)]);
        assert!(ki.compact(7, &mut keep));
    }

    #[test]
    fn compaction_keeps_the_version_read_at_the_point() {
        let mut ki = example();
        let mut keep = vec![];
        // Nothing changed at 6: a read at 6 needs 5, kept below the point.
        assert!(!ki.compact(6, &mut keep));
        assert_eq!(keep, vec![r(5)]);
        assert_eq!(ki.get(6).unwrap().modified, r(5));
    }

    #[test]
    fn put_and_delete_in_one_revision_survive_compaction_there() {
        // A txn may put a key and, in a later nested txn, delete it.
        let mut ki = KeyIndex::default();
        ki.put(r(1));
        ki.put(Revision::new(2, 0));
        assert!(ki.tombstone(Revision::new(2, 1)));
        let mut keep = vec![];
        assert!(!ki.compact(2, &mut keep));
        assert!(keep.is_empty());
        let mut revs = vec![];
        ki.revisions_since(2, &mut revs);
        assert_eq!(revs, vec![Revision::new(2, 0), Revision::new(2, 1)]);
    }

    #[test]
    fn a_lone_tombstone_is_restored() {
        // On disk after compact(3) of the example: the tombstone, then 4 and 5.
        let mut ki = KeyIndex::default();
        ki.restore_tombstone(r(3));
        ki.restore_put(r(4), 4, 1);
        ki.restore_put(r(5), 4, 2);
        let mut revs = vec![];
        ki.revisions_since(3, &mut revs);
        assert_eq!(revs, vec![r(3), r(4), r(5)]);
        assert_eq!(ki.get(3), None);
        assert_eq!(ki.get(5).unwrap().version, 2);
        let mut keep = vec![];
        assert!(!ki.compact(4, &mut keep));
        revs.clear();
        ki.revisions_since(0, &mut revs);
        assert_eq!(revs, vec![r(4), r(5)]);
    }

    #[test]
    fn revisions_since_lists_history_in_order() {
        let ki = example();
        let mut out = vec![];
        ki.revisions_since(2, &mut out);
        assert_eq!(out, vec![r(2), r(3), r(4), r(5)]);
    }
}
