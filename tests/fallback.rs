//! `--fallback-image` against a real `mirage serve` process: every upstream and source failure it covers answers
//! the placeholder (transformed as asked, with the error's status and code), the client's and the operator's
//! refusals keep their error page, `--fallback-status 200` overrides the status, and a bad file stops start-up.

mod common;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bytes::Bytes;
use clap::Parser;
use common::{Mode, Proxy, Reply, Route, Upstream, client, dead_addr, entry_files, get, photo, send};
use image::{DynamicImage, ImageFormat as Codec, Rgb, RgbImage};

/// 320x200 (64,000 pixels): small enough to pass `--max-source-pixels 100000`, which the failing 400x400 source
/// does not.
fn placeholder_png() -> Bytes {
    let image = RgbImage::from_fn(320, 200, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
    encode(&DynamicImage::ImageRgb8(image), Codec::Png)
}

fn encode(image: &DynamicImage, codec: Codec) -> Bytes {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, codec).expect("encode fixture");
    Bytes::from(out.into_inner())
}

/// Writes the placeholder into `dir` and returns its path.
fn write_placeholder(dir: &Path) -> (PathBuf, Bytes) {
    let bytes = placeholder_png();
    let path = dir.join("placeholder.png");
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn variant(proxy: &Proxy, options: &str, target: &str) -> String {
    proxy.path(&format!("/{options}/?{target}"))
}

/// Checks `reply` is the fallback standing in for an error of `status` and `code`, `width` pixels wide, and
/// returns its body.
fn assert_fallback(reply: &Reply, status: u16, code: &str, width: u32, what: &str) -> Bytes {
    let text = || String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)]).into_owned();
    assert_eq!(reply.status, status, "{what}: {}", text());
    assert_eq!(reply.header("x-mirage-fallback"), code, "{what}");
    assert_eq!(reply.x_cache(), "FALLBACK", "{what}");
    assert_eq!(reply.header("cache-control"), "public, max-age=60", "{what}");
    assert_eq!(reply.header("access-control-allow-origin"), "*", "{what}");
    assert!(reply.header("etag").is_empty() && reply.header("last-modified").is_empty(), "{what}: a validator");
    let image = image::load_from_memory(&reply.body).unwrap_or_else(|e| panic!("{what}: not an image: {e}"));
    assert_eq!(image.width(), width, "{what}");
    let sniffed = mirage::sniff::ImageFormat::sniff(&reply.body).expect("sniffed");
    assert_eq!(reply.header("content-type"), sniffed.media_type(), "{what}");
    assert_eq!(reply.header("content-length"), reply.body.len().to_string(), "{what}");
    reply.body.clone()
}

/// A plain error page: no fallback.
fn assert_error_page(reply: &Reply, status: u16, what: &str) {
    assert_eq!(reply.status, status, "{what}: {:?}", String::from_utf8_lossy(&reply.body));
    assert!(reply.header("content-type").starts_with("text/plain"), "{what}");
    assert!(reply.header("x-mirage-fallback").is_empty(), "{what}");
    assert_ne!(reply.x_cache(), "FALLBACK", "{what}");
}

#[tokio::test]
async fn every_upstream_and_source_failure_answers_the_placeholder() {
    let upstream = Upstream::start().await;
    upstream.route("/404.jpg", Route::status(404).body("<h1>gone</h1>"));
    upstream.route("/410.jpg", Route::status(410));
    upstream.route("/403.jpg", Route::status(403).body("no hotlinking"));
    upstream.route("/big.jpg", Route::image(photo()));
    upstream.route("/page.jpg", Route::status(200).header("content-type", "text/html").body("<html>login</html>"));
    let huge = encode(&DynamicImage::ImageRgb8(RgbImage::new(400, 400)), Codec::Png);
    upstream.route("/huge.png", Route::image(huge));
    let whole = photo();
    upstream.route("/half.jpg", Route::image(whole.slice(..whole.len() / 2)));
    upstream.route("/500.jpg", Route::status(500).body("stack trace"));
    upstream.route("/hang.jpg", Route::image(photo()).mode(Mode::HangBeforeHeaders));
    let dead = dead_addr().await;
    let dir = tempfile::tempdir().unwrap();
    let (placeholder, placeholder_bytes) = write_placeholder(dir.path());
    let cache = dir.path().join("cache");
    #[rustfmt::skip]
    let flags = [
        "--fallback-image", placeholder.to_str().unwrap(), "--max-source-bytes", "30KiB",
        "--max-source-pixels", "100000", "--fetch-timeout", "1s", "--connect-timeout", "500ms",
    ];
    let proxy = Proxy::local(&cache, &flags).await;
    let client = client();

    // The hung upstream and the refused connection come last: their failures open the host's circuit breaker.
    let cases = [
        (upstream.url("/404.jpg"), 404, "upstream_not_found"),
        (upstream.url("/410.jpg"), 404, "upstream_not_found"),
        (upstream.url("/403.jpg"), 502, "upstream_status"),
        (upstream.url("/big.jpg"), 413, "source_too_large"),
        (upstream.url("/page.jpg"), 415, "not_an_image"),
        (upstream.url("/huge.png"), 413, "source_too_many_pixels"),
        (upstream.url("/half.jpg"), 422, "undecodable_image"),
        (upstream.url("/500.jpg"), 502, "upstream_status"),
        (upstream.url("/hang.jpg"), 504, "upstream_timeout"),
        (format!("http://{dead}/a.jpg"), 502, "upstream_unreachable"),
    ];
    let mut bodies = Vec::new();
    for (target, status, code) in &cases {
        let reply = get(&client, &variant(&proxy, "width=150", target)).await;
        bodies.push(assert_fallback(&reply, *status, code, 150, target));
    }
    // One variant of the placeholder, made once and shared by every failing target.
    assert!(bodies.iter().all(|body| *body == bodies[0]), "the 150-px placeholders differ");

    // A second size is its own variant; a mirror request answers the file as it was loaded.
    let wide = get(&client, &variant(&proxy, "width=300,f=webp", &upstream.url("/404.jpg"))).await;
    assert_fallback(&wide, 404, "upstream_not_found", 300, "width=300 webp");
    assert_eq!(wide.header("content-type"), "image/webp");
    let mirror = get(&client, &proxy.url(&upstream.url("/404.jpg"))).await;
    assert_fallback(&mirror, 404, "upstream_not_found", 320, "mirror");
    assert!(mirror.body == placeholder_bytes, "the mirror fallback is not the file as loaded");
    proxy.stop().await;
    // On disk: the two sources that were images (too many pixels, truncated) and the two placeholder variants
    // (150 px, 300 px WebP), one each however many targets failed; the mirror fallback is never stored, and
    // refusals are remembered in memory only.
    assert_eq!(entry_files(&cache).len(), 4, "{:?}", entry_files(&cache));
}

#[tokio::test]
async fn head_answers_the_fallback_headers_without_a_body() {
    let upstream = Upstream::start().await;
    upstream.route("/404.jpg", Route::status(404));
    let dir = tempfile::tempdir().unwrap();
    let (placeholder, _) = write_placeholder(dir.path());
    let proxy = Proxy::local(&dir.path().join("cache"), &["--fallback-image", placeholder.to_str().unwrap()]).await;
    let client = client();
    let url = variant(&proxy, "width=100", &upstream.url("/404.jpg"));
    let full = get(&client, &url).await;
    assert_fallback(&full, 404, "upstream_not_found", 100, "GET");
    let head = send(client.head(&url)).await;
    assert_eq!(head.status, 404);
    assert!(head.body.is_empty());
    for name in ["content-type", "content-length", "cache-control", "x-cache", "x-mirage-fallback"] {
        assert_eq!(head.header(name), full.header(name), "{name}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn client_and_policy_errors_keep_their_error_page() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    let dir = tempfile::tempdir().unwrap();
    let (placeholder, _) = write_placeholder(dir.path());
    let placeholder = placeholder.to_str().unwrap();
    let client = client();
    let target = upstream.url("/a.jpg");

    // Without --allow-private-networks, a loopback target is an SSRF refusal.
    let no_private = ["--no-disk-cache", "--fallback-image", placeholder];
    let proxy = Proxy::start(&no_private).await;
    assert_error_page(&get(&client, &variant(&proxy, "width=100", &target)).await, 403, "SSRF");
    assert_error_page(&get(&client, &proxy.url(&target)).await, 403, "SSRF mirror");
    proxy.stop().await;

    let deny = ["--fallback-image", placeholder, "--deny-host", "127.0.0.1", "--max-uri-bytes", "2KiB"];
    let proxy = Proxy::local(&dir.path().join("cache"), &deny).await;
    assert_error_page(&get(&client, &variant(&proxy, "width=100", &target)).await, 403, "--deny-host");
    assert_error_page(&get(&client, &variant(&proxy, "width=abc", &target)).await, 400, "bad options");
    assert_error_page(&get(&client, &proxy.path("/?ftp://host/a.jpg")).await, 400, "bad target");
    assert_error_page(&send(client.post(proxy.url(&target))).await, 405, "POST");
    let long = format!("{target}?{}", "a".repeat(3000));
    assert_error_page(&get(&client, &proxy.url(&long)).await, 414, "long URI");
    assert_eq!(upstream.hits("/a.jpg"), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn fallback_status_200_overrides_the_error_status() {
    let upstream = Upstream::start().await;
    upstream.route("/404.jpg", Route::status(404));
    upstream.route("/500.jpg", Route::status(500));
    let dir = tempfile::tempdir().unwrap();
    let (placeholder, _) = write_placeholder(dir.path());
    let flags = ["--fallback-image", placeholder.to_str().unwrap(), "--fallback-status", "200", "--fallback-ttl", "5m"];
    let proxy = Proxy::local(&dir.path().join("cache"), &flags).await;
    let client = client();
    for (path, code) in [("/404.jpg", "upstream_not_found"), ("/500.jpg", "upstream_status")] {
        let reply = get(&client, &variant(&proxy, "width=200", &upstream.url(path))).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("x-mirage-fallback"), code);
        assert_eq!(reply.header("cache-control"), "public, max-age=300");
        assert_eq!(image::load_from_memory(&reply.body).expect("an image").width(), 200);
    }
    proxy.stop().await;
}

/// `mirage serve` with `flags` must exit at once with failure and one line naming `--fallback-...`.
fn assert_refused(flags: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_mirage"))
        .args(["serve", "--listen", "127.0.0.1:0", "--no-disk-cache"])
        .args(flags)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run mirage");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{flags:?} started");
    assert!(stderr.contains("--fallback-"), "{flags:?}: {stderr}");
    let error_lines = stderr.lines().filter(|line| !line.trim().is_empty() && !line.starts_with("Usage")).count();
    assert!(error_lines <= 3, "{flags:?}: not a short error: {stderr}");
}

#[test]
fn a_bad_fallback_image_refuses_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.png");
    std::fs::write(&text, "not an image").unwrap();
    let png = placeholder_png();
    let truncated = dir.path().join("truncated.png");
    std::fs::write(&truncated, &png[..png.len() / 2]).unwrap();
    let missing = dir.path().join("missing.png");
    for path in [&missing, &text, &truncated] {
        assert_refused(&["--fallback-image", path.to_str().unwrap()]);
    }
    let (good, _) = write_placeholder(dir.path());
    assert_refused(&["--fallback-image", good.to_str().unwrap(), "--fallback-status", "301"]);
    assert_refused(&["--fallback-image", good.to_str().unwrap(), "--fallback-status", "204"]);
    // A placeholder over the pixel limit could never be transformed: refused at start too.
    assert_refused(&["--fallback-image", good.to_str().unwrap(), "--max-source-pixels", "1000"]);
    // The same file, within the limits, is accepted.
    let argv = ["serve", "--no-disk-cache", "--fallback-image", good.to_str().unwrap()];
    let config = mirage::config::ServeArgs::try_parse_from(argv).expect("flags parse").into_config();
    assert!(config.is_ok_and(|config| config.pipeline.fallback.is_some()));
}
