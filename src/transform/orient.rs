//! EXIF orientation: read the tag from the TIFF structure inside an APP1 segment, and apply any of the eight
//! orientations (and the user's `rotate`, which is one of them) to a bitmap.

use super::bitmap::Bitmap;
use crate::request::Rotate;

/// Reads tag 0x0112 (Orientation) from IFD0 of a TIFF structure ("II*\0" or "MM\0*"). `None` when absent,
/// malformed or out of range; every offset is checked, the bytes come from the client's upstream.
pub(crate) fn exif_orientation(tiff: &[u8]) -> Option<u8> {
    let little = match tiff.get(..4)? {
        [b'I', b'I', 42, 0] => true,
        [b'M', b'M', 0, 42] => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let bytes = [*tiff.get(at)?, *tiff.get(at.checked_add(1)?)?];
        Some(if little { u16::from_le_bytes(bytes) } else { u16::from_be_bytes(bytes) })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let bytes: [u8; 4] = tiff.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if little { u32::from_le_bytes(bytes) } else { u32::from_be_bytes(bytes) })
    };
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let entries = usize::from(u16_at(ifd)?);
    for index in 0..entries {
        let entry = ifd.checked_add(2)?.checked_add(index.checked_mul(12)?)?;
        if u16_at(entry)? != 0x0112 {
            continue;
        }
        // Type SHORT (3), count 1: the value sits in the first two bytes of the value field.
        if u16_at(entry + 2)? != 3 {
            return None;
        }
        let value = u16_at(entry + 8)?;
        return (1..=8).contains(&value).then_some(value as u8);
    }
    None
}

/// The user's `rotate` as the EXIF orientation that means the same clockwise turn.
pub(crate) fn rotate_as_orientation(rotate: Rotate) -> u8 {
    match rotate {
        Rotate::Deg90 => 6,
        Rotate::Deg180 => 3,
        Rotate::Deg270 => 8,
    }
}

/// Whether applying `orientation` exchanges width and height.
pub(crate) fn swaps_axes(orientation: u8) -> bool {
    (5..=8).contains(&orientation)
}

/// Turns a stored image into its display orientation (the transform a viewer applies for EXIF value
/// `orientation`). 1 and unknown values return the image unchanged.
pub(crate) fn apply(image: Bitmap, orientation: u8) -> Bitmap {
    if !(2..=8).contains(&orientation) {
        return image;
    }
    let (w, h) = (image.width as usize, image.height as usize);
    let (out_w, out_h) = if swaps_axes(orientation) { (h, w) } else { (w, h) };
    let channels = image.channels;
    let mut data = vec![0u8; image.data.len()];
    // For each destination pixel, which source pixel lands there. The eight cases are the dihedral group:
    // flips, 180, transpose (5), 90 cw (6), transverse (7), 270 cw (8).
    let source_of = |x: usize, y: usize| -> (usize, usize) {
        match orientation {
            2 => (w - 1 - x, y),
            3 => (w - 1 - x, h - 1 - y),
            4 => (x, h - 1 - y),
            5 => (y, x),
            6 => (y, h - 1 - x),
            7 => (w - 1 - y, h - 1 - x),
            _ => (w - 1 - y, x),
        }
    };
    for (y, row) in data.chunks_exact_mut(out_w * channels).enumerate() {
        for (x, pixel) in row.chunks_exact_mut(channels).enumerate() {
            let (sx, sy) = source_of(x, y);
            let at = (sy * w + sx) * channels;
            if let Some(source) = image.data.get(at..at + channels) {
                pixel.copy_from_slice(source);
            }
        }
    }
    Bitmap { width: out_w as u32, height: out_h as u32, channels, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3x2 image whose pixels are numbered 0..6 in reading order (stored in the red channel).
    fn numbered() -> Bitmap {
        Bitmap::new(3, 2, 3, (0..6u8).flat_map(|n| [n, 0, 0]).collect()).expect("valid")
    }

    fn reds(image: &Bitmap) -> Vec<u8> {
        image.data.chunks_exact(3).map(|p| p[0]).collect()
    }

    #[test]
    fn all_eight_orientations() {
        // Stored:   0 1 2
        //           3 4 5
        let cases: [(u8, (u32, u32), [u8; 6]); 8] = [
            (1, (3, 2), [0, 1, 2, 3, 4, 5]),
            (2, (3, 2), [2, 1, 0, 5, 4, 3]),
            (3, (3, 2), [5, 4, 3, 2, 1, 0]),
            (4, (3, 2), [3, 4, 5, 0, 1, 2]),
            (5, (2, 3), [0, 3, 1, 4, 2, 5]),
            (6, (2, 3), [3, 0, 4, 1, 5, 2]),
            (7, (2, 3), [5, 2, 4, 1, 3, 0]),
            (8, (2, 3), [2, 5, 1, 4, 0, 3]),
        ];
        for (orientation, size, expected) in cases {
            let out = apply(numbered(), orientation);
            assert_eq!((out.width, out.height), size, "orientation {orientation}");
            assert_eq!(reds(&out), expected, "orientation {orientation}");
        }
    }

    #[test]
    fn reads_the_tag_in_both_byte_orders() {
        let little = b"II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00\x00\x00";
        assert_eq!(exif_orientation(little), Some(6));
        let big = b"MM\x00*\x00\x00\x00\x08\x00\x02\x01\x0f\x00\x02\x00\x00\x00\x01\x00\x00\x00\x00\x01\x12\x00\x03\x00\x00\x00\x01\x00\x08\x00\x00";
        assert_eq!(exif_orientation(big), Some(8));
        // Truncated, out of range, absurd offsets: no panic, no value.
        assert_eq!(exif_orientation(&little[..18]), None);
        assert_eq!(exif_orientation(b"II*\x00\xff\xff\xff\xff"), None);
        let nine = b"II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x09\x00\x00\x00";
        assert_eq!(exif_orientation(nine), None);
    }
}
