//! The cache-hit path, without socket I/O: parsed request -> pipeline -> response, from memory and from disk.
//!
//! Run with `cargo bench --bench hit_path` (numbers and how to read them: BENCHMARKS.md). A tiny loopback
//! upstream on 127.0.0.1:0 serves the fixtures once to warm each entry; it counts its requests, and the bench
//! asserts afterwards that no timed iteration went upstream, so every number here really is a hit.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Request, header};
use mirage::config::ServeArgs;
use mirage::handler;
use mirage::pipeline::{CacheStatus, Pipeline};
use mirage::request::{ImageRequest, Target};
use mirage::respond;
use mirage_cache::{CacheKey, DiskTier, Entry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

/// The 42 KB photo of the article the service mirrors (500x355 JPEG).
const SMALL: &[u8] = include_bytes!("../tests/fixtures/photo-500x355.jpg");
/// A 12 MP phone photo (1.7 MB JPEG): the large end of what gets mirrored.
const LARGE: &[u8] = include_bytes!("fixtures/photo-4000x3000.jpg");

/// The shape of the URLs the service is seeded with (host, dated path, 32 hex chars, `.jpeg`).
const SEED_URL: &str = "http://static.1sapp.com/qupost/img/2022/02/28/4e7cb326c1d77bee6e18452d400abd1b.jpeg";

/// The system allocator, counting calls: the bench prints allocations per hit (a relaxed atomic add costs a
/// few ns against the microseconds measured).
struct Counting;

/// The default `--cache-tag-header`, sent on every image answer as the server does.
static CACHE_TAG: http::HeaderName = http::HeaderName::from_static("cache-tag");
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static ALLOCATED_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged; only counts. The only unsafe code in the workspace: a
// counting allocator is the one way to measure allocations per hit.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Prints the mean allocations (count and bytes) of `calls` runs of `f`, counted over the whole process.
fn count_allocations(label: &str, calls: usize, mut f: impl FnMut()) {
    let (count, bytes) = (ALLOCATIONS.load(Ordering::Relaxed), ALLOCATED_BYTES.load(Ordering::Relaxed));
    for _ in 0..calls {
        f();
    }
    let count = ALLOCATIONS.load(Ordering::Relaxed) - count;
    let bytes = ALLOCATED_BYTES.load(Ordering::Relaxed) - bytes;
    eprintln!(
        "allocations per call: {label:<40} {:>6.1} ({:>8.0} bytes)",
        count as f64 / calls as f64,
        bytes as f64 / calls as f64
    );
}

/// A loopback upstream: answers `GET /<name>` with one of the fixtures as `image/jpeg`, counting requests.
struct Upstream {
    base: String,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { continue };
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    // Enough of HTTP/1.1 for one request per connection: read the head, answer, close.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let path = String::from_utf8_lossy(&head).split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let body = match path.as_str() {
                        "/photo-500x355.jpg" => SMALL,
                        "/photo-4000x3000.jpg" => LARGE,
                        _ => {
                            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await;
                            return;
                        }
                    };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: image/jpeg\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(body).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Upstream { base, hits }
    }

    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }
}

/// A pipeline as `mirage serve` builds it, with a disk cache in `dir` and extra flags.
async fn pipeline(dir: &std::path::Path, extra: &[&str]) -> Pipeline {
    let mut argv = vec!["serve", "--cache-dir", dir.to_str().unwrap(), "--allow-private-networks"];
    argv.extend_from_slice(extra);
    let config = ServeArgs::try_parse_from(argv).unwrap().into_config().unwrap();
    Pipeline::new(&config.pipeline).await.unwrap()
}

fn runtime() -> Runtime {
    // The reqwest client in the pipeline is built without a TLS provider: choose ring, as main() does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// `GET /?{url}` answered the way the handler does it, minus hyper: parse -> pipeline.get -> respond::image.
async fn serve_once(
    pipeline: &Pipeline,
    url: &str,
    request_headers: &HeaderMap,
) -> (http::Response<respond::Body>, CacheStatus) {
    let request = ImageRequest::mirror(Target::parse(url).unwrap());
    let served = pipeline.get(&request).await.unwrap();
    (respond::image(&served, false, request_headers, Some(&CACHE_TAG)), served.cache_status)
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group
        .bench_function("target_parse/seed_url", |b| b.iter(|| Target::parse(std::hint::black_box(SEED_URL)).unwrap()));
    let encoded = percent_encoding::utf8_percent_encode(SEED_URL, percent_encoding::NON_ALPHANUMERIC).to_string();
    group.bench_function("target_parse/seed_url_percent_encoded", |b| {
        b.iter(|| Target::parse(std::hint::black_box(&encoded)).unwrap());
    });
    let request = ImageRequest::mirror(Target::parse(SEED_URL).unwrap());
    group.bench_function("source_key/seed_url", |b| b.iter(|| std::hint::black_box(&request).source_key()));
    group.finish();
}

fn memory_hit(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let upstream = rt.block_on(Upstream::start());
    let pipeline = rt.block_on(pipeline(dir.path(), &[]));
    let no_headers = HeaderMap::new();
    let mut group = c.benchmark_group("memory_hit");
    for (label, name, len) in
        [("42KB", "photo-500x355.jpg", SMALL.len()), ("1.7MB", "photo-4000x3000.jpg", LARGE.len())]
    {
        let url = upstream.url(name);
        let (warm, status) = rt.block_on(serve_once(&pipeline, &url, &no_headers));
        assert_eq!(status, CacheStatus::Miss, "warming {name}");
        assert_eq!(warm.headers()[header::CONTENT_LENGTH], len.to_string().as_str());
        let (_, status) = rt.block_on(serve_once(&pipeline, &url, &no_headers));
        assert_eq!(status, CacheStatus::HitMemory, "second request for {name}");
        group.bench_function(format!("parse_get_respond/{label}"), |b| {
            b.to_async(&rt).iter(|| serve_once(&pipeline, &url, &no_headers));
        });
    }

    // The pieces of the 42 KB hit, to see where its time goes.
    let url = upstream.url("photo-500x355.jpg");
    let request = ImageRequest::mirror(Target::parse(&url).unwrap());
    let served = rt.block_on(pipeline.get(&request)).unwrap();
    count_allocations("Target::parse", 1000, || drop(Target::parse(&url).unwrap()));
    count_allocations("pipeline.get (memory hit)", 1000, || drop(rt.block_on(pipeline.get(&request)).unwrap()));
    count_allocations("respond::image", 1000, || drop(respond::image(&served, false, &no_headers, Some(&CACHE_TAG))));
    count_allocations("parse + get + respond (memory hit)", 1000, || {
        drop(rt.block_on(serve_once(&pipeline, &url, &no_headers)));
    });
    group.bench_function("pipeline_get/42KB", |b| b.to_async(&rt).iter(|| pipeline.get(&request)));
    group.bench_function("respond_image/42KB", |b| {
        b.iter(|| respond::image(&served, false, &no_headers, Some(&CACHE_TAG)));
    });
    let mut conditional = HeaderMap::new();
    conditional.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&served.entry.etag_token()).unwrap());
    group.bench_function("parse_get_respond_304/42KB", |b| {
        b.to_async(&rt).iter(|| async {
            let (response, _) = serve_once(&pipeline, &url, &conditional).await;
            assert_eq!(response.status(), http::StatusCode::NOT_MODIFIED);
            response
        });
    });
    // What the server's service_fn calls: routing and error mapping on top of the above, and the request's
    // metrics (still no hyper I/O).
    let uri = format!("/?{url}");
    let answer = || async {
        let started = Instant::now();
        let request = Request::get(uri.as_str()).body(()).unwrap();
        let (response, outcome) = handler::handle(&pipeline, &request).await;
        let bytes = hyper::body::Body::size_hint(response.body()).exact().unwrap_or(0);
        let status = response.status().as_u16();
        pipeline.metrics().request(outcome.route, status, outcome.cache_status, bytes, started.elapsed());
        response
    };
    count_allocations("handler::handle + metrics (memory hit)", 1000, || drop(rt.block_on(answer())));
    count_allocations("metrics.request", 1000, || {
        pipeline.metrics().request(
            mirage::metrics::RouteKind::Mirror,
            200,
            Some(CacheStatus::HitMemory),
            42_342,
            Duration::from_micros(40),
        );
    });
    group.bench_function("handler_handle/42KB", |b| b.to_async(&rt).iter(answer));
    // The handler alone, as this bench measured it before metrics existed: the difference to the above is what
    // the server's per-request metrics cost (a clock read, the body size, the atomics).
    group.bench_function("handler_only/42KB", |b| {
        b.to_async(&rt).iter(|| async {
            let request = Request::get(uri.as_str()).body(()).unwrap();
            handler::handle(&pipeline, &request).await
        });
    });
    group.bench_function("metrics_request", |b| {
        b.iter(|| {
            pipeline.metrics().request(
                mirage::metrics::RouteKind::Mirror,
                std::hint::black_box(200),
                Some(CacheStatus::HitMemory),
                42_342,
                Duration::from_micros(40),
            );
        });
    });
    group.finish();
    assert_eq!(upstream.hits.load(Ordering::Relaxed), 2, "a memory-hit iteration went upstream");
}

fn disk_hit(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let upstream = rt.block_on(Upstream::start());
    // A 1 KiB memory tier cannot hold either photo, so lookups fall through to the disk tier.
    let pipeline = rt.block_on(pipeline(dir.path(), &["--memory-cache-size", "1KiB"]));
    let no_headers = HeaderMap::new();
    let mut group = c.benchmark_group("disk_hit");
    for (label, name, len) in
        [("42KB", "photo-500x355.jpg", SMALL.len()), ("1.7MB", "photo-4000x3000.jpg", LARGE.len())]
    {
        let url = upstream.url(name);
        let request = ImageRequest::mirror(Target::parse(&url).unwrap());
        let key = request.source_key();
        let (_, status) = rt.block_on(serve_once(&pipeline, &url, &no_headers));
        assert_eq!(status, CacheStatus::Miss, "warming {name}");
        rt.block_on(pipeline.flush());
        let (memory, pipeline, url, no_headers) = (pipeline.cache().memory(), &pipeline, url.as_str(), &no_headers);
        group.throughput(Throughput::Bytes(len as u64));
        // moka drops an over-budget entry only at its next housekeeping, so a disk hit's promotion to memory
        // can answer the next lookup. Evict it before each timed request (outside the timing) so that every
        // timed request is a disk hit; the promotion itself, as in production, stays inside the timing.
        group.bench_function(format!("parse_get_respond/{label}"), |b| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    memory.remove(&key).await;
                    let started = Instant::now();
                    let (response, status) = serve_once(pipeline, url, no_headers).await;
                    total += started.elapsed();
                    assert_eq!(status, CacheStatus::HitDisk);
                    drop(std::hint::black_box(response));
                }
                total
            });
        });
        let disk = pipeline.cache().disk().expect("disk tier");
        count_allocations(&format!("parse + get + respond (disk hit, {label})"), 100, || {
            rt.block_on(memory.remove(&key));
            drop(rt.block_on(serve_once(pipeline, url, no_headers)));
        });
        // The blocking part alone (no spawn_blocking, no promotion): open, read, verify header and body digest,
        // touch the mtime, update the LRU index.
        group.bench_function(format!("disk_tier_read/{label}"), |b| b.iter(|| disk.read(&key).unwrap().unwrap()));
    }
    group.finish();
    assert_eq!(upstream.hits.load(Ordering::Relaxed), 2, "a disk-hit iteration went upstream");

    // The same read on a tier opened on its own (what `DiskTier::open` + `read` cost without the pipeline).
    let own = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(own.path(), 1 << 30).unwrap();
    let key = CacheKey::from_parts(&[b"bench", b"large"]);
    let entry = Entry::image("image/jpeg", Bytes::from_static(LARGE), 0, u64::MAX);
    disk.write(&key, &entry).unwrap();
    let mut group = c.benchmark_group("disk_tier");
    group.throughput(Throughput::Bytes(LARGE.len() as u64));
    group.bench_function("read/1.7MB", |b| b.iter(|| disk.read(&key).unwrap().unwrap()));
    group.bench_function("sha256/1.7MB", |b| b.iter(|| CacheKey::from_parts(&[std::hint::black_box(LARGE)])));
    group.bench_function("fs_read/1.7MB", |b| {
        let path = disk.path_of(&key);
        b.iter(|| std::fs::read(&path).unwrap());
    });
    group.finish();
}

criterion_group!(benches, parse, memory_hit, disk_hit);
criterion_main!(benches);
