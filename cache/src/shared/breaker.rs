//! Whether the shared store is worth asking: one failure (an error or an operation past `--shared-timeout`) opens
//! the breaker, and while it is open every operation is skipped at once, except one probe per interval.
//!
//! The store is an optimisation, never a dependency: a store that is down, slow or refusing must cost a request
//! at most one timeout, once, and then nothing until it answers again. State changes are logged once each.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The breaker of one shared store.
#[derive(Debug)]
pub struct Breaker {
    /// How long the store is skipped after a failure before one operation may probe it.
    interval: Duration,
    /// The reference point of `open_until`.
    epoch: Instant,
    /// Milliseconds after `epoch` until which the store is skipped; 0 while closed.
    open_until: AtomicU64,
    /// True while an operation is the probe of an open breaker.
    probing: AtomicBool,
}

impl Breaker {
    /// A closed breaker that skips the store for `interval` after each failure.
    pub fn new(interval: Duration) -> Breaker {
        Breaker { interval, epoch: Instant::now(), open_until: AtomicU64::new(0), probing: AtomicBool::new(false) }
    }

    fn now_millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// True while the store is being skipped.
    pub fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }

    /// Whether an operation may go to the store now: always while closed; while open, only the one probe per
    /// interval (the caller must then report `succeeded` or `failed`).
    pub fn allows(&self) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        self.now_millis() >= until && !self.probing.swap(true, Ordering::AcqRel)
    }

    /// An operation the store answered (a "not found" is an answer). The probe's answer closes an open breaker;
    /// an operation that was already under way when it opened does not (the store may still be failing).
    pub fn succeeded(&self) {
        if self.open_until.load(Ordering::Acquire) == 0 || !self.probing.swap(false, Ordering::AcqRel) {
            return;
        }
        if self.open_until.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!("shared cache answering again; using it");
        }
    }

    /// An operation that failed or overran its timeout: opens the breaker (or keeps it open) for an interval.
    pub fn failed(&self, op: &str, error: &dyn std::fmt::Display) {
        let until = self.now_millis().saturating_add(u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX));
        if self.open_until.swap(until, Ordering::AcqRel) == 0 {
            tracing::warn!(
                op,
                %error,
                skip_for = ?self.interval,
                "shared cache failing; serving from the local tiers and upstream without it, probing once per interval"
            );
        } else {
            tracing::debug!(op, %error, "shared cache still failing");
        }
        self.probing.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_opens_it_and_one_probe_per_interval_may_close_it() {
        let breaker = Breaker::new(Duration::from_millis(50));
        assert!(breaker.allows() && breaker.allows(), "closed: everything goes");
        breaker.failed("get", &"refused");
        assert!(breaker.is_open());
        breaker.succeeded();
        assert!(breaker.is_open(), "an answer to an operation under way before the failure is not the probe's");
        assert!(!breaker.allows(), "open: skipped until the interval has passed");
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.allows(), "the probe");
        assert!(!breaker.allows(), "one probe at a time");
        breaker.failed("get", &"refused again");
        assert!(!breaker.allows(), "a failed probe waits another interval");
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.allows());
        breaker.succeeded();
        assert!(!breaker.is_open());
        assert!(breaker.allows() && breaker.allows());
    }
}
