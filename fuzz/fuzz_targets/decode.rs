//! The decode path on arbitrary bytes: header probe, then the whole transform with small limits. Errors are
//! fine; panics, aborts, hangs and out-of-memory are findings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mirage::request::TransformOptions;
use mirage::transform::{Limits, OutputFormat, probe, transform};

fuzz_target!(|data: &[u8]| {
    let Ok(info) = probe(data) else { return };
    assert!(info.width > 0 && info.height > 0);
    // Small limits keep each run fast and make the limit checks themselves part of what is fuzzed.
    let limits =
        Limits { max_source_pixels: 1 << 20, max_output_pixels: 1 << 16, max_avif_pixels: 1 << 12, max_frames: 16 };
    let options = TransformOptions::parse("w=32,h=32,fit=cover").expect("static options parse");
    // The first byte picks the output format, so every encoder sees decoded pixels.
    let output = match data.first().copied().unwrap_or(0) % 5 {
        0 => OutputFormat::Png,
        1 => OutputFormat::Jpeg,
        2 => OutputFormat::Webp,
        3 => OutputFormat::Avif,
        _ => OutputFormat::Gif,
    };
    if let Ok(encoded) = transform(data, &options, output, &limits) {
        assert!(u64::from(encoded.width) * u64::from(encoded.height) <= limits.max_output_pixels);
    }
});
