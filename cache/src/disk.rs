//! Disk tier: one verified file per entry under `root/ab/cd/<hex>`, written via temp file,
//! fsync and rename, and kept within a byte budget by an LRU index.
//!
//! Every method blocks; async callers go through `tokio::task::spawn_blocking`. Several
//! processes (the server and the `warm` command) may share one directory: readers only ever
//! see whole files because a file appears by `rename`, and a file this process did not index
//! is adopted the first time it is read.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::evict::LruIndex;
use crate::key::CacheKey;
use crate::meta::{Entry, decode, encode_header};

/// Largest file we write or read back; a bigger file cannot be ours and is deleted unread.
const MAX_FILE_LEN: u64 = 512 * 1024 * 1024;
/// Temp files older than this at open are leftovers of a crash. Younger ones may belong to
/// another live process writing the same directory, so they are left alone.
const STALE_TMP_AGE: Duration = Duration::from_secs(60);
const TMP_DIR: &str = "tmp";

/// A disk-tier failure, with the path it happened on.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// An I/O call failed.
    #[error("disk cache I/O error at {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DiskError + '_ {
    move |source| DiskError::Io { path: path.to_path_buf(), source }
}

/// Counts reported by `open` about what it found.
#[derive(Debug, Default)]
struct Rebuild {
    indexed: u64,
    evicted: u64,
    removed_tmp: u64,
    removed_invalid: u64,
}

/// The disk tier. Share it behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct DiskTier {
    root: PathBuf,
    tmp_dir: PathBuf,
    // A std Mutex: every critical section is a few map operations; file I/O happens outside.
    index: Mutex<LruIndex>,
    /// Makes temp names unique per call within this process (the pid covers other processes).
    tmp_counter: AtomicU64,
}

impl DiskTier {
    /// Opens (creating if needed) a cache rooted at `root` holding at most `capacity_bytes`:
    /// removes crash leftovers, rebuilds the LRU index from file mtimes and evicts down to
    /// the budget.
    pub fn open(root: &Path, capacity_bytes: u64) -> Result<DiskTier, DiskError> {
        let tmp_dir = root.join(TMP_DIR);
        fs::create_dir_all(&tmp_dir).map_err(io_err(&tmp_dir))?;
        let tier = DiskTier {
            root: root.to_path_buf(),
            tmp_dir,
            index: Mutex::new(LruIndex::new(capacity_bytes)),
            tmp_counter: AtomicU64::new(0),
        };
        let mut stats = Rebuild { removed_tmp: tier.clean_tmp()?, ..Rebuild::default() };
        let mut found = tier.scan(&mut stats)?;
        // Oldest mtime first, so the least recently used entries are evicted first.
        found.sort_by_key(|&(mtime, key, _)| (mtime, key));
        let mut victims = Vec::new();
        {
            let mut index = tier.lock();
            for (_, key, size) in found {
                victims.extend(index.insert(key, size));
            }
            stats.indexed = index.len() as u64;
        }
        stats.evicted = victims.len() as u64;
        for key in victims {
            tier.delete_file(&key);
        }
        tracing::info!(
            root = %root.display(),
            entries = stats.indexed,
            bytes = tier.total_bytes(),
            capacity = capacity_bytes,
            evicted = stats.evicted,
            removed_tmp = stats.removed_tmp,
            removed_invalid = stats.removed_invalid,
            "disk cache opened"
        );
        Ok(tier)
    }

    fn lock(&self) -> MutexGuard<'_, LruIndex> {
        // The index stays consistent even if a holder panicked (no method panics midway).
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn clean_tmp(&self) -> Result<u64, DiskError> {
        // The wall clock, not the pipeline's: file mtimes are written by the OS on the wall clock, so only it can
        // tell a crash leftover from a file another process is writing now.
        let now = SystemTime::now();
        let mut removed = 0;
        for dirent in fs::read_dir(&self.tmp_dir).map_err(io_err(&self.tmp_dir))? {
            let Ok(dirent) = dirent else { continue };
            let Ok(meta) = dirent.metadata() else {
                continue;
            };
            let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
            if meta.is_file() && age >= STALE_TMP_AGE && fs::remove_file(dirent.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Lists `root/ab/cd/<hex>` files as (mtime, key, size), deleting files in shard
    /// directories whose names are not valid keys for that shard.
    fn scan(&self, stats: &mut Rebuild) -> Result<Vec<(SystemTime, CacheKey, u64)>, DiskError> {
        let mut found = Vec::new();
        for level1 in shard_dirs(&self.root)? {
            for level2 in shard_dirs(&level1)? {
                let Ok(files) = fs::read_dir(&level2) else {
                    continue;
                };
                for dirent in files.flatten() {
                    let path = dirent.path();
                    let Ok(meta) = dirent.metadata() else {
                        continue;
                    };
                    let key = dirent.file_name().to_str().and_then(CacheKey::from_hex);
                    let valid = key.filter(|k| {
                        meta.is_file() && meta.len() <= MAX_FILE_LEN && self.root.join(k.shard_path()) == path
                    });
                    if let Some(key) = valid {
                        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                        found.push((mtime, key, meta.len()));
                    } else if meta.is_file() && fs::remove_file(&path).is_ok() {
                        // Inside our shard tree but not a valid entry: a stray or misplaced file.
                        stats.removed_invalid += 1;
                    }
                }
            }
        }
        Ok(found)
    }

    /// Reads and verifies the entry for `key`. A missing file is `Ok(None)`; a corrupt one is
    /// deleted, logged and also `Ok(None)`, so bad bytes are never served.
    pub fn read(&self, key: &CacheKey) -> Result<Option<Entry>, DiskError> {
        let path = self.path_of(key);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if is_absent(&e) => {
                self.lock().remove(key);
                return Ok(None);
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let len = file.metadata().map_err(io_err(&path))?.len();
        if len > MAX_FILE_LEN {
            self.discard(key, &path, "file too large");
            return Ok(None);
        }
        // One read into a buffer sized from the metadata; `take` bounds it even if the file
        // grew in between (it cannot legitimately, files are replaced by rename).
        let mut buf = Vec::with_capacity(len as usize);
        (&mut file).take(MAX_FILE_LEN + 1).read_to_end(&mut buf).map_err(io_err(&path))?;
        let size = buf.len() as u64;
        let entry = match decode(key, Bytes::from(buf)) {
            Ok(entry) => entry,
            Err(corrupt) => {
                self.discard(key, &path, corrupt.reason);
                return Ok(None);
            }
        };
        // Best effort: the mtime is the LRU order a restart rebuilds from. The wall clock on purpose: only the
        // order matters, and it must agree with the mtimes the OS gives files written by any process; no
        // freshness decision reads it (expiry lives in the entry header, judged by the caller's clock).
        let _ = file.set_modified(SystemTime::now());
        let victims = {
            let mut index = self.lock();
            if index.touch(key) {
                Vec::new()
            } else {
                // Written by another process (or lost by a race): adopt it into the budget.
                index.insert(*key, size)
            }
        };
        self.delete_victims(key, victims);
        Ok(Some(entry))
    }

    fn discard(&self, key: &CacheKey, path: &Path, reason: &str) {
        tracing::warn!(path = %path.display(), reason, "deleting corrupt disk cache entry");
        self.lock().remove(key);
        let _ = fs::remove_file(path);
    }

    /// Atomically stores `entry` under `key` (temp file, fsync, rename), then evicts older
    /// entries beyond the budget. An entry larger than the whole budget is skipped.
    pub fn write(&self, key: &CacheKey, entry: &Entry) -> Result<(), DiskError> {
        let header = encode_header(key, entry.meta());
        let size = header.len() as u64 + entry.body().len() as u64;
        if size > self.lock().capacity() || size > MAX_FILE_LEN {
            tracing::debug!(key = %key, size, "entry larger than disk cache budget; not written");
            return Ok(());
        }
        let seq = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp_dir.join(format!("{}.{}.{}.tmp", key.to_hex(), std::process::id(), seq));
        let dest = self.path_of(key);
        if let Err(e) = write_and_rename(&tmp, &dest, &header, entry.body()) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let victims = self.lock().insert(*key, size);
        self.delete_victims(key, victims);
        Ok(())
    }

    fn delete_victims(&self, just_used: &CacheKey, victims: Vec<CacheKey>) {
        for victim in victims {
            if victim == *just_used {
                tracing::debug!(key = %victim, "entry alone exceeds disk budget; dropped");
            }
            self.delete_file(&victim);
        }
    }

    fn delete_file(&self, key: &CacheKey) {
        let path = self.path_of(key);
        match fs::remove_file(&path) {
            Err(e) if !is_absent(&e) => {
                tracing::debug!(path = %path.display(), error = %e, "could not delete entry");
            }
            _ => {}
        }
    }

    /// Deletes the entry for `key`, if any.
    pub fn remove(&self, key: &CacheKey) {
        self.lock().remove(key);
        self.delete_file(key);
    }

    /// Bytes currently indexed (file sizes, header included).
    pub fn total_bytes(&self) -> u64 {
        self.lock().total_bytes()
    }

    /// Number of indexed entries.
    pub fn entry_count(&self) -> usize {
        self.lock().len()
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the entry for `key` lives: `root/ab/cd/<hex>`.
    pub fn path_of(&self, key: &CacheKey) -> PathBuf {
        self.root.join(key.shard_path())
    }
}

/// NotFound, or a path component that is not a directory: either way there is no entry.
fn is_absent(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

fn write_and_rename(tmp: &Path, dest: &Path, header: &[u8], body: &[u8]) -> Result<(), DiskError> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(tmp).map_err(io_err(tmp))?;
    file.write_all(header).map_err(io_err(tmp))?;
    file.write_all(body).map_err(io_err(tmp))?;
    // Data must be durable before the rename makes it visible, or a crash could leave a
    // complete-looking name over incomplete bytes.
    file.sync_all().map_err(io_err(tmp))?;
    drop(file);
    let Some(dir) = dest.parent() else {
        return Err(io_err(dest)(io::Error::other("entry path has no parent")));
    };
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    fs::rename(tmp, dest).map_err(io_err(dest))?;
    // Best effort: persist the directory entry too; not all filesystems allow it.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Subdirectories of `dir` named by two lowercase hex digits (one shard level).
fn shard_dirs(dir: &Path) -> Result<Vec<PathBuf>, DiskError> {
    let mut out = Vec::new();
    for dirent in fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
        let name = dirent.file_name();
        let is_shard = name
            .to_str()
            .is_some_and(|n| n.len() == 2 && n.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        if is_shard && dirent.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(dirent.path());
        }
    }
    Ok(out)
}
