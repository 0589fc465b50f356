//! Offline inspection of a disk cache directory, for `mirage cache stats` and `mirage cache verify`: walks the
//! entry files without an index and without a running server's help, reads headers only (stats) or whole files
//! (verify), and deletes a corrupt file only while it is still the very file that was read.
//!
//! Safe beside a running server or `warm`: files appear by `rename` and are never rewritten in place, so a file
//! read whole is a consistent snapshot; a writer replacing it meanwhile puts a new inode at the path, which
//! [`delete_if_unchanged`] sees and leaves alone. The walk tolerates files and directories vanishing under it
//! (eviction), and skips what is not an entry (the temp directory, the budget file, stray names).

use std::fs::{self, File};
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::disk::{MAX_FILE_LEN, block_size, shard_dirs};
use crate::evict::Accounting;
use crate::key::CacheKey;
use crate::meta::{CorruptEntry, Entry, EntryMeta, PREAMBLE_LEN, decode, decode_header, head_len};

/// One entry file found in the shard tree.
#[derive(Debug, Clone)]
pub struct EntryFile {
    /// The key its name spells.
    pub key: CacheKey,
    /// `root/ab/cd/<hex>`.
    pub path: PathBuf,
    /// Its length when listed.
    pub len: u64,
}

/// Every entry file under `root`, shard directory by shard directory: only names that are valid keys for their
/// shard. Lazy, so memory stays flat with millions of entries. A root that cannot be read is an error; a shard
/// that vanishes while walking is skipped.
pub fn entry_files(root: &Path) -> io::Result<impl Iterator<Item = EntryFile>> {
    let level1 = shard_dirs(root).map_err(|error| io::Error::other(error.to_string()))?;
    let root = root.to_path_buf();
    let files = level1
        .into_iter()
        .flat_map(|level1| shard_dirs(&level1).unwrap_or_default())
        .flat_map(|level2| fs::read_dir(level2).into_iter().flatten().flatten())
        .filter_map(move |dirent| {
            let path = dirent.path();
            let key = dirent.file_name().to_str().and_then(CacheKey::from_hex)?;
            let meta = dirent.metadata().ok()?;
            let valid = meta.is_file() && root.join(key.shard_path()) == path;
            valid.then_some(EntryFile { key, path, len: meta.len() })
        });
    Ok(files)
}

/// How the disk tier's budget charges for files in `root` (its block size, directories, fixed overhead), so a
/// report can give the bytes the budget counts.
pub fn accounting(root: &Path) -> Accounting {
    Accounting::blocks(block_size(root))
}

/// What reading one file found.
#[derive(Debug)]
pub enum Header {
    /// A valid header (and, for [`verify`], a valid body).
    Valid(Box<EntryMeta>),
    /// A check failed: the file must not be served.
    Corrupt(CorruptEntry),
    /// The file went away before it could be read (evicted or purged meanwhile).
    Gone,
}

/// Reads and checks only the header of `file` (a few hundred bytes), and that the file is as long as the header
/// says. The body's digest is not checked: that is [`verify`]'s job.
pub fn read_header(file: &EntryFile) -> io::Result<Header> {
    let mut handle = match File::open(&file.path) {
        Ok(handle) => handle,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Header::Gone),
        Err(error) => return Err(error),
    };
    let len = handle.metadata()?.len();
    let mut preamble = [0u8; PREAMBLE_LEN];
    if let Err(error) = handle.read_exact(&mut preamble) {
        return short_or(error, "file shorter than preamble");
    }
    let head_len = match head_len(&preamble) {
        Ok(head_len) => head_len,
        Err(corrupt) => return Ok(Header::Corrupt(corrupt)),
    };
    let mut head = preamble.to_vec();
    head.resize(head_len, 0);
    if let Err(error) = handle.read_exact(&mut head[PREAMBLE_LEN..]) {
        return short_or(error, "header runs past end of file");
    }
    Ok(match decode_header(&file.key, &head) {
        Ok(meta) if (head_len as u64).saturating_add(meta.body_len()) != len => {
            Header::Corrupt(CorruptEntry { reason: "body length does not match file size" })
        }
        Ok(meta) => Header::Valid(Box::new(meta)),
        Err(corrupt) => Header::Corrupt(corrupt),
    })
}

/// Reads the entry for `key` under `root` whole and checks it as a server read does, changing nothing: no
/// index, no mtime touched, a corrupt file left for `verify` or the server to deal with. `Ok(None)` when there is
/// no such file or it is corrupt.
pub fn read_entry(root: &Path, key: &CacheKey) -> io::Result<Option<Entry>> {
    let mut handle = match File::open(root.join(key.shard_path())) {
        Ok(handle) => handle,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut buf = Vec::new();
    (&mut handle).take(MAX_FILE_LEN + 1).read_to_end(&mut buf)?;
    Ok(decode(key, Bytes::from(buf)).ok())
}

/// An unexpected end of file is a corrupt (truncated) entry; any other error is an I/O failure.
fn short_or(error: io::Error, reason: &'static str) -> io::Result<Header> {
    if error.kind() == io::ErrorKind::UnexpectedEof { Ok(Header::Corrupt(CorruptEntry { reason })) } else { Err(error) }
}

/// What [`verify`] did with one file.
#[derive(Debug)]
pub enum Verified {
    /// Header, check and body digest are right.
    Valid(Entry),
    /// A check failed and the file was deleted.
    Deleted(CorruptEntry),
    /// A check failed, but the path now holds another file (a writer replaced it meanwhile): left alone.
    Replaced(CorruptEntry),
    /// The file went away before or while it was read.
    Gone,
}

/// Reads `file` whole and checks header, header check and body digest exactly as a server read does; a corrupt
/// file is deleted if the path still names the file that was read.
pub fn verify(file: &EntryFile) -> io::Result<Verified> {
    let mut handle = match File::open(&file.path) {
        Ok(handle) => handle,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Verified::Gone),
        Err(error) => return Err(error),
    };
    let opened = handle.metadata()?;
    let mut buf = Vec::with_capacity(usize::try_from(opened.len().min(MAX_FILE_LEN)).unwrap_or(0));
    (&mut handle).take(MAX_FILE_LEN + 1).read_to_end(&mut buf)?;
    let corrupt = match decode(&file.key, Bytes::from(buf)) {
        Ok(entry) => return Ok(Verified::Valid(entry)),
        Err(corrupt) => corrupt,
    };
    Ok(if delete_if_unchanged(&file.path, &opened)? { Verified::Deleted(corrupt) } else { Verified::Replaced(corrupt) })
}

/// Deletes `path` if it is still the file whose metadata is `opened` (same device and inode); false when another
/// file has taken its place. What is left is the instant between this check and the unlink, in which a rename
/// would have to land: the new entry would then be lost (a miss, refetched), never a corrupt one served.
fn delete_if_unchanged(path: &Path, opened: &fs::Metadata) -> io::Result<bool> {
    let current = match fs::symlink_metadata(path) {
        Ok(current) => current,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(error) => return Err(error),
    };
    if !same_file(opened, &current) {
        return Ok(false);
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(error) => Err(error),
    }
}

#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.len() == b.len() && a.modified().ok() == b.modified().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::DiskTier;

    fn store(tier: &DiskTier, name: &[u8], body: &'static [u8]) -> CacheKey {
        let key = CacheKey::from_parts(&[name]);
        tier.write(&key, &Entry::image("image/png", Bytes::from_static(body), 10, 20)).expect("write");
        key
    }

    #[test]
    fn lists_reads_headers_and_deletes_only_corrupt_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tier = DiskTier::open(dir.path(), 1 << 30).expect("open");
        let good = store(&tier, b"good", b"0123456789");
        let flipped = store(&tier, b"flipped", b"abcdefghij");
        let cut = store(&tier, b"cut", b"klmnopqrst");
        fs::write(dir.path().join("budget.txt"), b"not an entry").expect("stray");
        let path = |key: &CacheKey| dir.path().join(key.shard_path());
        let mut bytes = fs::read(path(&flipped)).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(path(&flipped), bytes).expect("flip");
        let bytes = fs::read(path(&cut)).expect("read");
        fs::write(path(&cut), &bytes[..bytes.len() - 3]).expect("cut");

        let mut files: Vec<EntryFile> = entry_files(dir.path()).expect("walk").collect();
        files.sort_by_key(|file| file.key);
        assert_eq!(files.len(), 3);
        let header = |key| read_header(files.iter().find(|f| f.key == key).expect("listed")).expect("read");
        // A flipped body byte is invisible to a header-only read; a cut file is not.
        assert!(matches!(header(good), Header::Valid(meta) if meta.content_type == "image/png"));
        assert!(matches!(header(flipped), Header::Valid(_)));
        assert!(matches!(header(cut), Header::Corrupt(_)));

        let verdicts: Vec<Verified> = files.iter().map(|file| verify(file).expect("verify")).collect();
        let deleted = verdicts.iter().filter(|v| matches!(v, Verified::Deleted(_))).count();
        assert_eq!(deleted, 2);
        assert!(path(&good).exists() && !path(&flipped).exists() && !path(&cut).exists());
    }

    #[test]
    fn read_entry_reads_without_changing_anything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tier = DiskTier::open(dir.path(), 1 << 30).expect("open");
        let key = store(&tier, b"k", b"body");
        let path = dir.path().join(key.shard_path());
        let entry = read_entry(dir.path(), &key).expect("read").expect("present");
        assert_eq!(entry.body().as_ref(), b"body");
        assert!(read_entry(dir.path(), &CacheKey::from_parts(&[b"absent"])).expect("read").is_none());
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, bytes).expect("flip");
        assert!(read_entry(dir.path(), &key).expect("read").is_none());
        assert!(path.exists(), "a corrupt entry is left for verify");
    }

    #[test]
    fn a_replaced_file_is_not_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tier = DiskTier::open(dir.path(), 1 << 30).expect("open");
        let key = store(&tier, b"k", b"body");
        let path = dir.path().join(key.shard_path());
        let opened = fs::metadata(&path).expect("stat");
        // A writer renames a new file over it.
        let tmp = dir.path().join("new");
        fs::write(&tmp, b"whatever").expect("write");
        fs::rename(&tmp, &path).expect("rename");
        assert!(!delete_if_unchanged(&path, &opened).expect("check"));
        assert!(path.exists());
    }
}
