//! Disk tier: one verified file per entry under `root/ab/cd/<hex>`, written via temp file,
//! fsync and rename, and kept within a byte budget by an index of what the files really cost.
//!
//! Every method blocks; async callers go through `tokio::task::spawn_blocking`. Several
//! processes (the server and the `warm` command) may share one directory: readers only ever
//! see whole files because a file appears by `rename`, and a file this process did not index
//! is adopted the first time it is read.
//!
//! Reads need no index: the path comes from the key and the header's checksum vouches for the bytes. So the
//! tier answers as soon as it is opened (`open_unindexed`) while `build_index` scans the directory, which takes
//! minutes with millions of entries.
//!
//! Eviction with several processes: each process's index knows the files it wrote or read, plus what its last
//! scan found; it misses what the others wrote since, and still lists what they deleted. Evicting on that view
//! alone could delete another process's entries while the directory is under budget (an index that still
//! counts files already gone), or let the directory overrun (one that misses new files). So an index over budget
//! never evicts directly: it first re-scans the directory (`reconcile`), which measures what is really there
//! from every process, and evicts only if that measurement is over budget, and then down to a low-water mark
//! (95 %), so that the next re-scan is 5 % of the budget of writes away. One re-scan runs at a time (with a
//! million entries it takes seconds); writers meanwhile go on, and the directory may overrun its budget by up to
//! 5 % more; a writer that finds it further over waits for the re-scan and checks again, so writers cannot
//! outrun eviction.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::evict::{Accounting, LruIndex, Victim};
use crate::key::CacheKey;
use crate::meta::{Entry, SOURCE_PROBE_LEN, decode, encode_header, probe_source};

/// Largest file we write or read back; a bigger file cannot be ours and is deleted unread.
pub(crate) const MAX_FILE_LEN: u64 = 512 * 1024 * 1024;
/// Temp files older than this at open are leftovers of a crash. Younger ones may belong to
/// another live process writing the same directory, so they are left alone.
const STALE_TMP_AGE: Duration = Duration::from_secs(60);
const TMP_DIR: &str = "tmp";
/// After a re-scan over budget, evict down to this share of the budget.
const LOW_WATER_PERCENT: u64 = 95;

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

/// Now on the wall clock, in nanoseconds: the index's recency ticks, on the scale of file mtimes.
fn now_tick() -> u64 {
    to_tick(SystemTime::now())
}

fn to_tick(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What a scan of the directory found.
#[derive(Debug, Default)]
struct Scan {
    /// (key, length, mtime tick, source key: filled in later, for the files the index does not know) of every
    /// entry file.
    found: Vec<(CacheKey, u64, u64, Option<CacheKey>)>,
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
    /// Set once `build_index` has scanned the directory; until then the index is partial and evicts nothing.
    indexed: AtomicBool,
    /// Held while a re-scan runs (one at a time).
    reconciling: Mutex<()>,
    /// Entries deleted to keep within the budget (a metric; never reset).
    evictions: AtomicU64,
}

impl DiskTier {
    /// Opens (creating if needed) a cache rooted at `root` holding at most `capacity_bytes`:
    /// removes crash leftovers, builds the index from the files found and evicts down to
    /// the budget, all before returning.
    pub fn open(root: &Path, capacity_bytes: u64) -> Result<DiskTier, DiskError> {
        let tier = DiskTier::open_unindexed(root, capacity_bytes)?;
        tier.build_index()?;
        Ok(tier)
    }

    /// Opens the cache without scanning it: reads and writes work at once; call `build_index` (in the
    /// background) to learn what is already stored and enforce the budget on it.
    pub fn open_unindexed(root: &Path, capacity_bytes: u64) -> Result<DiskTier, DiskError> {
        let tmp_dir = root.join(TMP_DIR);
        fs::create_dir_all(&tmp_dir).map_err(io_err(&tmp_dir))?;
        let block = block_size(root);
        let tier = DiskTier {
            root: root.to_path_buf(),
            tmp_dir,
            index: Mutex::new(LruIndex::new(capacity_bytes, Accounting::blocks(block))),
            tmp_counter: AtomicU64::new(0),
            indexed: AtomicBool::new(false),
            reconciling: Mutex::new(()),
            evictions: AtomicU64::new(0),
        };
        let removed_tmp = tier.clean_tmp()?;
        if removed_tmp > 0 {
            tracing::info!(root = %root.display(), removed_tmp, "removed temp files left by a crash");
        }
        Ok(tier)
    }

    /// Scans the directory into the index, marks the tier indexed and evicts down to the budget if needed.
    pub fn build_index(&self) -> Result<(), DiskError> {
        let result = {
            let _one_at_a_time = self.reconciling.lock().unwrap_or_else(PoisonError::into_inner);
            if self.is_indexed() {
                // A purge that could not wait built it first.
                return Ok(());
            }
            let result = self.reconcile_and_evict(true);
            self.indexed.store(true, Ordering::SeqCst);
            result
        };
        let (entries, bytes, capacity) = {
            let index = self.lock();
            (index.len(), index.total_bytes(), index.capacity())
        };
        match &result {
            Ok((removed_invalid, evicted)) => tracing::info!(
                root = %self.root.display(),
                entries,
                bytes,
                capacity,
                evicted,
                removed_invalid,
                "disk cache indexed"
            ),
            Err(error) => tracing::warn!(root = %self.root.display(), %error, "disk cache index incomplete"),
        }
        result.map(|_| ())
    }

    /// True once `build_index` has run.
    pub fn is_indexed(&self) -> bool {
        self.indexed.load(Ordering::SeqCst)
    }

    /// Re-scans the directory, merges what it found into the index and, when the directory is over budget,
    /// evicts down to the low-water mark (the full budget on the first build). Returns (invalid files removed,
    /// entries evicted).
    fn reconcile_and_evict(&self, first: bool) -> Result<(u64, u64), DiskError> {
        let started = now_tick();
        let mut scan = self.scan()?;
        // The source of each file the index does not know yet, from its first bytes, outside the lock: at
        // start-up that is every file, later only what other processes wrote.
        let unknown: HashSet<CacheKey> = {
            let index = self.lock();
            scan.found.iter().map(|found| found.0).filter(|key| !index.contains(key)).collect()
        };
        for (key, _, _, source) in &mut scan.found {
            if unknown.contains(key) {
                *source = self.read_source(key);
            }
        }
        let victims = {
            let mut index = self.lock();
            index.reconcile(scan.found, started);
            let capacity = index.capacity();
            if index.total_bytes() <= capacity {
                Vec::new()
            } else if first {
                index.evict_to(capacity)
            } else {
                index.evict_to(capacity / 100 * LOW_WATER_PERCENT)
            }
        };
        let evicted = victims.len() as u64;
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
        if evicted > 0 && !first {
            tracing::debug!(evicted, "disk cache over budget after a re-scan; evicted");
        }
        for victim in victims {
            self.delete_victim(victim);
        }
        Ok((scan.removed_invalid, evicted))
    }

    /// Called when the index is over budget: re-measures and evicts (see the module docs), unless the index
    /// is still being built (it evicts when done) or the re-scan this waited for brought it under budget.
    fn enforce_budget(&self) {
        if !self.is_indexed() {
            return;
        }
        let _one_at_a_time = match self.reconciling.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                if !self.far_over_budget() {
                    return;
                }
                self.reconciling.lock().unwrap_or_else(PoisonError::into_inner)
            }
        };
        if !self.over_budget() {
            return;
        }
        if let Err(error) = self.reconcile_and_evict(false) {
            tracing::debug!(%error, "disk cache re-scan failed");
        }
    }

    fn over_budget(&self) -> bool {
        let index = self.lock();
        index.total_bytes() > index.capacity()
    }

    /// Over budget by more than the low-water margin: too far to keep writing without waiting for eviction.
    fn far_over_budget(&self) -> bool {
        let index = self.lock();
        let capacity = index.capacity();
        index.total_bytes() > capacity.saturating_add(capacity / 100 * (100 - LOW_WATER_PERCENT))
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

    /// Lists `root/ab/cd/<hex>` files, deleting files in shard directories whose names are not valid keys for
    /// that shard.
    fn scan(&self) -> Result<Scan, DiskError> {
        let mut scan = Scan::default();
        for level1 in shard_dirs(&self.root)? {
            let Ok(level2s) = shard_dirs(&level1) else { continue };
            for level2 in level2s {
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
                        scan.found.push((key, meta.len(), to_tick(mtime), None));
                    } else if meta.is_file() && fs::remove_file(&path).is_ok() {
                        // Inside our shard tree but not a valid entry: a stray or misplaced file.
                        scan.removed_invalid += 1;
                    }
                }
            }
        }
        Ok(scan)
    }

    /// The source key in the header of `key`'s file (see `meta::probe_source`), reading only its first bytes.
    fn read_source(&self, key: &CacheKey) -> Option<CacheKey> {
        let mut prefix = [0u8; SOURCE_PROBE_LEN];
        File::open(self.path_of(key)).and_then(|mut file| file.read_exact(&mut prefix)).ok()?;
        probe_source(key, &prefix)
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
        let over = {
            let mut index = self.lock();
            if !index.touch(key, now_tick()) {
                // Written by another process, not indexed yet, or lost by a race: adopt it into the budget.
                index.record(*key, size, now_tick());
                if let Some(source) = entry.meta().source() {
                    index.link_source(*key, source);
                }
            }
            index.total_bytes() > index.capacity()
        };
        if over {
            self.enforce_budget();
        }
        Ok(Some(entry))
    }

    /// Marks `keys` as used now (memory hits reported by the touch queue): moves them up in the index and
    /// refreshes their mtimes, which are the order a restart rebuilds. A key whose file is gone is skipped.
    pub fn touch_many(&self, keys: &[CacheKey]) {
        let now = now_tick();
        {
            let mut index = self.lock();
            for key in keys {
                index.touch(key, now);
            }
        }
        let time = SystemTime::now();
        for key in keys {
            if let Ok(file) = File::open(self.path_of(key)) {
                let _ = file.set_modified(time);
            }
        }
    }

    fn discard(&self, key: &CacheKey, path: &Path, reason: &str) {
        tracing::warn!(path = %path.display(), reason, "deleting corrupt disk cache entry");
        self.lock().remove(key);
        let _ = fs::remove_file(path);
    }

    /// Atomically stores `entry` under `key` (temp file, fsync, rename), then, if the index is over budget,
    /// re-measures the directory and evicts the least valuable entries. An entry that alone would take more
    /// than the whole budget is skipped.
    pub fn write(&self, key: &CacheKey, entry: &Entry) -> Result<(), DiskError> {
        let header = encode_header(key, entry.meta());
        let size = header.len() as u64 + entry.body().len() as u64;
        let fits = {
            let index = self.lock();
            index.accounting().file_cost(size) + index.accounting().base_bytes + 2 * index.accounting().dir_bytes
                <= index.capacity()
        };
        if !fits || size > MAX_FILE_LEN {
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
        {
            let mut index = self.lock();
            index.record(*key, size, now_tick());
            index.link_source(*key, entry.meta().source().unwrap_or(*key));
        }
        if self.over_budget() {
            self.enforce_budget();
        }
        Ok(())
    }

    /// Deletes a victim's file and the shard directories it left empty. A directory another writer has just
    /// put a file in is not empty, so `remove_dir` leaves it; a writer that finds its directory gone recreates
    /// it (see `write_and_rename`).
    /// Returns whether a file was deleted.
    fn delete_victim(&self, victim: Victim) -> bool {
        let path = self.path_of(&victim.key);
        let deleted = match fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) => {
                if !is_absent(&e) {
                    tracing::debug!(path = %path.display(), error = %e, "could not delete entry");
                }
                false
            }
        };
        let mut dir = path.parent();
        for _ in 0..victim.empty_dirs {
            let Some(d) = dir else { break };
            if fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        deleted
    }

    /// Deletes the entry for `key`, if any; returns whether there was a file to delete.
    pub fn remove(&self, key: &CacheKey) -> bool {
        let removed = self.lock().remove(key);
        match removed {
            Some((victim, _)) => self.delete_victim(victim),
            None => self.delete_victim(Victim { key: *key, empty_dirs: 0 }),
        }
    }

    /// Deletes the original `source` and every variant the index links to it; returns the keys whose files were
    /// deleted. Costs the number of those variants, not a scan: the index keeps the links, learnt from every
    /// write and read and, at start-up, from each file's header. Before the first index build is done it would
    /// miss variants not yet scanned, so it builds the index first if needed (waiting for a build under way).
    ///
    /// Variants written since the last scan by another process sharing the directory (`mirage warm`) are known
    /// once this process reads them or re-scans; a purge run by that process, or offline, finds them.
    pub fn purge_source(&self, source: &CacheKey) -> Vec<CacheKey> {
        if !self.is_indexed() {
            let _ = self.build_index();
        }
        let mut keys = self.lock().variants_of(source);
        keys.push(*source);
        keys.retain(|key| self.remove(key));
        keys
    }

    /// Checks the disk answers at all: writes, reads back and deletes a small file in the temp directory.
    pub fn probe(&self) -> Result<(), DiskError> {
        let seq = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp_dir.join(format!("probe.{}.{}.tmp", std::process::id(), seq));
        let result = fs::write(&path, b"probe").and_then(|()| fs::read(&path)).map_err(io_err(&path));
        let _ = fs::remove_file(&path);
        result.map(|_| ())
    }

    /// Bytes currently charged: entry files rounded up to whole blocks, shard directories and fixed overhead.
    pub fn total_bytes(&self) -> u64 {
        self.lock().total_bytes()
    }

    /// The byte budget.
    pub fn capacity(&self) -> u64 {
        self.lock().capacity()
    }

    /// Entries evicted so far to keep within the byte budget.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
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

/// The file system's allocation unit under `root` (st_blksize; 4 KiB where it cannot be read).
pub(crate) fn block_size(root: &Path) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(root).map_or(4096, |meta| meta.blksize())
    }
    #[cfg(not(unix))]
    {
        let _ = root;
        4096
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
    if let Err(error) = fs::rename(tmp, dest) {
        // Eviction removes empty shard directories: one may have gone between create_dir_all and rename.
        if error.kind() != io::ErrorKind::NotFound {
            return Err(io_err(dest)(error));
        }
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        fs::rename(tmp, dest).map_err(io_err(dest))?;
    }
    // Best effort: persist the directory entry too; not all filesystems allow it.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Subdirectories of `dir` named by two lowercase hex digits (one shard level).
pub(crate) fn shard_dirs(dir: &Path) -> Result<Vec<PathBuf>, DiskError> {
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
