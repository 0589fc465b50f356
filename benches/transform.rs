//! The transform pipeline, in process: `mirage::transform::transform` (probe, scaled JPEG decode, Lanczos3
//! resize, encode) of the corpus photos to 300 px and 1200 px wide, JPEG and WebP out, quality 80 (the
//! quality the peers in `../shared/bench/` use).
//!
//! Run with `cargo bench --bench transform` (about 1-2 minutes; numbers and how to read them: BENCHMARKS.md,
//! "Transforms"). One thread, one image at a time: this is the per-image latency of the codec stack, the
//! number to put next to `vipsthumbnail`'s per-image cost (see `benches/vs_libvips.sh`, which compares the
//! two side by side in one hyperfine run). Sample counts are kept small so the whole bench stays short on a
//! shared 2-core machine; criterion still reports the median and its spread.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mirage::request::TransformOptions;
use mirage::transform::{Limits, OutputFormat, probe, transform};

/// The corpus photos (baseline 4:2:0 JPEGs, see `../shared/bench/corpus/README.md`).
const PHOTOS: [(&str, &[u8]); 3] = [
    ("500x355", include_bytes!("fixtures/photo-500x355.jpg")),
    ("1920x1080", include_bytes!("fixtures/photo-1920x1080.jpg")),
    ("4000x3000", include_bytes!("fixtures/photo-4000x3000.jpg")),
];

const WIDTHS: [u32; 2] = [300, 1200];

const FORMATS: [(&str, OutputFormat); 2] = [("jpeg", OutputFormat::Jpeg), ("webp", OutputFormat::Webp)];

fn transforms(c: &mut Criterion) {
    let limits = Limits::default();
    for (name, source) in PHOTOS {
        let info = probe(source).expect("corpus photo probes");
        let mut group = c.benchmark_group(format!("transform/{name}"));
        group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
        // Source pixels per second: comparable across output sizes of the same photo.
        group.throughput(Throughput::Elements(u64::from(info.width) * u64::from(info.height)));
        for width in WIDTHS {
            // `scale-down` (the default fit) never enlarges: 1200 px of the 500 px photo is a re-encode.
            let options = TransformOptions::parse(&format!("width={width},quality=80")).expect("valid options");
            for (format_name, format) in FORMATS {
                let once = transform(source, &options, format, &limits).expect("transform succeeds");
                assert_eq!(once.width, width.min(info.width), "{name} -> {width} {format_name}");
                group.bench_function(BenchmarkId::new(format_name, width), |b| {
                    b.iter(|| transform(black_box(source), &options, format, &limits).expect("transform succeeds"));
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, transforms);
criterion_main!(benches);
