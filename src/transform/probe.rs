//! Header-only inspection: format, dimensions, alpha and frame count, read without decoding a single pixel
//! (the decompression-bomb check runs on what this returns). Every read is bounds-checked: the bytes are
//! untrusted.

use super::{SourceInfo, TransformError, orient};
use crate::sniff::ImageFormat;

/// What the header says, plus the JPEG details the decoder and encoder need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// The public summary.
    pub info: SourceInfo,
    /// EXIF orientation 1..=8 from a JPEG's APP1 segment (other formats: read by the decoder).
    pub orientation: u8,
    /// A JPEG's embedded ICC profile, reassembled from its APP2 chunks.
    pub icc: Option<Vec<u8>>,
    /// JPEG colour components (1 grey, 3 YCbCr/RGB, 4 CMYK/YCCK).
    pub components: u8,
    /// A JPEG with an Adobe APP14 segment (its CMYK values are stored inverted).
    pub adobe: bool,
}

fn undecodable(what: &str) -> TransformError {
    TransformError::Undecodable(what.to_owned())
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn le16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

fn le24(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes([*bytes.get(at)?, *bytes.get(at + 1)?, *bytes.get(at + 2)?, 0]))
}

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Reads the header of any supported format.
pub(crate) fn read_header(source: &[u8]) -> Result<Header, TransformError> {
    let header = match ImageFormat::sniff(source) {
        Some(ImageFormat::Jpeg) => jpeg(source)?,
        Some(ImageFormat::Png) => simple(png(source).ok_or_else(|| undecodable("truncated PNG header"))?),
        Some(ImageFormat::Gif) => simple(gif(source).ok_or_else(|| undecodable("truncated GIF header"))?),
        Some(ImageFormat::Webp) => simple(webp(source).ok_or_else(|| undecodable("truncated WebP header"))?),
        Some(ImageFormat::Avif) => return Err(TransformError::UnsupportedSource("AVIF")),
        Some(ImageFormat::Bmp) => return Err(TransformError::UnsupportedSource("BMP")),
        Some(ImageFormat::Ico) => return Err(TransformError::UnsupportedSource("ICO")),
        None => return Err(undecodable("not a recognised image format")),
    };
    if header.info.width == 0 || header.info.height == 0 {
        return Err(undecodable("image has a zero dimension"));
    }
    Ok(header)
}

fn simple(info: SourceInfo) -> Header {
    Header { info, orientation: 1, icc: None, components: 0, adobe: false }
}

/// Walks the JPEG segments up to the first SOS: SOFn gives the size, APP1 the EXIF orientation, APP2 the ICC
/// profile. Also insists on an EOI marker after the scan data: libjpeg pads a truncated file with grey rather
/// than failing, and a cut-off upload should be refused, not cached as half an image.
fn jpeg(source: &[u8]) -> Result<Header, TransformError> {
    let mut at = 2;
    let mut size = None;
    let mut components = 0;
    let mut orientation = 1;
    let mut icc_chunks: Vec<(u8, &[u8])> = Vec::new();
    let mut adobe = false;
    let scan_start = loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while source.get(at) == Some(&0xFF) && source.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        if source.get(at) != Some(&0xFF) {
            return Err(undecodable("JPEG marker expected"));
        }
        let marker = *source.get(at + 1).ok_or_else(|| undecodable("truncated JPEG header"))?;
        if matches!(marker, 0x01 | 0xD0..=0xD7) {
            at += 2;
            continue;
        }
        let length = usize::from(be16(source, at + 2).ok_or_else(|| undecodable("truncated JPEG header"))?);
        let body = source
            .get(at + 4..at + 2 + length)
            .filter(|_| length >= 2)
            .ok_or_else(|| undecodable("truncated JPEG segment"))?;
        match marker {
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC); libjpeg uses the first one.
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) && size.is_none() => {
                let height = be16(body, 1).ok_or_else(|| undecodable("short SOF"))?;
                let width = be16(body, 3).ok_or_else(|| undecodable("short SOF"))?;
                components = *body.get(5).ok_or_else(|| undecodable("short SOF"))?;
                size = Some((u32::from(width), u32::from(height)));
            }
            0xE1 if body.starts_with(b"Exif\0\0") => {
                orientation = body.get(6..).and_then(orient::exif_orientation).unwrap_or(1);
            }
            0xE2 if body.starts_with(b"ICC_PROFILE\0") => {
                if let (Some(&sequence), Some(data)) = (body.get(12), body.get(14..)) {
                    icc_chunks.push((sequence, data));
                }
            }
            0xEE if body.starts_with(b"Adobe") => adobe = true,
            0xDA => break at + 2 + length,
            0xD9 => return Err(undecodable("JPEG has no image data")),
            _ => {}
        }
        at += 2 + length;
    };
    let (width, height) = size.ok_or_else(|| undecodable("JPEG has no frame header"))?;
    let tail = source.get(scan_start..).unwrap_or_default();
    // From the end: a whole file has its EOI there, so this is quick for the normal case.
    if !tail.windows(2).rev().any(|pair| pair == [0xFF, 0xD9]) {
        return Err(undecodable("truncated JPEG (no end-of-image marker)"));
    }
    icc_chunks.sort_by_key(|&(sequence, _)| sequence);
    let icc = (!icc_chunks.is_empty()).then(|| icc_chunks.iter().flat_map(|(_, data)| data.iter().copied()).collect());
    let info = SourceInfo { format: ImageFormat::Jpeg, width, height, has_alpha: false, frames: Some(1) };
    Ok(Header { info, orientation, icc, components, adobe })
}

/// IHDR must be the first chunk; alpha comes from the colour type or a tRNS chunk before IDAT, and an
/// acTL chunk (APNG) gives the frame count.
fn png(source: &[u8]) -> Option<SourceInfo> {
    if source.get(12..16)? != b"IHDR" {
        return None;
    }
    let width = be32(source, 16)?;
    let height = be32(source, 20)?;
    let colour_type = *source.get(25)?;
    let mut has_alpha = matches!(colour_type, 4 | 6);
    let mut frames = Some(1);
    let mut at = 8usize;
    // Chunk walk: length, type, data, CRC. Stops at IDAT or at the end of what we have.
    while let (Some(length), Some(kind)) = (be32(source, at), source.get(at + 4..at + 8)) {
        match kind {
            b"tRNS" => has_alpha = true,
            b"acTL" => frames = be32(source, at + 8),
            b"IDAT" | b"IEND" => break,
            _ => {}
        }
        at = at.checked_add(12)?.checked_add(usize::try_from(length).ok()?)?;
    }
    Some(SourceInfo { format: ImageFormat::Png, width, height, has_alpha, frames })
}

/// Logical screen size, then a walk over the blocks (skipping sub-blocks, no LZW decoding) to count frames,
/// see any transparency flag, and catch a frame larger than the screen (its pixels are decoded too).
fn gif(source: &[u8]) -> Option<SourceInfo> {
    let mut width = u32::from(le16(source, 6)?);
    let mut height = u32::from(le16(source, 8)?);
    let flags = *source.get(10)?;
    let mut at = 13 + if flags & 0x80 != 0 { 3usize << ((flags & 7) + 1) } else { 0 };
    let mut frames = 0u32;
    let mut has_alpha = false;
    let skip_sub_blocks = |mut at: usize| -> Option<usize> {
        loop {
            let size = usize::from(*source.get(at)?);
            at += 1 + size;
            if size == 0 {
                return Some(at);
            }
        }
    };
    loop {
        match source.get(at) {
            Some(0x21) => {
                if source.get(at + 1) == Some(&0xF9) && source.get(at + 3).is_some_and(|packed| packed & 1 != 0) {
                    has_alpha = true;
                }
                match skip_sub_blocks(at + 2) {
                    Some(next) => at = next,
                    None => break,
                }
            }
            Some(0x2C) => {
                frames += 1;
                let (Some(w), Some(h), Some(&packed)) =
                    (le16(source, at + 5), le16(source, at + 7), source.get(at + 9))
                else {
                    break;
                };
                // The decoder allocates the larger of the screen and any frame.
                width = width.max(u32::from(w));
                height = height.max(u32::from(h));
                at += 10 + if packed & 0x80 != 0 { 3usize << ((packed & 7) + 1) } else { 0 };
                // One byte of LZW minimum code size, then the data sub-blocks.
                match skip_sub_blocks(at + 1) {
                    Some(next) => at = next,
                    None => break,
                }
            }
            _ => break,
        }
    }
    Some(SourceInfo { format: ImageFormat::Gif, width, height, has_alpha, frames: Some(frames.max(1)) })
}

/// The first chunk says it all: `VP8 ` (lossy, no alpha), `VP8L` (lossless, alpha bit) or `VP8X` (extended,
/// with alpha and animation flags and the canvas size); animated files have one ANMF chunk per frame.
fn webp(source: &[u8]) -> Option<SourceInfo> {
    let kind = source.get(12..16)?;
    let (width, height, has_alpha, animated) = match kind {
        b"VP8 " => {
            // Frame tag (3 bytes), start code 9d 01 2a, then 14-bit width and height.
            if source.get(23..26)? != [0x9D, 0x01, 0x2A] {
                return None;
            }
            (u32::from(le16(source, 26)? & 0x3FFF), u32::from(le16(source, 28)? & 0x3FFF), false, false)
        }
        b"VP8L" => {
            if *source.get(20)? != 0x2F {
                return None;
            }
            let bits = le32(source, 21)?;
            ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bits & (1 << 28) != 0, false)
        }
        b"VP8X" => {
            let flags = *source.get(20)?;
            (le24(source, 24)? + 1, le24(source, 27)? + 1, flags & 0x10 != 0, flags & 0x02 != 0)
        }
        _ => return None,
    };
    let frames = if animated { Some(count_webp_frames(source)) } else { Some(1) };
    Some(SourceInfo { format: ImageFormat::Webp, width, height, has_alpha, frames })
}

fn count_webp_frames(source: &[u8]) -> u32 {
    let mut at = 12usize;
    let mut frames = 0;
    while let (Some(kind), Some(length)) = (source.get(at..at + 4), le32(source, at + 4)) {
        if kind == b"ANMF" {
            frames += 1;
        }
        // Chunks are padded to an even length.
        let Some(next) = usize::try_from(length).ok().and_then(|l| at.checked_add(8 + l + (l & 1))) else {
            break;
        };
        at = next;
    }
    frames.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        for bytes in [
            &b"\xFF\xD8\xFF"[..],
            b"\xFF\xD8\xFF\xE0\x00",
            b"\xFF\xD8\xFF\xE0\x00\x01",
            b"\xFF\xD8\xFF\xC0\x00\x03\x08",
            b"\x89PNG\r\n\x1a\n\x00\x00",
            b"GIF89a\x01",
            b"RIFF\x00\x00\x00\x00WEBPVP8 ",
            b"RIFF\x00\x00\x00\x00WEBPVP8X\x00\x00",
        ] {
            assert!(read_header(bytes).is_err(), "{bytes:?}");
        }
        // A WebP claiming animation with a huge chunk length must not overflow the walk.
        let mut webp = b"RIFF\x00\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00".to_vec();
        webp.extend_from_slice(b"ANMF\xff\xff\xff\xff");
        let header = read_header(&webp).expect("header");
        assert_eq!(header.info.frames, Some(1));
    }

    #[test]
    fn unsupported_formats_are_named() {
        let avif = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1";
        assert_eq!(read_header(avif), Err(TransformError::UnsupportedSource("AVIF")));
        assert_eq!(
            read_header(b"BM\x36\x00\x00\x00\x00\x00\x00\x00\x36\x00"),
            Err(TransformError::UnsupportedSource("BMP"))
        );
    }
}
