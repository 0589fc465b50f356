//! Request coalescing: at most one fill per key runs at a time; concurrent callers share it.
//!
//! The fill runs in its own spawned task so a dropped leader (a client that hung up) does not
//! cancel the work others are waiting for. The in-flight map is type-erased (`dyn Any`) so
//! one map serves every result type.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use crate::key::CacheKey;
use crate::tiered::FillError;

type SharedFill<T, E> = Shared<BoxFuture<'static, Result<T, FillError<E>>>>;
type InflightMap = HashMap<CacheKey, (u64, Box<dyn Any + Send + Sync>)>;

/// What a caller does once the map has been consulted.
enum Role<T, E, Fut> {
    /// Await the (possibly just registered) shared fill.
    Join(SharedFill<T, E>),
    /// The key is in flight with another result type: run this fill unshared.
    Alone(Fut),
}

/// The in-flight fills, keyed by cache key; each slot carries a generation id so a finished
/// fill never removes its successor's slot.
#[derive(Default)]
pub(crate) struct Coalescer {
    inflight: Arc<Mutex<InflightMap>>,
    next_id: AtomicU64,
}

fn lock(map: &Mutex<InflightMap>) -> MutexGuard<'_, InflightMap> {
    // Map operations cannot leave it half-updated, so a poisoned lock is still usable.
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes the slot when the fill task ends, however it ends: normal return, panic
/// (unwinding drops it) or abort at runtime shutdown.
struct SlotGuard {
    map: Arc<Mutex<InflightMap>>,
    key: CacheKey,
    id: u64,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut map = lock(&self.map);
        if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            map.remove(&self.key);
        }
    }
}

impl Coalescer {
    /// Runs `fill` for `key` unless a fill for it is already running, in which case waits for
    /// that one and returns a clone of its result. Needs a Tokio runtime.
    pub(crate) async fn run<T, E, Fut>(&self, key: CacheKey, fill: impl FnOnce() -> Fut) -> Result<T, FillError<E>>
    where
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Clone + Send + Sync + 'static,
        E: Clone + Send + Sync + 'static,
    {
        // Decide under the lock, await outside it: a std MutexGuard must not live across an
        // await (it would make this future !Send and could block a worker thread).
        let role = {
            let mut map = lock(&self.inflight);
            match map.get(&key) {
                Some((_, slot)) => match slot.downcast_ref::<SharedFill<T, E>>() {
                    Some(existing) => Role::Join(existing.clone()),
                    None => Role::Alone(fill()),
                },
                None => {
                    // Spawning under the lock is cheap (no await) and makes "check, then
                    // register" atomic, so exactly one caller becomes the leader. `fill()`
                    // runs before the guard exists: if it panicked, no guard would try to
                    // re-lock the map this thread holds.
                    let fut = fill();
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let guard = SlotGuard { map: Arc::clone(&self.inflight), key, id };
                    let task = tokio::spawn(async move {
                        let out = fut.await.map_err(FillError::Failed);
                        // Unregister before resolving: callers arriving from now on start a
                        // fresh fill instead of joining a finished one.
                        drop(guard);
                        out
                    });
                    let shared = join(task).boxed().shared();
                    map.insert(key, (id, Box::new(shared.clone())));
                    Role::Join(shared)
                }
            }
        };
        match role {
            Role::Join(shared) => shared.await,
            Role::Alone(fut) => {
                // Same key used with another result type: cannot share, so run uncoalesced
                // rather than fail.
                tracing::debug!(key = %key, "fill_once type mismatch; not coalesced");
                join(tokio::spawn(async move { fut.await.map_err(FillError::Failed) })).await
            }
        }
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        lock(&self.inflight).len()
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
        let c = Coalescer::default();
        let k = CacheKey::from_parts(&[b"k"]);
        let r: Result<u32, FillError<()>> = c.run(k, || async { Ok(1) }).await;
        assert_eq!(r, Ok(1));
        assert_eq!(c.in_flight(), 0);
        let r: Result<u32, FillError<()>> = c.run(k, || async { panic!("boom") }).await;
        assert_eq!(r, Err(FillError::Aborted));
        assert_eq!(c.in_flight(), 0);
    }

    #[tokio::test]
    async fn type_mismatch_runs_uncoalesced() {
        let c = Arc::new(Coalescer::default());
        let k = CacheKey::from_parts(&[b"k"]);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let c2 = Arc::clone(&c);
        let leader = tokio::spawn(async move {
            c2.run(k, || async move {
                let _ = rx.await;
                Ok::<u32, ()>(1)
            })
            .await
        });
        while c.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        let other: Result<String, FillError<()>> = c.run(k, || async { Ok("x".into()) }).await;
        assert_eq!(other.as_deref(), Ok("x"));
        let _ = tx.send(());
        assert_eq!(leader.await.ok(), Some(Ok(1)));
    }
}
