//! Output format negotiation: `format=auto` against the client's `Accept` header, `format=original` against
//! what we can encode.

use super::{Limits, OutputFormat, SourceInfo, TransformError};
use crate::request::{AcceptClass, FormatChoice};
use crate::sniff::ImageFormat;

/// The output format for a request: `auto` picks AVIF, then WebP, as the client accepts them, else PNG for
/// a source with alpha and JPEG otherwise; `original` keeps the source's format when we can encode it (else
/// PNG with alpha, JPEG without); an explicit format is taken as given (AVIF then fails in `transform` with
/// `UnsupportedOutput` in builds without it). The output's size can still change the choice: see `fit_output`.
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

/// `output` for an output of `size` (width, height): AVIF, the costliest encode by far, is limited to
/// `Limits::max_avif_pixels`. Above it `format=auto` falls back to WebP (a client in the AVIF class accepts WebP
/// too, see `AcceptClass::Avif`) and an explicit `format=avif` is refused. The other formats pass as they are.
pub(crate) fn fit_output(
    output: OutputFormat,
    choice: FormatChoice,
    (width, height): (u32, u32),
    limits: &Limits,
) -> Result<OutputFormat, TransformError> {
    if output != OutputFormat::Avif || u64::from(width) * u64::from(height) <= limits.max_avif_pixels {
        return Ok(output);
    }
    if choice == FormatChoice::Auto {
        Ok(OutputFormat::Webp)
    } else {
        Err(TransformError::AvifTooLarge { width, height, limit: limits.max_avif_pixels })
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
        assert_eq!(choose_output(F::Auto, AcceptClass::Avif, &jpeg), O::Avif);
        assert_eq!(choose_output(F::Auto, AcceptClass::Avif, &png_alpha), O::Avif);
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

    #[test]
    fn avif_over_its_pixel_limit() {
        use FormatChoice as F;
        use OutputFormat as O;
        let limits = Limits { max_avif_pixels: 100 * 100, ..Limits::default() };
        assert_eq!(fit_output(O::Avif, F::Auto, (100, 100), &limits), Ok(O::Avif), "at the limit");
        assert_eq!(fit_output(O::Avif, F::Avif, (100, 100), &limits), Ok(O::Avif));
        assert_eq!(fit_output(O::Avif, F::Auto, (101, 100), &limits), Ok(O::Webp), "auto falls back");
        assert_eq!(
            fit_output(O::Avif, F::Avif, (101, 100), &limits),
            Err(TransformError::AvifTooLarge { width: 101, height: 100, limit: 10_000 }),
            "explicit AVIF is refused"
        );
        for other in [O::Jpeg, O::Png, O::Webp, O::Gif] {
            assert_eq!(fit_output(other, F::Auto, (1000, 1000), &limits), Ok(other));
        }
    }
}
