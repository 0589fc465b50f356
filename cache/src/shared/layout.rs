//! Where each entry lives in the object store: one prefix per source, holding the original, its variants and its
//! fill lease, so a purge is one listing of one prefix; and one prefix of purge records that every node polls.
//!
//! ```text
//! {PREFIX}/v1/{source-key-hex}/source            the original
//! {PREFIX}/v1/{source-key-hex}/v/{variant-hex}   each variant made from it
//! {PREFIX}/v1/{source-key-hex}/lease             the fill lease while one node fetches it
//! {PREFIX}/v1/purges/{unix-millis}-{source-hex}  one record per purge (13 digits: they sort by time)
//! ```
//!
//! Keys are the cache keys the local tiers use, so they never contain a signature or anything else that does
//! not change the bytes.

use object_store::path::Path;

use crate::key::CacheKey;

/// The layout version: a future change of layout writes beside this one instead of misreading it.
const VERSION: &str = "v1";
/// The purge records' folder (not a hex key, so it can never collide with a source's prefix).
const PURGES: &str = "purges";
/// Digits of the millisecond timestamp in a record's name: zero-padded so names sort by time (until year 2286).
const MILLIS_DIGITS: usize = 13;

/// The paths of one shared cache, under the operator's prefix.
#[derive(Clone, Debug)]
pub struct Layout {
    /// `{PREFIX}/v1`.
    root: Path,
}

impl Layout {
    /// The layout under `prefix` (the path part of `--shared-cache`; may be empty).
    pub fn new(prefix: &Path) -> Layout {
        Layout { root: prefix.clone().join(VERSION) }
    }

    /// `{PREFIX}/v1`: everything Mirage writes.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of one source: its original, its variants and its lease.
    pub fn source_dir(&self, source: &CacheKey) -> Path {
        self.root.clone().join(source.to_hex())
    }

    /// The object of the entry `key`, made from `source` (the original when they are equal).
    pub fn entry(&self, key: &CacheKey, source: &CacheKey) -> Path {
        let dir = self.source_dir(source);
        if key == source { dir.join("source") } else { dir.join("v").join(key.to_hex()) }
    }

    /// The fill lease of `source`.
    pub fn lease(&self, source: &CacheKey) -> Path {
        self.source_dir(source).join("lease")
    }

    /// The folder of purge records.
    pub fn purges(&self) -> Path {
        self.root.clone().join(PURGES)
    }

    /// The record of a purge of `source` at `millis` (Unix milliseconds).
    pub fn purge_record(&self, millis: u64, source: &CacheKey) -> Path {
        self.purges().join(record_name(millis, source))
    }

    /// The name a listing starts after to see the records from `millis` on: every record name at that millisecond
    /// or later sorts after it.
    pub fn purges_from(&self, millis: u64) -> Path {
        self.purges().join(format!("{:0width$}", millis.saturating_sub(1), width = MILLIS_DIGITS) + "-z")
    }
}

/// `{unix-millis}-{source-hex}`.
fn record_name(millis: u64, source: &CacheKey) -> String {
    format!("{millis:0width$}-{}", source.to_hex(), width = MILLIS_DIGITS)
}

/// The time and source of a purge record, from its path; `None` for anything else found in the folder.
pub fn parse_purge_record(path: &Path) -> Option<(u64, CacheKey)> {
    let name = path.filename()?;
    let (millis, hex) = name.split_once('-')?;
    if millis.len() < MILLIS_DIGITS || !millis.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((millis.parse().ok()?, CacheKey::from_hex(hex)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_a_source_share_its_prefix() {
        let layout = Layout::new(&Path::from("blog/images"));
        let source = CacheKey::from_parts(&[b"source"]);
        let variant = CacheKey::from_parts(&[b"variant"]);
        let hex = source.to_hex();
        assert_eq!(layout.entry(&source, &source).as_ref(), format!("blog/images/v1/{hex}/source"));
        assert_eq!(layout.entry(&variant, &source).as_ref(), format!("blog/images/v1/{hex}/v/{}", variant.to_hex()));
        assert_eq!(layout.lease(&source).as_ref(), format!("blog/images/v1/{hex}/lease"));
        assert!(layout.entry(&variant, &source).prefix_matches(&layout.source_dir(&source)));
        assert_eq!(Layout::new(&Path::default()).entry(&source, &source).as_ref(), format!("v1/{hex}/source"));
    }

    #[test]
    fn purge_records_sort_by_time_and_parse_back() {
        let layout = Layout::new(&Path::from("p"));
        let source = CacheKey::from_parts(&[b"s"]);
        let early = layout.purge_record(999, &source);
        let late = layout.purge_record(1_700_000_000_000, &source);
        assert_eq!(early.as_ref(), format!("p/v1/purges/0000000000999-{}", source.to_hex()));
        assert!(early.as_ref() < late.as_ref());
        assert_eq!(parse_purge_record(&late), Some((1_700_000_000_000, source)));
        assert_eq!(parse_purge_record(&Path::from("p/v1/purges/junk")), None);
        assert_eq!(parse_purge_record(&Path::from("p/v1/purges/12-ab")), None);
        // Starting after `purges_from(t)` lists the records at t and later, not those before.
        let from = layout.purges_from(1_700_000_000_000);
        assert!(from.as_ref() < late.as_ref());
        assert!(from.as_ref() > layout.purge_record(1_699_999_999_999, &source).as_ref());
    }
}
