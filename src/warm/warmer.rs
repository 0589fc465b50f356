//! The warm engine: makes sure every (URL, variant) entry is cached, through the same `Pipeline` as `serve`
//! (cache-dir mode) or through a running server over HTTP (server mode), with bounded concurrency,
//! per-upstream-host politeness, retries with backoff, and a clean stop on SIGINT/SIGTERM.
//!
//! Work is scheduled per URL. The original is warmed first, then its variants: a variant is made from the
//! cached original, so only the original touches upstream. Each upstream host gets its own small set of
//! workers (`--per-host` of them), and every worker takes a slot of the global `--concurrency` semaphore per
//! entry, so neither bound can be exceeded and a slow host never blocks the others' workers.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mirage_cache::CacheKey;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use super::report::{FailureReason, Tally};
use crate::error::ErrorCode;
use crate::pipeline::{CacheStatus, Pipeline};
use crate::request::{AcceptClass, ImageRequest, Target, TransformOptions, Variant};

/// The cache entries every URL gets besides its original: one per distinct `--variant`, and for `format=auto`
/// one per format class a client can negotiate (each is its own cache entry). Options that change nothing
/// are the original itself and are dropped.
pub fn expand_variants(options: &[TransformOptions]) -> Vec<Variant> {
    let mut variants: Vec<Variant> = Vec::new();
    for options in options {
        // The request module decides, as for a client's request, which options are the original itself and
        // which classes an explicit format collapses to.
        for &accepts in AcceptClass::negotiable() {
            let Some(variant) = Variant::new(options.clone(), accepts) else { break };
            let seen = variants.iter().any(|other| {
                other.accepts == variant.accepts && other.options.canonical() == variant.options.canonical()
            });
            if !seen {
                variants.push(variant);
            }
        }
    }
    variants
}

/// Distinct variants as the user sees them (a `format=auto` variant counts once).
pub fn distinct_variant_count(variants: &[Variant]) -> usize {
    let mut canonical: Vec<String> = variants.iter().map(|variant| variant.options.canonical()).collect();
    canonical.sort();
    canonical.dedup();
    canonical.len()
}

/// One URL to warm, as found in the inputs and as parsed.
#[derive(Debug, Clone)]
pub struct Unit {
    /// The URL as the articles spell it (what the report shows and server mode requests).
    pub url: String,
    /// The parsed target.
    pub target: Target,
}

/// Where entries are warmed.
pub enum Backend {
    /// The disk cache directly, through the server's own pipeline.
    Cache(Pipeline),
    /// A running server, over HTTP.
    Server(ServerClient),
}

/// A client of a running Mirage server (or a CDN in front of one).
pub struct ServerClient {
    client: reqwest::Client,
    /// The server URL without a trailing slash.
    base: String,
}

impl ServerClient {
    /// A client of the server at `base`; `answer_timeout` bounds each request, body included.
    pub fn new(base: &url::Url, connect_timeout: Duration, answer_timeout: Duration) -> Result<ServerClient, String> {
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(format!("--server must be an http(s) URL, not {base}"));
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .timeout(answer_timeout)
            .user_agent(concat!("mirage-warm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| format!("building the HTTP client: {error}"))?;
        let base = base.as_str().split(['?', '#']).next().unwrap_or_default().trim_end_matches('/').to_owned();
        Ok(ServerClient { client, base })
    }

    /// Fails when nothing answers at the server's address at all (any HTTP answer will do: a CDN may not
    /// route `/healthz`), so a typo does not cost a retry cycle per URL.
    pub async fn check_reachable(&self) -> Result<(), String> {
        match self.client.get(format!("{}/healthz", self.base)).send().await {
            Ok(_) => Ok(()),
            Err(error) => Err(format!("cannot reach the server at {}: {error}", self.base)),
        }
    }

    /// `BASE/{options}/?{url}`, or `BASE/?{url}` for the original, with the URL spelled as in the articles
    /// (what pages, and so a CDN's cache keys, will use).
    fn url_for(&self, request: &ImageRequest, raw: &str) -> String {
        format!("{}{}", self.base, request.path_for(raw))
    }

    async fn attempt(&self, request: &ImageRequest, raw: &str) -> Attempt {
        let Ok(url) = reqwest::Url::parse(&self.url_for(request, raw)) else {
            return Attempt::failed(ErrorCode::BadTarget.into(), false);
        };
        let accept = match &request.variant {
            Some(variant) if variant.varies_on_accept() => match variant.accepts {
                AcceptClass::Avif => "image/avif,image/webp,image/*;q=0.8",
                AcceptClass::Webp => "image/webp,image/*;q=0.8",
                AcceptClass::Basic => "image/jpeg,image/png,image/*;q=0.8",
            },
            _ => "image/*,*/*;q=0.8",
        };
        let response = match self.client.get(url).header(reqwest::header::ACCEPT, accept).send().await {
            Ok(response) => response,
            Err(error) => return Attempt::from_client_error(&error),
        };
        let status = response.status();
        let header = |name: &str| response.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_owned);
        let x_cache = header("x-cache").unwrap_or_default().to_ascii_lowercase();
        let no_store = header("cache-control").is_some_and(|value| value.to_ascii_lowercase().contains("no-store"));
        // Read the whole body: the server has finished (and queued its store) only once it sent it all.
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) => return Attempt::from_client_error(&error),
        };
        if !status.is_success() {
            return Attempt::failed(reason_for_status(status.as_u16()), status.is_server_error());
        }
        if x_cache.starts_with("hit") {
            Attempt::Cached
        } else if x_cache == "stale" {
            Attempt::failed(FailureReason::Stale, true)
        } else if no_store {
            Attempt::failed(FailureReason::NotCacheable, false)
        } else {
            Attempt::Warmed(body.len() as u64)
        }
    }
}

/// The failure reason for a server's error status: the code of the server's status table where a status has
/// one meaning (`src/error.rs`), a group where it has several.
pub fn reason_for_status(status: u16) -> FailureReason {
    let code = match status {
        400 => return FailureReason::BadRequest,
        403 => ErrorCode::ForbiddenTarget,
        404 => ErrorCode::UpstreamNotFound,
        413 => return FailureReason::TooLarge,
        415 => ErrorCode::NotAnImage,
        422 => ErrorCode::UndecodableImage,
        500 => ErrorCode::Internal,
        502 => return FailureReason::UpstreamError,
        503 => ErrorCode::Overloaded,
        504 => ErrorCode::UpstreamTimeout,
        other => return FailureReason::HttpStatus(other),
    };
    FailureReason::Code(code)
}

/// The outcome of one try at one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    /// Fetched or made now; the body is this long.
    Warmed(u64),
    /// Already cached.
    Cached,
    /// Not cached; `retryable` for upstream or server trouble that may pass (5xx, timeouts).
    Failed { reason: FailureReason, retryable: bool },
}

impl Attempt {
    fn failed(reason: FailureReason, retryable: bool) -> Attempt {
        Attempt::Failed { reason, retryable }
    }

    fn from_client_error(error: &reqwest::Error) -> Attempt {
        let reason = if error.is_timeout() {
            FailureReason::ServerTimeout
        } else if error.is_connect() {
            FailureReason::ServerUnreachable
        } else {
            FailureReason::ServerError
        };
        Attempt::failed(reason, true)
    }
}

impl Backend {
    async fn attempt(&self, request: &ImageRequest, raw: &str) -> Attempt {
        match self {
            Backend::Cache(pipeline) => match pipeline.get(request).await {
                Ok(served) => match served.cache_status {
                    CacheStatus::HitMemory | CacheStatus::HitDisk | CacheStatus::HitShared => Attempt::Cached,
                    CacheStatus::Miss | CacheStatus::Revalidated if served.cacheable => {
                        Attempt::Warmed(served.entry.body().len() as u64)
                    }
                    // Upstream said no-store: served, but nothing was kept.
                    CacheStatus::Miss | CacheStatus::Revalidated => Attempt::failed(FailureReason::NotCacheable, false),
                    // Upstream failed and an expired copy answered: the cache was not refreshed.
                    CacheStatus::Stale => Attempt::failed(FailureReason::Stale, true),
                    // Only the server's handler answers with the fallback image, never `get`; nothing was kept.
                    CacheStatus::Fallback => Attempt::failed(FailureReason::NotCacheable, false),
                },
                Err(error) => Attempt::failed(error.public().code.into(), error.allows_stale()),
            },
            Backend::Server(server) => server.attempt(request, raw).await,
        }
    }
}

/// The bounds of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Entries in progress at once.
    pub concurrency: usize,
    /// URLs of one upstream host in progress at once.
    pub per_host: usize,
    /// Tries after the first, on retryable failures.
    pub retries: u32,
    /// The first backoff; each next one doubles, plus up to a quarter of jitter.
    pub backoff: Duration,
}

/// Where a run stands; whoever stops it (the command's signal handler) moves it forward, never back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Warming.
    Running,
    /// Start nothing new, let what is in flight finish.
    Draining,
    /// Abandon what is in flight.
    Abort,
}

/// A successful entry, checked on disk after the final flush (cache-dir mode).
struct Stored {
    key: CacheKey,
    url: String,
    warmed: bool,
    bytes: u64,
}

/// The engine of one run.
pub struct Warmer {
    backend: Backend,
    settings: Settings,
    variants: Vec<Variant>,
    tally: Arc<Tally>,
    stop: watch::Receiver<Stop>,
    /// One slot per entry in progress.
    slots: Arc<Semaphore>,
    stored: Mutex<Vec<Stored>>,
}

impl Warmer {
    /// An engine warming the original and `variants` of each URL into `backend`.
    pub fn new(
        backend: Backend,
        settings: Settings,
        variants: Vec<Variant>,
        tally: Arc<Tally>,
        stop: watch::Receiver<Stop>,
    ) -> Arc<Warmer> {
        let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        Arc::new(Warmer { backend, settings, variants, tally, stop, slots, stored: Mutex::new(Vec::new()) })
    }

    /// Cache entries per URL.
    pub fn entries_per_url(&self) -> usize {
        1 + self.variants.len()
    }

    /// Warms every unit; returns when all are done, or when the run is stopped and what was in flight has
    /// finished or been abandoned.
    pub async fn run(self: &Arc<Self>, units: Vec<Unit>) {
        let mut order: Vec<String> = Vec::new();
        let mut by_host: HashMap<String, VecDeque<Unit>> = HashMap::new();
        for unit in units {
            let host = unit.target.url().host_str().unwrap_or_default().to_owned();
            by_host
                .entry(host)
                .or_insert_with_key(|host| {
                    order.push(host.clone());
                    VecDeque::new()
                })
                .push_back(unit);
        }
        let mut workers = JoinSet::new();
        for host in order {
            let Some(queue) = by_host.remove(&host) else { continue };
            let count = self.settings.per_host.max(1).min(queue.len());
            let queue = Arc::new(Mutex::new(queue));
            for _ in 0..count {
                let warmer = Arc::clone(self);
                let queue = Arc::clone(&queue);
                workers.spawn(async move { warmer.until_abort(warmer.worker(queue)).await });
            }
        }
        while workers.join_next().await.is_some() {}
        // Variant tasks hold a slot until they end: having every slot back means every entry is done.
        let all = u32::try_from(self.settings.concurrency.max(1)).unwrap_or(u32::MAX);
        if let Ok(permits) = self.slots.acquire_many(all).await {
            drop(permits);
        }
    }

    /// One of a host's workers: takes that host's URLs one at a time, each with a global slot.
    async fn worker(self: &Arc<Self>, queue: Arc<Mutex<VecDeque<Unit>>>) {
        loop {
            if self.stopping() {
                return;
            }
            let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await else { return };
            if self.stopping() {
                return;
            }
            let next = queue.lock().unwrap_or_else(PoisonError::into_inner).pop_front();
            let Some(unit) = next else { return };
            self.warm_unit(unit, slot).await;
        }
    }

    /// The original now (holding the host's worker: it is the upstream request), then the variants in a
    /// task of their own that keeps the slot (they are made from the cached original, without upstream).
    async fn warm_unit(self: &Arc<Self>, unit: Unit, slot: OwnedSemaphorePermit) {
        let original = ImageRequest::mirror(unit.target.clone());
        if let Err(reason) = self.warm_entry(&unit, &original).await {
            // Every variant is made from the original: without it they would fail the same way.
            self.tally.failed(reason, &unit.url, self.variants.len() as u64);
            return;
        }
        if self.variants.is_empty() {
            return;
        }
        let warmer = Arc::clone(self);
        tokio::spawn(async move {
            let _slot = slot;
            warmer
                .until_abort(async {
                    for variant in &warmer.variants {
                        if warmer.stopping() {
                            break;
                        }
                        let request = ImageRequest { target: unit.target.clone(), variant: Some(variant.clone()) };
                        let _ = warmer.warm_entry(&unit, &request).await;
                    }
                })
                .await;
        });
    }

    /// One entry, with retries; counts the outcome. Returns the failure reason, if it failed.
    async fn warm_entry(&self, unit: &Unit, request: &ImageRequest) -> Result<(), FailureReason> {
        let mut retry = 0;
        loop {
            match self.backend.attempt(request, &unit.url).await {
                Attempt::Warmed(bytes) => {
                    self.tally.warmed(bytes);
                    self.remember(request, unit, true, bytes);
                    return Ok(());
                }
                Attempt::Cached => {
                    self.tally.cached();
                    self.remember(request, unit, false, 0);
                    return Ok(());
                }
                // Once interrupted, no new tries: what is in flight finishes, nothing new starts.
                Attempt::Failed { reason, retryable }
                    if !retryable || retry >= self.settings.retries || self.stopping() =>
                {
                    self.tally.failed(reason, &unit.url, 1);
                    return Err(reason);
                }
                Attempt::Failed { .. } => {
                    tokio::time::sleep(backoff(self.settings.backoff, retry)).await;
                    retry += 1;
                }
            }
        }
    }

    fn remember(&self, request: &ImageRequest, unit: &Unit, warmed: bool, bytes: u64) {
        if let Backend::Cache(_) = self.backend {
            let stored = Stored { key: request.key(), url: unit.url.clone(), warmed, bytes };
            self.stored.lock().unwrap_or_else(PoisonError::into_inner).push(stored);
        }
    }

    /// Cache-dir mode: waits until every queued disk write has landed, then checks that every entry counted
    /// as warmed or cached is really on disk, and turns those that are not into `not_stored` failures (a full
    /// or failing disk, or a `--disk-cache-size` too small for the blog, which evicts what was just written).
    /// Returns how many were missing. Server mode: nothing to do (the server flushes its own writes).
    pub async fn flush_and_verify(&self) -> usize {
        let Backend::Cache(pipeline) = &self.backend else { return 0 };
        pipeline.flush().await;
        if let Some(shared) = pipeline.cache().shared() {
            use mirage_cache::shared::WriteResult;
            let stats = shared.stats();
            let failed = stats.writes(WriteResult::Error) + stats.writes(WriteResult::Dropped);
            if failed > 0 {
                // The local cache has them; the fleet will fetch those once more. Not an entry's failure.
                eprintln!(
                    "mirage warm: {failed} of {} writes to the shared cache {} failed (RUST_LOG=warn shows why)",
                    failed + stats.writes(WriteResult::Ok),
                    shared.describe()
                );
            }
        }
        let stored = std::mem::take(&mut *self.stored.lock().unwrap_or_else(PoisonError::into_inner));
        let paths: Vec<_> = match pipeline.cache().disk() {
            Some(disk) => stored.iter().map(|entry| Some(disk.path_of(&entry.key))).collect(),
            None => stored.iter().map(|_| None).collect(),
        };
        let present = tokio::task::spawn_blocking(move || {
            paths.into_iter().map(|path| path.is_some_and(|path| path.is_file())).collect::<Vec<bool>>()
        })
        .await
        .unwrap_or_default();
        let mut missing = 0;
        for (index, entry) in stored.iter().enumerate() {
            if !present.get(index).copied().unwrap_or(false) {
                self.tally.demote(entry.warmed, entry.bytes, FailureReason::NotStored, &entry.url);
                missing += 1;
            }
        }
        missing
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow() != Stop::Running
    }

    /// Runs `work` until it ends or the run is aborted.
    async fn until_abort(&self, work: impl Future<Output = ()>) {
        let mut stop = self.stop.clone();
        let aborted = async move {
            if stop.wait_for(|stop| matches!(stop, Stop::Abort)).await.is_err() {
                // The signal handler is gone: no abort can come any more.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = work => {}
            () = aborted => {}
        }
    }
}

/// The longest wait between two tries, however many `--retries` were asked for.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// `base` × 2^retry (at most `MAX_BACKOFF`), plus up to a quarter of jitter so that retries of many URLs do
/// not arrive in step.
fn backoff(base: Duration, retry: u32) -> Duration {
    let delay = base.saturating_mul(1 << retry.min(16)).min(MAX_BACKOFF);
    // A fresh `RandomState` is randomly keyed: enough randomness for jitter without another dependency.
    let random = RandomState::new().hash_one(retry);
    delay + delay.mul_f64((random % 1000) as f64 / 4000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::OutputFormat;

    fn options(text: &str) -> TransformOptions {
        TransformOptions::parse(text).expect("valid options")
    }

    #[test]
    fn auto_variants_are_one_entry_per_class_and_duplicates_collapse() {
        let variants =
            expand_variants(&[options("width=300"), options("w=300,fit=scale-down"), options("w=800,f=auto")]);
        let expected_auto = if OutputFormat::Avif.supported() { 3 } else { 2 };
        assert_eq!(variants.len(), 1 + expected_auto);
        assert_eq!(distinct_variant_count(&variants), 2);
        assert!(variants.iter().any(|v| v.accepts == AcceptClass::Webp));
    }

    #[test]
    fn no_op_options_are_the_original() {
        assert!(expand_variants(&[options("format=original")]).is_empty());
    }

    #[test]
    fn backoff_doubles_with_a_little_jitter() {
        let base = Duration::from_millis(200);
        for retry in 0..3 {
            let delay = backoff(base, retry);
            let floor = base * (1 << retry);
            assert!(delay >= floor && delay <= floor + floor / 4, "{retry}: {delay:?}");
        }
    }

    #[test]
    fn statuses_map_to_stable_reasons() {
        assert_eq!(reason_for_status(404), FailureReason::Code(ErrorCode::UpstreamNotFound));
        assert_eq!(reason_for_status(404).to_string(), "upstream_not_found");
        assert_eq!(reason_for_status(415).to_string(), "not_an_image");
        assert_eq!(reason_for_status(413).to_string(), "too_large");
        assert_eq!(reason_for_status(504).to_string(), "upstream_timeout");
        assert_eq!(reason_for_status(418).to_string(), "http_418");
    }
}
