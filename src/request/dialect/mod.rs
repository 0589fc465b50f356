//! URL dialects: the URL grammars of the services sites move from (weserv, Cloudflare Image Resizing, imgproxy,
//! thumbor), each read into the same canonical [`ImageRequest`] that `/{options}/?{target}` makes, so that one
//! image asked in any dialect is one cache entry. Pure, no I/O, like the rest of `request`.
//!
//! A dialect can only say what native options can say: each module builds the native option list (through
//! [`NativeOptions`], which remembers which dialect parameter gave each native option) and the native parser
//! checks it, so ranges, defaults and the canonical form are native's. Whatever has no native equivalent is a
//! [`DialectError`] naming the parameter (400, as for native options).
//!
//! [`crate::request::parse_route_in`] dispatches here on the first bytes of the path and query: a native request
//! never reaches this module.

pub mod cloudflare;
pub mod imgproxy;
pub mod thumbor;
pub mod weserv;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use url::Url;

use super::{ImageRequest, Target, TransformOptions};

/// One URL grammar the server reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Mirage's own `/?{target}` and `/{options}/?{target}`.
    Native,
    /// weserv (`images.weserv.nl`, `wsrv.nl`): `/?url={target}&w=300`.
    Weserv,
    /// Cloudflare Image Resizing: `/cdn-cgi/image/{options}/{source}`.
    Cloudflare,
    /// imgproxy: `/{signature}/{options}/plain/{source}@{ext}` and `/{signature}/{options}/{base64 source}.{ext}`.
    Imgproxy,
    /// thumbor: `/unsafe/{options}/{source}` and `/{hmac}/{options}/{source}`.
    Thumbor,
}

impl Dialect {
    /// Every dialect, in the order `--dialects` lists them.
    pub const ALL: [Dialect; 5] =
        [Dialect::Native, Dialect::Weserv, Dialect::Cloudflare, Dialect::Imgproxy, Dialect::Thumbor];

    /// The name `--dialects` takes and logs print.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Native => "native",
            Dialect::Weserv => "weserv",
            Dialect::Cloudflare => "cloudflare",
            Dialect::Imgproxy => "imgproxy",
            Dialect::Thumbor => "thumbor",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The set of dialects a server reads (`--dialects`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialects(u8);

impl Dialects {
    /// Only Mirage's own grammar: what `mirage sign`, the fuzz target and the native tests parse.
    pub const NATIVE: Dialects = Dialects(1);
    /// Every dialect: the default of `--dialects` (none needs a key to be read; see the README).
    pub const ALL: Dialects = Dialects(0b1_1111);

    /// Whether `dialect` is read.
    pub fn contains(self, dialect: Dialect) -> bool {
        self.0 & dialect.bit() != 0
    }

    /// The set with `dialect` added.
    pub fn with(self, dialect: Dialect) -> Dialects {
        Dialects(self.0 | dialect.bit())
    }
}

impl Default for Dialects {
    fn default() -> Dialects {
        Dialects::ALL
    }
}

impl FromStr for Dialects {
    type Err = String;

    /// A comma-separated list of names, e.g. `native,weserv`; empty is refused (the server would answer nothing).
    fn from_str(text: &str) -> Result<Dialects, String> {
        let mut set = Dialects(0);
        for name in text.split(',').map(str::trim).filter(|name| !name.is_empty()) {
            let dialect = Dialect::ALL.into_iter().find(|d| d.name().eq_ignore_ascii_case(name)).ok_or_else(|| {
                let known: Vec<&str> = Dialect::ALL.iter().map(|d| d.name()).collect();
                format!("unknown dialect {name:?}; known: {}", known.join(", "))
            })?;
            set = set.with(dialect);
        }
        if set.0 == 0 {
            return Err("--dialects needs at least one dialect".to_owned());
        }
        Ok(set)
    }
}

impl fmt::Display for Dialects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Dialect::ALL.iter().filter(|d| self.contains(**d)).map(|d| d.name()).collect();
        f.write_str(&names.join(","))
    }
}

/// What the grammar needs beyond the URL itself: which dialects are read and the site a relative Cloudflare
/// source is resolved against. Plain values, no I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteContext {
    /// The dialects read; a path of another one is no route (404).
    pub dialects: Dialects,
    /// `--origin`: the base of relative Cloudflare sources (`/cdn-cgi/image/w=300/uploads/a.jpg`).
    pub origin: Option<Url>,
}

impl RouteContext {
    /// Mirage's own grammar only.
    pub const NATIVE: RouteContext = RouteContext { dialects: Dialects::NATIVE, origin: None };

    /// Every dialect (what `mirage purge` and `mirage rewrite` read), with `origin` for relative sources.
    pub fn all(origin: Option<Url>) -> RouteContext {
        RouteContext { dialects: Dialects::ALL, origin }
    }
}

/// The signature a dialect request carried, typed by dialect: each is verified with its own key only (see
/// `crate::signing::DialectKeys`), so a signature of one kind can never satisfy another, nor Mirage's `sig=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialectSignature {
    /// The dialect has no signatures (weserv, Cloudflare).
    None,
    /// imgproxy's first path segment (`insecure` or base64url HMAC-SHA256 of salt + `signed_path`).
    Imgproxy {
        /// The segment as written.
        signature: String,
        /// Everything after the signature segment, from its `/`: what the HMAC covers.
        signed_path: String,
    },
    /// thumbor's first path segment: `None` for `unsafe`, else urlsafe base64 HMAC-SHA1 of `signed_path`.
    Thumbor {
        /// The segment as written, or `None` for `unsafe`.
        signature: Option<String>,
        /// Everything after `/{signature}/`: what the HMAC covers.
        signed_path: String,
    },
}

/// A request in another service's URL grammar, read into Mirage's canonical request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialectRequest {
    /// Which grammar it was written in.
    pub dialect: Dialect,
    /// The canonical request: the same value, and so the same cache entry, as its native spelling.
    pub request: ImageRequest,
    /// The dialect's own signature, if it has them.
    pub signature: DialectSignature,
    /// weserv `default`: an image served instead when the target fails as `--fallback-image` would cover.
    pub default_image: Option<Target>,
    /// weserv `maxage`: the freshness lifetime clients are told, before clamping to the TTL bounds.
    pub max_age: Option<Duration>,
}

impl DialectRequest {
    /// A request of `dialect` without signature nor weserv extras.
    fn plain(dialect: Dialect, request: ImageRequest, signature: DialectSignature) -> DialectRequest {
        DialectRequest { dialect, request, signature, default_image: None, max_age: None }
    }
}

/// Why a dialect URL was refused (400): the dialect, the parameter as the client wrote it, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{dialect} parameter {parameter:?}: {reason}")]
pub struct DialectError {
    /// The dialect.
    pub dialect: Dialect,
    /// The parameter (query key, option name, filter or path part) as written.
    pub parameter: String,
    /// What is wrong, in words built from the request and our constants only.
    pub reason: String,
}

impl DialectError {
    /// `parameter` is refused for `reason`.
    pub(crate) fn new(dialect: Dialect, parameter: &str, reason: impl Into<String>) -> DialectError {
        DialectError { dialect, parameter: parameter.to_owned(), reason: reason.into() }
    }

    /// A parameter Mirage does not know or does not support.
    pub(crate) fn unsupported(dialect: Dialect, parameter: &str) -> DialectError {
        DialectError::new(dialect, parameter, "not supported by Mirage (see the README, \"URL dialects\")")
    }

    /// Whether the parameter is the image URL (a `bad_target`, not a `bad_options`).
    pub fn names_the_image(&self) -> bool {
        matches!(self.parameter.as_str(), "url" | "default" | "source" | "plain" | "image" | "enc")
    }

    /// A value of `parameter` with no native equivalent.
    pub(crate) fn value(dialect: Dialect, parameter: &str, value: &str, why: &str) -> DialectError {
        DialectError::new(dialect, parameter, format!("value {value:?} is not supported: {why}"))
    }
}

/// The native option list a dialect builds: `key=value` pairs, each remembering the dialect parameter it came
/// from, so that a value native refuses is reported under the name the client wrote. A key set twice keeps the
/// last value (imgproxy and weserv apply options in order).
pub(crate) struct NativeOptions {
    dialect: Dialect,
    pairs: Vec<(&'static str, String, String)>,
}

impl NativeOptions {
    pub(crate) fn new(dialect: Dialect) -> NativeOptions {
        NativeOptions { dialect, pairs: Vec::new() }
    }

    /// Sets native `key` to `value`, as dialect `parameter` asked.
    pub(crate) fn set(&mut self, parameter: &str, key: &'static str, value: impl fmt::Display) {
        self.pairs.retain(|(existing, _, _)| *existing != key);
        self.pairs.push((key, value.to_string(), parameter.to_owned()));
    }

    /// Takes native `key` back to its default (imgproxy's `q:0`, `bl:0`).
    pub(crate) fn unset(&mut self, key: &str) {
        self.pairs.retain(|(existing, _, _)| *existing != key);
    }

    /// The native options; a refused value names its dialect parameter.
    pub(crate) fn finish(self) -> Result<TransformOptions, DialectError> {
        let dialect = self.dialect;
        // Each pair alone first: a bad value is the fault of one parameter, named as written.
        for (key, value, parameter) in &self.pairs {
            // A value is one value: `w=300,format=auto` must not smuggle a second native option in.
            if value.contains([',', '=']) {
                return Err(DialectError::new(dialect, parameter, format!("value {value:?} is not one value")));
            }
            TransformOptions::parse(&format!("{key}={value}")).map_err(|error| {
                DialectError::new(dialect, parameter, format!("value {value:?} is refused: {error}"))
            })?;
        }
        let list: Vec<String> = self.pairs.iter().map(|(key, value, _)| format!("{key}={value}")).collect();
        // Together they can still fail (a size within range that `dpr` takes past the limit).
        TransformOptions::parse(&list.join(",")).map_err(|error| {
            let parameter = self.pairs.iter().find(|(key, _, _)| *key == "dpr").map_or("dpr", |(_, _, p)| p);
            DialectError::new(dialect, parameter, error.to_string())
        })
    }
}

/// Reads a path that is not native's (more than one segment) in the dialect its first segment names, when that
/// dialect is read: `/cdn-cgi/image/` is Cloudflare, `unsafe` or a 28-character HMAC-SHA1 is thumbor, `insecure`,
/// `_` or a 43-character HMAC-SHA256 is imgproxy. `None`: no dialect's path (404).
pub(crate) fn parse_path(
    context: &RouteContext,
    path: &str,
    query: &str,
    accept: Option<&str>,
) -> Option<Result<DialectRequest, super::RequestError>> {
    let dialects = context.dialects;
    if let Some(rest) = path.strip_prefix(cloudflare::PREFIX) {
        return dialects
            .contains(Dialect::Cloudflare)
            .then(|| cloudflare::parse(rest, query, context.origin.as_ref(), accept));
    }
    let (first, _) = path.strip_prefix('/')?.split_once('/')?;
    if dialects.contains(Dialect::Thumbor) && thumbor::is_signature_segment(first) {
        return Some(thumbor::parse(path, query, accept));
    }
    if dialects.contains(Dialect::Imgproxy) && imgproxy::is_signature_segment(first) {
        return Some(imgproxy::parse(path, accept));
    }
    None
}

/// A source URL as the dialects write it: absolute (`https://h/a.jpg`, also percent-encoded), or, when
/// `default_scheme` is given, without a scheme (`h/a.jpg`, `//h/a.jpg`), which then means `default_scheme`.
pub(crate) fn source_target(
    dialect: Dialect,
    parameter: &str,
    text: &str,
    default_scheme: Option<&str>,
) -> Result<Target, DialectError> {
    let refuse = |error: super::TargetError| DialectError::new(dialect, parameter, error.to_string());
    if text.is_empty() {
        return Err(DialectError::new(dialect, parameter, "the image URL is missing"));
    }
    match Target::parse(text) {
        Ok(target) => Ok(target),
        Err(super::TargetError::NotAbsolute) if default_scheme.is_some() => {
            let scheme = default_scheme.unwrap_or("http");
            let decoded = percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map_err(|_| refuse(super::TargetError::NotUtf8))?;
            let host_and_path = decoded.trim_start_matches('/');
            Target::parse(&format!("{scheme}://{host_and_path}")).map_err(refuse)
        }
        Err(error) => Err(refuse(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_lists_parse_and_print() {
        let set: Dialects = "native, WESERV".parse().expect("valid");
        assert!(set.contains(Dialect::Native) && set.contains(Dialect::Weserv));
        assert!(!set.contains(Dialect::Imgproxy));
        assert_eq!(set.to_string(), "native,weserv");
        assert_eq!(Dialects::ALL.to_string(), "native,weserv,cloudflare,imgproxy,thumbor");
        assert_eq!("native,weserv,cloudflare,imgproxy,thumbor".parse::<Dialects>(), Ok(Dialects::ALL));
        assert!("native,imgix".parse::<Dialects>().expect_err("unknown").contains("imgix"));
        assert!("".parse::<Dialects>().is_err());
        assert!(Dialects::NATIVE.contains(Dialect::Native) && !Dialects::NATIVE.contains(Dialect::Thumbor));
    }

    #[test]
    fn native_options_name_the_dialect_parameter() {
        let mut options = NativeOptions::new(Dialect::Weserv);
        options.set("w", "width", 300);
        options.set("q", "quality", 0);
        let error = options.finish().expect_err("quality 0");
        assert_eq!((error.dialect, error.parameter.as_str()), (Dialect::Weserv, "q"));
        assert!(error.to_string().starts_with("weserv parameter \"q\": value \"0\" is refused"), "{error}");
        let mut later_wins = NativeOptions::new(Dialect::Imgproxy);
        later_wins.set("rs", "width", 100);
        later_wins.set("w", "width", 200);
        assert_eq!(later_wins.finish().map(|o| o.canonical()), Ok("width=200".to_owned()));
        let mut too_large = NativeOptions::new(Dialect::Imgproxy);
        too_large.set("w", "width", 5000);
        too_large.set("dpr", "dpr", 2);
        assert_eq!(too_large.finish().expect_err("past the limit").parameter, "dpr");
    }

    #[test]
    fn sources_without_scheme_take_the_default() {
        let target = |text, default| source_target(Dialect::Weserv, "url", text, default).map(|t| t.to_string());
        assert_eq!(target("example.com/a.jpg", Some("http")), Ok("http://example.com/a.jpg".to_owned()));
        assert_eq!(target("//example.com/a.jpg", Some("https")), Ok("https://example.com/a.jpg".to_owned()));
        assert_eq!(target("https%3A%2F%2Fh%2Fa.jpg", None), Ok("https://h/a.jpg".to_owned()));
        assert_eq!(target("example.com%2Fa%20b.jpg", Some("http")), Ok("http://example.com/a%20b.jpg".to_owned()));
        assert!(target("example.com/a.jpg", None).is_err());
        assert!(target("ftp://h/a.jpg", Some("http")).is_err());
        assert!(target("", Some("http")).is_err());
    }
}
