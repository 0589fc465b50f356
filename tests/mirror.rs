//! Mirroring over real HTTP: byte-identical bodies, target URL spellings, CORS, HEAD, 304, health and routing,
//! and what the proxy forwards upstream.

mod common;

use common::{Proxy, Reply, Route, Upstream, client, fixture, get, photo, send};
use reqwest::Method;

const SEED_IMAGE_1: &str = "/qupost/img/2022/02/28/4e7cb326c1d77bee6e18452d400abd1b.jpeg";
const SEED_IMAGE_2: &str = "/qupost/img/2022/02/28/47f22ebc600e15762d1bcd38cedd334b.jpeg";

fn assert_cors(reply: &Reply, what: &str) {
    assert_eq!(reply.header("access-control-allow-origin"), "*", "{what}: {:?}", reply.headers);
    let exposed = reply.header("access-control-expose-headers").to_ascii_lowercase();
    for name in ["x-cache", "etag"] {
        assert!(exposed.split(',').any(|h| h.trim() == name), "{what}: {name} not exposed in {exposed:?}");
    }
    assert_eq!(reply.header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(reply.header("content-security-policy"), "default-src 'none'", "{what}");
}

#[tokio::test]
async fn seed_article_images_are_mirrored_byte_for_byte() {
    let upstream = Upstream::start().await;
    let first = fixture("photo-500x355.jpg");
    let second = fixture("photo-500x345.jpg");
    upstream.route(SEED_IMAGE_1, Route::image(first.clone()));
    upstream.route(SEED_IMAGE_2, Route::image(second.clone()));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();

    for (path, expected) in [(SEED_IMAGE_1, &first), (SEED_IMAGE_2, &second)] {
        let reply = get(&client, &proxy.url(&upstream.url(path))).await;
        assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
        assert_eq!(reply.header("content-type"), "image/jpeg");
        assert_eq!(reply.header("content-length"), expected.len().to_string());
        assert!(reply.body == *expected, "{path}: body differs from the fixture ({} bytes)", reply.body.len());
        assert_eq!(upstream.hits(path), 1);
    }
    proxy.stop().await;
}

#[tokio::test]
async fn target_query_string_reaches_upstream_unchanged() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;

    let reply = get(&client(), &proxy.url(&upstream.url("/a.jpg?x=1&y=2"))).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body == photo());
    let seen = upstream.seen_paths();
    assert_eq!(seen, ["/a.jpg?x=1&y=2"]);
    proxy.stop().await;
}

#[tokio::test]
async fn raw_percent_encoded_and_double_encoded_targets_share_one_entry() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let port = upstream.addr.port();
    let raw = format!("http://127.0.0.1:{port}/a.jpg");
    let encoded = format!("http%3A%2F%2F127.0.0.1%3A{port}%2Fa.jpg");
    let double = format!("http%253A%252F%252F127.0.0.1%253A{port}%252Fa.jpg");

    let first = get(&client, &proxy.url(&raw)).await;
    assert_eq!((first.status, first.x_cache()), (200, "MISS"));
    for spelling in [&encoded, &double] {
        let reply = get(&client, &proxy.url(spelling)).await;
        assert_eq!(reply.status, 200, "{spelling}: {:?}", reply.body);
        assert_eq!(reply.x_cache(), "HIT-MEMORY", "{spelling}");
        assert!(reply.body == photo(), "{spelling}");
    }
    assert_eq!(upstream.hits("/a.jpg"), 1);
    let seen = upstream.seen_paths();
    assert_eq!(seen, ["/a.jpg"]);
    proxy.stop().await;
}

#[tokio::test]
async fn every_kind_of_response_carries_cors_and_hardening_headers() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    upstream.route("/missing", Route::status(404));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let image = proxy.url(&upstream.url("/a.jpg"));

    let ok = get(&client, &image).await;
    assert_eq!(ok.status, 200);
    assert_cors(&ok, "200");
    let not_modified = send(client.get(&image).header("if-none-match", ok.header("etag"))).await;
    assert_eq!(not_modified.status, 304);
    assert_cors(&not_modified, "304");
    let bad = get(&client, &proxy.url("not-a-url")).await;
    assert_eq!(bad.status, 400);
    assert_cors(&bad, "400");
    let missing = get(&client, &proxy.url(&upstream.url("/missing"))).await;
    assert_eq!(missing.status, 404);
    assert_cors(&missing, "upstream 404");
    let health = get(&client, &proxy.path("/healthz")).await;
    assert_eq!(health.status, 200);
    assert_cors(&health, "healthz");
    let post = send(client.post(&image)).await;
    assert_eq!(post.status, 405);
    assert_cors(&post, "405");
    proxy.stop().await;
}

#[tokio::test]
async fn options_preflight_is_204_with_allowed_methods() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let request = client
        .request(Method::OPTIONS, proxy.url("http://example.com/a.jpg"))
        .header("origin", "https://blog.example")
        .header("access-control-request-method", "GET");
    let reply = send(request).await;
    assert_eq!(reply.status, 204);
    assert!(reply.body.is_empty());
    assert_cors(&reply, "OPTIONS");
    let methods = reply.header("access-control-allow-methods").to_ascii_uppercase();
    for method in ["GET", "HEAD", "OPTIONS"] {
        assert!(methods.split(',').any(|m| m.trim() == method), "{method} missing from {methods:?}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn post_put_delete_are_405() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let image = proxy.url(&upstream.url("/a.jpg"));
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let reply = send(client.request(method.clone(), &image).body("x")).await;
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("cache-control"), "no-store", "{method}");
    }
    assert_eq!(upstream.total_hits(), 0, "a refused method must not fetch");
    proxy.stop().await;
}

#[tokio::test]
async fn head_has_the_headers_of_get_and_no_body() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let image = proxy.url(&upstream.url("/a.jpg"));

    let head_cold = send(client.head(&image)).await;
    let get_reply = get(&client, &image).await;
    let head_warm = send(client.head(&image)).await;
    assert_eq!(get_reply.status, 200);
    for head in [&head_cold, &head_warm] {
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
        assert_eq!(head.header("content-length"), photo().len().to_string());
        for name in ["content-type", "etag", "last-modified", "access-control-allow-origin"] {
            assert_eq!(head.header(name), get_reply.header(name), "{name}");
        }
        assert!(head.header("cache-control").starts_with("public, max-age="), "{:?}", head.headers);
    }
    assert_eq!(head_warm.x_cache(), "HIT-MEMORY");
    assert_eq!(upstream.hits("/a.jpg"), 1, "HEAD fills the cache like GET");
    proxy.stop().await;
}

#[tokio::test]
async fn if_none_match_with_the_etag_gives_304_with_empty_body() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let image = proxy.url(&upstream.url("/a.jpg"));

    let first = get(&client, &image).await;
    let etag = first.header("etag").to_owned();
    assert!(!etag.is_empty());
    let second = send(client.get(&image).header("if-none-match", &etag)).await;
    assert_eq!(second.status, 304);
    assert!(second.body.is_empty());
    assert_eq!(second.header("etag"), etag);
    let other = send(client.get(&image).header("if-none-match", "\"something-else\"")).await;
    assert_eq!(other.status, 200, "a different tag must get the image");
    assert!(other.body == photo());
    proxy.stop().await;
}

#[tokio::test]
async fn healthz_answers_ok_and_unknown_paths_are_404() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let health = get(&client, &proxy.path("/healthz")).await;
    assert_eq!(health.status, 200);
    assert_eq!(std::str::from_utf8(&health.body).unwrap().trim(), "ok");
    let nope = get(&client, &proxy.path("/nope")).await;
    assert_eq!(nope.status, 404);
    assert_eq!(nope.header("cache-control"), "no-store");
    proxy.stop().await;
}

#[tokio::test]
async fn client_credentials_are_not_forwarded_and_user_agent_is_ours() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--user-agent", "MirageTest/9.9"]).await;
    let request = client()
        .get(proxy.url(&upstream.url("/a.jpg")))
        .header("cookie", "session=secret")
        .header("authorization", "Bearer secret")
        .header("referer", "https://private.example/page")
        .header("user-agent", "ClientBrowser/1.0");
    let reply = send(request).await;
    assert_eq!(reply.status, 200);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    let headers = &seen[0].headers;
    for name in ["cookie", "authorization", "referer"] {
        assert!(headers.get(name).is_none(), "upstream received {name}: {:?}", headers.get(name));
    }
    assert_eq!(headers.get("user-agent").and_then(|v| v.to_str().ok()), Some("MirageTest/9.9"));
    proxy.stop().await;
}
