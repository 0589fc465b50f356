//! Which image format a body holds, judged by its first bytes (magic numbers), never by what upstream claims.

/// The image formats Mirage will relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// JPEG / JFIF / EXIF.
    Jpeg,
    /// PNG (and APNG).
    Png,
    /// GIF87a / GIF89a.
    Gif,
    /// RIFF WebP.
    Webp,
    /// AVIF (ISO-BMFF with an avif/avis brand).
    Avif,
    /// Windows bitmap.
    Bmp,
    /// Windows icon.
    Ico,
}

impl ImageFormat {
    /// Recognises the format from the first bytes of a body; `None` for anything else (HTML, SVG, scripts...).
    pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
        match bytes {
            [0xFF, 0xD8, 0xFF, ..] => Some(ImageFormat::Jpeg),
            [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Some(ImageFormat::Png),
            [b'G', b'I', b'F', b'8', b'7' | b'9', b'a', ..] => Some(ImageFormat::Gif),
            [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some(ImageFormat::Webp),
            // BITMAPFILEHEADER: "BM", file size, two reserved zero words.
            [b'B', b'M', _, _, _, _, 0, 0, 0, 0, ..] => Some(ImageFormat::Bmp),
            // ICONDIR: reserved 0, type 1 (icon), at least one image.
            [0, 0, 1, 0, count_lo, count_hi, ..] if (*count_lo, *count_hi) != (0, 0) => Some(ImageFormat::Ico),
            _ if is_avif(bytes) => Some(ImageFormat::Avif),
            _ => None,
        }
    }

    /// The canonical media type.
    pub fn media_type(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Png => "image/png",
            ImageFormat::Gif => "image/gif",
            ImageFormat::Webp => "image/webp",
            ImageFormat::Avif => "image/avif",
            ImageFormat::Bmp => "image/bmp",
            ImageFormat::Ico => "image/x-icon",
        }
    }

    /// Whether an upstream `Content-Type` names this format (with its common aliases), parameters ignored.
    pub fn matches_content_type(self, content_type: &str) -> bool {
        let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        let aliases: &[&str] = match self {
            ImageFormat::Jpeg => &["image/jpeg", "image/jpg", "image/pjpeg"],
            ImageFormat::Png => &["image/png", "image/apng", "image/x-png"],
            ImageFormat::Gif => &["image/gif"],
            ImageFormat::Webp => &["image/webp"],
            ImageFormat::Avif => &["image/avif"],
            ImageFormat::Bmp => &["image/bmp", "image/x-bmp", "image/x-ms-bmp"],
            ImageFormat::Ico => &["image/x-icon", "image/vnd.microsoft.icon", "image/ico", "image/icon"],
        };
        aliases.contains(&essence.as_str())
    }

    /// The `Content-Type` to answer with: upstream's own value when it names the sniffed format (so a mirror
    /// answers what the origin answered), else the canonical type of what the bytes really are.
    pub fn response_content_type(self, upstream: Option<&str>) -> String {
        match upstream {
            Some(value) if self.matches_content_type(value) && value.is_ascii() => value.to_owned(),
            _ => self.media_type().to_owned(),
        }
    }
}

/// ISO-BMFF: a leading `ftyp` box whose major or compatible brands include `avif` or `avis`.
fn is_avif(bytes: &[u8]) -> bool {
    if bytes.len() < 16 || &bytes[4..8] != b"ftyp" {
        return false;
    }
    let box_len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let end = box_len.clamp(16, 4096).min(bytes.len());
    // Major brand at 8..12, minor version at 12..16, compatible brands after.
    std::iter::once(&bytes[8..12])
        .chain(bytes[16..end].chunks_exact(4))
        .any(|brand| brand == b"avif" || brand == b"avis")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_each_format() {
        let cases: &[(&[u8], ImageFormat)] = &[
            (b"\xFF\xD8\xFF\xE0\x00\x10JFIF", ImageFormat::Jpeg),
            (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", ImageFormat::Png),
            (b"GIF89a\x01\x00", ImageFormat::Gif),
            (b"GIF87a\x01\x00", ImageFormat::Gif),
            (b"RIFF\x24\x00\x00\x00WEBPVP8 ", ImageFormat::Webp),
            (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1", ImageFormat::Avif),
            (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avif", ImageFormat::Avif),
            (b"BM\x36\x00\x00\x00\x00\x00\x00\x00\x36\x00", ImageFormat::Bmp),
            (b"\x00\x00\x01\x00\x01\x00\x10\x10", ImageFormat::Ico),
        ];
        for (bytes, format) in cases {
            assert_eq!(ImageFormat::sniff(bytes), Some(*format), "{bytes:?}");
        }
    }

    #[test]
    fn refuses_non_images() {
        let cases: &[&[u8]] = &[
            b"<!DOCTYPE html><html>",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\">",
            b"<?xml version=\"1.0\"?><svg>",
            b"alert(document.cookie)",
            b"",
            b"\xFF\xD8",
            b"\x00\x00\x00\x1cftypisom\x00\x00\x00\x00isommp41",
            b"RIFF\x24\x00\x00\x00WAVEfmt ",
            b"\x00\x00\x01\x00\x00\x00",
        ];
        for bytes in cases {
            assert_eq!(ImageFormat::sniff(bytes), None, "{bytes:?}");
        }
    }

    #[test]
    fn response_type_prefers_a_matching_upstream_value() {
        assert_eq!(ImageFormat::Jpeg.response_content_type(Some("image/jpg")), "image/jpg");
        assert_eq!(ImageFormat::Jpeg.response_content_type(Some("text/html")), "image/jpeg");
        assert_eq!(ImageFormat::Png.response_content_type(Some("image/jpeg")), "image/png");
        assert_eq!(ImageFormat::Gif.response_content_type(None), "image/gif");
    }
}
