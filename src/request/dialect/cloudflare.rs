//! Cloudflare Image Resizing: `/cdn-cgi/image/{options}/{source}`. The options are Mirage's own syntax already
//! (`width=300,fit=cover,format=auto`: native's grammar is Cloudflare's), so they go through the native parser
//! unchanged; `{source}` is an absolute URL, or a path resolved against `--origin` (a site's own images).

use percent_encoding::percent_decode_str;
use url::Url;

use super::{Dialect, DialectError, DialectRequest, DialectSignature};
use crate::request::{ImageRequest, RequestError, Target, TargetError, TransformOptions};

const CLOUDFLARE: Dialect = Dialect::Cloudflare;

/// The path prefix of every Cloudflare Image Resizing URL.
pub const PREFIX: &str = "/cdn-cgi/image/";

/// Reads the path after [`PREFIX`] (`{options}/{source}`) and the query (part of the source: Cloudflare passes
/// the source's own query through).
pub fn parse(
    rest: &str,
    query: &str,
    origin: Option<&Url>,
    accept: Option<&str>,
) -> Result<DialectRequest, RequestError> {
    let (segment, source) = rest
        .split_once('/')
        .filter(|(_, source)| !source.is_empty())
        .ok_or_else(|| DialectError::new(CLOUDFLARE, "source", "the image URL or path is missing"))?;
    let segment = percent_decode_str(segment).decode_utf8().map_err(|_| RequestError::OptionsEncoding)?;
    // Native options exactly: a `sig=` here is an unknown option, never Mirage's signature.
    let options = TransformOptions::parse(&segment)?;
    let source = if query.is_empty() { source.to_owned() } else { format!("{source}?{query}") };
    let target = match Target::parse(&source) {
        Ok(target) => target,
        Err(TargetError::NotAbsolute) => {
            let origin = origin.ok_or_else(|| {
                DialectError::new(CLOUDFLARE, "source", "a relative image path needs --origin (the site's URL)")
            })?;
            // Under `--origin` taken as a directory, whether or not it ends in `/` (the site's root as Cloudflare
            // resolves a zone's paths, or the folder the site lives in on another server), and never as a
            // scheme-relative or backslash path, which would name another host.
            let mut base = origin.clone();
            if !base.path().ends_with('/') {
                base.set_path(&format!("{}/", base.path()));
            }
            let joined = base
                .join(source.trim_start_matches(['/', '\\']))
                .map_err(|error| DialectError::new(CLOUDFLARE, "source", format!("cannot resolve it: {error}")))?;
            Target::parse(joined.as_str())?
        }
        Err(error) => return Err(error.into()),
    };
    let request = ImageRequest::from_options(options, target, accept);
    Ok(DialectRequest::plain(CLOUDFLARE, request, DialectSignature::None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Route, RouteContext, parse_route_in};

    /// The canonical native spelling of a Cloudflare URL as written on a page of `https://example.com`.
    fn canonical(url: &str, origin: Option<&str>) -> Result<String, String> {
        let context = RouteContext::all(origin.map(|o| Url::parse(o).expect("origin")));
        let path_and_query = url.strip_prefix("https://example.com").unwrap_or(url);
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        match parse_route_in(&context, path, query, None) {
            Ok(Route::Dialect(dialect)) => {
                assert_eq!((dialect.dialect, &dialect.signature), (Dialect::Cloudflare, &DialectSignature::None));
                Ok(dialect.request.signing_message())
            }
            Ok(other) => Err(format!("not cloudflare: {other:?}")),
            Err(error) => Err(error.to_string()),
        }
    }

    /// URLs in the forms of Cloudflare's "Transform via URL" documentation, and the canonical request of each.
    #[test]
    fn documentation_examples_map_to_native_requests() {
        let site = Some("https://example.com");
        let table = [
            (
                "https://example.com/cdn-cgi/image/width=80,quality=75/uploads/avatar1.jpg",
                site,
                "quality=75,width=80/?https://example.com/uploads/avatar1.jpg",
            ),
            ("/cdn-cgi/image/width=300/https://h.example/a.jpg", None, "width=300/?https://h.example/a.jpg"),
            (
                "/cdn-cgi/image/fit=scale-down,width=800,format=auto/uploads/a.jpg",
                site,
                "format=auto,width=800/?https://example.com/uploads/a.jpg",
            ),
            (
                "/cdn-cgi/image/width=250,height=250,fit=cover/uploads/a.jpg",
                site,
                "fit=cover,height=250,width=250/?https://example.com/uploads/a.jpg",
            ),
            (
                "/cdn-cgi/image/w=250,h=250,fit=crop,gravity=left/uploads/a.jpg",
                site,
                "fit=crop,gravity=left,height=250,width=250/?https://example.com/uploads/a.jpg",
            ),
            (
                "/cdn-cgi/image/width=400,height=300,fit=pad,background=%23000000/uploads/a.jpg",
                site,
                "background=000000,fit=pad,height=300,width=400/?https://example.com/uploads/a.jpg",
            ),
            ("/cdn-cgi/image/width=400,dpr=2/uploads/a.jpg", site, "width=800/?https://example.com/uploads/a.jpg"),
            ("/cdn-cgi/image/format=webp/uploads/a.jpg", site, "format=webp/?https://example.com/uploads/a.jpg"),
            (
                "/cdn-cgi/image/format=avif,quality=60/uploads/a.jpg",
                site,
                "format=avif,quality=60/?https://example.com/uploads/a.jpg",
            ),
            ("/cdn-cgi/image/blur=50/uploads/a.jpg", site, "blur=50/?https://example.com/uploads/a.jpg"),
            ("/cdn-cgi/image/sharpen=1/uploads/a.jpg", site, "sharpen=1/?https://example.com/uploads/a.jpg"),
            ("/cdn-cgi/image/rotate=90/uploads/a.jpg", site, "rotate=90/?https://example.com/uploads/a.jpg"),
            (
                "/cdn-cgi/image/fit=contain,width=300/uploads/a.jpg?v=3",
                site,
                "fit=contain,width=300/?https://example.com/uploads/a.jpg?v=3",
            ),
            (
                "/cdn-cgi/image/width=300/https%3A%2F%2Fcdn.example%2Fa.jpg",
                site,
                "width=300/?https://cdn.example/a.jpg",
            ),
            ("/cdn-cgi/image/format=original/uploads/a.jpg", site, "/?https://example.com/uploads/a.jpg"),
            (
                "/cdn-cgi/image/width=80/uploads/avatar1.jpg",
                None,
                "cloudflare parameter \"source\": a relative image path needs --origin (the site's URL)",
            ),
            (
                "/cdn-cgi/image/width=80,metadata=none/uploads/a.jpg",
                site,
                "unknown option \"metadata\"; known options: width (w), height (h), fit, gravity (g), quality (q), format (f), dpr, background (bg), blur, sharpen, rotate",
            ),
            (
                "/cdn-cgi/image/gravity=auto,fit=cover,width=300/uploads/a.jpg",
                site,
                "bad value \"auto\" for option \"gravity\": expected center, top, bottom, left, right, top-left, top-right, bottom-left or bottom-right",
            ),
            (
                "/cdn-cgi/image/sig=abc,width=80/uploads/a.jpg",
                site,
                "unknown option \"sig\"; known options: width (w), height (h), fit, gravity (g), quality (q), format (f), dpr, background (bg), blur, sharpen, rotate",
            ),
            ("/cdn-cgi/image/width=80/", site, "cloudflare parameter \"source\": the image URL or path is missing"),
            (
                "/cdn-cgi/image/width=80/ftp://h/a.jpg",
                site,
                "target scheme \"ftp\" is not allowed: only http and https",
            ),
        ];
        for (url, origin, expected) in table {
            assert_eq!(canonical(url, origin).unwrap_or_else(|error| error), expected, "{url}");
        }
    }

    #[test]
    fn origin_with_a_path_resolves_relative_sources_under_it() {
        for origin in ["https://example.com/blog/", "https://example.com/blog"] {
            for source in ["img/a.jpg", "/img/a.jpg", "//img/a.jpg", "\\\\img/a.jpg"] {
                assert_eq!(
                    canonical(&format!("/cdn-cgi/image/width=80/{source}"), Some(origin)),
                    Ok("width=80/?https://example.com/blog/img/a.jpg".to_owned()),
                    "{origin} {source}"
                );
            }
        }
        // A source never leaves the origin's host.
        assert_eq!(
            canonical("/cdn-cgi/image/width=80/\\evil.example/a.jpg", Some("https://example.com/")),
            Ok("width=80/?https://example.com/evil.example/a.jpg".to_owned())
        );
    }
}
