//! Request coalescing: at most one fill per key runs at a time; concurrent callers share it.
//!
//! The fill runs in its own spawned task so a dropped leader (a client that hung up) does not
//! cancel the work others are waiting for.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use crate::key::CacheKey;

/// Why a coalesced fill produced no value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FillError<E> {
    /// The fill ran and returned this error (shared with every waiter).
    Failed(E),
    /// The fill task panicked or was cancelled before producing a result.
    Aborted,
}

impl<E: fmt::Display> fmt::Display for FillError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FillError::Failed(e) => write!(f, "cache fill failed: {e}"),
            FillError::Aborted => f.write_str("cache fill aborted"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for FillError<E> {}

type SharedFill<T, E> = Shared<BoxFuture<'static, Result<T, FillError<E>>>>;

/// The in-flight fills, keyed by cache key; each slot carries a generation id so a finished
/// fill never removes its successor's slot.
struct Slots<T, E> {
    inflight: HashMap<CacheKey, (u64, SharedFill<T, E>)>,
    next_id: u64,
}

/// One fill per key at a time: while a fill for a key is in flight, other callers for that key
/// wait for it and get a clone of its result.
///
/// Typed by the one result a fill produces (`Result<T, E>`), so a waiter always joins the fill
/// in flight: with a type-erased map, a caller using another result type for the same key was
/// silently left uncoalesced; now that cannot compile. The coalescer is not part of
/// [`TieredCache`](crate::TieredCache) because what a fill returns (the caller's answer and error
/// types, e.g. an HTTP-facing `Served`) is the caller's business, not this crate's; the caller
/// owns one coalescer per result type. Cheap to clone; clones share the in-flight fills.
pub struct Coalescer<T, E> {
    slots: Arc<Mutex<Slots<T, E>>>,
    /// Calls that joined a fill already running instead of starting one (a metric; never reset).
    joined: Arc<AtomicU64>,
}

impl<T, E> Clone for Coalescer<T, E> {
    fn clone(&self) -> Self {
        Coalescer { slots: Arc::clone(&self.slots), joined: Arc::clone(&self.joined) }
    }
}

impl<T, E> Default for Coalescer<T, E> {
    fn default() -> Self {
        Coalescer {
            slots: Arc::new(Mutex::new(Slots { inflight: HashMap::new(), next_id: 0 })),
            joined: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<T, E> fmt::Debug for Coalescer<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalescer").field("in_flight", &lock(&self.slots).inflight.len()).finish()
    }
}

fn lock<T, E>(slots: &Mutex<Slots<T, E>>) -> MutexGuard<'_, Slots<T, E>> {
    // Map operations cannot leave it half-updated, so a poisoned lock is still usable.
    slots.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes the slot when the fill task ends, however it ends: normal return, panic
/// (unwinding drops it) or abort at runtime shutdown.
struct SlotGuard<T, E> {
    slots: Arc<Mutex<Slots<T, E>>>,
    key: CacheKey,
    id: u64,
}

impl<T, E> Drop for SlotGuard<T, E> {
    fn drop(&mut self) {
        let mut slots = lock(&self.slots);
        if slots.inflight.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            slots.inflight.remove(&self.key);
        }
    }
}

impl<T, E> Coalescer<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    /// An empty coalescer.
    pub fn new() -> Coalescer<T, E> {
        Coalescer::default()
    }

    /// Runs `fill` for `key` unless a fill for it is already running, in which case waits for
    /// that one and returns a clone of its result. The fill runs in a spawned task, so it
    /// completes even if the leading caller is dropped; a panic gives every waiter
    /// `FillError::Aborted` and the next call starts afresh. Needs a Tokio runtime.
    pub async fn fill_once<Fut>(&self, key: CacheKey, fill: impl FnOnce() -> Fut) -> Result<T, FillError<E>>
    where
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        // Decide under the lock, await outside it: a std MutexGuard must not live across an
        // await (it would make this future !Send and could block a worker thread).
        let shared = {
            let mut slots = lock(&self.slots);
            match slots.inflight.get(&key) {
                Some((_, existing)) => {
                    self.joined.fetch_add(1, Ordering::Relaxed);
                    existing.clone()
                }
                None => {
                    // Spawning under the lock is cheap (no await) and makes "check, then
                    // register" atomic, so exactly one caller becomes the leader. `fill()`
                    // runs before the guard exists: if it panicked, no guard would try to
                    // re-lock the map this thread holds.
                    let fut = fill();
                    let id = slots.next_id;
                    slots.next_id += 1;
                    let guard = SlotGuard { slots: Arc::clone(&self.slots), key, id };
                    let task = tokio::spawn(async move {
                        let out = fut.await.map_err(FillError::Failed);
                        // Unregister before resolving: callers arriving from now on start a
                        // fresh fill instead of joining a finished one.
                        drop(guard);
                        out
                    });
                    let shared = join(task).boxed().shared();
                    slots.inflight.insert(key, (id, shared.clone()));
                    shared
                }
            }
        };
        shared.await
    }

    /// How many calls so far joined a fill that was already running for their key (each saved a fetch or a
    /// transform).
    pub fn joined(&self) -> u64 {
        self.joined.load(Ordering::Relaxed)
    }

    /// Resolves once no fill is running (shutdown: fills whose clients hung up still store what they fetched,
    /// and must do so before the final flush). Polls: it runs once per process.
    pub async fn idle(&self) {
        while !lock(&self.slots).inflight.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        lock(&self.slots).inflight.len()
    }
}

/// Awaits the fill task; a panic or cancellation becomes `FillError::Aborted`.
async fn join<T, E>(task: tokio::task::JoinHandle<Result<T, FillError<E>>>) -> Result<T, FillError<E>> {
    match task.await {
        Ok(out) => out,
        Err(e) => {
            tracing::warn!(error = %e, "cache fill task aborted");
            Err(FillError::Aborted)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slot_is_removed_after_success_and_panic() {
        let c = Coalescer::<u32, ()>::new();
        let k = CacheKey::from_parts(&[b"k"]);
        assert_eq!(c.fill_once(k, || async { Ok(1) }).await, Ok(1));
        assert_eq!(c.in_flight(), 0);
        assert_eq!(c.fill_once(k, || async { panic!("boom") }).await, Err(FillError::Aborted));
        assert_eq!(c.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_finished_fill_does_not_remove_its_successors_slot() {
        let c = Coalescer::<u32, ()>::new();
        let k = CacheKey::from_parts(&[b"k"]);
        assert_eq!(c.fill_once(k, || async { Ok(1) }).await, Ok(1));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let c2 = c.clone();
        let second = tokio::spawn(async move {
            c2.fill_once(k, || async move {
                let _ = rx.await;
                Ok(2)
            })
            .await
        });
        while c.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        // A stale guard of the first generation must not touch the second's slot.
        drop(SlotGuard { slots: Arc::clone(&c.slots), key: k, id: 0 });
        assert_eq!(c.in_flight(), 1);
        let _ = tx.send(());
        assert_eq!(second.await.ok(), Some(Ok(2)));
        assert_eq!(c.in_flight(), 0);
    }
}
