//! Disk tier against real files: round trips, corruption, rebuild on open, and the byte budget.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use mirage_cache::{CacheKey, DiskTier, Entry, Validators};

fn key(i: u32) -> CacheKey {
    CacheKey::from_parts(&[b"disk-test", &i.to_le_bytes()])
}

fn entry(len: usize, fill: u8) -> Entry {
    Entry::image("image/webp", Bytes::from(vec![fill; len]), 10, 20)
        .with_validators(Validators { etag: Some("\"v1\"".to_owned()), last_modified: None })
}

/// Every regular file under the shard directories, as (path, size).
fn shard_files(root: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    for a in fs::read_dir(root).unwrap().flatten() {
        if a.file_name() == "tmp" || !a.path().is_dir() {
            continue;
        }
        for b in fs::read_dir(a.path()).unwrap().flatten() {
            for f in fs::read_dir(b.path()).unwrap().flatten() {
                out.push((f.path(), f.metadata().unwrap().len()));
            }
        }
    }
    out
}

fn set_mtime(path: &Path, secs_ago: u64) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(secs_ago)).unwrap();
}

#[test]
fn write_read_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(dir.path(), 1 << 20).unwrap();
    let e = entry(1000, 3);
    disk.write(&key(1), &e).unwrap();
    let path = disk.path_of(&key(1));
    assert!(path.starts_with(dir.path()));
    assert!(path.ends_with(key(1).shard_path()));
    // One block for the file, one for each of its two shard directories, three of fixed overhead.
    assert!(fs::metadata(&path).unwrap().len() < 4096);
    assert_eq!(disk.total_bytes(), 6 * 4096);
    assert_eq!(disk.entry_count(), 1);
    let back = disk.read(&key(1)).unwrap().expect("hit");
    // Written without a source, read back as its own source (what the tier treated it as).
    assert_eq!(back.meta(), e.clone().with_source(key(1)).meta());
    assert_eq!(back.body(), e.body());
    assert!(disk.read(&key(2)).unwrap().is_none());
    // No temp files left behind by a successful write.
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    assert!(disk.remove(&key(1)));
    assert!(!path.exists());
    assert!(!disk.remove(&key(1)));
    assert!(!path.parent().unwrap().exists(), "empty shard directory kept");
    assert_eq!(disk.entry_count(), 0);
    assert_eq!(disk.total_bytes(), 3 * 4096);
    assert!(disk.read(&key(1)).unwrap().is_none());
}

#[test]
fn truncated_or_flipped_file_is_deleted_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(dir.path(), 1 << 20).unwrap();
    for (i, damage) in [10usize, 60, 150, 900].into_iter().enumerate() {
        let k = key(i as u32);
        disk.write(&k, &entry(1000, 1)).unwrap();
        let path = disk.path_of(&k);
        let mut bytes = fs::read(&path).unwrap();
        if i % 2 == 0 {
            bytes.truncate(damage);
        } else {
            bytes[damage] ^= 0x40;
        }
        fs::write(&path, bytes).unwrap();
        assert!(disk.read(&k).unwrap().is_none(), "damage {damage} served");
        assert!(!path.exists(), "corrupt file kept");
        assert_eq!(disk.entry_count(), 0);
        assert_eq!(disk.total_bytes(), 3 * 4096);
    }
}

#[test]
fn reopen_rebuilds_index_and_keeps_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (count, bytes) = {
        let disk = DiskTier::open(dir.path(), 1 << 20).unwrap();
        for i in 0..7 {
            disk.write(&key(i), &entry(500 + i as usize, i as u8)).unwrap();
        }
        (disk.entry_count(), disk.total_bytes())
    };
    assert_eq!(count, 7);
    let disk = DiskTier::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(disk.entry_count(), count);
    assert_eq!(disk.total_bytes(), bytes);
    for i in 0..7 {
        let e = disk.read(&key(i)).unwrap().expect("kept across reopen");
        assert_eq!(e.body().len(), 500 + i as usize);
    }
}

#[test]
fn budget_is_respected_and_recently_read_survives() {
    let dir = tempfile::tempdir().unwrap();
    let capacity = 200_000;
    let disk = DiskTier::open(dir.path(), capacity).unwrap();
    for i in 0..60 {
        disk.write(&key(i), &entry(1000, 9)).unwrap();
        if i % 5 == 0 {
            assert!(disk.read(&key(0)).unwrap().is_some(), "hot key evicted at {i}");
        }
        assert!(disk.total_bytes() <= capacity);
    }
    assert!(disk.read(&key(1)).unwrap().is_none(), "oldest entry kept");
    assert!(disk.read(&key(59)).unwrap().is_some());
    // The index matches what is on disk.
    let files = shard_files(dir.path());
    assert_eq!(files.len(), disk.entry_count());
    assert!(disk.entry_count() > 10);
}

#[test]
fn entry_larger_than_budget_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(dir.path(), 40_000).unwrap();
    disk.write(&key(1), &entry(1000, 1)).unwrap();
    disk.write(&key(2), &entry(30_000, 1)).unwrap();
    assert!(disk.read(&key(2)).unwrap().is_none());
    assert!(disk.read(&key(1)).unwrap().is_some(), "small entry evicted");
}

#[test]
fn open_cleans_leftovers_and_invalid_names() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    {
        let disk = DiskTier::open(root, 1 << 20).unwrap();
        disk.write(&key(1), &entry(100, 1)).unwrap();
    }
    let tmp = root.join("tmp");
    let stale = tmp.join("dead.123.0.tmp");
    let fresh = tmp.join("live.456.0.tmp");
    fs::write(&stale, b"half a file").unwrap();
    fs::write(&fresh, b"another process writing").unwrap();
    set_mtime(&stale, 3600);
    // Names that look like ours but are not valid entries.
    let good = root.join(key(1).shard_path());
    let shard = good.parent().unwrap();
    let junk = shard.join("not-a-key");
    let misplaced = shard.join(key(2).to_hex());
    fs::write(&junk, b"x").unwrap();
    fs::copy(&good, &misplaced).unwrap();
    // Not ours: left alone.
    let foreign = root.join("README");
    fs::write(&foreign, b"hello").unwrap();

    let disk = DiskTier::open(root, 1 << 20).unwrap();
    assert!(!stale.exists(), "crash leftover kept");
    assert!(fresh.exists(), "another writer's temp file deleted");
    assert!(!junk.exists() && !misplaced.exists());
    assert!(foreign.exists());
    assert_eq!(disk.entry_count(), 1);
    assert!(disk.read(&key(1)).unwrap().is_some());
}

#[test]
fn reopen_with_smaller_budget_evicts_by_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let size = {
        let disk = DiskTier::open(dir.path(), 1 << 20).unwrap();
        for i in 0..3 {
            disk.write(&key(i), &entry(1000, 1)).unwrap();
        }
        // Make key 2 the oldest and key 0 the newest, against write order.
        for (i, ago) in [(0, 10), (1, 100), (2, 1000)] {
            set_mtime(&disk.path_of(&key(i)), ago);
        }
        // Each entry costs the same (a block and, almost surely, two directories of its own).
        let base = 3 * 4096;
        base + (disk.total_bytes() - base) / 3
    };
    let disk = DiskTier::open(dir.path(), size * 2 - 3 * 4096).unwrap();
    assert_eq!(disk.entry_count(), 2);
    assert_eq!(disk.evictions(), 1, "the eviction is counted (mirage_cache_evictions_total)");
    assert!(!disk.path_of(&key(2)).exists());
    assert!(disk.read(&key(0)).unwrap().is_some());
    assert!(disk.read(&key(1)).unwrap().is_some());
}

#[test]
fn read_hit_refreshes_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(dir.path(), 1 << 20).unwrap();
    disk.write(&key(1), &entry(10, 1)).unwrap();
    let path = disk.path_of(&key(1));
    set_mtime(&path, 86_400);
    disk.read(&key(1)).unwrap().unwrap();
    let age = SystemTime::now().duration_since(fs::metadata(&path).unwrap().modified().unwrap()).unwrap_or_default();
    assert!(age < Duration::from_secs(60), "mtime not refreshed: {age:?}");
}

#[test]
fn second_instance_adopts_files_it_did_not_write() {
    // Stands in for the server and the warm command sharing one directory.
    let dir = tempfile::tempdir().unwrap();
    let a = DiskTier::open(dir.path(), 1 << 20).unwrap();
    let b = DiskTier::open(dir.path(), 1 << 20).unwrap();
    a.write(&key(1), &entry(100, 1)).unwrap();
    assert_eq!(b.entry_count(), 0);
    assert!(b.read(&key(1)).unwrap().is_some());
    assert_eq!(b.entry_count(), 1);
    assert_eq!(b.total_bytes(), a.total_bytes());
}

#[test]
fn open_fails_when_root_is_under_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    fs::write(&file, b"x").unwrap();
    let err = DiskTier::open(&file.join("cache"), 1 << 20).unwrap_err();
    assert!(err.to_string().contains("plain-file"), "{err}");
}

#[test]
fn many_tiny_entries_stay_within_the_budget_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::open(dir.path(), 2 << 20).unwrap();
    for i in 0..600 {
        disk.write(&key(i), &entry(100, 1)).unwrap();
    }
    assert!(disk.total_bytes() <= 2 << 20, "{}", disk.total_bytes());
    assert!(disk.entry_count() < 300, "{}", disk.entry_count());
}

#[test]
fn concurrent_writers_stay_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let disk = std::sync::Arc::new(DiskTier::open(dir.path(), 2 << 20).unwrap());
    let threads: Vec<_> = (0..8u32)
        .map(|t| {
            let disk = disk.clone();
            std::thread::spawn(move || {
                for i in 0..150 {
                    disk.write(&key(t * 1000 + i), &entry(100, 1)).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let files = shard_files(dir.path()).len();
    assert!(disk.total_bytes() <= 2 << 20, "{}", disk.total_bytes());
    assert_eq!(files, disk.entry_count());
}
