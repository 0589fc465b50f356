//! Output format negotiation: `format=auto` against the client's `Accept` header, `format=original` against
//! what we can encode.

use super::{OutputFormat, SourceInfo};
use crate::request::FormatChoice;
use crate::sniff::ImageFormat;

/// What the client's `Accept` header allows beyond the formats every client takes (JPEG, PNG, GIF).
/// This is what goes into the cache key for `format=auto`, so it has as few values as possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcceptClass {
    /// AVIF accepted (and this build encodes it).
    Avif,
    /// WebP accepted.
    Webp,
    /// Neither: JPEG or PNG.
    Basic,
}

impl AcceptClass {
    /// Classifies an `Accept` header. Only an explicit `image/webp` or `image/avif` with a non-zero q counts:
    /// wildcards (`*/*`, `image/*`) are sent by clients that cannot decode either.
    pub fn from_accept(header: Option<&str>) -> AcceptClass {
        let Some(header) = header else {
            return AcceptClass::Basic;
        };
        let mut avif = false;
        let mut webp = false;
        for range in header.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            let mut quality = 1.0f32;
            for parameter in parts {
                if let Some((key, value)) = parameter.split_once('=')
                    && key.trim().eq_ignore_ascii_case("q")
                {
                    // An unreadable q is taken as "no": better a JPEG than a format the client cannot show.
                    quality = value.trim().parse::<f32>().ok().filter(|q| (0.0..=1.0).contains(q)).unwrap_or(0.0);
                }
            }
            if quality <= 0.0 {
                continue;
            }
            if media.eq_ignore_ascii_case("image/avif") {
                avif = true;
            } else if media.eq_ignore_ascii_case("image/webp") {
                webp = true;
            }
        }
        if avif && OutputFormat::Avif.supported() {
            AcceptClass::Avif
        } else if webp {
            AcceptClass::Webp
        } else {
            AcceptClass::Basic
        }
    }
}

/// The output format for a request: `auto` picks AVIF, then WebP, as the client accepts them, else PNG for
/// a source with alpha and JPEG otherwise; `original` keeps the source's format when we can encode it (else
/// PNG with alpha, JPEG without); an explicit format is taken as given (AVIF then fails in `transform` with
/// `UnsupportedOutput` in builds without it).
pub fn choose_output(choice: FormatChoice, accepts: AcceptClass, source: &SourceInfo) -> OutputFormat {
    let basic = if source.has_alpha { OutputFormat::Png } else { OutputFormat::Jpeg };
    match choice {
        FormatChoice::Auto => match accepts {
            AcceptClass::Avif if OutputFormat::Avif.supported() => OutputFormat::Avif,
            AcceptClass::Avif | AcceptClass::Webp => OutputFormat::Webp,
            AcceptClass::Basic => basic,
        },
        FormatChoice::Original => match source.format {
            ImageFormat::Jpeg => OutputFormat::Jpeg,
            ImageFormat::Png => OutputFormat::Png,
            ImageFormat::Gif => OutputFormat::Gif,
            ImageFormat::Webp => OutputFormat::Webp,
            ImageFormat::Avif | ImageFormat::Bmp | ImageFormat::Ico => basic,
        },
        FormatChoice::Jpeg => OutputFormat::Jpeg,
        FormatChoice::Png => OutputFormat::Png,
        FormatChoice::Webp => OutputFormat::Webp,
        FormatChoice::Gif => OutputFormat::Gif,
        FormatChoice::Avif => OutputFormat::Avif,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_classes() {
        let cases = [
            (None, AcceptClass::Basic),
            (Some(""), AcceptClass::Basic),
            (Some("*/*"), AcceptClass::Basic),
            (Some("image/*,*/*;q=0.8"), AcceptClass::Basic),
            (Some("image/webp,*/*"), AcceptClass::Webp),
            (Some("image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"), AcceptClass::Webp),
            (Some("image/webp;q=0"), AcceptClass::Basic),
            (Some("image/webp;q=0.0, image/png"), AcceptClass::Basic),
            (Some("IMAGE/WEBP ; Q=0.5"), AcceptClass::Webp),
            (Some("image/webp;q=abc"), AcceptClass::Basic),
            (Some("image/webp;q=2"), AcceptClass::Basic),
            (Some("image/avif"), AcceptClass::Basic),
            (Some("image/webpx"), AcceptClass::Basic),
        ];
        for (header, expected) in cases {
            assert_eq!(AcceptClass::from_accept(header), expected, "{header:?}");
        }
    }

    fn source(format: ImageFormat, has_alpha: bool) -> SourceInfo {
        SourceInfo { format, width: 10, height: 10, has_alpha, frames: Some(1) }
    }

    #[test]
    fn negotiation_rule() {
        let jpeg = source(ImageFormat::Jpeg, false);
        let png_alpha = source(ImageFormat::Png, true);
        let png_opaque = source(ImageFormat::Png, false);
        use FormatChoice as F;
        use OutputFormat as O;
        assert_eq!(choose_output(F::Auto, AcceptClass::Webp, &jpeg), O::Webp);
        assert_eq!(choose_output(F::Auto, AcceptClass::Avif, &jpeg), O::Webp, "no AVIF encoder in this build");
        assert_eq!(choose_output(F::Auto, AcceptClass::Basic, &jpeg), O::Jpeg);
        assert_eq!(choose_output(F::Auto, AcceptClass::Basic, &png_alpha), O::Png);
        assert_eq!(choose_output(F::Auto, AcceptClass::Basic, &png_opaque), O::Jpeg);
        assert_eq!(choose_output(F::Original, AcceptClass::Webp, &png_opaque), O::Png);
        assert_eq!(choose_output(F::Original, AcceptClass::Basic, &source(ImageFormat::Gif, true)), O::Gif);
        assert_eq!(choose_output(F::Original, AcceptClass::Basic, &source(ImageFormat::Webp, false)), O::Webp);
        assert_eq!(choose_output(F::Original, AcceptClass::Basic, &source(ImageFormat::Bmp, true)), O::Png);
        assert_eq!(choose_output(F::Original, AcceptClass::Basic, &source(ImageFormat::Avif, false)), O::Jpeg);
        assert_eq!(choose_output(F::Png, AcceptClass::Webp, &jpeg), O::Png);
        assert_eq!(choose_output(F::Avif, AcceptClass::Basic, &jpeg), O::Avif);
    }
}
