//! Request coalescing through `Coalescer::fill_once`: one fill per key, shared results,
//! and the leader-dropped and leader-panicked paths.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mirage_cache::{CacheKey, Coalescer, FillError};
use tokio::sync::Notify;

fn key(i: u32) -> CacheKey {
    CacheKey::from_parts(&[b"coalesce-test", &i.to_le_bytes()])
}

/// A coalescer for one test, typed by what that test's fills return.
fn coalescer<T, E>() -> Coalescer<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    Coalescer::new()
}

/// Polls until `cond` holds, failing the test after a couple of seconds.
async fn wait_until(cond: impl Fn() -> bool) {
    for _ in 0..400 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_callers_one_fill() {
    let cache = coalescer();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let cache = cache.clone();
        let calls = Arc::clone(&calls);
        tasks.push(tokio::spawn(async move {
            cache
                .fill_once(key(1), move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<_, String>(Arc::new(vec![42u8; 16]))
                })
                .await
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().unwrap());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // 49 joined the one fill (mirage_coalesced_requests_total).
    assert_eq!(cache.joined(), 49);
    // Everyone got a clone of the one result, not a separately computed equal value.
    assert!(results.iter().all(|r| Arc::ptr_eq(r, &results[0])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_leader_still_completes_for_waiters() {
    let cache = coalescer();
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let leader = {
        let (cache, calls, gate) = (cache.clone(), Arc::clone(&calls), Arc::clone(&gate));
        tokio::spawn(async move {
            cache
                .fill_once(key(1), move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Ok::<u32, String>(7)
                })
                .await
        })
    };
    wait_until(|| calls.load(Ordering::SeqCst) == 1).await;
    let waiter = {
        let (cache, calls) = (cache.clone(), Arc::clone(&calls));
        tokio::spawn(async move {
            cache
                .fill_once(key(1), move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok::<u32, String>(99)
                })
                .await
        })
    };
    // Let the waiter join, then drop the leader (a client hanging up).
    tokio::time::sleep(Duration::from_millis(50)).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    gate.notify_one();
    assert_eq!(waiter.await.unwrap(), Ok(7));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

fn explode() -> u32 {
    panic!("fill blew up (expected by this test)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_fill_aborts_waiters_and_next_call_retries() {
    let cache = coalescer();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (cache, calls) = (cache.clone(), Arc::clone(&calls));
        tasks.push(tokio::spawn(async move {
            cache
                .fill_once(key(1), move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<u32, String>(explode())
                })
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Err(FillError::Aborted));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let again = cache.fill_once(key(1), || async { Ok::<u32, String>(2) }).await;
    assert_eq!(again, Ok(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_shared_but_not_cached() {
    let cache = coalescer();
    let calls = Arc::new(AtomicUsize::new(0));
    let run = |value: Result<u32, String>| {
        let (cache, calls) = (cache.clone(), Arc::clone(&calls));
        tokio::spawn(async move {
            cache
                .fill_once(key(1), move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    value
                })
                .await
        })
    };
    let a = run(Err("upstream 502".to_owned()));
    wait_until(|| calls.load(Ordering::SeqCst) == 1).await;
    let b = run(Ok(5));
    let failed = Err(FillError::Failed("upstream 502".to_owned()));
    assert_eq!(a.await.unwrap(), failed);
    assert_eq!(b.await.unwrap(), failed);
    assert_eq!(run(Ok(5)).await.unwrap(), Ok(5));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_keys_fill_independently() {
    let cache = coalescer();
    let gate = Arc::new(Notify::new());
    let blocked = {
        let (cache, gate) = (cache.clone(), Arc::clone(&gate));
        tokio::spawn(async move {
            cache
                .fill_once(key(1), move || async move {
                    gate.notified().await;
                    Ok::<u32, ()>(1)
                })
                .await
        })
    };
    // Key 2 completes while key 1 is still blocked.
    let other =
        tokio::time::timeout(Duration::from_secs(2), cache.fill_once(key(2), || async { Ok::<u32, ()>(2) })).await;
    assert_eq!(other, Ok(Ok(2)));
    assert!(!blocked.is_finished());
    gate.notify_one();
    assert_eq!(blocked.await.unwrap(), Ok(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_lone_leader_fill_still_runs_to_completion() {
    // With no waiters left, the fill must still finish (so its side effects, such as storing
    // the fetched image, happen) and a later caller must not join a dead fill.
    let cache = coalescer();
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let leader = {
        let (cache, started, finished, gate) =
            (cache.clone(), Arc::clone(&started), Arc::clone(&finished), Arc::clone(&gate));
        tokio::spawn(async move {
            cache
                .fill_once(key(1), move || async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    Ok::<u32, ()>(1)
                })
                .await
        })
    };
    wait_until(|| started.load(Ordering::SeqCst) == 1).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    gate.notify_one();
    wait_until(|| finished.load(Ordering::SeqCst) == 1).await;
    let next = cache.fill_once(key(1), || async { Ok::<u32, ()>(2) }).await;
    assert_eq!(next, Ok(2));
}
