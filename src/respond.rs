//! Writes answers: image responses with cache validators and CORS, 304s, preflights and plain-text errors.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::error::{ErrorCode, PublicError};
use crate::freshness;
use crate::pipeline::{CacheStatus, Served};
use mirage_cache::Entry;

/// The response body type of every answer: the whole body at once, shared with the cache (no copy).
pub type Body = Full<Bytes>;

/// `X-Cache`: where the answer came from.
pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// How long clients and CDNs may keep a stale answer given while upstream is failing.
const STALE_CACHE_CONTROL: &str = "public, max-age=60";

/// The image itself (or, for HEAD, its headers), or 304 when the client's `If-None-Match` already has it.
/// `cache_tag` names the header that carries the image's source tag (`--cache-tag-header`), if any.
pub fn image(
    served: &Served,
    head_only: bool,
    request_headers: &HeaderMap,
    cache_tag: Option<&HeaderName>,
) -> Response<Body> {
    let entry = &served.entry;
    let meta = entry.meta();
    let not_modified = is_not_modified(request_headers, entry.etag_str(), meta.last_modified_value());
    let (status, body) = match (not_modified, head_only) {
        (true, _) => (StatusCode::NOT_MODIFIED, Bytes::new()),
        (false, true) => (StatusCode::OK, Bytes::new()),
        (false, false) => (StatusCode::OK, entry.body().clone()),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    // The headers that depend only on the entry are made once per entry and kept with it; an answer copies that
    // map of shared values (no formatting, no validation) and overwrites the per-answer ones in their places. A
    // 304 leaves out the body's headers, so it makes its own.
    let fixed = if not_modified { None } else { meta.answer_memo(|| FixedHeaders::of(entry, cache_tag)) };
    let headers = response.headers_mut();
    match fixed {
        Some(fixed) => headers.clone_from(&fixed.0),
        None => fixed_headers(headers, entry, cache_tag, !not_modified),
    }
    let (cache_control, age) = cache_headers(served);
    headers.insert(header::CACHE_CONTROL, cache_control);
    match age {
        Some(age) => headers.insert(header::AGE, age),
        None => headers.remove(header::AGE),
    };
    headers.insert(X_CACHE.clone(), HeaderValue::from_static(served.cache_status.as_str()));
    if served.varies_on_accept {
        headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    }
    response
}

/// An image answer's headers that depend only on its entry (and the process's `--cache-tag-header`), with a place
/// already made for each header every answer sets (`Cache-Control`, `Age`, `X-Cache`): a copy of the map has room
/// for exactly these, so setting them replaces values instead of growing the copy.
struct FixedHeaders(HeaderMap);

impl FixedHeaders {
    fn of(entry: &Entry, cache_tag: Option<&HeaderName>) -> FixedHeaders {
        let mut headers = HeaderMap::with_capacity(16);
        fixed_headers(&mut headers, entry, cache_tag, true);
        for name in [header::CACHE_CONTROL, header::AGE, X_CACHE.clone()] {
            headers.insert(name, HeaderValue::from_static("-"));
        }
        FixedHeaders(headers)
    }
}

/// CORS and hardening, the validators, the source's cache tag and, with `with_body`, the body's type and length.
fn fixed_headers(headers: &mut HeaderMap, entry: &Entry, cache_tag: Option<&HeaderName>, with_body: bool) {
    let meta = entry.meta();
    add_common_headers(headers);
    // Made once with the entry (shared buffers): sending them formats and copies nothing.
    put_shared(headers, header::ETAG, entry.etag_bytes());
    put_shared(headers, header::LAST_MODIFIED, meta.last_modified_value());
    if let (Some(name), Some(tag)) = (cache_tag, meta.source_tag()) {
        put_shared(headers, name.clone(), tag);
    }
    if with_body {
        put_shared(headers, header::CONTENT_TYPE, meta.content_type_value());
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.body_len()));
    }
}

/// `Cache-Control` and `Age` for an image answer, on the pipeline's clock (not the wall clock), so tests can move
/// time. With `Age`, `max-age` is the entry's whole lifetime, not what is left: a downstream cache subtracts `Age`
/// itself (RFC 9111 4.2.3), so a counting-down `max-age` would be subtracted twice.
fn cache_headers(served: &Served) -> (HeaderValue, Option<HeaderValue>) {
    if served.private {
        // A shared cache must not keep it (RFC 9111 3.5); the requesting client is told so as well.
        return (HeaderValue::from_static("private, no-store"), None);
    }
    if !served.cacheable {
        return (HeaderValue::from_static("no-store"), None);
    }
    if served.cache_status == CacheStatus::Stale {
        // Past its lifetime: a short new allowance, without `Age`, which would mark it expired downstream at once.
        return (HeaderValue::from_static(STALE_CACHE_CONTROL), None);
    }
    // Both values are written into one buffer and handed out as two slices of it: the hit path pays for one
    // allocation (plus its shared handle), as it did for `Cache-Control` alone before `Age` was sent.
    let inputs = &served.entry.meta().freshness;
    let mut text = String::with_capacity(64);
    if inputs.no_cache {
        // Every reuse is revalidated here; downstream caches must do the same (with our ETag).
        text.push_str("public, no-cache");
    } else {
        let _ = write!(text, "public, max-age={}", served.lifetime());
        if inputs.must_revalidate {
            text.push_str(", must-revalidate");
        }
        if freshness::immutable(inputs) {
            text.push_str(", immutable");
        }
    }
    let split = text.len();
    let _ = write!(text, "{}", served.age());
    let both = Bytes::from(text);
    // Digits and ASCII words only, so both are always valid header values.
    let cache_control = HeaderValue::from_maybe_shared(both.slice(..split))
        .unwrap_or_else(|_| HeaderValue::from_static("public, max-age=0"));
    (cache_control, HeaderValue::from_maybe_shared(both.slice(split..)).ok())
}

/// `X-Mirage-Fallback`: on a fallback answer, the code of the error it stands in for.
pub static X_MIRAGE_FALLBACK: HeaderName = HeaderName::from_static("x-mirage-fallback");

/// The fallback image standing in for an error (`--fallback-image`): `status`, the placeholder's own
/// `Content-Type`, `public, max-age=` the fallback TTL, `X-Cache: FALLBACK` and `X-Mirage-Fallback: {code}`. No
/// `ETag` nor `Last-Modified`: a validator would let a client or CDN keep the placeholder as if it were the real
/// image, and revalidate it into a 304 for the real one later.
pub fn fallback(
    served: &Served,
    status: StatusCode,
    code: ErrorCode,
    ttl: Duration,
    head_only: bool,
) -> Response<Body> {
    let entry = &served.entry;
    let body = if head_only { Bytes::new() } else { entry.body().clone() };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    add_common_headers(headers);
    // Scripts may read which error the placeholder stands for.
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Type, Cache-Control, X-Cache, X-Mirage-Fallback, Vary"),
    );
    put(headers, header::CONTENT_TYPE, &entry.meta().content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(entry.meta().body_len()));
    put(headers, header::CACHE_CONTROL, &format!("public, max-age={}", ttl.as_secs()));
    headers.insert(X_CACHE.clone(), HeaderValue::from_static(CacheStatus::Fallback.as_str()));
    headers.insert(X_MIRAGE_FALLBACK.clone(), HeaderValue::from_static(code.as_str()));
    if served.varies_on_accept {
        put(headers, header::VARY, "Accept");
    }
    response
}

/// A one-line plain-text error with the status from the error table.
pub fn error(public: &PublicError, head_only: bool) -> Response<Body> {
    let text = format!("{}\n", public.message);
    let length = text.len();
    let body = if head_only { Bytes::new() } else { Bytes::from(text) };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = public.status;
    let headers = response.headers_mut();
    add_common_headers(headers);
    put(headers, header::CONTENT_TYPE, "text/plain; charset=utf-8");
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    let cache_control = match public.cache_seconds {
        Some(seconds) => format!("public, max-age={seconds}"),
        None => "no-store".to_owned(),
    };
    put(headers, header::CACHE_CONTROL, &cache_control);
    if let Some(seconds) = public.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if public.status == StatusCode::METHOD_NOT_ALLOWED {
        put(headers, header::ALLOW, ALLOWED_METHODS);
    }
    response
}

/// A small plain-text 200 (health checks).
pub fn text(body: &'static str, head_only: bool) -> Response<Body> {
    let mut response =
        Response::new(Full::new(if head_only { Bytes::new() } else { Bytes::from_static(body.as_bytes()) }));
    let headers = response.headers_mut();
    add_common_headers(headers);
    put(headers, header::CONTENT_TYPE, "text/plain; charset=utf-8");
    put(headers, header::CACHE_CONTROL, "no-store");
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    response
}

/// The CORS preflight answer.
pub fn preflight(request_headers: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    add_common_headers(headers);
    put(headers, header::ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS);
    // Echo what the page wants to send (e.g. `Range`, `If-None-Match`): we read no credentials, so any is harmless.
    if let Some(requested) = request_headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
    }
    put(headers, header::ACCESS_CONTROL_MAX_AGE, "86400");
    response
}

const ALLOWED_METHODS: &str = "GET, HEAD, OPTIONS";

/// CORS and hardening headers carried by every response.
fn add_common_headers(headers: &mut HeaderMap) {
    // Static values: no parsing or copying on the hit path.
    headers.reserve(12);
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(
            "Content-Length, Content-Type, Cache-Control, Age, ETag, Last-Modified, X-Cache, Retry-After, Vary",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'"));
}

/// Sets a header whose value we built; a value that is not a valid header (e.g. an upstream ETag with
/// control characters) is left out rather than failing the response.
fn put(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// Sets a header from a value kept with a cache entry: a reference-counted clone, checked but not copied. A
/// value that is not a valid header (an upstream `Last-Modified` with control characters) is left out.
fn put_shared(headers: &mut HeaderMap, name: HeaderName, value: &Bytes) {
    if let Ok(value) = HeaderValue::from_maybe_shared(value.clone()) {
        headers.insert(name, value);
    }
}

/// RFC 9110 13.1.2 / 13.1.3: `If-None-Match` (weak comparison) wins; `If-Modified-Since` only without it.
/// Every `If-None-Match` line counts: repeated lines form one list (RFC 9110 5.3), and a client or CDN may send
/// one tag per line.
fn is_not_modified(request_headers: &HeaderMap, etag: &str, last_modified: &[u8]) -> bool {
    let mut if_none_match = request_headers.get_all(header::IF_NONE_MATCH).iter().peekable();
    if if_none_match.peek().is_some() {
        // A line that is not text cannot name our tag; the other lines still can.
        return if_none_match
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag);
    }
    let Some(since) = request_headers.get(header::IF_MODIFIED_SINCE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let last_modified = std::str::from_utf8(last_modified).unwrap_or_default();
    match (httpdate::parse_http_date(since), httpdate::parse_http_date(last_modified)) {
        (Ok(since), Ok(modified)) => modified <= since,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: HeaderName, value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(name, HeaderValue::from_str(value).expect("valid"));
        map
    }

    #[test]
    fn if_none_match_lists_and_weak_tags() {
        let lm = b"Tue, 01 Jan 2030 00:00:00 GMT";
        assert!(is_not_modified(&headers(header::IF_NONE_MATCH, "\"abc\""), "\"abc\"", lm));
        assert!(is_not_modified(&headers(header::IF_NONE_MATCH, "\"x\", W/\"abc\""), "\"abc\"", lm));
        assert!(is_not_modified(&headers(header::IF_NONE_MATCH, "*"), "\"abc\"", lm));
        assert!(!is_not_modified(&headers(header::IF_NONE_MATCH, "\"abd\""), "\"abc\"", lm));
        assert!(!is_not_modified(&HeaderMap::new(), "\"abc\"", lm));
    }

    #[test]
    fn every_if_none_match_line_counts() {
        let lm = b"Tue, 01 Jan 2030 00:00:00 GMT";
        let mut map = headers(header::IF_NONE_MATCH, "\"x\", \"y\"");
        map.append(header::IF_NONE_MATCH, HeaderValue::from_static("W/\"abc\""));
        assert!(is_not_modified(&map, "\"abc\"", lm));
        assert!(!is_not_modified(&map, "\"abd\"", lm));
        // A present If-None-Match that does not match wins over a matching If-Modified-Since.
        map.append(header::IF_MODIFIED_SINCE, HeaderValue::from_static("Tue, 01 Jan 2030 00:00:00 GMT"));
        assert!(!is_not_modified(&map, "\"abd\"", lm));
    }

    fn served(entry: &Entry, cache_status: CacheStatus, answered_at: u64, varies_on_accept: bool) -> Served {
        Served { entry: entry.clone(), cache_status, cacheable: true, private: false, varies_on_accept, answered_at }
    }

    /// The headers kept with an entry serve every answer from it, each with its own per-answer values.
    #[test]
    fn answers_from_one_entry_keep_their_own_per_answer_headers() {
        let entry = Entry::image("image/jpeg", Bytes::from_static(b"jpeg"), 1_000, 4_600);
        let tag = HeaderName::from_static("cache-tag");
        let get = |served: &Served, request: &HeaderMap| image(served, false, request, Some(&tag));
        let first = get(&served(&entry, CacheStatus::Miss, 1_000, false), &HeaderMap::new());
        let second = get(&served(&entry, CacheStatus::HitMemory, 1_030, true), &HeaderMap::new());
        let stale = get(&served(&entry, CacheStatus::Stale, 9_000, false), &HeaderMap::new());
        let value = |response: &Response<Body>, name: &str| {
            response.headers().get(name).map(|value| value.to_str().expect("text").to_owned())
        };
        assert_eq!(value(&first, "x-cache").as_deref(), Some("MISS"));
        assert_eq!(value(&first, "age").as_deref(), Some("0"));
        assert_eq!(value(&first, "vary"), None);
        assert_eq!(value(&second, "x-cache").as_deref(), Some("HIT-MEMORY"));
        assert_eq!(value(&second, "age").as_deref(), Some("30"));
        assert_eq!(value(&second, "cache-control").as_deref(), Some("public, max-age=3600"));
        assert_eq!(value(&second, "vary").as_deref(), Some("Accept"));
        assert_eq!(value(&stale, "age"), None, "a stale answer has no Age");
        assert_eq!(value(&stale, "cache-control").as_deref(), Some(STALE_CACHE_CONTROL));
        for response in [&first, &second, &stale] {
            assert_eq!(value(response, "content-type").as_deref(), Some("image/jpeg"));
            assert_eq!(value(response, "content-length").as_deref(), Some("4"));
            assert_eq!(value(response, "etag").as_deref(), Some(entry.etag_str()));
            assert_eq!(value(response, "last-modified").as_deref(), Some("Thu, 01 Jan 1970 00:16:40 GMT"));
            assert_eq!(value(response, "access-control-allow-origin").as_deref(), Some("*"));
            // No placeholder survives into an answer.
            assert!(response.headers().values().all(|value| value != "-"));
        }
        // A 304 from the same entry carries the validators but not the body's headers.
        let revalidation = headers(header::IF_NONE_MATCH, entry.etag_str());
        let not_modified = get(&served(&entry, CacheStatus::HitMemory, 1_030, false), &revalidation);
        assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(value(&not_modified, "content-type"), None);
        assert_eq!(value(&not_modified, "etag").as_deref(), Some(entry.etag_str()));
        assert_eq!(value(&not_modified, "x-cache").as_deref(), Some("HIT-MEMORY"));
    }

    #[test]
    fn if_modified_since() {
        let lm = b"Tue, 01 Jan 2030 00:00:00 GMT";
        assert!(is_not_modified(&headers(header::IF_MODIFIED_SINCE, "Tue, 01 Jan 2030 00:00:00 GMT"), "\"abc\"", lm));
        assert!(!is_not_modified(&headers(header::IF_MODIFIED_SINCE, "Mon, 31 Dec 2029 00:00:00 GMT"), "\"a\"", lm));
    }
}
