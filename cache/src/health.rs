//! Whether the disk tier is worth waiting for: counts disk operations that overran `--disk-timeout`, bypasses
//! the tier after a few in a row, and lets a single probe bring it back.
//!
//! A hung disk (a dead NFS server, a failing drive retrying a sector) does not fail, it blocks: every operation
//! would cost the whole timeout and pin a blocking thread. So after `BYPASS_AFTER` consecutive timeouts no
//! operation is started at all until a probe (a tiny write and read in the temp directory) completes. Only one
//! probe exists at a time, and a new one starts only after the previous one has returned: a hung probe pins
//! one thread, not one per interval.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Consecutive timeouts that make the tier bypassed.
pub const BYPASS_AFTER: u32 = 3;
/// Least time between the bypass and the first probe, and between two probes.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Timeout bookkeeping of the disk tier.
#[derive(Debug, Default)]
pub struct DiskHealth {
    consecutive_timeouts: AtomicU32,
    bypassed: AtomicBool,
    probing: AtomicBool,
    last_probe: Mutex<Option<Instant>>,
    /// Operations that overran the timeout, ever.
    timeouts: AtomicU64,
    /// Writes dropped (not started) because the disk was bypassed or no write slot freed up in time.
    dropped_writes: AtomicU64,
    logged_timeout: AtomicBool,
    logged_drop: AtomicBool,
}

impl DiskHealth {
    /// True while the tier is bypassed.
    pub fn bypassed(&self) -> bool {
        self.bypassed.load(Ordering::Relaxed)
    }

    /// Records an operation that overran the timeout; bypasses the tier after `BYPASS_AFTER` in a row.
    pub fn timed_out(&self, op: &str, timeout: Duration) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
        if !self.logged_timeout.swap(true, Ordering::Relaxed) {
            tracing::warn!(op, ?timeout, "disk cache operation timed out (logged once); treated as a miss");
        }
        let in_a_row = self.consecutive_timeouts.fetch_add(1, Ordering::Relaxed) + 1;
        if in_a_row >= BYPASS_AFTER && !self.bypassed.swap(true, Ordering::Relaxed) {
            *self.last_probe.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
            tracing::warn!(in_a_row, "disk cache keeps timing out; bypassing it (memory only) until a probe succeeds");
        }
    }

    /// Records a read that finished in time. (Writes that finish do not count: a disk can take writes into
    /// its cache while reads of what is on it hang.)
    pub fn answered(&self) {
        self.consecutive_timeouts.store(0, Ordering::Relaxed);
    }

    /// Records a write that was not even started; logs the first one.
    pub fn dropped_write(&self, why: &str) {
        self.dropped_writes.fetch_add(1, Ordering::Relaxed);
        if !self.logged_drop.swap(true, Ordering::Relaxed) {
            tracing::warn!(why, "disk cache write dropped (logged once; see the dropped-writes count)");
        }
    }

    /// Writes dropped so far.
    pub fn dropped_writes(&self) -> u64 {
        self.dropped_writes.load(Ordering::Relaxed)
    }

    /// Timeouts so far.
    pub fn timeouts(&self) -> u64 {
        self.timeouts.load(Ordering::Relaxed)
    }

    /// Whether the caller should start a probe now (bypassed, none running, the last one long enough ago);
    /// if so, the caller must call `probe_done` when the probe returns.
    pub fn claim_probe(&self) -> bool {
        if !self.bypassed() || self.probing.swap(true, Ordering::AcqRel) {
            return false;
        }
        let mut last = self.last_probe.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < PROBE_INTERVAL) {
            self.probing.store(false, Ordering::Release);
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Ends a probe: a success within the timeout brings the tier back.
    pub fn probe_done(&self, answered_in_time: bool) {
        if answered_in_time {
            self.consecutive_timeouts.store(0, Ordering::Relaxed);
            if self.bypassed.swap(false, Ordering::Relaxed) {
                tracing::info!("disk cache answering again; no longer bypassed");
            }
        }
        self.probing.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bypass_after_consecutive_timeouts_until_a_probe_succeeds() {
        let health = DiskHealth::default();
        health.timed_out("read", Duration::from_secs(1));
        health.answered();
        health.timed_out("read", Duration::from_secs(1));
        health.timed_out("read", Duration::from_secs(1));
        assert!(!health.bypassed(), "an answer in between resets the count");
        assert!(!health.claim_probe());
        health.timed_out("read", Duration::from_secs(1));
        assert!(health.bypassed());
        assert!(!health.claim_probe(), "the first probe waits an interval");
        *health.last_probe.lock().unwrap() = Some(Instant::now() - PROBE_INTERVAL);
        assert!(health.claim_probe());
        assert!(!health.claim_probe(), "one probe at a time");
        health.probe_done(false);
        assert!(health.bypassed());
        assert!(!health.claim_probe(), "not again within the interval");
        *health.last_probe.lock().unwrap() = Some(Instant::now() - PROBE_INTERVAL);
        assert!(health.claim_probe());
        health.probe_done(true);
        assert!(!health.bypassed());
        assert_eq!(health.timeouts(), 4);
    }
}
