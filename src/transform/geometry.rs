//! Pure size arithmetic: from the (oriented) source size and the options to what to crop, what size to resize
//! it to, and where it sits on a padded canvas. No pixels here, so every fit mode is unit-tested exhaustively.
//!
//! With only one of width/height there is no box to fill, so `cover`, `pad` and `fill` behave like `contain`
//! (the other side follows the aspect ratio, enlarging allowed) and `crop` like `scale-down` (never enlarge).

use crate::request::{Fit, Gravity, TransformOptions};

/// A region of the source, in source pixels. Fractional, so that a cover crop keeps the exact aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rect {
    /// Left edge.
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
}

/// Where the resized image goes on a padded canvas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Canvas {
    /// Canvas width.
    pub width: u32,
    /// Canvas height.
    pub height: u32,
    /// Left offset of the image.
    pub x: u32,
    /// Top offset of the image.
    pub y: u32,
}

/// What to do with the pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Plan {
    /// The part of the source that is kept.
    pub crop: Rect,
    /// The size the kept part is resized to.
    pub size: (u32, u32),
    /// The padded canvas, for `fit=pad`.
    pub canvas: Option<Canvas>,
}

impl Plan {
    /// The final output size.
    pub fn output_size(&self) -> (u32, u32) {
        self.canvas.map_or(self.size, |c| (c.width, c.height))
    }

    /// Whether the crop is the whole source at its own size (nothing for the resizer to do).
    pub fn is_identity(&self, source: (u32, u32)) -> bool {
        self.crop == Rect::whole(source) && self.size == source
    }

    /// The same plan for a source decoded at `factor` times its size (JPEG DCT scaling at n/8): the crop
    /// scales with it, the output size does not. The factor is exact, not decoded/full size: libjpeg rounds
    /// the decoded size up, and its last row and column are only partly image (500 px at 3/8 is 187.5 px of
    /// image in 188), so mapping whole size to whole size would shift and stretch the picture by up to half
    /// a pixel, which costs several dB against a reference.
    pub fn rescaled(&self, factor: f64, decoded: (u32, u32)) -> Plan {
        if factor == 1.0 {
            return *self;
        }
        let (w, h) = (f64::from(decoded.0), f64::from(decoded.1));
        let left = (self.crop.left * factor).min(w - 1.0).max(0.0);
        let top = (self.crop.top * factor).min(h - 1.0).max(0.0);
        let crop = Rect {
            left,
            top,
            width: (self.crop.width * factor).min(w - left),
            height: (self.crop.height * factor).min(h - top),
        };
        Plan { crop, ..*self }
    }

    /// The smallest full-source size that still has at least one source pixel per output pixel in each
    /// direction: what a scaled decode must deliver so the resize never enlarges what it did not have to.
    pub fn needed_source_size(&self, source: (u32, u32)) -> (u32, u32) {
        let need = |size: u32, out: u32, crop: f64| -> u32 {
            let scale = (f64::from(out) / crop).min(1.0);
            clamp_u32((f64::from(size) * scale).ceil())
        };
        (need(source.0, self.size.0, self.crop.width), need(source.1, self.size.1, self.crop.height))
    }
}

impl Rect {
    fn whole((width, height): (u32, u32)) -> Rect {
        Rect { left: 0.0, top: 0.0, width: f64::from(width), height: f64::from(height) }
    }
}

fn clamp_u32(value: f64) -> u32 {
    // `as` saturates for floats; keep at least one pixel.
    (value.round() as u32).max(1)
}

/// Horizontal and vertical anchor, 0 = left/top, 1 = right/bottom.
fn anchor(gravity: Gravity) -> (f64, f64) {
    match gravity {
        Gravity::Center => (0.5, 0.5),
        Gravity::Top => (0.5, 0.0),
        Gravity::Bottom => (0.5, 1.0),
        Gravity::Left => (0.0, 0.5),
        Gravity::Right => (1.0, 0.5),
        Gravity::TopLeft => (0.0, 0.0),
        Gravity::TopRight => (1.0, 0.0),
        Gravity::BottomLeft => (0.0, 1.0),
        Gravity::BottomRight => (1.0, 1.0),
    }
}

/// Size that fits inside `box_w` x `box_h` with the source's aspect ratio (one side touches the box).
fn fit_inside((sw, sh): (u32, u32), box_w: u32, box_h: u32) -> (u32, u32) {
    if u64::from(box_w) * u64::from(sh) <= u64::from(box_h) * u64::from(sw) {
        (box_w, clamp_u32(f64::from(sh) * f64::from(box_w) / f64::from(sw)).min(box_h))
    } else {
        (clamp_u32(f64::from(sw) * f64::from(box_h) / f64::from(sh)).min(box_w), box_h)
    }
}

/// A crop of `width` x `height` source pixels placed in the source by gravity, on whole-pixel offsets so a
/// crop at scale 1 copies pixels instead of resampling them.
fn anchored_crop((sw, sh): (u32, u32), width: f64, height: f64, gravity: Gravity) -> Rect {
    let (gx, gy) = anchor(gravity);
    let width = width.min(f64::from(sw));
    let height = height.min(f64::from(sh));
    let left = ((f64::from(sw) - width) * gx).round().clamp(0.0, f64::from(sw) - width);
    let top = ((f64::from(sh) - height) * gy).round().clamp(0.0, f64::from(sh) - height);
    Rect { left, top, width, height }
}

/// Computes the plan for a source of `source` pixels (already in display orientation).
pub(crate) fn plan(source: (u32, u32), options: &TransformOptions) -> Plan {
    let (sw, sh) = source;
    let whole = Rect::whole(source);
    let simple = |size: (u32, u32)| Plan { crop: whole, size, canvas: None };
    let enlarges = |size: (u32, u32)| size.0 > sw || size.1 > sh;
    let (w, h) = match (options.width(), options.height()) {
        (None, None) => return simple(source),
        (Some(w), None) => {
            let size = (w, clamp_u32(f64::from(sh) * f64::from(w) / f64::from(sw)));
            let never_enlarge = matches!(options.fit(), Fit::ScaleDown | Fit::Crop);
            return simple(if never_enlarge && enlarges(size) { source } else { size });
        }
        (None, Some(h)) => {
            let size = (clamp_u32(f64::from(sw) * f64::from(h) / f64::from(sh)), h);
            let never_enlarge = matches!(options.fit(), Fit::ScaleDown | Fit::Crop);
            return simple(if never_enlarge && enlarges(size) { source } else { size });
        }
        (Some(w), Some(h)) => (w, h),
    };
    match options.fit() {
        Fit::ScaleDown => {
            let size = fit_inside(source, w, h);
            simple(if enlarges(size) { source } else { size })
        }
        Fit::Contain => simple(fit_inside(source, w, h)),
        Fit::Fill => simple((w, h)),
        Fit::Pad => {
            let size = fit_inside(source, w, h);
            let (gx, gy) = anchor(options.gravity());
            let x = (f64::from(w - size.0) * gx).round() as u32;
            let y = (f64::from(h - size.1) * gy).round() as u32;
            Plan { crop: whole, size, canvas: Some(Canvas { width: w, height: h, x, y }) }
        }
        Fit::Cover | Fit::Crop => {
            // The scale at which the source just covers the box.
            let scale = (f64::from(w) / f64::from(sw)).max(f64::from(h) / f64::from(sh));
            if options.fit() == Fit::Crop && scale >= 1.0 {
                // Never enlarge: keep source pixels 1:1 and crop each side to at most the box.
                let size = (w.min(sw), h.min(sh));
                let crop = anchored_crop(source, f64::from(size.0), f64::from(size.1), options.gravity());
                return Plan { crop, size, canvas: None };
            }
            let crop = anchored_crop(source, f64::from(w) / scale, f64::from(h) / scale, options.gravity());
            Plan { crop, size: (w, h), canvas: None }
        }
    }
}

/// Picks the JPEG DCT scale `n` (decode at n/8) for a stored `stored` size: the smallest n whose decoded size
/// (libjpeg rounds up: ceil(size * n / 8)) is at least `needed` in both directions. 8 means a full decode.
pub(crate) fn jpeg_scale(stored: (u32, u32), needed: (u32, u32)) -> u8 {
    (1..=8u8)
        .find(|&n| {
            let scaled = |size: u32| (u64::from(size) * u64::from(n)).div_ceil(8);
            scaled(stored.0) >= u64::from(needed.0) && scaled(stored.1) >= u64::from(needed.1)
        })
        .unwrap_or(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(segment: &str) -> TransformOptions {
        TransformOptions::parse(segment).expect("valid options")
    }

    fn out(source: (u32, u32), segment: &str) -> (u32, u32) {
        plan(source, &options(segment)).output_size()
    }

    #[test]
    fn no_size_means_no_resize() {
        assert_eq!(out((400, 300), ""), (400, 300));
        assert_eq!(out((400, 300), "fit=cover,format=webp"), (400, 300));
        assert!(plan((400, 300), &options("blur=2")).is_identity((400, 300)));
    }

    #[test]
    fn one_side_keeps_the_aspect_ratio() {
        for fit in ["scale-down", "contain", "cover", "crop", "pad", "fill"] {
            assert_eq!(out((400, 300), &format!("w=200,fit={fit}")), (200, 150), "{fit}");
            assert_eq!(out((400, 300), &format!("h=150,fit={fit}")), (200, 150), "{fit}");
        }
        // Enlarging: only scale-down and crop refuse.
        for fit in ["scale-down", "crop"] {
            assert_eq!(out((400, 300), &format!("w=800,fit={fit}")), (400, 300), "{fit}");
            assert_eq!(out((400, 300), &format!("h=600,fit={fit}")), (400, 300), "{fit}");
        }
        for fit in ["contain", "cover", "pad", "fill"] {
            assert_eq!(out((400, 300), &format!("w=800,fit={fit}")), (800, 600), "{fit}");
            assert_eq!(out((400, 300), &format!("h=600,fit={fit}")), (800, 600), "{fit}");
        }
    }

    #[test]
    fn both_sides_per_fit() {
        let source = (400, 300);
        // Shrinking into a square box.
        assert_eq!(out(source, "w=100,h=100"), (100, 75));
        assert_eq!(out(source, "w=100,h=100,fit=contain"), (100, 75));
        assert_eq!(out(source, "w=100,h=100,fit=cover"), (100, 100));
        assert_eq!(out(source, "w=100,h=100,fit=crop"), (100, 100));
        assert_eq!(out(source, "w=100,h=100,fit=pad"), (100, 100));
        assert_eq!(out(source, "w=100,h=100,fit=fill"), (100, 100));
        // A box larger than the source.
        assert_eq!(out(source, "w=800,h=800"), (400, 300));
        assert_eq!(out(source, "w=800,h=800,fit=contain"), (800, 600));
        assert_eq!(out(source, "w=800,h=800,fit=cover"), (800, 800));
        assert_eq!(out(source, "w=800,h=800,fit=crop"), (400, 300));
        assert_eq!(out(source, "w=800,h=800,fit=pad"), (800, 800));
        assert_eq!(out(source, "w=800,h=800,fit=fill"), (800, 800));
        // Crop: a box wider but shorter than the source is cropped to min(box, source), not enlarged.
        assert_eq!(out(source, "w=500,h=200,fit=crop"), (400, 200));
        let crop = plan(source, &options("w=500,h=200,fit=crop"));
        assert_eq!(crop.crop, Rect { left: 0.0, top: 50.0, width: 400.0, height: 200.0 });
        assert_eq!(crop.size, (400, 200));
        // Scale-down with a box bigger in one direction only still shrinks to fit the other.
        assert_eq!(out(source, "w=800,h=150"), (200, 150));
    }

    #[test]
    fn cover_crops_the_overflow_by_gravity() {
        let source = (400, 300);
        let cases = [
            ("center", 50.0, 0.0),
            ("left", 0.0, 0.0),
            ("right", 100.0, 0.0),
            ("top-left", 0.0, 0.0),
            ("bottom-right", 100.0, 0.0),
        ];
        for (gravity, left, top) in cases {
            let plan = plan(source, &options(&format!("w=100,h=100,fit=cover,g={gravity}")));
            assert_eq!(plan.crop, Rect { left, top, width: 300.0, height: 300.0 }, "{gravity}");
            assert_eq!(plan.size, (100, 100));
        }
        let tall = plan(source, &options("w=100,h=50,fit=cover,g=bottom"));
        assert_eq!(tall.crop, Rect { left: 0.0, top: 100.0, width: 400.0, height: 200.0 });
    }

    #[test]
    fn pad_places_the_image_by_gravity() {
        let centred = plan((400, 200), &options("w=100,h=100,fit=pad"));
        assert_eq!(centred.size, (100, 50));
        assert_eq!(centred.canvas, Some(Canvas { width: 100, height: 100, x: 0, y: 25 }));
        let top = plan((400, 200), &options("w=100,h=100,fit=pad,g=top"));
        assert_eq!(top.canvas, Some(Canvas { width: 100, height: 100, x: 0, y: 0 }));
    }

    #[test]
    fn extreme_aspect_ratios_do_not_overflow() {
        assert_eq!(out((1, 50_000_000), "w=8192,fit=contain"), (8192, u32::MAX));
        assert_eq!(out((50_000_000, 1), "w=10,h=10,fit=contain"), (10, 1));
        assert_eq!(out((50_000_000, 1), "w=10,h=10,fit=cover"), (10, 10));
    }

    #[test]
    fn rescaling_for_a_dct_scaled_decode_uses_the_exact_factor() {
        // 500x355 at 3/8 decodes to 188x134 pixels, of which 187.5 x 133.125 are image.
        let whole = plan((500, 355), &options("w=150"));
        let scaled = whole.rescaled(3.0 / 8.0, (188, 134));
        assert_eq!(scaled.crop, Rect { left: 0.0, top: 0.0, width: 187.5, height: 133.125 });
        assert_eq!(scaled.size, whole.size);
        let cover = plan((4000, 3000), &options("w=100,h=100,fit=cover,g=right")).rescaled(0.125, (500, 375));
        assert_eq!(cover.crop, Rect { left: 125.0, top: 0.0, width: 375.0, height: 375.0 });
        assert_eq!(plan((400, 300), &options("w=100")).rescaled(1.0, (400, 300)), plan((400, 300), &options("w=100")));
    }

    #[test]
    fn jpeg_scale_is_the_smallest_that_is_big_enough() {
        for (stored, target, expected) in [
            ((4000, 3000), "w=300", 1),
            ((2268, 1512), "w=300", 2),
            ((4000, 3000), "w=1200", 3),
            ((1920, 1080), "w=300", 2),
            ((1920, 1080), "w=1200", 5),
            ((400, 300), "w=400", 8),
            ((400, 300), "w=800,fit=contain", 8),
            ((4000, 3000), "w=100,h=100,fit=cover", 1),
            ((4000, 3000), "w=1000,h=100,fit=fill", 2),
        ] {
            let plan = plan(stored, &options(target));
            let needed = plan.needed_source_size(stored);
            let n = jpeg_scale(stored, needed);
            assert_eq!(n, expected, "{stored:?} {target}");
            let decoded = |n: u8| (stored.0 * u32::from(n)).div_ceil(8);
            assert!(decoded(n) >= plan.size.0.min(stored.0), "{stored:?} {target}: {n}/8 too small");
            if n > 1 {
                let smaller = jpeg_scale(stored, needed) - 1;
                let fits = decoded(smaller) >= needed.0 && (stored.1 * u32::from(smaller)).div_ceil(8) >= needed.1;
                assert!(!fits, "{stored:?} {target}: {smaller}/8 would do");
            }
        }
    }
}
