//! Prometheus metrics: what the service counts, and the text exposition the admin listener serves at `/metrics`.
//!
//! Everything a request touches is a plain atomic in [`Metrics`], in fixed arrays indexed by small enums, so a
//! memory hit pays a few relaxed atomic adds: no lock, no allocation, no map lookup (prometheus-client's
//! `Family` takes a lock and may allocate per lookup, and its `Histogram` locks per observation). Label values
//! come from fixed sets only (route, status, cache status, outcome, format), never from a URL or a host, so the
//! number of series is bounded. At scrape time the atomics, the cache tiers' sizes and `/proc/self` are written
//! out with prometheus-client's encoder, in Prometheus text format 0.0.4.

mod histogram;
mod process;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

pub use histogram::Histogram;

use crate::error::ErrorCode;
use mirage_cache::shared::{LeaseResult, LookupResult, WriteResult};

use crate::pipeline::{CacheStatus, Pipeline};
use crate::transform::OutputFormat;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Which kind of request an answer was for: the `route` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteKind {
    /// `GET /?{url}`: the original image.
    Mirror,
    /// `GET /{options}/?{url}`: a variant.
    Transform,
    /// `/healthz` and `/readyz`.
    Health,
    /// Anything else: preflights, unknown paths, refused requests.
    #[default]
    Other,
}

impl RouteKind {
    const ALL: [RouteKind; 4] = [RouteKind::Mirror, RouteKind::Transform, RouteKind::Health, RouteKind::Other];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Mirror => "mirror",
            RouteKind::Transform => "transform",
            RouteKind::Health => "health",
            RouteKind::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

const ROUTES: usize = RouteKind::ALL.len();

/// `cache` label values: the `X-Cache` header, or `none` for answers without an image.
const CACHE_LABELS: [&str; 8] =
    ["HIT-MEMORY", "HIT-DISK", "MISS", "STALE", "REVALIDATED", "FALLBACK", "HIT-SHARED", "none"];

fn cache_index(status: Option<CacheStatus>) -> usize {
    match status {
        Some(CacheStatus::HitMemory) => 0,
        Some(CacheStatus::HitDisk) => 1,
        Some(CacheStatus::Miss) => 2,
        Some(CacheStatus::Stale) => 3,
        Some(CacheStatus::Revalidated) => 4,
        Some(CacheStatus::Fallback) => 5,
        Some(CacheStatus::HitShared) => 6,
        None => 7,
    }
}

/// The statuses Mirage answers with; anything else (none today) is counted as `other`.
const STATUSES: [u16; 19] =
    [200, 204, 304, 400, 401, 403, 404, 405, 410, 413, 414, 415, 422, 431, 500, 501, 502, 503, 504];
const STATUS_LABELS: [&str; STATUSES.len() + 1] = [
    "200", "204", "304", "400", "401", "403", "404", "405", "410", "413", "414", "415", "422", "431", "500", "501",
    "502", "503", "504", "other",
];

fn status_index(status: u16) -> usize {
    STATUSES.iter().position(|&known| known == status).unwrap_or(STATUSES.len())
}

/// How an upstream fetch ended: the `outcome` label of `mirage_upstream_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// An image arrived.
    Ok,
    /// 304: the stored copy is still good.
    NotModified,
    /// 404 or 410.
    NotFound,
    /// Another 4xx from upstream, or a hop refused by the network or host rules.
    Refused,
    /// Connecting or the whole fetch took too long.
    Timeout,
    /// Anything else: 5xx, connection failures, bad redirects, broken bodies.
    Error,
    /// Larger than `--max-source-bytes`.
    TooLarge,
    /// A complete answer that is not an image.
    NotImage,
}

impl UpstreamOutcome {
    const ALL: [UpstreamOutcome; 8] = [
        UpstreamOutcome::Ok,
        UpstreamOutcome::NotModified,
        UpstreamOutcome::NotFound,
        UpstreamOutcome::Refused,
        UpstreamOutcome::Timeout,
        UpstreamOutcome::Error,
        UpstreamOutcome::TooLarge,
        UpstreamOutcome::NotImage,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamOutcome::Ok => "ok",
            UpstreamOutcome::NotModified => "not_modified",
            UpstreamOutcome::NotFound => "not_found",
            UpstreamOutcome::Refused => "refused",
            UpstreamOutcome::Timeout => "timeout",
            UpstreamOutcome::Error => "error",
            UpstreamOutcome::TooLarge => "too_large",
            UpstreamOutcome::NotImage => "not_image",
        }
    }
}

const FORMATS: [OutputFormat; 5] =
    [OutputFormat::Jpeg, OutputFormat::Png, OutputFormat::Webp, OutputFormat::Gif, OutputFormat::Avif];

fn format_label(format: OutputFormat) -> &'static str {
    match format {
        OutputFormat::Jpeg => "jpeg",
        OutputFormat::Png => "png",
        OutputFormat::Webp => "webp",
        OutputFormat::Gif => "gif",
        OutputFormat::Avif => "avif",
    }
}

/// Request latencies: 100 µs (a memory hit) to 30 s (a slow upstream plus a transform).
const REQUEST_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Upstream fetches: 5 ms to the default 20 s fetch timeout and past it.
const UPSTREAM_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0];
/// Decode, resize and encode: 1 ms (a thumbnail) to 10 s (a large animation).
const TRANSFORM_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

fn counters<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

/// Everything the service counts. One per pipeline, shared; every method takes `&self` and is lock-free except
/// `fallback`, which is never on a hit.
#[derive(Debug)]
pub struct Metrics {
    requests: [[[AtomicU64; CACHE_LABELS.len()]; STATUS_LABELS.len()]; ROUTES],
    request_seconds: [[Histogram; CACHE_LABELS.len()]; ROUTES],
    response_bytes: [AtomicU64; ROUTES],
    connections: AtomicI64,
    upstream: [AtomicU64; UpstreamOutcome::ALL.len()],
    upstream_seconds: Histogram,
    upstream_bytes: AtomicU64,
    upstream_inflight: AtomicI64,
    transform_seconds: [Histogram; FORMATS.len()],
    transform_rejected: AtomicU64,
    purged_entries: AtomicU64,
    /// Fallback answers per error code. A map behind a lock: only error answers reach it, and its keys are
    /// `ErrorCode` names, a fixed set.
    fallbacks: Mutex<BTreeMap<&'static str, u64>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| counters())),
            request_seconds: std::array::from_fn(|_| std::array::from_fn(|_| Histogram::new(REQUEST_BUCKETS))),
            response_bytes: counters(),
            connections: AtomicI64::new(0),
            upstream: counters(),
            upstream_seconds: Histogram::new(UPSTREAM_BUCKETS),
            upstream_bytes: AtomicU64::new(0),
            upstream_inflight: AtomicI64::new(0),
            transform_seconds: std::array::from_fn(|_| Histogram::new(TRANSFORM_BUCKETS)),
            transform_rejected: AtomicU64::new(0),
            purged_entries: AtomicU64::new(0),
            fallbacks: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Metrics {
    /// Counts one answered request: its route, status, `X-Cache`, body bytes and time to answer. Atomics only.
    pub fn request(&self, route: RouteKind, status: u16, cache: Option<CacheStatus>, bytes: u64, took: Duration) {
        let (route, cache) = (route.index(), cache_index(cache));
        let status = status_index(status);
        if let Some(counter) = self.requests.get(route).and_then(|r| r.get(status)).and_then(|s| s.get(cache)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(histogram) = self.request_seconds.get(route).and_then(|r| r.get(cache)) {
            histogram.observe(took);
        }
        if let Some(counter) = self.response_bytes.get(route) {
            counter.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Counts an open client connection until the guard is dropped.
    pub fn connection(self: &Arc<Self>) -> OpenGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        OpenGuard { metrics: Arc::clone(self), which: Open::Connection }
    }

    /// Counts an upstream fetch in flight until the guard is dropped (also when the fetch is cancelled).
    pub fn upstream_started(self: &Arc<Self>) -> OpenGuard {
        self.upstream_inflight.fetch_add(1, Ordering::Relaxed);
        OpenGuard { metrics: Arc::clone(self), which: Open::Upstream }
    }

    /// Counts one finished upstream fetch: how it ended, how long it took and the body bytes received.
    pub fn upstream_finished(&self, outcome: UpstreamOutcome, took: Duration, bytes: u64) {
        if let Some(counter) = self.upstream.get(outcome as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.upstream_seconds.observe(took);
        self.upstream_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts one transform (decode, resize, encode) that produced `format`, and its time on the worker.
    pub fn transformed(&self, format: OutputFormat, took: Duration) {
        if let Some(histogram) = FORMATS.iter().position(|&f| f == format).and_then(|i| self.transform_seconds.get(i)) {
            histogram.observe(took);
        }
    }

    /// Counts one transform refused because the worker queue was full.
    pub fn transform_rejected(&self) {
        self.transform_rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `entries` cache entries removed by a purge.
    pub fn purged(&self, entries: u64) {
        self.purged_entries.fetch_add(entries, Ordering::Relaxed);
    }

    /// Counts one fallback image answered in place of the error `code`.
    pub fn fallback(&self, code: ErrorCode) {
        let mut fallbacks = self.fallbacks.lock().unwrap_or_else(PoisonError::into_inner);
        *fallbacks.entry(code.as_str()).or_default() += 1;
    }
}

/// Which gauge an [`OpenGuard`] holds up.
#[derive(Debug, Clone, Copy)]
enum Open {
    Connection,
    Upstream,
}

/// Decrements its gauge when dropped.
#[derive(Debug)]
pub struct OpenGuard {
    metrics: Arc<Metrics>,
    which: Open,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let gauge = match self.which {
            Open::Connection => &self.metrics.connections,
            Open::Upstream => &self.metrics.upstream_inflight,
        };
        gauge.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The whole exposition for `pipeline`: its counters, its cache tiers, the process. Allocates freely: scrapes
/// come every few seconds, not per request.
pub fn render(pipeline: &Pipeline) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(PipelineCollector(pipeline.clone())));
    registry.register_collector(Box::new(process::ProcessCollector));
    let mut text = String::with_capacity(32 * 1024);
    // Writing into a String cannot fail; the encoder's Result only passes on a writer's error.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

/// Writes a pipeline's metrics at scrape time.
struct PipelineCollector(Pipeline);

impl std::fmt::Debug for PipelineCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PipelineCollector")
    }
}

/// Starts one metric family.
fn family<'a>(
    encoder: &'a mut DescriptorEncoder,
    name: &'a str,
    help: &str,
    metric_type: MetricType,
) -> Result<MetricEncoder<'a>, std::fmt::Error> {
    encoder.encode_descriptor(name, help, None, metric_type)
}

fn counter(metric: &mut MetricEncoder, value: u64) -> Result<(), std::fmt::Error> {
    metric.encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// One counter family with a `result` label: a series per (label value, count).
fn counters_by_result<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    counts: impl Iterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = family(encoder, name, help, MetricType::Counter)?;
    for (result, count) in counts {
        counter(&mut metric.encode_family(&[("result", result)])?, count)?;
    }
    Ok(())
}

fn gauge(metric: &mut MetricEncoder, value: i64) -> Result<(), std::fmt::Error> {
    metric.encode_gauge(&value)
}

impl Collector for PipelineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metrics = self.0.metrics();
        let load = |atomic: &AtomicU64| atomic.load(Ordering::Relaxed);

        let mut info =
            family(&mut encoder, "mirage_build_info", "Always 1; the version of this build.", MetricType::Gauge)?;
        gauge(&mut info.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?, 1)?;

        let mut requests = family(
            &mut encoder,
            "mirage_http_requests",
            "Requests answered, by route, status and X-Cache (none: no image in the answer).",
            MetricType::Counter,
        )?;
        for route in RouteKind::ALL {
            for (status, per_status) in STATUS_LABELS.iter().zip(&metrics.requests[route.index()]) {
                for (cache, value) in CACHE_LABELS.iter().zip(per_status) {
                    // Combinations never seen stay out: the exposition lists what happened.
                    let value = load(value);
                    if value > 0 {
                        let labels = [("route", route.as_str()), ("status", status), ("cache", cache)];
                        counter(&mut requests.encode_family(&labels)?, value)?;
                    }
                }
            }
        }

        let mut seconds = family(
            &mut encoder,
            "mirage_http_request_duration_seconds",
            "Time from a request's head to its answer (before the body is sent), by route and X-Cache.",
            MetricType::Histogram,
        )?;
        for route in RouteKind::ALL {
            for (cache, histogram) in CACHE_LABELS.iter().zip(&metrics.request_seconds[route.index()]) {
                if histogram.count() > 0 {
                    histogram.encode(&mut seconds.encode_family(&[("route", route.as_str()), ("cache", cache)])?)?;
                }
            }
        }

        let mut bytes = family(
            &mut encoder,
            "mirage_http_response_bytes",
            "Response body bytes answered, by route.",
            MetricType::Counter,
        )?;
        for route in RouteKind::ALL {
            counter(
                &mut bytes.encode_family(&[("route", route.as_str())])?,
                load(&metrics.response_bytes[route.index()]),
            )?;
        }

        let connections = metrics.connections.load(Ordering::Relaxed);
        gauge(
            &mut family(&mut encoder, "mirage_http_connections", "Open client connections.", MetricType::Gauge)?,
            connections,
        )?;

        self.encode_cache(&mut encoder)?;
        self.encode_shared(&mut encoder)?;

        let mut upstream = family(
            &mut encoder,
            "mirage_upstream_requests",
            "Upstream fetches finished, by outcome.",
            MetricType::Counter,
        )?;
        for outcome in UpstreamOutcome::ALL {
            let value = load(&metrics.upstream[outcome as usize]);
            counter(&mut upstream.encode_family(&[("outcome", outcome.as_str())])?, value)?;
        }
        metrics.upstream_seconds.encode(&mut family(
            &mut encoder,
            "mirage_upstream_duration_seconds",
            "Time of an upstream fetch: connect, redirects, headers and body.",
            MetricType::Histogram,
        )?)?;
        counter(
            &mut family(
                &mut encoder,
                "mirage_upstream_bytes",
                "Body bytes received from upstreams.",
                MetricType::Counter,
            )?,
            load(&metrics.upstream_bytes),
        )?;
        gauge(
            &mut family(&mut encoder, "mirage_upstream_inflight", "Upstream fetches in flight.", MetricType::Gauge)?,
            metrics.upstream_inflight.load(Ordering::Relaxed),
        )?;
        counter(
            &mut family(
                &mut encoder,
                "mirage_coalesced_requests",
                "Requests that waited for a fetch or transform already running for the same key.",
                MetricType::Counter,
            )?,
            self.0.coalesced_requests(),
        )?;

        let mut transform = family(
            &mut encoder,
            "mirage_transform_duration_seconds",
            "Time on a worker to decode, resize and encode one variant, by output format.",
            MetricType::Histogram,
        )?;
        for (format, histogram) in FORMATS.iter().zip(&metrics.transform_seconds) {
            histogram.encode(&mut transform.encode_family(&[("format", format_label(*format))])?)?;
        }
        gauge(
            &mut family(
                &mut encoder,
                "mirage_transform_queue_depth",
                "Transforms waiting for a worker.",
                MetricType::Gauge,
            )?,
            i64::try_from(self.0.transform_queue_depth()).unwrap_or(i64::MAX),
        )?;
        counter(
            &mut family(
                &mut encoder,
                "mirage_transform_rejected",
                "Transforms refused (503) because the queue was full.",
                MetricType::Counter,
            )?,
            load(&metrics.transform_rejected),
        )?;

        counter(
            &mut family(
                &mut encoder,
                "mirage_purged_entries",
                "Cache entries removed by purges.",
                MetricType::Counter,
            )?,
            load(&metrics.purged_entries),
        )?;
        let fallbacks = metrics.fallbacks.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut fallback = family(
            &mut encoder,
            "mirage_fallback_responses",
            "Fallback images answered instead of an error page, by the error's code.",
            MetricType::Counter,
        )?;
        for (reason, value) in fallbacks {
            counter(&mut fallback.encode_family(&[("reason", reason)])?, value)?;
        }
        Ok(())
    }
}

impl PipelineCollector {
    /// `mirage_cache_*` and `mirage_disk_degraded`, read from the tiers now.
    fn encode_cache(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cache = self.0.cache();
        let memory = cache.memory();
        let disk = cache.disk();
        let as_i64 = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        let mut tiers: Vec<(&str, i64, i64, u64)> =
            vec![("memory", as_i64(memory.entry_count()), as_i64(memory.weighted_size()), memory.evictions())];
        if let Some(disk) = disk {
            tiers.push(("disk", as_i64(disk.entry_count() as u64), as_i64(disk.total_bytes()), disk.evictions()));
        }
        let mut entries = family(encoder, "mirage_cache_entries", "Entries held, by cache tier.", MetricType::Gauge)?;
        for (tier, count, _, _) in &tiers {
            gauge(&mut entries.encode_family(&[("tier", *tier)])?, *count)?;
        }
        let mut bytes = family(
            encoder,
            "mirage_cache_bytes",
            "Bytes held, by cache tier (memory: bodies plus per-entry overhead; disk: as the file system counts).",
            MetricType::Gauge,
        )?;
        for (tier, _, size, _) in &tiers {
            gauge(&mut bytes.encode_family(&[("tier", *tier)])?, *size)?;
        }
        let mut evictions = family(
            encoder,
            "mirage_cache_evictions",
            "Entries evicted to stay within a tier's byte budget.",
            MetricType::Counter,
        )?;
        for (tier, _, _, evicted) in &tiers {
            counter(&mut evictions.encode_family(&[("tier", *tier)])?, *evicted)?;
        }
        gauge(
            &mut family(
                encoder,
                "mirage_disk_degraded",
                "1 while the disk tier is bypassed after repeated timeouts, else 0.",
                MetricType::Gauge,
            )?,
            i64::from(cache.disk_degraded()),
        )
    }

    /// `mirage_shared_*`, when there is a shared tier: its breaker and what its lookups, writes and leases did.
    fn encode_shared(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(shared) = self.0.cache().shared() else { return Ok(()) };
        let stats = shared.stats();
        gauge(
            &mut family(
                encoder,
                "mirage_shared_breaker_open",
                "1 while the shared cache is skipped after a failure (probed once per --shared-probe-interval), else 0.",
                MetricType::Gauge,
            )?,
            i64::from(shared.breaker_open()),
        )?;
        counters_by_result(
            encoder,
            "mirage_shared_lookups",
            "Shared cache lookups, by result (skipped: the breaker was open; corrupt: deleted, not served).",
            LookupResult::ALL.iter().map(|result| (result.label(), stats.lookups(*result))),
        )?;
        counters_by_result(
            encoder,
            "mirage_shared_writes",
            "Shared cache writes, by result (dropped: the queue was full or the breaker open).",
            WriteResult::ALL.iter().map(|result| (result.label(), stats.writes(*result))),
        )?;
        counters_by_result(
            encoder,
            "mirage_shared_leases",
            "Cluster-wide fill lease claims, by result (lost: another node fetched and this one waited for it).",
            LeaseResult::ALL.iter().map(|result| (result.label(), stats.leases(*result))),
        )?;
        counter(
            &mut family(
                encoder,
                "mirage_shared_purges_applied",
                "Purges made through other nodes, applied to this node's tiers.",
                MetricType::Counter,
            )?,
            stats.purges_applied(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_a_label() {
        for (status, label) in STATUSES.iter().zip(STATUS_LABELS) {
            assert_eq!(status.to_string(), label);
        }
        assert_eq!(STATUS_LABELS[status_index(299)], "other");
    }

    #[test]
    fn requests_count_by_their_labels() {
        let metrics = Metrics::default();
        metrics.request(RouteKind::Mirror, 200, Some(CacheStatus::HitMemory), 10, Duration::from_micros(50));
        metrics.request(RouteKind::Mirror, 200, Some(CacheStatus::HitMemory), 5, Duration::from_micros(50));
        let counted = metrics.requests[RouteKind::Mirror.index()][status_index(200)][0].load(Ordering::Relaxed);
        assert_eq!(counted, 2);
        assert_eq!(metrics.response_bytes[RouteKind::Mirror.index()].load(Ordering::Relaxed), 15);
        assert_eq!(metrics.request_seconds[RouteKind::Mirror.index()][0].count(), 2);
    }
}
