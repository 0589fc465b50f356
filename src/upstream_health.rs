//! What the pipeline remembers about failing upstreams, so a failing or hung origin costs one slow fetch, not one
//! per request: a circuit breaker per host, and per cache key the schedule of background retries while a stale
//! copy answers (stale-if-error, stale-while-revalidate).
//!
//! Both tables are bounded and consulted only off the hit path (on an expired entry or before an upstream fetch);
//! time is the pipeline's clock, so tests move it by hand.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use mirage_cache::CacheKey;
use url::Url;

use crate::fetch::FetchError;

/// Consecutive connect or timeout failures that open a host's breaker.
pub const BREAKER_THRESHOLD: u32 = 5;
/// How long an open breaker fails fast before one probe request may try the host again.
pub const BREAKER_OPEN_FOR: Duration = Duration::from_secs(30);
/// Hosts the breaker tracks at most: only failing hosts are kept, and past this new ones go untracked (they are
/// then fetched as usual) rather than growing the table.
const MAX_HOSTS: usize = 4096;
/// Keys with a pending retry at most; past this, due entries are dropped first, then new keys go untracked (their
/// next request waits for a fetch, as before this table existed).
const MAX_KEYS: usize = 65_536;

/// What to do with an expired entry that may still answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StalePlan {
    /// Revalidate now and wait for it (the first failure of a key is still waited for).
    Wait,
    /// Answer with the stale copy at once; start one background revalidation if `retry`.
    Serve {
        /// Whether this request starts the key's background retry.
        retry: bool,
    },
}

/// A host's breaker. Closed while `open_until` is `None`.
#[derive(Debug, Clone, Copy)]
struct HostState {
    /// Consecutive connect/timeout failures.
    failures: u32,
    /// While open: until when requests fail fast. After it passes, one probe is let through (half-open), and
    /// this moves on by `BREAKER_OPEN_FOR` so the others keep failing fast until the probe answers.
    open_until: Option<SystemTime>,
    /// Whether the last failure was a timeout (fail fast with 504) or a connect failure (502).
    timed_out: bool,
}

/// Per-host breakers and per-key retry schedules. Shared by every request of a pipeline.
#[derive(Debug)]
pub struct UpstreamHealth {
    hosts: Mutex<HashMap<String, HostState>>,
    /// Key -> when the next background retry may start.
    retries: Mutex<HashMap<CacheKey, SystemTime>>,
    retry_interval: Duration,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a single map operation: a poisoned table is still consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The breaker's name for a target: host and port, as connections are made.
pub fn host_of(url: &Url) -> String {
    format!("{}:{}", url.host_str().unwrap_or_default(), url.port_or_known_default().unwrap_or(0))
}

impl UpstreamHealth {
    /// Tables for a pipeline retrying a failing key at most once per `retry_interval`.
    pub fn new(retry_interval: Duration) -> UpstreamHealth {
        UpstreamHealth { hosts: Mutex::default(), retries: Mutex::default(), retry_interval }
    }

    /// Before fetching from `host`: `Err` (the last failure again, without contacting the host) while its breaker
    /// is open; once the open period is over, lets exactly one probe through and keeps failing the others fast.
    pub fn before_fetch(&self, host: &str, now: SystemTime) -> Result<(), FetchError> {
        let mut hosts = lock(&self.hosts);
        let Some(state) = hosts.get_mut(host) else { return Ok(()) };
        let Some(open_until) = state.open_until else { return Ok(()) };
        if now < open_until {
            return Err(if state.timed_out {
                FetchError::Timeout
            } else {
                FetchError::Connect(format!("circuit breaker open for {host}: failing fast"))
            });
        }
        // Half-open: this request probes; the others fail fast until it has answered.
        state.open_until = Some(now + BREAKER_OPEN_FOR);
        tracing::debug!(host, "circuit breaker half-open: probing");
        Ok(())
    }

    /// After a fetch from `host`: connect failures, timeouts and bodies that broke off count towards opening its
    /// breaker; any complete answer from the host (even an error status) closes it. Logs once per change of state.
    pub fn after_fetch(&self, host: &str, failure: Option<&FetchError>, now: SystemTime) {
        let timed_out = match failure {
            Some(FetchError::Timeout) => true,
            // A host that resets every transfer half-way is not answering either.
            Some(FetchError::Connect(_) | FetchError::Body(_)) => false,
            _ => {
                let was_open = lock(&self.hosts).remove(host).is_some_and(|state| state.open_until.is_some());
                if was_open {
                    tracing::info!(host, "circuit breaker closed: upstream answers again");
                }
                return;
            }
        };
        let mut hosts = lock(&self.hosts);
        if !hosts.contains_key(host) && hosts.len() >= MAX_HOSTS {
            // Keep the open breakers; forget the hosts that merely failed once or twice.
            hosts.retain(|_, state| state.open_until.is_some());
            if hosts.len() >= MAX_HOSTS {
                return;
            }
        }
        let state = hosts.entry(host.to_owned()).or_insert(HostState { failures: 0, open_until: None, timed_out });
        state.failures = state.failures.saturating_add(1);
        state.timed_out = timed_out;
        if state.failures >= BREAKER_THRESHOLD {
            if state.open_until.is_none() {
                tracing::warn!(
                    host,
                    failures = state.failures,
                    open_for = ?BREAKER_OPEN_FOR,
                    "circuit breaker open: upstream keeps failing to connect or answer; failing fast"
                );
            }
            // A failed probe re-opens it quietly: the state is what it was.
            state.open_until = Some(now + BREAKER_OPEN_FOR);
        }
    }

    /// Whether `host`'s breaker is open now (for tests and for deciding to serve stale without waiting).
    pub fn is_open(&self, host: &str, now: SystemTime) -> bool {
        lock(&self.hosts).get(host).and_then(|state| state.open_until).is_some_and(|until| now < until)
    }

    /// For an expired entry that may answer stale: wait for a revalidation unless a revalidation of this key
    /// already failed (or `background` asks for one, as stale-while-revalidate does); then answer at once and
    /// start a background retry at most once per retry interval.
    pub fn plan_stale(&self, key: &CacheKey, now: SystemTime, background: bool) -> StalePlan {
        let mut retries = lock(&self.retries);
        match retries.get_mut(key) {
            Some(next) if now < *next => StalePlan::Serve { retry: false },
            Some(next) => {
                *next = now + self.retry_interval;
                StalePlan::Serve { retry: true }
            }
            None if background => {
                if insert_bounded(&mut retries, *key, now + self.retry_interval, now) {
                    StalePlan::Serve { retry: true }
                } else {
                    StalePlan::Wait
                }
            }
            None => StalePlan::Wait,
        }
    }

    /// A revalidation of `key` failed at `now` (a stale copy answered): the next requests answer stale at once,
    /// and upstream is tried again after the retry interval.
    pub fn revalidation_failed(&self, key: &CacheKey, now: SystemTime) {
        let mut retries = lock(&self.retries);
        let next = now + self.retry_interval;
        match retries.get_mut(key) {
            Some(slot) => *slot = next,
            None => {
                insert_bounded(&mut retries, *key, next, now);
            }
        }
    }

    /// Upstream answered for `key` (fresh copy, 304 or a final refusal): nothing left to retry.
    pub fn revalidated(&self, key: &CacheKey) {
        // Most fills never failed: skip the lock's write when there is nothing to forget.
        let mut retries = lock(&self.retries);
        if !retries.is_empty() {
            retries.remove(key);
        }
    }
}

/// Inserts unless the table is full even after dropping the entries that are already due.
fn insert_bounded(
    retries: &mut HashMap<CacheKey, SystemTime>,
    key: CacheKey,
    next: SystemTime,
    now: SystemTime,
) -> bool {
    if retries.len() >= MAX_KEYS {
        retries.retain(|_, due| now < *due);
        if retries.len() >= MAX_KEYS {
            return false;
        }
    }
    retries.insert(key, next);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_893_456_000 + seconds)
    }

    fn timeout() -> FetchError {
        FetchError::Timeout
    }

    #[test]
    fn five_consecutive_failures_open_the_breaker_for_thirty_seconds() {
        let health = UpstreamHealth::new(Duration::from_secs(30));
        let host = "img.example:443";
        for _ in 0..BREAKER_THRESHOLD - 1 {
            assert_eq!(health.before_fetch(host, at(0)), Ok(()));
            health.after_fetch(host, Some(&timeout()), at(0));
        }
        assert!(!health.is_open(host, at(0)));
        health.after_fetch(host, Some(&timeout()), at(0));
        assert!(health.is_open(host, at(0)));
        assert_eq!(health.before_fetch(host, at(29)), Err(FetchError::Timeout));
        // Other hosts are not affected.
        assert_eq!(health.before_fetch("other:80", at(1)), Ok(()));

        // After 30 s one probe goes through; the others still fail fast while it runs.
        assert_eq!(health.before_fetch(host, at(30)), Ok(()));
        assert_eq!(health.before_fetch(host, at(31)), Err(FetchError::Timeout));
        // The probe fails: open again for 30 s from then.
        health.after_fetch(host, Some(&FetchError::Connect("refused".into())), at(32));
        assert!(matches!(health.before_fetch(host, at(61)), Err(FetchError::Connect(_))));
        assert_eq!(health.before_fetch(host, at(62)), Ok(()));
        // The next probe gets an answer (even a 404): closed, and counting starts from zero.
        health.after_fetch(host, Some(&FetchError::NotFound(404)), at(63));
        assert!(!health.is_open(host, at(63)));
        health.after_fetch(host, Some(&timeout()), at(64));
        assert_eq!(health.before_fetch(host, at(64)), Ok(()));
    }

    #[test]
    fn an_answer_resets_the_count() {
        let health = UpstreamHealth::new(Duration::from_secs(30));
        for round in 0..3 {
            for _ in 0..BREAKER_THRESHOLD - 1 {
                health.after_fetch("h:80", Some(&timeout()), at(round));
            }
            health.after_fetch("h:80", None, at(round));
        }
        assert!(!health.is_open("h:80", at(3)));
    }

    #[test]
    fn the_host_table_is_bounded() {
        let health = UpstreamHealth::new(Duration::from_secs(30));
        for n in 0..MAX_HOSTS + 100 {
            health.after_fetch(&format!("h{n}:80"), Some(&timeout()), at(0));
        }
        assert!(lock(&health.hosts).len() <= MAX_HOSTS);
    }

    #[test]
    fn a_failed_key_is_served_stale_and_retried_once_per_interval() {
        let health = UpstreamHealth::new(Duration::from_secs(30));
        let key = CacheKey::from_parts(&[b"k"]);
        assert_eq!(health.plan_stale(&key, at(0), false), StalePlan::Wait);
        health.revalidation_failed(&key, at(3));
        assert_eq!(health.plan_stale(&key, at(4), false), StalePlan::Serve { retry: false });
        assert_eq!(health.plan_stale(&key, at(32), false), StalePlan::Serve { retry: false });
        assert_eq!(health.plan_stale(&key, at(33), false), StalePlan::Serve { retry: true });
        // That request started the retry: the others keep answering stale without starting another.
        assert_eq!(health.plan_stale(&key, at(34), false), StalePlan::Serve { retry: false });
        health.revalidated(&key);
        assert_eq!(health.plan_stale(&key, at(35), false), StalePlan::Wait);
    }

    #[test]
    fn stale_while_revalidate_starts_one_background_revalidation() {
        let health = UpstreamHealth::new(Duration::from_secs(30));
        let key = CacheKey::from_parts(&[b"k"]);
        assert_eq!(health.plan_stale(&key, at(0), true), StalePlan::Serve { retry: true });
        assert_eq!(health.plan_stale(&key, at(1), true), StalePlan::Serve { retry: false });
        health.revalidated(&key);
        assert_eq!(health.plan_stale(&key, at(2), true), StalePlan::Serve { retry: true });
    }

    #[test]
    fn the_retry_table_is_bounded() {
        let health = UpstreamHealth::new(Duration::from_secs(30));
        for n in 0..MAX_KEYS + 10 {
            health.revalidation_failed(&CacheKey::from_parts(&[&n.to_le_bytes()]), at(0));
        }
        assert!(lock(&health.retries).len() <= MAX_KEYS);
        // Once the old ones are due, new keys fit again.
        health.revalidation_failed(&CacheKey::from_parts(&[b"new"]), at(31));
        assert!(lock(&health.retries).len() <= MAX_KEYS);
        assert_eq!(
            health.plan_stale(&CacheKey::from_parts(&[b"new"]), at(32), false),
            StalePlan::Serve { retry: false }
        );
    }
}
