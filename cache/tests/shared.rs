//! The shared tier against `object_store`'s `InMemory` store (the layout, the entry format and its verification,
//! purge records, fill leases), and against an S3 endpoint nobody listens on (the breaker). The fleet itself, real
//! `mirage serve` processes sharing a real S3 server, is tested in the root crate's `tests/fleet.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use mirage_cache::meta;
use mirage_cache::shared::{LeaseClaim, LeaseResult, LookupResult, PurgeFeed, SharedOptions, SharedTier, WriteResult};
use mirage_cache::{CacheKey, Entry, FillClaim, Lookup, MemoryTier, Tier, TieredCache};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

fn options() -> SharedOptions {
    SharedOptions {
        url: "memory:///".to_owned(),
        timeout: Duration::from_secs(1),
        probe_interval: Duration::from_secs(30),
        purge_poll: Duration::from_secs(3600),
        lease_ttl: Duration::from_secs(20),
        purge_retention: Duration::from_secs(30 * 86_400),
        wait_for_queue: false,
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn key(name: &str) -> CacheKey {
    CacheKey::from_parts(&[b"shared-test", name.as_bytes()])
}

/// An original (its own source) or a variant of `source`, fresh for an hour.
fn image(body: &'static [u8], source: CacheKey) -> Entry {
    Entry::image("image/jpeg", Bytes::from_static(body), now(), now() + 3600).with_source(source)
}

/// One node: a memory-only local cache over the shared tier in `store`.
async fn node(store: &Arc<InMemory>, options: &SharedOptions) -> TieredCache {
    let shared = SharedTier::with_store(Arc::clone(store) as Arc<dyn ObjectStore>, &Path::from("blog"), options);
    TieredCache::open(MemoryTier::new(1 << 20), None, Some(shared)).await
}

async fn object(store: &InMemory, path: &str) -> Option<Bytes> {
    match store.get(&Path::from(path)).await {
        Ok(result) => Some(result.bytes().await.unwrap()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(error) => panic!("{path}: {error}"),
    }
}

async fn flush(cache: &TieredCache) {
    assert!(cache.flush_shared(Duration::from_secs(5)).await, "shared writes did not finish");
}

fn stats(cache: &TieredCache) -> &mirage_cache::shared::SharedStats {
    cache.shared().unwrap().stats()
}

#[tokio::test]
async fn originals_and_variants_are_stored_under_their_source_in_the_disk_format() {
    let store = Arc::new(InMemory::new());
    let a = node(&store, &options()).await;
    let (source, variant) = (key("photo.jpg"), key("photo.jpg width=300"));
    a.store(source, image(b"original bytes", source)).await;
    a.store(variant, image(b"variant bytes", source)).await;
    flush(&a).await;
    let hex = source.to_hex();
    let original = object(&store, &format!("blog/v1/{hex}/source")).await.expect("the original is in the store");
    let made = object(&store, &format!("blog/v1/{hex}/v/{}", variant.to_hex())).await.expect("the variant too");
    // The very format of the disk tier: it decodes and verifies as a disk file would, and ends with the body.
    let decoded = meta::decode(&source, original.clone()).unwrap();
    assert_eq!(decoded.body().as_ref(), b"original bytes");
    assert!(original.ends_with(b"original bytes"));
    assert_eq!(meta::decode(&variant, made).unwrap().meta().source(), Some(source));
    assert_eq!(stats(&a).writes(WriteResult::Ok), 2);
    // Negative answers are not shared, and remove what was.
    a.store(source, Entry::not_found(now(), now() + 60).with_source(source)).await;
    flush(&a).await;
    assert_eq!(object(&store, &format!("blog/v1/{hex}/source")).await, None);
}

#[tokio::test]
async fn another_node_reads_it_as_a_shared_hit_and_promotes_it() {
    let store = Arc::new(InMemory::new());
    let (a, b) = (node(&store, &options()).await, node(&store, &options()).await);
    let (source, variant) = (key("a.jpg"), key("a.jpg width=100"));
    a.store(source, image(b"original", source)).await;
    a.store(variant, image(b"variant", source)).await;
    flush(&a).await;
    match b.lookup_with_source(&variant, || source, now()).await {
        Lookup::Fresh(entry, Tier::Shared) => assert_eq!(entry.body().as_ref(), b"variant"),
        other => panic!("expected a fresh shared hit, got {other:?}"),
    }
    assert!(matches!(b.lookup_with_source(&variant, || source, now()).await, Lookup::Fresh(_, Tier::Memory)));
    assert!(matches!(b.lookup_with_source(&source, || source, now()).await, Lookup::Fresh(_, Tier::Shared)));
    assert_eq!(stats(&b).lookups(LookupResult::Hit), 2);
    assert!(matches!(b.lookup_with_source(&key("none"), || key("none"), now()).await, Lookup::Miss));
    assert_eq!(stats(&b).lookups(LookupResult::Miss), 1);
    // A promoted copy is not written back.
    flush(&b).await;
    assert_eq!(stats(&b).writes(WriteResult::Ok), 0);
}

#[tokio::test]
async fn a_newer_shared_copy_replaces_a_stale_local_one() {
    let store = Arc::new(InMemory::new());
    let (a, b) = (node(&store, &options()).await, node(&store, &options()).await);
    let source = key("stale.jpg");
    let expired = Entry::image("image/jpeg", Bytes::from_static(b"old"), now() - 100, now() - 10).with_source(source);
    b.store(source, expired).await;
    flush(&b).await;
    // Another node revalidated it since and wrote the renewed copy back.
    a.store(source, image(b"renewed", source)).await;
    flush(&a).await;
    match b.lookup_with_source(&source, || source, now()).await {
        Lookup::Fresh(entry, Tier::Shared) => assert_eq!(entry.body().as_ref(), b"renewed"),
        other => panic!("expected the renewed shared copy, got {other:?}"),
    }
}

#[tokio::test]
async fn corrupt_or_truncated_objects_are_deleted_and_never_served() {
    let store = Arc::new(InMemory::new());
    let (a, b) = (node(&store, &options()).await, node(&store, &options()).await);
    for (name, damage) in [("flipped", 0usize), ("truncated", 1), ("misplaced", 2)] {
        let source = key(name);
        a.store(source, image(b"some image bytes", source)).await;
        flush(&a).await;
        let path = Path::from(format!("blog/v1/{}/source", source.to_hex()));
        let mut bytes = object(&store, path.as_ref()).await.unwrap().to_vec();
        match damage {
            0 => *bytes.last_mut().unwrap() ^= 1,
            1 => bytes.truncate(bytes.len() - 3),
            // A valid entry, but of another key: not this source's object.
            _ => {
                let other = key("other");
                let entry = image(b"other", other);
                bytes = meta::encode_header(&other, entry.meta());
                bytes.extend_from_slice(b"other");
            }
        }
        store.put(&path, Bytes::from(bytes).into()).await.unwrap();
        assert!(matches!(b.lookup_with_source(&source, || source, now()).await, Lookup::Miss), "{name} was served");
        flush(&b).await;
        assert_eq!(object(&store, path.as_ref()).await, None, "{name} was not deleted");
    }
    assert_eq!(stats(&b).lookups(LookupResult::Corrupt), 3);
}

#[tokio::test]
async fn a_purge_deletes_the_sources_prefix_and_reaches_the_other_nodes_once() {
    let store = Arc::new(InMemory::new());
    let (a, b) = (node(&store, &options()).await, node(&store, &options()).await);
    let (source, variant, other) = (key("p.jpg"), key("p.jpg width=10"), key("q.jpg"));
    for cache in [&a, &b] {
        cache.store(source, image(b"original", source)).await;
        cache.store(variant, image(b"variant", source)).await;
        cache.store(other, image(b"another", other)).await;
        flush(cache).await;
    }
    let (mut feed_a, mut feed_b) =
        (PurgeFeed::new(a.shared().unwrap().clone(), None), PurgeFeed::new(b.shared().unwrap().clone(), None));
    let outcome = a.purge_everywhere(&source).await;
    assert_eq!(outcome.entries, 2, "the original and the variant, locally");
    let shared = outcome.shared.unwrap();
    assert!(shared.recorded);
    assert_eq!(shared.objects, 2);
    let listed: Vec<String> =
        store.list(Some(&Path::from("blog/v1"))).map(|meta| meta.unwrap().location.to_string()).collect().await;
    let hex = source.to_hex();
    assert!(
        listed.iter().filter(|path| !path.starts_with("blog/v1/purges/")).all(|path| !path.contains(&hex)),
        "the source's prefix is gone: {listed:?}"
    );
    assert!(listed.iter().any(|path| path.contains(&other.to_hex())), "other sources stay: {listed:?}");
    let records: Vec<&String> = listed.iter().filter(|path| path.starts_with("blog/v1/purges/")).collect();
    assert_eq!(records.len(), 1);
    assert!(records[0].ends_with(&format!("-{}", source.to_hex())));
    // B hears of it once; A does not purge itself again.
    assert_eq!(feed_b.poll().await, Some(vec![source]));
    assert_eq!(feed_b.poll().await, Some(vec![]));
    assert_eq!(feed_a.poll().await, Some(vec![]));
    // (The follower task applies what the feed returns; here it is applied by hand.)
    assert_eq!(b.purge(&source).await, 2);
    assert!(matches!(b.lookup_with_source(&source, || source, now()).await, Lookup::Miss));
    assert!(matches!(b.lookup_with_source(&other, || other, now()).await, Lookup::Fresh(_, Tier::Memory)));
}

#[tokio::test]
async fn purge_records_past_the_retention_are_deleted_by_whoever_lists_them() {
    let store = Arc::new(InMemory::new());
    let short = SharedOptions { purge_retention: Duration::from_millis(1), ..options() };
    let a = node(&store, &short).await;
    let b = node(&store, &short).await;
    a.purge_everywhere(&key("old.jpg")).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut feed = PurgeFeed::new(b.shared().unwrap().clone(), None);
    assert_eq!(feed.poll().await, Some(vec![]), "a record past the retention is not applied");
    let left: Vec<_> = store.list(Some(&Path::from("blog/v1/purges"))).collect().await;
    assert!(left.is_empty(), "the old record was not deleted: {left:?}");
}

#[tokio::test]
async fn a_node_with_a_cursor_applies_what_it_missed_and_one_without_starts_from_now() {
    let store = Arc::new(InMemory::new());
    let a = node(&store, &options()).await;
    let dir = tempfile::tempdir().unwrap();
    // A node that was up before, then went down: its cursor is in its cache directory.
    let mut before = PurgeFeed::new(a.shared().unwrap().clone(), Some(dir.path().to_owned()));
    assert_eq!(before.poll().await, Some(vec![]));
    let cursor = dir.path().join(mirage_cache::shared::CURSOR_FILE);
    let started = Instant::now();
    while !cursor.exists() {
        assert!(started.elapsed() < Duration::from_secs(5), "the cursor was not saved");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b = node(&store, &options()).await;
    b.purge_everywhere(&key("while-down.jpg")).await;
    let mut restarted = PurgeFeed::new(a.shared().unwrap().clone(), Some(dir.path().to_owned()));
    assert_eq!(restarted.poll().await, Some(vec![key("while-down.jpg")]));
}

#[tokio::test]
async fn one_lease_per_source_released_when_dropped_and_taken_over_when_expired() {
    let store = Arc::new(InMemory::new());
    let (a, b) = (node(&store, &options()).await, node(&store, &options()).await);
    let (shared_a, shared_b) = (a.shared().unwrap(), b.shared().unwrap());
    let source = key("leased.jpg");
    let LeaseClaim::Won(lease) = shared_a.claim_lease(&source).await else { panic!("the first claim wins") };
    let LeaseClaim::Lost { expires_at } = shared_b.claim_lease(&source).await else { panic!("the second loses") };
    let in_20s = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 + 20_000;
    assert!(expires_at <= in_20s && expires_at + 1000 > in_20s, "expiry is --fetch-timeout away");
    drop(lease);
    let lease_path = format!("blog/v1/{}/lease", source.to_hex());
    let started = Instant::now();
    while object(&store, &lease_path).await.is_some() {
        assert!(started.elapsed() < Duration::from_secs(5), "the dropped lease was not released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(shared_b.claim_lease(&source).await, LeaseClaim::Won(_)));
    // A lease whose holder died: it expires (here at once) and is taken over after the grace.
    let brief = SharedOptions { lease_ttl: Duration::ZERO, ..options() };
    let dying = node(&store, &brief).await;
    let other = key("abandoned.jpg");
    let LeaseClaim::Won(abandoned) = dying.shared().unwrap().claim_lease(&other).await else { panic!() };
    std::mem::forget(abandoned);
    assert!(matches!(shared_a.claim_lease(&other).await, LeaseClaim::Lost { .. }), "within the grace");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(matches!(shared_a.claim_lease(&other).await, LeaseClaim::Won(_)));
    assert_eq!(shared_a.stats().leases(LeaseResult::TakenOver), 1);
}

#[tokio::test]
async fn a_node_that_loses_the_lease_gets_the_winners_entry_without_fetching() {
    let store = Arc::new(InMemory::new());
    let (a, b) = (node(&store, &options()).await, node(&store, &options()).await);
    let source = key("raced.jpg");
    let FillClaim::Fetch(Some(lease)) = a.claim_fill(&source, now()).await else { panic!("a wins") };
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.claim_fill(&source, now()).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!waiting.is_finished(), "b waits while a holds the lease");
    // A's fetch arrives: it stores, and lets go of the lease, which is released once the write has landed.
    a.store(source, image(b"fetched once", source)).await;
    drop(lease);
    match tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap() {
        FillClaim::Filled(entry) => assert_eq!(entry.body().as_ref(), b"fetched once"),
        FillClaim::Fetch(_) => panic!("b was told to fetch"),
    }
    assert!(matches!(b.lookup(&source, now()).await, Lookup::Fresh(_, Tier::Memory)), "promoted locally");
    assert_eq!(stats(&b).leases(LeaseResult::Lost), 1);
}

#[tokio::test]
async fn a_lease_released_without_an_entry_lets_the_waiter_fetch() {
    let store = Arc::new(InMemory::new());
    let (a, b) = (node(&store, &options()).await, node(&store, &options()).await);
    let source = key("failed.jpg");
    let FillClaim::Fetch(Some(lease)) = a.claim_fill(&source, now()).await else { panic!("a wins") };
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.claim_fill(&source, now()).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A's fetch failed: nothing is stored, the lease goes.
    drop(lease);
    let claim = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
    assert!(matches!(claim, FillClaim::Fetch(Some(_))), "b claims the lease itself: {claim:?}");
}

#[tokio::test]
async fn an_unreachable_store_costs_one_timeout_then_is_skipped() {
    // An S3 endpoint on a loopback port nobody listens on: every request is refused.
    mirage_cache::shared::install_tls_provider();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("fleet")
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_allow_http(true)
        .with_retry(object_store::RetryConfig { max_retries: 0, ..Default::default() })
        .build()
        .unwrap();
    let shared = SharedTier::with_store(Arc::new(store), &Path::from("p"), &options());
    let cache = TieredCache::open(MemoryTier::new(1 << 20), None, Some(shared.clone())).await;
    let source = key("down.jpg");
    let started = Instant::now();
    assert!(matches!(cache.lookup_with_source(&source, || source, now()).await, Lookup::Miss));
    assert!(started.elapsed() <= Duration::from_millis(1500), "bounded by --shared-timeout");
    assert!(shared.breaker_open());
    for _ in 0..10 {
        let started = Instant::now();
        assert!(matches!(cache.lookup_with_source(&source, || source, now()).await, Lookup::Miss));
        assert!(started.elapsed() < Duration::from_millis(50), "skipped while the breaker is open");
    }
    assert!(shared.stats().lookups(LookupResult::Skipped) >= 10);
    // Writes and leases are skipped too, never an error for the caller.
    cache.store(source, image(b"local only", source)).await;
    assert!(matches!(cache.lookup_with_source(&source, || source, now()).await, Lookup::Fresh(_, Tier::Memory)));
    assert!(matches!(cache.claim_fill(&key("new.jpg"), now()).await, FillClaim::Fetch(None)));
    flush(&cache).await;
    assert_eq!(shared.stats().writes(WriteResult::Ok), 0);
}
