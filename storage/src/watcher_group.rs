//! Synced watchers indexed by what they watch, to find an event's watchers fast.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

/// Identifies a watcher across the whole store.
pub(crate) type WatcherKey = u64;

/// Hashes watcher, stream and watch ids: small integers handed out in
/// sequence, where SipHash would be wasted work on the fan-out path. A
/// multiplication by an odd constant spreads them over every bit.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by ids (see [`IdHasher`]).
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

/// A watched range: `(key, range_end)`.
type RangeKey = (Box<[u8]>, Box<[u8]>);

/// The watchers of one key or range. Nearly always a single one (a
/// thousand watchers on one prefix is the exception), so that one needs no
/// set of its own.
enum Members {
    One(WatcherKey),
    Many(Box<IdSet<WatcherKey>>),
}

impl Members {
    fn insert(&mut self, wk: WatcherKey) {
        match self {
            Members::One(first) if *first == wk => {}
            Members::One(first) => {
                let set: IdSet<WatcherKey> = [*first, wk].into_iter().collect();
                *self = Members::Many(Box::new(set));
            }
            Members::Many(set) => {
                set.insert(wk);
            }
        }
    }

    /// Removes `wk`; true if no watcher is left.
    fn remove(&mut self, wk: WatcherKey) -> bool {
        match self {
            Members::One(only) => *only == wk,
            Members::Many(set) => {
                set.remove(&wk);
                match set.len() {
                    0 => true,
                    1 => {
                        let last = set.iter().next().copied().expect("one left");
                        *self = Members::One(last);
                        false
                    }
                    _ => false,
                }
            }
        }
    }

    fn push_to(&self, out: &mut Vec<WatcherKey>) {
        match self {
            Members::One(wk) => out.push(*wk),
            Members::Many(set) => out.extend(set.iter().copied()),
        }
    }
}

/// Watchers grouped by key (single-key watches) and by range. Watchers of
/// the same key or range share one entry, so a thousand watchers on one
/// prefix cost one range check per event.
///
/// A single key is stored once: the map's key is the watcher's own `Arc`
/// (the first watcher's, for a key several watch), not a copy of it. Most
/// keys have one watcher, so a copy would double its bytes per idle watcher.
#[derive(Default)]
pub(crate) struct WatcherGroup {
    single: HashMap<Arc<[u8]>, Members>,
    ranges: HashMap<RangeKey, Members>,
}

fn add<K: Eq + Hash>(map: &mut HashMap<K, Members>, k: K, wk: WatcherKey) {
    match map.entry(k) {
        Entry::Occupied(mut e) => e.get_mut().insert(wk),
        Entry::Vacant(e) => {
            e.insert(Members::One(wk));
        }
    }
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    key >= start && (end == [0] || key < end)
}

impl WatcherGroup {
    pub fn is_empty(&self) -> bool {
        self.single.is_empty() && self.ranges.is_empty()
    }

    /// Adds watcher `wk` of `span`: its key (the first `key_len` bytes),
    /// then its range end (empty for a single key).
    pub fn insert(&mut self, wk: WatcherKey, span: &Arc<[u8]>, key_len: usize) {
        if key_len == span.len() {
            add(&mut self.single, span.clone(), wk);
        } else {
            let (key, end) = span.split_at(key_len);
            add(&mut self.ranges, (key.into(), end.into()), wk);
        }
    }

    pub fn remove(&mut self, wk: WatcherKey, key: &[u8], range_end: &[u8]) {
        if range_end.is_empty() {
            if let Some(members) = self.single.get_mut(key) {
                if members.remove(wk) {
                    self.single.remove(key);
                }
            }
        } else {
            let k: RangeKey = (key.into(), range_end.into());
            if let Some(members) = self.ranges.get_mut(&k) {
                if members.remove(wk) {
                    self.ranges.remove(&k);
                }
            }
        }
    }

    /// Pushes every watcher whose key or range holds `key`.
    pub fn matching(&self, key: &[u8], out: &mut Vec<WatcherKey>) {
        if let Some(members) = self.single.get(key) {
            members.push_to(out);
        }
        for ((start, end), members) in &self.ranges {
            if in_range(key, start, end) {
                members.push_to(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(g: &mut WatcherGroup, wk: WatcherKey, key: &[u8], range_end: &[u8]) {
        g.insert(wk, &Arc::from([key, range_end].concat()), key.len());
    }

    fn find(g: &WatcherGroup, k: &[u8]) -> Vec<WatcherKey> {
        let mut v = vec![];
        g.matching(k, &mut v);
        v.sort();
        v
    }

    #[test]
    fn matches_keys_prefixes_and_open_ranges() {
        let mut g = WatcherGroup::default();
        add(&mut g, 1, b"a", b"");
        add(&mut g, 2, b"a", b"b");
        add(&mut g, 3, b"c", &[0]);
        add(&mut g, 4, b"a", b"b");
        assert_eq!(find(&g, b"a"), vec![1, 2, 4]);
        assert_eq!(find(&g, b"ab"), vec![2, 4]);
        assert_eq!(find(&g, b"b"), Vec::<u64>::new());
        assert_eq!(find(&g, b"zzz"), vec![3]);
        g.remove(2, b"a", b"b");
        g.remove(1, b"a", b"");
        assert_eq!(find(&g, b"a"), vec![4]);
        g.remove(4, b"a", b"b");
        g.remove(3, b"c", &[0]);
        assert!(g.is_empty());
    }

    #[test]
    fn one_watcher_per_key_grows_to_a_set_and_back() {
        let mut g = WatcherGroup::default();
        add(&mut g, 1, b"k", b"");
        add(&mut g, 1, b"k", b"");
        assert_eq!(find(&g, b"k"), vec![1]);
        add(&mut g, 2, b"k", b"");
        add(&mut g, 3, b"k", b"");
        assert_eq!(find(&g, b"k"), vec![1, 2, 3]);
        g.remove(7, b"k", b"");
        g.remove(2, b"k", b"");
        assert_eq!(find(&g, b"k"), vec![1, 3]);
        // The map's key is watcher 1's allocation; the key stays findable.
        g.remove(1, b"k", b"");
        assert_eq!(find(&g, b"k"), vec![3]);
        g.remove(1, b"k", b"");
        assert_eq!(find(&g, b"k"), vec![3]);
        add(&mut g, 4, b"k", b"");
        g.remove(3, b"k", b"");
        g.remove(4, b"k", b"");
        assert!(g.is_empty());
        add(&mut g, 5, b"a", b"b");
        add(&mut g, 6, b"a", b"b");
        g.remove(5, b"a", b"b");
        assert_eq!(find(&g, b"a"), vec![6]);
        assert_eq!(find(&g, b"ab"), vec![6]);
        g.remove(6, b"a", b"b");
        assert!(g.is_empty());
    }
}
