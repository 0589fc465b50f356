//! Output format negotiation: `format=auto` against the client's `Accept` header, `format=original` against
//! what we can encode.

use super::{OutputFormat, SourceInfo};
use crate::request::{AcceptClass, FormatChoice};
use crate::sniff::ImageFormat;

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
