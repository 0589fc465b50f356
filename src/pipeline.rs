//! The one way to an image: key -> cache tiers -> fetch -> store. The server and the warm command both call it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mirage_cache::{DiskTier, Entry, EntryKind, FillError, Lookup, MemoryTier, Tier, TieredCache};
use tokio::sync::Semaphore;

use crate::config::{Config, FreshnessPolicy};
use crate::error::Error;
use crate::fetch::{FetchError, Fetched, Fetcher, Upstream, Validators};
use crate::freshness::Freshness;
use crate::request::ImageRequest;
use crate::sniff::ImageFormat;

/// Where an answer came from, as told to clients in `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Fresh in the memory tier.
    HitMemory,
    /// Fresh in the disk tier.
    HitDisk,
    /// Fetched from upstream now.
    Miss,
    /// Upstream failed; an expired copy answered (stale-if-error).
    Stale,
    /// An expired copy was confirmed by upstream with a 304.
    Revalidated,
}

impl CacheStatus {
    /// The `X-Cache` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::HitMemory => "HIT-MEMORY",
            CacheStatus::HitDisk => "HIT-DISK",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Revalidated => "REVALIDATED",
        }
    }
}

impl From<Tier> for CacheStatus {
    fn from(tier: Tier) -> CacheStatus {
        match tier {
            Tier::Memory => CacheStatus::HitMemory,
            Tier::Disk => CacheStatus::HitDisk,
        }
    }
}

/// An image ready to be sent.
#[derive(Debug, Clone)]
pub struct Served {
    /// Body and metadata; the body is shared with the cache, never copied.
    pub entry: Entry,
    /// Where it came from.
    pub cache_status: CacheStatus,
    /// Whether clients and CDNs may cache it (false when upstream said `no-store`).
    pub cacheable: bool,
}

/// The cache tiers, the fetcher and the rules that join them. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    cache: TieredCache,
    fetcher: Fetcher,
    freshness: FreshnessPolicy,
    /// Bounds upstream fetches in flight: past it, answer 503 instead of piling up.
    fetch_slots: Semaphore,
}

/// Seconds since the Unix epoch, the clock of the cache metadata.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

impl Pipeline {
    /// Opens the cache tiers and builds the fetcher. A disk tier that cannot be opened is logged and left out:
    /// the service runs memory-only rather than not at all.
    pub async fn new(config: &Config) -> Result<Pipeline, String> {
        let memory = MemoryTier::new(config.cache.memory_bytes);
        let disk = match config.cache.disk.clone() {
            None => None,
            Some((root, capacity)) => {
                let opened =
                    tokio::task::spawn_blocking(move || DiskTier::open(&root, capacity).map_err(|e| (root, e)))
                        .await
                        .map_err(|e| format!("opening the disk cache panicked: {e}"))?;
                match opened {
                    Ok(disk) => Some(disk),
                    Err((root, error)) => {
                        tracing::warn!(dir = %root.display(), %error, "disk cache unavailable; running memory-only");
                        None
                    }
                }
            }
        };
        let fetcher = Fetcher::new(config.fetch.clone()).map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Pipeline {
            inner: Arc::new(Inner {
                cache: TieredCache::new(memory, disk),
                fetcher,
                freshness: config.freshness.clone(),
                fetch_slots: Semaphore::new(config.max_inflight_fetches),
            }),
        })
    }

    /// The cache tiers.
    pub fn cache(&self) -> &TieredCache {
        &self.inner.cache
    }

    /// Waits for queued disk writes (at shutdown).
    pub async fn flush(&self) {
        self.inner.cache.flush().await;
    }

    /// Answers a request: from a fresh cache entry, else by one coalesced upstream fetch per key.
    pub async fn get(&self, request: &ImageRequest) -> Result<Served, Error> {
        let key = request.source_key();
        let stale = match self.inner.cache.lookup(&key, unix_now()).await {
            Lookup::Fresh(entry, tier) => return answer_from_cache(entry, tier.into()),
            Lookup::Stale(entry, _) => Some(entry).filter(|entry| entry.meta.kind == EntryKind::Image),
            Lookup::Miss => None,
        };
        let pipeline = self.clone();
        let request = request.clone();
        let filled = self.inner.cache.fill_once(key, move || async move { pipeline.fill(&request, stale).await }).await;
        match filled {
            Ok(served) => Ok(served),
            Err(FillError::Failed(error)) => Err(error),
            Err(FillError::Aborted) => Err(Error::Internal),
        }
    }

    /// The leader's work for one key: fetch (conditionally when a stale copy exists), check, store.
    async fn fill(&self, request: &ImageRequest, stale: Option<Entry>) -> Result<Served, Error> {
        let key = request.source_key();
        // A fill that finished between our lookup and our turn as leader has already stored the answer.
        if let Lookup::Fresh(entry, tier) = self.inner.cache.lookup(&key, unix_now()).await {
            return answer_from_cache(entry, tier.into());
        }
        let fetched = match self.inner.fetch_slots.try_acquire() {
            Ok(_slot) => {
                let validators = stale.as_ref().map(|entry| Validators {
                    etag: entry.meta.etag.clone(),
                    last_modified: entry.meta.last_modified.clone(),
                });
                self.inner.fetcher.fetch(request.target.url(), validators.as_ref()).await.map_err(Error::from)
            }
            Err(_) => Err(Error::Overloaded),
        };
        let now = SystemTime::now();
        let served = match fetched {
            Ok(Fetched::Full(upstream)) => self.admit(upstream, now)?,
            Ok(Fetched::NotModified(headers)) => {
                let Some(stale) = stale else {
                    return Err(FetchError::UpstreamStatus(304).into());
                };
                let ttl = match self.inner.freshness.lifetime(&headers, now) {
                    Freshness::Fresh(ttl) => ttl,
                    Freshness::NoStore => Duration::ZERO,
                };
                let stored_at = seconds(now);
                let entry = stale.refreshed(stored_at, stored_at + ttl.as_secs(), headers.etag, headers.last_modified);
                Served { entry, cache_status: CacheStatus::Revalidated, cacheable: !ttl.is_zero() }
            }
            Err(Error::Fetch(FetchError::NotFound(_))) => {
                let ttl = self.inner.freshness.negative_ttl.as_secs();
                let stored_at = seconds(now);
                let entry = Entry::new(
                    EntryKind::NotFound,
                    String::new(),
                    None,
                    None,
                    stored_at,
                    stored_at + ttl,
                    Default::default(),
                );
                self.inner.cache.store(key, entry).await;
                return Err(Error::UpstreamNotFound { cache_seconds: ttl });
            }
            Err(error) => {
                let stale_limit = self.inner.freshness.stale_if_error.as_secs();
                return match stale {
                    Some(entry)
                        if error.allows_stale() && seconds(now) < entry.meta.expires_at.saturating_add(stale_limit) =>
                    {
                        tracing::warn!(target = %request.target, %error, "upstream failed; serving stale copy");
                        Ok(Served { entry, cache_status: CacheStatus::Stale, cacheable: true })
                    }
                    _ => Err(error),
                };
            }
        };
        if served.cacheable {
            self.inner.cache.store(key, served.entry.clone()).await;
        }
        Ok(served)
    }

    /// Turns a fresh upstream answer into a cache entry, if it is an image.
    fn admit(&self, upstream: Upstream, now: SystemTime) -> Result<Served, Error> {
        let format = ImageFormat::sniff(&upstream.body).ok_or(Error::NotAnImage)?;
        let content_type = format.response_content_type(upstream.headers.content_type.as_deref());
        let ttl = match self.inner.freshness.lifetime(&upstream.headers, now) {
            Freshness::Fresh(ttl) => ttl,
            Freshness::NoStore => Duration::ZERO,
        };
        let stored_at = seconds(now);
        let headers = upstream.headers;
        let entry = Entry::new(
            EntryKind::Image,
            content_type,
            headers.etag,
            headers.last_modified,
            stored_at,
            stored_at + ttl.as_secs(),
            upstream.body,
        );
        Ok(Served { entry, cache_status: CacheStatus::Miss, cacheable: !ttl.is_zero() })
    }
}

/// A cached negative entry answers 404 until it expires; an image answers itself.
fn answer_from_cache(entry: Entry, cache_status: CacheStatus) -> Result<Served, Error> {
    match entry.meta.kind {
        EntryKind::Image => Ok(Served { entry, cache_status, cacheable: true }),
        EntryKind::NotFound => {
            Err(Error::UpstreamNotFound { cache_seconds: entry.meta.expires_at.saturating_sub(unix_now()) })
        }
    }
}

fn seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}
