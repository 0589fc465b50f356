//! Pixel effects after the resize: Gaussian blur (three box blurs, cost independent of sigma), unsharp-mask
//! sharpening, and padding onto a background canvas.

use super::bitmap::Bitmap;
use super::geometry::Canvas;

/// Box widths whose three successive passes approximate a Gaussian of `sigma` (the variance of a box of
/// width w is (w*w - 1) / 12; the widths are chosen so the three variances add up to sigma squared).
fn box_radii(sigma: f32) -> [usize; 3] {
    let variance = f64::from(sigma) * f64::from(sigma);
    let ideal = (12.0 * variance / 3.0 + 1.0).sqrt();
    let mut lower = ideal.floor() as i64;
    if lower % 2 == 0 {
        lower -= 1;
    }
    let lower = lower.max(1);
    let upper = lower + 2;
    let lf = lower as f64;
    let small = ((12.0 * variance - 3.0 * lf * lf - 12.0 * lf - 9.0) / (-4.0 * lf - 4.0)).round() as i64;
    let radius = |width: i64| usize::try_from((width - 1) / 2).unwrap_or(0);
    [0, 1, 2].map(|pass| if pass < small { radius(lower) } else { radius(upper) })
}

/// Below this sigma three boxes are too coarse (widths are odd integers), so a sampled Gaussian kernel is
/// used instead; its cost grows with sigma, which is why large sigmas use the boxes.
const SMALL_SIGMA: f32 = 2.0;

/// Gaussian blur with standard deviation `sigma` pixels, edges extended. Channels are blurred independently
/// (alpha included).
pub(crate) fn blur(image: &mut Bitmap, sigma: f32) {
    if sigma < SMALL_SIGMA {
        gaussian(image, sigma);
        return;
    }
    let channels = image.channels;
    let (width, height) = (image.width as usize, image.height as usize);
    let mut scratch = vec![0u8; image.data.len()];
    for radius in box_radii(sigma) {
        if radius == 0 {
            continue;
        }
        for (row, out) in image.data.chunks_exact(width * channels).zip(scratch.chunks_exact_mut(width * channels)) {
            box_row(row, out, channels, radius);
        }
        box_columns(&scratch, &mut image.data, width * channels, height, radius);
    }
}

/// Separable convolution with a sampled, normalised Gaussian of radius ceil(3 sigma).
fn gaussian(image: &mut Bitmap, sigma: f32) {
    let radius = (3.0 * sigma).ceil().max(1.0) as isize;
    let weights: Vec<f32> = (-radius..=radius).map(|k| (-(k * k) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f32 = weights.iter().sum();
    let weights: Vec<f32> = weights.iter().map(|w| w / total).collect();
    let channels = image.channels;
    let stride = image.stride();
    let (width, height) = (image.width as isize, image.height as isize);
    let mut scratch = vec![0u8; image.data.len()];
    for (row, out) in image.data.chunks_exact(stride).zip(scratch.chunks_exact_mut(stride)) {
        for x in 0..width {
            for c in 0..channels {
                let sum: f32 = weights
                    .iter()
                    .zip(-radius..=radius)
                    .map(|(w, k)| {
                        w * f32::from(
                            row.get((x + k).clamp(0, width - 1) as usize * channels + c).copied().unwrap_or(0),
                        )
                    })
                    .sum();
                if let Some(slot) = out.get_mut(x as usize * channels + c) {
                    *slot = sum.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
    let mut sums = vec![0f32; stride];
    for (y, out_row) in image.data.chunks_exact_mut(stride).enumerate() {
        sums.fill(0.0);
        for (w, k) in weights.iter().zip(-radius..=radius) {
            let source_y = (y as isize + k).clamp(0, height - 1) as usize;
            let source = scratch.get(source_y * stride..(source_y + 1) * stride).unwrap_or_default();
            for (sum, &v) in sums.iter_mut().zip(source) {
                *sum += w * f32::from(v);
            }
        }
        for (o, sum) in out_row.iter_mut().zip(&sums) {
            *o = sum.round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// One horizontal box pass over a row: a running sum per channel, clamped at the ends.
fn box_row(row: &[u8], out: &mut [u8], channels: usize, radius: usize) {
    let n = row.len() / channels;
    let span = (2 * radius + 1) as u32;
    let at = |i: isize, c: usize| -> u32 {
        let i = i.clamp(0, n as isize - 1) as usize;
        u32::from(row.get(i * channels + c).copied().unwrap_or(0))
    };
    for c in 0..channels {
        let r = radius as isize;
        let mut sum: u32 = (-r..=r).map(|k| at(k, c)).sum();
        for i in 0..n {
            if let Some(slot) = out.get_mut(i * channels + c) {
                *slot = ((sum + span / 2) / span) as u8;
            }
            let i = i as isize;
            sum = sum + at(i + r + 1, c) - at(i - r, c);
        }
    }
}

/// One vertical box pass, row-major: a running sum per column, so memory is read in order.
fn box_columns(source: &[u8], out: &mut [u8], stride: usize, height: usize, radius: usize) {
    let span = (2 * radius + 1) as u32;
    let row = |y: isize| -> &[u8] {
        let y = y.clamp(0, height as isize - 1) as usize;
        source.get(y * stride..(y + 1) * stride).unwrap_or_default()
    };
    let r = radius as isize;
    let mut sums = vec![0u32; stride];
    for k in -r..=r {
        for (sum, &v) in sums.iter_mut().zip(row(k)) {
            *sum += u32::from(v);
        }
    }
    for (y, out_row) in out.chunks_exact_mut(stride).enumerate() {
        for (o, &sum) in out_row.iter_mut().zip(&sums) {
            *o = ((sum + span / 2) / span) as u8;
        }
        let y = y as isize;
        for ((sum, &add), &sub) in sums.iter_mut().zip(row(y + r + 1)).zip(row(y - r)) {
            *sum = *sum + u32::from(add) - u32::from(sub);
        }
    }
}

/// Unsharp mask: adds `amount` times the difference from a sigma-1 blur (`sharpen=1`, the value
/// recommended for downscaled images, is a gentle 0.5). Alpha is left alone.
pub(crate) fn sharpen(image: &mut Bitmap, strength: f32) {
    let amount = strength * 0.5;
    let mut blurred = image.clone();
    blur(&mut blurred, 1.0);
    let channels = image.channels;
    for (index, (value, &soft)) in image.data.iter_mut().zip(&blurred.data).enumerate() {
        if channels == 4 && index % 4 == 3 {
            continue;
        }
        let sharp = f32::from(*value) + amount * (f32::from(*value) - f32::from(soft));
        *value = sharp.round().clamp(0.0, 255.0) as u8;
    }
}

/// Places `image` on a `canvas` filled with `background` (the image's channel count decides whether the
/// background's alpha is kept).
pub(crate) fn pad(image: &Bitmap, canvas: Canvas, background: [u8; 4]) -> Bitmap {
    let mut out = Bitmap::filled(canvas.width, canvas.height, image.channels, background);
    let out_stride = out.stride();
    let offset = canvas.x as usize * image.channels;
    for (y, row) in image.data.chunks_exact(image.stride()).enumerate() {
        let start = (canvas.y as usize + y) * out_stride + offset;
        if let Some(target) = out.data.get_mut(start..start + row.len()) {
            target.copy_from_slice(row);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The standard deviation of the combined three-box kernel, computed in floats (the kernel itself, not
    /// the u8 rounding).
    fn measured_sigma(sigma: f32) -> f64 {
        let size = 2001usize;
        let mut weights: Vec<f64> = vec![0.0; size];
        weights[size / 2] = 1.0;
        for radius in box_radii(sigma) {
            let r = radius as isize;
            let n = size as isize;
            let next = (0..n)
                .map(|i| (-r..=r).map(|k| weights[(i + k).clamp(0, n - 1) as usize]).sum::<f64>() / (2 * r + 1) as f64)
                .collect();
            weights = next;
        }
        let centre = (size / 2) as f64;
        weights.iter().enumerate().map(|(i, w)| w * (i as f64 - centre).powi(2)).sum::<f64>().sqrt()
    }

    #[test]
    fn three_boxes_approximate_the_gaussian_sigma() {
        for sigma in [SMALL_SIGMA, 2.5, 3.3, 10.0, 50.0, 100.0] {
            let measured = measured_sigma(sigma);
            let error = (measured - f64::from(sigma)).abs() / f64::from(sigma);
            assert!(error < 0.12, "sigma {sigma}: measured {measured:.3}");
        }
    }

    #[test]
    fn blur_keeps_a_flat_image_flat_and_softens_an_edge() {
        let mut flat = Bitmap::filled(50, 40, 4, [1, 2, 3, 4]);
        blur(&mut flat, 5.0);
        assert!(flat.data.chunks_exact(4).all(|p| p == [1, 2, 3, 4]));
        // Left half black, right half white: after blurring, the pixels next to the edge are grey.
        // Both the small-sigma kernel and the boxes: a Gaussian of sigma s puts Phi(-0.5/s) of the white
        // side into the first black pixel.
        for (sigma, low, high) in [(0.6f32, 40, 70), (1.0, 70, 95), (3.0, 105, 120), (8.0, 115, 125)] {
            let mut edge = Bitmap::filled(60, 10, 3, [0, 0, 0, 255]);
            for row in edge.data.chunks_exact_mut(180) {
                row[90..].fill(255);
            }
            blur(&mut edge, sigma);
            let at = |x: usize| edge.data[5 * 180 + x * 3];
            assert!((low..=high).contains(&at(29)), "sigma {sigma}: {}", at(29));
            let symmetric = (i32::from(at(29)) + i32::from(at(30)) - 255).abs() <= 2;
            assert!(symmetric, "sigma {sigma}: {} + {}", at(29), at(30));
            assert_eq!((at(0), at(59)), (0, 255), "sigma {sigma}");
        }
    }

    #[test]
    fn pad_fills_around_the_image() {
        let image = Bitmap::filled(2, 1, 3, [9, 9, 9, 255]);
        let out = pad(&image, Canvas { width: 2, height: 3, x: 0, y: 1 }, [255, 0, 0, 255]);
        assert_eq!(out.data, vec![255, 0, 0, 255, 0, 0, 9, 9, 9, 9, 9, 9, 255, 0, 0, 255, 0, 0]);
    }
}
