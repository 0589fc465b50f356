//! `mirage cache stats` and `mirage cache verify`: a disk cache directory inspected offline, without a running
//! server's help and safe beside one (`mirage_cache::inspect` says why).
//!
//! Originals and variants: the entry header records each entry's source key (an original is its own source), so
//! `stats` counts them exactly, and a variant whose source is not in the directory is counted in
//! `variants_without_original` too. Entries written before the header recorded it are told apart by a convention
//! of the pipeline: a variant's `ETag` is its original's digest token (`"` + the first 32 hex digits of the
//! original body's SHA-256 + `"`) and it has no `Last-Modified`, while an original keeps upstream's validators.
//! Fallback-image variants name the fallback file as their source, which is never an entry: they count as
//! variants without original.

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mirage::config::{CacheArgs, CacheCommand};
use mirage_cache::inspect::{self, EntryFile, Header, Verified};
use mirage_cache::{CacheKey, EntryKind, EntryMeta};
use serde::Serialize;

/// Exit code when the directory cannot be read or does not exist.
const UNUSABLE: u8 = 2;

/// Runs `mirage cache stats|verify`. Exit codes: 0 fine, 1 corrupt entries found (verify) or stdout failed,
/// 2 no such directory.
pub fn run(args: &CacheArgs) -> ExitCode {
    let (dir, command) = match &args.command {
        CacheCommand::Stats(stats) => (stats.dir.resolve(), "stats"),
        CacheCommand::Verify(verify) => (verify.dir.resolve(), "verify"),
    };
    let dir = match dir {
        Ok(dir) if dir.is_dir() => dir,
        Ok(dir) => {
            eprintln!("mirage cache {command}: {} is not a directory", dir.display());
            return ExitCode::from(UNUSABLE);
        }
        Err(error) => {
            eprintln!("mirage cache {command}: {error}");
            return ExitCode::from(UNUSABLE);
        }
    };
    match &args.command {
        CacheCommand::Stats(stats) => run_stats(&dir, stats.json),
        CacheCommand::Verify(_) => run_verify(&dir),
    }
}

/// Entries and bytes of one content type.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
struct TypeStats {
    entries: u64,
    bytes: u64,
}

/// What `stats` reports; also its JSON shape (an interface: add fields, never rename one).
#[derive(Debug, Default, Serialize)]
struct Stats {
    dir: PathBuf,
    /// Entry files found.
    entries: u64,
    /// Sum of the entry files' lengths.
    logical_bytes: u64,
    /// What the disk budget charges: files in whole blocks, shard directories, fixed overhead.
    disk_bytes: u64,
    /// The budget recorded in the directory by `serve`, if any.
    budget_bytes: Option<u64>,
    /// Image entries fetched from upstream.
    originals: u64,
    /// Image entries made by a transform (including fallback-image variants).
    variants: u64,
    /// Variants whose original is not in the directory any more.
    variants_without_original: u64,
    /// Remembered upstream 404/410 and refusals (`not_found` + `refused`).
    negative: u64,
    /// Remembered upstream 404/410.
    not_found: u64,
    /// Remembered refusals (upstream 4xx, not an image, too large, untransformable).
    refused: u64,
    /// Entries past their freshness lifetime now (they may still answer stale, or be revalidated).
    expired: u64,
    /// Entries whose header cannot be read: `mirage cache verify` deletes them.
    unreadable: u64,
    /// Image entries and body bytes by content type.
    content_types: BTreeMap<String, TypeStats>,
    /// Unix seconds of the oldest and newest `stored_at` (fetch or last revalidation).
    oldest_stored_at: Option<u64>,
    newest_stored_at: Option<u64>,
}

/// Builds [`Stats`] from headers as the walk finds them; the digest set for the original/variant split is the
/// only state that grows with the directory (16 bytes an image).
#[derive(Default)]
struct Tally {
    stats: Stats,
    /// First 16 bytes of every image body's digest.
    image_digests: HashSet<[u8; 16]>,
    /// Keys of the originals, from headers that record it.
    original_keys: HashSet<CacheKey>,
    /// What each variant names as its original.
    variant_links: Vec<VariantOf>,
    /// Shard directories holding entries, which the budget charges for.
    shard_dirs: HashSet<PathBuf>,
    /// Entry files rounded up to whole blocks, as the budget charges them.
    file_costs: u64,
}

impl Tally {
    fn add(&mut self, file: &EntryFile, meta: Option<&EntryMeta>, now: u64) {
        let stats = &mut self.stats;
        stats.entries += 1;
        stats.logical_bytes += file.len;
        if let Some(leaf) = file.path.parent() {
            self.shard_dirs.insert(leaf.to_path_buf());
            if let Some(level1) = leaf.parent() {
                self.shard_dirs.insert(level1.to_path_buf());
            }
        }
        let Some(meta) = meta else {
            stats.unreadable += 1;
            return;
        };
        if meta.expires_at <= now {
            stats.expired += 1;
        }
        stats.oldest_stored_at = Some(stats.oldest_stored_at.map_or(meta.stored_at, |t| t.min(meta.stored_at)));
        stats.newest_stored_at = Some(stats.newest_stored_at.map_or(meta.stored_at, |t| t.max(meta.stored_at)));
        match meta.kind {
            EntryKind::NotFound => stats.not_found += 1,
            EntryKind::Refused => stats.refused += 1,
            EntryKind::Image => {
                let by_type = stats.content_types.entry(meta.content_type.clone()).or_default();
                by_type.entries += 1;
                by_type.bytes += meta.body_len();
                let mut digest = [0u8; 16];
                digest.copy_from_slice(&meta.body_sha256()[..16]);
                self.image_digests.insert(digest);
                match meta.source() {
                    // The header says (entries written since the source key is recorded): exact.
                    Some(source) if source == file.key => {
                        stats.originals += 1;
                        self.original_keys.insert(source);
                    }
                    Some(source) => {
                        stats.variants += 1;
                        self.variant_links.push(VariantOf::Key(source));
                    }
                    // An older entry: told by the digest-token convention.
                    None => match variant_source(meta) {
                        Some(digest) => {
                            stats.variants += 1;
                            self.variant_links.push(VariantOf::Digest(digest));
                        }
                        None => stats.originals += 1,
                    },
                }
            }
        }
    }

    fn finish(mut self, dir: &Path) -> Stats {
        let stats = &mut self.stats;
        stats.negative = stats.not_found + stats.refused;
        stats.variants_without_original = self
            .variant_links
            .iter()
            .filter(|link| match link {
                VariantOf::Key(source) => !self.original_keys.contains(source),
                VariantOf::Digest(digest) => !self.image_digests.contains(digest),
            })
            .count() as u64;
        let accounting = inspect::accounting(dir);
        stats.disk_bytes =
            self.file_costs + self.shard_dirs.len() as u64 * accounting.dir_bytes + accounting.base_bytes;
        stats.budget_bytes = mirage_cache::budget::recorded(dir);
        stats.dir = dir.to_path_buf();
        self.stats
    }
}

/// How a variant names its original: by key, recorded in its header, or (entries written before the header
/// recorded it) by the digest token its `ETag` carries.
enum VariantOf {
    Key(CacheKey),
    Digest([u8; 16]),
}

/// The original a variant names: its `ETag` is `"` + 32 lowercase hex digits + `"` (the original's digest
/// token) and it has no `Last-Modified`. `None` for an original.
fn variant_source(meta: &EntryMeta) -> Option<[u8; 16]> {
    if meta.last_modified.is_some() {
        return None;
    }
    let hex = meta.etag.as_deref()?.strip_prefix('"')?.strip_suffix('"')?;
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut digest = [0u8; 16];
    hex::decode_to_slice(hex, &mut digest).ok()?;
    Some(digest)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

fn run_stats(dir: &Path, json: bool) -> ExitCode {
    let files = match inspect::entry_files(dir) {
        Ok(files) => files,
        Err(error) => {
            eprintln!("mirage cache stats: cannot read {}: {error}", dir.display());
            return ExitCode::from(UNUSABLE);
        }
    };
    let accounting = inspect::accounting(dir);
    let now = unix_now();
    let mut tally = Tally::default();
    for file in files {
        match inspect::read_header(&file) {
            Ok(Header::Valid(meta)) => tally.add(&file, Some(meta.as_ref()), now),
            Ok(Header::Corrupt(_)) => tally.add(&file, None, now),
            // Evicted or purged while we walked: not there any more.
            Ok(Header::Gone) => continue,
            Err(error) => {
                eprintln!("mirage cache stats: {}: {error}", file.path.display());
                tally.add(&file, None, now);
            }
        }
        tally.file_costs += accounting.file_cost(file.len);
    }
    let stats = tally.finish(dir);
    let written = if json {
        serde_json::to_string_pretty(&stats).map(|text| println!("{text}")).map_err(|e| e.to_string())
    } else {
        print_stats(&stats);
        Ok(())
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mirage cache stats: {error}");
            ExitCode::FAILURE
        }
    }
}

fn print_stats(stats: &Stats) {
    let date = |time: Option<u64>| {
        time.map_or_else(|| "-".to_owned(), |secs| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs)))
    };
    println!("cache directory  {}", stats.dir.display());
    println!(
        "entries          {} ({} originals, {} variants of which {} without their original, {} negative: {} not \
         found, {} refused)",
        stats.entries,
        stats.originals,
        stats.variants,
        stats.variants_without_original,
        stats.negative,
        stats.not_found,
        stats.refused
    );
    let budget = stats.budget_bytes.map_or_else(String::new, |budget| format!(" of a {} budget", human(budget)));
    println!("bytes            {} logical, {} on disk{budget}", human(stats.logical_bytes), human(stats.disk_bytes));
    println!("expired          {}", stats.expired);
    println!("stored           oldest {}, newest {}", date(stats.oldest_stored_at), date(stats.newest_stored_at));
    for (content_type, by_type) in &stats.content_types {
        println!("  {content_type:<15} {} entries, {}", by_type.entries, human(by_type.bytes));
    }
    if stats.unreadable > 0 {
        println!("unreadable       {} (run `mirage cache verify` to delete them)", stats.unreadable);
    }
}

/// Bytes with one decimal in the largest binary unit that fits: `1.5 MiB`.
fn human(bytes: u64) -> String {
    let units = [(1u64 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    match units.iter().find(|(unit, _)| bytes >= *unit) {
        Some((unit, name)) => format!("{:.1} {name}", bytes as f64 / *unit as f64),
        None => format!("{bytes} B"),
    }
}

/// What `verify` found.
#[derive(Debug, Default)]
struct Verification {
    checked: u64,
    valid: u64,
    deleted: u64,
    /// Corrupt when read, but replaced by a writer before it could be deleted.
    replaced: u64,
    /// Could not be read (permissions, I/O errors).
    failed: u64,
}

fn run_verify(dir: &Path) -> ExitCode {
    let walk = || inspect::entry_files(dir);
    let files = match walk() {
        Ok(files) => files,
        Err(error) => {
            eprintln!("mirage cache verify: cannot read {}: {error}", dir.display());
            return ExitCode::from(UNUSABLE);
        }
    };
    // A bar needs a length: count first (a directory walk, no file is opened), only when someone watches.
    let bar = std::io::stderr().is_terminal().then(|| {
        let total = walk().map_or(0, Iterator::count) as u64;
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}") {
            bar.set_style(style);
        }
        bar
    });
    let started = Instant::now();
    let mut result = Verification::default();
    for file in files {
        match inspect::verify(&file) {
            Ok(Verified::Valid(_)) => result.valid += 1,
            Ok(Verified::Deleted(corrupt)) => {
                result.deleted += 1;
                let line = format!("deleted {}: {}", file.path.display(), corrupt.reason);
                bar.as_ref().map_or_else(|| println!("{line}"), |bar| bar.suspend(|| println!("{line}")));
            }
            Ok(Verified::Replaced(_)) => result.replaced += 1,
            Ok(Verified::Gone) => continue,
            Err(error) => {
                result.failed += 1;
                let line = format!("mirage cache verify: {}: {error}", file.path.display());
                bar.as_ref().map_or_else(|| eprintln!("{line}"), |bar| bar.suspend(|| eprintln!("{line}")));
            }
        }
        result.checked += 1;
        if let Some(bar) = &bar {
            bar.set_message(format!("{} corrupt", result.deleted + result.replaced));
            bar.inc(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    println!(
        "mirage cache verify: {} entries checked in {:.1}s: {} valid, {} corrupt (deleted), {} replaced while \
         checking, {} unreadable",
        result.checked,
        started.elapsed().as_secs_f64(),
        result.valid,
        result.deleted,
        result.replaced,
        result.failed
    );
    if result.deleted + result.replaced + result.failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use mirage_cache::{Entry, Validators};

    use super::*;

    fn with(etag: Option<&str>, last_modified: Option<&str>) -> Entry {
        Entry::image("image/jpeg", Bytes::from_static(b"x"), 1, 2).with_validators(Validators {
            etag: etag.map(str::to_owned),
            last_modified: last_modified.map(str::to_owned),
        })
    }

    #[test]
    fn a_variant_names_its_original_by_digest_token() {
        let original = Entry::image("image/jpeg", Bytes::from_static(b"source"), 1, 2);
        let token = original.etag_token();
        let variant = with(Some(&token), None);
        let named = variant_source(variant.meta()).expect("a variant");
        assert_eq!(&named[..], &original.meta().body_sha256()[..16]);
        // Upstream validators: an original.
        assert_eq!(variant_source(with(Some(&token), Some("Tue, 01 Jan 2030 00:00:00 GMT")).meta()), None);
        assert_eq!(variant_source(with(Some("\"abc\""), None).meta()), None);
        assert_eq!(variant_source(with(Some(&format!("W/{token}")), None).meta()), None);
        assert_eq!(variant_source(with(None, None).meta()), None);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 20), "3.0 MiB");
    }
}
