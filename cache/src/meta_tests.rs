//! Unit tests for the entry encoding: round trips and every kind of corruption.

use super::*;

fn key() -> CacheKey {
    CacheKey::from_parts(&[b"https://example.com/cat.jpg", b"w=300"])
}

fn sample() -> Entry {
    Entry::image("image/jpeg", Bytes::from_static(b"\xff\xd8 pretend jpeg body \xff\xd9"), 1_000, 2_000)
        .with_validators(Validators {
            etag: Some("\"abc\"".to_owned()),
            last_modified: Some("Wed, 21 Oct 2015 07:28:00 GMT".to_owned()),
        })
        .with_freshness(inputs())
}

/// Freshness inputs with every field set, so a round trip or a flipped byte touches all of them.
fn inputs() -> FreshnessInputs {
    FreshnessInputs {
        max_age: Some(7_200),
        expires_lifetime: Some(86_400),
        no_cache: true,
        must_revalidate: true,
        stale_while_revalidate: Some(30),
    }
}

fn encode_file(key: &CacheKey, entry: &Entry) -> Vec<u8> {
    let mut file = encode_header(key, &entry.meta);
    file.extend_from_slice(&entry.body);
    file
}

/// Builds a file around a hand-made header with a *valid* check, so the test reaches the
/// field-level validation instead of stopping at the header check.
fn forge(header: &[u8], body: &[u8]) -> Bytes {
    forge_version(FORMAT_VERSION, header, body)
}

/// `forge` for a given format version.
fn forge_version(version: u16, header: &[u8], body: &[u8]) -> Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header);
    let check = sha256(&out);
    out.extend_from_slice(&check[..CHECK_LEN]);
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// A valid header for `body`, with a hook to tamper with fields before the strings.
fn header_for(body: &[u8], kind: u8, body_len: u64, tail: &[u8]) -> Vec<u8> {
    header_with_freshness(body, kind, body_len, &freshness_block(HAS_MAX_AGE, 600, 0), tail)
}

/// A version 2 freshness block (without `stale-while-revalidate`).
fn freshness_block(flags: u8, max_age: u64, expires_lifetime: u64) -> Vec<u8> {
    [&[flags][..], &max_age.to_le_bytes(), &expires_lifetime.to_le_bytes(), &0u64.to_le_bytes()].concat()
}

/// A header for `body` with `freshness` in place of the freshness block (empty: a version 1 header).
fn header_with_freshness(body: &[u8], kind: u8, body_len: u64, freshness: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(key().as_bytes());
    if !freshness.is_empty() {
        // Version 2 records the source key after the key; here the entry is its own source.
        h.extend_from_slice(key().as_bytes());
    }
    h.push(kind);
    h.extend_from_slice(&1u64.to_le_bytes());
    h.extend_from_slice(&2u64.to_le_bytes());
    h.extend_from_slice(&body_len.to_le_bytes());
    h.extend_from_slice(&sha256(body));
    h.extend_from_slice(freshness);
    h.extend_from_slice(tail);
    h
}

const GOOD_TAIL: &[u8] = b"\x03\x00abc\x00\x00";

#[test]
fn round_trip_with_and_without_validators() {
    let k = key();
    let original = CacheKey::from_parts(&[b"https://example.com/cat.jpg"]);
    for entry in [sample().with_source(original), Entry::not_found(5, 6).with_source(k), Entry::refused("x", 5, 6)] {
        // An entry written without a source is read back as its own source, which is what it was treated as.
        let entry = if entry.meta().source().is_none() { entry.with_source(k) } else { entry };
        let file = Bytes::from(encode_file(&k, &entry));
        let back = decode(&k, file.clone()).expect("decodes");
        assert_eq!(*back.meta, *entry.meta);
        assert_eq!(back.body, entry.body);
        // Zero copy: the body points into the file buffer.
        let start = file.as_ptr() as usize;
        let body = back.body.as_ptr() as usize;
        assert!(body >= start && body + back.body.len() <= start + file.len());
    }
}

#[test]
fn forged_good_header_decodes() {
    // Guards the forging helper: if this failed, the rejection tests below would prove nothing.
    let body = b"xyz";
    let file = forge(&header_for(body, 0, 3, GOOD_TAIL), body);
    let e = decode(&key(), file).expect("valid forged file");
    assert_eq!(e.meta.content_type, "abc");
    assert_eq!(e.meta.freshness, FreshnessInputs { max_age: Some(600), ..FreshnessInputs::default() });
}

#[test]
fn version_1_files_are_still_read_with_default_freshness() {
    let body = b"xyz";
    let v1 = header_with_freshness(body, 0, 3, &[], GOOD_TAIL);
    let e = decode(&key(), forge_version(1, &v1, body)).expect("a version 1 file stays valid");
    assert_eq!((e.meta.stored_at, e.meta.expires_at, e.meta.content_type.as_str()), (1, 2, "abc"));
    assert_eq!(e.meta.freshness, FreshnessInputs::default());
    assert_eq!((e.meta.source(), e.meta.source_tag()), (None, None));
    assert_eq!(probe_source(&key(), &forge_version(1, &v1, body)), None);
    assert_eq!(e.body.as_ref(), body);
    // The same bytes claiming version 2 are short of the freshness block: rejected, not misread.
    assert!(decode(&key(), forge_version(2, &v1, body)).is_err());
    // A version 2 header claiming version 1 has 17 bytes the old layout does not know.
    let v2 = header_for(body, 0, 3, GOOD_TAIL);
    assert!(decode(&key(), forge_version(1, &v2, body)).is_err());
    // A version 1 file still has its header check.
    let mut damaged = forge_version(1, &v1, body).to_vec();
    damaged[PREAMBLE_LEN + 33] ^= 1;
    assert_eq!(decode(&key(), Bytes::from(damaged)).unwrap_err().reason, "header check mismatch");
}

#[test]
fn freshness_inputs_round_trip_in_every_combination() {
    let k = key();
    for bits in 0..32u8 {
        let inputs = FreshnessInputs {
            max_age: (bits & 1 != 0).then_some(0),
            expires_lifetime: (bits & 2 != 0).then_some(u64::MAX),
            no_cache: bits & 4 != 0,
            must_revalidate: bits & 8 != 0,
            stale_while_revalidate: (bits & 16 != 0).then_some(60),
        };
        let entry = Entry::image("image/png", Bytes::from_static(b"png"), 7, 9).with_freshness(inputs);
        let back = decode(&k, Bytes::from(encode_file(&k, &entry))).expect("decodes");
        assert_eq!(back.meta.freshness, inputs, "bits {bits:#06b}");
    }
}

#[test]
fn every_single_byte_flip_is_rejected() {
    let k = key();
    let file = encode_file(&k, &sample());
    for i in 0..file.len() {
        for mask in [0x01u8, 0x80] {
            let mut bad = file.clone();
            bad[i] ^= mask;
            assert!(decode(&k, Bytes::from(bad)).is_err(), "flip of byte {i} (mask {mask:#x}) accepted");
        }
    }
}

#[test]
fn every_truncation_and_extension_is_rejected() {
    let k = key();
    let file = encode_file(&k, &sample());
    for len in 0..file.len() {
        let r = decode(&k, Bytes::copy_from_slice(&file[..len]));
        assert!(r.is_err(), "truncation to {len} accepted");
    }
    let mut longer = file.clone();
    longer.push(0);
    assert!(decode(&k, Bytes::from(longer)).is_err());
}

#[test]
fn rejects_wrong_magic_version_and_key() {
    let k = key();
    let file = encode_file(&k, &sample());
    let mut bad = file.clone();
    bad[0] = b'X';
    assert_eq!(decode(&k, Bytes::from(bad)).unwrap_err().reason, "bad magic");
    for version in [0u16, 3, u16::MAX] {
        let mut bad = file.clone();
        bad[8..10].copy_from_slice(&version.to_le_bytes());
        assert_eq!(decode(&k, Bytes::from(bad)).unwrap_err().reason, "unsupported format version");
    }
    let other = CacheKey::from_parts(&[b"other"]);
    assert_eq!(decode(&other, Bytes::from(file)).unwrap_err().reason, "key mismatch");
}

#[test]
fn rejects_absurd_lengths_without_allocating() {
    let k = key();
    let mut file = encode_file(&k, &sample());
    file[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(decode(&k, Bytes::from(file)).unwrap_err().reason, "header length out of range");

    let body = b"xyz";
    let cases: [(Vec<u8>, &str); 6] = [
        (header_for(body, 0, u64::MAX, GOOD_TAIL), "body length does not match file size"),
        (header_for(body, 0, 2, GOOD_TAIL), "body length does not match file size"),
        (header_for(body, 0, 3, b"\xff\xffabc\x00\x00"), "field runs past end of header"),
        (header_for(body, 0, 3, b"\x03\x00abc\x07\x00"), "bad presence flag"),
        (header_for(body, 9, 3, GOOD_TAIL), "unknown entry kind"),
        (header_for(body, 0, 3, b"\x02\x00\xc3\x28\x00\x00"), "string is not UTF-8"),
    ];
    for (header, reason) in cases {
        assert_eq!(decode(&k, forge(&header, body)).unwrap_err().reason, reason);
    }
    let unknown_flag = header_with_freshness(body, 0, 3, &freshness_block(1 << 5, 0, 0), GOOD_TAIL);
    assert_eq!(decode(&k, forge(&unknown_flag, body)).unwrap_err().reason, "unknown freshness flags");
    let stray_value = header_with_freshness(body, 0, 3, &freshness_block(HAS_MAX_AGE, 600, 5), GOOD_TAIL);
    assert_eq!(decode(&k, forge(&stray_value, body)).unwrap_err().reason, "freshness value without its flag");
    let mut stray_window = freshness_block(0, 0, 0);
    stray_window[17] = 1;
    let stray_window = header_with_freshness(body, 0, 3, &stray_window, GOOD_TAIL);
    assert_eq!(decode(&k, forge(&stray_window, body)).unwrap_err().reason, "freshness value without its flag");
    let short_v1 = header_with_freshness(body, 0, 3, &[], b"");
    assert_eq!(decode(&k, forge_version(1, &short_v1[..50], body)).unwrap_err().reason, "header length out of range");
    let mut trailing = header_for(body, 0, 3, GOOD_TAIL);
    trailing.push(0);
    assert_eq!(decode(&k, forge(&trailing, body)).unwrap_err().reason, "trailing bytes in header");
    // Right length, wrong bytes.
    let h = header_for(body, 0, 3, GOOD_TAIL);
    assert_eq!(decode(&k, forge(&h, b"xyZ")).unwrap_err().reason, "body digest mismatch");
}

#[test]
fn oversized_validator_is_dropped_not_truncated() {
    let k = key();
    let mut meta = EntryMeta::clone(&sample().meta);
    meta.etag = Some("e".repeat(70_000));
    meta.content_type = "é".repeat(40_000); // 80 000 bytes: cut on a char boundary
    let mut file = encode_header(&k, &meta);
    file.extend_from_slice(&sample().body);
    let back = decode(&k, Bytes::from(file)).expect("decodes");
    assert_eq!(back.meta.etag, None);
    assert_eq!(back.meta.last_modified, meta.last_modified);
    assert!(u16::try_from(back.meta.content_type.len()).is_ok());
    assert!(back.meta.content_type.chars().all(|c| c == 'é'));
}

#[test]
fn freshness_refresh_and_etag_token() {
    let e = sample();
    assert!(e.is_fresh(1_999));
    assert!(!e.is_fresh(2_000));
    let updated = FreshnessInputs { max_age: Some(60), ..FreshnessInputs::default() };
    let r = e.refreshed(3_000, 4_000, updated, Validators { etag: None, last_modified: Some("new".to_owned()) });
    assert_eq!(r.meta.stored_at, 3_000);
    assert_eq!(r.meta.expires_at, 4_000);
    assert_eq!(r.meta.freshness, updated);
    assert_eq!(r.meta.etag, e.meta.etag);
    assert_eq!(r.meta.last_modified.as_deref(), Some("new"));
    assert_eq!(r.body.as_ptr(), e.body.as_ptr());
    let t = e.etag_token();
    assert_eq!(t.len(), 34);
    assert!(t.starts_with('"') && t.ends_with('"'));
    assert_eq!(&t[1..33], &hex::encode(e.meta.body_sha256)[..32]);
    assert_eq!(e.meta.body_len, e.body.len() as u64);
}

#[test]
fn named_constructors_derive_length_and_digest_from_the_body() {
    let image = Entry::image("image/png", Bytes::from_static(b"png"), 7, 9);
    assert_eq!(image.meta().kind, EntryKind::Image);
    assert_eq!((image.meta().stored_at, image.meta().expires_at), (7, 9));
    assert_eq!((image.meta().etag.as_deref(), image.meta().last_modified.as_deref()), (None, None));
    assert_eq!(image.meta().body_len(), 3);
    assert_eq!(image.meta().body_sha256(), &sha256(b"png"));
    let validated = image.clone().with_validators(Validators { etag: Some("\"v\"".to_owned()), last_modified: None });
    assert_eq!(validated.meta().etag.as_deref(), Some("\"v\""));
    // The builder copies the shared metadata instead of changing the entry it came from.
    assert_eq!(image.meta().etag, None);
    let gone = Entry::not_found(7, 9);
    assert_eq!(gone.meta().kind, EntryKind::NotFound);
    assert_eq!((gone.meta().body_len(), gone.body().len()), (0, 0));
    assert_eq!(gone.meta().content_type, "");
    let refused = Entry::refused("upstream_status/403", 7, 9);
    assert_eq!(refused.meta().kind, EntryKind::Refused);
    assert_eq!((refused.meta().content_type.as_str(), refused.body().len()), ("upstream_status/403", 0));
}

#[test]
fn the_source_key_round_trips_and_is_probed_from_the_file_start() {
    let k = key();
    let original = CacheKey::from_parts(&[b"https://example.com/cat.jpg"]);
    let file = encode_file(&k, &sample().with_source(original));
    let back = decode(&k, Bytes::from(file.clone())).expect("decodes");
    assert_eq!(back.meta().source(), Some(original));
    assert_eq!(back.meta().source_tag().map(Bytes::as_ref), Some(original.tag().as_bytes()));
    assert_eq!(original.tag(), format!("mirage-{}", &original.to_hex()[..16]));
    // The probe needs only the first bytes, and checks they belong to this key and format.
    assert_eq!(probe_source(&k, &file[..SOURCE_PROBE_LEN]), Some(original));
    assert_eq!(probe_source(&k, &file[..SOURCE_PROBE_LEN - 1]), None);
    assert_eq!(probe_source(&CacheKey::from_parts(&[b"other"]), &file), None);
    let mut bad_magic = file.clone();
    bad_magic[0] ^= 1;
    assert_eq!(probe_source(&k, &bad_magic), None);
    // A file written without a source names itself.
    let own = encode_file(&k, &sample());
    assert_eq!(probe_source(&k, &own), Some(k));
    // A flipped source byte is caught by the header check when the file is read.
    let mut flipped = file;
    flipped[SOURCE_PROBE_LEN - 1] ^= 1;
    assert_eq!(decode(&k, Bytes::from(flipped)).unwrap_err().reason, "header check mismatch");
}

#[test]
fn answer_headers_follow_what_they_come_from() {
    let entry = sample();
    assert_eq!(entry.meta().content_type_value().as_ref(), b"image/jpeg");
    assert_eq!(entry.meta().last_modified_value().as_ref(), b"Wed, 21 Oct 2015 07:28:00 GMT");
    // Without upstream's date: when it was stored, as an HTTP-date.
    let plain = Entry::image("image/png", Bytes::from_static(b"png"), 1_000_000_000, 1_000_000_100);
    assert_eq!(plain.meta().last_modified_value().as_ref(), b"Sun, 09 Sep 2001 01:46:40 GMT");
    // A revalidation without a new date moves the stored time, and with it the date made from it.
    let renewed = plain.refreshed(1_000_000_060, 1_000_000_200, FreshnessInputs::default(), Validators::default());
    assert_eq!(renewed.meta().last_modified_value().as_ref(), b"Sun, 09 Sep 2001 01:47:40 GMT");
    // Upstream's new date replaces the old one.
    let dated = Validators { etag: None, last_modified: Some("Thu, 01 Jan 2015 00:00:00 GMT".to_owned()) };
    let renewed = entry.refreshed(3_000, 4_000, inputs(), dated);
    assert_eq!(renewed.meta().last_modified_value().as_ref(), b"Thu, 01 Jan 2015 00:00:00 GMT");
    // A file read back makes them again, equal to the written entry's.
    let back = decode(&key(), Bytes::from(encode_file(&key(), &entry))).expect("valid");
    assert_eq!(back.meta().content_type_value(), entry.meta().content_type_value());
    assert_eq!(back.meta().last_modified_value(), entry.meta().last_modified_value());
    let plain_back = decode(&key(), Bytes::from(encode_file(&key(), &plain))).expect("valid");
    assert_eq!(plain_back.meta().last_modified_value(), plain.meta().last_modified_value());
}
