//! Pixels to bytes: JPEG with libjpeg-turbo's fastest settings (mozjpeg crate, no trellis), PNG and GIF with
//! `image`, lossy WebP with libwebp, AVIF with rav1e (ravif crate). Nothing from the source's metadata is
//! written except an ICC profile where the encoder takes one (JPEG, PNG): EXIF is stripped, orientation having
//! been applied to the pixels.

use std::panic::{AssertUnwindSafe, catch_unwind};

use image::codecs::gif::GifEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};

use super::bitmap::Bitmap;
use super::{OutputFormat, TransformError};

fn failed(error: impl std::fmt::Display) -> TransformError {
    TransformError::Encode(error.to_string())
}

fn colour_type(image: &Bitmap) -> ExtendedColorType {
    if image.has_alpha() { ExtendedColorType::Rgba8 } else { ExtendedColorType::Rgb8 }
}

/// Encodes `image` (RGB for JPEG; RGB or RGBA otherwise) at `quality` (JPEG and WebP only).
pub(crate) fn encode(
    image: &Bitmap,
    format: OutputFormat,
    quality: u8,
    icc: Option<&[u8]>,
) -> Result<Vec<u8>, TransformError> {
    let mut bytes = encode_any(image, format, quality, icc)?;
    // Encoders grow their output as they go (JPEG from a guess, PNG and GIF by doubling), so it ends with spare
    // capacity, up to as much again. The cache weighs entries by length and keeps them for hours: give the spare
    // back now (a shrinking realloc, usually in place) so what is held is what is counted.
    bytes.shrink_to_fit();
    Ok(bytes)
}

fn encode_any(
    image: &Bitmap,
    format: OutputFormat,
    quality: u8,
    icc: Option<&[u8]>,
) -> Result<Vec<u8>, TransformError> {
    match format {
        OutputFormat::Jpeg => jpeg(image, quality, icc),
        OutputFormat::Png => png(image, icc),
        OutputFormat::Webp => webp(image, quality),
        OutputFormat::Gif => {
            let mut bytes = Vec::new();
            let mut encoder = GifEncoder::new_with_speed(&mut bytes, GIF_SPEED);
            encoder.encode(&image.data, image.width, image.height, colour_type(image)).map_err(failed)?;
            drop(encoder);
            Ok(bytes)
        }
        OutputFormat::Avif => avif(image, quality),
    }
}

/// NeuQuant sampling factor for GIF palettes (1 best and slowest, 30 fastest): 10 is what gifsicle-like
/// tools consider a fair trade.
pub(crate) const GIF_SPEED: i32 = 10;

fn jpeg(image: &Bitmap, quality: u8, icc: Option<&[u8]>) -> Result<Vec<u8>, TransformError> {
    if image.has_alpha() {
        return Err(TransformError::Encode("JPEG needs flattened RGB".to_owned()));
    }
    // libjpeg reports errors by unwinding (see decode.rs); catch them here too.
    let caught = catch_unwind(AssertUnwindSafe(|| -> Result<Vec<u8>, TransformError> {
        let mut compress = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        // libjpeg-turbo's defaults: no trellis quantisation, no scan optimisation. Speed matters more here.
        compress.set_fastest_defaults();
        compress.set_size(image.width as usize, image.height as usize);
        compress.set_quality(f32::from(quality));
        // Optimised Huffman tables: a second pass over the coefficients, a few percent smaller for little time.
        compress.set_optimize_coding(true);
        compress.set_chroma_sampling_pixel_sizes((2, 2), (2, 2));
        let capacity = image.data.len() / 8 + 1024;
        let mut started = compress.start_compress(Vec::with_capacity(capacity)).map_err(failed)?;
        if let Some(profile) = icc {
            write_icc(&mut started, profile);
        }
        started.write_scanlines(&image.data).map_err(failed)?;
        started.finish().map_err(failed)
    }));
    caught.unwrap_or_else(|payload| {
        let message = payload.downcast_ref::<String>().cloned().unwrap_or_else(|| "libjpeg error".to_owned());
        Err(TransformError::Encode(message))
    })
}

/// Writes an ICC profile as APP2 `ICC_PROFILE` chunks numbered from 1, as the ICC spec and libjpeg's reader
/// require (the mozjpeg crate's `write_icc_profile` numbers them from 0, which readers reject).
fn write_icc<W>(started: &mut mozjpeg::compress::CompressStarted<W>, profile: &[u8]) {
    const CHUNK: usize = 65_519;
    let count = profile.len().div_ceil(CHUNK);
    if profile.is_empty() || count > 255 {
        return;
    }
    for (index, chunk) in profile.chunks(CHUNK).enumerate() {
        let header = [&b"ICC_PROFILE\0"[..], &[index as u8 + 1, count as u8]].concat();
        started.write_marker(mozjpeg::Marker::APP(2), &[header.as_slice(), chunk].concat());
    }
}

fn png(image: &Bitmap, icc: Option<&[u8]>) -> Result<Vec<u8>, TransformError> {
    let mut bytes = Vec::new();
    let mut encoder = PngEncoder::new_with_quality(&mut bytes, CompressionType::Fast, FilterType::Adaptive);
    if let Some(profile) = icc {
        // A profile the encoder refuses is dropped rather than failing the image.
        let _ = encoder.set_icc_profile(profile.to_vec());
    }
    encoder.write_image(&image.data, image.width, image.height, colour_type(image)).map_err(failed)?;
    Ok(bytes)
}

fn webp(image: &Bitmap, quality: u8) -> Result<Vec<u8>, TransformError> {
    // The buffer length is guaranteed by `Bitmap`, so the crate's size assertion cannot fire.
    let encoder = if image.has_alpha() {
        webp::Encoder::from_rgba(&image.data, image.width, image.height)
    } else {
        webp::Encoder::from_rgb(&image.data, image.width, image.height)
    };
    let memory = encoder.encode_simple(false, f32::from(quality)).map_err(|e| failed(format!("{e:?}")))?;
    Ok(memory.to_vec())
}

/// rav1e's speed preset for AVIF, 1 (slowest, smallest) to 10 (fastest). Measured without rav1e's assembly
/// (BENCHMARKS.md, "AVIF"): 8 is as small as 6 and 7 at the same fidelity and faster; 9 and 10 are 1.5-2.5x
/// faster, but 9 needs 0.80-1.03 of the JPEG's bytes for the JPEG's PSNR and SSIM (8: 0.69-0.93) and 10 did not
/// reach the JPEG's SSIM at ravif quality 80 on any corpus photo.
pub(crate) const AVIF_SPEED: u8 = 8;

/// Mirage's `quality` (JPEG's scale) to ravif's: (Mirage, ravif) points, linear between them. Measured at 300 px
/// on the corpus photos (BENCHMARKS.md, "AVIF"): the ravif quality is the lowest whose output had at least the
/// PSNR and the SSIM of Mirage's JPEG at that quality on every photo (JPEG 60 -> 72, 82 -> 86, 90 -> 90); the
/// ends are pinned so that 1 and 100 keep their meaning. So `q=N` asks for JPEG q=N's fidelity in any format.
const AVIF_QUALITY: [(u8, f32); 4] = [(1, 1.0), (60, 72.0), (82, 86.0), (100, 100.0)];

/// ravif's quality (1..=100, its own scale) for Mirage's `quality` (see `AVIF_QUALITY`).
pub(crate) fn avif_quality(quality: u8) -> f32 {
    let quality = quality.clamp(1, 100);
    let upper = AVIF_QUALITY.iter().position(|&(point, _)| point >= quality).unwrap_or(AVIF_QUALITY.len() - 1);
    let (high, high_value) = AVIF_QUALITY[upper];
    let Some(&(low, low_value)) = upper.checked_sub(1).and_then(|lower| AVIF_QUALITY.get(lower)) else {
        return high_value;
    };
    let fraction = f32::from(quality - low) / f32::from(high - low);
    (low_value + fraction * (high_value - low_value)).clamp(1.0, 100.0)
}

fn avif(image: &Bitmap, quality: u8) -> Result<Vec<u8>, TransformError> {
    use rgb::FromSlice;
    let quality = avif_quality(quality);
    let encoder = ravif::Encoder::new()
        .with_quality(quality)
        .with_alpha_quality(quality)
        .with_speed(AVIF_SPEED)
        // One thread: the encode already holds one of the CPU pool's workers, which are as many as the cores;
        // more threads here would take cores the pool has given to other requests (and rav1e splits the frame
        // into tiles per thread, which costs compression).
        .with_num_threads(Some(1));
    let (width, height) = (image.width as usize, image.height as usize);
    // rav1e asserts on what it considers impossible; a panic in it must fail this image, not the worker.
    let caught = catch_unwind(AssertUnwindSafe(|| {
        if image.has_alpha() {
            encoder.encode_rgba(ravif::Img::new(image.data.as_rgba(), width, height))
        } else {
            encoder.encode_rgb(ravif::Img::new(image.data.as_rgb(), width, height))
        }
    }));
    match caught {
        Ok(Ok(encoded)) => Ok(encoded.avif_file),
        Ok(Err(error)) => Err(failed(error)),
        Err(_) => Err(TransformError::Encode("rav1e panicked".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_hold_no_spare_capacity() {
        let data: Vec<u8> = (0..64 * 48 * 3).map(|i| (i * 7 % 251) as u8).collect();
        let image = Bitmap::new(64, 48, 3, data).expect("bitmap");
        for format in [OutputFormat::Jpeg, OutputFormat::Png, OutputFormat::Gif, OutputFormat::Webp, OutputFormat::Avif]
        {
            let bytes = encode(&image, format, 80, None).expect("encodes");
            assert_eq!(bytes.capacity(), bytes.len(), "{format:?}");
        }
    }

    #[test]
    fn avif_quality_follows_the_measured_points() {
        assert_eq!(avif_quality(1), 1.0);
        assert_eq!(avif_quality(60), 72.0);
        assert_eq!(avif_quality(82), 86.0);
        assert_eq!(avif_quality(100), 100.0);
        assert_eq!(avif_quality(0), 1.0, "clamped");
        assert!((avif_quality(91) - 93.0).abs() < 1e-4, "{}", avif_quality(91));
        let all: Vec<f32> = (1..=100).map(avif_quality).collect();
        assert!(all.windows(2).all(|pair| pair[0] < pair[1]), "strictly increasing: {all:?}");
    }
}
