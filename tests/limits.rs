//! Byte budgets over real HTTP: the memory tier and the disk tier stay within their configured sizes.

mod common;

use std::time::Duration;

use common::{Proxy, Route, Upstream, client, entry_files, get, photo, total_file_bytes};

const IMAGES: usize = 30;

/// An upstream serving the 42 KB photo at `/img/0.jpg` .. `/img/29.jpg`.
async fn many_images() -> Upstream {
    let upstream = Upstream::start().await;
    for n in 0..IMAGES {
        upstream.route(&format!("/img/{n}.jpg"), Route::image(photo()));
    }
    upstream
}

/// moka applies evictions in batches, on the first cache operation at least 300 ms after the previous batch
/// (or after 64 queued operations): waiting that long makes the next request apply every pending eviction.
const MOKA_HOUSEKEEPING: Duration = Duration::from_millis(350);

#[tokio::test]
async fn memory_tier_stays_within_its_budget() {
    let upstream = many_images().await;
    let proxy = Proxy::start(&["--no-disk-cache", "--allow-private-networks", "--memory-cache-size", "200KiB"]).await;
    let client = client();
    let url = |n: usize| proxy.url(&upstream.url(&format!("/img/{n}.jpg")));
    for n in 0..IMAGES {
        let reply = get(&client, &url(n)).await;
        assert_eq!((reply.status, reply.x_cache()), (200, "MISS"), "image {n}");
    }
    // Probe without refilling: upstream now fails, so an evicted image answers 502 and is not stored again.
    // Which images survive is the eviction policy's choice; how many is the budget's.
    for n in 0..IMAGES {
        upstream.route(&format!("/img/{n}.jpg"), Route::status(500));
    }
    let fit = 200 * 1024 / photo().len();
    let mut memory_hits = Vec::new();
    for _sweep in 0..3 {
        tokio::time::sleep(MOKA_HOUSEKEEPING).await;
        memory_hits.clear();
        for n in 0..IMAGES {
            let reply = get(&client, &url(n)).await;
            if reply.x_cache() == "HIT-MEMORY" {
                assert!(reply.body == photo());
                memory_hits.push(n);
            } else {
                assert_eq!(reply.status, 502, "image {n}");
            }
        }
        if memory_hits.len() <= fit {
            break;
        }
    }
    assert!(memory_hits.len() <= fit, "images {memory_hits:?} are memory hits; at most {fit} fit in 200 KiB");
    assert!(!memory_hits.is_empty(), "the memory tier kept nothing");
    proxy.stop().await;
}

#[tokio::test]
async fn disk_tier_stays_within_its_budget() {
    let upstream = many_images().await;
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--disk-cache-size", "300KiB", "--memory-cache-size", "1KiB"];
    let proxy = Proxy::local(dir.path(), &flags).await;
    let client = client();
    for n in 0..IMAGES {
        let reply = get(&client, &proxy.url(&upstream.url(&format!("/img/{n}.jpg")))).await;
        assert_eq!((reply.status, reply.x_cache()), (200, "MISS"), "image {n}");
        assert!(reply.body == photo());
    }
    proxy.stop().await;

    let files = entry_files(dir.path());
    let entry_bytes: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    assert!(!files.is_empty(), "nothing was written to disk");
    assert!(entry_bytes <= 300 * 1024, "{} entries take {entry_bytes} bytes, over 300 KiB", files.len());
    let all_bytes = total_file_bytes(dir.path());
    assert!(all_bytes <= 300 * 1024 + 64 * 1024, "the cache directory holds {all_bytes} bytes in total");

    // What is left on disk is served from disk after a restart.
    let proxy = Proxy::local(dir.path(), &flags).await;
    let hits_before = upstream.total_hits();
    let mut disk_hits = 0;
    // Newest first: the survivors of LRU eviction are the last images written.
    for n in (0..IMAGES).rev() {
        let reply = get(&client, &proxy.url(&upstream.url(&format!("/img/{n}.jpg")))).await;
        disk_hits += usize::from(reply.x_cache() == "HIT-DISK");
    }
    assert!(disk_hits > 0, "no image was served from disk after a restart");
    assert_eq!(upstream.total_hits() - hits_before, IMAGES - disk_hits);
    proxy.stop().await;
}
