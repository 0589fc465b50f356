//! Black-box tests of `mirage::transform`: every option and fit mode on fixtures built in memory (a 400x300
//! image with four solid quadrants), output formats by magic bytes, EXIF orientation, limits and hostile input.

mod common;

use std::time::{Duration, Instant};

use common::{avif, photo, png_chunk};
use image::{DynamicImage, RgbaImage};
use mirage::request::TransformOptions;
use mirage::sniff::ImageFormat;
use mirage::transform::{self, Encoded, Limits, OutputFormat, TransformError};

const RED: [u8; 3] = [255, 0, 0];
const GREEN: [u8; 3] = [0, 255, 0];
const BLUE: [u8; 3] = [0, 0, 255];
const YELLOW: [u8; 3] = [255, 255, 0];

fn options(segment: &str) -> TransformOptions {
    TransformOptions::parse(segment).unwrap_or_else(|e| panic!("{segment}: {e}"))
}

fn run(source: &[u8], segment: &str, output: OutputFormat) -> Encoded {
    transform::transform(source, &options(segment), output, &Limits::default())
        .unwrap_or_else(|e| panic!("{segment} -> {output:?}: {e}"))
}

fn decode(bytes: &[u8]) -> RgbaImage {
    image::load_from_memory(bytes).expect("output decodes").into_rgba8()
}

fn png_bytes(image: &RgbaImage, alpha: bool) -> Vec<u8> {
    let image = if alpha {
        DynamicImage::ImageRgba8(image.clone())
    } else {
        DynamicImage::ImageRgba8(image.clone()).into_rgb8().into()
    };
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).expect("encode fixture");
    bytes.into_inner()
}

/// 400x300: red top-left, green top-right, blue bottom-left, yellow bottom-right.
fn quadrants() -> RgbaImage {
    RgbaImage::from_fn(400, 300, |x, y| {
        let [r, g, b] = match (x < 200, y < 150) {
            (true, true) => RED,
            (false, true) => GREEN,
            (true, false) => BLUE,
            (false, false) => YELLOW,
        };
        image::Rgba([r, g, b, 255])
    })
}

fn quadrants_png() -> Vec<u8> {
    png_bytes(&quadrants(), false)
}

fn quadrants_jpeg() -> Vec<u8> {
    run(&quadrants_png(), "q=95", OutputFormat::Jpeg).bytes
}

fn rgb_at(image: &RgbaImage, x: u32, y: u32) -> [u8; 3] {
    let p = image.get_pixel(x, y).0;
    [p[0], p[1], p[2]]
}

fn assert_colour(image: &RgbaImage, x: u32, y: u32, expected: [u8; 3], context: &str) {
    let actual = rgb_at(image, x, y);
    let close = actual.iter().zip(expected).all(|(&a, e)| a.abs_diff(e) <= 12);
    assert!(close, "{context}: pixel ({x},{y}) is {actual:?}, expected {expected:?}");
}

#[test]
fn probe_reads_headers_of_every_decodable_format() {
    let png = quadrants_png();
    let info = transform::probe(&png).expect("png");
    assert_eq!((info.format, info.width, info.height, info.has_alpha), (ImageFormat::Png, 400, 300, false));
    let rgba = transform::probe(&png_bytes(&quadrants(), true)).expect("rgba png");
    assert!(rgba.has_alpha);
    for (output, format) in [
        (OutputFormat::Jpeg, ImageFormat::Jpeg),
        (OutputFormat::Webp, ImageFormat::Webp),
        (OutputFormat::Gif, ImageFormat::Gif),
    ] {
        let encoded = run(&png, "w=200", output);
        let info = transform::probe(&encoded.bytes).expect("probe");
        assert_eq!((info.format, info.width, info.height), (format, 200, 150), "{output:?}");
    }
}

#[test]
fn every_output_format_has_the_right_magic_and_media_type() {
    let png = quadrants_png();
    for (output, format) in [
        (OutputFormat::Jpeg, ImageFormat::Jpeg),
        (OutputFormat::Png, ImageFormat::Png),
        (OutputFormat::Webp, ImageFormat::Webp),
        (OutputFormat::Gif, ImageFormat::Gif),
    ] {
        let encoded = run(&png, "w=100", output);
        assert_eq!(ImageFormat::sniff(&encoded.bytes), Some(format), "{output:?}");
        assert_eq!(output.media_type(), format.media_type());
        assert_eq!((encoded.format, encoded.width, encoded.height), (output, 100, 75));
        let decoded = decode(&encoded.bytes);
        assert_eq!(decoded.dimensions(), (100, 75), "{output:?}");
        assert_colour(&decoded, 10, 10, RED, &format!("{output:?}"));
        assert_colour(&decoded, 90, 65, YELLOW, &format!("{output:?}"));
    }
    assert_eq!((OutputFormat::Jpeg.default_quality(), OutputFormat::Webp.default_quality()), (82, 80));
    assert_eq!(OutputFormat::Avif.default_quality(), 82);
}

/// No AV1 decoder builds here (see `common::avif`): AVIF output is checked by its container, which states the
/// size the encoder was given, and against the other formats' sizes.
#[test]
fn avif_output_is_an_avif_file_of_the_requested_size() {
    assert!(OutputFormat::Avif.supported());
    assert_eq!(OutputFormat::Avif.media_type(), "image/avif");
    let png = quadrants_png();
    for (segment, size) in [("w=100", (100, 75)), ("w=33", (33, 25)), ("h=300,fit=cover,w=7", (7, 300))] {
        let encoded = run(&png, segment, OutputFormat::Avif);
        assert_eq!(ImageFormat::sniff(&encoded.bytes), Some(ImageFormat::Avif), "{segment}");
        assert_eq!((encoded.format, encoded.width, encoded.height), (OutputFormat::Avif, size.0, size.1));
        let info = avif::parse(&encoded.bytes).unwrap_or_else(|e| panic!("{segment}: {e}"));
        assert!(info.has_brand(*b"avif") && info.has_brand(*b"mif1"), "{segment}: {info:?}");
        assert_eq!(info.sizes, vec![size], "{segment}: one opaque image of the requested size");
        assert!(info.av1_config && !info.alpha && info.media_bytes > 0, "{segment}: {info:?}");
    }
    // A source with transparency keeps it: an alpha auxiliary image (sharing the colour image's ispe property).
    let mut translucent = quadrants();
    for (x, _, pixel) in translucent.enumerate_pixels_mut() {
        pixel.0[3] = if x < 200 { 0 } else { 255 };
    }
    let encoded = run(&png_bytes(&translucent, true), "w=100", OutputFormat::Avif);
    let info = avif::parse(&encoded.bytes).expect("alpha avif");
    assert!(info.alpha, "{info:?}");
    assert!(!info.sizes.is_empty() && info.sizes.iter().all(|&size| size == (100, 75)), "{info:?}");
    // A real photo: smaller than the JPEG of the same size (the quality bar is in benches/formats.py).
    let photo = photo();
    let jpeg = run(&photo, "w=300", OutputFormat::Jpeg).bytes.len();
    let avif = run(&photo, "w=300", OutputFormat::Avif).bytes.len();
    assert!(avif < jpeg, "AVIF {avif} bytes, JPEG {jpeg}");
}

#[test]
fn avif_over_its_pixel_limit_is_refused_or_falls_back_to_webp() {
    let png = quadrants_png();
    let limits = Limits { max_avif_pixels: 200 * 150, ..Limits::default() };
    let transform = |segment: &str| transform::transform(&png, &options(segment), OutputFormat::Avif, &limits);
    let at_limit = transform("w=200,f=avif").expect("at the limit");
    assert_eq!((at_limit.format, at_limit.width), (OutputFormat::Avif, 200));
    assert_eq!(
        transform("w=201,f=avif"),
        Err(TransformError::AvifTooLarge { width: 201, height: 151, limit: 30_000 }),
        "explicit AVIF over the limit"
    );
    // `auto` negotiated AVIF (the caller passes it in): over the limit it becomes WebP, under it stays AVIF.
    let over = transform("w=201,f=auto").expect("auto over the limit");
    assert_eq!((over.format, over.width), (OutputFormat::Webp, 201));
    assert_eq!(ImageFormat::sniff(&over.bytes), Some(ImageFormat::Webp));
    assert_eq!(transform("w=100,f=auto").expect("auto under the limit").format, OutputFormat::Avif);
    // The limit is on the output: a large source made small is fine.
    assert_eq!(transform("w=400,h=30,fit=cover,f=avif").map(|e| e.format), Ok(OutputFormat::Avif));
}

#[test]
fn every_fit_with_width_height_or_both() {
    // (segment, expected size) for the 400x300 source; the aspect ratio is kept except for cover/crop/pad/fill
    // with both sides, whose output is the box (crop: never larger than the source).
    let cases: &[(&str, (u32, u32))] = &[
        ("w=200", (200, 150)),
        ("h=150", (200, 150)),
        ("w=800", (400, 300)),
        ("w=800,fit=contain", (800, 600)),
        ("h=600,fit=cover", (800, 600)),
        ("w=800,fit=crop", (400, 300)),
        ("w=100,fit=pad", (100, 75)),
        ("h=30,fit=fill", (40, 30)),
        ("w=100,h=100", (100, 75)),
        ("w=100,h=100,fit=scale-down", (100, 75)),
        ("w=800,h=800,fit=scale-down", (400, 300)),
        ("w=100,h=100,fit=contain", (100, 75)),
        ("w=800,h=800,fit=contain", (800, 600)),
        ("w=100,h=100,fit=cover", (100, 100)),
        ("w=800,h=500,fit=cover", (800, 500)),
        ("w=100,h=100,fit=crop", (100, 100)),
        ("w=800,h=500,fit=crop", (400, 300)),
        ("w=500,h=100,fit=crop", (400, 100)),
        ("w=100,h=100,fit=pad", (100, 100)),
        ("w=800,h=800,fit=pad", (800, 800)),
        ("w=100,h=100,fit=fill", (100, 100)),
        ("w=500,h=50,fit=fill", (500, 50)),
    ];
    let png = quadrants_png();
    for &(segment, size) in cases {
        let encoded = run(&png, segment, OutputFormat::Png);
        assert_eq!((encoded.width, encoded.height), size, "{segment}");
        assert_eq!(decode(&encoded.bytes).dimensions(), size, "{segment}");
    }
    // Fill really stretches: the quadrant boundary stays in the middle of the squashed image.
    let fill = decode(&run(&png, "w=500,h=50,fit=fill", OutputFormat::Png).bytes);
    assert_colour(&fill, 240, 12, RED, "fill");
    assert_colour(&fill, 260, 37, YELLOW, "fill");
}

#[test]
fn no_size_keeps_the_size_but_applies_format_and_effects() {
    let encoded = run(&quadrants_png(), "f=webp,blur=1", OutputFormat::Webp);
    assert_eq!((encoded.width, encoded.height), (400, 300));
    assert_eq!(ImageFormat::sniff(&encoded.bytes), Some(ImageFormat::Webp));
}

#[test]
fn gravity_picks_the_right_region_for_all_nine() {
    let png = quadrants_png();
    // (gravity, horizontal anchor: L/C/R, vertical anchor: T/C/B).
    let gravities = [
        ("center", 'C', 'C'),
        ("top", 'C', 'T'),
        ("bottom", 'C', 'B'),
        ("left", 'L', 'C'),
        ("right", 'R', 'C'),
        ("top-left", 'L', 'T'),
        ("top-right", 'R', 'T'),
        ("bottom-left", 'L', 'B'),
        ("bottom-right", 'R', 'B'),
    ];
    for (gravity, horizontal, vertical) in gravities {
        // A square box on the 4:3 source crops 300 of 400 columns (offset 0, 50 or 100). Output column 40
        // shows source column offset+120 and column 60 shows offset+180, either side of the boundary at 200.
        let square = decode(&run(&png, &format!("w=100,h=100,fit=cover,g={gravity}"), OutputFormat::Png).bytes);
        let (at40, at60) = match horizontal {
            'L' => (RED, RED),
            'C' => (RED, GREEN),
            _ => (GREEN, GREEN),
        };
        assert_colour(&square, 40, 25, at40, gravity);
        assert_colour(&square, 60, 25, at60, gravity);
        // A 4:1 box keeps 100 of 300 rows (offset 0, 100 or 200) at scale 0.75: output rows 30 and 45 show
        // source rows offset+40 and offset+60, either side of the boundary at 150.
        let wide = decode(&run(&png, &format!("w=300,h=75,fit=cover,g={gravity}"), OutputFormat::Png).bytes);
        let (at30, at45) = match vertical {
            'T' => (RED, RED),
            'C' => (RED, BLUE),
            _ => (BLUE, BLUE),
        };
        assert_colour(&wide, 50, 30, at30, gravity);
        assert_colour(&wide, 50, 45, at45, gravity);
        // Crop (never enlarge) with the same boxes picks the same regions.
        let crop = decode(&run(&png, &format!("w=100,h=100,fit=crop,g={gravity}"), OutputFormat::Png).bytes);
        assert_eq!(crop, square, "{gravity}: crop and cover differ");
    }
}

#[test]
fn pad_uses_the_background_colour() {
    // A 400x200 grey image padded into a square: bands above and below.
    let grey = RgbaImage::from_pixel(400, 200, image::Rgba([128, 128, 128, 255]));
    let source = png_bytes(&grey, false);
    for (segment, background) in [("", [255, 255, 255]), (",background=ff0000", RED), (",bg=00f", BLUE)] {
        let out = decode(&run(&source, &format!("w=100,h=100,fit=pad{segment}"), OutputFormat::Png).bytes);
        assert_eq!(out.dimensions(), (100, 100));
        assert_eq!(rgb_at(&out, 50, 5), background, "{segment}: top band");
        assert_eq!(rgb_at(&out, 50, 95), background, "{segment}: bottom band");
        assert_eq!(rgb_at(&out, 50, 50), [128, 128, 128], "{segment}: image");
        let jpeg = decode(&run(&source, &format!("w=100,h=100,fit=pad{segment}"), OutputFormat::Jpeg).bytes);
        assert_colour(&jpeg, 50, 5, background, segment);
    }
    // A translucent background stays translucent in PNG and is flattened (onto its own colour) in JPEG.
    let out = decode(&run(&source, "w=100,h=100,fit=pad,bg=00ff0000", OutputFormat::Png).bytes);
    assert_eq!(out.get_pixel(50, 5).0[3], 0);
    assert_eq!(out.get_pixel(50, 50).0, [128, 128, 128, 255]);
}

#[test]
fn alpha_is_flattened_onto_the_background_for_jpeg_and_kept_for_png_and_webp() {
    // Left half fully transparent (stored as black), right half opaque blue.
    let image =
        RgbaImage::from_fn(
            200,
            100,
            |x, _| if x < 100 { image::Rgba([0, 0, 0, 0]) } else { image::Rgba([0, 0, 255, 255]) },
        );
    let source = png_bytes(&image, true);
    let jpeg = decode(&run(&source, "w=100", OutputFormat::Jpeg).bytes);
    assert_colour(&jpeg, 10, 25, [255, 255, 255], "default background");
    assert_colour(&jpeg, 90, 25, BLUE, "opaque part");
    let green = decode(&run(&source, "w=100,bg=00ff00", OutputFormat::Jpeg).bytes);
    assert_colour(&green, 10, 25, GREEN, "bg=00ff00");
    let png = decode(&run(&source, "w=100", OutputFormat::Png).bytes);
    assert_eq!(png.get_pixel(10, 25).0[3], 0, "PNG keeps transparency");
    let webp = decode(&run(&source, "w=100", OutputFormat::Webp).bytes);
    assert!(webp.get_pixel(10, 25).0[3] < 10, "WebP keeps transparency");
    assert_eq!(webp.get_pixel(90, 25).0[3], 255);
}

/// Splices an APP1 Exif segment with the given orientation right after the SOI marker.
fn with_orientation(jpeg: &[u8], orientation: u8) -> Vec<u8> {
    let tiff: Vec<u8> = [
        &b"II*\x00\x08\x00\x00\x00\x01\x00"[..],
        &[0x12, 0x01, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, orientation, 0x00, 0x00, 0x00],
        &[0, 0, 0, 0],
    ]
    .concat();
    let payload = [&b"Exif\x00\x00"[..], &tiff].concat();
    let length = u16::try_from(payload.len() + 2).expect("short segment");
    [&jpeg[..2], &[0xFF, 0xE1], &length.to_be_bytes(), &payload, &jpeg[2..]].concat()
}

fn assert_corners(image: &RgbaImage, expected: [[u8; 3]; 4], context: &str) {
    let (w, h) = image.dimensions();
    for (&(x, y), colour) in [(10, 10), (w - 11, 10), (10, h - 11), (w - 11, h - 11)].iter().zip(expected) {
        assert_colour(image, x, y, colour, context);
    }
}

#[test]
fn exif_orientation_is_applied_and_stripped() {
    let jpeg = quadrants_jpeg();
    let rotated = with_orientation(&jpeg, 6);
    assert_eq!(transform::probe(&rotated).map(|i| (i.width, i.height)), Ok((400, 300)), "probe reports stored size");
    let encoded = run(&rotated, "", OutputFormat::Jpeg);
    assert_eq!((encoded.width, encoded.height), (300, 400), "orientation 6 swaps the sides");
    let out = decode(&encoded.bytes);
    // 90 degrees clockwise: the stored bottom-left (blue) is now top-left.
    assert_corners(&out, [BLUE, RED, YELLOW, GREEN], "orientation 6");
    // The output carries no EXIF, so no viewer rotates it a second time.
    assert!(!encoded.bytes.windows(6).any(|w| w == b"Exif\x00\x00"));
    // Resizing plans against the displayed size: w=150 of a 300-wide display is 150x200.
    let small = run(&rotated, "w=150", OutputFormat::Jpeg);
    assert_eq!((small.width, small.height), (150, 200));
    for (orientation, expected) in [
        (1, [RED, GREEN, BLUE, YELLOW]),
        (2, [GREEN, RED, YELLOW, BLUE]),
        (3, [YELLOW, BLUE, GREEN, RED]),
        (4, [BLUE, YELLOW, RED, GREEN]),
        (5, [RED, BLUE, GREEN, YELLOW]),
        (7, [YELLOW, GREEN, BLUE, RED]),
        (8, [GREEN, YELLOW, RED, BLUE]),
    ] {
        let out = decode(&run(&with_orientation(&jpeg, orientation), "w=200", OutputFormat::Png).bytes);
        assert_corners(&out, expected, &format!("orientation {orientation}"));
    }
}

#[test]
fn rotate_turns_clockwise_after_exif() {
    let png = quadrants_png();
    for (segment, size, expected) in [
        ("rotate=90", (300, 400), [BLUE, RED, YELLOW, GREEN]),
        ("rotate=180", (400, 300), [YELLOW, BLUE, GREEN, RED]),
        ("rotate=270", (300, 400), [GREEN, YELLOW, RED, BLUE]),
    ] {
        let out = decode(&run(&png, segment, OutputFormat::Png).bytes);
        assert_eq!(out.dimensions(), size, "{segment}");
        assert_corners(&out, expected, segment);
    }
    // Rotation happens before the resize, so width applies to the rotated image.
    let rotated = run(&png, "rotate=90,w=150", OutputFormat::Png);
    assert_eq!((rotated.width, rotated.height), (150, 200));
    // EXIF 6 then rotate=90 is 180 degrees in total.
    let both = decode(&run(&with_orientation(&quadrants_jpeg(), 6), "rotate=90", OutputFormat::Png).bytes);
    assert_corners(&both, [YELLOW, BLUE, GREEN, RED], "exif 6 + rotate 90");
}

#[test]
fn dpr_multiplies_the_requested_size() {
    let png = quadrants_png();
    let encoded = run(&png, "w=150,dpr=2", OutputFormat::Png);
    assert_eq!((encoded.width, encoded.height), (300, 225));
    let encoded = run(&png, "w=50,h=50,fit=cover,dpr=1.5", OutputFormat::Png);
    assert_eq!((encoded.width, encoded.height), (75, 75));
}

#[test]
fn quality_changes_the_size() {
    let photo = photo();
    for output in [OutputFormat::Jpeg, OutputFormat::Webp, OutputFormat::Avif] {
        let low = run(&photo, "w=300,q=30", output).bytes.len();
        let default = run(&photo, "w=300", output).bytes.len();
        let high = run(&photo, "w=300,q=90", output).bytes.len();
        assert!(low < default && default < high, "{output:?}: q30 {low}, default {default}, q90 {high}");
    }
}

/// Mean squared difference between horizontally and vertically adjacent pixels: high for sharp edges.
fn edge_energy(image: &RgbaImage) -> f64 {
    let (w, h) = image.dimensions();
    let mut total = 0.0;
    for y in 0..h - 1 {
        for x in 0..w - 1 {
            let p = image.get_pixel(x, y).0;
            for q in [image.get_pixel(x + 1, y).0, image.get_pixel(x, y + 1).0] {
                total += (0..3).map(|c| (f64::from(p[c]) - f64::from(q[c])).powi(2)).sum::<f64>();
            }
        }
    }
    total / f64::from(w * h)
}

#[test]
fn blur_softens_and_sharpen_crisps() {
    let photo = photo();
    let plain = edge_energy(&decode(&run(&photo, "w=250", OutputFormat::Png).bytes));
    let blurred = edge_energy(&decode(&run(&photo, "w=250,blur=3", OutputFormat::Png).bytes));
    let very = edge_energy(&decode(&run(&photo, "w=250,blur=40", OutputFormat::Png).bytes));
    let slight = edge_energy(&decode(&run(&photo, "w=250,blur=0.5", OutputFormat::Png).bytes));
    let sharpened = edge_energy(&decode(&run(&photo, "w=250,sharpen=3", OutputFormat::Png).bytes));
    assert!(very < blurred && blurred < slight && slight < plain, "{very} < {blurred} < {slight} < {plain}");
    assert!(blurred < plain / 3.0, "blur=3 should remove most edge energy: {blurred} vs {plain}");
    assert!(sharpened > plain * 1.3, "sharpen: {sharpened} vs {plain}");
    // The quadrant edge: blurred, the pixels next to the boundary are mixtures.
    let edge = decode(&run(&quadrants_png(), "blur=4", OutputFormat::Png).bytes);
    let mixed = rgb_at(&edge, 199, 75);
    assert!((100..200).contains(&mixed[0]) && (60..200).contains(&mixed[1]), "{mixed:?}");
}

#[test]
fn decompression_bombs_are_refused_from_the_header() {
    // A valid PNG signature and IHDR (correct CRC) declaring 100000x100000 RGBA, then a tiny IDAT and IEND.
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    let bomb = [
        &b"\x89PNG\r\n\x1a\n"[..],
        &png_chunk(*b"IHDR", &ihdr),
        &png_chunk(*b"IDAT", &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]),
        &png_chunk(*b"IEND", &[]),
    ]
    .concat();
    let info = transform::probe(&bomb).expect("header is valid");
    assert_eq!((info.width, info.height, info.has_alpha), (100_000, 100_000, true));
    let started = Instant::now();
    let result = transform::transform(&bomb, &options("w=100"), OutputFormat::Jpeg, &Limits::default());
    assert_eq!(result, Err(TransformError::TooManyPixels { width: 100_000, height: 100_000, limit: 50_000_000 }));
    assert!(started.elapsed() < Duration::from_millis(50), "refused without decoding: {:?}", started.elapsed());

    // The same for a JPEG whose SOF claims 65000x65000, and for a configurable limit.
    let jpeg = quadrants_jpeg();
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline SOF");
    let mut big = jpeg.clone();
    big[sof + 5..sof + 9].copy_from_slice(&[0xFD, 0xE8, 0xFD, 0xE8]);
    let result = transform::transform(&big, &options("w=100"), OutputFormat::Jpeg, &Limits::default());
    assert!(matches!(result, Err(TransformError::TooManyPixels { width: 65_000, height: 65_000, .. })), "{result:?}");
    let tight = Limits { max_source_pixels: 400 * 299, ..Limits::default() };
    let result = transform::transform(&quadrants_png(), &options("w=10"), OutputFormat::Png, &tight);
    assert!(matches!(result, Err(TransformError::TooManyPixels { .. })), "{result:?}");
}

#[test]
fn output_over_the_limit_is_refused() {
    let limits = Limits { max_output_pixels: 1000 * 1000, ..Limits::default() };
    let result = transform::transform(&quadrants_png(), &options("w=2000,fit=contain"), OutputFormat::Png, &limits);
    assert_eq!(result, Err(TransformError::OutputTooLarge { width: 2000, height: 1500, limit: 1_000_000 }));
    // A 1x2000 source asked for w=8192 with contain would be 8192 x 16 million.
    let thin = png_bytes(&RgbaImage::from_pixel(1, 2000, image::Rgba([1, 2, 3, 255])), false);
    let result = transform::transform(&thin, &options("w=8192,fit=contain"), OutputFormat::Png, &Limits::default());
    assert!(matches!(result, Err(TransformError::OutputTooLarge { .. })), "{result:?}");
}

fn undecodable(source: &[u8], output: OutputFormat) -> bool {
    matches!(
        transform::transform(source, &options("w=100"), output, &Limits::default()),
        Err(TransformError::Undecodable(_))
    )
}

#[test]
fn truncated_and_corrupt_images_are_undecodable() {
    let jpeg = quadrants_jpeg();
    let png = quadrants_png();
    assert!(undecodable(&jpeg[..jpeg.len() / 2], OutputFormat::Jpeg), "half a JPEG");
    assert!(undecodable(&jpeg[..jpeg.len() - 2], OutputFormat::Jpeg), "JPEG without EOI");
    assert!(undecodable(&png[..png.len() / 2], OutputFormat::Png), "half a PNG");
    assert!(undecodable(&png[..40], OutputFormat::Png), "PNG header only");
    let webp = run(&png, "", OutputFormat::Webp).bytes;
    assert!(undecodable(&webp[..webp.len() / 2], OutputFormat::Webp), "half a WebP");
    let gif = run(&png, "", OutputFormat::Gif).bytes;
    assert!(undecodable(&gif[..gif.len() / 2], OutputFormat::Gif), "half a GIF");
    // Garbage after the SOI marker, and after a valid header.
    assert!(undecodable(b"\xFF\xD8\xFFgarbage garbage garbage", OutputFormat::Jpeg));
    let mut garbage = b"\xFF\xD8".to_vec();
    garbage.extend((0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    garbage.extend_from_slice(b"\xFF\xD9");
    assert!(undecodable(&garbage, OutputFormat::Jpeg));
    assert!(undecodable(b"<html>not an image</html>", OutputFormat::Jpeg));
    // Unsupported formats say so.
    let bmp = b"BM\x36\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00";
    let result = transform::transform(bmp, &options("w=1"), OutputFormat::Png, &Limits::default());
    assert_eq!(result, Err(TransformError::UnsupportedSource("BMP")));
}

#[test]
fn corrupted_jpegs_never_abort_the_process() {
    // libjpeg errors unwind through C; every corruption must come back as a value (Ok for recoverable
    // damage, Undecodable otherwise), never abort. Overwrite bytes throughout a small JPEG, headers included.
    let small = run(&quadrants_png(), "w=64", OutputFormat::Jpeg).bytes;
    let mut errors = 0;
    for position in (2..small.len() - 2).step_by(3) {
        for value in [0x00, 0xFF, 0x7F] {
            let mut broken = small.clone();
            broken[position] = value;
            match transform::transform(&broken, &options("w=32"), OutputFormat::Jpeg, &Limits::default()) {
                Ok(_) | Err(TransformError::Undecodable(_) | TransformError::TooManyPixels { .. }) => {}
                Err(other) => panic!("byte {position} = {value:#x}: unexpected {other:?}"),
            }
            if transform::probe(&broken).is_err() {
                errors += 1;
            }
        }
    }
    assert!(errors > 0, "some corruptions must be detected");
}

/// A 3-frame 40x30 animation: red, green, blue.
fn animated_gif() -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut bytes);
        encoder.set_repeat(image::codecs::gif::Repeat::Infinite).expect("repeat");
        for colour in [RED, GREEN, BLUE] {
            let frame = RgbaImage::from_pixel(40, 30, image::Rgba([colour[0], colour[1], colour[2], 255]));
            let delay = image::Delay::from_numer_denom_ms(100, 1);
            encoder.encode_frame(image::Frame::from_parts(frame, 0, 0, delay)).expect("frame");
        }
    }
    bytes
}

#[test]
fn animated_gif_is_resized_frame_by_frame() {
    use image::AnimationDecoder;
    let gif = animated_gif();
    assert_eq!(transform::probe(&gif).map(|i| i.frames), Ok(Some(3)));
    let encoded = run(&gif, "w=20", OutputFormat::Gif);
    assert_eq!((encoded.width, encoded.height), (20, 15));
    let decoder = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(&encoded.bytes)).expect("gif");
    let frames: Vec<_> = decoder.into_frames().collect::<Result<_, _>>().expect("frames");
    assert_eq!(frames.len(), 3);
    for (frame, colour) in frames.iter().zip([RED, GREEN, BLUE]) {
        assert_eq!(frame.buffer().dimensions(), (20, 15));
        assert_colour(frame.buffer(), 10, 7, colour, "frame");
        assert_eq!(frame.delay().numer_denom_ms(), (100, 1));
    }
    // Another output format: the first frame only.
    let still = decode(&run(&gif, "w=20", OutputFormat::Png).bytes);
    assert_colour(&still, 10, 7, RED, "first frame");
    // Limits on frames and on frames x pixels.
    let few = Limits { max_frames: 2, ..Limits::default() };
    let result = transform::transform(&gif, &options("w=20"), OutputFormat::Gif, &few);
    assert_eq!(result, Err(TransformError::TooManyFrames { frames: 3, limit: 2 }));
    let small = Limits { max_source_pixels: 40 * 30 * 2, ..Limits::default() };
    let result = transform::transform(&gif, &options("w=20"), OutputFormat::Gif, &small);
    assert!(matches!(result, Err(TransformError::TooManyPixels { .. })), "{result:?}");
    // ...while the first frame alone fits.
    assert!(transform::transform(&gif, &options("w=20"), OutputFormat::Png, &small).is_ok());
}

#[test]
fn icc_profile_is_kept_for_jpeg_output() {
    // An APP2 ICC_PROFILE segment (a dummy payload: the encoder copies it, it does not interpret it).
    let profile: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    let payload = [&b"ICC_PROFILE\x00\x01\x01"[..], &profile].concat();
    let length = u16::try_from(payload.len() + 2).expect("short").to_be_bytes();
    let jpeg = quadrants_jpeg();
    let tagged = [&jpeg[..2], &[0xFF, 0xE2], &length, &payload, &jpeg[2..]].concat();
    let out = run(&tagged, "w=100", OutputFormat::Jpeg).bytes;
    assert!(out.windows(payload.len()).any(|w| w == payload.as_slice()), "ICC profile copied");
    // And a reader that checks the chunk numbering (1-based) reassembles it.
    let mut decoder = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(&out)).expect("jpeg");
    use image::ImageDecoder;
    assert_eq!(decoder.icc_profile().expect("readable"), Some(profile.clone()));
    let png = run(&tagged, "w=100", OutputFormat::Png).bytes;
    assert!(png.windows(4).any(|w| w == b"iCCP"), "PNG gets an iCCP chunk");
}
