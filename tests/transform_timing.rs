//! Timings of `transform` on the benchmark corpus photos (not a regression test: run by hand, in release, on
//! a quiet machine): `cargo test --release --test transform_timing -- --ignored --nocapture`. The criterion
//! benches in `benches/` are the reference numbers; this is the quick look.

use std::time::{Duration, Instant};

use mirage::request::TransformOptions;
use mirage::transform::{self, Limits, OutputFormat};

fn corpus(name: &str) -> Option<Vec<u8>> {
    std::fs::read(format!("{}/../shared/bench/corpus/{name}", env!("CARGO_MANIFEST_DIR"))).ok()
}

#[test]
#[ignore = "timing, run by hand in release mode"]
fn transform_timings() {
    for name in ["photo-4000x3000.jpg", "photo-1920x1080.jpg", "photo-500x355.jpg"] {
        let Some(source) = corpus(name) else {
            println!("{name}: not found, skipped");
            continue;
        };
        for width in [300, 1200] {
            for output in [OutputFormat::Jpeg, OutputFormat::Webp] {
                let options = TransformOptions::parse(&format!("width={width}")).expect("options");
                let mut times: Vec<Duration> = Vec::new();
                let mut bytes = 0;
                for _ in 0..15 {
                    let started = Instant::now();
                    let encoded =
                        transform::transform(&source, &options, output, &Limits::default()).expect("transform");
                    times.push(started.elapsed());
                    bytes = encoded.bytes.len();
                }
                times.sort();
                println!(
                    "{name} -> w={width} {output:?}: median {:.2} ms, min {:.2} ms, {bytes} bytes",
                    times[times.len() / 2].as_secs_f64() * 1e3,
                    times[0].as_secs_f64() * 1e3,
                );
            }
        }
    }
}
