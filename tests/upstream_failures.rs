//! Failing and slow upstreams over real HTTP: refusals and untransformable sources remembered for
//! `--negative-ttl`, stale answers without waiting for a hung upstream, the per-host circuit breaker,
//! `stale-while-revalidate`, and stale variants during an outage.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::raw::{RawUpstream, Step, full, path_of};
use common::{Mode, Proxy, Reply, Route, Upstream, client, entry_files, get, photo};

/// Sends `count` sequential requests for `url` and returns their (status, body) pairs.
async fn repeat(client: &reqwest::Client, url: &str, count: usize) -> Vec<Reply> {
    let mut replies = Vec::new();
    for _ in 0..count {
        replies.push(get(client, url).await);
    }
    replies
}

/// A request and how long it took.
async fn timed(client: &reqwest::Client, url: &str) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = get(client, url).await;
    (reply, started.elapsed())
}

/// Lets an entry stored with `max-age=1` expire (lifetimes are whole seconds).
async fn let_one_second_expire() {
    tokio::time::sleep(Duration::from_millis(1200)).await;
}

#[tokio::test]
async fn refusals_are_remembered_for_the_negative_ttl_html_200() {
    let upstream = Upstream::start().await;
    let page = Route::status(200).header("content-type", "text/html").body("<html>hotlinking is not allowed</html>");
    upstream.route("/soft404.jpg", page);
    let proxy = Proxy::start(&["--no-disk-cache", "--allow-private-networks"]).await;
    let client = client();
    for reply in repeat(&client, &proxy.url(&upstream.url("/soft404.jpg")), 5).await {
        assert_eq!(reply.status, 415, "{:?}", reply.body);
        assert!(String::from_utf8_lossy(&reply.body).contains("not a supported image"), "{:?}", reply.body);
    }
    assert_eq!(upstream.hits("/soft404.jpg"), 1, "the HTML page was downloaded again");
    proxy.stop().await;
}

#[tokio::test]
async fn refusals_are_remembered_for_the_negative_ttl_403() {
    let upstream = Upstream::start().await;
    for status in [403, 401, 451] {
        upstream.route(&format!("/{status}.jpg"), Route::status(status).body("go away"));
    }
    let proxy = Proxy::start(&["--no-disk-cache", "--allow-private-networks"]).await;
    let client = client();
    for status in [403, 401, 451] {
        let path = format!("/{status}.jpg");
        for reply in repeat(&client, &proxy.url(&upstream.url(&path)), 5).await {
            // The client's answer is what it always was: upstream's refusal is a 502 upstream_status.
            assert_eq!(reply.status, 502, "{status}: {:?}", reply.body);
            assert_eq!(reply.body.as_ref(), b"upstream answered with an error status\n");
            assert_eq!(reply.header("cache-control"), "no-store");
        }
        assert_eq!(upstream.hits(&path), 1, "upstream's {status} was asked again");
    }
    // Transient statuses are not refusals: they are asked again.
    upstream.route("/busy.jpg", Route::status(429));
    repeat(&client, &proxy.url(&upstream.url("/busy.jpg")), 2).await;
    assert_eq!(upstream.hits("/busy.jpg"), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn refusals_expire_after_the_negative_ttl() {
    let upstream = Upstream::start().await;
    upstream.route("/later.jpg", Route::status(403));
    let proxy = Proxy::start(&["--no-disk-cache", "--allow-private-networks", "--negative-ttl", "1s"]).await;
    let client = client();
    let url = proxy.url(&upstream.url("/later.jpg"));
    assert_eq!(get(&client, &url).await.status, 502);
    upstream.route("/later.jpg", Route::image(photo()));
    assert_eq!(get(&client, &url).await.status, 502, "remembered");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let reply = get(&client, &url).await;
    assert_eq!((reply.status, reply.x_cache()), (200, "MISS"));
    assert_eq!(upstream.hits("/later.jpg"), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn untransformable_sources_are_remembered_for_the_negative_ttl() {
    let upstream = Upstream::start().await;
    let whole = photo();
    // `no-store` originals are fetched again for every transform: the upstream count shows each recomputation.
    upstream.route("/half.jpg", Route::image(whole.slice(..whole.len() / 2)).header("cache-control", "no-store"));
    upstream.route("/big.jpg", Route::image(whole).header("cache-control", "no-store"));
    let proxy = Proxy::start(&["--no-disk-cache", "--allow-private-networks", "--max-source-pixels", "100000"]).await;
    let client = client();
    for (path, status) in [("/half.jpg", 422), ("/big.jpg", 413)] {
        let url = proxy.path(&format!("/width=100/?{}", upstream.url(path)));
        for reply in repeat(&client, &url, 5).await {
            assert_eq!(reply.status, status, "{path}: {:?}", reply.body);
        }
        assert_eq!(upstream.hits(path), 1, "{path} was fetched and transformed again");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn stale_is_served_at_once_while_upstream_hangs() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()).header("cache-control", "max-age=1"));
    let proxy =
        Proxy::start(&["--no-disk-cache", "--allow-private-networks", "--min-ttl", "1s", "--fetch-timeout", "3s"])
            .await;
    let client = client();
    let url = proxy.url(&upstream.url("/a.jpg"));
    assert_eq!(get(&client, &url).await.x_cache(), "MISS");

    upstream.route("/a.jpg", Route::image(photo()).mode(Mode::HangBeforeHeaders));
    let_one_second_expire().await;
    let (first, took) = timed(&client, &url).await;
    assert_eq!((first.status, first.x_cache()), (200, "STALE"));
    assert!(took >= Duration::from_millis(2500), "the first failure is waited for: {took:?}");
    for round in 0..3 {
        let (reply, took) = timed(&client, &url).await;
        assert_eq!((reply.status, reply.x_cache()), (200, "STALE"), "round {round}");
        assert!(reply.body == photo());
        assert!(took < Duration::from_millis(500), "round {round} waited for upstream: {took:?}");
    }
    assert_eq!(upstream.hits("/a.jpg"), 2, "within --retry-interval nothing more is asked");
    proxy.stop().await;
}

#[tokio::test]
async fn a_failing_key_is_retried_in_the_background_once_per_retry_interval() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()).header("cache-control", "max-age=1"));
    let flags = ["--no-disk-cache", "--allow-private-networks", "--min-ttl", "1s", "--retry-interval", "3s"];
    let proxy = Proxy::start(&flags).await;
    let client = client();
    let url = proxy.url(&upstream.url("/a.jpg"));
    assert_eq!(get(&client, &url).await.x_cache(), "MISS");
    upstream.route("/a.jpg", Route::status(503));
    let_one_second_expire().await;
    assert_eq!(get(&client, &url).await.x_cache(), "STALE");
    assert_eq!(upstream.hits("/a.jpg"), 2);
    for _ in 0..5 {
        assert_eq!(get(&client, &url).await.x_cache(), "STALE");
    }
    assert_eq!(upstream.hits("/a.jpg"), 2, "no retry before the interval");

    // Upstream recovers; after the interval one request starts the retry (and is answered stale at once).
    upstream.route("/a.jpg", Route::image(photo()).header("cache-control", "max-age=60"));
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (reply, took) = timed(&client, &url).await;
    assert_eq!(reply.x_cache(), "STALE");
    assert!(took < Duration::from_millis(500), "{took:?}");
    upstream.wait_for_hits("/a.jpg", 3).await;
    let answer = common::get_until(&client, &url, |reply| reply.x_cache() == "HIT-MEMORY").await;
    assert_eq!(answer.x_cache(), "HIT-MEMORY", "the background retry stored the fresh copy");
    assert_eq!(upstream.hits("/a.jpg"), 3);
    proxy.stop().await;
}

/// A raw origin on one host: `/a.jpg` is an image with `max-age=1` until `hang` is set; everything else, and
/// then everything, hangs without an answer.
async fn hanging_origin(hang: Arc<AtomicBool>) -> RawUpstream {
    let image = photo();
    RawUpstream::start(move |head| {
        if path_of(head) == "/a.jpg" && !hang.load(Ordering::SeqCst) {
            return full("200 OK", &[("Content-Type", "image/jpeg"), ("Cache-Control", "max-age=1")], &image);
        }
        vec![Step::Sleep(Duration::from_secs(30))]
    })
    .await
}

#[tokio::test]
async fn circuit_breaker_fails_fast_after_five_timeouts() {
    let hang = Arc::new(AtomicBool::new(false));
    let origin = hanging_origin(hang.clone()).await;
    let flags = ["--no-disk-cache", "--allow-private-networks", "--min-ttl", "1s", "--fetch-timeout", "2s"];
    let proxy = Proxy::start(&flags).await;
    let client = client();
    let cached = proxy.url(&origin.url("/a.jpg"));
    assert_eq!(get(&client, &cached).await.x_cache(), "MISS");
    hang.store(true, Ordering::SeqCst);
    let_one_second_expire().await;

    for n in 1..=5 {
        let (reply, took) = timed(&client, &proxy.url(&origin.url(&format!("/b{n}.jpg")))).await;
        assert_eq!(reply.status, 504, "request {n}");
        assert!(took >= Duration::from_millis(1900), "request {n} did not wait for upstream: {took:?}");
    }
    let contacted = origin.connections();
    assert_eq!(contacted, 6);

    // Open: a new key fails fast with the same 504, and the stale key answers stale, both without a connection.
    let (reply, took) = timed(&client, &proxy.url(&origin.url("/b6.jpg"))).await;
    assert_eq!(reply.status, 504);
    // Anything well under one --fetch-timeout: the host was not waited for (a loaded machine is slow, not 2 s slow).
    assert!(took < Duration::from_secs(1), "the open breaker still waited: {took:?}");
    let (reply, took) = timed(&client, &cached).await;
    assert_eq!((reply.status, reply.x_cache()), (200, "STALE"));
    assert!(reply.body == photo());
    assert!(took < Duration::from_secs(1), "the stale answer waited for upstream: {took:?}");
    assert_eq!(origin.connections(), contacted, "the host was contacted while its breaker is open");
    proxy.stop().await;
}

#[tokio::test]
async fn stale_variants_answer_during_an_outage_even_without_their_original() {
    let upstream = Upstream::start().await;
    upstream.route("/p.jpg", Route::image(photo()).header("cache-control", "max-age=1"));
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--min-ttl", "1s", "--connect-timeout", "500ms", "--fetch-timeout", "1s"];
    let proxy = Proxy::local(dir.path(), &flags).await;
    let client = client();
    let variant = proxy.path(&format!("/width=100/?{}", upstream.url("/p.jpg")));
    let made = get(&client, &variant).await;
    assert_eq!((made.status, made.x_cache()), (200, "MISS"));

    // Outage while the original is cached but stale: the variant answers from its own copy.
    upstream.stop().await;
    let_one_second_expire().await;
    let reply = get(&client, &variant).await;
    assert_eq!((reply.status, reply.x_cache()), (200, "STALE"), "{:?}", reply.body);
    assert!(reply.body == made.body);
    proxy.stop().await;

    // The original is evicted; the variant is still on disk.
    let original: Vec<_> = entry_files(dir.path())
        .into_iter()
        .filter(|file| std::fs::read(file).is_ok_and(|bytes| bytes.ends_with(&photo())))
        .collect();
    assert_eq!(original.len(), 1, "one cached original");
    std::fs::remove_file(&original[0]).unwrap();
    let proxy = Proxy::local(dir.path(), &flags).await;
    let variant = proxy.path(&format!("/width=100/?{}", upstream.url("/p.jpg")));
    let reply = get(&client, &variant).await;
    assert_eq!((reply.status, reply.x_cache()), (200, "STALE"), "{:?}", String::from_utf8_lossy(&reply.body));
    assert!(reply.body == made.body);
    let (reply, took) = timed(&client, &variant).await;
    assert_eq!((reply.status, reply.x_cache()), (200, "STALE"));
    assert!(took < Duration::from_millis(500), "{took:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_revalidates_in_the_background() {
    let upstream = Upstream::start().await;
    let cache_control = "max-age=1, stale-while-revalidate=60";
    upstream.route("/s.jpg", Route::image(photo()).header("cache-control", cache_control).header("etag", "\"v1\""));
    let proxy = Proxy::start(&["--no-disk-cache", "--allow-private-networks", "--min-ttl", "0s"]).await;
    let client = client();
    let url = proxy.url(&upstream.url("/s.jpg"));
    assert_eq!(get(&client, &url).await.x_cache(), "MISS");

    // A slow upstream: the revalidation takes a second, which no client waits for.
    let slow = Route::image(photo()).header("cache-control", "max-age=60").header("etag", "\"v1\"");
    upstream.route("/s.jpg", slow.delay(Duration::from_secs(1)));
    let_one_second_expire().await;
    for round in 0..3 {
        let (reply, took) = timed(&client, &url).await;
        assert_eq!((reply.status, reply.x_cache()), (200, "STALE"), "round {round}");
        assert!(reply.body == photo());
        assert!(took < Duration::from_millis(500), "round {round} waited for the revalidation: {took:?}");
    }
    upstream.wait_for_hits("/s.jpg", 2).await;
    let revalidated = common::wait_until(Duration::from_secs(5), || upstream.not_modified("/s.jpg") == 1).await;
    assert!(revalidated, "one conditional request revalidates it");
    let reply = common::get_until(&client, &url, |reply| reply.x_cache() == "HIT-MEMORY").await;
    assert_eq!(reply.x_cache(), "HIT-MEMORY", "the background revalidation refreshed the entry");
    assert_eq!(upstream.hits("/s.jpg"), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn a_stale_variant_stops_answering_once_its_original_is_gone() {
    let upstream = Upstream::start().await;
    upstream.route("/gone.jpg", Route::image(photo()).header("cache-control", "max-age=1"));
    let flags = ["--no-disk-cache", "--allow-private-networks", "--min-ttl", "1s", "--retry-interval", "1s"];
    let proxy = Proxy::start(&flags).await;
    let client = client();
    let variant = proxy.path(&format!("/width=100/?{}", upstream.url("/gone.jpg")));
    assert_eq!(get(&client, &variant).await.x_cache(), "MISS");

    // An outage: the variant bridges it with its expired copy.
    upstream.route("/gone.jpg", Route::status(503));
    let_one_second_expire().await;
    assert_eq!(get(&client, &variant).await.x_cache(), "STALE");
    let hits = upstream.hits("/gone.jpg");

    // Then the original is deleted upstream. The next retry learns it; from then on the variant is a 404 too,
    // not a copy of an image that no longer exists.
    upstream.route("/gone.jpg", Route::status(404));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = get(&client, &variant).await;
    assert_eq!(reply.x_cache(), "STALE", "the retry runs in the background");
    upstream.wait_for_hits("/gone.jpg", hits + 1).await;
    // The background retry's answer lands just after upstream saw it.
    let reply = common::get_until(&client, &variant, |reply| reply.status == 404).await;
    assert_eq!(reply.status, 404, "the variant kept answering its stale copy after the original answered 404");
    let later = repeat(&client, &variant, 3).await;
    assert!(later.iter().all(|reply| reply.status == 404), "{:?}", later.iter().map(|r| r.status).collect::<Vec<_>>());
    assert_eq!(upstream.hits("/gone.jpg"), hits + 1, "the 404 is remembered for the variant too");
    proxy.stop().await;
}
