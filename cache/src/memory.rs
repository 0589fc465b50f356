//! Memory tier: a moka cache of entries, bounded by an approximate byte budget, with a side map from each source
//! to the variants of it held, so a purge finds them without a scan.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use moka::future::Cache;
use moka::notification::RemovalCause;

use crate::key::CacheKey;
use crate::meta::Entry;

/// Per-entry cost beyond the body and the metadata strings: the key, the `EntryMeta` and `Bytes` headers and
/// moka's bookkeeping (its value entry, entry info, key hash, access and write deque nodes, the hash-table bucket
/// and the frequency sketch), a few hundred bytes together, each allocation rounded up by the allocator; plus what
/// the server keeps with an entry it answered (`EntryMeta::answer_memo`: Mirage's fixed response headers, a map of
/// a dozen shared values, about a kilobyte).
const ENTRY_OVERHEAD: u64 = 512 + 1024;

/// Byte-weighted in-memory cache; clones share the same storage.
#[derive(Clone, Debug)]
pub struct MemoryTier {
    cache: Cache<CacheKey, Entry>,
    capacity_bytes: u64,
    /// Bytes inserted since moka last applied its evictions (see `insert`).
    unsettled: Arc<AtomicU64>,
    /// Entries dropped to stay within the budget (a metric; never reset).
    evictions: Arc<AtomicU64>,
    /// Source key -> variant key -> how many stored values of that key are linked (see `Links`).
    links: Arc<Mutex<Links>>,
}

/// Which variants of each source the tier holds. A count per key rather than a set: every value moka stores is
/// counted once when inserted and once when it leaves (evicted, invalidated, or replaced by a newer value of the
/// same key), in whatever order moka reports that, so the count is the number of live values and a key leaves
/// the map with its last one. The map is thus bounded by the number of entries in the tier. Originals need no
/// link: a purge knows their key.
type Links = HashMap<CacheKey, HashMap<CacheKey, u32>>;

// A std Mutex: every critical section is one or two map operations. Taken on inserts (misses), on moka's removal
// notifications and by purges; never by a plain `get` (a hit), except when moka evicts during a read's
// housekeeping, which happens only after inserts and is already amortised over them.
fn lock(links: &Mutex<Links>) -> MutexGuard<'_, Links> {
    links.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The source `entry` links `key` to, when it is a variant.
fn variant_source(key: &CacheKey, entry: &Entry) -> Option<CacheKey> {
    entry.meta().source().filter(|source| source != key)
}

fn unlink(links: &Mutex<Links>, source: CacheKey, key: &CacheKey) {
    let mut links = lock(links);
    let Some(keys) = links.get_mut(&source) else { return };
    if let Some(count) = keys.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            keys.remove(key);
        }
    }
    if keys.is_empty() {
        links.remove(&source);
    }
}

/// Evictions are applied once inserts not yet settled reach this share of the budget.
const UNSETTLED_SHARE: u64 = 32;

/// What an entry really holds: its body (stored at exact size: the fetcher and the encoders give spare capacity
/// back before an entry is built, so length is what is allocated), its metadata strings (and the header values
/// made from them) and a fixed overhead.
/// moka weights are u32; an entry over 4 GiB is clamped (it would evict everything anyway).
fn weigh(_key: &CacheKey, entry: &Entry) -> u32 {
    let meta = entry.meta();
    let strings = meta.content_type.len()
        + meta.etag.as_ref().map_or(0, String::len)
        + meta.last_modified.as_ref().map_or(0, String::len)
        + meta.content_type_value().len()
        + meta.last_modified_value().len();
    let bytes = meta.body_len() + strings as u64 + ENTRY_OVERHEAD;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl MemoryTier {
    /// A tier holding at most about `capacity_bytes` of entries.
    pub fn new(capacity_bytes: u64) -> MemoryTier {
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&evictions);
        let links = Arc::new(Mutex::new(Links::new()));
        let listener_links = Arc::clone(&links);
        // moka calls the listener when it applies a removal (on inserts, invalidations and housekeeping), never
        // on a plain read, so neither the eviction count nor the source links cost a hit anything. Removals and
        // replacements are not evictions, but they do unlink.
        let cache = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(weigh)
            .eviction_listener(move |key: Arc<CacheKey>, entry: Entry, cause: RemovalCause| {
                if cause.was_evicted() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(source) = variant_source(&key, &entry) {
                    unlink(&listener_links, source, &key);
                }
            })
            .build();
        MemoryTier { cache, capacity_bytes, unsettled: Arc::new(AtomicU64::new(0)), evictions, links }
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
        // Linked before moka holds it, so a purge never misses a stored variant; moka's removal notification
        // unlinks it (also when it refuses the value at admission).
        if let Some(source) = variant_source(&key, &entry) {
            *lock(&self.links).entry(source).or_default().entry(key).or_default() += 1;
        }
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

    /// Drops `source` and every variant of it held; returns the keys that were held.
    pub async fn purge_source(&self, source: &CacheKey) -> Vec<CacheKey> {
        let mut keys: Vec<CacheKey> =
            lock(&self.links).get(source).map(|variants| variants.keys().copied().collect()).unwrap_or_default();
        keys.push(*source);
        let mut held = Vec::with_capacity(keys.len());
        for key in keys {
            if self.cache.remove(&key).await.is_some() {
                held.push(key);
            }
        }
        held
    }

    /// Whether `key` is held (without counting as a use).
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.cache.contains_key(key)
    }

    /// Number of sources with variants linked in the side map (tests: it must shrink with the tier).
    pub fn linked_sources(&self) -> usize {
        lock(&self.links).len()
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

    #[tokio::test]
    async fn purge_removes_a_source_and_its_variants_only() {
        let mem = MemoryTier::new(1 << 20);
        let source = CacheKey::from_parts(&[b"source"]);
        let other = CacheKey::from_parts(&[b"other"]);
        mem.insert(source, entry(10).with_source(source)).await;
        mem.insert(other, entry(10).with_source(other)).await;
        let variants: Vec<CacheKey> = (0u8..3).map(|i| CacheKey::from_parts(&[b"v", &[i]])).collect();
        for key in &variants {
            mem.insert(*key, entry(10).with_source(source)).await;
            // Replacing a value keeps one link, not two.
            mem.insert(*key, entry(11).with_source(source)).await;
        }
        let mut purged = mem.purge_source(&source).await;
        purged.sort_unstable();
        let mut want = variants.clone();
        want.push(source);
        want.sort_unstable();
        assert_eq!(purged, want);
        for key in &want {
            assert!(mem.get(key).await.is_none());
        }
        assert!(mem.get(&other).await.is_some());
        mem.run_pending_tasks().await;
        assert_eq!(mem.linked_sources(), 0);
        assert!(mem.purge_source(&source).await.is_empty());
    }

    #[tokio::test]
    async fn the_side_map_shrinks_with_evictions() {
        let mem = MemoryTier::new(100_000);
        for i in 0u32..500 {
            let source = CacheKey::from_parts(&[b"s", &i.to_le_bytes()]);
            mem.insert(CacheKey::from_parts(&[&i.to_le_bytes()]), entry(1_000).with_source(source)).await;
        }
        mem.run_pending_tasks().await;
        // Every linked source still has its variant in the tier: evicted and refused values were unlinked.
        let held = usize::try_from(mem.entry_count()).unwrap_or(usize::MAX);
        assert!(mem.linked_sources() <= held, "{} links for {held} entries", mem.linked_sources());
    }

    #[test]
    fn weight_counts_body_and_clamps() {
        // The body, `image/png` twice (the field and the header value made from it), the Last-Modified made from
        // `stored_at` (29 bytes) and the overhead.
        assert_eq!(weigh(&CacheKey::from_parts(&[]), &entry(1_000)), 1_000 + 9 + 9 + 29 + 1536);
    }
}
