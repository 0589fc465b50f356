//! Animated GIF to animated GIF: every frame is resized (and rotated, blurred...) like a still and re-encoded,
//! one frame at a time so memory stays at one canvas. The cost grows with frames x pixels, so both are
//! bounded: `max_frames`, and the source's width x height x frames against `max_source_pixels`.

use std::io::Cursor;

use image::codecs::gif::{GifDecoder, GifEncoder, Repeat};
use image::{AnimationDecoder, Frame, ImageDecoder, RgbaImage};

use super::bitmap::Bitmap;
use super::{Encoded, Limits, OutputFormat, SourceInfo, TransformError, decode, encode, geometry, orient};
use crate::request::TransformOptions;

fn undecodable(error: impl std::fmt::Display) -> TransformError {
    TransformError::Undecodable(error.to_string())
}

/// Transforms every frame of an animated GIF. `rotation` is the user's rotate as an EXIF orientation.
pub(crate) fn gif(
    source: &[u8],
    info: &SourceInfo,
    options: &TransformOptions,
    rotation: u8,
    limits: &Limits,
) -> Result<Encoded, TransformError> {
    let frames = info.frames.unwrap_or(1);
    if frames > limits.max_frames {
        return Err(TransformError::TooManyFrames { frames, limit: limits.max_frames });
    }
    let total = u64::from(info.width) * u64::from(info.height) * u64::from(frames);
    if total > limits.max_source_pixels {
        return Err(TransformError::TooManyPixels {
            width: info.width,
            height: info.height,
            limit: limits.max_source_pixels / u64::from(frames),
        });
    }
    let mut decoder = GifDecoder::new(Cursor::new(source)).map_err(undecodable)?;
    decoder.set_limits(decode::image_limits(limits)).map_err(undecodable)?;
    let (width, height) = decoder.dimensions();
    let displayed = if orient::swaps_axes(rotation) { (height, width) } else { (width, height) };
    let plan = geometry::plan(displayed, options);
    let (out_width, out_height) = plan.output_size();
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut bytes, encode::GIF_SPEED);
        encoder.set_repeat(Repeat::Infinite).map_err(|e| TransformError::Encode(e.to_string()))?;
        for (index, frame) in decoder.into_frames().enumerate() {
            // The header walk may have miscounted a malformed file: bound what we actually decode.
            if index >= limits.max_frames as usize {
                return Err(TransformError::TooManyFrames { frames: index as u32 + 1, limit: limits.max_frames });
            }
            let frame = frame.map_err(undecodable)?;
            let delay = frame.delay();
            // `image` composites each frame onto the full canvas, so every frame is width x height RGBA.
            let canvas = frame.into_buffer();
            let bitmap = Bitmap::new(canvas.width(), canvas.height(), 4, canvas.into_raw())?;
            let bitmap = orient::apply(bitmap, rotation);
            let out = super::finish_pixels(bitmap, &plan, options, OutputFormat::Gif)?.into_rgba();
            let buffer = RgbaImage::from_raw(out.width, out.height, out.data)
                .ok_or_else(|| TransformError::Encode("frame buffer size".to_owned()))?;
            encoder
                .encode_frame(Frame::from_parts(buffer, 0, 0, delay))
                .map_err(|e| TransformError::Encode(e.to_string()))?;
        }
    }
    Ok(Encoded { bytes, format: OutputFormat::Gif, width: out_width, height: out_height })
}
