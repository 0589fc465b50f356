//! `CacheKey`: the SHA-256 digest that names one cached response, plus its hex and shard-path forms.

use std::fmt;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// Domain tag hashed before the parts, so a future change of encoding can bump the version
/// instead of silently colliding with keys written by this one.
const DOMAIN_TAG: &[u8] = b"mirage-cache-key/v1";

/// The SHA-256 digest that identifies one cache entry in every tier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// Hashes `parts` with an unambiguous encoding: the domain tag, then for each part its length
    /// (u64 little-endian) and its bytes, so `["ab", "c"]` and `["a", "bc"]` get different keys.
    pub fn from_parts(parts: &[&[u8]]) -> CacheKey {
        let mut hasher = Sha256::new();
        hasher.update(DOMAIN_TAG);
        for part in parts {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        CacheKey(hasher.finalize().into())
    }

    /// Wraps an existing 32-byte digest (for example one read back from a disk header).
    pub fn from_bytes(bytes: [u8; 32]) -> CacheKey {
        CacheKey(bytes)
    }

    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// `mirage-` and the first 16 hex digits of the key: the short name of a source that answers carry as a CDN
    /// cache tag (`Cache-Tag`, `Surrogate-Key`) and that a purge reports, so a CDN can drop a source and every
    /// variant of it at once. 64 bits: collisions between the sources of one site are not a practical concern.
    pub fn tag(&self) -> String {
        let mut digits = [0u8; 16];
        // 8 bytes always fit 16 hex digits; hex digits are ASCII. One allocation: made once per entry read.
        let _ = hex::encode_to_slice(&self.0[..8], &mut digits);
        let mut tag = String::with_capacity(7 + 16);
        tag.push_str("mirage-");
        tag.push_str(std::str::from_utf8(&digits).unwrap_or_default());
        tag
    }

    /// Parses 64 hex characters (either case) back into a key; anything else is `None`.
    pub fn from_hex(s: &str) -> Option<CacheKey> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(CacheKey(out))
    }

    /// Relative path `ab/cd/<hex>`: two levels of 256-way sharding (nginx style) keep every
    /// directory small even with millions of entries.
    pub fn shard_path(&self) -> PathBuf {
        let hex = self.to_hex();
        let mut path = PathBuf::from(&hex[0..2]);
        path.push(&hex[2..4]);
        path.push(&hex);
        path
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.to_hex())
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_unambiguous() {
        let a = CacheKey::from_parts(&[b"ab", b"c"]);
        let b = CacheKey::from_parts(&[b"a", b"bc"]);
        let c = CacheKey::from_parts(&[b"abc"]);
        let d = CacheKey::from_parts(&[b"abc", b""]);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(c, d);
        assert_eq!(a, CacheKey::from_parts(&[b"ab", b"c"]));
    }

    #[test]
    fn matches_documented_encoding() {
        // Recompute by hand so a change to the encoding (which would orphan every disk entry)
        // fails here rather than silently.
        let mut h = Sha256::new();
        h.update(b"mirage-cache-key/v1");
        h.update(2u64.to_le_bytes());
        h.update(b"hi");
        let expected: [u8; 32] = h.finalize().into();
        assert_eq!(CacheKey::from_parts(&[b"hi"]).as_bytes(), &expected);
    }

    #[test]
    fn hex_round_trip_and_shard_path() {
        let k = CacheKey::from_parts(&[b"https://example.com/a.jpg", b"w=100"]);
        let hex = k.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(CacheKey::from_hex(&hex), Some(k));
        assert_eq!(CacheKey::from_hex(&hex.to_uppercase()), Some(k));
        assert_eq!(CacheKey::from_hex(&hex[..63]), None);
        assert_eq!(CacheKey::from_hex(&format!("{}zz", &hex[..62])), None);
        let expected = PathBuf::from(format!("{}/{}/{}", &hex[0..2], &hex[2..4], hex));
        assert_eq!(k.shard_path(), expected);
        assert_eq!(format!("{k:?}"), format!("CacheKey({hex})"));
    }

    #[test]
    fn from_hex_rejects_non_ascii_without_panicking() {
        // 64 bytes but multi-byte chars: slicing by byte index must not be attempted.
        let s = "é".repeat(32);
        assert_eq!(s.len(), 64);
        assert_eq!(CacheKey::from_hex(&s), None);
    }
}
