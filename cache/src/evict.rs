//! Keeps the disk tier within its byte budget: a pure LRU index that says which keys to drop.
//!
//! It does no I/O and deletes nothing itself; it returns victims so the caller can remove
//! the files outside any lock (the pingora eviction-manager shape).

use std::collections::{BTreeMap, HashMap};

use crate::key::CacheKey;

/// Least-recently-used index of entry sizes under a byte budget.
#[derive(Debug, Default)]
pub struct LruIndex {
    capacity: u64,
    total: u64,
    /// Monotonic use counter; a higher tick means more recently used.
    next_tick: u64,
    entries: HashMap<CacheKey, (u64, u64)>,
    /// tick -> key, so the oldest entry is the first item.
    order: BTreeMap<u64, CacheKey>,
}

impl LruIndex {
    /// An empty index with a budget of `capacity_bytes`.
    pub fn new(capacity_bytes: u64) -> LruIndex {
        LruIndex { capacity: capacity_bytes, ..LruIndex::default() }
    }

    fn bump(&mut self) -> u64 {
        let t = self.next_tick;
        self.next_tick += 1;
        t
    }

    /// Records `key` (replacing any earlier size) as the most recently used entry and returns
    /// the keys the caller must delete to get back under budget, oldest first.
    ///
    /// The key just inserted is never a victim unless it alone exceeds the budget; then it is
    /// the only victim, since evicting everything else would not make it fit.
    pub fn insert(&mut self, key: CacheKey, size: u64) -> Vec<CacheKey> {
        self.remove(&key);
        if size > self.capacity {
            return vec![key];
        }
        let tick = self.bump();
        self.entries.insert(key, (size, tick));
        self.order.insert(tick, key);
        self.total += size;

        let mut victims = Vec::new();
        while self.total > self.capacity {
            // The new key is the newest and fits alone, so the loop stops before reaching it.
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((old_size, _)) = self.entries.remove(&oldest) {
                self.total -= old_size;
            }
            victims.push(oldest);
        }
        victims
    }

    /// Marks `key` as most recently used; false if it is not indexed.
    pub fn touch(&mut self, key: &CacheKey) -> bool {
        let tick = self.bump();
        let Some(slot) = self.entries.get_mut(key) else {
            return false;
        };
        self.order.remove(&slot.1);
        slot.1 = tick;
        self.order.insert(tick, *key);
        true
    }

    /// Forgets `key`, returning its recorded size.
    pub fn remove(&mut self, key: &CacheKey) -> Option<u64> {
        let (size, tick) = self.entries.remove(key)?;
        self.order.remove(&tick);
        self.total -= size;
        Some(size)
    }

    /// Sum of the sizes of all indexed entries.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// The byte budget.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Number of indexed entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `key` is indexed.
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.entries.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(i: u32) -> CacheKey {
        CacheKey::from_parts(&[&i.to_le_bytes()])
    }

    #[test]
    fn evicts_oldest_first_and_respects_touch() {
        let mut lru = LruIndex::new(100);
        assert!(lru.insert(k(1), 30).is_empty());
        assert!(lru.insert(k(2), 30).is_empty());
        assert!(lru.insert(k(3), 30).is_empty());
        assert_eq!(lru.total_bytes(), 90);
        // 1 is now most recent, so 2 then 3 go when a big entry arrives.
        assert!(lru.touch(&k(1)));
        assert_eq!(lru.insert(k(4), 65), vec![k(2), k(3)]);
        assert_eq!(lru.total_bytes(), 95);
        assert!(lru.contains(&k(1)) && lru.contains(&k(4)));
        assert!(!lru.contains(&k(2)) && !lru.contains(&k(3)));
        assert_eq!(lru.len(), 2);
        assert!(!lru.touch(&k(2)));
    }

    #[test]
    fn replacing_a_key_updates_size_not_count() {
        let mut lru = LruIndex::new(100);
        lru.insert(k(1), 40);
        lru.insert(k(2), 40);
        assert!(lru.insert(k(1), 50).is_empty());
        assert_eq!(lru.total_bytes(), 90);
        assert_eq!(lru.len(), 2);
        // k(1) was re-inserted, so k(2) is the oldest.
        assert_eq!(lru.insert(k(3), 20), vec![k(2)]);
    }

    #[test]
    fn oversized_entry_is_its_own_only_victim() {
        let mut lru = LruIndex::new(100);
        lru.insert(k(1), 10);
        lru.insert(k(2), 10);
        assert_eq!(lru.insert(k(3), 101), vec![k(3)]);
        assert_eq!(lru.len(), 2);
        assert_eq!(lru.total_bytes(), 20);
        // Also when it replaces a smaller record of itself.
        lru.insert(k(1), 500);
        assert!(!lru.contains(&k(1)));
        assert_eq!(lru.total_bytes(), 10);
    }

    #[test]
    fn exact_fit_evicts_nothing_and_remove_returns_size() {
        let mut lru = LruIndex::new(100);
        lru.insert(k(1), 50);
        assert!(lru.insert(k(2), 50).is_empty());
        assert_eq!(lru.remove(&k(1)), Some(50));
        assert_eq!(lru.remove(&k(1)), None);
        assert_eq!(lru.total_bytes(), 50);
        assert!(!lru.is_empty());
    }
}
