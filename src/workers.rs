//! The bounded pool that runs CPU-heavy work (decode, resize, encode) off the async reactor.
//!
//! Two limits: `workers` jobs run at once, and at most `queue` more wait for a turn. A job that finds the
//! queue full is refused at once (the caller answers 503) instead of piling up without bound.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// Why a job did not run to completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolError {
    /// Every worker is busy and the queue is full.
    Full,
    /// The job panicked.
    Panicked,
}

/// A bounded pool over tokio's blocking threads. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CpuPool {
    /// Jobs admitted: running or waiting.
    admitted: Arc<Semaphore>,
    /// Jobs running.
    running: Arc<Semaphore>,
    /// `workers + queue`: all of `admitted`'s permits.
    capacity: usize,
    /// `workers`: all of `running`'s permits.
    workers: usize,
}

impl CpuPool {
    /// A pool running `workers` jobs at once with `queue` more waiting.
    pub fn new(workers: usize, queue: usize) -> CpuPool {
        let workers = workers.max(1);
        let capacity = workers.saturating_add(queue);
        CpuPool {
            admitted: Arc::new(Semaphore::new(capacity)),
            running: Arc::new(Semaphore::new(workers)),
            capacity,
            workers,
        }
    }

    /// Jobs admitted that wait for a worker (read from the two semaphores, so a moment's answer, for metrics).
    pub fn queued(&self) -> usize {
        let admitted = self.capacity.saturating_sub(self.admitted.available_permits());
        let running = self.workers.saturating_sub(self.running.available_permits());
        admitted.saturating_sub(running)
    }

    /// Runs `job` on a blocking thread when a worker is free, or refuses at once when the queue is full.
    pub async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, PoolError> {
        let admitted = Arc::clone(&self.admitted).try_acquire_owned().map_err(|_| PoolError::Full)?;
        let running = Arc::clone(&self.running).acquire_owned().await.map_err(|_| PoolError::Full)?;
        // The permits move into the blocking task: if our caller is cancelled (client gone), the slot stays
        // taken until the CPU work really ends, so the bound holds.
        let task = tokio::task::spawn_blocking(move || {
            let _permits = (admitted, running);
            job()
        });
        task.await.map_err(|_| PoolError::Panicked)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_when_workers_and_queue_are_full() {
        let pool = CpuPool::new(1, 1);
        let (release, blocked) = mpsc::channel::<()>();
        let blocked = Arc::new(std::sync::Mutex::new(blocked));
        let hold = |blocked: Arc<std::sync::Mutex<mpsc::Receiver<()>>>| {
            move || {
                let _ = blocked.lock().map(|rx| rx.recv_timeout(Duration::from_secs(5)));
                7
            }
        };
        let first = tokio::spawn({
            let pool = pool.clone();
            let job = hold(blocked.clone());
            async move { pool.run(job).await }
        });
        let second = tokio::spawn({
            let pool = pool.clone();
            let job = hold(blocked.clone());
            async move { pool.run(job).await }
        });
        // Both admitted (one running, one waiting) before the third arrives.
        while pool.admitted.available_permits() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(pool.run(|| 1).await, Err(PoolError::Full));
        release.send(()).expect("first job waiting");
        release.send(()).expect("second job waiting");
        assert_eq!(first.await.expect("join"), Ok(7));
        assert_eq!(second.await.expect("join"), Ok(7));
        assert_eq!(pool.run(|| 1).await, Ok(1));
    }

    #[tokio::test]
    async fn a_panicking_job_is_reported_and_frees_its_slot() {
        let pool = CpuPool::new(1, 0);
        let result: Result<(), PoolError> = pool.run(|| panic!("boom")).await;
        assert_eq!(result, Err(PoolError::Panicked));
        assert_eq!(pool.run(|| 2).await, Ok(2));
    }
}
