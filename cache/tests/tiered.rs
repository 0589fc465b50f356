//! The tiered front: promotion, freshness, what reaches disk, flush, and a failing disk.

use std::fs;

use bytes::Bytes;
use mirage_cache::{CacheKey, Coalescer, DiskTier, Entry, Lookup, MemoryTier, Tier, TieredCache};

fn key(i: u32) -> CacheKey {
    CacheKey::from_parts(&[b"tiered-test", &i.to_le_bytes()])
}

fn image(expires_at: u64) -> Entry {
    Entry::image("image/jpeg", Bytes::from_static(b"jpeg bytes"), 0, expires_at)
}

fn not_found() -> Entry {
    Entry::not_found(0, 100)
}

fn cache_at(root: &std::path::Path) -> TieredCache {
    let disk = DiskTier::open(root, 1 << 20).unwrap();
    TieredCache::new(MemoryTier::new(1 << 20), Some(disk))
}

fn tier_of(l: &Lookup) -> Option<(bool, Tier)> {
    match l {
        Lookup::Fresh(_, t) => Some((true, *t)),
        Lookup::Stale(_, t) => Some((false, *t)),
        Lookup::Miss => None,
    }
}

#[test]
fn tiered_cache_is_send_sync_and_fill_once_is_send() {
    fn send_sync<T: Send + Sync + Clone>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<TieredCache>();
    let cache = TieredCache::new(MemoryTier::new(1024), None);
    send_sync::<Coalescer<u8, ()>>();
    let coalescer = Coalescer::new();
    let fut = coalescer.fill_once(key(0), || async { Ok::<u8, ()>(1) });
    send(&fut);
    let k = key(0);
    let lookup = cache.lookup(&k, 0);
    send(&lookup);
    let store = cache.store(key(0), image(1));
    send(&store);
}

#[tokio::test]
async fn disk_hit_is_promoted_to_memory() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = cache_at(dir.path());
        cache.store(key(1), image(100)).await;
        cache.flush().await;
    }
    // A new process: empty memory, same disk.
    let cache = cache_at(dir.path());
    assert_eq!(cache.memory().entry_count(), 0);
    let first = cache.lookup(&key(1), 50).await;
    assert_eq!(tier_of(&first), Some((true, Tier::Disk)));
    let second = cache.lookup(&key(1), 50).await;
    assert_eq!(tier_of(&second), Some((true, Tier::Memory)));
    if let Lookup::Fresh(e, _) = second {
        assert_eq!(&e.body()[..], b"jpeg bytes");
    }
    assert_eq!(tier_of(&cache.lookup(&key(2), 50).await), None);
}

#[tokio::test]
async fn fresh_then_stale_by_time() {
    let cache = TieredCache::new(MemoryTier::new(1 << 20), None);
    cache.store(key(1), image(100)).await;
    assert_eq!(tier_of(&cache.lookup(&key(1), 99).await), Some((true, Tier::Memory)));
    assert_eq!(tier_of(&cache.lookup(&key(1), 100).await), Some((false, Tier::Memory)));
    // Same rule for entries found on disk.
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(dir.path());
    cache.store(key(1), image(100)).await;
    cache.flush().await;
    cache.memory().remove(&key(1)).await;
    assert_eq!(tier_of(&cache.lookup(&key(1), 100).await), Some((false, Tier::Disk)));
}

#[tokio::test]
async fn not_found_stays_in_memory_and_clears_old_disk_copy() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(dir.path());
    cache.store(key(1), not_found()).await;
    cache.flush().await;
    let disk = cache.disk().unwrap();
    assert_eq!(disk.entry_count(), 0);
    assert!(!disk.path_of(&key(1)).exists());
    assert_eq!(tier_of(&cache.lookup(&key(1), 5).await), Some((true, Tier::Memory)));

    cache.store(key(2), image(100)).await;
    cache.flush().await;
    assert!(disk.path_of(&key(2)).exists());
    cache.store(key(2), not_found()).await;
    cache.flush().await;
    assert!(!disk.path_of(&key(2)).exists(), "stale image left on disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_queued_writes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(dir.path());
    for i in 0..20 {
        cache.store(key(i), image(100)).await;
    }
    cache.flush().await;
    let disk = cache.disk().unwrap();
    assert_eq!(disk.entry_count(), 20);
    for i in 0..20 {
        assert!(disk.path_of(&key(i)).exists());
    }
}

#[tokio::test]
async fn failing_disk_degrades_to_memory_only() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(dir.path());
    // Tests run as root, where chmod does not stop writes; a regular file where the temp
    // directory should be makes every write fail regardless of privileges.
    let tmp = dir.path().join("tmp");
    fs::remove_dir(&tmp).unwrap();
    fs::write(&tmp, b"in the way").unwrap();

    cache.store(key(1), image(100)).await;
    cache.flush().await;
    assert!(cache.disk_degraded());
    assert!(!cache.disk().unwrap().path_of(&key(1)).exists());
    assert_eq!(tier_of(&cache.lookup(&key(1), 5).await), Some((true, Tier::Memory)));
    cache.memory().remove(&key(1)).await;
    assert_eq!(tier_of(&cache.lookup(&key(1), 5).await), None);

    // Recovery clears the flag and writes reach the disk again.
    fs::remove_file(&tmp).unwrap();
    fs::create_dir(&tmp).unwrap();
    cache.store(key(2), image(100)).await;
    cache.flush().await;
    assert!(!cache.disk_degraded());
    assert!(cache.disk().unwrap().path_of(&key(2)).exists());
}

#[tokio::test]
async fn unreadable_entry_is_a_miss_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(dir.path());
    // A directory where the entry file should be: open succeeds, read fails (EISDIR).
    fs::create_dir_all(cache.disk().unwrap().path_of(&key(1))).unwrap();
    assert_eq!(tier_of(&cache.lookup(&key(1), 5).await), None);
    assert!(cache.disk_degraded());
}

#[tokio::test]
async fn works_without_a_disk() {
    let cache = TieredCache::new(MemoryTier::new(1 << 20), None);
    assert!(cache.disk().is_none());
    cache.store(key(1), image(100)).await;
    cache.flush().await;
    assert_eq!(tier_of(&cache.lookup(&key(1), 5).await), Some((true, Tier::Memory)));
    assert!(!cache.disk_degraded());
}

fn big(fill: u8) -> Entry {
    Entry::image("image/jpeg", Bytes::from(vec![fill; 100_000]), 0, u64::MAX)
}

#[tokio::test]
async fn memory_hits_keep_an_entry_on_disk_past_one_off_entries() {
    let dir = tempfile::tempdir().unwrap();
    // Room for three of these entries, not four.
    let disk = DiskTier::open(dir.path(), 380_000).unwrap();
    let cache = TieredCache::new(MemoryTier::new(1 << 20), Some(disk));
    cache.store(key(0), big(0)).await;
    cache.flush().await;
    for _ in 0..10 {
        assert!(matches!(cache.lookup(&key(0), 1).await, Lookup::Fresh(_, Tier::Memory)));
    }
    for i in 1..4 {
        cache.store(key(i), big(1)).await;
        cache.flush().await;
    }
    let disk = cache.disk().unwrap();
    assert_eq!(disk.entry_count(), 3);
    assert!(disk.path_of(&key(0)).exists(), "the entry memory served was evicted from disk");
    assert!(!disk.path_of(&key(1)).exists());
}

#[tokio::test]
async fn answers_from_disk_before_the_index_is_built_and_is_ready_after() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = cache_at(dir.path());
        cache.store(key(1), image(100)).await;
        cache.flush().await;
    }
    let disk = DiskTier::open_unindexed(dir.path(), 1 << 20).unwrap();
    let cache = TieredCache::with_timeout(MemoryTier::new(1 << 20), Some(disk), std::time::Duration::from_secs(2));
    assert!(!cache.is_ready());
    assert!(matches!(cache.lookup(&key(1), 1).await, Lookup::Fresh(_, Tier::Disk)));
    cache.disk().unwrap().build_index().unwrap();
    assert!(cache.is_ready());
    assert_eq!(cache.disk().unwrap().entry_count(), 1);
}

#[tokio::test]
async fn nothing_is_written_after_close() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(dir.path());
    cache.close();
    cache.store(key(1), image(100)).await;
    cache.flush().await;
    assert!(!cache.disk().unwrap().path_of(&key(1)).exists());
    assert!(matches!(cache.lookup(&key(1), 1).await, Lookup::Fresh(_, Tier::Memory)));
}

#[tokio::test]
async fn a_bypassed_disk_is_neither_read_nor_written_and_drops_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(dir.path());
    cache.store(key(1), image(100)).await;
    cache.flush().await;
    let memory_only = TieredCache::new(MemoryTier::new(1 << 20), Some(DiskTier::open(dir.path(), 1 << 20).unwrap()));
    for _ in 0..mirage_cache::health::BYPASS_AFTER {
        memory_only.disk_health().timed_out("read", std::time::Duration::from_secs(2));
    }
    assert!(memory_only.disk_health().bypassed());
    assert!(memory_only.is_ready(), "a bypassed disk does not hold readiness back");
    assert!(matches!(memory_only.lookup(&key(1), 1).await, Lookup::Miss), "read a bypassed disk");
    memory_only.store(key(2), image(100)).await;
    memory_only.flush().await;
    assert_eq!(memory_only.disk_health().dropped_writes(), 1);
    assert!(!memory_only.disk().unwrap().path_of(&key(2)).exists());
}

/// An original and three variants of it, plus an unrelated original, stored and flushed to disk.
async fn original_and_variants(cache: &TieredCache) -> (CacheKey, Vec<CacheKey>, CacheKey) {
    let source = key(100);
    let other = key(200);
    cache.store(source, image(u64::MAX).with_source(source)).await;
    cache.store(other, image(u64::MAX).with_source(other)).await;
    let variants: Vec<CacheKey> = (101..104).map(key).collect();
    for variant in &variants {
        cache.store(*variant, image(u64::MAX).with_source(source)).await;
    }
    cache.flush().await;
    (source, variants, other)
}

#[tokio::test]
async fn purge_removes_a_source_and_every_variant_from_both_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(dir.path());
    let (source, variants, other) = original_and_variants(&cache).await;
    assert_eq!(cache.purge(&source).await, 4);
    for key in variants.iter().chain([&source]) {
        assert!(matches!(cache.lookup(key, 0).await, Lookup::Miss), "{key:?}");
        assert!(!cache.disk().unwrap().path_of(key).exists());
    }
    assert!(matches!(cache.lookup(&other, 0).await, Lookup::Fresh(..)));
    assert_eq!(cache.purge(&source).await, 0);
}

#[tokio::test]
async fn purge_after_a_restart_finds_variants_from_their_headers() {
    let dir = tempfile::tempdir().unwrap();
    let (source, variants, other) = original_and_variants(&cache_at(dir.path())).await;
    // A new process: empty memory, and the links come from the files' headers when the index is built (here by
    // the purge itself, which must not run on a partial index).
    let disk = DiskTier::open_unindexed(dir.path(), 1 << 30).unwrap();
    let cache = TieredCache::new(MemoryTier::new(1 << 20), Some(disk));
    assert_eq!(cache.purge(&source).await, 4);
    for key in variants.iter().chain([&source]) {
        assert!(matches!(cache.lookup(key, 0).await, Lookup::Miss), "{key:?}");
    }
    assert!(matches!(cache.lookup(&other, 0).await, Lookup::Fresh(_, Tier::Disk)));
}

#[tokio::test]
async fn a_store_begun_before_a_purge_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache_at(dir.path());
    let source = key(300);
    let variant = key(301);
    let since = cache.purge_generation(&source);
    cache.purge(&source).await;
    cache.store_unless_purged(variant, image(u64::MAX).with_source(source), since).await;
    cache.store_unless_purged(source, image(u64::MAX).with_source(source), since).await;
    cache.flush().await;
    assert!(matches!(cache.lookup(&variant, 0).await, Lookup::Miss));
    assert!(matches!(cache.lookup(&source, 0).await, Lookup::Miss));
    // A fill that starts after the purge stores as usual.
    let since = cache.purge_generation(&source);
    cache.store_unless_purged(source, image(u64::MAX).with_source(source), since).await;
    cache.flush().await;
    assert!(cache.disk().unwrap().path_of(&source).exists());
    assert!(matches!(cache.lookup(&source, 0).await, Lookup::Fresh(..)));
}
