//! Synced watchers indexed by what they watch, to find an event's watchers fast.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

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

/// Watchers grouped by key (single-key watches) and by range. Watchers of
/// the same key or range share one entry, so a thousand watchers on one
/// prefix cost one range check per event.
#[derive(Default)]
pub(crate) struct WatcherGroup {
    single: HashMap<Box<[u8]>, IdSet<WatcherKey>>,
    ranges: HashMap<RangeKey, IdSet<WatcherKey>>,
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    key >= start && (end == [0] || key < end)
}

impl WatcherGroup {
    pub fn is_empty(&self) -> bool {
        self.single.is_empty() && self.ranges.is_empty()
    }

    pub fn insert(&mut self, wk: WatcherKey, key: &[u8], range_end: &[u8]) {
        if range_end.is_empty() {
            self.single.entry(key.into()).or_default().insert(wk);
        } else {
            self.ranges
                .entry((key.into(), range_end.into()))
                .or_default()
                .insert(wk);
        }
    }

    pub fn remove(&mut self, wk: WatcherKey, key: &[u8], range_end: &[u8]) {
        if range_end.is_empty() {
            if let Some(set) = self.single.get_mut(key) {
                set.remove(&wk);
                if set.is_empty() {
                    self.single.remove(key);
                }
            }
        } else {
            let k: RangeKey = (key.into(), range_end.into());
            if let Some(set) = self.ranges.get_mut(&k) {
                set.remove(&wk);
                if set.is_empty() {
                    self.ranges.remove(&k);
                }
            }
        }
    }

    /// Pushes every watcher whose key or range holds `key`.
    pub fn matching(&self, key: &[u8], out: &mut Vec<WatcherKey>) {
        if let Some(set) = self.single.get(key) {
            out.extend(set.iter().copied());
        }
        for ((start, end), set) in &self.ranges {
            if in_range(key, start, end) {
                out.extend(set.iter().copied());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_keys_prefixes_and_open_ranges() {
        let mut g = WatcherGroup::default();
        g.insert(1, b"a", b"");
        g.insert(2, b"a", b"b");
        g.insert(3, b"c", &[0]);
        g.insert(4, b"a", b"b");
        let find = |g: &WatcherGroup, k: &[u8]| {
            let mut v = vec![];
            g.matching(k, &mut v);
            v.sort();
            v
        };
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
}
