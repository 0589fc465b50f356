//! The cache over real HTTP: X-Cache and validators, restarts on the same directory, corrupt entries,
//! stale-if-error, revalidation, no-store, coalescing and negative caching.

mod common;

use std::time::{Duration, Instant};

use common::{Proxy, Reply, Route, Upstream, client, entry_files, get, photo};

/// Requests `url` every 100 ms until the answer is no longer a fresh memory hit (at most 5 s).
async fn get_once_expired(client: &reqwest::Client, url: &str) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = get(client, url).await;
        if reply.x_cache() != "HIT-MEMORY" {
            return reply;
        }
        assert!(Instant::now() < deadline, "the entry never expired: still {:?}", reply.headers);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn max_age(reply: &Reply) -> u64 {
    let cache_control = reply.header("cache-control");
    cache_control
        .strip_prefix("public, max-age=")
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("Cache-Control {cache_control:?}"))
}

#[tokio::test]
async fn miss_then_memory_hit_with_validators_and_the_default_lifetime() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let url = proxy.url(&upstream.url("/a.jpg"));

    let first = get(&client, &url).await;
    assert_eq!((first.status, first.x_cache()), (200, "MISS"));
    let second = get(&client, &url).await;
    assert_eq!((second.status, second.x_cache()), (200, "HIT-MEMORY"));
    assert!(second.body == photo());
    assert_eq!(upstream.hits("/a.jpg"), 1);

    for reply in [&first, &second] {
        // No upstream lifetime: the default 7 days, told whole (with `Age`), and not `immutable`, which only
        // upstream's own long lifetime earns.
        assert_eq!(max_age(reply), 7 * 86_400);
        assert!(reply.header("age").parse::<u64>().is_ok_and(|age| age <= 1), "{:?}", reply.headers);
        assert!(!reply.header("cache-control").contains("immutable"), "{}", reply.header("cache-control"));
        let etag = reply.header("etag");
        assert!(etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'), "not a strong tag: {etag:?}");
        assert!(httpdate::parse_http_date(reply.header("last-modified")).is_ok(), "{:?}", reply.headers);
        assert_eq!(reply.header("content-length"), photo().len().to_string());
    }
    assert_eq!(first.header("etag"), second.header("etag"));
    proxy.stop().await;
}

#[tokio::test]
async fn short_upstream_lifetime_is_not_immutable() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()).header("cache-control", "max-age=7200"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let reply = get(&client(), &proxy.url(&upstream.url("/a.jpg"))).await;
    assert_eq!(reply.status, 200);
    // The whole lifetime, not what is left of it (that is `max-age` minus `Age`).
    assert_eq!(max_age(&reply), 7200);
    assert!(!reply.header("cache-control").contains("immutable"));
    proxy.stop().await;
}

#[tokio::test]
async fn restart_on_the_same_directory_serves_from_disk() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    let dir = tempfile::tempdir().unwrap();
    let client = client();
    let target = upstream.url("/a.jpg");

    let proxy = Proxy::local(dir.path(), &[]).await;
    let first = get(&client, &proxy.url(&target)).await;
    assert_eq!(first.x_cache(), "MISS");
    proxy.stop().await;

    let proxy = Proxy::local(dir.path(), &[]).await;
    let from_disk = get(&client, &proxy.url(&target)).await;
    assert_eq!((from_disk.status, from_disk.x_cache()), (200, "HIT-DISK"));
    assert!(from_disk.body == photo());
    assert_eq!(from_disk.header("etag"), first.header("etag"));
    let promoted = get(&client, &proxy.url(&target)).await;
    assert_eq!(promoted.x_cache(), "HIT-MEMORY");
    assert_eq!(upstream.hits("/a.jpg"), 1);
    proxy.stop().await;
}

/// MISS, damage the one entry file with `damage`, restart: refetch, and the rewritten entry is good again.
async fn corrupt_entry_is_refetched_and_rewritten(damage: impl FnOnce(&std::path::Path)) {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    let dir = tempfile::tempdir().unwrap();
    let client = client();
    let target = upstream.url("/a.jpg");

    let proxy = Proxy::local(dir.path(), &[]).await;
    assert_eq!(get(&client, &proxy.url(&target)).await.x_cache(), "MISS");
    proxy.stop().await;
    let files = entry_files(dir.path());
    assert_eq!(files.len(), 1, "expected one entry file, found {files:?}");
    damage(&files[0]);

    let proxy = Proxy::local(dir.path(), &[]).await;
    let reply = get(&client, &proxy.url(&target)).await;
    assert_eq!((reply.status, reply.x_cache()), (200, "MISS"));
    assert!(reply.body == photo(), "a damaged entry was served");
    assert_eq!(upstream.hits("/a.jpg"), 2);
    proxy.stop().await;

    let proxy = Proxy::local(dir.path(), &[]).await;
    let reply = get(&client, &proxy.url(&target)).await;
    assert_eq!(reply.x_cache(), "HIT-DISK", "the entry was not rewritten");
    assert!(reply.body == photo());
    assert_eq!(upstream.hits("/a.jpg"), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn truncated_disk_entry_is_refetched() {
    corrupt_entry_is_refetched_and_rewritten(|file| {
        let len = std::fs::metadata(file).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(file).unwrap().set_len(len / 2).unwrap();
    })
    .await;
}

#[tokio::test]
async fn flipped_byte_in_disk_entry_is_refetched() {
    corrupt_entry_is_refetched_and_rewritten(|file| {
        let mut bytes = std::fs::read(file).unwrap();
        let at = bytes.len() - 50;
        bytes[at] ^= 0xFF;
        std::fs::write(file, bytes).unwrap();
    })
    .await;
}

#[tokio::test]
async fn stale_entry_answers_while_upstream_returns_500() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()).header("cache-control", "max-age=1"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--min-ttl", "1s"]).await;
    let client = client();
    let url = proxy.url(&upstream.url("/a.jpg"));
    assert_eq!(get(&client, &url).await.x_cache(), "MISS");

    upstream.route("/a.jpg", Route::status(500));
    let reply = get_once_expired(&client, &url).await;
    assert_eq!((reply.status, reply.x_cache()), (200, "STALE"), "{:?}", reply.body);
    assert!(reply.body == photo());
    assert_eq!(upstream.hits("/a.jpg"), 2, "the stale copy was served without asking upstream");
    proxy.stop().await;
}

#[tokio::test]
async fn stale_entry_answers_while_upstream_is_down() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()).header("cache-control", "max-age=1"));
    let dir = tempfile::tempdir().unwrap();
    let proxy =
        Proxy::local(dir.path(), &["--min-ttl", "1s", "--connect-timeout", "500ms", "--fetch-timeout", "1s"]).await;
    let client = client();
    let url = proxy.url(&upstream.url("/a.jpg"));
    assert_eq!(get(&client, &url).await.x_cache(), "MISS");

    upstream.stop().await;
    let reply = get_once_expired(&client, &url).await;
    assert_eq!((reply.status, reply.x_cache()), (200, "STALE"), "{:?}", reply.body);
    assert!(reply.body == photo());
    proxy.stop().await;
}

#[tokio::test]
async fn without_stale_if_error_an_expired_entry_gives_502() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()).header("cache-control", "max-age=1"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--min-ttl", "1s", "--stale-if-error", "0s"]).await;
    let client = client();
    let url = proxy.url(&upstream.url("/a.jpg"));
    assert_eq!(get(&client, &url).await.x_cache(), "MISS");

    upstream.route("/a.jpg", Route::status(500));
    let reply = get_once_expired(&client, &url).await;
    assert_eq!(reply.status, 502, "X-Cache {:?}", reply.x_cache());
    assert_eq!(reply.header("cache-control"), "no-store");
    proxy.stop().await;
}

#[tokio::test]
async fn expired_entry_is_revalidated_with_if_none_match() {
    let upstream = Upstream::start().await;
    let route = Route::image(photo())
        .header("cache-control", "max-age=1")
        .header("etag", "\"v1\"")
        .header("last-modified", "Mon, 28 Feb 2022 12:52:44 GMT");
    upstream.route("/a.jpg", route);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--min-ttl", "1s"]).await;
    let client = client();
    let url = proxy.url(&upstream.url("/a.jpg"));
    let first = get(&client, &url).await;
    assert_eq!(first.x_cache(), "MISS");

    let reply = get_once_expired(&client, &url).await;
    assert_eq!((reply.status, reply.x_cache()), (200, "REVALIDATED"), "{:?}", reply.body);
    assert!(reply.body == photo());
    assert_eq!(reply.header("etag"), first.header("etag"));
    assert_eq!(upstream.full_hits("/a.jpg"), 1);
    assert_eq!(upstream.not_modified("/a.jpg"), 1);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].headers.get("if-none-match").and_then(|v| v.to_str().ok()), Some("\"v1\""));
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_no_store_is_served_but_not_kept() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()).header("cache-control", "no-store"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let url = proxy.url(&upstream.url("/a.jpg"));
    for round in 1..=2 {
        let reply = get(&client, &url).await;
        assert_eq!((reply.status, reply.x_cache()), (200, "MISS"), "round {round}");
        assert!(reply.body == photo());
        assert_eq!(upstream.hits("/a.jpg"), round);
    }
    proxy.stop().await;
    assert!(entry_files(dir.path()).is_empty(), "a no-store image was written to disk");
}

#[tokio::test]
async fn fifty_concurrent_cold_requests_make_one_upstream_fetch() {
    let upstream = Upstream::start().await;
    upstream.route("/slow.jpg", Route::image(photo()).delay(Duration::from_millis(300)));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let url = proxy.url(&upstream.url("/slow.jpg"));

    let replies = futures_util::future::join_all((0..50).map(|_| get(&client, &url))).await;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert!(reply.body == photo());
    }
    assert_eq!(upstream.hits("/slow.jpg"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_404_is_remembered() {
    let upstream = Upstream::start().await;
    upstream.route("/missing.jpg", Route::status(404));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let url = proxy.url(&upstream.url("/missing.jpg"));
    for _ in 0..3 {
        assert_eq!(get(&client, &url).await.status, 404);
    }
    assert_eq!(upstream.hits("/missing.jpg"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn remembered_404_expires_after_negative_ttl() {
    let upstream = Upstream::start().await;
    upstream.route("/missing.jpg", Route::status(404));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--negative-ttl", "1s"]).await;
    let client = client();
    let url = proxy.url(&upstream.url("/missing.jpg"));
    assert_eq!(get(&client, &url).await.status, 404);
    assert_eq!(upstream.hits("/missing.jpg"), 1);

    // Once the 404 is forgotten, the image may exist again.
    upstream.route("/missing.jpg", Route::image(photo()));
    let deadline = Instant::now() + Duration::from_secs(5);
    let reply = loop {
        let reply = get(&client, &url).await;
        if reply.status != 404 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((reply.status, reply.x_cache()), (200, "MISS"), "the 404 was never forgotten");
    assert_eq!(upstream.hits("/missing.jpg"), 2);
    proxy.stop().await;
}
