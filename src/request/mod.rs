//! The URL grammar: what a request asks for, parsed once at the edge into typed values (pure, no I/O).
//!
//! `/?{target}` mirrors the target; `/{options}/?{target}` transforms it. [`parse_route`] is the one parser of
//! that grammar: the server, `mirage sign`, the fuzz target and the property tests all call it.

mod accept;
pub mod dialect;
mod memo;
pub mod options;
mod route;
mod target;

pub use accept::{AVIF_ENCODER, AcceptClass};
pub use dialect::{Dialect, DialectError, DialectRequest, DialectSignature, Dialects, RouteContext};
pub use memo::{KeyedRequest, MemoRoute, RouteMemo};
pub use options::{
    Allowed, Fit, FormatChoice, Gravity, MAX_DIMENSION, OPTIONS, OptionKey, OptionSpec, OptionsError, Rgba, Rotate,
    Tenths, TransformOptions,
};
pub use route::{Route, image_service_target, parse_route, parse_route_in, target_of_any_spelling};
pub use target::{Target, TargetError};

use mirage_cache::CacheKey;

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
    /// The variant for `options` served to clients of class `accepts`, or `None` when the options change nothing
    /// (the request is then the mirror, and shares its cache entry). The class is kept only for `format=auto`:
    /// an explicit format is the same image for every client.
    pub fn new(options: TransformOptions, accepts: AcceptClass) -> Option<Variant> {
        if options.canonical().is_empty() {
            return None;
        }
        let accepts = if options.format() == FormatChoice::Auto { accepts } else { AcceptClass::Basic };
        Some(Variant { options, accepts })
    }

    /// Whether the answer depends on the client's `Accept` header.
    pub fn varies_on_accept(&self) -> bool {
        self.options.format() == FormatChoice::Auto
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
    /// A dialect's parameter that is unknown, malformed or has no native equivalent.
    #[error(transparent)]
    Dialect(#[from] DialectError),
}

impl ImageRequest {
    /// A request that mirrors `target` byte for byte.
    pub fn mirror(target: Target) -> ImageRequest {
        ImageRequest { target, variant: None }
    }

    /// The request for `options` on `target`; options that change nothing make a mirror.
    fn from_options(options: TransformOptions, target: Target, accept: Option<&str>) -> ImageRequest {
        // The header is only read when it matters: explicit formats never vary.
        let accepts =
            if options.format() == FormatChoice::Auto { AcceptClass::from_accept(accept) } else { AcceptClass::Basic };
        ImageRequest { target, variant: Variant::new(options, accepts) }
    }

    /// The same request for clients of `class`: what [`parse_route`] gives for an `Accept` header of that class.
    /// Only `format=auto` variants negotiate; any other request is returned as it is.
    pub fn for_accept_class(&self, class: AcceptClass) -> ImageRequest {
        let mut request = self.clone();
        if let Some(variant) = request.variant.as_mut().filter(|variant| variant.varies_on_accept()) {
            variant.accepts = class;
        }
        request
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
                variant.accepts.name().as_bytes(),
            ]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: &str = "http://static.1sapp.com/qupost/img/2022/02/28/4e7cb326c1d77bee6e18452d400abd1b.jpeg";

    /// The image request the server makes of `/{options}/?{TARGET}`.
    fn parse(options: &str, accept: Option<&str>) -> ImageRequest {
        match parse_route(&format!("/{options}/"), TARGET, accept) {
            Ok(Route::Image { request, .. }) => request,
            other => panic!("{options}: {other:?}"),
        }
    }

    #[test]
    fn aliases_and_defaults_share_one_key() {
        let a = parse("w=300", None);
        let b = parse("width=300,fit=scale-down", None);
        let c = parse("width%3D300%2Cfit%3Dscale-down", None);
        assert_eq!(a.key(), b.key());
        assert_eq!(a.key(), c.key());
        assert_ne!(a.key(), a.source_key());
    }

    #[test]
    fn no_op_options_are_a_mirror() {
        let request = parse("format=original", None);
        assert_eq!(request.variant, None);
        assert_eq!(request.key(), request.source_key());
    }

    #[test]
    fn explicit_formats_never_vary_but_auto_does() {
        let webp = Some("image/webp,*/*");
        let explicit = parse("w=300,f=webp", webp);
        assert_eq!(explicit.key(), parse("w=300,f=webp", None).key());
        let auto_webp = parse("w=300,f=auto", webp);
        let auto_basic = parse("w=300,f=auto", Some("image/jpeg"));
        assert_ne!(auto_webp.key(), auto_basic.key());
        assert!(auto_webp.variant.as_ref().is_some_and(Variant::varies_on_accept));
    }

    /// Cache keys outlive releases (the disk cache): these must never change.
    #[test]
    fn cache_keys_are_pinned() {
        let keys = [
            (parse("format=original", None).key(), "8fa73f93665a0619f08848f59af003060afdf94554c473fbbbb3a7a28e32239f"),
            (
                parse("w=150,dpr=2,fit=cover", None).key(),
                "f827e148ecc7bbded9533565b7b6c6ae190e2da327014810577ee692f3d6c183",
            ),
            (
                parse("w=300,f=auto", Some("image/webp")).key(),
                "88d651f764e205e1b49c0ce23fedcfe7777142b81f8f0c21ff374a0486d553e9",
            ),
        ];
        for (key, expected) in keys {
            assert_eq!(key.to_hex(), expected);
        }
    }

    #[test]
    fn every_spelling_of_a_request_names_its_target() {
        let want = Target::parse(TARGET).expect("valid");
        let encoded = percent_encoding::utf8_percent_encode(TARGET, percent_encoding::NON_ALPHANUMERIC).to_string();
        let spellings = [
            TARGET.to_owned(),
            format!("  {TARGET}  "),
            encoded.clone(),
            format!("https://cors.zfour.workers.dev/?{TARGET}"),
            format!("https://cors.zfour.workers.dev/?{encoded}"),
            format!("http://mirage.example:8080/?{TARGET}"),
            format!("HTTP://mirage.example/w=300,f=webp/?{encoded}"),
            format!("//mirage.example/sig=abc,w=300/?{TARGET}"),
            format!("/?{TARGET}"),
            format!("/width=300/?{encoded}"),
        ];
        for text in spellings {
            assert_eq!(target_of_any_spelling(&text).as_ref(), Ok(&want), "{text}");
        }
        // A target of its own that merely has a query or a directory path stays itself.
        for own in ["https://h.example/dir/?a=b", "https://h.example/a.jpg?u=http://x/y", "https://h.example/?a=1"] {
            assert_eq!(target_of_any_spelling(own).map(|t| t.canonical().to_owned()), Ok(own.to_owned()));
        }
        for bad in ["", "not a url", "/w=300/", "ftp://h/a.jpg", "/healthz"] {
            assert!(target_of_any_spelling(bad).is_err(), "{bad}");
        }
    }

    /// `mirage purge` and `mirage rewrite` read the dialects' spellings too (signatures are not checked there).
    #[test]
    fn every_dialect_spelling_names_its_target() {
        let b64 = crate::signing::base64url_encode(b"https://h.example/a.jpg");
        let spellings = [
            ("https://images.weserv.nl/?url=h.example/a.jpg&w=300", "http://h.example/a.jpg"),
            ("https://wsrv.nl/?url=ssl:h.example/a.jpg&w=300&h=200&fit=cover", "https://h.example/a.jpg"),
            ("//wsrv.nl/?url=https%3A%2F%2Fh.example%2Fa.jpg", "https://h.example/a.jpg"),
            ("/cdn-cgi/image/width=300/https://h.example/a.jpg", "https://h.example/a.jpg"),
            ("https://blog.example/cdn-cgi/image/width=300/uploads/a.jpg", "https://blog.example/uploads/a.jpg"),
            (
                "https://imgproxy.example/insecure/rs:fit:300:300/plain/https://h.example/a.jpg@webp",
                "https://h.example/a.jpg",
            ),
            (
                &format!("https://imgproxy.example/oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8/w:300/{b64}.png"),
                "https://h.example/a.jpg",
            ),
            ("https://thumbor.example/unsafe/300x200/h.example/a.jpg", "http://h.example/a.jpg"),
            (
                "https://thumbor.example/OHHMqHwGrH1gubkMMveC8Ireg7A=/fit-in/300x200/https://h.example/a.jpg",
                "https://h.example/a.jpg",
            ),
        ];
        for (text, want) in spellings {
            assert_eq!(target_of_any_spelling(text).map(|t| t.canonical().to_owned()), Ok(want.to_owned()), "{text}");
        }
        // A spelling Mirage refuses to serve (thumbor's smart crop) is not read as a request: it names no target.
        assert!(target_of_any_spelling("/unsafe/300x200/smart/h.example/a.jpg").is_err());
    }

    #[test]
    fn variant_new_keeps_the_class_only_for_auto() {
        let options = |text: &str| TransformOptions::parse(text).expect("valid");
        assert_eq!(Variant::new(options("format=original"), AcceptClass::Webp), None);
        let explicit = Variant::new(options("w=300,f=webp"), AcceptClass::Webp).expect("a variant");
        assert_eq!(explicit.accepts, AcceptClass::Basic);
        let auto = Variant::new(options("w=300,f=auto"), AcceptClass::Webp).expect("a variant");
        assert_eq!(auto.accepts, AcceptClass::Webp);
    }
}
