//! The tiered front: memory, then disk; stores to both.
//!
//! Storage failures never surface as errors: a broken disk makes the service slower
//! (memory-only), not down; so does a hung one: every disk operation is bounded by a timeout
//! (see `health`).

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::budget::OwnerLock;
use crate::disk::{DiskError, DiskTier};
use crate::health::DiskHealth;
use crate::key::CacheKey;
use crate::memory::MemoryTier;
use crate::meta::{Entry, EntryKind};
use crate::shared::{FillLease, LeaseClaim, PurgeFeed, SharedPurge, SharedTier, StillWanted, Waited};
use crate::touch::{TOUCH_QUEUE, Touches};

/// Disk writes allowed to be queued or running at once. Beyond this, `store` waits for a slot:
/// back-pressure on the (already bounded) fills, rather than a queue that grows without bound
/// behind a slow disk or entries that silently never reach it (the warm command relies on that).
const MAX_PENDING_WRITES: usize = 32;
/// How often queued touches reach the disk (also before every eviction decision and at `flush`).
const TOUCH_INTERVAL: Duration = Duration::from_secs(5);

/// Disk reads in flight at most; past it a lookup skips the disk (a miss) instead of queueing behind it.
const MAX_PENDING_READS: usize = 64;
/// Opening the cache directory may take longer than one operation (creating it, clearing crash leftovers).
const MIN_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// The timeout of caches built with `new`, which are given an opened tier.
const DEFAULT_DISK_TIMEOUT: Duration = Duration::from_secs(2);

/// Purge generations are kept in this many stripes, chosen by a source key's first byte (see `PurgeGenerations`).
const PURGE_STRIPES: usize = 256;

/// What a store made by a fill checks against: the purge generation of its source when the fill began. A purge of
/// that source since then (or of another source in the same stripe, rarely) makes the store a no-op, so a fill in
/// flight during a purge does not put back what the purge removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PurgeGeneration {
    stripe: usize,
    value: u64,
}

/// Counters bumped by each purge: one per stripe of source keys, and one for all (a disk hit being promoted to
/// memory does not know its source before the read). Bounded and lock-free: a fixed array of atomics, never a
/// map that grows with what was purged. Sharing a stripe only costs an unrelated fill its store (a later miss).
struct PurgeGenerations {
    stripes: [AtomicU64; PURGE_STRIPES],
    /// Bumped when any purge starts and again when it ends.
    any: AtomicU64,
    /// Purges under way.
    running: AtomicU64,
}

impl PurgeGenerations {
    fn new() -> PurgeGenerations {
        PurgeGenerations {
            stripes: std::array::from_fn(|_| AtomicU64::new(0)),
            any: AtomicU64::new(0),
            running: AtomicU64::new(0),
        }
    }

    /// Whether a copy read from disk while `any` was `before` may have been missed by a purge: one started or
    /// ended since, or one is running (it may not have reached the disk yet, or a racing write may be undone).
    fn may_have_missed(&self, before: u64) -> bool {
        self.running.load(Ordering::SeqCst) > 0 || self.any.load(Ordering::SeqCst) != before
    }
}

/// Ends a purge when dropped, also when the purging task is cancelled midway: a purge left "running" for ever
/// would cost every later disk hit its promotion to memory.
struct PurgeRunning<'a>(&'a PurgeGenerations);

impl Drop for PurgeRunning<'_> {
    fn drop(&mut self) {
        self.0.any.fetch_add(1, Ordering::SeqCst);
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PurgeGenerations {
    fn stripe(source: &CacheKey) -> usize {
        usize::from(source.as_bytes()[0]) % PURGE_STRIPES
    }

    fn current(&self, source: &CacheKey) -> PurgeGeneration {
        let stripe = PurgeGenerations::stripe(source);
        PurgeGeneration { stripe, value: self.stripes[stripe].load(Ordering::SeqCst) }
    }

    /// True when a purge touched the generation's stripe after it was taken.
    fn purged_since(&self, since: PurgeGeneration) -> bool {
        self.stripes[since.stripe].load(Ordering::SeqCst) != since.value
    }

    /// Called by a purge before it removes anything: a store that checks after writing then sees the bump
    /// whenever its write could have come after the purge's removal (see `TieredCache::store_unless_purged`).
    fn begin(&self, source: &CacheKey) -> PurgeRunning<'_> {
        self.running.fetch_add(1, Ordering::SeqCst);
        self.stripes[PurgeGenerations::stripe(source)].fetch_add(1, Ordering::SeqCst);
        self.any.fetch_add(1, Ordering::SeqCst);
        PurgeRunning(self)
    }
}

/// How to open the disk tier.
#[derive(Clone, Debug)]
pub struct DiskOptions {
    /// The cache directory.
    pub root: PathBuf,
    /// Its byte budget.
    pub capacity: u64,
    /// Record the budget in the directory (the server does; `warm` only reads it).
    pub record_budget: bool,
    /// Bound on each disk operation.
    pub timeout: Duration,
}

/// Which tier answered a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// The memory tier.
    Memory,
    /// The disk tier (the entry is now also in memory).
    Disk,
    /// The shared tier of the fleet (the entry is now also in memory and on disk).
    Shared,
}

/// What a purge removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PurgeOutcome {
    /// Local entries removed (memory and disk, each entry once).
    pub entries: usize,
    /// What the purge did in the shared tier, when there is one.
    pub shared: Option<SharedPurge>,
}

/// Whether a fill goes upstream, or another node's fill answered it.
#[derive(Debug)]
pub enum FillClaim {
    /// Go upstream; with the cluster-wide lease when the shared tier gave one (keep it until the entry is stored).
    Fetch(Option<FillLease>),
    /// Another node fetched it meanwhile: its entry, from the shared tier (now also stored locally).
    Filled(Entry),
}

/// The result of a lookup.
#[derive(Clone, Debug)]
pub enum Lookup {
    /// A fresh entry: serve it.
    Fresh(Entry, Tier),
    /// An expired entry: revalidate or refetch (its validators are in the meta).
    Stale(Entry, Tier),
    /// Nothing cached (or the disk failed, which is treated the same).
    Miss,
}

struct Inner {
    memory: MemoryTier,
    disk: Option<Arc<DiskTier>>,
    write_permits: Arc<Semaphore>,
    read_permits: Arc<Semaphore>,
    /// Bound on each disk operation.
    timeout: Duration,
    health: Arc<DiskHealth>,
    /// Set by `close`: from then on nothing is written to disk.
    closed: AtomicBool,
    /// Set on the first disk failure, cleared by the next successful write; logs only on
    /// transitions so a full or read-only disk does not flood the log.
    disk_degraded: AtomicBool,
    /// Memory hits report their keys here, so the disk tier does not evict what memory serves most; `None`
    /// without a disk tier.
    touches: Option<Touches>,
    pending_touches: Mutex<Option<Receiver<CacheKey>>>,
    /// The cache directory's owner lock while this process (a server) owns it; released at `close`.
    owner: Mutex<Option<OwnerLock>>,
    /// Bumped by purges; checked by stores from fills and by disk-hit promotion.
    purges: PurgeGenerations,
    /// The fleet's shared tier, behind the local ones (`--shared-cache`).
    shared: Option<SharedTier>,
}

impl Inner {
    /// Applies the queued touches to the disk tier (blocking: call off the reactor). Duplicates collapse.
    fn apply_touches(&self) {
        let Some(disk) = self.disk.as_deref() else { return };
        if let Some(touches) = &self.touches {
            touches.forget_queued();
        }
        let mut keys = {
            let pending = self.pending_touches.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(receiver) = pending.as_ref() else { return };
            receiver.try_iter().take(TOUCH_QUEUE).collect::<Vec<_>>()
        };
        if keys.is_empty() {
            return;
        }
        keys.sort_unstable();
        keys.dedup();
        disk.touch_many(&keys);
    }

    fn disk_failed(&self, op: &str, err: &dyn fmt::Display) {
        if self.disk_degraded.swap(true, Ordering::Relaxed) {
            tracing::debug!(op, error = %err, "disk cache still failing");
        } else {
            tracing::warn!(op, error = %err, "disk cache failing; continuing memory-only");
        }
    }

    fn disk_ok(&self) {
        if self.disk_degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("disk cache writes succeeding again");
        }
    }
}

/// Memory over optional disk. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct TieredCache {
    inner: Arc<Inner>,
}

impl fmt::Debug for TieredCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredCache")
            .field("memory", &self.inner.memory)
            .field("disk", &self.inner.disk)
            .field("disk_degraded", &self.disk_degraded())
            .finish_non_exhaustive()
    }
}

impl TieredCache {
    /// Builds the front over `memory` and, if given, `disk`.
    ///
    /// With a disk tier, spawns the task that applies memory hits to the disk's recency every few seconds
    /// (when a Tokio runtime is running; otherwise they are applied at writes and `flush`).
    pub fn new(memory: MemoryTier, disk: Option<DiskTier>) -> TieredCache {
        TieredCache::with_timeout(memory, disk, DEFAULT_DISK_TIMEOUT)
    }

    /// Opens the disk tier as `options` say, without scanning it: the cache answers at once (a disk read
    /// needs no index, the entry's checksum vouches for it) while the index is built in the background
    /// (`is_ready` tells when). A directory that cannot be opened, or not in time, is logged and left out:
    /// the service runs memory-only rather than not at all.
    ///
    /// With a shared tier, also checks the store in the background (logging whether it answers) and follows its
    /// purge records every `--purge-poll`.
    pub async fn open(memory: MemoryTier, options: Option<DiskOptions>, shared: Option<SharedTier>) -> TieredCache {
        let cache_dir = options.as_ref().map(|options| options.root.clone());
        let cache = TieredCache::open_local(memory, options, shared.clone()).await;
        if let Some(shared) = shared {
            let checking = shared.clone();
            tokio::spawn(async move { checking.check().await });
            let feed = PurgeFeed::new(shared, cache_dir);
            tokio::spawn(follow_purges(Arc::downgrade(&cache.inner), feed));
        }
        cache
    }

    async fn open_local(memory: MemoryTier, options: Option<DiskOptions>, shared: Option<SharedTier>) -> TieredCache {
        let Some(options) = options else {
            return TieredCache::build(memory, None, DEFAULT_DISK_TIMEOUT, None, shared);
        };
        let timeout = options.timeout;
        let root = options.root.clone();
        let opening = tokio::task::spawn_blocking(move || {
            let disk = DiskTier::open_unindexed(&options.root, options.capacity)?;
            let mut owner = None;
            if options.record_budget {
                // The owner records its budget; one started beside a running owner (same budget, or the
                // configuration would have refused it) leaves the record alone.
                match crate::budget::try_own(&options.root) {
                    Ok(Some(lock)) => owner = Some(lock),
                    Ok(None) => {
                        tracing::info!(dir = %options.root.display(), "another server owns the cache directory");
                    }
                    Err(error) => {
                        tracing::warn!(dir = %options.root.display(), %error, "cannot lock the cache directory");
                    }
                }
                if owner.is_some()
                    && let Err(error) = crate::budget::record(&options.root, options.capacity)
                {
                    tracing::warn!(dir = %options.root.display(), %error, "cannot record the disk budget");
                }
            }
            Ok::<_, DiskError>((disk, owner))
        });
        let (disk, owner) = match tokio::time::timeout(timeout.max(MIN_OPEN_TIMEOUT), opening).await {
            Ok(Ok(Ok((disk, owner)))) => (Some(disk), owner),
            Ok(Ok(Err(error))) => {
                tracing::warn!(dir = %root.display(), %error, "disk cache unavailable; running memory-only");
                (None, None)
            }
            Ok(Err(error)) => {
                tracing::warn!(dir = %root.display(), %error, "opening the disk cache panicked; running memory-only");
                (None, None)
            }
            Err(_) => {
                tracing::warn!(dir = %root.display(), "disk cache did not open in time; running memory-only");
                (None, None)
            }
        };
        let cache = TieredCache::build(memory, disk, timeout, owner, shared);
        if let Some(disk) = cache.inner.disk.clone() {
            // Minutes with millions of entries: off the start-up path, on a blocking thread.
            tokio::task::spawn_blocking(move || {
                let _ = disk.build_index();
            });
        }
        cache
    }

    /// `new` with a bound on each disk operation.
    pub fn with_timeout(memory: MemoryTier, disk: Option<DiskTier>, timeout: Duration) -> TieredCache {
        TieredCache::build(memory, disk, timeout, None, None)
    }

    fn build(
        memory: MemoryTier,
        disk: Option<DiskTier>,
        timeout: Duration,
        owner: Option<OwnerLock>,
        shared: Option<SharedTier>,
    ) -> TieredCache {
        let (touches, pending) = match disk {
            Some(_) => {
                let (touches, receiver) = Touches::new();
                (Some(touches), Some(receiver))
            }
            None => (None, None),
        };
        let cache = TieredCache {
            inner: Arc::new(Inner {
                memory,
                disk: disk.map(Arc::new),
                write_permits: Arc::new(Semaphore::new(MAX_PENDING_WRITES)),
                read_permits: Arc::new(Semaphore::new(MAX_PENDING_READS)),
                timeout,
                health: Arc::new(DiskHealth::default()),
                closed: AtomicBool::new(false),
                disk_degraded: AtomicBool::new(false),
                touches,
                pending_touches: Mutex::new(pending),
                owner: Mutex::new(owner),
                purges: PurgeGenerations::new(),
                shared,
            }),
        };
        if cache.inner.disk.is_some()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(apply_touches_periodically(Arc::downgrade(&cache.inner)));
        }
        cache
    }

    /// The memory tier.
    pub fn memory(&self) -> &MemoryTier {
        &self.inner.memory
    }

    /// The disk tier, if configured.
    pub fn disk(&self) -> Option<&DiskTier> {
        self.inner.disk.as_deref()
    }

    /// The fleet's shared tier, if configured.
    pub fn shared(&self) -> Option<&SharedTier> {
        self.inner.shared.as_ref()
    }

    /// True after a disk failure until the next successful disk write (for health/metrics).
    pub fn disk_degraded(&self) -> bool {
        self.inner.disk_degraded.load(Ordering::Relaxed)
    }

    /// The disk tier's timeout counts and bypass state.
    pub fn disk_health(&self) -> &DiskHealth {
        &self.inner.health
    }

    /// Ready to serve at full speed: the disk index is built, or there is no disk tier, or it is bypassed
    /// (memory-only is as ready as this process will get until the disk answers again).
    pub fn is_ready(&self) -> bool {
        self.inner.disk.as_deref().is_none_or(DiskTier::is_indexed) || self.inner.health.bypassed()
    }

    /// The disk tier when it may be used now: present and not bypassed. While it is bypassed, starts a probe
    /// when one is due.
    fn usable_disk(&self) -> Option<Arc<DiskTier>> {
        let disk = self.inner.disk.as_ref()?;
        if !self.inner.health.bypassed() {
            return Some(Arc::clone(disk));
        }
        if self.inner.health.claim_probe() {
            let (disk, health, timeout) = (Arc::clone(disk), Arc::clone(&self.inner.health), self.inner.timeout);
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                // Awaited to the end, however long: the next probe starts only after this one returned.
                let answered = tokio::task::spawn_blocking(move || disk.probe()).await;
                health.probe_done(matches!(answered, Ok(Ok(()))) && started.elapsed() <= timeout);
            });
        }
        None
    }

    /// Stops writing to disk: stores from now on stay in memory (shutdown, after the final flush began).
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        // Nothing more is written: a server started after this one may record its own budget.
        drop(self.inner.owner.lock().unwrap_or_else(PoisonError::into_inner).take());
    }

    /// Looks in memory, then on disk (off the reactor); a disk hit is promoted to memory.
    /// Fresh or stale is decided by `entry.is_fresh(now)`.
    pub async fn lookup(&self, key: &CacheKey, now: u64) -> Lookup {
        let classify = |entry: Entry, tier| {
            if entry.is_fresh(now) { Lookup::Fresh(entry, tier) } else { Lookup::Stale(entry, tier) }
        };
        if let Some(entry) = self.inner.memory.get(key).await {
            if let Some(touches) = &self.inner.touches {
                // Never blocks and never allocates (a bounded ring of 32-byte keys); a full queue drops it.
                touches.touch(key);
            }
            return classify(entry, Tier::Memory);
        }
        let Some(disk) = self.usable_disk() else {
            return Lookup::Miss;
        };
        // Past MAX_PENDING_READS (a slow disk), skip it rather than queue: the permit moves into the blocking
        // read, so a hung read keeps holding it and the number of threads a hung disk can pin stays bounded.
        let Ok(permit) = Arc::clone(&self.inner.read_permits).try_acquire_owned() else {
            return Lookup::Miss;
        };
        let k = *key;
        let purges_before = self.inner.purges.any.load(Ordering::SeqCst);
        let reading = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            disk.read(&k)
        });
        let Ok(read) = tokio::time::timeout(self.inner.timeout, reading).await else {
            self.inner.health.timed_out("read", self.inner.timeout);
            return Lookup::Miss;
        };
        self.inner.health.answered();
        match read {
            Ok(Ok(Some(entry))) => {
                self.inner.memory.insert(*key, entry.clone()).await;
                // A purge that ran, or runs, while the file was read may miss this copy in memory, and the copy
                // may be one it is removing: drop it and answer a miss (the fill that follows reads the disk
                // again, where the purge has removed what it had to). Purges are rare, so this costs a disk hit
                // only then.
                if self.inner.purges.may_have_missed(purges_before) {
                    self.inner.memory.remove(key).await;
                    return Lookup::Miss;
                }
                classify(entry, Tier::Disk)
            }
            Ok(Ok(None)) => Lookup::Miss,
            Ok(Err(e)) => {
                self.inner.disk_failed("read", &e);
                Lookup::Miss
            }
            Err(e) => {
                self.inner.disk_failed("read", &e);
                Lookup::Miss
            }
        }
    }

    /// `lookup`, then the shared tier (whose layout needs the entry's `source`: the key itself for an original;
    /// asked only when the shared tier is, so a local hit never computes it).
    /// A local miss, or a local copy that is stale, asks the shared tier: another node may have fetched, made or
    /// revalidated it. A shared entry newer than the local copy is promoted into memory and disk (not written back)
    /// and answers as `Tier::Shared`, fresh or stale.
    pub async fn lookup_with_source(&self, key: &CacheKey, source: impl FnOnce() -> CacheKey, now: u64) -> Lookup {
        let local = self.lookup(key, now).await;
        let Some(shared) = &self.inner.shared else { return local };
        let stale = match local {
            Lookup::Fresh(..) => return local,
            Lookup::Stale(entry, tier) => Some((entry, tier)),
            Lookup::Miss => None,
        };
        let source = source();
        // Taken before the read: a purge of the source meanwhile keeps the copy out of the local tiers.
        let since = self.purge_generation(&source);
        match shared.get(key, &source).await {
            Some(entry) if stale.as_ref().is_none_or(|(old, _)| entry.meta().stored_at > old.meta().stored_at) => {
                self.store_checked(*key, entry.clone(), Some(since), false).await;
                if entry.is_fresh(now) {
                    Lookup::Fresh(entry, Tier::Shared)
                } else {
                    Lookup::Stale(entry, Tier::Shared)
                }
            }
            _ => stale.map_or(Lookup::Miss, |(entry, tier)| Lookup::Stale(entry, tier)),
        }
    }

    /// Before a fill of the original `source` goes upstream: takes the cluster-wide fill lease, or waits for the
    /// node that holds it and answers with its entry. Without a shared tier (or one that cannot give leases), the
    /// fill goes ahead with no lease: per-node coalescing only. `now` (Unix seconds) judges the entry found fresh.
    pub async fn claim_fill(&self, source: &CacheKey, now: u64) -> FillClaim {
        let Some(shared) = &self.inner.shared else { return FillClaim::Fetch(None) };
        let since = self.purge_generation(source);
        // A few rounds at most: a lease released without an entry (the holder's fetch failed) is claimed again.
        for _ in 0..3 {
            match shared.claim_lease(source).await {
                LeaseClaim::Won(lease) => return FillClaim::Fetch(Some(lease)),
                LeaseClaim::Unavailable => return FillClaim::Fetch(None),
                LeaseClaim::Lost { expires_at } => match shared.wait_for_fill(source, expires_at, now).await {
                    Waited::Filled(entry) => {
                        self.store_checked(*source, entry.clone(), Some(since), false).await;
                        return FillClaim::Filled(entry);
                    }
                    Waited::Released => {}
                },
            }
        }
        FillClaim::Fetch(None)
    }

    /// Inserts into memory now and queues a disk write for images without waiting for the write
    /// itself (only, when `MAX_PENDING_WRITES` are already queued, for a slot in the queue).
    /// A `NotFound` or `Refused` entry stays memory-only and instead queues removal of any older disk
    /// copy, so an image deleted upstream is not resurrected from disk later.
    pub async fn store(&self, key: CacheKey, entry: Entry) {
        self.store_checked(key, entry, None, true).await;
    }

    /// The purge generation of `source` now: a fill takes it when it starts and stores with
    /// [`TieredCache::store_unless_purged`].
    pub fn purge_generation(&self, source: &CacheKey) -> PurgeGeneration {
        self.inner.purges.current(source)
    }

    /// `store`, unless the entry's source was purged since `since` was taken (then nothing is stored, and a copy
    /// that raced with the purge is removed again). Each tier checks after writing: either the purge's removal
    /// came after the write and removed it, or the purge's bump, which precedes its removal, is seen.
    pub async fn store_unless_purged(&self, key: CacheKey, entry: Entry, since: PurgeGeneration) {
        self.store_checked(key, entry, Some(since), true).await;
    }

    /// Stores in memory and on disk, and in the shared tier when `to_shared` (not what was just read from it).
    async fn store_checked(&self, key: CacheKey, entry: Entry, since: Option<PurgeGeneration>, to_shared: bool) {
        let purged = move |inner: &Inner| since.is_some_and(|since| inner.purges.purged_since(since));
        if purged(&self.inner) {
            return;
        }
        self.inner.memory.insert(key, entry.clone()).await;
        if purged(&self.inner) {
            self.inner.memory.remove(&key).await;
            return;
        }
        if to_shared {
            self.store_shared(key, &entry, since).await;
        }
        if self.inner.disk.is_none() || self.inner.closed.load(Ordering::SeqCst) {
            return;
        }
        if self.usable_disk().is_none() {
            self.inner.health.dropped_write("disk bypassed");
            return;
        }
        let timeout = self.inner.timeout;
        let permit = Arc::clone(&self.inner.write_permits).acquire_owned();
        let Ok(Ok(permit)) = tokio::time::timeout(timeout, permit).await else {
            // Every write slot has been busy for a whole timeout: the disk is not keeping up.
            self.inner.health.timed_out("write slot", timeout);
            self.inner.health.dropped_write("no write slot within --disk-timeout");
            return;
        };
        let inner = Arc::clone(&self.inner);
        // The permit moves into the blocking task, so it counts until the I/O is done.
        let writing = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // A store that passed the check above before `close` may get its slot after it: still not written.
            let Some(disk) = inner.disk.as_deref().filter(|_| !inner.closed.load(Ordering::SeqCst)) else {
                return;
            };
            // Recency first: the write may evict, and what memory served since the last flush must count.
            inner.apply_touches();
            if purged(&inner) {
                return;
            }
            match entry.meta().kind {
                EntryKind::Image => match disk.write(&key, &entry) {
                    Ok(()) => {
                        inner.disk_ok();
                        if purged(&inner) {
                            disk.remove(&key);
                        }
                    }
                    Err(e @ DiskError::Io { .. }) => inner.disk_failed("write", &e),
                },
                EntryKind::NotFound | EntryKind::Refused => {
                    disk.remove(&key);
                }
            }
        });
        // Not awaited by the caller: a watcher counts a write that overruns the timeout towards the bypass.
        let health = Arc::clone(&self.inner.health);
        tokio::spawn(async move {
            if tokio::time::timeout(timeout, writing).await.is_err() {
                health.timed_out("write", timeout);
            }
        });
    }

    /// Queues the shared tier's copy of an entry that names its source: an image is written, a negative answer
    /// removes an older image (so it is not served from there either). Never waits for the store.
    async fn store_shared(&self, key: CacheKey, entry: &Entry, since: Option<PurgeGeneration>) {
        let (Some(shared), Some(source)) = (&self.inner.shared, entry.meta().source()) else { return };
        if self.inner.closed.load(Ordering::SeqCst) {
            return;
        }
        match entry.meta().kind {
            EntryKind::Image => {
                let inner = Arc::downgrade(&self.inner);
                let still_wanted: StillWanted = Box::new(move || {
                    since.is_none_or(|since| inner.upgrade().is_some_and(|inner| !inner.purges.purged_since(since)))
                });
                shared.put(key, source, entry.clone(), still_wanted).await;
            }
            EntryKind::NotFound | EntryKind::Refused => shared.remove(&key, &source),
        }
    }

    /// `purge`, then the same in the shared tier: deletes the source's objects there and writes the purge
    /// record that makes every other node drop its copies within `--purge-poll`.
    pub async fn purge_everywhere(&self, source: &CacheKey) -> PurgeOutcome {
        let running = self.inner.purges.begin(source);
        let entries = self.purge(source).await;
        let shared = match &self.inner.shared {
            Some(shared) => Some(shared.purge(source).await),
            None => None,
        };
        drop(running);
        PurgeOutcome { entries, shared }
    }

    /// Waits until the shared tier's queued writes are made or dropped, at most `limit` (shutdown, `warm`); returns
    /// whether they were. True without a shared tier.
    pub async fn flush_shared(&self, limit: Duration) -> bool {
        match &self.inner.shared {
            Some(shared) => shared.flush(limit).await,
            None => true,
        }
    }

    /// Removes the original `source` and every variant made from it from both tiers, and keeps fills in flight
    /// for it from storing afterwards (see [`TieredCache::store_unless_purged`]). Returns how many distinct
    /// entries were removed (a key held in memory and on disk counts once). Costs the number of variants of
    /// `source`: both tiers keep a source -> variants relation. The disk part is waited for without the
    /// per-operation timeout (it may first have to finish building the index), also while the disk is bypassed:
    /// a purge must not silently leave files behind.
    pub async fn purge(&self, source: &CacheKey) -> usize {
        let running = self.inner.purges.begin(source);
        let mut removed = self.inner.memory.purge_source(source).await;
        if let Some(disk) = self.inner.disk.clone() {
            // A disk write queued before the purge began may be landing now: each one undoes itself when it sees
            // the purge (see `store_checked`), but its file exists for a moment. Waiting for the queued writes
            // (at most MAX_PENDING_WRITES) closes that window before the purge answers; writes queued from now on
            // see the purge before writing.
            // Both waits are bounded by --disk-timeout, so a hung disk cannot hang a purge. The removal itself goes
            // on in the background past it and lands when the disk answers again; until then the bypassed disk
            // serves nothing anyway.
            let timeout = self.inner.timeout;
            if tokio::time::timeout(timeout, self.flush()).await.is_err() {
                self.inner.health.timed_out("purge waiting for queued writes", timeout);
            }
            let source = *source;
            match tokio::time::timeout(timeout, tokio::task::spawn_blocking(move || disk.purge_source(&source))).await {
                Ok(Ok(keys)) => removed.extend(keys),
                Ok(Err(error)) => tracing::warn!(%error, "disk purge panicked"),
                Err(_) => {
                    self.inner.health.timed_out("purge", timeout);
                    tracing::warn!(
                        ?timeout,
                        "disk purge still running past --disk-timeout; it finishes in the background"
                    );
                }
            }
        }
        drop(running);
        removed.sort_unstable();
        removed.dedup();
        removed.len()
    }

    /// Waits until every queued disk write has finished (shutdown, tests). Stores made while
    /// this waits queue behind it.
    pub async fn flush(&self) {
        // Each pending write holds one permit; holding all of them means none is running.
        let all = u32::try_from(MAX_PENDING_WRITES).unwrap_or(u32::MAX);
        if let Ok(permits) = self.inner.write_permits.acquire_many(all).await {
            drop(permits);
        }
        let inner = Arc::clone(&self.inner);
        let _ = tokio::task::spawn_blocking(move || inner.apply_touches()).await;
    }
}

/// Applies the purges other nodes recorded in the shared tier to the local tiers, every `--purge-poll`, until the
/// cache is dropped.
async fn follow_purges(inner: Weak<Inner>, mut feed: PurgeFeed) {
    let mut interval = tokio::time::interval(feed.interval());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let cache = TieredCache { inner };
        let Some(sources) = feed.poll().await else { continue };
        for source in sources {
            let entries = cache.purge(&source).await;
            if let Some(shared) = cache.shared() {
                shared.stats().purge_applied();
            }
            tracing::info!(source = %source.tag(), entries, "applied a purge from another node");
        }
    }
}

/// Applies queued memory hits to the disk tier every `TOUCH_INTERVAL`, until the cache is dropped.
async fn apply_touches_periodically(inner: Weak<Inner>) {
    let mut interval = tokio::time::interval(TOUCH_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let _ = tokio::task::spawn_blocking(move || inner.apply_touches()).await;
    }
}
