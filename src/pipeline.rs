//! The one way to an image: key -> cache tiers -> fetch -> transform -> store. The server and the warm command
//! both call it.
//!
//! A transformed variant is derived from the cached original: the original is fetched once (and revalidated
//! on its own schedule), and every variant of it is made from that copy without contacting upstream again. A
//! variant expires with its original and carries its freshness inputs; once expired it is renewed, not made
//! again, when the original's bytes are unchanged.
//!
//! Failing upstreams are handled in submodules: `refusal` remembers refusals for `--negative-ttl`, `stale` answers
//! expired entries at once while upstream fails (with `crate::upstream_health` keeping the breaker and the retry
//! schedule).

mod fallback;
mod purge;
mod refusal;
mod stale;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use mirage_cache::shared::SharedTier;
use mirage_cache::{
    CacheKey, Coalescer, Entry, EntryKind, FillClaim, FillError, FreshnessInputs, Lookup, MemoryTier, Tier, TieredCache,
};
use tokio::sync::Semaphore;

use self::purge::{StoreAt, sourced};
use crate::config::DialectConfig;
use crate::config::PipelineConfig;
use crate::error::Error;
use crate::fallback::Fallback;
use crate::fetch::{FetchError, Fetched, Fetcher, Upstream, Validators};
use crate::freshness::{Clock, Freshness, FreshnessPolicy, unix_seconds};
use crate::metrics::{Metrics, UpstreamOutcome};
use crate::request::{ImageRequest, KeyedRequest, RouteMemo, Target, Variant};
use crate::signing::SigningPolicy;
use crate::sniff::ImageFormat;
use crate::transform::{self, Encoded, Limits};
use crate::upstream_health::{self, UpstreamHealth};
use crate::workers::{CpuPool, PoolError};

/// Longest `flush` waits for the shared tier's queued writes. Each is bounded by ten `--shared-timeout`s and a
/// failing store is skipped after its first failure, so this is only reached by a store that is slow, not down.
const SHARED_FLUSH_LIMIT: Duration = Duration::from_secs(300);

/// Where an answer came from, as told to clients in `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Fresh in the memory tier.
    HitMemory,
    /// Fresh in the disk tier.
    HitDisk,
    /// Fresh in the fleet's shared tier (now also in this node's memory and disk).
    HitShared,
    /// Fetched from upstream now.
    Miss,
    /// Upstream failed; an expired copy answered (stale-if-error).
    Stale,
    /// An expired copy was confirmed by upstream with a 304.
    Revalidated,
    /// The image could not be served; `--fallback-image` answered instead (never the real image's cache state).
    Fallback,
}

impl CacheStatus {
    /// The `X-Cache` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::HitMemory => "HIT-MEMORY",
            CacheStatus::HitDisk => "HIT-DISK",
            CacheStatus::HitShared => "HIT-SHARED",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Fallback => "FALLBACK",
        }
    }
}

impl From<Tier> for CacheStatus {
    fn from(tier: Tier) -> CacheStatus {
        match tier {
            Tier::Memory => CacheStatus::HitMemory,
            Tier::Disk => CacheStatus::HitDisk,
            Tier::Shared => CacheStatus::HitShared,
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
    /// Whether clients and CDNs may cache it (false when upstream said `no-store` or `private`).
    pub cacheable: bool,
    /// Upstream said `private`: only the requesting client may keep it.
    pub private: bool,
    /// Whether the answer depends on the request's `Accept` header (`format=auto`).
    pub varies_on_accept: bool,
    /// Unix seconds, on the pipeline's clock, when this answer was made: its `Age` counts up to here.
    pub answered_at: u64,
}

impl Served {
    fn new(entry: Entry, cache_status: CacheStatus, cacheable: bool, answered_at: u64) -> Served {
        Served { entry, cache_status, cacheable, private: false, varies_on_accept: false, answered_at }
    }

    /// An answer nobody may keep: `private` (for the requesting client only) or `no-store`.
    fn uncacheable(entry: Entry, cache_status: CacheStatus, private: bool, answered_at: u64) -> Served {
        Served { private, ..Served::new(entry, cache_status, false, answered_at) }
    }

    /// Seconds since the entry was stored or last revalidated, when this answer was made (its `Age`).
    pub fn age(&self) -> u64 {
        self.answered_at.saturating_sub(self.entry.meta().stored_at)
    }

    /// The entry's whole lifetime in seconds, from when it was stored or last revalidated: with [`Served::age`],
    /// what a downstream cache needs to work out what is left.
    pub fn lifetime(&self) -> u64 {
        let meta = self.entry.meta();
        meta.expires_at.saturating_sub(meta.stored_at)
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
    /// Which URL dialects are read, and their keys.
    dialects: DialectConfig,
    /// What every freshness and expiry decision reads (disk-file mtimes for LRU order stay on the wall clock).
    clock: Clock,
    /// Per-host circuit breakers and per-key background retries of failing upstreams.
    health: UpstreamHealth,
    /// The placeholder answered for upstream's and the source's failures (`serve --fallback-image`).
    fallback: Option<Fallback>,
    /// What the admin listener's `/metrics` reports.
    metrics: Arc<Metrics>,
    /// The header naming an image's source for CDN purge by tag (`--cache-tag-header`), if any.
    cache_tag_header: Option<http::HeaderName>,
    /// Request URLs parsed and keyed once (the server's; pure, so it holds nothing a purge must drop).
    routes: RouteMemo,
}

impl Pipeline {
    /// Opens the cache tiers and builds the fetcher. A disk tier that cannot be opened is logged and left out:
    /// the service runs memory-only rather than not at all.
    pub async fn new(config: &PipelineConfig) -> Result<Pipeline, String> {
        let memory = MemoryTier::new(config.cache.memory_bytes);
        let shared = config.cache.shared.as_ref().map(SharedTier::open).transpose()?;
        let cache = TieredCache::open(memory, config.cache.disk_options(), shared).await;
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
                dialects: config.dialects.clone(),
                clock: config.clock.clone(),
                health: UpstreamHealth::new(config.retry_interval),
                fallback: config.fallback.clone(),
                metrics: Arc::new(Metrics::default()),
                cache_tag_header: config.cache_tag_header.clone(),
                routes: RouteMemo::new(),
            }),
        })
    }

    /// The cache tiers.
    pub fn cache(&self) -> &TieredCache {
        &self.inner.cache
    }

    /// The counters `/metrics` reports.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Requests so far that joined a fill already running for their key instead of starting one.
    pub fn coalesced_requests(&self) -> u64 {
        self.inner.fills.joined()
    }

    /// Transforms waiting for a worker right now.
    pub fn transform_queue_depth(&self) -> usize {
        self.inner.cpu.queued()
    }

    /// The clock freshness is judged by.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The fallback image, when `--fallback-image` is set.
    pub fn fallback_image(&self) -> Option<&Fallback> {
        self.inner.fallback.as_ref()
    }

    /// The header that names an image's source for CDN purge by tag, if one is sent (`--cache-tag-header`).
    pub fn cache_tag_header(&self) -> Option<&http::HeaderName> {
        self.inner.cache_tag_header.as_ref()
    }

    /// The URL dialects read (`--dialects`, `--origin`) and their keys.
    pub fn dialects(&self) -> &DialectConfig {
        &self.inner.dialects
    }

    /// The freshness rules: the TTL bounds a dialect's `maxage` is clamped to.
    pub fn freshness(&self) -> &FreshnessPolicy {
        &self.inner.freshness
    }

    /// The signed-URL policy requests are checked against.
    pub fn signing(&self) -> &SigningPolicy {
        &self.inner.signing
    }

    /// Waits for running fills (they store what they fetched), then for queued disk writes, then (for at most
    /// `SHARED_FLUSH_LIMIT`) for queued shared cache writes.
    pub async fn flush(&self) {
        self.inner.fills.idle().await;
        self.inner.cache.flush().await;
        if !self.inner.cache.flush_shared(SHARED_FLUSH_LIMIT).await {
            tracing::warn!(limit = ?SHARED_FLUSH_LIMIT, "shared cache writes still queued; not waiting for them");
        }
    }

    /// Shutdown's last step: lets running fills finish (they store what they fetched), then lets the queued disk
    /// writes land, each step within `limit`, and closes the disk tier. The writes are waited for even when the
    /// fills overran, so what was fetched in time is not lost to one hung fill. Returns whether both finished in
    /// time; nothing is written to disk after this returns.
    pub async fn shutdown(&self, limit: Duration) -> bool {
        let fills = tokio::time::timeout(limit, self.inner.fills.idle()).await;
        if fills.is_err() {
            tracing::warn!(?limit, "shutdown timeout passed with cache fills still running; not waiting for them");
        }
        let writes = tokio::time::timeout(limit, self.inner.cache.flush()).await;
        if writes.is_err() {
            tracing::warn!(?limit, "shutdown timeout passed with disk writes unfinished; not waiting for them");
        }
        let shared = self.inner.cache.flush_shared(limit).await;
        if !shared {
            tracing::warn!(?limit, "shutdown timeout passed with shared cache writes unfinished; not waiting for them");
        }
        self.inner.cache.close();
        fills.is_ok() && writes.is_ok() && shared
    }

    /// Answers a request: the original for a mirror, else the variant. Each comes from a fresh cache entry or
    /// from one coalesced fill per key.
    pub async fn get(&self, request: &ImageRequest) -> Result<Served, Error> {
        self.get_with_key(request, request.key()).await
    }

    /// [`Pipeline::get`] of a request whose key is already known (the server's, from `routes`).
    pub async fn get_keyed(&self, keyed: &KeyedRequest) -> Result<Served, Error> {
        self.get_with_key(keyed.request(), keyed.key()).await
    }

    /// `get` with `key` = `request.key()`, made by the caller (once per URL for the server).
    async fn get_with_key(&self, request: &ImageRequest, key: CacheKey) -> Result<Served, Error> {
        // Host and port rules also hold for what is already cached: a newly denied host is not served.
        self.inner.fetcher.check_host_rules(request.target.url())?;
        match &request.variant {
            // A mirror's key is its source's.
            None => self.get_source_keyed(&request.target, key).await,
            Some(variant) => {
                let mut served = self.get_variant(request, variant, key).await?;
                served.varies_on_accept = variant.varies_on_accept();
                Ok(served)
            }
        }
    }

    /// The parsed-URL memo of the server in front of this pipeline (see `request::memo`).
    pub fn routes(&self) -> &RouteMemo {
        &self.inner.routes
    }

    /// A variant: from the cache, or made from the (cached) original on the CPU pool.
    async fn get_variant(&self, request: &ImageRequest, variant: &Variant, key: CacheKey) -> Result<Served, Error> {
        let now = self.inner.clock.unix_now();
        let stale = match self.inner.cache.lookup_with_source(&key, || request.source_key(), now).await {
            Lookup::Fresh(entry, tier) => return answer_from_cache(entry, tier.into(), now),
            Lookup::Stale(entry, _) => Some(entry).filter(|entry| entry.meta().kind == EntryKind::Image),
            Lookup::Miss => None,
        };
        if let Some(entry) = &stale
            && let Some(served) = self.variant_stale_at_once(key, request, variant, entry).await
        {
            return Ok(served);
        }
        let pipeline = self.clone();
        let request = request.clone();
        let variant = variant.clone();
        let filled = self
            .inner
            .fills
            .fill_once(key, move || async move { pipeline.fill_variant(&request, &variant, key).await })
            .await;
        flatten(filled)
    }

    /// The leader's work for one variant key: get the original, transform it, store the result. An expired
    /// variant made from the very bytes the original still has is renewed instead of made again: a variant is
    /// revalidated by revalidating its original. While upstream fails, the expired variant answers `STALE` under
    /// the rules of an original (see `stale`), also when the original itself is no longer cached.
    async fn fill_variant(&self, request: &ImageRequest, variant: &Variant, key: CacheKey) -> Result<Served, Error> {
        // Taken before anything is read: a purge from here on keeps this fill from storing.
        let at = self.store_at(key, request.source_key());
        let now = self.inner.clock.unix_now();
        // Local tiers only: `get_variant` has just asked the shared tier (and promoted what it found).
        let expired = match self.inner.cache.lookup(&key, now).await {
            Lookup::Fresh(entry, tier) => return answer_from_cache(entry, tier.into(), now),
            Lookup::Stale(entry, _) => Some(entry).filter(|entry| entry.meta().kind == EntryKind::Image),
            Lookup::Miss => None,
        };
        let original = match self.get_source(&request.target).await {
            Ok(original) => original,
            Err(error) => return self.stale_variant_or(at, expired, error).await,
        };
        // A variant's validator is the digest token of the original it was made from.
        let source_token = original.entry.etag_token();
        if let Some(expired) = expired.filter(|entry| entry.meta().etag.as_deref() == Some(source_token.as_str())) {
            // The original answers stale: so does this variant's own copy, and its next requests do at once.
            if original.cache_status == CacheStatus::Stale
                && let Some(served) = self.stale_variant(key, Some(expired.clone()))
            {
                return Ok(served);
            }
            let now = self.inner.clock.unix_now();
            let meta = original.entry.meta();
            let entry =
                expired.refreshed(now, meta.expires_at.max(now), meta.freshness, mirage_cache::Validators::default());
            return Ok(self.variant_answer(at, entry, &original, CacheStatus::Revalidated, now).await);
        }
        let encoded = match self.transform(original.entry.body().clone(), variant).await {
            Ok(encoded) => encoded,
            // A source that cannot be made into this variant stays so until it changes: remember that.
            Err(error) => return Err(self.remember_refusal(at, error, self.inner.clock.unix_now()).await),
        };
        // The transform took time: judge the result's freshness after it.
        let now = self.inner.clock.unix_now();
        // A variant follows its original: it expires with it (and is then renewed with it), and carries its
        // freshness inputs, so `no-cache`, `must-revalidate` and `immutable` hold for it as for the original.
        let meta = original.entry.meta();
        let entry = Entry::image(encoded.format.media_type(), encoded.bytes.into(), now, meta.expires_at.max(now))
            .with_freshness(meta.freshness)
            .with_validators(mirage_cache::Validators { etag: Some(source_token), last_modified: None })
            .with_source(at.source);
        Ok(self.variant_answer(at, entry, &original, CacheStatus::Miss, now).await)
    }

    /// Makes `variant` of `source` on the CPU pool, in the format negotiated for it.
    async fn transform(&self, source: Bytes, variant: &Variant) -> Result<Encoded, Error> {
        let options = variant.options.clone();
        let accepts = variant.accepts;
        let limits = self.inner.limits.clone();
        let metrics = Arc::clone(&self.inner.metrics);
        self.inner
            .cpu
            .run(move || {
                // Timed on the worker: the time a transform costs, not the time it queued.
                let started = Instant::now();
                let info = transform::probe(&source)?;
                let output = transform::choose_output(options.format(), accepts, &info);
                let encoded = transform::transform(&source, &options, output, &limits);
                if let Ok(encoded) = &encoded {
                    metrics.transformed(encoded.format, started.elapsed());
                }
                encoded
            })
            .await
            .map_err(|error| match error {
                PoolError::Full => {
                    self.inner.metrics.transform_rejected();
                    Error::Overloaded
                }
                PoolError::Panicked => Error::Internal,
            })
            .and_then(|encoded| encoded.map_err(Error::from))
    }

    /// Answers with a variant made (`Miss`) or renewed (`Revalidated`) from `original`, and stores it when the
    /// original may be kept. A variant of a stale original answers `STALE` and is not stored: it only bridges
    /// the outage.
    async fn variant_answer(
        &self,
        at: StoreAt,
        entry: Entry,
        original: &Served,
        cache_status: CacheStatus,
        now: u64,
    ) -> Served {
        let cache_status = if original.cache_status == CacheStatus::Stale { CacheStatus::Stale } else { cache_status };
        if !original.cacheable {
            return Served::uncacheable(entry, cache_status, original.private, now);
        }
        let entry = sourced(entry, at.source);
        if cache_status != CacheStatus::Stale {
            self.store(at, entry.clone()).await;
            self.inner.health.revalidated(&at.key);
        }
        Served::new(entry, cache_status, true, now)
    }

    /// The original image: from a fresh cache entry, else by one coalesced upstream fetch per key.
    pub async fn get_source(&self, target: &Target) -> Result<Served, Error> {
        self.get_source_keyed(target, ImageRequest::source_key_of(target)).await
    }

    /// [`Pipeline::get_source`] with the target's source key already made.
    async fn get_source_keyed(&self, target: &Target, key: CacheKey) -> Result<Served, Error> {
        let now = self.inner.clock.unix_now();
        let stale = match self.inner.cache.lookup_with_source(&key, || key, now).await {
            Lookup::Fresh(entry, tier) => return answer_from_cache(entry, tier.into(), now),
            Lookup::Stale(entry, _) => Some(entry).filter(|entry| entry.meta().kind == EntryKind::Image),
            Lookup::Miss => None,
        };
        if let Some(served) = stale.as_ref().and_then(|entry| self.source_stale_at_once(key, target, entry)) {
            return Ok(served);
        }
        let pipeline = self.clone();
        // Only a miss pays for owning a copy of the target.
        let request = ImageRequest::mirror(target.clone());
        let filled = self.inner.fills.fill_once(key, move || async move { pipeline.fill(&request, stale).await }).await;
        flatten(filled)
    }

    /// The leader's work for one key: fetch (conditionally when a stale copy exists), check, store.
    async fn fill(&self, request: &ImageRequest, stale: Option<Entry>) -> Result<Served, Error> {
        let key = request.source_key();
        // Taken before anything is read: a purge from here on keeps this fill from storing.
        let at = self.store_at(key, key);
        // A fill that finished between our lookup and our turn as leader has already stored the answer.
        let now = self.inner.clock.unix_now();
        if let Lookup::Fresh(entry, tier) = self.inner.cache.lookup(&key, now).await {
            return answer_from_cache(entry, tier.into(), now);
        }
        // One fetch per source in the whole fleet: another node holding the lease fetches, this one waits for its
        // entry. Ours is held until what this fill stores has reached the shared tier.
        let _lease = match self.inner.cache.claim_fill(&key, now).await {
            FillClaim::Filled(entry) => return answer_from_cache(entry, CacheStatus::HitShared, now),
            FillClaim::Fetch(lease) => lease,
        };
        // A host whose breaker is open is not contacted: its last failure answers at once.
        let host = upstream_health::host_of(request.target.url());
        let fetched = match self.inner.fetch_slots.try_acquire() {
            Err(_) => Err(Error::Overloaded),
            Ok(_slot) => match self.inner.health.before_fetch(&host, self.inner.clock.now()) {
                Err(open) => Err(Error::Fetch(open)),
                Ok(()) => {
                    let validators = stale.as_ref().map(|entry| Validators {
                        etag: entry.meta().etag.clone(),
                        last_modified: entry.meta().last_modified.clone(),
                    });
                    let inflight = self.inner.metrics.upstream_started();
                    let started = Instant::now();
                    let fetched = self.inner.fetcher.fetch(request.target.url(), validators.as_ref()).await;
                    drop(inflight);
                    let (outcome, bytes) = upstream_outcome(&fetched);
                    self.inner.metrics.upstream_finished(outcome, started.elapsed(), bytes);
                    self.inner.health.after_fetch(&host, fetched.as_ref().err(), self.inner.clock.now());
                    if let Some(error) = fetched.as_ref().err()
                        && !matches!(error, FetchError::NotFound(_))
                    {
                        // Once per fetch, not per request: what the failure answers from then on is not logged.
                        let url = request.target.url();
                        let path = url.path();
                        tracing::warn!(host = %host, path, %error, "upstream fetch failed");
                    }
                    fetched.map_err(Error::from)
                }
            },
        };
        // Upstream answered (an image, a 304 or a refusal): no retry of this key is pending any more.
        if fetched.as_ref().map_or_else(|error| !error.allows_stale(), |_| true) {
            self.inner.health.revalidated(&key);
        }
        // The fetch took time: lifetimes start when its answer arrived.
        let now = self.inner.clock.now();
        let served = match fetched {
            Ok(Fetched::Full(upstream)) => match self.admit(upstream, now) {
                Ok(served) => served,
                Err(error) => return Err(self.remember_refusal(at, error, unix_seconds(now)).await),
            },
            Ok(Fetched::NotModified(headers)) => {
                let Some(stale) = stale else {
                    return Err(FetchError::UpstreamStatus(304).into());
                };
                let stored = stale.meta().freshness;
                let freshness = self.inner.freshness.revalidated(stored, &headers, now);
                let validators = mirage_cache::Validators { etag: headers.etag, last_modified: headers.last_modified };
                let stored_at = unix_seconds(now);
                let renew = |ttl: Duration, inputs| {
                    stale.refreshed(stored_at, stored_at.saturating_add(ttl.as_secs()), inputs, validators)
                };
                match freshness {
                    Freshness::Fresh(lifetime) => {
                        Served::new(renew(lifetime.ttl, lifetime.inputs), CacheStatus::Revalidated, true, stored_at)
                    }
                    // The 304 withdrew permission to keep it: this client gets it, the stored copy stays expired.
                    Freshness::NoStore | Freshness::Private => Served::uncacheable(
                        renew(Duration::ZERO, stored),
                        CacheStatus::Revalidated,
                        freshness == Freshness::Private,
                        stored_at,
                    ),
                }
            }
            Err(Error::Fetch(FetchError::NotFound(_))) => {
                let ttl = self.inner.freshness.negative_ttl.as_secs();
                let stored_at = unix_seconds(now);
                self.store(at, Entry::not_found(stored_at, stored_at + ttl)).await;
                return Err(Error::UpstreamNotFound { cache_seconds: ttl });
            }
            Err(error) if !error.allows_stale() => {
                return Err(self.remember_refusal(at, error, unix_seconds(now)).await);
            }
            Err(error) => {
                return match stale {
                    Some(entry) if self.may_answer_stale(&entry, unix_seconds(now)) => {
                        // Host and path only: a target's query may carry credentials.
                        let url = request.target.url();
                        let (host, path) = (url.host_str().unwrap_or_default(), url.path());
                        tracing::warn!(host, path, %error, "upstream failed; serving stale copy");
                        // The next requests answer stale at once; upstream is retried in the background.
                        self.inner.health.revalidation_failed(&key, now);
                        Ok(Served::new(entry, CacheStatus::Stale, true, unix_seconds(now)))
                    }
                    _ => Err(error),
                };
            }
        };
        // Named by its source, for the CDN cache tag and for purge (a copy from a version 1 file had none).
        let served = Served { entry: sourced(served.entry, key), ..served };
        if served.cacheable && reusable(&served.entry) {
            self.store(at, served.entry.clone()).await;
        }
        Ok(served)
    }

    /// Turns a fresh upstream answer into a cache entry, if it is an image.
    fn admit(&self, upstream: Upstream, now: SystemTime) -> Result<Served, Error> {
        let format = ImageFormat::sniff(&upstream.body).ok_or(Error::NotAnImage)?;
        if let Some(vary) = upstream.headers.vary.as_deref() {
            // Upstream negotiated. We send the same request headers on every fetch (never a client's), so this
            // representation is the one every later fetch would get: it is kept for everyone, keyed without Vary.
            let url = &upstream.final_url;
            // Host and path only: a target's query may carry credentials.
            let (host, path) = (url.host_str().unwrap_or_default(), url.path());
            tracing::debug!(host, path, vary, format = format.media_type(), "upstream answer varies");
        }
        let content_type = format.response_content_type(upstream.headers.content_type.as_deref());
        let freshness = self.inner.freshness.lifetime(&upstream.headers, now);
        let stored_at = unix_seconds(now);
        let headers = upstream.headers;
        let validators = mirage_cache::Validators { etag: headers.etag, last_modified: headers.last_modified };
        let (ttl, inputs) = match freshness {
            Freshness::Fresh(lifetime) => (lifetime.ttl, lifetime.inputs),
            Freshness::NoStore | Freshness::Private => (Duration::ZERO, FreshnessInputs::default()),
        };
        let entry = Entry::image(content_type, upstream.body, stored_at, stored_at.saturating_add(ttl.as_secs()))
            .with_validators(validators)
            .with_freshness(inputs);
        Ok(match freshness {
            // Kept even with a zero lifetime (`no-cache`, `max-age=0`): then every reuse is revalidated first.
            Freshness::Fresh(_) => Served::new(entry, CacheStatus::Miss, true, stored_at),
            Freshness::NoStore => Served::uncacheable(entry, CacheStatus::Miss, false, stored_at),
            Freshness::Private => Served::uncacheable(entry, CacheStatus::Miss, true, stored_at),
        })
    }
}

/// The `outcome` label of a finished fetch, and the body bytes it brought.
fn upstream_outcome(fetched: &Result<Fetched, FetchError>) -> (UpstreamOutcome, u64) {
    match fetched {
        // Sniffing is a look at the first bytes; `admit` does it again to pick the format.
        Ok(Fetched::Full(upstream)) if ImageFormat::sniff(&upstream.body).is_none() => {
            (UpstreamOutcome::NotImage, upstream.body.len() as u64)
        }
        Ok(Fetched::Full(upstream)) => (UpstreamOutcome::Ok, upstream.body.len() as u64),
        Ok(Fetched::NotModified(_)) => (UpstreamOutcome::NotModified, 0),
        Err(FetchError::NotFound(_)) => (UpstreamOutcome::NotFound, 0),
        Err(FetchError::UpstreamStatus(status)) if (400..500).contains(status) => (UpstreamOutcome::Refused, 0),
        Err(FetchError::Forbidden(_) | FetchError::HostRule(_)) => (UpstreamOutcome::Refused, 0),
        Err(FetchError::TooLarge { .. }) => (UpstreamOutcome::TooLarge, 0),
        Err(FetchError::Timeout) => (UpstreamOutcome::Timeout, 0),
        Err(
            FetchError::UpstreamStatus(_)
            | FetchError::TooManyRedirects(_)
            | FetchError::BadRedirect(_)
            | FetchError::Connect(_)
            | FetchError::Body(_),
        ) => (UpstreamOutcome::Error, 0),
    }
}

/// Whether a stored copy could ever answer again. One that must be revalidated before every reuse (`no-cache`,
/// `max-age=0`) but has no validator could only be refetched whole: storing it would cost a write per request for
/// nothing.
fn reusable(entry: &Entry) -> bool {
    let meta = entry.meta();
    !meta.freshness.no_cache || meta.etag.is_some() || meta.last_modified.is_some()
}

/// A cached negative entry answers 404 (or the remembered refusal) until it expires; an image answers itself.
/// `now` is when it was looked up.
fn answer_from_cache(entry: Entry, cache_status: CacheStatus, now: u64) -> Result<Served, Error> {
    match entry.meta().kind {
        EntryKind::Image => Ok(Served::new(entry, cache_status, true, now)),
        EntryKind::NotFound => {
            Err(Error::UpstreamNotFound { cache_seconds: entry.meta().expires_at.saturating_sub(now) })
        }
        EntryKind::Refused => Err(refusal::recall(&entry.meta().content_type)),
    }
}

fn flatten(filled: Result<Served, FillError<Error>>) -> Result<Served, Error> {
    match filled {
        Ok(served) => Ok(served),
        Err(FillError::Failed(error)) => Err(error),
        Err(FillError::Aborted) => Err(Error::Internal),
    }
}
