//! A map bounded in entries that forgets the least recently used one when
//! full: the correlator's caches (client-go bounds each at 4096 with
//! groupcache's LRU), so a component's memory does not grow with the
//! number of distinct events it ever recorded.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// At most `capacity` entries; reads and writes count as uses.
pub(super) struct Lru<K, V> {
    capacity: usize,
    /// Each entry with the tick of its last use.
    entries: HashMap<K, (V, u64)>,
    /// Ticks of last use to keys, oldest first: the next to forget.
    by_use: BTreeMap<u64, K>,
    tick: u64,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    /// An empty map of at most `capacity` (at least 1) entries.
    pub(super) fn new(capacity: usize) -> Lru<K, V> {
        Lru {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
            tick: 0,
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The value of `key`, now the most recently used.
    pub(super) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.tick += 1;
        let (value, used) = self.entries.get_mut(key)?;
        let k = self.by_use.remove(used).expect("every entry is in by_use");
        *used = self.tick;
        self.by_use.insert(self.tick, k);
        Some(value)
    }

    /// Sets `key` to `value` (most recently used), forgetting the least
    /// recently used entry if the map was full.
    pub(super) fn insert(&mut self, key: K, value: V) {
        self.tick += 1;
        if let Some((_, used)) = self.entries.remove(&key) {
            self.by_use.remove(&used);
        } else if self.entries.len() >= self.capacity {
            if let Some((_, oldest)) = self.by_use.pop_first() {
                self.entries.remove(&oldest);
            }
        }
        self.by_use.insert(self.tick, key.clone());
        self.entries.insert(key, (value, self.tick));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_entry_goes_first() {
        let mut lru = Lru::new(3);
        for k in ["a", "b", "c"] {
            lru.insert(k.to_string(), k.len());
        }
        assert!(lru.get_mut("a").is_some(), "a is now the newest");
        lru.insert("d".to_string(), 1);
        assert_eq!(lru.len(), 3);
        assert!(lru.get_mut("b").is_none(), "b was the oldest");
        for k in ["a", "c", "d"] {
            assert!(lru.get_mut(k).is_some(), "{k}");
        }
        // Rewriting a key neither grows the map nor evicts another.
        lru.insert("c".to_string(), 7);
        assert_eq!(lru.len(), 3);
        assert_eq!(lru.get_mut("c").copied(), Some(7));
        assert!(lru.get_mut("a").is_some() && lru.get_mut("d").is_some());
    }

    #[test]
    fn it_never_holds_more_than_its_capacity() {
        let mut lru = Lru::new(4096);
        for i in 0..10_000 {
            lru.insert(i, i);
        }
        assert_eq!(lru.len(), 4096);
        assert_eq!(lru.by_use.len(), 4096);
        assert!(lru.get_mut(&(10_000 - 4096)).is_some(), "the newest kept");
        assert!(lru.get_mut(&(10_000 - 4097)).is_none(), "older ones gone");
    }
}
