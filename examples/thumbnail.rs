//! `thumbnail WIDTH FORMAT FILE...`: transforms each file once with `mirage::transform::transform`
//! (`width=WIDTH,quality=80`, fit scale-down) and writes the results to a fresh temporary directory, which
//! is removed at exit. FORMAT is `jpeg` or `webp`.
//!
//! The in-process equivalent of `vipsthumbnail -s WIDTHx -o %s.jpg[Q=80] f1 f2 ...`, for
//! `benches/vs_libvips.sh`: one process, files read, transformed and written one after the other on one
//! thread, so that a batch of N minus a batch of 1 is the per-image cost without process start-up.

use std::path::Path;
use std::process::ExitCode;

use mirage::request::TransformOptions;
use mirage::transform::{Limits, OutputFormat, transform};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [width, format, files @ ..] = args.as_slice() else {
        eprintln!("usage: thumbnail WIDTH jpeg|webp FILE...");
        return ExitCode::from(2);
    };
    let (format, extension) = match format.as_str() {
        "jpeg" | "jpg" => (OutputFormat::Jpeg, "jpg"),
        "webp" => (OutputFormat::Webp, "webp"),
        other => {
            eprintln!("unsupported format {other:?} (jpeg or webp)");
            return ExitCode::from(2);
        }
    };
    let options = match TransformOptions::parse(&format!("width={width},quality=80")) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("bad width {width:?}: {error}");
            return ExitCode::from(2);
        }
    };
    let out_dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("temp dir: {error}");
            return ExitCode::FAILURE;
        }
    };
    let limits = Limits::default();
    for (index, file) in files.iter().enumerate() {
        let result = std::fs::read(file)
            .map_err(|e| e.to_string())
            .and_then(|source| transform(&source, &options, format, &limits).map_err(|e| e.to_string()))
            .and_then(|encoded| {
                let stem = Path::new(file).file_stem().and_then(|s| s.to_str()).unwrap_or("out");
                let path = out_dir.path().join(format!("{index}-{stem}.{extension}"));
                std::fs::write(path, &encoded.bytes).map_err(|e| e.to_string())
            });
        if let Err(error) = result {
            eprintln!("{file}: {error}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
