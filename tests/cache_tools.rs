//! `mirage cache stats` and `mirage cache verify` on a directory filled by a real `mirage serve` process:
//! the counts match what was served, verify passes a clean directory, and deletes (only) corrupt entries.

mod common;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::{Proxy, Route, Upstream, client, entry_files, get, photo};
use image::{DynamicImage, ImageFormat as Codec, Rgb, RgbImage};
use mirage_cache::{CacheKey, DiskTier, Entry};
use serde_json::Value;

/// `mirage cache {args}`, with no MIRAGE_* variable of the test's environment leaking in.
fn mirage_cache(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mirage"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MIRAGE_") {
            command.env_remove(name);
        }
    }
    command.arg("cache").args(args).envs(env.iter().copied()).stdin(Stdio::null());
    command.output().expect("run mirage cache")
}

fn stats(dir: &Path) -> Value {
    let output = mirage_cache(&["stats", "--cache-dir", dir.to_str().unwrap(), "--json"], &[]);
    assert!(output.status.success(), "stats failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("stats --json prints JSON")
}

fn verify(dir: &Path) -> (i32, String) {
    let output = mirage_cache(&["verify", "--cache-dir", dir.to_str().unwrap()], &[]);
    (output.status.code().expect("exit code"), String::from_utf8_lossy(&output.stdout).into_owned())
}

fn small_png() -> Bytes {
    let image = RgbImage::from_fn(64, 48, |x, y| Rgb([(x * 4) as u8, (y * 5) as u8, 90]));
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(image).write_to(&mut out, Codec::Png).expect("encode");
    Bytes::from(out.into_inner())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn stats_count_what_a_server_stored_and_verify_deletes_corrupt_entries() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    // Expires after a second (with --min-ttl 0s), and its variant with it.
    upstream.route(
        "/b.png",
        Route::image(small_png()).header("content-type", "image/png").header("cache-control", "max-age=1"),
    );
    upstream.route("/gone.jpg", Route::status(404));
    upstream.route("/page.jpg", Route::status(200).header("content-type", "text/html").body("<html>login</html>"));
    let dir = tempfile::tempdir().unwrap();
    let started = unix_now() - 100;
    let proxy = Proxy::local(dir.path(), &["--min-ttl", "0s"]).await;
    let client = client();

    // (request path, counted as) for every image stored; its reply says the content type and body length.
    let images = [
        (format!("/?{}", upstream.url("/a.jpg")), "original"),
        (format!("/?{}", upstream.url("/b.png")), "original"),
        (format!("/width=100/?{}", upstream.url("/a.jpg")), "variant"),
        (format!("/width=100,f=webp/?{}", upstream.url("/a.jpg")), "variant"),
        (format!("/width=32/?{}", upstream.url("/b.png")), "variant"),
    ];
    let mut content_types: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (path, _) in &images {
        let reply = get(&client, &proxy.path(path)).await;
        assert_eq!(reply.status, 200, "{path}");
        let by_type = content_types.entry(reply.header("content-type").to_owned()).or_default();
        by_type.0 += 1;
        by_type.1 += reply.body.len() as u64;
    }
    assert_eq!(get(&client, &proxy.url(&upstream.url("/gone.jpg"))).await.status, 404);
    assert_eq!(get(&client, &proxy.url(&upstream.url("/page.jpg"))).await.status, 415);
    // Stopping waits for the queued disk writes.
    proxy.stop().await;
    // The server keeps remembered 404s and refusals in memory only: written here as another version or a
    // `warm` run could have left them, one of them expired.
    let now = unix_now();
    let tier = DiskTier::open(dir.path(), 1 << 30).unwrap();
    tier.write(&CacheKey::from_parts(&[b"gone"]), &Entry::not_found(now - 100, now - 40)).unwrap();
    tier.write(&CacheKey::from_parts(&[b"page"]), &Entry::refused("not_an_image", now, now + 60)).unwrap();
    drop(tier);
    let files = entry_files(dir.path());
    assert_eq!(files.len(), 7, "{files:?}");

    // The PNG and its variant expire a second after they were stored: poll until stats sees it (with the
    // expired 404, 3).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let report = loop {
        let report = stats(dir.path());
        if report["expired"] == 3 || std::time::Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(report["entries"], 7, "{report:#}");
    assert_eq!(report["originals"], 2, "{report:#}");
    assert_eq!(report["variants"], 3, "{report:#}");
    assert_eq!(report["variants_without_original"], 0, "{report:#}");
    assert_eq!(report["negative"], 2, "{report:#}");
    assert_eq!(report["not_found"], 1, "{report:#}");
    assert_eq!(report["refused"], 1, "{report:#}");
    assert_eq!(report["expired"], 3, "{report:#}");
    assert_eq!(report["unreadable"], 0, "{report:#}");
    let logical: u64 = files.iter().map(|path| std::fs::metadata(path).unwrap().len()).sum();
    assert_eq!(report["logical_bytes"], logical, "{report:#}");
    let disk = report["disk_bytes"].as_u64().unwrap();
    assert!(disk >= logical + 7 * 4096 / 2, "disk {disk} vs logical {logical}: blocks are not counted");
    for (content_type, (entries, bytes)) in &content_types {
        assert_eq!(report["content_types"][content_type]["entries"], *entries, "{content_type}: {report:#}");
        assert_eq!(report["content_types"][content_type]["bytes"], *bytes, "{content_type}: {report:#}");
    }
    assert_eq!(report["content_types"].as_object().unwrap().len(), content_types.len(), "{report:#}");
    let (oldest, newest) = (report["oldest_stored_at"].as_u64().unwrap(), report["newest_stored_at"].as_u64().unwrap());
    assert!(started <= oldest && oldest <= newest && newest <= unix_now(), "{oldest}..{newest}");
    assert_eq!(entry_files(dir.path()), files, "stats changed the directory");

    // The text form says the same.
    let text = mirage_cache(&["stats", "--cache-dir", dir.path().to_str().unwrap()], &[]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("7 (2 originals, 3 variants"), "{text}");

    let (code, summary) = verify(dir.path());
    assert_eq!(code, 0, "{summary}");
    assert!(summary.contains("7 entries checked") && summary.contains("0 corrupt"), "{summary}");

    // One flipped body byte, one truncated file.
    let flipped = &files[0];
    let mut bytes = std::fs::read(flipped).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(flipped, &bytes).unwrap();
    let truncated = &files[1];
    let bytes = std::fs::read(truncated).unwrap();
    std::fs::write(truncated, &bytes[..bytes.len() - 10]).unwrap();

    let (code, summary) = verify(dir.path());
    assert_eq!(code, 1, "{summary}");
    assert!(summary.contains("2 corrupt (deleted)"), "{summary}");
    assert!(!flipped.exists() && !truncated.exists(), "corrupt entries were kept");
    assert_eq!(entry_files(dir.path()).len(), 5);
    let (code, summary) = verify(dir.path());
    assert_eq!(code, 0, "{summary}");
    assert!(summary.contains("5 entries checked"), "{summary}");
    assert_eq!(stats(dir.path())["entries"], 5);
}

#[test]
fn the_default_directory_is_serves_and_a_missing_one_is_an_error() {
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("mirage");
    std::fs::create_dir_all(&cache).unwrap();
    let output = mirage_cache(&["stats", "--json"], &[("XDG_CACHE_HOME", home.path())]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["dir"], cache.to_str().unwrap());
    assert_eq!(report["entries"], 0);
    let output = mirage_cache(&["verify"], &[("XDG_CACHE_HOME", home.path())]);
    assert_eq!(output.status.code(), Some(0));

    let missing = home.path().join("nothing");
    for command in ["stats", "verify"] {
        let output = mirage_cache(&[command, "--cache-dir", missing.to_str().unwrap()], &[]);
        assert_eq!(output.status.code(), Some(2), "{command}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("not a directory"), "{command}");
    }
}
