//! Entry metadata and the versioned, self-verifying on-disk encoding of one cache entry.
//!
//! File layout (all integers little-endian):
//! ```text
//! magic "MIRAGEC\0" | version u16 (=2) | header_len u32 | header | check [8] | body
//! header = key [32] | source [32] (version 2 only) | kind u8 (0 image, 1 not found, 2 refused) | stored_at u64 | expires_at u64 | body_len u64
//!        | body_sha256 [32]
//!        | freshness (version 2 only): flags u8 | max_age u64 | expires_lifetime u64 | stale_while_revalidate u64
//!        | content_type (u16 len + UTF-8) | etag (u8 flag [+ u16 len + UTF-8]) | last_modified (same)
//! check  = first 8 bytes of sha256(magic .. end of header)
//! ```
//! Version 1 files (no source, no freshness block) are still read, with [`FreshnessInputs::default`]: "upstream
//! gave no lifetime", and no source, so caches written before version 2 stay valid.
//! The source key sits right after the key, at a fixed offset, so the disk index can learn an entry's source
//! from the first [`SOURCE_PROBE_LEN`] bytes of its file without reading the rest.
//! The header check catches bit rot in the times and validators, which the body digest
//! cannot see; the body digest catches torn or flipped bodies.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::key::CacheKey;

/// Identifies our files; a different magic means "not ours", never "try to parse".
const MAGIC: &[u8; 8] = b"MIRAGEC\0";
/// Bumped on any layout change; versions we cannot read are treated as corrupt and replaced.
const FORMAT_VERSION: u16 = 2;
/// The layout before the freshness inputs; still read.
const FORMAT_VERSION_1: u16 = 1;
/// Bytes of a cache file before its header: magic, version and header length.
pub const PREAMBLE_LEN: usize = 8 + 2 + 4;
const CHECK_LEN: usize = 8;
/// Fixed part of a version 1 header: key, kind, three u64s, body digest.
const FIXED_HEADER_LEN_V1: usize = 32 + 1 + 8 * 3 + 32;
/// The freshness block of version 2: flags and three u64s.
const FRESHNESS_LEN: usize = 1 + 8 * 3;
/// Fixed part of the current header: version 1's, the source key and the freshness block.
const FIXED_HEADER_LEN: usize = FIXED_HEADER_LEN_V1 + 32 + FRESHNESS_LEN;
/// Bytes at the start of a version 2 file that hold its key and its source key (see [`probe_source`]).
pub const SOURCE_PROBE_LEN: usize = PREAMBLE_LEN + 32 + 32;
/// Upper bound on a header: fixed part plus three maximal strings with their prefixes.
const MAX_HEADER_LEN: usize = FIXED_HEADER_LEN + 2 + 2 * 3 + 3 * (u16::MAX as usize);

/// Freshness flag bits; any other bit set means corruption.
const HAS_MAX_AGE: u8 = 1;
const HAS_EXPIRES: u8 = 1 << 1;
const NO_CACHE: u8 = 1 << 2;
const MUST_REVALIDATE: u8 = 1 << 3;
const HAS_STALE_WHILE_REVALIDATE: u8 = 1 << 4;
const KNOWN_FLAGS: u8 = HAS_MAX_AGE | HAS_EXPIRES | NO_CACHE | MUST_REVALIDATE | HAS_STALE_WHILE_REVALIDATE;

/// What upstream said about an entry's freshness, kept with it so later decisions follow upstream's word rather
/// than our defaults: a bare 304 keeps the lifetime upstream gave (RFC 9111 4.3.4), `no-cache` keeps forcing
/// revalidation, `must-revalidate` keeps forbidding stale answers, and `immutable` is told to clients only for
/// upstream's own long lifetimes. The default is "upstream said nothing": our default lifetime applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FreshnessInputs {
    /// Upstream's `Cache-Control` lifetime in seconds (`s-maxage`, else `max-age`), before our clamps.
    pub max_age: Option<u64>,
    /// Upstream's `Expires` minus its `Date` in seconds, before our clamps; used only without `max_age`.
    pub expires_lifetime: Option<u64>,
    /// Revalidate before every reuse (`no-cache`, or a zero `max-age`/`s-maxage`).
    pub no_cache: bool,
    /// Never answer stale (`must-revalidate`, `proxy-revalidate`, or `s-maxage`, which implies it).
    pub must_revalidate: bool,
    /// Upstream's `stale-while-revalidate` in seconds: for this long past expiry the entry answers at once while
    /// it is revalidated in the background (RFC 5861).
    pub stale_while_revalidate: Option<u64>,
}

impl FreshnessInputs {
    /// Upstream's own lifetime in seconds (`max_age`, else `expires_lifetime`); `None`: our default applied.
    pub fn upstream_lifetime(&self) -> Option<u64> {
        self.max_age.or(self.expires_lifetime)
    }
}

/// What an entry records about the upstream answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A cached image body.
    Image,
    /// A negative-cached upstream 404/410 (body is usually empty).
    NotFound,
    /// A negative-cached refusal other than 404/410: upstream said no (401, 403, 451, ...), sent something that
    /// is not an image, or the image cannot be transformed. The body is empty and `content_type` holds which
    /// refusal it was, in the caller's own words (Mirage stores its error code and arguments there), so a
    /// remembered refusal answers exactly as the first one did.
    Refused,
}

/// Everything about an entry except its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    /// Image or negative entry.
    pub kind: EntryKind,
    /// Media type of the body, e.g. `image/webp`.
    pub content_type: String,
    /// Upstream validator, verbatim.
    pub etag: Option<String>,
    /// Upstream validator, verbatim HTTP-date.
    pub last_modified: Option<String>,
    /// Unix seconds when fetched or last revalidated.
    pub stored_at: u64,
    /// Unix seconds: the entry is fresh while `now < expires_at`.
    pub expires_at: u64,
    /// What upstream said about freshness (for a variant: its original's).
    pub freshness: FreshnessInputs,
    /// The key of the original this entry was made from (an original's own key); `None` when unknown (an entry
    /// not yet given one, or read from a version 1 file). Purge follows it from a source to its variants.
    source: Option<CacheKey>,
    /// [`CacheKey::tag`] of `source`, made once when the source is set, so that answering can name the source
    /// (a CDN cache tag) without formatting or allocating; empty without a source.
    source_tag: Bytes,
    // Derived from the body, so private: only this crate computes them (from the body, or from a verified file),
    // and an entry whose length or digest disagrees with its body cannot be built elsewhere.
    body_len: u64,
    body_sha256: [u8; 32],
    /// The strong ETag clients get (see [`Entry::etag_token`]), made once with the digest it comes from, so that
    /// answering sends it without formatting or allocating.
    etag_token: Bytes,
    /// The answer's `Content-Type` and `Last-Modified` values, made once whenever what they come from changes
    /// (see [`EntryMeta::answer_headers`]): a hit clones two shared buffers instead of formatting and copying.
    answer_headers: AnswerHeaders,
}

/// Header values of an answer that depend only on the entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct AnswerHeaders {
    content_type: Bytes,
    last_modified: Bytes,
    /// What the server made of the entry for its answers (see [`EntryMeta::answer_memo`]).
    memo: AnswerMemo,
}

/// A value the server derives from an entry once and keeps with it, opaque to the cache (Mirage keeps the fixed
/// headers of its answers here). Made again whenever the entry's metadata changes: a copy of the metadata starts
/// empty, and every change inside this crate renews it.
#[derive(Default)]
struct AnswerMemo(OnceLock<Box<dyn Any + Send + Sync>>);

impl Clone for AnswerMemo {
    /// Empty: the copy is about to be changed (a revalidation, a new source), which the memo may depend on.
    fn clone(&self) -> AnswerMemo {
        AnswerMemo::default()
    }
}

impl PartialEq for AnswerMemo {
    /// Derived from the other fields, so it never makes two entries' metadata differ.
    fn eq(&self, _: &AnswerMemo) -> bool {
        true
    }
}

impl Eq for AnswerMemo {}

impl fmt::Debug for AnswerMemo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() { "AnswerMemo(made)" } else { "AnswerMemo(empty)" })
    }
}

impl AnswerHeaders {
    /// `Content-Type` as stored; `Last-Modified` as upstream sent it or, without one, when the entry was stored
    /// or last revalidated (an HTTP-date, so a client can revalidate with `If-Modified-Since` either way).
    fn of(content_type: &str, last_modified: Option<&str>, stored_at: u64) -> AnswerHeaders {
        let last_modified = match last_modified {
            Some(upstream) => Bytes::copy_from_slice(upstream.as_bytes()),
            None => Bytes::from(httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(stored_at))),
        };
        AnswerHeaders {
            content_type: Bytes::copy_from_slice(content_type.as_bytes()),
            last_modified,
            memo: AnswerMemo::default(),
        }
    }
}

/// `"` + the first 32 hex digits of the body's SHA-256 + `"`.
fn etag_token_of(body_sha256: &[u8; 32]) -> Bytes {
    let mut token = [b'"'; 34];
    // 16 bytes always fit 32 hex digits.
    let _ = hex::encode_to_slice(&body_sha256[..16], &mut token[1..33]);
    Bytes::copy_from_slice(&token)
}

impl EntryMeta {
    /// Length of the body in bytes.
    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    /// SHA-256 of the body.
    pub fn body_sha256(&self) -> &[u8; 32] {
        &self.body_sha256
    }

    /// The key of the original this entry was made from (its own key for an original), when known.
    pub fn source(&self) -> Option<CacheKey> {
        self.source
    }

    /// `mirage-` and the first 16 hex digits of the source key (see [`CacheKey::tag`]), when the source is known;
    /// a cheap clone of a shared buffer.
    pub fn source_tag(&self) -> Option<&Bytes> {
        Some(&self.source_tag).filter(|tag| !tag.is_empty())
    }

    /// The `Content-Type` of an answer from this entry (`content_type`, as shared bytes).
    pub fn content_type_value(&self) -> &Bytes {
        &self.answer_headers.content_type
    }

    /// The `Last-Modified` of an answer from this entry, as shared bytes: upstream's `last_modified` verbatim, or
    /// `stored_at` as an HTTP-date when upstream sent none.
    pub fn last_modified_value(&self) -> &Bytes {
        &self.answer_headers.last_modified
    }

    /// The value `make` derives from this entry for answering it, made by the first caller and kept with the
    /// entry until its metadata changes (the cache never looks inside). `None` only if a value of another type was
    /// kept first (one process keeps one type).
    pub fn answer_memo<T: Any + Send + Sync>(&self, make: impl FnOnce() -> T) -> Option<&T> {
        self.answer_headers.memo.0.get_or_init(|| Box::new(make())).downcast_ref::<T>()
    }

    /// Makes the answer's header values again from the fields they come from, and empties the memo; every change
    /// to the metadata inside this crate ends with it.
    fn renew_answer_headers(&mut self) {
        self.answer_headers = AnswerHeaders::of(&self.content_type, self.last_modified.as_deref(), self.stored_at);
    }
}

/// One cache entry: shared metadata plus a reference-counted body (clones copy no bytes).
///
/// Built by name ([`Entry::image`], [`Entry::not_found`]); the fields are private so the metadata always
/// describes the body it travels with.
#[derive(Clone)]
pub struct Entry {
    meta: Arc<EntryMeta>,
    body: Bytes,
}

/// An upstream answer's validators, kept with an image so an expired copy can be revalidated conditionally.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validators {
    /// `ETag`, verbatim.
    pub etag: Option<String>,
    /// `Last-Modified`, verbatim HTTP-date.
    pub last_modified: Option<String>,
}

/// Why an on-disk entry was rejected; such files are deleted, never served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt cache entry: {reason}")]
pub struct CorruptEntry {
    /// Short, static description of the first check that failed.
    pub reason: &'static str,
}

fn corrupt(reason: &'static str) -> CorruptEntry {
    CorruptEntry { reason }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

impl Entry {
    /// An image body of media type `content_type`, fetched (or made) at `stored_at` and fresh until `expires_at`
    /// (Unix seconds), without validators; add upstream's with [`Entry::with_validators`].
    pub fn image(content_type: impl Into<String>, body: Bytes, stored_at: u64, expires_at: u64) -> Entry {
        Entry::build(EntryKind::Image, content_type.into(), stored_at, expires_at, body)
    }

    /// A remembered upstream 404/410 (empty body, no media type), stored at `stored_at` and answering until
    /// `expires_at` (Unix seconds).
    pub fn not_found(stored_at: u64, expires_at: u64) -> Entry {
        Entry::build(EntryKind::NotFound, String::new(), stored_at, expires_at, Bytes::new())
    }

    /// A remembered refusal (see [`EntryKind::Refused`]): `reason` is kept in `content_type`, the body is empty.
    pub fn refused(reason: impl Into<String>, stored_at: u64, expires_at: u64) -> Entry {
        Entry::build(EntryKind::Refused, reason.into(), stored_at, expires_at, Bytes::new())
    }

    /// The same entry carrying these freshness inputs (replacing any it had).
    #[must_use]
    pub fn with_freshness(mut self, freshness: FreshnessInputs) -> Entry {
        let meta = Arc::make_mut(&mut self.meta);
        meta.freshness = freshness;
        meta.renew_answer_headers();
        self
    }

    /// The same entry recording `source` as the original it was made from (for an original: its own key).
    #[must_use]
    pub fn with_source(mut self, source: CacheKey) -> Entry {
        let meta = Arc::make_mut(&mut self.meta);
        meta.source = Some(source);
        meta.source_tag = Bytes::from(source.tag());
        meta.renew_answer_headers();
        self
    }

    /// The same entry carrying upstream's validators (replacing any it had).
    #[must_use]
    pub fn with_validators(mut self, validators: Validators) -> Entry {
        // A freshly built entry is not shared yet, so this does not copy the metadata.
        let meta = Arc::make_mut(&mut self.meta);
        meta.etag = validators.etag;
        meta.last_modified = validators.last_modified;
        meta.renew_answer_headers();
        self
    }

    /// Computes `body_len` and `body_sha256` from `body`: the one place, besides `decode`, that fills them.
    fn build(kind: EntryKind, content_type: String, stored_at: u64, expires_at: u64, body: Bytes) -> Entry {
        let body_sha256 = sha256(&body);
        let mut meta = EntryMeta {
            kind,
            content_type,
            etag: None,
            last_modified: None,
            stored_at,
            expires_at,
            freshness: FreshnessInputs::default(),
            source: None,
            source_tag: Bytes::new(),
            body_len: body.len() as u64,
            body_sha256,
            etag_token: etag_token_of(&body_sha256),
            answer_headers: AnswerHeaders::default(),
        };
        meta.renew_answer_headers();
        Entry { meta: Arc::new(meta), body }
    }

    /// The metadata (shared between clones).
    pub fn meta(&self) -> &EntryMeta {
        &self.meta
    }

    /// The body bytes (cloning them copies nothing).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// True while `now < expires_at`.
    pub fn is_fresh(&self, now: u64) -> bool {
        now < self.meta.expires_at
    }

    /// The same body with new times and freshness inputs, after a 304 revalidation; each validator is replaced
    /// only when the upstream sent a new one.
    pub fn refreshed(
        &self,
        stored_at: u64,
        expires_at: u64,
        freshness: FreshnessInputs,
        validators: Validators,
    ) -> Entry {
        let mut meta = EntryMeta::clone(&self.meta);
        meta.stored_at = stored_at;
        meta.expires_at = expires_at;
        meta.freshness = freshness;
        if validators.etag.is_some() {
            meta.etag = validators.etag;
        }
        if validators.last_modified.is_some() {
            meta.last_modified = validators.last_modified;
        }
        meta.renew_answer_headers();
        Entry { meta: Arc::new(meta), body: self.body.clone() }
    }

    /// Strong ETag for clients, derived from the body digest so it is stable across tiers,
    /// restarts and replicas: `"` + 32 hex chars + `"`.
    pub fn etag_token(&self) -> String {
        self.etag_str().to_owned()
    }

    /// [`Entry::etag_token`] without a copy.
    pub fn etag_str(&self) -> &str {
        // Quotes and hex digits: always UTF-8.
        std::str::from_utf8(&self.meta.etag_token).unwrap_or_default()
    }

    /// [`Entry::etag_token`] as the shared bytes it is kept in (a header value made from them copies nothing).
    pub fn etag_bytes(&self) -> &Bytes {
        &self.meta.etag_token
    }
}

impl fmt::Debug for Entry {
    // The body can be megabytes; print its length, not its bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("meta", &self.meta)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish()
    }
}

/// Cuts `s` to at most `max` bytes on a char boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Callers guarantee s.len() <= u16::MAX.
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    // A validator that does not fit is dropped rather than truncated: a cut validator would
    // make revalidation lie, a missing one only makes it unconditional.
    match s.filter(|s| u16::try_from(s.len()).is_ok()) {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

/// Encodes everything that precedes the body in a cache file (preamble, header and check).
/// The caller writes the body right after it.
pub fn encode_header(key: &CacheKey, meta: &EntryMeta) -> Vec<u8> {
    let mut header = Vec::with_capacity(FIXED_HEADER_LEN + 64 + meta.content_type.len());
    header.extend_from_slice(key.as_bytes());
    // An entry without a known source is its own source: that is what a purge of its key removes.
    header.extend_from_slice(meta.source.unwrap_or(*key).as_bytes());
    header.push(match meta.kind {
        EntryKind::Image => 0,
        EntryKind::NotFound => 1,
        EntryKind::Refused => 2,
    });
    header.extend_from_slice(&meta.stored_at.to_le_bytes());
    header.extend_from_slice(&meta.expires_at.to_le_bytes());
    header.extend_from_slice(&meta.body_len.to_le_bytes());
    header.extend_from_slice(&meta.body_sha256);
    let f = &meta.freshness;
    let flags = [
        (f.max_age.is_some(), HAS_MAX_AGE),
        (f.expires_lifetime.is_some(), HAS_EXPIRES),
        (f.no_cache, NO_CACHE),
        (f.must_revalidate, MUST_REVALIDATE),
        (f.stale_while_revalidate.is_some(), HAS_STALE_WHILE_REVALIDATE),
    ];
    header.push(flags.iter().filter(|(set, _)| *set).fold(0, |all, (_, bit)| all | bit));
    header.extend_from_slice(&f.max_age.unwrap_or(0).to_le_bytes());
    header.extend_from_slice(&f.expires_lifetime.unwrap_or(0).to_le_bytes());
    header.extend_from_slice(&f.stale_while_revalidate.unwrap_or(0).to_le_bytes());
    put_str(&mut header, truncate_utf8(&meta.content_type, u16::MAX as usize));
    put_opt(&mut header, meta.etag.as_deref());
    put_opt(&mut header, meta.last_modified.as_deref());

    let mut out = Vec::with_capacity(PREAMBLE_LEN + header.len() + CHECK_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    // header.len() <= MAX_HEADER_LEN, far below u32::MAX.
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    let check = sha256(&out);
    out.extend_from_slice(&check[..CHECK_LEN]);
    out
}

/// Bounds-checked reader over untrusted bytes: every length is checked against what is left
/// before anything is sliced, so no input can panic or make us allocate beyond the file.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CorruptEntry> {
        if n > self.buf.len() {
            return Err(corrupt("field runs past end of header"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CorruptEntry> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, CorruptEntry> {
        Ok(self.array::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, CorruptEntry> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, CorruptEntry> {
        let len = u16::from_le_bytes(self.array()?) as usize;
        let raw = self.take(len)?;
        std::str::from_utf8(raw).map(str::to_owned).map_err(|_| corrupt("string is not UTF-8"))
    }

    fn opt_string(&mut self) -> Result<Option<String>, CorruptEntry> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.string().map(Some),
            _ => Err(corrupt("bad presence flag")),
        }
    }
}

/// How many bytes precede the body in a file starting with `preamble` (its first [`PREAMBLE_LEN`] bytes):
/// what a header-only read must load. Checks the magic, version and header length only.
pub fn head_len(preamble: &[u8]) -> Result<usize, CorruptEntry> {
    let header_len = check_preamble(preamble)?;
    Ok(PREAMBLE_LEN + header_len + CHECK_LEN)
}

/// The header length a valid preamble announces.
fn check_preamble(file: &[u8]) -> Result<usize, CorruptEntry> {
    if file.len() < PREAMBLE_LEN {
        return Err(corrupt("file shorter than preamble"));
    }
    if &file[0..8] != MAGIC {
        return Err(corrupt("bad magic"));
    }
    let version = u16::from_le_bytes([file[8], file[9]]);
    let fixed_len = match version {
        FORMAT_VERSION => FIXED_HEADER_LEN,
        FORMAT_VERSION_1 => FIXED_HEADER_LEN_V1,
        _ => return Err(corrupt("unsupported format version")),
    };
    let header_len = u32::from_le_bytes([file[10], file[11], file[12], file[13]]) as usize;
    if !(fixed_len..=MAX_HEADER_LEN).contains(&header_len) {
        return Err(corrupt("header length out of range"));
    }
    Ok(header_len)
}

/// Decodes and verifies the header of a cache file for `key` from `head`, its first bytes (at least
/// [`head_len`] of them; more are ignored), without reading or checking the body: the metadata as stored, with
/// the body length and digest the header claims.
pub fn decode_header(key: &CacheKey, head: &[u8]) -> Result<EntryMeta, CorruptEntry> {
    read_head(key, head).map(|(meta, _)| meta)
}

/// The header of `file` and where its body starts.
fn read_head(key: &CacheKey, file: &[u8]) -> Result<(EntryMeta, usize), CorruptEntry> {
    let header_len = check_preamble(file)?;
    let version = u16::from_le_bytes([file[8], file[9]]);
    // Checked arithmetic is unnecessary (header_len is bounded) but the comparison is not.
    let header_end = PREAMBLE_LEN + header_len;
    let body_start = header_end + CHECK_LEN;
    if body_start > file.len() {
        return Err(corrupt("header runs past end of file"));
    }
    let check = sha256(&file[..header_end]);
    if file[header_end..body_start] != check[..CHECK_LEN] {
        return Err(corrupt("header check mismatch"));
    }

    let mut r = Reader { buf: &file[PREAMBLE_LEN..header_end] };
    if r.array::<32>()? != *key.as_bytes() {
        return Err(corrupt("key mismatch"));
    }
    let source = if version == FORMAT_VERSION_1 { None } else { Some(CacheKey::from_bytes(r.array::<32>()?)) };
    let kind = match r.u8()? {
        0 => EntryKind::Image,
        1 => EntryKind::NotFound,
        2 => EntryKind::Refused,
        _ => return Err(corrupt("unknown entry kind")),
    };
    let stored_at = r.u64()?;
    let expires_at = r.u64()?;
    let body_len = r.u64()?;
    let body_sha256 = r.array::<32>()?;
    let freshness = if version == FORMAT_VERSION_1 { FreshnessInputs::default() } else { read_freshness(&mut r)? };
    let content_type = r.string()?;
    let etag = r.opt_string()?;
    let last_modified = r.opt_string()?;
    if !r.buf.is_empty() {
        return Err(corrupt("trailing bytes in header"));
    }
    let mut meta = EntryMeta {
        kind,
        content_type,
        etag,
        last_modified,
        stored_at,
        expires_at,
        freshness,
        source,
        source_tag: source.map(|source| Bytes::from(source.tag())).unwrap_or_default(),
        body_len,
        body_sha256,
        etag_token: etag_token_of(&body_sha256),
        answer_headers: AnswerHeaders::default(),
    };
    meta.renew_answer_headers();
    Ok((meta, body_start))
}

/// Decodes and verifies a whole cache file read for `key`. The body is a zero-copy slice
/// of `file_bytes`. Any failed check yields `CorruptEntry`; nothing here panics on input.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the file's buffer is handed over: the entry's body is a slice of it"
)]
pub fn decode(key: &CacheKey, file_bytes: Bytes) -> Result<Entry, CorruptEntry> {
    let (meta, body_start) = read_head(key, &file_bytes)?;
    let remaining = (file_bytes.len() - body_start) as u64;
    if meta.body_len != remaining {
        return Err(corrupt("body length does not match file size"));
    }
    let body = file_bytes.slice(body_start..);
    if sha256(&body) != meta.body_sha256 {
        return Err(corrupt("body digest mismatch"));
    }
    Ok(Entry { meta: Arc::new(meta), body })
}

/// The source key recorded in a version 2 file for `key`, from the file's first [`SOURCE_PROBE_LEN`] bytes
/// (`prefix`), without reading or verifying the rest: the disk index uses it to link variants to their source at
/// start-up without reading whole files. `None` for a version 1 file, a file that is not ours or not for `key`,
/// or one too short. A damaged source field can only make a purge miss the file; the file itself still fails its
/// header check when read, and is then deleted, never served.
pub fn probe_source(key: &CacheKey, prefix: &[u8]) -> Option<CacheKey> {
    let prefix = prefix.get(..SOURCE_PROBE_LEN)?;
    let version = u16::from_le_bytes([prefix[8], prefix[9]]);
    if &prefix[0..8] != MAGIC
        || version != FORMAT_VERSION
        || prefix[PREAMBLE_LEN..PREAMBLE_LEN + 32] != key.as_bytes()[..]
    {
        return None;
    }
    let mut source = [0u8; 32];
    source.copy_from_slice(&prefix[PREAMBLE_LEN + 32..SOURCE_PROBE_LEN]);
    Some(CacheKey::from_bytes(source))
}

/// The version 2 freshness block.
fn read_freshness(r: &mut Reader<'_>) -> Result<FreshnessInputs, CorruptEntry> {
    let flags = r.u8()?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(corrupt("unknown freshness flags"));
    }
    let max_age = r.u64()?;
    let expires_lifetime = r.u64()?;
    let stale_while_revalidate = r.u64()?;
    // We write zero for an absent value: anything else is a forged or damaged header.
    if (flags & HAS_MAX_AGE == 0 && max_age != 0)
        || (flags & HAS_EXPIRES == 0 && expires_lifetime != 0)
        || (flags & HAS_STALE_WHILE_REVALIDATE == 0 && stale_while_revalidate != 0)
    {
        return Err(corrupt("freshness value without its flag"));
    }
    Ok(FreshnessInputs {
        max_age: (flags & HAS_MAX_AGE != 0).then_some(max_age),
        expires_lifetime: (flags & HAS_EXPIRES != 0).then_some(expires_lifetime),
        no_cache: flags & NO_CACHE != 0,
        must_revalidate: flags & MUST_REVALIDATE != 0,
        stale_while_revalidate: (flags & HAS_STALE_WHILE_REVALIDATE != 0).then_some(stale_while_revalidate),
    })
}

#[cfg(test)]
#[path = "meta_tests.rs"]
mod tests;
