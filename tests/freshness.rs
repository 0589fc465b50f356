//! RFC 9110/9111 fidelity over real HTTP (issue 9): what Mirage asks upstream for, how it reads upstream's
//! `Cache-Control`, and what it stores, revalidates, serves stale and tells clients (`Age`, `max-age`,
//! `immutable`, `private`). Time is moved by a manual clock given to the real server, so no test sleeps
//! through a lifetime.

mod common;

use std::time::{Duration, UNIX_EPOCH};

use common::raw::{RawUpstream, full, header_in};
use common::{Mode, Proxy, Reply, Route, Upstream, client, entry_files, get, photo, send};
use mirage::freshness::ManualClock;

/// A clock stopped at 2030-01-01, for a proxy that must not see the wall clock move.
fn manual_clock() -> ManualClock {
    ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_893_456_000))
}

/// A proxy with a disk cache in `dir`, allowed to reach loopback, judging freshness by `clock`.
async fn proxy_on(dir: &std::path::Path, clock: &ManualClock, flags: &[&str]) -> Proxy {
    let clock = clock.clock();
    Proxy::local_with(dir, flags, move |config| config.pipeline.clock = clock).await
}

/// The `max-age` of a `Cache-Control` answer (panics when there is none).
fn max_age(reply: &Reply) -> u64 {
    let cache_control = reply.header("cache-control");
    cache_control
        .split(',')
        .find_map(|directive| directive.trim().strip_prefix("max-age="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no max-age in Cache-Control {cache_control:?}"))
}

/// The `Age` of an answer (panics when there is none).
fn age(reply: &Reply) -> u64 {
    reply.header("age").parse().unwrap_or_else(|_| panic!("no Age in {:?}", reply.headers))
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

// ---------------------------------------------------------------------------------------------------------------
// Fidelity to the upstream representation
// ---------------------------------------------------------------------------------------------------------------

/// Bytes the sniffer takes for AVIF (an `ftyp` box with the `avif` brand); nothing decodes them.
const FAKE_AVIF: &[u8] = b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miafpretend avif body";
/// Bytes the sniffer takes for WebP; nothing decodes them.
const FAKE_WEBP: &[u8] = b"RIFF\x20\0\0\0WEBPVP8 pretend webp body";

#[tokio::test]
async fn upstream_is_asked_for_the_most_widely_decodable_representation() {
    // Negotiates as Cloudinary f_auto, imgix auto=format or Cloudflare Polish do: by what `Accept` names.
    let jpeg = photo();
    let upstream = RawUpstream::start(move |head| {
        let accept = header_in(head, "accept").unwrap_or("");
        let vary = ("Vary", "Accept");
        if accept.contains("image/avif") {
            full("200 OK", &[("Content-Type", "image/avif"), vary], FAKE_AVIF)
        } else if accept.contains("image/webp") {
            full("200 OK", &[("Content-Type", "image/webp"), vary], FAKE_WEBP)
        } else {
            full("200 OK", &[("Content-Type", "image/jpeg"), vary], &jpeg)
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let u = upstream.url("/negotiated");

    let mirror = send(client.get(proxy.url(&u)).header("accept", "image/jpeg")).await;
    assert_eq!(mirror.status, 200, "{:?}", mirror.body);
    assert_eq!(mirror.header("content-type"), "image/jpeg");
    assert!(mirror.body == photo());
    let variant = get(&client, &proxy.path(&format!("/width=100/?{u}"))).await;
    assert_eq!(variant.status, 200, "{:?}", variant.body);
    for head in upstream.heads() {
        let accept = header_in(&head, "accept").unwrap_or("");
        assert!(accept.starts_with("image/jpeg"), "Accept sent upstream: {accept:?}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn cache_control_is_read_from_every_header_line() {
    let upstream = Upstream::start().await;
    let route =
        Route::image(photo()).header("cache-control", "public, max-age=600").header("cache-control", "no-store");
    upstream.route("/a.jpg", route);
    // A directive inside a quoted argument is not a directive: list syntax, not a naive split on commas.
    let quoted = Route::image(photo()).header("cache-control", "public, max-age=600, community=\"UCI, no-store\"");
    upstream.route("/quoted.jpg", quoted);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let url = proxy.url(&upstream.url("/a.jpg"));
    for round in 1..=2 {
        let reply = get(&client, &url).await;
        assert_eq!((reply.status, reply.x_cache()), (200, "MISS"), "round {round}");
        assert_eq!(reply.header("cache-control"), "no-store");
        assert_eq!(upstream.hits("/a.jpg"), round, "served from the cache");
    }
    let url = proxy.url(&upstream.url("/quoted.jpg"));
    assert_eq!(get(&client, &url).await.x_cache(), "MISS");
    assert_eq!(get(&client, &url).await.x_cache(), "HIT-MEMORY", "a quoted no-store was taken for a directive");
    proxy.stop().await;
    assert_eq!(entry_files(dir.path()).len(), 1, "only /quoted.jpg may be on disk");
}

// ---------------------------------------------------------------------------------------------------------------
// Freshness semantics (RFC 9111)
// ---------------------------------------------------------------------------------------------------------------

/// An origin with `max-age=2` and an ETag that answers revalidations with a bare 304 (only the ETag), as S3 does.
async fn bare_304_upstream() -> RawUpstream {
    let body = photo();
    RawUpstream::start(move |head| {
        if header_in(head, "if-none-match") == Some("\"v1\"") {
            full("304 Not Modified", &[("ETag", "\"v1\"")], b"")
        } else {
            full("200 OK", &[("Content-Type", "image/jpeg"), ("ETag", "\"v1\""), ("Cache-Control", "max-age=2")], &body)
        }
    })
    .await
}

#[tokio::test]
async fn a_bare_304_keeps_the_stored_lifetime() {
    let upstream = bare_304_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let proxy = proxy_on(dir.path(), &clock, &["--min-ttl", "0s"]).await;
    let client = client();
    let url = proxy.url(&upstream.url("/a.jpg"));

    let first = get(&client, &url).await;
    assert_eq!((first.status, first.x_cache(), max_age(&first)), (200, "MISS", 2));
    clock.advance(secs(2));
    let revalidated = get(&client, &url).await;
    assert_eq!((revalidated.status, revalidated.x_cache()), (200, "REVALIDATED"));
    assert!(max_age(&revalidated) <= 2, "a bare 304 reset the lifetime: {:?}", revalidated.headers);
    assert!(!revalidated.header("cache-control").contains("immutable"));
    clock.advance(secs(1));
    assert_eq!(get(&client, &url).await.x_cache(), "HIT-MEMORY");
    clock.advance(secs(2));
    let again = get(&client, &url).await;
    assert_eq!(again.x_cache(), "REVALIDATED", "3 s after the revalidation: {:?}", again.headers);
    assert_eq!(upstream.heads().len(), 3);
    assert!(upstream.heads()[1..].iter().all(|head| header_in(head, "if-none-match") == Some("\"v1\"")));
    proxy.stop().await;

    // The stored lifetime survives a restart too: the disk entry carries it.
    let proxy = proxy_on(dir.path(), &clock, &["--min-ttl", "0s"]).await;
    clock.advance(secs(2));
    let after_restart = get(&client, &proxy.url(&upstream.url("/a.jpg"))).await;
    assert_eq!(after_restart.x_cache(), "REVALIDATED");
    assert!(max_age(&after_restart) <= 2, "{:?}", after_restart.headers);
    proxy.stop().await;
}

#[tokio::test]
async fn private_responses_are_not_stored() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()).header("cache-control", "private, max-age=600"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    let url = proxy.url(&upstream.url("/a.jpg"));
    for round in 1..=2 {
        let reply = get(&client, &url).await;
        assert_eq!((reply.status, reply.x_cache()), (200, "MISS"), "round {round}");
        assert!(reply.body == photo());
        assert_eq!(reply.header("cache-control"), "private, no-store");
        assert_eq!(upstream.hits("/a.jpg"), round);
    }
    // Nor is a variant made from it.
    let variant = proxy.path(&format!("/width=100/?{}", upstream.url("/a.jpg")));
    let reply = get(&client, &variant).await;
    assert_eq!((reply.status, reply.header("cache-control")), (200, "private, no-store"));
    assert_eq!(get(&client, &variant).await.x_cache(), "MISS");
    proxy.stop().await;
    assert!(entry_files(dir.path()).is_empty(), "a private image was written to disk");
}

#[tokio::test]
async fn no_cache_and_max_age_0_are_revalidated_before_every_reuse() {
    let upstream = Upstream::start().await;
    upstream.route("/no-cache.jpg", Route::image(photo()).header("cache-control", "no-cache").header("etag", "\"n\""));
    upstream.route("/zero.jpg", Route::image(photo()).header("cache-control", "max-age=0").header("etag", "\"z\""));
    let dir = tempfile::tempdir().unwrap();
    // The default --min-ttl (1h) must not lift them.
    let proxy = Proxy::local(dir.path(), &[]).await;
    let client = client();
    for path in ["/no-cache.jpg", "/zero.jpg"] {
        let url = proxy.url(&upstream.url(path));
        assert_eq!(get(&client, &url).await.x_cache(), "MISS", "{path}");
        for round in 1..=3 {
            let reply = get(&client, &url).await;
            assert_eq!((reply.status, reply.x_cache()), (200, "REVALIDATED"), "{path} round {round}");
            assert!(reply.body == photo());
            assert_eq!(upstream.not_modified(path), round, "{path}: no conditional request upstream");
            assert_eq!(upstream.full_hits(path), 1, "{path}: the stored copy was not reused");
        }
        // A variant of it is revalidated with its original, and made only once.
        let variant = proxy.path(&format!("/width=100/?{}", upstream.url(path)));
        assert_eq!(get(&client, &variant).await.status, 200);
        let again = get(&client, &variant).await;
        assert_eq!((again.status, again.x_cache()), (200, "REVALIDATED"), "{path} variant");
        assert_eq!(upstream.not_modified(path), 5, "{path}: the variant was reused without revalidation");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn must_revalidate_and_proxy_revalidate_forbid_stale_on_error() {
    let upstream = Upstream::start().await;
    for (path, directive) in [("/must.jpg", "must-revalidate"), ("/proxy.jpg", "proxy-revalidate"), ("/plain.jpg", "")]
    {
        let cache_control = format!("max-age=60, {directive}");
        upstream.route(path, Route::image(photo()).header("cache-control", cache_control.trim_end_matches(", ")));
    }
    upstream.route("/hang.jpg", Route::image(photo()).header("cache-control", "max-age=60, must-revalidate"));
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let proxy = proxy_on(dir.path(), &clock, &["--min-ttl", "0s", "--fetch-timeout", "1s"]).await;
    let client = client();
    for path in ["/must.jpg", "/proxy.jpg", "/plain.jpg", "/hang.jpg"] {
        assert_eq!(get(&client, &proxy.url(&upstream.url(path))).await.x_cache(), "MISS");
    }
    // Variants made before the outage, so each has an expired copy that could answer stale.
    for path in ["/must.jpg", "/proxy.jpg", "/plain.jpg"] {
        let variant = get(&client, &proxy.path(&format!("/width=90/?{}", upstream.url(path)))).await;
        assert_eq!((variant.status, variant.x_cache()), (200, "MISS"), "{path} variant");
    }
    for path in ["/must.jpg", "/proxy.jpg", "/plain.jpg"] {
        upstream.route(path, Route::status(500));
    }
    upstream.route("/hang.jpg", Route::image(photo()).mode(Mode::HangBeforeHeaders));
    clock.advance(secs(61));

    let plain = get(&client, &proxy.url(&upstream.url("/plain.jpg"))).await;
    assert_eq!((plain.status, plain.x_cache()), (200, "STALE"), "the control case");
    let plain = get(&client, &proxy.path(&format!("/width=90/?{}", upstream.url("/plain.jpg")))).await;
    assert_eq!((plain.status, plain.x_cache()), (200, "STALE"), "the control case's variant");
    for path in ["/must.jpg", "/proxy.jpg"] {
        let reply = get(&client, &proxy.url(&upstream.url(path))).await;
        assert_eq!(reply.status, 502, "{path}: X-Cache {:?}", reply.x_cache());
        let variant = get(&client, &proxy.path(&format!("/width=90/?{}", upstream.url(path)))).await;
        assert_eq!(variant.status, 502, "{path} variant: X-Cache {:?}", variant.x_cache());
    }
    let hung = get(&client, &proxy.url(&upstream.url("/hang.jpg"))).await;
    assert_eq!(hung.status, 504, "X-Cache {:?}", hung.x_cache());
    proxy.stop().await;
}

#[tokio::test]
async fn immutable_only_when_upstream_own_lifetime_is_over_a_day() {
    let upstream = Upstream::start().await;
    upstream.route("/silent.jpg", Route::image(photo()));
    upstream.route("/short.jpg", Route::image(photo()).header("cache-control", "max-age=600"));
    upstream.route("/long.jpg", Route::image(photo()).header("cache-control", "max-age=172800"));
    let dir = tempfile::tempdir().unwrap();
    // --min-ttl lifts /short.jpg to two days and --default-ttl gives /silent.jpg seven: neither is upstream's word.
    let proxy = Proxy::local(dir.path(), &["--min-ttl", "2d", "--default-ttl", "7d"]).await;
    let client = client();
    for (path, immutable) in [("/silent.jpg", false), ("/short.jpg", false), ("/long.jpg", true)] {
        for round in ["MISS", "HIT-MEMORY"] {
            let reply = get(&client, &proxy.url(&upstream.url(path))).await;
            assert_eq!(reply.x_cache(), round);
            assert!(max_age(&reply) >= 2 * 86_400, "{path}: {:?}", reply.headers);
            let cache_control = reply.header("cache-control");
            assert_eq!(cache_control.contains("immutable"), immutable, "{path} {round}: {cache_control}");
        }
        // A variant follows its original.
        let variant = get(&client, &proxy.path(&format!("/width=80/?{}", upstream.url(path)))).await;
        assert_eq!(variant.header("cache-control").contains("immutable"), immutable, "{path} variant");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn age_is_sent_and_max_age_is_the_full_lifetime() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()).header("cache-control", "max-age=600"));
    let dir = tempfile::tempdir().unwrap();
    let clock = manual_clock();
    let proxy = proxy_on(dir.path(), &clock, &["--min-ttl", "0s"]).await;
    let client = client();
    let url = proxy.url(&upstream.url("/a.jpg"));
    let variant = proxy.path(&format!("/width=100/?{}", upstream.url("/a.jpg")));

    let first = get(&client, &url).await;
    assert_eq!((first.x_cache(), max_age(&first), age(&first)), ("MISS", 600, 0));
    clock.advance(secs(100));
    let hit = get(&client, &url).await;
    assert_eq!((hit.x_cache(), max_age(&hit), age(&hit)), ("HIT-MEMORY", 600, 100));
    // A variant made now lives as long as what is left of its original: 500 s, counted from now.
    let made = get(&client, &variant).await;
    assert_eq!((made.x_cache(), max_age(&made), age(&made)), ("MISS", 500, 0));
    clock.advance(secs(50));
    let variant_hit = get(&client, &variant).await;
    assert_eq!((variant_hit.x_cache(), max_age(&variant_hit), age(&variant_hit)), ("HIT-MEMORY", 500, 50));
    proxy.stop().await;

    // From disk after a restart, the age still counts from when the entry was stored.
    let proxy = proxy_on(dir.path(), &clock, &["--min-ttl", "0s"]).await;
    clock.advance(secs(10));
    let from_disk = get(&client, &proxy.url(&upstream.url("/a.jpg"))).await;
    assert_eq!((from_disk.x_cache(), max_age(&from_disk), age(&from_disk)), ("HIT-DISK", 600, 160));
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// The same rules on the wall clock, against a real `mirage serve` process (the tests above move a manual clock
// given to an in-process server, so they can cover hours without sleeping)
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_bare_304_keeps_the_stored_lifetime_on_the_wall_clock() {
    let upstream = bare_304_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--min-ttl", "0s"]).await;
    let client = client();
    let url = proxy.url(&upstream.url("/a.jpg"));
    let first = get(&client, &url).await;
    assert_eq!((first.status, first.x_cache(), max_age(&first)), (200, "MISS", 2));

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let revalidated = get(&client, &url).await;
    assert_eq!((revalidated.status, revalidated.x_cache()), (200, "REVALIDATED"));
    assert!(max_age(&revalidated) <= 2, "a bare 304 reset the lifetime: {:?}", revalidated.headers);
    assert!(!revalidated.header("cache-control").contains("immutable"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = get(&client, &url).await;
    assert_eq!(again.x_cache(), "REVALIDATED", "3 s after the revalidation: {:?}", again.headers);
    assert_eq!(upstream.heads().len(), 3);
    proxy.stop().await;
}

#[tokio::test]
async fn must_revalidate_forbids_stale_on_error_on_the_wall_clock() {
    let upstream = Upstream::start().await;
    upstream.route("/must.jpg", Route::image(photo()).header("cache-control", "max-age=1, must-revalidate"));
    upstream.route("/plain.jpg", Route::image(photo()).header("cache-control", "max-age=1"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--min-ttl", "0s"]).await;
    let client = client();
    for path in ["/must.jpg", "/plain.jpg"] {
        assert_eq!(get(&client, &proxy.url(&upstream.url(path))).await.x_cache(), "MISS");
        let variant = get(&client, &proxy.path(&format!("/width=90/?{}", upstream.url(path)))).await;
        assert_eq!(variant.x_cache(), "MISS", "{path} variant");
    }
    upstream.route("/must.jpg", Route::status(500));
    upstream.route("/plain.jpg", Route::status(500));
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let plain = get(&client, &proxy.url(&upstream.url("/plain.jpg"))).await;
    assert_eq!((plain.status, plain.x_cache()), (200, "STALE"), "the control case");
    let must = get(&client, &proxy.url(&upstream.url("/must.jpg"))).await;
    assert_eq!(must.status, 502, "X-Cache {:?}", must.x_cache());
    let variant = get(&client, &proxy.path(&format!("/width=90/?{}", upstream.url("/must.jpg")))).await;
    assert_eq!(variant.status, 502, "variant: X-Cache {:?}", variant.x_cache());
    proxy.stop().await;
}

#[tokio::test]
async fn age_counts_on_the_wall_clock_and_max_age_stays_the_full_lifetime() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()).header("cache-control", "max-age=600"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--min-ttl", "0s"]).await;
    let client = client();
    let url = proxy.url(&upstream.url("/a.jpg"));
    let first = get(&client, &url).await;
    assert_eq!((first.x_cache(), max_age(&first), age(&first)), ("MISS", 600, 0));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let hit = get(&client, &url).await;
    assert_eq!((hit.x_cache(), max_age(&hit)), ("HIT-MEMORY", 600));
    assert!((2..=3).contains(&age(&hit)), "Age after 2 s: {:?}", hit.headers);
    proxy.stop().await;
}
