//! The shared tier: one cache on S3-compatible object storage (or GCS, Azure, a shared filesystem), behind the
//! local tiers of every node of a fleet, through the `object_store` crate's `ObjectStore` trait (its `InMemory`
//! store is what the unit tests run against).
//!
//! Entries are stored in the disk tier's format (header with the SHA-256 of the body, then the body) and verified
//! on every read: a corrupt or truncated object is deleted and is a miss, never an answer. The store is an
//! optimisation, never a dependency: every operation is bounded by `--shared-timeout`, a failure opens a breaker
//! that skips the store for an interval (see `breaker`), and writes go through a bounded queue that drops what it
//! cannot hold (see `writer`), so a response never waits for the store to accept a write.
//!
//! Cluster-wide, `lease` gives one upstream fetch per source, and `purges` carries purges to every node.

mod breaker;
mod layout;
mod lease;
mod purges;
mod stats;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

pub use self::breaker::Breaker;
pub use self::layout::{Layout, parse_purge_record};
pub use self::lease::{FillLease, LeaseClaim, Waited};
pub use self::purges::{CURSOR_FILE, PurgeFeed, SharedPurge};
pub use self::stats::{LeaseResult, LookupResult, SharedStats, WriteResult};
pub use self::writer::StillWanted;
use self::writer::WriteQueue;
use crate::key::CacheKey;
use crate::meta::{self, Entry};

/// The largest object a read accepts. Entries are bounded by the fetch limit (`--max-source-bytes`) and the
/// pixel limits long before this; a bigger object is not one of ours and is not read into memory.
const MAX_OBJECT_BYTES: u64 = 256 << 20;
/// Writes, purges and listings move more than a lookup: they get this many `--shared-timeout`s.
const LONG_OPERATION_FACTOR: u32 = 10;

/// How to reach and use the shared store (from `--shared-cache` and its companion flags).
#[derive(Clone, Debug)]
pub struct SharedOptions {
    /// `s3://BUCKET/PREFIX`, `gs://…`, `az://…`, `file:///path`, or `memory:///` (one process only).
    pub url: String,
    /// Bound on each lookup and lease operation (`--shared-timeout`); writes get `LONG_OPERATION_FACTOR` times it.
    pub timeout: Duration,
    /// How long the store is skipped after a failure before one operation probes it again.
    pub probe_interval: Duration,
    /// How often the purge records are listed (`--purge-poll`).
    pub purge_poll: Duration,
    /// How long a fill lease holds before another node may take it over (`--fetch-timeout`).
    pub lease_ttl: Duration,
    /// Purge records older than this (the longest TTL any entry can have) are deleted by whoever lists them.
    pub purge_retention: Duration,
    /// A full write queue makes a store wait for room instead of dropping the write: for `warm`, whose job is to
    /// fill the store; a server never waits (a response must not wait for the store).
    pub wait_for_queue: bool,
}

/// The shared tier. Cheap to clone; clones share the store, the breaker, the write queue and the counters.
#[derive(Clone)]
pub struct SharedTier {
    inner: Arc<SharedInner>,
}

impl std::fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTier")
            .field("store", &self.inner.describe)
            .field("breaker_open", &self.inner.breaker.is_open())
            .finish_non_exhaustive()
    }
}

struct SharedInner {
    store: Arc<dyn ObjectStore>,
    layout: Layout,
    /// The store's URL for logs (no credentials: those come from the environment).
    describe: String,
    /// This process among the fleet, written into the leases it holds.
    node: String,
    timeout: Duration,
    long_timeout: Duration,
    options: SharedOptions,
    breaker: Breaker,
    stats: SharedStats,
    writes: WriteQueue,
    /// Cleared when the store turns out not to support create-only writes: then fills coalesce per node only.
    leases_supported: AtomicBool,
    /// The leases this node holds, so the write of a source's original can keep its lease until it has landed.
    held: Mutex<lease::Held>,
    /// The purge records this node wrote, so its purge poll does not purge its own cache again.
    own_purges: Mutex<purges::OwnRecords>,
}

impl SharedTier {
    /// Opens the store `options.url` names. S3 settings come from the standard environment (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`/`AWS_ENDPOINT`,
    /// `AWS_ALLOW_HTTP`, …), GCS's from `GOOGLE_*` and Azure's from `AZURE_*`, as each builder's `from_env` reads
    /// them. Nothing is contacted here: an unreachable store is found (and logged) by `check`, not fatal. Must be
    /// called inside a Tokio runtime (the write queue's task is spawned).
    pub fn open(options: &SharedOptions) -> Result<SharedTier, String> {
        install_tls_provider();
        let url = url::Url::parse(&options.url).map_err(|e| format!("--shared-cache {:?}: {e}", options.url))?;
        let environment = std::env::vars()
            .filter(|(name, _)| ["AWS_", "GOOGLE_", "AZURE_"].iter().any(|prefix| name.starts_with(prefix)));
        let (store, prefix) = object_store::parse_url_opts(&url, environment)
            .map_err(|e| format!("--shared-cache {:?}: {e}", options.url))?;
        Ok(SharedTier::with_store(Arc::from(store), &prefix, options))
    }

    /// The tier over an already built store, under `prefix` (tests use `InMemory`).
    pub fn with_store(store: Arc<dyn ObjectStore>, prefix: &Path, options: &SharedOptions) -> SharedTier {
        let inner = Arc::new_cyclic(|weak| SharedInner {
            describe: options.url.clone(),
            layout: Layout::new(prefix),
            node: node_id(),
            timeout: options.timeout,
            long_timeout: options.timeout.saturating_mul(LONG_OPERATION_FACTOR),
            breaker: Breaker::new(options.probe_interval),
            stats: SharedStats::default(),
            writes: WriteQueue::start(weak.clone()),
            leases_supported: AtomicBool::new(true),
            held: Mutex::default(),
            own_purges: Mutex::default(),
            options: options.clone(),
            store,
        });
        SharedTier { inner }
    }

    /// The store's URL, for logs.
    pub fn describe(&self) -> &str {
        &self.inner.describe
    }

    /// The options the tier was opened with.
    pub fn options(&self) -> &SharedOptions {
        &self.inner.options
    }

    /// The counters `/metrics` reports.
    pub fn stats(&self) -> &SharedStats {
        &self.inner.stats
    }

    /// Whether the store is being skipped after a failure.
    pub fn breaker_open(&self) -> bool {
        self.inner.breaker.is_open()
    }

    /// Whether fills take a cluster-wide lease (false once the store refused create-only writes).
    pub fn leases_supported(&self) -> bool {
        self.inner.leases_supported.load(Ordering::Relaxed)
    }

    /// Start-up check, logged: whether the store answers, and whether it supports create-only writes (the fill
    /// lease). An unreachable store is a warning, not an error: the node serves without it until it answers.
    pub async fn check(&self) {
        let inner = &self.inner;
        let probe = inner.layout.root().clone().join("conditional-write-check").join(inner.node.as_str());
        let create = || {
            let options = object_store::PutOptions::from(object_store::PutMode::Create);
            inner.store.put_opts(&probe, Bytes::from_static(b"mirage").into(), options)
        };
        let first = tokio::time::timeout(inner.long_timeout, create()).await;
        match first {
            Err(_) => {
                inner.breaker.failed("start-up check", &"timed out");
                return;
            }
            Ok(Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. })) => {
                self.leases_unsupported();
                return;
            }
            Ok(Err(error)) => {
                inner.breaker.failed("start-up check", &error);
                return;
            }
            Ok(Ok(_)) => {}
        }
        let second = tokio::time::timeout(inner.long_timeout, create()).await;
        if matches!(second, Ok(Ok(_))) {
            // The store accepted a create-only write over an existing object: it cannot arbitrate leases.
            self.leases_unsupported();
        }
        let _ = tokio::time::timeout(inner.long_timeout, inner.store.delete(&probe)).await;
        tracing::info!(
            store = %inner.describe,
            node = %inner.node,
            leases = self.leases_supported(),
            "shared cache reachable"
        );
    }

    fn leases_unsupported(&self) {
        if self.inner.leases_supported.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                store = %self.inner.describe,
                "the shared store does not support create-only writes: no cluster-wide fill lease, fills coalesce \
                 per node only (each node may fetch a new image once)"
            );
        }
    }

    /// Reads the entry `key` made from `source`: `None` when it is not there, the store is skipped or failing,
    /// or the object is corrupt (then it is deleted: never served).
    pub async fn get(&self, key: &CacheKey, source: &CacheKey) -> Option<Entry> {
        let (entry, result) = self.read(key, source).await;
        self.inner.stats.looked_up(result);
        entry
    }

    /// `get` without counting it as a lookup (a lease waiter's polls).
    async fn read(&self, key: &CacheKey, source: &CacheKey) -> (Option<Entry>, LookupResult) {
        let inner = &self.inner;
        if !inner.breaker.allows() {
            return (None, LookupResult::Skipped);
        }
        let path = inner.layout.entry(key, source);
        let bytes = match self.fetch_object(&path).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return (None, LookupResult::Miss),
            Err(()) => return (None, LookupResult::Error),
        };
        match meta::decode(key, bytes) {
            Ok(entry) if entry.meta().source().unwrap_or(*key) == *source => (Some(entry), LookupResult::Hit),
            Ok(_) => {
                self.discard(path, "recorded source does not match its place");
                (None, LookupResult::Corrupt)
            }
            Err(corrupt) => {
                self.discard(path, &corrupt.to_string());
                (None, LookupResult::Corrupt)
            }
        }
    }

    /// The whole object at `path`: `Ok(None)` when there is none; `Err` after telling the breaker.
    async fn fetch_object(&self, path: &Path) -> Result<Option<Bytes>, ()> {
        let inner = &self.inner;
        let started = tokio::time::timeout(inner.timeout, inner.store.get(path)).await;
        let result = match started {
            Err(_) => {
                inner.breaker.failed("get", &"timed out");
                return Err(());
            }
            Ok(Err(object_store::Error::NotFound { .. })) => {
                inner.breaker.succeeded();
                return Ok(None);
            }
            Ok(Err(error)) => {
                inner.breaker.failed("get", &error);
                return Err(());
            }
            Ok(Ok(result)) => result,
        };
        if result.meta.size > MAX_OBJECT_BYTES {
            inner.breaker.succeeded();
            self.discard(path.clone(), "larger than any entry");
            return Ok(None);
        }
        // The body may be large: it gets the longer bound, still one bound.
        match tokio::time::timeout(inner.long_timeout, result.bytes()).await {
            Err(_) => {
                inner.breaker.failed("get body", &"timed out");
                Err(())
            }
            Ok(Err(object_store::Error::NotFound { .. })) => {
                inner.breaker.succeeded();
                Ok(None)
            }
            Ok(Err(error)) => {
                inner.breaker.failed("get body", &error);
                Err(())
            }
            Ok(Ok(bytes)) => {
                inner.breaker.succeeded();
                Ok(Some(bytes))
            }
        }
    }

    /// Deletes an object that failed its checks, so no node reads it again (queued like a write).
    fn discard(&self, path: Path, reason: &str) {
        tracing::warn!(store = %self.inner.describe, path = %path, reason, "corrupt shared cache object; deleting it");
        self.inner.writes.delete(&self.inner, path);
    }

    /// Queues the write of `entry` under `key`, made from `source`; returns at once (unless `wait_for_queue`, and the
    /// queue is full). `still_wanted` is asked just
    /// before the write and again after it (a purge since the fill began: then it is not written, or is deleted).
    /// A full queue drops the write and counts it.
    pub async fn put(&self, key: CacheKey, source: CacheKey, entry: Entry, still_wanted: StillWanted) {
        let path = self.inner.layout.entry(&key, &source);
        // An original written by the holder of its fill lease keeps the lease until it has landed: nodes waiting
        // for it then find the object rather than a released lease and no object.
        let lease = if key == source { lease::held(&self.inner, &source) } else { None };
        self.inner.writes.put(&self.inner, path, key, entry, still_wanted, lease).await;
    }

    /// Queues the deletion of the entry `key` made from `source` (upstream now answers 404 or refuses it).
    pub fn remove(&self, key: &CacheKey, source: &CacheKey) {
        self.inner.writes.delete(&self.inner, self.inner.layout.entry(key, source));
    }

    /// Waits until every queued write has been made or dropped, at most `limit`; returns whether it got there.
    pub async fn flush(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.inner.writes.idle()).await.is_ok()
    }
}

/// Installs ring as the process's TLS provider, unless one is installed already: the store's HTTPS client (our
/// reqwest, built without a provider of its own) needs one before it is built.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `duration` in whole milliseconds, saturating (leases, purge records and their margins are kept in them).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The current Unix time in milliseconds (leases and purge records are compared across nodes: wall clock).
fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(0))
}

/// This process's name in the fleet: the host name, the process id and the start time, unique enough that two
/// processes on one host (or one restarted) never share it.
fn node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}-{}-{:x}", std::process::id(), unix_millis())
}
