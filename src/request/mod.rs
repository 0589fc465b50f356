//! The URL grammar: what a request asks for, parsed once at the edge into typed values (pure, no I/O).
//!
//! `/?{target}` mirrors the target; `/{options}/?{target}` transforms it.

pub mod options;
mod target;

pub use options::{Fit, FormatChoice, Gravity, MAX_DIMENSION, OptionsError, Rgba, Rotate, Tenths, TransformOptions};
pub use target::{Target, TargetError};

use mirage_cache::CacheKey;
use percent_encoding::percent_decode_str;

use crate::transform::AcceptClass;

/// The options key that carries a URL signature (see `crate::signing`); never a transform option.
pub const SIGNATURE_KEY: &str = "sig";

/// What one image request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRequest {
    /// The upstream image.
    pub target: Target,
    /// The transformation, or `None` for a byte-identical mirror.
    pub variant: Option<Variant>,
}

/// A transformation of the upstream image, with what the client accepts when the format is negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// The options, canonical.
    pub options: TransformOptions,
    /// What the client's `Accept` allows; always `Basic` unless `format=auto`, so explicit formats never vary.
    pub accepts: AcceptClass,
}

impl Variant {
    /// Whether the answer depends on the client's `Accept` header.
    pub fn varies_on_accept(&self) -> bool {
        self.options.format == FormatChoice::Auto
    }
}

/// Why a request's URL was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The target part.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The options part.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// The options segment is not UTF-8 after percent-decoding.
    #[error("options are not valid UTF-8 after percent-decoding")]
    OptionsEncoding,
}

impl ImageRequest {
    /// A request that mirrors `target` byte for byte.
    pub fn mirror(target: Target) -> ImageRequest {
        ImageRequest { target, variant: None }
    }

    /// Parses `/{options}/?{target}`: `options_segment` is the raw path segment between the slashes, `query`
    /// the raw query, `accept` the client's `Accept` header. Options that change nothing (`format=original`,
    /// or only defaults) make a mirror request, so they share the mirror's cache entry.
    pub fn parse(options_segment: &str, query: &str, accept: Option<&str>) -> Result<ImageRequest, RequestError> {
        let segment = percent_decode_str(options_segment).decode_utf8().map_err(|_| RequestError::OptionsEncoding)?;
        let options = TransformOptions::parse(&segment)?;
        Ok(ImageRequest::from_options(options, Target::parse(query)?, accept))
    }

    /// The request for `options` on `target`; options that change nothing make a mirror.
    fn from_options(options: TransformOptions, target: Target, accept: Option<&str>) -> ImageRequest {
        if options.canonical().is_empty() {
            return ImageRequest::mirror(target);
        }
        let accepts =
            if options.format == FormatChoice::Auto { AcceptClass::from_accept(accept) } else { AcceptClass::Basic };
        ImageRequest { target, variant: Some(Variant { options, accepts }) }
    }

    /// Parses like [`ImageRequest::parse`], but first takes the signature out of the options: `sig=XXXX` anywhere
    /// in the list (`/sig=XXXX,width=300/?{target}`, or `/sig=XXXX/?{target}` for a signed mirror). The signature
    /// is returned as written, apart from the request: it is not an option and never part of the cache key.
    pub fn parse_signed(
        options_segment: &str,
        query: &str,
        accept: Option<&str>,
    ) -> Result<(ImageRequest, Option<String>), RequestError> {
        let segment = percent_decode_str(options_segment).decode_utf8().map_err(|_| RequestError::OptionsEncoding)?;
        let mut signature = None;
        let mut rest: Vec<&str> = Vec::new();
        for pair in segment.split(',') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !key.trim().eq_ignore_ascii_case(SIGNATURE_KEY) {
                rest.push(pair);
                continue;
            }
            if signature.is_some() {
                return Err(OptionsError::Duplicate { key: SIGNATURE_KEY }.into());
            }
            let value = value.trim();
            if value.is_empty() {
                return Err(
                    OptionsError::MissingValue { key: SIGNATURE_KEY, example: "sig=<base64url HMAC-SHA256>" }.into()
                );
            }
            signature = Some(value.to_owned());
        }
        let options = TransformOptions::parse(&rest.join(","))?;
        Ok((ImageRequest::from_options(options, Target::parse(query)?, accept), signature))
    }

    /// The text a signature covers: the canonical options (empty for a mirror), `/?`, and the canonical target.
    /// Equivalent spellings of one request (aliases, `dpr`, percent-encoding of the target) sign alike.
    pub fn signing_message(&self) -> String {
        let options = self.variant.as_ref().map(|variant| variant.options.canonical()).unwrap_or_default();
        format!("{options}/?{}", self.target.canonical())
    }

    /// The cache key of the upstream original. Every spelling of one URL gives the same key.
    pub fn source_key(&self) -> CacheKey {
        ImageRequest::source_key_of(&self.target)
    }

    /// The cache key of the upstream original at `target`.
    pub fn source_key_of(target: &Target) -> CacheKey {
        CacheKey::from_parts(&[b"source", target.canonical().as_bytes()])
    }

    /// The cache key of what this request answers: the original for a mirror, else the variant, keyed by the
    /// canonical options and, for `format=auto`, the negotiated class.
    pub fn key(&self) -> CacheKey {
        match &self.variant {
            None => ImageRequest::source_key_of(&self.target),
            Some(variant) => CacheKey::from_parts(&[
                b"variant",
                self.target.canonical().as_bytes(),
                variant.options.canonical().as_bytes(),
                accept_class_name(variant.accepts).as_bytes(),
            ]),
        }
    }
}

fn accept_class_name(class: AcceptClass) -> &'static str {
    match class {
        AcceptClass::Avif => "avif",
        AcceptClass::Webp => "webp",
        AcceptClass::Basic => "basic",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: &str = "http://static.1sapp.com/qupost/img/2022/02/28/4e7cb326c1d77bee6e18452d400abd1b.jpeg";

    #[test]
    fn aliases_and_defaults_share_one_key() {
        let a = ImageRequest::parse("w=300", TARGET, None).expect("valid");
        let b = ImageRequest::parse("width=300,fit=scale-down", TARGET, None).expect("valid");
        let c = ImageRequest::parse("width%3D300%2Cfit%3Dscale-down", TARGET, None).expect("valid");
        assert_eq!(a.key(), b.key());
        assert_eq!(a.key(), c.key());
        assert_ne!(a.key(), a.source_key());
    }

    #[test]
    fn no_op_options_are_a_mirror() {
        let request = ImageRequest::parse("format=original", TARGET, None).expect("valid");
        assert_eq!(request.variant, None);
        assert_eq!(request.key(), request.source_key());
    }

    #[test]
    fn explicit_formats_never_vary_but_auto_does() {
        let webp = Some("image/webp,*/*");
        let explicit = ImageRequest::parse("w=300,f=webp", TARGET, webp).expect("valid");
        assert_eq!(explicit.key(), ImageRequest::parse("w=300,f=webp", TARGET, None).expect("valid").key());
        let auto_webp = ImageRequest::parse("w=300,f=auto", TARGET, webp).expect("valid");
        let auto_basic = ImageRequest::parse("w=300,f=auto", TARGET, Some("image/jpeg")).expect("valid");
        assert_ne!(auto_webp.key(), auto_basic.key());
        assert!(auto_webp.variant.as_ref().is_some_and(Variant::varies_on_accept));
    }
}
