//! Crop and resize in one pass with `fast_image_resize` (Lanczos3, SIMD picked at run time): the crop box is
//! handed to the resizer, so a cover crop never spends time on the part it throws away. Alpha is
//! premultiplied during the resize so transparent pixels do not bleed their colour into opaque neighbours.

use std::cell::RefCell;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::TransformError;
use super::bitmap::Bitmap;
use super::geometry::Rect;

thread_local! {
    /// One resizer per worker thread: it keeps its scratch buffers between images.
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

fn internal(error: impl std::fmt::Display) -> TransformError {
    TransformError::Encode(format!("resize: {error}"))
}

/// Resizes the `crop` region of `image` to `size`.
pub(crate) fn resize(image: &Bitmap, crop: Rect, size: (u32, u32)) -> Result<Bitmap, TransformError> {
    if let Some(copied) = copy_if_unscaled(image, crop, size) {
        return Ok(copied);
    }
    let pixel_type = if image.has_alpha() { PixelType::U8x4 } else { PixelType::U8x3 };
    let source = ImageRef::new(image.width, image.height, &image.data, pixel_type).map_err(internal)?;
    let mut target = Image::new(size.0, size.1, pixel_type);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)).crop(
        crop.left,
        crop.top,
        crop.width,
        crop.height,
    );
    RESIZER.with(|resizer| resizer.borrow_mut().resize(&source, &mut target, &options)).map_err(internal)?;
    Bitmap::new(size.0, size.1, image.channels, target.into_vec())
}

/// A whole-pixel crop at scale 1 (`fit=crop` of a small image) is a copy of rows, not a resample.
fn copy_if_unscaled(image: &Bitmap, crop: Rect, size: (u32, u32)) -> Option<Bitmap> {
    let whole = |v: f64| v.fract() == 0.0 && v >= 0.0;
    if !(whole(crop.left) && whole(crop.top) && crop.width == f64::from(size.0) && crop.height == f64::from(size.1)) {
        return None;
    }
    let (left, top) = (crop.left as usize, crop.top as usize);
    if left + size.0 as usize > image.width as usize || top + size.1 as usize > image.height as usize {
        return None;
    }
    let row_bytes = size.0 as usize * image.channels;
    let mut data = Vec::with_capacity(row_bytes * size.1 as usize);
    for row in image.data.chunks_exact(image.stride()).skip(top).take(size.1 as usize) {
        data.extend_from_slice(row.get(left * image.channels..left * image.channels + row_bytes)?);
    }
    Bitmap::new(size.0, size.1, image.channels, data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_without_resampling_at_scale_one() {
        let image = Bitmap::new(4, 2, 3, (0..24).collect()).expect("valid");
        let crop = Rect { left: 1.0, top: 1.0, width: 2.0, height: 1.0 };
        let out = resize(&image, crop, (2, 1)).expect("resize");
        assert_eq!(out.data, vec![15, 16, 17, 18, 19, 20]);
    }

    #[test]
    fn resizes_a_solid_colour_to_the_same_colour() {
        let image = Bitmap::filled(300, 200, 4, [10, 200, 30, 255]);
        let crop = Rect { left: 10.5, top: 0.0, width: 250.25, height: 200.0 };
        let out = resize(&image, crop, (77, 33)).expect("resize");
        assert_eq!((out.width, out.height, out.channels), (77, 33, 4));
        assert!(out.data.chunks_exact(4).all(|p| p == [10, 200, 30, 255]));
    }
}
