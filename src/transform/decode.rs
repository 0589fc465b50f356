//! Source bytes to pixels. JPEG goes through libjpeg-turbo (mozjpeg) so that a big photo can be decoded
//! directly at 1/2..1/8 size in the DCT domain; PNG, GIF and WebP go through `image`. libjpeg reports fatal
//! errors by unwinding (mozjpeg-sys `unwinding`), caught here so a hostile file is an `Err`, never an abort.

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::{DynamicImage, ImageDecoder};

use super::bitmap::Bitmap;
use super::probe::Header;
use super::{Limits, TransformError};
use crate::sniff::ImageFormat;

/// Decoded pixels with the metadata later steps need.
pub(crate) struct Decoded {
    /// The pixels, as stored (orientation not yet applied).
    pub bitmap: Bitmap,
    /// EXIF orientation 1..=8.
    pub orientation: u8,
    /// An embedded ICC profile, to carry over to the output where the encoder can.
    pub icc: Option<Vec<u8>>,
}

fn undecodable(error: impl std::fmt::Display) -> TransformError {
    TransformError::Undecodable(error.to_string())
}

/// Decodes the first (or only) frame. `jpeg_scale` is n in n/8 for JPEG sources, ignored for the others.
pub(crate) fn decode(
    source: &[u8],
    header: &Header,
    jpeg_scale: u8,
    limits: &Limits,
) -> Result<Decoded, TransformError> {
    match header.info.format {
        ImageFormat::Jpeg => {
            let bitmap = decode_jpeg(source, header, jpeg_scale)?;
            // A CMYK profile would misdescribe the RGB we converted to.
            let icc = if header.components == 4 { None } else { header.icc.clone() };
            Ok(Decoded { bitmap, orientation: header.orientation, icc })
        }
        ImageFormat::Png => {
            let decoder = image::codecs::png::PngDecoder::with_limits(Cursor::new(source), image_limits(limits))
                .map_err(undecodable)?;
            from_image_decoder(decoder, limits)
        }
        ImageFormat::Gif => {
            from_image_decoder(image::codecs::gif::GifDecoder::new(Cursor::new(source)).map_err(undecodable)?, limits)
        }
        ImageFormat::Webp => {
            from_image_decoder(image::codecs::webp::WebPDecoder::new(Cursor::new(source)).map_err(undecodable)?, limits)
        }
        ImageFormat::Avif => Err(TransformError::UnsupportedSource("AVIF")),
        ImageFormat::Bmp => Err(TransformError::UnsupportedSource("BMP")),
        ImageFormat::Ico => Err(TransformError::UnsupportedSource("ICO")),
    }
}

/// `image`'s own allocation guard, as a second line behind the header check: 16-bit RGBA is 8 bytes a pixel.
pub(crate) fn image_limits(limits: &Limits) -> image::Limits {
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(limits.max_source_pixels.saturating_mul(8).saturating_add(1 << 20));
    image_limits
}

fn from_image_decoder(mut decoder: impl ImageDecoder, limits: &Limits) -> Result<Decoded, TransformError> {
    decoder.set_limits(image_limits(limits)).map_err(undecodable)?;
    let orientation = decoder.orientation().map_or(1, image::metadata::Orientation::to_exif);
    let icc = decoder.icc_profile().ok().flatten();
    let image = DynamicImage::from_decoder(decoder).map_err(undecodable)?;
    Ok(Decoded { bitmap: from_dynamic(image)?, orientation, icc })
}

/// RGBA when the image has an alpha channel, RGB otherwise (a third less memory and work for photos).
pub(crate) fn from_dynamic(image: DynamicImage) -> Result<Bitmap, TransformError> {
    let (width, height) = (image.width(), image.height());
    if image.color().has_alpha() {
        Bitmap::new(width, height, 4, image.into_rgba8().into_raw())
    } else {
        Bitmap::new(width, height, 3, image.into_rgb8().into_raw())
    }
}

fn decode_jpeg(source: &[u8], header: &Header, scale: u8) -> Result<Bitmap, TransformError> {
    let caught = catch_unwind(AssertUnwindSafe(|| -> Result<Bitmap, TransformError> {
        let mut decompress = mozjpeg::Decompress::builder().from_mem(source).map_err(undecodable)?;
        // The header walk and libjpeg must agree on the size the pixel limit was checked against.
        if (decompress.width(), decompress.height()) != (header.info.width as usize, header.info.height as usize) {
            return Err(undecodable("JPEG frame size disagrees with its header"));
        }
        decompress.scale(scale.clamp(1, 8));
        if header.components == 4 {
            let mut started = decompress.to_colorspace(mozjpeg::ColorSpace::JCS_CMYK).map_err(undecodable)?;
            let (width, height) = (started.width() as u32, started.height() as u32);
            let cmyk: Vec<u8> = started.read_scanlines().map_err(undecodable)?;
            started.finish().map_err(undecodable)?;
            Bitmap::new(width, height, 3, cmyk_to_rgb(&cmyk, header.adobe))
        } else {
            // libjpeg converts greyscale and YCbCr to RGB itself.
            let mut started = decompress.rgb().map_err(undecodable)?;
            let (width, height) = (started.width() as u32, started.height() as u32);
            let rgb: Vec<u8> = started.read_scanlines().map_err(undecodable)?;
            started.finish().map_err(undecodable)?;
            Bitmap::new(width, height, 3, rgb)
        }
    }));
    match caught {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "libjpeg error".to_owned());
            Err(TransformError::Undecodable(message))
        }
    }
}

/// Naive CMYK to RGB without a colour profile. Adobe (Photoshop) files store the values inverted.
fn cmyk_to_rgb(cmyk: &[u8], inverted: bool) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for pixel in cmyk.chunks_exact(4) {
        let ink = |v: u8| if inverted { u32::from(v) } else { 255 - u32::from(v) };
        let k = ink(pixel[3]);
        for &channel in &pixel[..3] {
            rgb.push(((ink(channel) * k + 127) / 255) as u8);
        }
    }
    rgb
}
