//! Pipeline tests on a manual clock: freshness, revalidation, negative caching and stale-if-error, decided by
//! moving time instead of sleeping. The upstream is an in-process loopback server that counts requests and
//! whose answer can be switched. (The black-box tests in `tests/` keep checking the same rules on the real clock.)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, Response, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::config::ServeArgs;
use crate::error::Error;
use crate::fetch::FetchError;
use crate::freshness::ManualClock;
use crate::pipeline::*;
use crate::request::{ImageRequest, Target};
use crate::respond;
use mirage_cache::Lookup;

/// A body the sniffer takes for a GIF (mirroring never decodes it).
const GIF: &[u8] = b"GIF89a pretend image";
/// The lifetime the origin gives its image (`max-age`), within the test policy's bounds.
const MAX_AGE: u64 = 600;
const NEGATIVE_TTL: u64 = 30;
const STALE_IF_ERROR: u64 = 300;
const ETAG: &str = "\"v1\"";

/// What the origin answers.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// 200, the GIF with `max-age=600` and an ETag.
    Image,
    /// 304 to a request carrying the image's ETag, else as `Image`.
    ImageOrNotModified,
    /// 200, the GIF with this `Cache-Control` and the ETag; a bare 304 (the ETag alone, as S3 sends it) to a
    /// request carrying the ETag.
    With(&'static str),
    /// 200, the GIF with this `Cache-Control` and no validator at all.
    Unvalidated(&'static str),
    /// This status with an empty body.
    Status(u16),
}

/// The loopback origin: counts requests (and conditional ones), answers what it is told to.
struct Origin {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicUsize>,
    conditional: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    async fn start(answer: Answer) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(answer));
        let requests = Arc::new(AtomicUsize::new(0));
        let conditional = Arc::new(AtomicUsize::new(0));
        let (a, r, c) = (answer.clone(), requests.clone(), conditional.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (answer, requests, conditional) = (a.clone(), r.clone(), c.clone());
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    requests.fetch_add(1, Ordering::SeqCst);
                    let matches = request.headers().get(header::IF_NONE_MATCH).is_some_and(|tag| tag == ETAG);
                    if matches {
                        conditional.fetch_add(1, Ordering::SeqCst);
                    }
                    let answer = *answer.lock().unwrap();
                    async move { Ok::<_, Infallible>(reply(answer, matches)) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin { addr, answer, requests, conditional, task }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn conditional_requests(&self) -> usize {
        self.conditional.load(Ordering::SeqCst)
    }

    fn request(&self) -> ImageRequest {
        ImageRequest::mirror(Target::parse(&format!("http://{}/a.gif", self.addr)).unwrap())
    }
}

fn reply(answer: Answer, etag_matches: bool) -> Response<Full<Bytes>> {
    let builder = Response::builder();
    let cache_control = format!("max-age={MAX_AGE}");
    let response = match answer {
        Answer::ImageOrNotModified if etag_matches => builder
            .status(304)
            .header(header::ETAG, ETAG)
            .header(header::CACHE_CONTROL, cache_control)
            .body(Full::new(Bytes::new())),
        Answer::Image | Answer::ImageOrNotModified => builder
            .header(header::CONTENT_TYPE, "image/gif")
            .header(header::ETAG, ETAG)
            .header(header::CACHE_CONTROL, cache_control)
            .body(Full::new(Bytes::from_static(GIF))),
        Answer::With(_) if etag_matches => builder.status(304).header(header::ETAG, ETAG).body(Full::new(Bytes::new())),
        Answer::With(cache_control) => builder
            .header(header::CONTENT_TYPE, "image/gif")
            .header(header::ETAG, ETAG)
            .header(header::CACHE_CONTROL, cache_control)
            .body(Full::new(Bytes::from_static(GIF))),
        Answer::Unvalidated(cache_control) => builder
            .header(header::CONTENT_TYPE, "image/gif")
            .header(header::CACHE_CONTROL, cache_control)
            .body(Full::new(Bytes::from_static(GIF))),
        Answer::Status(status) => builder.status(status).body(Full::new(Bytes::new())),
    };
    response.unwrap()
}

/// A memory-only pipeline that may fetch from loopback, on a manual clock stopped at 2030-01-01.
async fn pipeline() -> (Pipeline, ManualClock) {
    let args = ServeArgs::try_parse_from([
        "serve",
        "--no-disk-cache",
        "--allow-net",
        "127.0.0.1/32",
        "--min-ttl",
        "10s",
        "--max-ttl",
        "1d",
        "--negative-ttl",
        &format!("{NEGATIVE_TTL}s"),
        "--stale-if-error",
        &format!("{STALE_IF_ERROR}s"),
    ])
    .unwrap();
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_893_456_000));
    let mut config = args.pipeline.into_config().unwrap();
    config.clock = clock.clock();
    (Pipeline::new(&config).await.unwrap(), clock)
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// The `Cache-Control` a client gets for this answer.
fn cache_control(served: &Served) -> String {
    let response = respond::image(served, false, &HeaderMap::new(), None);
    response.headers()[header::CACHE_CONTROL].to_str().unwrap().to_owned()
}

/// The `Age` a client gets for this answer.
fn age_header(served: &Served) -> Option<u64> {
    let response = respond::image(served, false, &HeaderMap::new(), None);
    response.headers().get(header::AGE).map(|age| age.to_str().unwrap().parse().unwrap())
}

/// The status of a successful answer, or a panic naming the error.
async fn status(pipeline: &Pipeline, request: &ImageRequest) -> CacheStatus {
    match pipeline.get(request).await {
        Ok(served) => served.cache_status,
        Err(error) => panic!("expected an image, got {error:?}"),
    }
}

/// The `cache_seconds` of a remembered 404, or a panic naming what came instead.
async fn not_found_for(pipeline: &Pipeline, request: &ImageRequest) -> u64 {
    match pipeline.get(request).await {
        Err(Error::UpstreamNotFound { cache_seconds }) => cache_seconds,
        other => panic!("expected a remembered 404, got {other:?}"),
    }
}

#[tokio::test]
async fn fresh_until_expiry_then_refetched() {
    let origin = Origin::start(Answer::Image).await;
    let (pipeline, clock) = pipeline().await;
    let request = origin.request();

    let served = pipeline.get(&request).await.unwrap();
    assert_eq!((served.cache_status, origin.requests()), (CacheStatus::Miss, 1));
    assert_eq!(served.entry.body().as_ref(), GIF);
    assert_eq!(cache_control(&served), format!("public, max-age={MAX_AGE}"));

    clock.advance(secs(MAX_AGE - 1));
    let served = pipeline.get(&request).await.unwrap();
    assert_eq!((served.cache_status, origin.requests()), (CacheStatus::HitMemory, 1));
    // Clients are told the whole lifetime and the entry's age on the pipeline's clock (a CDN subtracts one from
    // the other), not a counting-down max-age.
    assert_eq!(cache_control(&served), format!("public, max-age={MAX_AGE}"));
    assert_eq!(served.age(), MAX_AGE - 1);
    assert_eq!(age_header(&served), Some(MAX_AGE - 1));

    clock.advance(secs(1));
    assert_eq!(status(&pipeline, &request).await, CacheStatus::Miss);
    assert_eq!(origin.requests(), 2);
    // The refetched copy has a lifetime of its own, counted from the new fetch.
    clock.advance(secs(MAX_AGE - 1));
    assert_eq!(status(&pipeline, &request).await, CacheStatus::HitMemory);
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn an_expired_copy_is_revalidated_and_fresh_again() {
    let origin = Origin::start(Answer::ImageOrNotModified).await;
    let (pipeline, clock) = pipeline().await;
    let request = origin.request();
    assert_eq!(status(&pipeline, &request).await, CacheStatus::Miss);

    clock.advance(secs(MAX_AGE));
    let served = pipeline.get(&request).await.unwrap();
    assert_eq!(served.cache_status, CacheStatus::Revalidated);
    assert_eq!((origin.requests(), origin.conditional_requests()), (2, 1));
    assert_eq!(served.entry.body().as_ref(), GIF);
    assert_eq!(cache_control(&served), format!("public, max-age={MAX_AGE}"));

    clock.advance(secs(MAX_AGE - 1));
    assert_eq!(status(&pipeline, &request).await, CacheStatus::HitMemory);
    assert_eq!(origin.requests(), 2);
    clock.advance(secs(1));
    assert_eq!(status(&pipeline, &request).await, CacheStatus::Revalidated);
    assert_eq!((origin.requests(), origin.conditional_requests()), (3, 2));
}

#[tokio::test]
async fn a_404_is_remembered_for_the_negative_ttl() {
    let origin = Origin::start(Answer::Status(404)).await;
    let (pipeline, clock) = pipeline().await;
    let request = origin.request();
    assert_eq!(not_found_for(&pipeline, &request).await, NEGATIVE_TTL);
    assert_eq!(origin.requests(), 1);

    // The image appears upstream, but the remembered 404 answers until it expires.
    origin.set(Answer::Image);
    clock.advance(secs(NEGATIVE_TTL - 1));
    assert_eq!(not_found_for(&pipeline, &request).await, 1);
    assert_eq!(origin.requests(), 1);

    clock.advance(secs(1));
    assert_eq!(status(&pipeline, &request).await, CacheStatus::Miss);
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn a_refusal_is_remembered_for_the_negative_ttl_and_answers_as_the_first() {
    let origin = Origin::start(Answer::Status(403)).await;
    let (pipeline, clock) = pipeline().await;
    let request = origin.request();
    for _ in 0..3 {
        match pipeline.get(&request).await {
            Err(Error::Fetch(FetchError::UpstreamStatus(403))) => {}
            other => panic!("expected the remembered 403, got {other:?}"),
        }
    }
    assert_eq!(origin.requests(), 1);

    origin.set(Answer::Image);
    clock.advance(secs(NEGATIVE_TTL - 1));
    assert!(matches!(pipeline.get(&request).await, Err(Error::Fetch(FetchError::UpstreamStatus(403)))));
    assert_eq!(origin.requests(), 1);
    clock.advance(secs(1));
    assert_eq!(status(&pipeline, &request).await, CacheStatus::Miss);
    assert_eq!(origin.requests(), 2);
}

#[tokio::test]
async fn stale_if_error_answers_within_its_window_only() {
    let origin = Origin::start(Answer::Image).await;
    let (pipeline, clock) = pipeline().await;
    let request = origin.request();
    assert_eq!(status(&pipeline, &request).await, CacheStatus::Miss);

    origin.set(Answer::Status(500));
    clock.advance(secs(MAX_AGE));
    let served = pipeline.get(&request).await.unwrap();
    assert_eq!((served.cache_status, origin.requests()), (CacheStatus::Stale, 2));
    assert_eq!(served.entry.body().as_ref(), GIF);
    assert_eq!(cache_control(&served), "public, max-age=60");

    // Within --retry-interval (30 s) the next requests answer stale without asking upstream.
    clock.advance(secs(29));
    assert_eq!(status(&pipeline, &request).await, CacheStatus::Stale);
    assert_eq!(origin.requests(), 2);

    // After it, one request starts a background retry and still answers stale at once, up to the end of the window.
    clock.advance(secs(STALE_IF_ERROR - 30));
    assert_eq!(status(&pipeline, &request).await, CacheStatus::Stale);
    assert_eq!(status(&pipeline, &request).await, CacheStatus::Stale);
    let deadline = std::time::Instant::now() + secs(5);
    while origin.requests() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(origin.requests(), 3, "one background retry");
    // Let the retry's fill finish before the next request, which would otherwise join it.
    tokio::time::sleep(Duration::from_millis(100)).await;

    clock.advance(secs(1));
    match pipeline.get(&request).await {
        Err(Error::Fetch(FetchError::UpstreamStatus(500))) => {}
        other => panic!("expected upstream's 500 past the stale-if-error window, got {other:?}"),
    }
    assert_eq!(origin.requests(), 4);

    // Upstream recovers: a fresh copy again.
    origin.set(Answer::Image);
    assert_eq!(status(&pipeline, &request).await, CacheStatus::Miss);
    assert_eq!(origin.requests(), 5);
}

#[tokio::test]
async fn a_bare_304_keeps_the_lifetime_upstream_gave() {
    let origin = Origin::start(Answer::With("max-age=600")).await;
    let (pipeline, clock) = pipeline().await;
    let request = origin.request();
    assert_eq!(status(&pipeline, &request).await, CacheStatus::Miss);

    clock.advance(secs(MAX_AGE));
    let served = pipeline.get(&request).await.unwrap();
    assert_eq!((served.cache_status, origin.conditional_requests()), (CacheStatus::Revalidated, 1));
    // Not the default lifetime (7 days, `immutable`): upstream's 600 s, kept from the stored entry.
    assert_eq!(cache_control(&served), format!("public, max-age={MAX_AGE}"));
    assert_eq!(served.entry.meta().freshness.max_age, Some(MAX_AGE));

    clock.advance(secs(MAX_AGE - 1));
    assert_eq!(status(&pipeline, &request).await, CacheStatus::HitMemory);
    clock.advance(secs(1));
    assert_eq!(status(&pipeline, &request).await, CacheStatus::Revalidated);
    assert_eq!((origin.requests(), origin.conditional_requests()), (3, 2));
}

#[tokio::test]
async fn no_cache_is_revalidated_before_every_reuse_and_never_stale() {
    let origin = Origin::start(Answer::With("no-cache")).await;
    let (pipeline, _clock) = pipeline().await;
    let request = origin.request();
    let served = pipeline.get(&request).await.unwrap();
    assert_eq!(served.cache_status, CacheStatus::Miss);
    assert_eq!(cache_control(&served), "public, no-cache");
    // No time passes, and still every reuse asks upstream first (the 10 s --min-ttl does not lift it).
    for round in 1..=3 {
        let served = pipeline.get(&request).await.unwrap();
        assert_eq!(served.cache_status, CacheStatus::Revalidated, "round {round}");
        assert_eq!(served.entry.body().as_ref(), GIF);
        assert_eq!((origin.requests(), origin.conditional_requests()), (round + 1, round));
    }
    origin.set(Answer::Status(503));
    match pipeline.get(&request).await {
        Err(Error::Fetch(FetchError::UpstreamStatus(503))) => {}
        other => panic!("a no-cache entry answered while upstream failed: {other:?}"),
    }
}

#[tokio::test]
async fn must_revalidate_forbids_stale_if_error() {
    let origin = Origin::start(Answer::With("max-age=600, must-revalidate")).await;
    let (pipeline, clock) = pipeline().await;
    let request = origin.request();
    let served = pipeline.get(&request).await.unwrap();
    assert_eq!(cache_control(&served), "public, max-age=600, must-revalidate");

    origin.set(Answer::Status(500));
    clock.advance(secs(MAX_AGE));
    match pipeline.get(&request).await {
        Err(Error::Fetch(FetchError::UpstreamStatus(500))) => {}
        other => panic!("a must-revalidate entry answered stale: {other:?}"),
    }
}

#[tokio::test]
async fn private_is_answered_but_never_stored() {
    let origin = Origin::start(Answer::With("private, max-age=600")).await;
    let (pipeline, _clock) = pipeline().await;
    let request = origin.request();
    for round in 1..=2 {
        let served = pipeline.get(&request).await.unwrap();
        assert_eq!((served.cache_status, served.private, served.cacheable), (CacheStatus::Miss, true, false));
        assert_eq!(cache_control(&served), "private, no-store");
        assert_eq!(origin.requests(), round);
    }
}

#[tokio::test]
async fn no_cache_without_a_validator_is_not_stored() {
    let origin = Origin::start(Answer::Unvalidated("no-cache")).await;
    let (pipeline, clock) = pipeline().await;
    let request = origin.request();
    for round in 1..=2 {
        let served = pipeline.get(&request).await.unwrap();
        assert_eq!((served.cache_status, origin.requests()), (CacheStatus::Miss, round));
        assert_eq!(cache_control(&served), "public, no-cache");
    }
    let key = request.source_key();
    assert!(matches!(pipeline.cache().lookup(&key, clock.clock().unix_now()).await, Lookup::Miss));
}
