//! The status table over real HTTP: bad targets, forbidden networks, upstream failures, size and type limits,
//! overload, timeouts and redirects. Every error is `no-store` except the (negatively cached) upstream 404.

mod common;

use std::time::Duration;

use common::{Mode, Proxy, Reply, Route, Upstream, client, dead_addr, get, photo};

/// A one-line text/plain error that no one may cache.
fn assert_plain_error(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "body: {:?}", reply.body);
    assert!(reply.header("content-type").starts_with("text/plain"), "{:?}", reply.headers);
    let text = std::str::from_utf8(&reply.body).expect("utf-8 error body");
    assert!(!text.trim().is_empty(), "empty error body");
    assert_eq!(text.trim_end_matches('\n').lines().count(), 1, "not one line: {text:?}");
    assert_eq!(reply.header("cache-control"), "no-store", "status {status}");
    assert_eq!(reply.header("access-control-allow-origin"), "*");
}

#[tokio::test]
async fn malformed_targets_are_400() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    for url in [proxy.url("ftp://example.com/a.jpg"), proxy.url("not-a-url"), proxy.path("/"), proxy.url("")] {
        let reply = get(&client, &url).await;
        assert_plain_error(&reply, 400);
    }
    proxy.stop().await;
}

#[tokio::test]
async fn loopback_targets_are_403_without_a_connection_by_default() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&["--cache-dir", dir.path().to_str().unwrap()]).await;
    let client = client();
    let by_ip = get(&client, &proxy.url(&upstream.url("/a.jpg"))).await;
    assert_plain_error(&by_ip, 403);
    let by_name = get(&client, &proxy.url(&format!("http://localhost:{}/a.jpg", upstream.addr.port()))).await;
    assert_plain_error(&by_name, 403);
    assert_eq!(upstream.connections(), 0, "the proxy connected to a forbidden address");
    proxy.stop().await;
}

#[tokio::test]
async fn allow_net_opens_one_private_range() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&["--cache-dir", dir.path().to_str().unwrap(), "--allow-net", "127.0.0.0/8"]).await;
    let reply = get(&client(), &proxy.url(&upstream.url("/a.jpg"))).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(reply.body == photo());
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_404_is_404_cacheable_for_at_most_a_minute() {
    let upstream = Upstream::start().await;
    upstream.route("/gone", Route::status(404).header("content-type", "text/html").body("<h1>nope</h1>"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let reply = get(&client(), &proxy.url(&upstream.url("/gone"))).await;
    assert_eq!(reply.status, 404);
    assert!(!String::from_utf8_lossy(&reply.body).contains("<h1>"), "upstream body leaked: {:?}", reply.body);
    let cache_control = reply.header("cache-control");
    let max_age: u64 = cache_control
        .strip_prefix("public, max-age=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("Cache-Control {cache_control:?}"));
    assert!((1..=60).contains(&max_age), "max-age {max_age}");
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_410_is_404() {
    let upstream = Upstream::start().await;
    upstream.route("/gone", Route::status(410));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let reply = get(&client(), &proxy.url(&upstream.url("/gone"))).await;
    assert_eq!(reply.status, 404);
    proxy.stop().await;
}

#[tokio::test]
async fn source_over_max_bytes_is_413_with_or_without_content_length() {
    let upstream = Upstream::start().await;
    upstream.route("/declared.jpg", Route::image(photo()));
    upstream.route("/chunked.jpg", Route::image(photo()).mode(Mode::Chunked));
    upstream.route("/small.jpg", Route::image(photo()));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--max-source-bytes", "10KiB"]).await;
    let client = client();
    for path in ["/declared.jpg", "/chunked.jpg"] {
        let reply = get(&client, &proxy.url(&upstream.url(path))).await;
        assert_plain_error(&reply, 413);
    }
    proxy.stop().await;

    // The same image under a limit it fits in, chunked or not, goes through.
    let proxy = Proxy::local(dir.path(), &["--max-source-bytes", "50KiB"]).await;
    let reply = get(&client, &proxy.url(&upstream.url("/chunked.jpg"))).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(reply.body == photo());
    proxy.stop().await;
}

#[tokio::test]
async fn html_and_svg_are_415_whatever_their_content_type() {
    let upstream = Upstream::start().await;
    let html = "<!DOCTYPE html><html><head><title>x</title></head><body>login</body></html>";
    let svg = r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>"#;
    upstream.route("/lie.jpg", Route::image(html.into()));
    upstream.route("/page.html", Route::status(200).header("content-type", "text/html").body(html));
    upstream.route("/a.svg", Route::status(200).header("content-type", "image/svg+xml").body(svg));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    for path in ["/lie.jpg", "/page.html", "/a.svg"] {
        let reply = get(&client, &proxy.url(&upstream.url(path))).await;
        assert_plain_error(&reply, 415);
        assert!(!String::from_utf8_lossy(&reply.body).contains('<'), "{path}: upstream body leaked");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_500_is_502() {
    let upstream = Upstream::start().await;
    upstream.route("/boom", Route::status(500).body("stack trace with secrets"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let reply = get(&client(), &proxy.url(&upstream.url("/boom"))).await;
    assert_plain_error(&reply, 502);
    assert!(!String::from_utf8_lossy(&reply.body).contains("secrets"));
    proxy.stop().await;
}

#[tokio::test]
async fn connection_refused_is_502() {
    let dead = dead_addr().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--connect-timeout", "500ms", "--fetch-timeout", "2s"]).await;
    let reply = get(&client(), &proxy.url(&format!("http://{dead}/a.jpg"))).await;
    assert_plain_error(&reply, 502);
    proxy.stop().await;
}

#[tokio::test]
async fn dropped_upstream_connection_is_502() {
    let upstream = Upstream::start().await;
    upstream.route("/drop", Route::image(photo()).mode(Mode::Drop));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--fetch-timeout", "2s"]).await;
    let reply = get(&client(), &proxy.url(&upstream.url("/drop"))).await;
    assert_plain_error(&reply, 502);
    proxy.stop().await;
}

#[tokio::test]
async fn full_fetch_queue_answers_503_with_retry_after() {
    let upstream = Upstream::start().await;
    upstream.route("/hang.jpg", Route::image(photo()).mode(Mode::HangBeforeHeaders));
    upstream.route("/a.jpg", Route::image(photo()));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--max-inflight-fetches", "1", "--fetch-timeout", "2s"]).await;
    let client = client();
    let hanging = tokio::spawn({
        let client = client.clone();
        let url = proxy.url(&upstream.url("/hang.jpg"));
        async move { get(&client, &url).await }
    });
    upstream.wait_for_hits("/hang.jpg", 1).await;

    let reply = get(&client, &proxy.url(&upstream.url("/a.jpg"))).await;
    assert_plain_error(&reply, 503);
    let retry_after: u64 = reply.header("retry-after").parse().expect("Retry-After in seconds");
    assert!(retry_after >= 1);
    assert_eq!(upstream.hits("/a.jpg"), 0);

    // The hung fetch ends at the fetch timeout, which frees the slot.
    let hung = hanging.await.unwrap();
    assert_eq!(hung.status, 504);
    let reply = get(&client, &proxy.url(&upstream.url("/a.jpg"))).await;
    assert_eq!(reply.status, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_slower_than_fetch_timeout_is_504() {
    let upstream = Upstream::start().await;
    upstream.route("/slow.jpg", Route::image(photo()).delay(Duration::from_secs(3)));
    upstream.route("/slow-body.jpg", Route::image(photo()).mode(Mode::HangBody));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--fetch-timeout", "1s"]).await;
    let client = client();
    for path in ["/slow.jpg", "/slow-body.jpg"] {
        let started = std::time::Instant::now();
        let reply = get(&client, &proxy.url(&upstream.url(path))).await;
        assert_plain_error(&reply, 504);
        assert!(started.elapsed() < Duration::from_millis(2500), "{path}: took {:?}", started.elapsed());
    }
    proxy.stop().await;
}

/// Installs `/r/N` -> `/r/N-1` -> ... -> `/r/1` -> `target`.
fn redirect_chain(upstream: &Upstream, hops: usize, target: &str) -> String {
    for hop in 1..=hops {
        let next = if hop == 1 { target.to_owned() } else { upstream.url(&format!("/r/{}", hop - 1)) };
        upstream.route(&format!("/r/{hop}"), Route::redirect(&next));
    }
    upstream.url(&format!("/r/{hops}"))
}

#[tokio::test]
async fn three_redirects_are_followed() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    let start = redirect_chain(&upstream, 3, &upstream.url("/a.jpg"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let reply = get(&client(), &proxy.url(&start)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(reply.body == photo());
    assert_eq!(upstream.hits("/a.jpg"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn six_redirects_exceed_the_default_limit_of_five() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    let start = redirect_chain(&upstream, 6, &upstream.url("/a.jpg"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let reply = get(&client(), &proxy.url(&start)).await;
    assert_plain_error(&reply, 502);
    assert_eq!(upstream.hits("/a.jpg"), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn redirect_to_a_forbidden_address_is_403_without_connecting() {
    let upstream = Upstream::start().await;
    let forbidden = Upstream::start_on("127.0.0.2:0").await;
    forbidden.route("/a.jpg", Route::image(photo()));
    upstream.route("/jump", Route::redirect(&forbidden.url("/a.jpg")));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&["--cache-dir", dir.path().to_str().unwrap(), "--allow-net", "127.0.0.1/32"]).await;
    let reply = get(&client(), &proxy.url(&upstream.url("/jump"))).await;
    assert_plain_error(&reply, 403);
    assert!(!String::from_utf8_lossy(&reply.body).contains("127.0.0.2"), "address disclosed: {:?}", reply.body);
    assert_eq!(upstream.hits("/jump"), 1, "the allowed first hop was not fetched");
    assert_eq!(forbidden.connections(), 0, "the proxy connected to 127.0.0.2");
    proxy.stop().await;
}
