//! The one way to an image: key -> cache tiers -> fetch -> transform -> store. The server and the warm command
//! both call it.
//!
//! A transformed variant is derived from the cached original: the original is fetched once (and revalidated
//! on its own schedule), and every variant of it is made from that copy without contacting upstream again.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mirage_cache::{Coalescer, Entry, EntryKind, FillError, Lookup, MemoryTier, Tier, TieredCache};
use tokio::sync::Semaphore;

use crate::config::PipelineConfig;
use crate::error::Error;
use crate::fetch::{FetchError, Fetched, Fetcher, Upstream, Validators};
use crate::freshness::{Clock, Freshness, FreshnessPolicy, unix_seconds};
use crate::request::{ImageRequest, Target, Variant};
use crate::signing::SigningPolicy;
use crate::sniff::ImageFormat;
use crate::transform::{self, Limits};
use crate::workers::{CpuPool, PoolError};

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
    /// Whether the answer depends on the request's `Accept` header (`format=auto`).
    pub varies_on_accept: bool,
    /// Unix seconds, on the pipeline's clock, when this answer was made: what is left of the entry's lifetime
    /// from then is the `max-age` clients get.
    pub answered_at: u64,
}

impl Served {
    fn new(entry: Entry, cache_status: CacheStatus, cacheable: bool, answered_at: u64) -> Served {
        Served { entry, cache_status, cacheable, varies_on_accept: false, answered_at }
    }

    /// Seconds the entry stays fresh from when this answer was made (0 once expired).
    pub fn fresh_for(&self) -> u64 {
        self.entry.meta().expires_at.saturating_sub(self.answered_at)
    }
}

/// The cache tiers, the fetcher and the rules that join them. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    cache: TieredCache,
    /// One fill per cache key at a time; sources and variants both answer with a `Served`.
    fills: Coalescer<Served, Error>,
    fetcher: Fetcher,
    freshness: FreshnessPolicy,
    /// Bounds upstream fetches in flight: past it, answer 503 instead of piling up.
    fetch_slots: Semaphore,
    /// Runs decode/resize/encode off the reactor, bounded.
    cpu: CpuPool,
    /// Pixel and frame limits of transforms.
    limits: Limits,
    /// Which request signatures the server accepts (the handler checks them; off for `warm`).
    signing: SigningPolicy,
    /// What every freshness and expiry decision reads (disk-file mtimes for LRU order stay on the wall clock).
    clock: Clock,
}

impl Pipeline {
    /// Opens the cache tiers and builds the fetcher. A disk tier that cannot be opened is logged and left out:
    /// the service runs memory-only rather than not at all.
    pub async fn new(config: &PipelineConfig) -> Result<Pipeline, String> {
        let memory = MemoryTier::new(config.cache.memory_bytes);
        let cache = TieredCache::open(memory, config.cache.disk_options()).await;
        let fetcher = Fetcher::new(config.fetch.clone()).map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Pipeline {
            inner: Arc::new(Inner {
                cache,
                fills: Coalescer::new(),
                fetcher,
                freshness: config.freshness.clone(),
                fetch_slots: Semaphore::new(config.max_inflight_fetches),
                cpu: CpuPool::new(config.transform.workers, config.transform.queue),
                limits: config.transform.limits.clone(),
                signing: config.signing.clone(),
                clock: config.clock.clone(),
            }),
        })
    }

    /// The cache tiers.
    pub fn cache(&self) -> &TieredCache {
        &self.inner.cache
    }

    /// The clock freshness is judged by.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The signed-URL policy requests are checked against.
    pub fn signing(&self) -> &SigningPolicy {
        &self.inner.signing
    }

    /// Waits for running fills (they store what they fetched), then for queued disk writes (at shutdown).
    pub async fn flush(&self) {
        self.inner.fills.idle().await;
        self.inner.cache.flush().await;
    }

    /// Answers a request: the original for a mirror, else the variant. Each comes from a fresh cache entry or
    /// from one coalesced fill per key.
    pub async fn get(&self, request: &ImageRequest) -> Result<Served, Error> {
        // Host and port rules also hold for what is already cached: a newly denied host is not served.
        self.inner.fetcher.check_host_rules(request.target.url())?;
        match &request.variant {
            None => self.get_source(&request.target).await,
            Some(variant) => {
                let mut served = self.get_variant(request, variant).await?;
                served.varies_on_accept = variant.varies_on_accept();
                Ok(served)
            }
        }
    }

    /// A variant: from the cache, or made from the (cached) original on the CPU pool.
    async fn get_variant(&self, request: &ImageRequest, variant: &Variant) -> Result<Served, Error> {
        let key = request.key();
        let now = self.inner.clock.unix_now();
        if let Lookup::Fresh(entry, tier) = self.inner.cache.lookup(&key, now).await {
            return answer_from_cache(entry, tier.into(), now);
        }
        let pipeline = self.clone();
        let request = request.clone();
        let variant = variant.clone();
        let filled = self
            .inner
            .fills
            .fill_once(key, move || async move { pipeline.fill_variant(&request, &variant).await })
            .await;
        flatten(filled)
    }

    /// The leader's work for one variant key: get the original, transform it, store the result.
    async fn fill_variant(&self, request: &ImageRequest, variant: &Variant) -> Result<Served, Error> {
        let key = request.key();
        let now = self.inner.clock.unix_now();
        if let Lookup::Fresh(entry, tier) = self.inner.cache.lookup(&key, now).await {
            return answer_from_cache(entry, tier.into(), now);
        }
        let original = self.get_source(&request.target).await?;
        let source = original.entry.body().clone();
        let options = variant.options.clone();
        let accepts = variant.accepts;
        let limits = self.inner.limits.clone();
        let encoded = self
            .inner
            .cpu
            .run(move || {
                let info = transform::probe(&source)?;
                let output = transform::choose_output(options.format, accepts, &info);
                transform::transform(&source, &options, output, &limits)
            })
            .await
            .map_err(|error| match error {
                PoolError::Full => Error::Overloaded,
                PoolError::Panicked => Error::Internal,
            })??;
        // The transform took time: judge the result's freshness after it.
        let now = self.inner.clock.unix_now();
        // A variant lives as long as its original: when the original expires, both are refreshed together.
        let expires_at = original.entry.meta().expires_at.max(now);
        let entry = Entry::image(encoded.format.media_type(), encoded.bytes.into(), now, expires_at);
        let cache_status = match original.cache_status {
            CacheStatus::Stale => CacheStatus::Stale,
            _ => CacheStatus::Miss,
        };
        let cacheable = original.cacheable && cache_status != CacheStatus::Stale && entry.is_fresh(now);
        if cacheable {
            self.inner.cache.store(key, entry.clone()).await;
        }
        Ok(Served::new(entry, cache_status, original.cacheable, now))
    }

    /// The original image: from a fresh cache entry, else by one coalesced upstream fetch per key.
    pub async fn get_source(&self, target: &Target) -> Result<Served, Error> {
        let key = ImageRequest::source_key_of(target);
        let now = self.inner.clock.unix_now();
        let stale = match self.inner.cache.lookup(&key, now).await {
            Lookup::Fresh(entry, tier) => return answer_from_cache(entry, tier.into(), now),
            Lookup::Stale(entry, _) => Some(entry).filter(|entry| entry.meta().kind == EntryKind::Image),
            Lookup::Miss => None,
        };
        let pipeline = self.clone();
        // Only a miss pays for owning a copy of the target.
        let request = ImageRequest::mirror(target.clone());
        let filled = self.inner.fills.fill_once(key, move || async move { pipeline.fill(&request, stale).await }).await;
        flatten(filled)
    }

    /// The leader's work for one key: fetch (conditionally when a stale copy exists), check, store.
    async fn fill(&self, request: &ImageRequest, stale: Option<Entry>) -> Result<Served, Error> {
        let key = request.source_key();
        // A fill that finished between our lookup and our turn as leader has already stored the answer.
        let now = self.inner.clock.unix_now();
        if let Lookup::Fresh(entry, tier) = self.inner.cache.lookup(&key, now).await {
            return answer_from_cache(entry, tier.into(), now);
        }
        let fetched = match self.inner.fetch_slots.try_acquire() {
            Ok(_slot) => {
                let validators = stale.as_ref().map(|entry| Validators {
                    etag: entry.meta().etag.clone(),
                    last_modified: entry.meta().last_modified.clone(),
                });
                self.inner.fetcher.fetch(request.target.url(), validators.as_ref()).await.map_err(Error::from)
            }
            Err(_) => Err(Error::Overloaded),
        };
        // The fetch took time: lifetimes start when its answer arrived.
        let now = self.inner.clock.now();
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
                let stored_at = unix_seconds(now);
                let validators = mirage_cache::Validators { etag: headers.etag, last_modified: headers.last_modified };
                let entry = stale.refreshed(stored_at, stored_at + ttl.as_secs(), validators);
                Served::new(entry, CacheStatus::Revalidated, !ttl.is_zero(), stored_at)
            }
            Err(Error::Fetch(FetchError::NotFound(_))) => {
                let ttl = self.inner.freshness.negative_ttl.as_secs();
                let stored_at = unix_seconds(now);
                self.inner.cache.store(key, Entry::not_found(stored_at, stored_at + ttl)).await;
                return Err(Error::UpstreamNotFound { cache_seconds: ttl });
            }
            Err(error) => {
                let stale_limit = self.inner.freshness.stale_if_error.as_secs();
                return match stale {
                    Some(entry)
                        if error.allows_stale()
                            && unix_seconds(now) < entry.meta().expires_at.saturating_add(stale_limit) =>
                    {
                        tracing::warn!(target = %request.target, %error, "upstream failed; serving stale copy");
                        Ok(Served::new(entry, CacheStatus::Stale, true, unix_seconds(now)))
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
        let stored_at = unix_seconds(now);
        let headers = upstream.headers;
        let validators = mirage_cache::Validators { etag: headers.etag, last_modified: headers.last_modified };
        let entry =
            Entry::image(content_type, upstream.body, stored_at, stored_at + ttl.as_secs()).with_validators(validators);
        Ok(Served::new(entry, CacheStatus::Miss, !ttl.is_zero(), stored_at))
    }
}

/// A cached negative entry answers 404 until it expires; an image answers itself. `now` is when it was looked up.
fn answer_from_cache(entry: Entry, cache_status: CacheStatus, now: u64) -> Result<Served, Error> {
    match entry.meta().kind {
        EntryKind::Image => Ok(Served::new(entry, cache_status, true, now)),
        EntryKind::NotFound => {
            Err(Error::UpstreamNotFound { cache_seconds: entry.meta().expires_at.saturating_sub(now) })
        }
    }
}

fn flatten(filled: Result<Served, FillError<Error>>) -> Result<Served, Error> {
    match filled {
        Ok(served) => Ok(served),
        Err(FillError::Failed(error)) => Err(error),
        Err(FillError::Aborted) => Err(Error::Internal),
    }
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
