//! The disk tier under real workloads, black-box: recency refreshed by memory hits, a budget that counts what the
//! file system really allocates, one recorded budget shared by `serve` and `warm`, a hung disk that degrades to
//! memory, start-up that answers before the index is built, and a shutdown that stores what running fills fetched.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Mode, Proxy, Route, Upstream, client, entry_files, get, photo, png_chunk};
use futures_util::StreamExt;

/// A JPEG of about 440 KB: the photo with padding after its end (JPEG readers stop at the end marker; the mirror
/// route never decodes). Big enough that per-file overhead does not decide how many fit in a budget.
fn big_image() -> Bytes {
    let mut body = photo().to_vec();
    body.resize(440_000, 0);
    Bytes::from(body)
}

/// A valid 1x1 grey PNG of 67 bytes.
fn tiny_png() -> Bytes {
    let ihdr = [0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0];
    // zlib: header, one stored block of two bytes (filter 0, pixel 0), Adler-32.
    let idat = [0x78, 0x01, 0x01, 0x02, 0x00, 0xfd, 0xff, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01];
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(*b"IHDR", &ihdr));
    png.extend(png_chunk(*b"IDAT", &idat));
    png.extend(png_chunk(*b"IEND", &[]));
    Bytes::from(png)
}

/// Kilobytes the file system allocates for everything under `dir` (`du -sk`).
fn du_kib(dir: &Path) -> u64 {
    let output = Command::new("du").arg("-sk").arg(dir).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("du said {text:?}"))
}

/// Directories under `dir`, at any depth.
fn walk_dirs(dir: &Path) -> usize {
    let mut count = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                count += 1;
                pending.push(entry.path());
            }
        }
    }
    count
}

/// The `mirage` binary with no MIRAGE_* settings inherited from the environment.
fn mirage() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mirage"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MIRAGE_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// `mirage warm LIST --cache-dir DIR --allow-private-networks ARGS...`: exit code and stderr.
async fn warm(dir: &Path, urls: &[String], args: &[&str]) -> (Option<i32>, String) {
    let list = dir.parent().unwrap().join(format!("urls-{}.txt", urls.len()));
    std::fs::write(&list, urls.join("\n") + "\n").unwrap();
    let mut command = mirage();
    command.arg("warm").arg(&list).arg("--cache-dir").arg(dir).arg("--allow-private-networks").args(args);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hits_refresh_disk_recency() {
    let upstream = Upstream::start().await;
    for name in ["a", "b", "c", "d"] {
        upstream.route(&format!("/{name}.jpg"), Route::image(big_image()));
    }
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("cache");
    // Room for three of the four images, whichever way the budget is counted.
    let flags = ["--disk-cache-size", "1600KiB"];
    let proxy = Proxy::local(&dir, &flags).await;
    let http = client();
    assert_eq!(get(&http, &proxy.url(&upstream.url("/a.jpg"))).await.x_cache(), "MISS");
    for _ in 0..10 {
        assert_eq!(get(&http, &proxy.url(&upstream.url("/a.jpg"))).await.x_cache(), "HIT-MEMORY");
    }
    common::wait_until(Duration::from_secs(5), || entry_files(&dir).len() == 1).await;
    for name in ["b", "c", "d"] {
        let before = entry_files(&dir);
        assert_eq!(get(&http, &proxy.url(&upstream.url(&format!("/{name}.jpg")))).await.x_cache(), "MISS");
        // Each write lands before the next image, so the disk order is the order of requests.
        wait_for_new_entry(&dir, name, &before).await;
    }
    proxy.stop().await;
    assert_eq!(entry_files(&dir).len(), 3, "the budget holds three images");

    let proxy = Proxy::local(&dir, &flags).await;
    let reply = get(&http, &proxy.url(&upstream.url("/a.jpg"))).await;
    assert_eq!(reply.x_cache(), "HIT-DISK", "the hottest image was evicted from disk");
    assert_eq!(upstream.hits("/a.jpg"), 1);
    proxy.stop().await;
}

/// Waits until the queued disk write of the image just fetched has landed: the set of entry files changes
/// (a new file, and from the fourth image on one evicted).
async fn wait_for_new_entry(dir: &Path, name: &str, before: &[PathBuf]) {
    let landed = common::wait_until(Duration::from_secs(5), || entry_files(dir) != before).await;
    assert!(landed, "the disk write of {name} never landed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_budget_counts_allocated_blocks_and_shard_directories() {
    let upstream = Upstream::start().await;
    upstream.route("/tiny.png", Route::status(200).header("content-type", "image/png").body(tiny_png()));
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("cache");
    let proxy = Proxy::local(&dir, &["--disk-cache-size", "2MiB"]).await;
    let http = client();
    // 3,000 distinct tiny originals (the target's query makes each one its own entry), 16 at a time.
    let urls: Vec<String> = (0..3000).map(|n| proxy.url(&upstream.url(&format!("/tiny.png?n={n}")))).collect();
    let statuses: Vec<u16> = futures_util::stream::iter(urls.iter())
        .map(|url| async { get(&http, url).await.status })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|&status| status == 200));
    proxy.stop().await;
    let used = du_kib(&dir);
    let entries = entry_files(&dir).len();
    let tmp = du_kib(&dir.join("tmp"));
    let dirs = walk_dirs(&dir);
    assert!(
        used < 3 * 1024,
        "du -sk of a 2 MiB cache: {used} KiB ({entries} entries, {dirs} directories, tmp {tmp} KiB)"
    );
    assert!(!entry_files(&dir).is_empty());
    // Eviction leaves no empty shard directories behind.
    for level1 in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = level1.file_name().to_string_lossy().into_owned();
        if name.len() != 2 {
            continue;
        }
        let leaves: Vec<PathBuf> = std::fs::read_dir(level1.path()).unwrap().flatten().map(|e| e.path()).collect();
        assert!(!leaves.is_empty(), "empty shard directory {name}");
        for leaf in leaves {
            assert!(std::fs::read_dir(&leaf).unwrap().next().is_some(), "empty shard directory {}", leaf.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_and_serve_share_one_recorded_budget() {
    let upstream = Upstream::start().await;
    upstream.route("/img.jpg", Route::image(big_image()));
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("cache");
    let url = |n: usize| upstream.url(&format!("/img.jpg?n={n}"));
    let proxy = Proxy::local(&dir, &["--disk-cache-size", "8MiB"]).await;
    let http = client();
    // About 5 MiB from the server.
    for n in 0..12 {
        assert_eq!(get(&http, &proxy.url(&url(n))).await.x_cache(), "MISS");
    }
    assert!(common::wait_until(Duration::from_secs(5), || entry_files(&dir).len() == 12).await);

    // A warm run naming another budget is refused, and deletes nothing.
    let (code, stderr) = warm(&dir, &[url(100)], &["--disk-cache-size", "1MiB"]).await;
    assert_ne!(code, Some(0), "warm with a different budget must refuse; stderr:\n{stderr}");
    assert!(stderr.contains("8MiB") || stderr.contains("8388608"), "the error names the recorded budget:\n{stderr}");
    assert_eq!(entry_files(&dir).len(), 12);

    // Without a size flag, warm adds about 1 MiB under the recorded budget, next to the running server.
    let (code, stderr) = warm(&dir, &[url(20), url(21)], &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(entry_files(&dir).len(), 14);
    proxy.stop().await;

    let proxy = Proxy::local(&dir, &["--disk-cache-size", "8MiB"]).await;
    for n in 0..12 {
        assert_eq!(get(&http, &proxy.url(&url(n))).await.x_cache(), "HIT-DISK", "entry {n}");
    }
    for n in [20, 21] {
        assert_eq!(get(&http, &proxy.url(&url(n))).await.x_cache(), "HIT-DISK", "warmed entry {n}");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_with_another_budget_is_refused_while_the_first_runs() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("cache");
    let proxy = Proxy::local(&dir, &["--disk-cache-size", "8MiB"]).await;
    let serve = |size: &str| {
        let mut command = mirage();
        command.args(["serve", "--listen", "127.0.0.1:0", "--disk-cache-size", size, "--cache-dir"]).arg(&dir);
        command
    };
    // Beside the running server: refused at once, naming both budgets; the record stays.
    let mut second = serve("16MiB");
    let output = tokio::task::spawn_blocking(move || {
        let mut child = second.spawn().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.code().is_some_and(|code| code != 0),
        "a second server with another budget must refuse: {:?}\n{stderr}",
        output.status
    );
    assert!(stderr.contains("16MiB") && stderr.contains("8MiB"), "the error names both budgets:\n{stderr}");
    assert_eq!(mirage_cache::budget::recorded(&dir), Some(8 << 20));
    proxy.stop().await;

    // A restart with a new size (nobody else runs on the directory) replaces the record.
    let proxy = Proxy::local(&dir, &["--disk-cache-size", "16MiB"]).await;
    let http = client();
    assert_eq!(send_head(&http, &proxy.path("/healthz")).await, 200);
    assert_eq!(mirage_cache::budget::recorded(&dir), Some(16 << 20));
    proxy.stop().await;
}

/// Makes `path` a named pipe, and keeps a second name for it in `keep` so the test can later release any reader
/// blocked opening it, even after the entry's name has been replaced.
fn make_fifo(path: &Path, keep: &Path) {
    std::fs::remove_file(path).unwrap();
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
    std::fs::hard_link(path, keep).unwrap();
}

/// Releases readers blocked on the kept pipes when dropped (also when the test fails, or the runtime would wait
/// for the blocked threads forever): opens each for writing without blocking (ENXIO when nobody reads), for a
/// second, as a reader may still be on its way.
struct ReleaseFifos(Vec<PathBuf>);

impl Drop for ReleaseFifos {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        const O_NONBLOCK: i32 = 0o4000;
        for _ in 0..20 {
            for path in &self.0 {
                let _ = std::fs::OpenOptions::new().write(true).custom_flags(O_NONBLOCK).open(path);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_disk_times_out_and_is_bypassed() {
    let upstream = Upstream::start().await;
    upstream.route("/img.jpg", Route::image(photo()));
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("cache");
    let url = |n: usize| upstream.url(&format!("/img.jpg?n={n}"));
    let proxy = Proxy::local(&dir, &[]).await;
    let http = client();
    for n in 0..6 {
        get(&http, &proxy.url(&url(n))).await;
    }
    proxy.stop().await;
    // A hung disk, for real: opening a named pipe blocks until a writer comes, as a read from a dead NFS server
    // or a failing drive does. Every entry becomes one.
    let kept_dir = cache.path().join("kept");
    std::fs::create_dir(&kept_dir).unwrap();
    let mut kept = ReleaseFifos(Vec::new());
    for (i, file) in entry_files(&dir).iter().enumerate() {
        let keep = kept_dir.join(i.to_string());
        make_fifo(file, &keep);
        kept.0.push(keep);
    }

    let proxy = Proxy::local(&dir, &["--disk-timeout", "1s"]).await;
    let started = Instant::now();
    for n in 0..3 {
        let reply = get(&http, &proxy.url(&url(n))).await;
        assert_eq!((reply.status, reply.x_cache()), (200, "MISS"), "a hung read is a miss");
    }
    let first_three = started.elapsed();
    // Three timeouts bypass the disk: the first request waits for two of them (the pipeline looks up twice), the
    // second for one.
    assert!(first_three < Duration::from_secs(6), "three hung reads took {first_three:?}");
    // Bypassed, the disk is not waited for (the first probe comes 2 s after the bypass).
    for n in 3..6 {
        let started = Instant::now();
        let reply = get(&http, &proxy.url(&url(n))).await;
        assert_eq!((reply.status, reply.x_cache()), (200, "MISS"));
        // Well under one --disk-timeout, with room for a loaded machine.
        assert!(started.elapsed() < Duration::from_millis(700), "bypassed disk still waited {:?}", started.elapsed());
    }
    let healthz = get(&http, &proxy.path("/healthz")).await;
    assert_eq!(healthz.status, 200);
    proxy.stop().await;
    drop(kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_the_disk_index_and_requests_are_answered_before_it() {
    let upstream = Upstream::start().await;
    upstream.route("/img.jpg", Route::image(photo()));
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("cache");
    let proxy = Proxy::local(&dir, &[]).await;
    let http = client();
    get(&http, &proxy.url(&upstream.url("/img.jpg"))).await;
    proxy.stop().await;

    let proxy = Proxy::local(&dir, &[]).await;
    // Whatever the index's state, a stored entry answers from disk (its checksum, not the index, vouches for it).
    assert_eq!(get(&http, &proxy.url(&upstream.url("/img.jpg"))).await.x_cache(), "HIT-DISK");
    let mut status = 0;
    for _ in 0..250 {
        status = get(&http, &proxy.path("/readyz")).await.status;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "readyz is 503 until the index is built");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200, "readyz never became 200");
    let head = send_head(&http, &proxy.path("/readyz")).await;
    assert_eq!(head, 200);
    proxy.stop().await;
    assert_eq!(upstream.hits("/img.jpg"), 1);
}

async fn send_head(http: &reqwest::Client, url: &str) -> u16 {
    http.head(url).send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_running_fills_then_flushes_within_the_timeout() {
    let upstream = Upstream::start().await;
    upstream.route("/slow.jpg", Route::image(photo()).delay(Duration::from_millis(1500)));
    upstream.route("/hung.jpg", Route::image(photo()).mode(Mode::HangBeforeHeaders));
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("cache");
    let proxy = Proxy::local(&dir, &["--shutdown-timeout", "3s"]).await;
    // Clients that give up: the fills they started go on in the background.
    let impatient = reqwest::Client::builder().no_proxy().timeout(Duration::from_millis(300)).build().unwrap();
    assert!(impatient.get(proxy.url(&upstream.url("/slow.jpg"))).send().await.is_err());
    assert!(impatient.get(proxy.url(&upstream.url("/hung.jpg"))).send().await.is_err());
    upstream.wait_for_hits("/hung.jpg", 1).await;
    let started = Instant::now();
    proxy.stop().await;
    let took = started.elapsed();
    // The slow fill finished and was stored before the final flush; the hung one did not hold shutdown past its
    // bound.
    assert_eq!(entry_files(&dir).len(), 1, "the running fill was not stored before shutdown ended");
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");
    // Nothing lands after shutdown.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(entry_files(&dir).len(), 1);
}

/// Writes `count` small entries in the real on-disk format (header + body, no fsync: this is set-up, not the
/// code under test) under `dir`, on two threads.
fn generate_entries(dir: &Path, count: u32) {
    let threads: Vec<_> = (0..2u32)
        .map(|half| {
            let dir = dir.to_path_buf();
            std::thread::spawn(move || {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                for i in (half..count).step_by(2) {
                    let key = mirage_cache::CacheKey::from_parts(&[b"start-up bench", &i.to_le_bytes()]);
                    let entry = mirage_cache::Entry::image("image/png", Bytes::from(vec![7u8; 100]), now, now + 86_400);
                    let mut bytes = mirage_cache::meta::encode_header(&key, entry.meta());
                    bytes.extend_from_slice(entry.body());
                    let path = dir.join(key.shard_path());
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(path, bytes).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

/// The start-up measurement of BENCHMARKS.md: `MIRAGE_BENCH_ENTRIES` (default 1,000,000) entries in the cache
/// directory, then the time from starting the server to its first answer, to a `HIT-DISK`, and to `/readyz` 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes a million files (about 4.5 GB of blocks); run by hand for BENCHMARKS.md"]
async fn start_up_with_a_million_entries() {
    let count: u32 = std::env::var("MIRAGE_BENCH_ENTRIES").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let upstream = Upstream::start().await;
    upstream.route("/img.jpg", Route::image(photo()));
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("cache");
    let started = Instant::now();
    let generating = dir.clone();
    tokio::task::spawn_blocking(move || generate_entries(&generating, count)).await.unwrap();
    eprintln!("generated {count} entries in {:?}", started.elapsed());
    // One real entry, for a HIT-DISK before the index exists.
    let proxy = Proxy::local(&dir, &["--disk-cache-size", "8GiB"]).await;
    get(&client(), &proxy.url(&upstream.url("/img.jpg"))).await;
    proxy.stop().await;

    let http = client();
    let started = Instant::now();
    let proxy = Proxy::local(&dir, &["--disk-cache-size", "8GiB"]).await;
    assert_eq!(get(&http, &proxy.path("/healthz")).await.status, 200);
    let first_answer = started.elapsed();
    assert_eq!(get(&http, &proxy.url(&upstream.url("/img.jpg"))).await.x_cache(), "HIT-DISK");
    let first_hit = started.elapsed();
    let readyz_before = get(&http, &proxy.path("/readyz")).await.status;
    while get(&http, &proxy.path("/readyz")).await.status != 200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = started.elapsed();
    eprintln!(
        "{count} entries: first answer {first_answer:?}, first HIT-DISK {first_hit:?}, readyz at first {readyz_before}, \
         readyz 200 after {ready:?}"
    );
    proxy.stop().await;
}
