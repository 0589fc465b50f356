//! The tiered front: memory, then disk; stores to both.
//!
//! Storage failures never surface as errors: a broken disk makes the service slower
//! (memory-only), not down.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::disk::{DiskError, DiskTier};
use crate::key::CacheKey;
use crate::memory::MemoryTier;
use crate::meta::{Entry, EntryKind};

/// Disk writes allowed to be queued or running at once. Beyond this, `store` waits for a slot:
/// back-pressure on the (already bounded) fills, rather than a queue that grows without bound
/// behind a slow disk or entries that silently never reach it (the warm command relies on that).
const MAX_PENDING_WRITES: usize = 32;
/// Memory hits waiting to refresh their disk entries' recency (32 bytes each). A full queue drops touches: a
/// hit never waits for the disk.
const TOUCH_QUEUE: usize = 4096;
/// How often queued touches reach the disk (also before every eviction decision and at `flush`).
const TOUCH_INTERVAL: Duration = Duration::from_secs(5);

/// Which tier answered a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// The memory tier.
    Memory,
    /// The disk tier (the entry is now also in memory).
    Disk,
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
    /// Set on the first disk failure, cleared by the next successful write; logs only on
    /// transitions so a full or read-only disk does not flood the log.
    disk_degraded: AtomicBool,
    /// Memory hits report their keys here, so the disk tier does not evict what memory serves most; `None`
    /// without a disk tier.
    touches: Option<SyncSender<CacheKey>>,
    pending_touches: Mutex<Option<Receiver<CacheKey>>>,
}

impl Inner {
    /// Applies the queued touches to the disk tier (blocking: call off the reactor). Duplicates collapse.
    fn apply_touches(&self) {
        let Some(disk) = self.disk.as_deref() else { return };
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
        let (touches, pending) = match disk {
            Some(_) => {
                let (sender, receiver) = sync_channel(TOUCH_QUEUE);
                (Some(sender), Some(receiver))
            }
            None => (None, None),
        };
        let cache = TieredCache {
            inner: Arc::new(Inner {
                memory,
                disk: disk.map(Arc::new),
                write_permits: Arc::new(Semaphore::new(MAX_PENDING_WRITES)),
                disk_degraded: AtomicBool::new(false),
                touches,
                pending_touches: Mutex::new(pending),
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

    /// True after a disk failure until the next successful disk write (for health/metrics).
    pub fn disk_degraded(&self) -> bool {
        self.inner.disk_degraded.load(Ordering::Relaxed)
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
                if let Err(TrySendError::Full(_)) = touches.try_send(*key) {
                    tracing::trace!("touch queue full; memory hit not applied to disk recency");
                }
            }
            return classify(entry, Tier::Memory);
        }
        let Some(disk) = self.inner.disk.clone() else {
            return Lookup::Miss;
        };
        let k = *key;
        match tokio::task::spawn_blocking(move || disk.read(&k)).await {
            Ok(Ok(Some(entry))) => {
                self.inner.memory.insert(*key, entry.clone()).await;
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

    /// Inserts into memory now and queues a disk write for images without waiting for the write
    /// itself (only, when `MAX_PENDING_WRITES` are already queued, for a slot in the queue).
    /// A `NotFound` or `Refused` entry stays memory-only and instead queues removal of any older disk
    /// copy, so an image deleted upstream is not resurrected from disk later.
    pub async fn store(&self, key: CacheKey, entry: Entry) {
        self.inner.memory.insert(key, entry.clone()).await;
        if self.inner.disk.is_none() {
            return;
        }
        let Ok(permit) = Arc::clone(&self.inner.write_permits).acquire_owned().await else {
            return; // The semaphore is never closed.
        };
        let inner = Arc::clone(&self.inner);
        // The permit moves into the blocking task, so it counts until the I/O is done.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let Some(disk) = inner.disk.as_deref() else {
                return;
            };
            // Recency first: the write may evict, and what memory served since the last flush must count.
            inner.apply_touches();
            match entry.meta().kind {
                EntryKind::Image => match disk.write(&key, &entry) {
                    Ok(()) => inner.disk_ok(),
                    Err(e @ DiskError::Io { .. }) => inner.disk_failed("write", &e),
                },
                EntryKind::NotFound | EntryKind::Refused => disk.remove(&key),
            }
        });
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
