//! Image transformation: probe -> decode -> orient -> crop/resize -> effects -> pad -> encode, as small pure,
//! synchronous steps (one file each). No I/O and no async here: the pipeline runs `transform` on a bounded
//! blocking pool.
//!
//! The pixel limit is checked from the header before any pixel is decoded; JPEGs are decoded at the smallest
//! DCT scale (n/8) that still has enough pixels for the requested size.

mod accept;
mod animate;
mod bitmap;
mod decode;
mod effects;
mod encode;
mod error;
mod geometry;
mod orient;
mod probe;
mod resize;

pub use accept::choose_output;
pub use error::TransformError;

use crate::request::{Rgba, TransformOptions};
use crate::sniff::ImageFormat;
use bitmap::Bitmap;
use geometry::Plan;

/// Resource limits, enforced before the memory is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest source width x height (x frames, for animations resized frame by frame). Default 50 megapixels.
    pub max_source_pixels: u64,
    /// Largest output width x height. Default 8192 x 8192.
    pub max_output_pixels: u64,
    /// Largest AVIF output width x height (AVIF encodes cost many times what the other formats do): above it
    /// `format=auto` gives WebP and `format=avif` is refused. Default 4 megapixels.
    pub max_avif_pixels: u64,
    /// Most frames an animation may have to be resized as an animation. Default 1000.
    pub max_frames: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_source_pixels: 50_000_000,
            max_output_pixels: 8192 * 8192,
            max_avif_pixels: 4_000_000,
            max_frames: 1000,
        }
    }
}

/// An encodable output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    /// JPEG (baseline, 4:2:0).
    Jpeg,
    /// PNG.
    Png,
    /// Lossy WebP.
    Webp,
    /// GIF (animated when the source is).
    Gif,
    /// AVIF (AV1 still image, 10-bit 4:4:4, encoded by rav1e).
    Avif,
}

impl OutputFormat {
    /// The `Content-Type` of the encoded bytes.
    pub fn media_type(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
            OutputFormat::Webp => "image/webp",
            OutputFormat::Gif => "image/gif",
            OutputFormat::Avif => "image/avif",
        }
    }

    /// The quality used when the request names none (JPEG and AVIF 82, WebP 80; the others ignore quality).
    /// AVIF's quality is on JPEG's scale: 82 gives at least the JPEG's fidelity (see `encode::AVIF_QUALITY`).
    pub fn default_quality(self) -> u8 {
        match self {
            OutputFormat::Jpeg | OutputFormat::Avif => 82,
            OutputFormat::Webp | OutputFormat::Png | OutputFormat::Gif => 80,
        }
    }

    /// Whether this build can encode the format (AVIF only with its encoder, see `request::AVIF_ENCODER`).
    pub fn supported(self) -> bool {
        match self {
            OutputFormat::Avif => crate::request::AVIF_ENCODER,
            OutputFormat::Jpeg | OutputFormat::Png | OutputFormat::Webp | OutputFormat::Gif => true,
        }
    }

    /// Whether the format can carry transparency (otherwise alpha is flattened onto the background).
    fn has_alpha(self) -> bool {
        !matches!(self, OutputFormat::Jpeg)
    }
}

/// What a source's header says, read without decoding pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// The sniffed format.
    pub format: ImageFormat,
    /// Width in pixels, as stored (before EXIF orientation).
    pub width: u32,
    /// Height in pixels, as stored.
    pub height: u32,
    /// Whether the image may have transparent pixels (alpha channel or transparency chunk).
    pub has_alpha: bool,
    /// Frame count where the header walk gives it cheaply (1 for stills; GIF, APNG, animated WebP counted).
    pub frames: Option<u32>,
}

/// An encoded output image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The encoded file.
    pub bytes: Vec<u8>,
    /// Its format.
    pub format: OutputFormat,
    /// Its width in pixels.
    pub width: u32,
    /// Its height in pixels.
    pub height: u32,
}

/// Reads format, size, alpha and frame count from the header only; never decodes pixels. Unsupported
/// formats (AVIF, BMP, ICO) give `UnsupportedSource`, unrecognised or truncated headers `Undecodable`.
pub fn probe(source: &[u8]) -> Result<SourceInfo, TransformError> {
    probe::read_header(source).map(|header| header.info)
}

/// The size `source` is shown at: its stored size, with width and height swapped when its EXIF orientation turns
/// it a quarter (as browsers and `transform` apply it). `None` when the header cannot be read.
pub fn displayed_size(source: &[u8]) -> Option<(u32, u32)> {
    let header = probe::read_header(source).ok()?;
    let (width, height) = (header.info.width, header.info.height);
    Some(if orient::swaps_axes(header.orientation) { (height, width) } else { (width, height) })
}

/// Transforms `source` as `options` ask, encoding to `output` (already negotiated: see `choose_output`).
pub fn transform(
    source: &[u8],
    options: &TransformOptions,
    output: OutputFormat,
    limits: &Limits,
) -> Result<Encoded, TransformError> {
    if !output.supported() {
        return Err(TransformError::UnsupportedOutput("avif"));
    }
    let header = probe::read_header(source)?;
    let info = &header.info;
    if u64::from(info.width) * u64::from(info.height) > limits.max_source_pixels {
        return Err(TransformError::TooManyPixels {
            width: info.width,
            height: info.height,
            limit: limits.max_source_pixels,
        });
    }
    let rotation = options.rotate().map_or(1, orient::rotate_as_orientation);
    let swap = |orientation: u8| orient::swaps_axes(orientation) != orient::swaps_axes(rotation);
    let stored = (info.width, info.height);
    let displayed = |orientation: u8| if swap(orientation) { (stored.1, stored.0) } else { stored };

    // Plan against the full-size source in display orientation; for JPEG the EXIF orientation is already
    // known from the header, so the output limit is checked and the DCT scale chosen before decoding.
    let early = geometry::plan(displayed(header.orientation), options);
    check_output(&early, limits)?;
    let output = accept::fit_output(output, options.format(), early.output_size(), limits)?;

    if output == OutputFormat::Gif && info.format == ImageFormat::Gif && info.frames.unwrap_or(1) > 1 {
        return animate::gif(source, info, options, rotation, limits);
    }

    let jpeg_scale = if info.format == ImageFormat::Jpeg {
        let needed = early.needed_source_size(displayed(header.orientation));
        let needed_stored = if swap(header.orientation) { (needed.1, needed.0) } else { needed };
        geometry::jpeg_scale(stored, needed_stored)
    } else {
        8
    };
    let decoded = decode::decode(source, &header, jpeg_scale, limits)?;
    tracing::debug!(
        format = ?info.format,
        width = info.width,
        height = info.height,
        decoded_width = decoded.bitmap.width,
        jpeg_scale,
        "decoded"
    );
    let full_size = displayed(decoded.orientation);
    let plan = geometry::plan(full_size, options);
    check_output(&plan, limits)?;
    // Orientation found only while decoding (EXIF in PNG or WebP) may have turned the output: check again.
    let output = accept::fit_output(output, options.format(), plan.output_size(), limits)?;

    let mut image = orient::apply(decoded.bitmap, decoded.orientation);
    image = orient::apply(image, rotation);
    let plan = plan.rescaled(f64::from(jpeg_scale) / 8.0, (image.width, image.height));
    let image = finish_pixels(image, &plan, options, output)?;
    let quality = options.quality().unwrap_or(output.default_quality());
    let bytes = encode::encode(&image, output, quality, decoded.icc.as_deref())?;
    Ok(Encoded { bytes, format: output, width: image.width, height: image.height })
}

fn check_output(plan: &Plan, limits: &Limits) -> Result<(), TransformError> {
    let (width, height) = plan.output_size();
    if u64::from(width) * u64::from(height) > limits.max_output_pixels {
        return Err(TransformError::OutputTooLarge { width, height, limit: limits.max_output_pixels });
    }
    Ok(())
}

/// Everything after orientation, shared by stills and animation frames: crop/resize, blur, sharpen, pad, and
/// flattening alpha for formats without it.
fn finish_pixels(
    image: Bitmap,
    plan: &Plan,
    options: &TransformOptions,
    output: OutputFormat,
) -> Result<Bitmap, TransformError> {
    let mut image = if plan.is_identity((image.width, image.height)) {
        image
    } else {
        resize::resize(&image, plan.crop, plan.size)?
    };
    if let Some(sigma) = options.blur() {
        effects::blur(&mut image, sigma.get());
    }
    if let Some(amount) = options.sharpen() {
        effects::sharpen(&mut image, amount.get());
    }
    let Rgba(background) = options.background().unwrap_or(Rgba::WHITE);
    if let Some(canvas) = plan.canvas {
        // A translucent background stays translucent where the format allows it.
        if background[3] < 255 && output.has_alpha() {
            image = image.into_rgba();
        }
        image = effects::pad(&image, canvas, background);
    }
    if !output.has_alpha() {
        image = image.flatten(background);
    }
    Ok(image)
}
