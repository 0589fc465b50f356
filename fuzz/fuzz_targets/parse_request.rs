//! The URL and options grammar on arbitrary text: it must never panic, and whatever parses must re-parse from
//! its canonical form to the same value (the cache key is made from that form).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mirage::request::{ImageRequest, Target, TransformOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Split the input into the three things a request carries: options segment, target, Accept header.
    let mut parts = text.splitn(3, '\n');
    let options = parts.next().unwrap_or_default();
    let query = parts.next().unwrap_or_default();
    let accept = parts.next();

    if let Ok(target) = Target::parse(query) {
        let again = Target::parse(target.canonical()).expect("a canonical target re-parses");
        assert_eq!(again.canonical(), target.canonical());
    }
    if let Ok(parsed) = TransformOptions::parse(options) {
        let canonical = parsed.canonical();
        assert_eq!(TransformOptions::parse(&canonical).as_ref(), Ok(&parsed), "canonical {canonical:?}");
    }
    let _ = ImageRequest::parse(options, query, accept);
    let _ = TransformOptions::parse(text);
    let _ = Target::parse(text);
});
