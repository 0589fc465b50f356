//! The path grammar, parsed in one place for the server, `mirage sign` and the tests: `/healthz`, the mirror
//! `/?{target}`, and the transform `/{options}/?{target}` whose options may carry the signature (`sig=`), and,
//! when the server reads them, the other services' URL dialects (`super::dialect`).

use percent_encoding::percent_decode_str;
use url::Url;

use super::dialect::{self, Dialect, DialectRequest, RouteContext};
use super::{ImageRequest, OptionsError, RequestError, SIGNATURE_KEY, Target, TransformOptions};

/// What a request path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/healthz`: the liveness probe.
    Health,
    /// An image: `/?{target}` or `/{options}/?{target}`.
    Image {
        /// The image request, canonical (the signature is not part of it).
        request: ImageRequest,
        /// The `sig=` value as written, when the options carried one.
        signature: Option<String>,
    },
    /// An image asked in another service's URL dialect (weserv, Cloudflare, imgproxy, thumbor), with that
    /// dialect's own signature: never a native `sig`, so the one can never pass for the other.
    Dialect(Box<DialectRequest>),
    /// Any other path: not ours (404, not a malformed request).
    NotFound,
}

/// Parses a request: `path` is the URI's path, `query` its raw query (everything after the first `?`: the
/// target's own query belongs to it), `accept` the client's `Accept` header.
///
/// `/healthz` is the health check; `/` mirrors the target; `/{options}/` (one non-empty segment) transforms it,
/// after taking the signature out of the options: `sig=XXXX` anywhere in the list (`/sig=XXXX,width=300/`, or
/// `/sig=XXXX/` for a signed mirror). Options that change nothing (`format=original`, or only defaults) make a
/// mirror request, so they share the mirror's cache entry. Any other path is [`Route::NotFound`].
///
/// Mirage's own grammar only; [`parse_route_in`] reads the dialects too.
pub fn parse_route(path: &str, query: &str, accept: Option<&str>) -> Result<Route, RequestError> {
    parse_route_in(&RouteContext::NATIVE, path, query, accept)
}

/// [`parse_route`] with the dialects `context` enables. Native requests are told apart from the dialects' by
/// their first bytes, before any dialect is tried, so they cost what they did: `/?url=` is weserv (a raw target
/// never starts so), a path of more than one segment is Cloudflare (`/cdn-cgi/image/`), thumbor (`/unsafe/`, a
/// signature) or imgproxy (`/insecure/`, `/_/`, a signature), and anything else is native or no route. A
/// dialect that is off reads as before dialects existed (404, or a native target).
pub fn parse_route_in(
    context: &RouteContext,
    path: &str,
    query: &str,
    accept: Option<&str>,
) -> Result<Route, RequestError> {
    let native = context.dialects.contains(Dialect::Native);
    match path {
        "/healthz" => Ok(Route::Health),
        "/" if context.dialects.contains(Dialect::Weserv) && dialect::weserv::is_weserv_query(query) => {
            Ok(Route::Dialect(Box::new(dialect::weserv::parse(query, accept)?)))
        }
        "/" if native => Ok(Route::Image { request: ImageRequest::mirror(Target::parse(query)?), signature: None }),
        _ => {
            let Some(segment) = path
                .strip_prefix('/')
                .and_then(|rest| rest.strip_suffix('/'))
                .filter(|segment| !segment.is_empty() && !segment.contains('/'))
            else {
                return match dialect::parse_path(context, path, query, accept) {
                    Some(parsed) => Ok(Route::Dialect(Box::new(parsed?))),
                    None => Ok(Route::NotFound),
                };
            };
            if !native {
                return Ok(Route::NotFound);
            }
            let (options, signature) = parse_options_segment(segment)?;
            let request = ImageRequest::from_options(options, Target::parse(query)?, accept);
            Ok(Route::Image { request, signature })
        }
    }
}

/// The target that `text` names, in any spelling the server accepts, for commands that take image URLs as people
/// copy them (purge): the raw target, percent-encoded or not (`https://h/a.jpg`, `https%3A%2F%2Fh%2Fa.jpg`), or
/// a whole request: a path `/?{target}` or `/{options}/?{target}`, or the same behind any scheme and host (a
/// Mirage host such as `http://img.example/w=300/?...`, or the CORS proxy `https://cors.zfour.workers.dev/?...`).
/// The dialects' spellings are read too, all of them (`https://images.weserv.nl/?url=h/a.jpg&w=300`,
/// `/cdn-cgi/image/width=300/https://h/a.jpg`, imgproxy's and thumbor's paths, signed or not: signatures are not
/// verified, they do not change the target); a relative Cloudflare source is resolved against the URL's own site.
/// The request form goes through [`parse_route_in`], the one parser of the grammar; its options and signature are
/// dropped (they name a variant of the target). A URL whose path and query parse as a request is read as one;
/// anything else is read as the raw target.
pub fn target_of_any_spelling(text: &str) -> Result<Target, RequestError> {
    let text = text.trim();
    let (path_and_query, site) = if let Some(scheme_relative) = text.strip_prefix("//") {
        (scheme_relative.find('/').map(|slash| &scheme_relative[slash..]), None)
    } else if text.starts_with('/') {
        (Some(text), None)
    } else {
        (after_authority(text), Url::parse(text).ok().and_then(|url| url.join("/").ok()))
    };
    if let Some(rest) = path_and_query {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        match parse_route_in(&RouteContext::all(site), path, query, None) {
            Ok(Route::Image { request, .. }) => return Ok(request.target),
            Ok(Route::Dialect(dialect)) => return Ok(dialect.request.target),
            Ok(Route::Health | Route::NotFound) | Err(_) => {}
        }
    }
    Ok(Target::parse(text)?)
}

/// The image that an absolute URL of an image service asks for, when the URL is written in a spelling Mirage
/// reads (the CORS form `https://host/?{url}`, or a URL dialect) and names another image than itself; `None` for an
/// image's own URL. For reading pages (`mirage urls`, `warm`, `rewrite`), where an ordinary link may look like a
/// path dialect by chance: `https://cdn.example/unsafe/photos/a.jpg` is thumbor's spelling of `http://photos/a.jpg`.
/// A path-shaped reading (Cloudflare, imgproxy, thumbor) whose image host is a single-label name (no dot, not an
/// IP address) is not believed: real pages name public hosts. The query forms (`/?{url}`, weserv's `/?url=`) are
/// unambiguous and always read.
pub fn image_service_target(url: &str) -> Option<Target> {
    let own = Target::parse(url).ok()?;
    let named = target_of_any_spelling(url).ok().filter(|named| named.canonical() != own.canonical())?;
    let query_form = after_authority(url.trim()).is_some_and(|rest| rest.starts_with("/?"));
    let public_name = match named.url().host()? {
        url::Host::Domain(name) => name.trim_end_matches('.').contains('.'),
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => true,
    };
    (query_form || public_name).then_some(named)
}

/// The path and query of an absolute `http`/`https` URL (from the first `/` after the host), if `text` is one.
fn after_authority(text: &str) -> Option<&str> {
    let scheme_len = ["http://", "https://"]
        .iter()
        .find(|scheme| text.get(..scheme.len()).is_some_and(|head| head.eq_ignore_ascii_case(scheme)))?
        .len();
    let rest = &text[scheme_len..];
    rest.find('/').map(|slash| &rest[slash..])
}

/// The raw options segment: percent-decoded, the signature taken out (returned as written, apart from the
/// options: it is not an option and never part of the cache key), the rest parsed.
fn parse_options_segment(raw: &str) -> Result<(TransformOptions, Option<String>), RequestError> {
    let segment = percent_decode_str(raw).decode_utf8().map_err(|_| RequestError::OptionsEncoding)?;
    let mut signature = None;
    let mut rest: Vec<&str> = Vec::new();
    for pair in segment.split(',') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !key.trim().eq_ignore_ascii_case(SIGNATURE_KEY) {
            rest.push(pair);
            continue;
        }
        if signature.is_some() {
            return Err(OptionsError::DuplicateSignature.into());
        }
        let value = value.trim();
        if value.is_empty() {
            return Err(OptionsError::MissingSignature.into());
        }
        signature = Some(value.to_owned());
    }
    let options = TransformOptions::parse(&rest.join(","))?;
    Ok((options, signature))
}

impl ImageRequest {
    /// The request path that [`parse_route`] reads back as this request: `/?{target}` for a mirror,
    /// `/{options}/?{target}` for a transform, the options canonical and the target written as `target_text`
    /// (a spelling of this request's target: `mirage warm --server` keeps the articles' own spelling, which pages
    /// and so a CDN's cache keys use).
    pub fn path_for(&self, target_text: &str) -> String {
        match &self.variant {
            None => format!("/?{target_text}"),
            Some(variant) => format!("/{}/?{target_text}", variant.options.canonical()),
        }
    }

    /// The request path with `signature` first in the options: `/sig=S/?{target}` for a mirror,
    /// `/sig=S,{options}/?{target}` for a transform, both canonical (exactly what the signature covers).
    pub fn signed_path(&self, signature: &str) -> String {
        let options = self.variant.as_ref().map(|variant| variant.options.canonical()).unwrap_or_default();
        let separator = if options.is_empty() { "" } else { "," };
        format!("/{SIGNATURE_KEY}={signature}{separator}{options}/?{}", self.target.canonical())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: &str = "http://h/a.jpg";

    fn image(path: &str, query: &str) -> (ImageRequest, Option<String>) {
        match parse_route(path, query, None) {
            Ok(Route::Image { request, signature }) => (request, signature),
            other => panic!("{path}?{query}: {other:?}"),
        }
    }

    #[test]
    fn health_mirror_and_transform() {
        assert_eq!(parse_route("/healthz", "", None), Ok(Route::Health));
        assert_eq!(parse_route("/healthz", "anything", None), Ok(Route::Health));
        let (mirror, signature) = image("/", TARGET);
        assert_eq!((mirror.variant, signature), (None, None));
        let (transform, signature) = image("/w=300/", TARGET);
        assert_eq!(transform.variant.map(|variant| variant.options.canonical()), Some("width=300".to_owned()));
        assert_eq!(signature, None);
    }

    #[test]
    fn other_paths_are_no_route() {
        for path in ["", "/x", "/w=300", "//", "/w=300/x/", "/a/b/", "w=300/"] {
            assert_eq!(parse_route(path, TARGET, None), Ok(Route::NotFound), "{path:?}");
        }
        // One segment between slashes is the options form, whatever it says.
        assert!(matches!(parse_route("/healthz/", TARGET, None), Err(RequestError::Options(_))));
    }

    #[test]
    fn printed_paths_parse_back() {
        for path in ["/", "/w=300,f=webp/", "/sig=abc,w=150,dpr=2/"] {
            let (request, _) = image(path, "http%3A%2F%2FH%2Fa.jpg");
            let printed = request.path_for("http://h/a.jpg");
            let (printed_path, query) = printed.split_once('?').expect("a query");
            assert_eq!(image(printed_path, query).0, request, "{printed}");
        }
    }

    #[test]
    fn errors_of_the_parts() {
        assert!(matches!(parse_route("/", "", None), Err(RequestError::Target(_))));
        assert!(matches!(parse_route("/w=300/", "", None), Err(RequestError::Target(_))));
        assert!(matches!(parse_route("/w=huge/", TARGET, None), Err(RequestError::Options(_))));
        assert_eq!(parse_route("/w%FF/", TARGET, None), Err(RequestError::OptionsEncoding));
    }

    #[test]
    fn signature_is_taken_out_of_the_options() {
        let (signed, signature) = image("/w=300,sig=abc/", TARGET);
        assert_eq!(signature.as_deref(), Some("abc"));
        assert_eq!(signed, image("/width=300/", TARGET).0);
        let (mirror, signature) = image("/SIG=abc/", TARGET);
        assert_eq!((mirror.variant, signature.as_deref()), (None, Some("abc")));
        assert_eq!(parse_route("/sig=a,sig=b/", TARGET, None), Err(OptionsError::DuplicateSignature.into()));
        assert_eq!(parse_route("/sig=/", TARGET, None), Err(OptionsError::MissingSignature.into()));
        assert_eq!(
            OptionsError::DuplicateSignature.to_string(),
            "option \"sig\" is given more than once",
            "the message is unchanged"
        );
        assert_eq!(
            OptionsError::MissingSignature.to_string(),
            "option \"sig\" needs a value, e.g. sig=<base64url HMAC-SHA256>"
        );
    }

    #[test]
    fn signed_path_prints_what_parse_route_reads() {
        let (request, _) = image("/w=150,dpr=2/", "http%3A%2F%2FH%2Fa.jpg");
        assert_eq!(request.signed_path("S"), "/sig=S,width=300/?http://h/a.jpg");
        let (mirror, _) = image("/", TARGET);
        assert_eq!(mirror.signed_path("S"), "/sig=S/?http://h/a.jpg");
        let path = request.signed_path("S");
        let (path, query) = path.split_once('?').expect("has a query");
        assert_eq!(image(path, query), (request, Some("S".to_owned())));
    }
}
