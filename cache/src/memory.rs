//! Memory tier: a moka cache of entries, bounded by an approximate byte budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use moka::future::Cache;

use crate::key::CacheKey;
use crate::meta::Entry;

/// Per-entry cost beyond the body and the metadata strings: the key, the `EntryMeta` and `Bytes` headers and
/// moka's bookkeeping (its value entry, entry info, key hash, access and write deque nodes, the hash-table bucket
/// and the frequency sketch), a few hundred bytes together, each allocation rounded up by the allocator.
const ENTRY_OVERHEAD: u64 = 512;

/// Byte-weighted in-memory cache; clones share the same storage.
#[derive(Clone, Debug)]
pub struct MemoryTier {
    cache: Cache<CacheKey, Entry>,
    capacity_bytes: u64,
    /// Bytes inserted since moka last applied its evictions (see `insert`).
    unsettled: Arc<AtomicU64>,
    /// Entries dropped to stay within the budget (a metric; never reset).
    evictions: Arc<AtomicU64>,
}

/// Evictions are applied once inserts not yet settled reach this share of the budget.
const UNSETTLED_SHARE: u64 = 32;

/// What an entry really holds: its body (stored at exact size: the fetcher and the encoders give spare capacity
/// back before an entry is built, so length is what is allocated), its metadata strings and a fixed overhead.
/// moka weights are u32; an entry over 4 GiB is clamped (it would evict everything anyway).
fn weigh(_key: &CacheKey, entry: &Entry) -> u32 {
    let meta = entry.meta();
    let strings = meta.content_type.len()
        + meta.etag.as_ref().map_or(0, String::len)
        + meta.last_modified.as_ref().map_or(0, String::len);
    let bytes = meta.body_len() + strings as u64 + ENTRY_OVERHEAD;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl MemoryTier {
    /// A tier holding at most about `capacity_bytes` of entries.
    pub fn new(capacity_bytes: u64) -> MemoryTier {
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&evictions);
        // moka calls the listener when it applies an eviction (on inserts and housekeeping), never on a read,
        // so counting here costs a hit nothing. Removals and replacements are not evictions.
        let cache = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(weigh)
            .eviction_listener(move |_key, _entry, cause| {
                if cause.was_evicted() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        MemoryTier { cache, capacity_bytes, unsettled: Arc::new(AtomicU64::new(0)), evictions }
    }

    /// The entry for `key`, if cached (a cheap clone: the body is shared).
    pub async fn get(&self, key: &CacheKey) -> Option<Entry> {
        self.cache.get(key).await
    }

    /// Inserts or replaces the entry for `key`.
    pub async fn insert(&self, key: CacheKey, entry: Entry) {
        // An entry bigger than the whole budget would be evicted at moka's next clean-up anyway; until then it
        // would push out everything else and answer as a memory hit it cannot be.
        if u64::from(weigh(&key, &entry)) > self.capacity_bytes {
            return;
        }
        let weight = u64::from(weigh(&key, &entry));
        self.cache.insert(key, entry).await;
        // moka applies evictions only every 64 writes or 300 ms: with image-sized entries arriving quickly, the
        // tier would hold tens of MiB over its budget in between. Settling once the inserts since the last time
        // reach 1/32 of the budget bounds the overshoot to that plus one entry. Inserts happen on misses only,
        // after a fetch or a transform, so this never costs a hit anything.
        let threshold = (self.capacity_bytes / UNSETTLED_SHARE).max(1);
        if self.unsettled.fetch_add(weight, Ordering::Relaxed) + weight >= threshold {
            self.unsettled.store(0, Ordering::Relaxed);
            self.cache.run_pending_tasks().await;
        }
    }

    /// Drops the entry for `key`, if any.
    pub async fn remove(&self, key: &CacheKey) {
        self.cache.invalidate(key).await;
    }

    /// Current total weight in bytes (approximate until pending tasks have run).
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Current number of entries (approximate until pending tasks have run).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Entries evicted so far to stay within the byte budget.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Applies moka's deferred bookkeeping (evictions, size counters); moka has no
    /// background thread, so tests and metrics call this before reading sizes.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn entry(len: usize) -> Entry {
        Entry::image("image/png", Bytes::from(vec![7u8; len]), 0, 10)
    }

    #[tokio::test]
    async fn weighted_size_stays_within_capacity() {
        let capacity = 100_000;
        let mem = MemoryTier::new(capacity);
        for i in 0u32..500 {
            mem.insert(CacheKey::from_parts(&[&i.to_le_bytes()]), entry(1_000)).await;
        }
        mem.run_pending_tasks().await;
        assert!(mem.weighted_size() <= capacity, "{}", mem.weighted_size());
        assert!(mem.entry_count() > 0);
        assert!(mem.entry_count() < 500);
        // Every entry not held was evicted, and counted (mirage_cache_evictions_total).
        assert_eq!(mem.evictions(), 500 - mem.entry_count());
    }

    #[tokio::test]
    async fn inserts_never_run_far_over_budget() {
        let capacity = 1 << 20;
        let mem = MemoryTier::new(capacity);
        let mut highest = 0;
        for i in 0u32..400 {
            mem.insert(CacheKey::from_parts(&[&i.to_le_bytes()]), entry(50_000)).await;
            // What the map holds right now, evictions not yet applied included.
            let held: u64 = mem.cache.iter().map(|(key, entry)| u64::from(weigh(&key, &entry))).sum();
            highest = highest.max(held);
        }
        let allowed = capacity + capacity / UNSETTLED_SHARE + 2 * 51_000;
        assert!(highest <= allowed, "{highest} > {allowed}");
    }

    #[tokio::test]
    async fn get_insert_remove() {
        let mem = MemoryTier::new(1 << 20);
        let k = CacheKey::from_parts(&[b"a"]);
        assert!(mem.get(&k).await.is_none());
        mem.insert(k, entry(10)).await;
        let got = mem.get(&k).await.expect("hit");
        assert_eq!(got.body().len(), 10);
        mem.remove(&k).await;
        assert!(mem.get(&k).await.is_none());
        // A removal is not an eviction.
        mem.run_pending_tasks().await;
        assert_eq!(mem.evictions(), 0);
    }

    #[tokio::test]
    async fn entries_bigger_than_the_whole_budget_are_not_kept() {
        let mem = MemoryTier::new(10_000);
        let key = CacheKey::from_parts(&[b"big"]);
        mem.insert(key, entry(20_000)).await;
        assert!(mem.get(&key).await.is_none());
        mem.insert(key, entry(5_000)).await;
        assert!(mem.get(&key).await.is_some());
    }

    #[test]
    fn weight_counts_body_and_clamps() {
        assert_eq!(weigh(&CacheKey::from_parts(&[]), &entry(1_000)), 1_000 + 9 + 512);
    }
}
