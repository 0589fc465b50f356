//! The URL and options grammar on arbitrary text: it must never panic, and whatever parses must re-parse from
//! its canonical form to the same value (the cache key is made from that form).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mirage::request::{Route, Target, TransformOptions, parse_route};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Split the input into the three things a request carries: path (a bare first line is taken as the options
    // segment `/{line}/`), target, Accept header.
    let mut parts = text.splitn(3, '\n');
    let first = parts.next().unwrap_or_default();
    let query = parts.next().unwrap_or_default();
    let accept = parts.next();
    let options = first.trim_matches('/');
    let path = if first.starts_with('/') { first.to_owned() } else { format!("/{first}/") };

    if let Ok(target) = Target::parse(query) {
        let again = Target::parse(target.canonical()).expect("a canonical target re-parses");
        assert_eq!(again.canonical(), target.canonical());
    }
    if let Ok(parsed) = TransformOptions::parse(options) {
        let canonical = parsed.canonical();
        assert_eq!(TransformOptions::parse(&canonical).as_ref(), Ok(&parsed), "canonical {canonical:?}");
    }
    // The server's own parser: the canonical signed path it prints must read back as the same request.
    if let Ok(Route::Image { request, .. }) = parse_route(&path, query, accept) {
        let signed = request.signed_path("x");
        let (again_path, again_query) = signed.split_once('?').expect("a signed path has a query");
        let again = parse_route(again_path, again_query, accept);
        assert_eq!(again, Ok(Route::Image { request, signature: Some("x".to_owned()) }), "signed {signed:?}");
    }
    let _ = TransformOptions::parse(text);
    let _ = Target::parse(text);
});
