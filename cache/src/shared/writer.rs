//! The shared tier's write queue: bounded in entries and in bytes, drained by a few concurrent writers, each
//! write bounded by the long timeout. A response never waits for the store: `put` returns at once, and what does
//! not fit is dropped and counted (the entry is still in the local tiers; the store is an optimisation).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use tokio::sync::{Notify, Semaphore, mpsc};

use super::SharedInner;
use super::lease::FillLease;
use super::stats::WriteResult;
use crate::key::CacheKey;
use crate::meta::{self, Entry};

/// Writes (and deletions) waiting at most; past it, new ones are dropped.
const QUEUE_LEN: usize = 256;
/// Bytes of entries waiting at most: the queue holds references to bodies the memory tier may already have
/// evicted, so it is bounded in bytes too.
const QUEUE_BYTES: u64 = 256 << 20;
/// Writes to the store at once.
const WRITERS: usize = 8;

/// Asked before a write is sent and again after it landed: false when the entry's source was purged since the fill
/// that made it began (then the write is not made, or is undone).
pub type StillWanted = Box<dyn Fn() -> bool + Send + Sync>;

enum Job {
    Put {
        path: Path,
        key: CacheKey,
        entry: Entry,
        still_wanted: StillWanted,
        /// Held until the write has landed (or failed), then released.
        lease: Option<FillLease>,
    },
    Delete {
        path: Path,
    },
}

/// Counts jobs queued or running, and wakes `idle` waiters when none are left.
#[derive(Default)]
struct Pending {
    jobs: AtomicUsize,
    bytes: AtomicU64,
    idle: Notify,
}

impl Pending {
    fn finished(&self, bytes: u64) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        if self.jobs.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// The sending side; the writers run in a task of their own that ends when this is dropped.
pub(super) struct WriteQueue {
    sender: mpsc::Sender<(Job, u64)>,
    pending: Arc<Pending>,
}

impl WriteQueue {
    /// Starts the writers for the tier `tier` (a weak reference: the queue lives inside the tier).
    pub(super) fn start(tier: Weak<SharedInner>) -> WriteQueue {
        let (sender, receiver) = mpsc::channel(QUEUE_LEN);
        let pending = Arc::new(Pending::default());
        tokio::spawn(drain(receiver, tier, Arc::clone(&pending)));
        WriteQueue { sender, pending }
    }

    /// Queues the write of `entry` at `path`. When the queue is full, drops it (counted), or with `wait` (a warm
    /// run, which must fill the store rather than answer fast) waits for room.
    pub(super) async fn put(
        &self,
        tier: &SharedInner,
        path: Path,
        key: CacheKey,
        entry: Entry,
        still_wanted: StillWanted,
        lease: Option<FillLease>,
    ) {
        let bytes = entry.body().len() as u64;
        let job = Job::Put { path, key, entry, still_wanted, lease };
        if tier.options.wait_for_queue {
            self.pending.jobs.fetch_add(1, Ordering::AcqRel);
            self.pending.bytes.fetch_add(bytes, Ordering::AcqRel);
            if self.sender.send((job, bytes)).await.is_err() {
                self.pending.finished(bytes);
                dropped(tier);
            }
            return;
        }
        if self.pending.bytes.load(Ordering::Acquire).saturating_add(bytes) > QUEUE_BYTES {
            dropped(tier);
            return;
        }
        self.send(tier, job, bytes);
    }

    /// Queues the deletion of `path`, or drops it when the queue is full.
    pub(super) fn delete(&self, tier: &SharedInner, path: Path) {
        self.send(tier, Job::Delete { path }, 0);
    }

    fn send(&self, tier: &SharedInner, job: Job, bytes: u64) {
        self.pending.jobs.fetch_add(1, Ordering::AcqRel);
        self.pending.bytes.fetch_add(bytes, Ordering::AcqRel);
        if self.sender.try_send((job, bytes)).is_err() {
            self.pending.finished(bytes);
            dropped(tier);
        }
    }

    /// Returns when no job is queued or running.
    pub(super) async fn idle(&self) {
        loop {
            let notified = self.pending.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.pending.jobs.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

fn dropped(tier: &SharedInner) {
    tier.stats.wrote(WriteResult::Dropped);
    tracing::debug!(store = %tier.describe, "shared cache write queue full; write dropped");
}

/// Runs the queued jobs, `WRITERS` at a time, until the queue's sender is dropped.
async fn drain(mut receiver: mpsc::Receiver<(Job, u64)>, tier: Weak<SharedInner>, pending: Arc<Pending>) {
    let writers = Arc::new(Semaphore::new(WRITERS));
    while let Some((job, bytes)) = receiver.recv().await {
        let (Ok(writer), Some(tier)) = (Arc::clone(&writers).acquire_owned().await, tier.upgrade()) else {
            pending.finished(bytes);
            continue;
        };
        let pending = Arc::clone(&pending);
        tokio::spawn(async move {
            run(&tier, job).await;
            drop(writer);
            pending.finished(bytes);
        });
    }
}

async fn run(tier: &SharedInner, job: Job) {
    match job {
        Job::Put { path, key, entry, still_wanted, lease } => {
            if still_wanted() {
                write(tier, &path, &key, &entry, &still_wanted).await;
            }
            // The lease goes only now, when the entry is in the store (or will not be).
            drop(lease);
        }
        Job::Delete { path } => {
            if tier.breaker.allows() {
                delete(tier, &path).await;
            }
        }
    }
}

async fn write(tier: &SharedInner, path: &Path, key: &CacheKey, entry: &Entry, still_wanted: &StillWanted) {
    if !tier.breaker.allows() {
        tier.stats.wrote(WriteResult::Dropped);
        return;
    }
    // The header and the shared body, sent as two parts: the body is not copied.
    let header = Bytes::from(meta::encode_header(key, entry.meta()));
    let payload: PutPayload = [header, entry.body().clone()].into_iter().collect();
    match tokio::time::timeout(tier.long_timeout, tier.store.put(path, payload)).await {
        Ok(Ok(_)) => {
            tier.breaker.succeeded();
            tier.stats.wrote(WriteResult::Ok);
            // A purge that began while this was being written may have listed the prefix before it landed.
            if !still_wanted() {
                delete(tier, path).await;
            }
        }
        Ok(Err(error)) => {
            tier.breaker.failed("put", &error);
            tier.stats.wrote(WriteResult::Error);
        }
        Err(_) => {
            tier.breaker.failed("put", &"timed out");
            tier.stats.wrote(WriteResult::Error);
        }
    }
}

async fn delete(tier: &SharedInner, path: &Path) {
    match tokio::time::timeout(tier.long_timeout, tier.store.delete(path)).await {
        Ok(Ok(()) | Err(object_store::Error::NotFound { .. })) => tier.breaker.succeeded(),
        Ok(Err(error)) => tier.breaker.failed("delete", &error),
        Err(_) => tier.breaker.failed("delete", &"timed out"),
    }
}
