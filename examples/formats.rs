//! Encoded sizes and encode times per output format, for `benches/formats.py` (which decodes the files and
//! scores them). One thread, in process, median of REPS runs; prints one JSON object per line.
//!
//! - `formats transform FILE OPTIONS OUTDIR REPS`: `mirage::transform::transform` of FILE with OPTIONS
//!   (e.g. `w=300`) to PNG (the lossless reference: the same decode and resize), JPEG, WebP and AVIF at
//!   Mirage's settings; the time is the whole transform (decode, resize, encode).
//! - `formats sweep PNG OUTDIR REPS SPEEDS QUALITIES [DEPTHS]`: ravif alone on the pixels of PNG (a reference
//!   from `transform`), at each rav1e speed, ravif quality and bit depth (comma-separated lists; depth 8 or 10,
//!   default 10), with Mirage's other encoder settings (one thread, 4:4:4); the time is the AVIF encode only.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use mirage::request::TransformOptions;
use mirage::transform::{Limits, OutputFormat, transform};

fn median_ms(reps: usize, mut run: impl FnMut() -> Result<Vec<u8>, String>) -> Result<(f64, Vec<u8>), String> {
    let mut times = Vec::with_capacity(reps);
    let mut bytes = Vec::new();
    for _ in 0..reps.max(1) {
        let started = Instant::now();
        bytes = run()?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], bytes))
}

fn transform_mode(file: &str, options: &str, out_dir: &Path, reps: usize) -> Result<(), String> {
    let source = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
    let parsed = TransformOptions::parse(options).map_err(|e| e.to_string())?;
    let stem = Path::new(file).file_stem().and_then(|s| s.to_str()).unwrap_or("image");
    let limits = Limits { max_avif_pixels: u64::MAX, ..Limits::default() };
    for (format, name) in [
        (OutputFormat::Png, "png"),
        (OutputFormat::Jpeg, "jpeg"),
        (OutputFormat::Webp, "webp"),
        (OutputFormat::Avif, "avif"),
    ] {
        let mut size = (0, 0);
        let (ms, bytes) = median_ms(reps, || {
            let encoded = transform(&source, &parsed, format, &limits).map_err(|e| e.to_string())?;
            size = (encoded.width, encoded.height);
            Ok(encoded.bytes)
        })?;
        let out = out_dir.join(format!("{stem}-{}.{name}", options.replace([',', '='], "")));
        std::fs::write(&out, &bytes).map_err(|e| e.to_string())?;
        let line = serde_json::json!({
            "mode": "transform", "file": file, "options": options, "format": name, "width": size.0,
            "height": size.1, "bytes": bytes.len(), "ms": ms, "out": out,
        });
        println!("{line}");
    }
    Ok(())
}

fn list<T: std::str::FromStr>(text: &str) -> Result<Vec<T>, String> {
    text.split(',').map(|item| item.trim().parse().map_err(|_| format!("bad list item {item:?}"))).collect()
}

fn sweep_mode(png: &str, out_dir: &Path, reps: usize, lists: [&str; 3]) -> Result<(), String> {
    let [speeds, qualities, depths] = lists;
    use rgb::FromSlice;
    let image = image::open(png).map_err(|e| format!("{png}: {e}"))?.into_rgb8();
    let (width, height) = (image.width() as usize, image.height() as usize);
    let stem = Path::new(png).file_stem().and_then(|s| s.to_str()).unwrap_or("image");
    for (speed, quality, depth) in list::<u8>(speeds)?.into_iter().flat_map(|speed| {
        let qualities = list::<f32>(qualities).unwrap_or_default();
        let depths = list::<u8>(depths).unwrap_or_default();
        qualities.into_iter().flat_map(move |q| depths.clone().into_iter().map(move |d| (speed, q, d)))
    }) {
        {
            let bit_depth = if depth == 8 { ravif::BitDepth::Eight } else { ravif::BitDepth::Ten };
            let encoder = ravif::Encoder::new()
                .with_bit_depth(bit_depth)
                .with_quality(quality)
                .with_alpha_quality(quality)
                .with_speed(speed)
                .with_num_threads(Some(1));
            let (ms, bytes) = median_ms(reps, || {
                let pixels = ravif::Img::new(image.as_raw().as_rgb(), width, height);
                encoder.encode_rgb(pixels).map(|encoded| encoded.avif_file).map_err(|e| e.to_string())
            })?;
            let out = out_dir.join(format!("{stem}-s{speed}-q{quality}-d{depth}.avif"));
            std::fs::write(&out, &bytes).map_err(|e| e.to_string())?;
            let line = serde_json::json!({
                "mode": "sweep", "file": png, "speed": speed, "quality": quality, "depth": depth, "width": width,
                "height": height, "bytes": bytes.len(), "ms": ms, "out": out,
            });
            println!("{line}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps = |text: &str| text.parse::<usize>().map_err(|_| format!("bad REPS {text:?}"));
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["transform", file, options, out_dir, n] => {
            reps(n).and_then(|n| transform_mode(file, options, Path::new(out_dir), n))
        }
        ["sweep", png, out_dir, n, speeds, qualities] => {
            reps(n).and_then(|n| sweep_mode(png, Path::new(out_dir), n, [speeds, qualities, "10"]))
        }
        ["sweep", png, out_dir, n, speeds, qualities, depths] => {
            reps(n).and_then(|n| sweep_mode(png, Path::new(out_dir), n, [speeds, qualities, depths]))
        }
        _ => Err("usage: formats transform FILE OPTIONS OUTDIR REPS | sweep PNG OUTDIR REPS SPEEDS QUALITIES [DEPTHS]"
            .into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
