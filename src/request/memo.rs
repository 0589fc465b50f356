//! Parsing and keying once per distinct URL: a bounded map from a request's raw path and query to the parsed
//! image request and its cache key.
//!
//! A memory hit is mostly what surrounds the cache lookup, and most of that was reading the URL: the target
//! through the `url` crate (with IDNA host mapping), the options into their canonical form, and the SHA-256 of the
//! key. All of it is a pure function of the path, the query and (for `format=auto` only) the client's `Accept`
//! class, and a page asks for the same few URLs again and again, so it is done once per URL and class and kept
//! here (see BENCHMARKS.md, "parsing and keys once per distinct URL"). Only image routes are kept: a URL that
//! fails to parse is parsed again each time (it answers 400 without touching the cache either way), so hostile
//! junk costs a lookup, never memory. The map is bounded by bytes (`MEMO_BUDGET_BYTES`); a flood of distinct
//! URLs evicts older ones and then costs what parsing costs anyway.

use std::sync::{Arc, OnceLock};

use mirage_cache::CacheKey;

use super::{AcceptClass, DialectRequest, ImageRequest, RequestError, Route, RouteContext, parse_route_in};

/// Most memory the map holds: keys (whole URLs) plus about `ENTRY_OVERHEAD` each.
const MEMO_BUDGET_BYTES: u64 = 16 * 1024 * 1024;

/// What one memoized URL costs besides its text: the parsed request (target URL, options, canonical strings) for
/// up to three `Accept` classes, the map's own node and the shared handles.
const ENTRY_OVERHEAD: u32 = 1024;

/// An image request with its cache key, made together so that one never describes another request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRequest {
    request: ImageRequest,
    key: CacheKey,
}

impl KeyedRequest {
    /// Keys `request` (one SHA-256).
    pub fn new(request: ImageRequest) -> KeyedRequest {
        let key = request.key();
        KeyedRequest { request, key }
    }

    /// The request.
    pub fn request(&self) -> &ImageRequest {
        &self.request
    }

    /// `self.request().key()`, computed once.
    pub fn key(&self) -> CacheKey {
        self.key
    }
}

/// What a request path asks for, as the handler needs it: [`Route`] with the image request keyed and shared.
#[derive(Debug, Clone)]
pub enum MemoRoute {
    /// `/healthz`.
    Health,
    /// An image.
    Image {
        /// The request, canonical, with its key.
        request: Arc<KeyedRequest>,
        /// The `sig=` value as written, when the options carried one.
        signature: Option<Arc<str>>,
    },
    /// An image asked in another service's URL dialect: parsed each time, not kept (dialects are how pages
    /// arrive while they move to Mirage; they carry their own signatures and extras).
    Dialect(Box<DialectRequest>),
    /// Not one of our paths.
    NotFound,
}

/// One URL's parse: the signature and the keyed request for clients without WebP or AVIF (`Basic`), plus, for
/// `format=auto` only, the keyed requests of the other `Accept` classes, each made when a client of that class
/// first asks. Requests that do not negotiate use `basic` for every client.
struct Parsed {
    signature: Option<Arc<str>>,
    basic: Arc<KeyedRequest>,
    varies_on_accept: bool,
    webp: OnceLock<Arc<KeyedRequest>>,
    avif: OnceLock<Arc<KeyedRequest>>,
}

impl Parsed {
    /// `request` as parsed without an `Accept` header: the `Basic` class's.
    fn new(request: ImageRequest, signature: Option<String>) -> Parsed {
        Parsed {
            signature: signature.map(Arc::from),
            varies_on_accept: request.variant.as_ref().is_some_and(super::Variant::varies_on_accept),
            basic: Arc::new(KeyedRequest::new(request)),
            webp: OnceLock::new(),
            avif: OnceLock::new(),
        }
    }

    /// The request for a client whose `Accept` header is `accept`.
    fn request_for(&self, accept: Option<&str>) -> Arc<KeyedRequest> {
        if !self.varies_on_accept {
            return Arc::clone(&self.basic);
        }
        let class = AcceptClass::from_accept(accept);
        let slot = match class {
            AcceptClass::Basic => return Arc::clone(&self.basic),
            AcceptClass::Webp => &self.webp,
            AcceptClass::Avif => &self.avif,
        };
        Arc::clone(slot.get_or_init(|| Arc::new(KeyedRequest::new(self.basic.request().for_accept_class(class)))))
    }
}

/// What one memoized URL weighs against `MEMO_BUDGET_BYTES`.
#[expect(clippy::borrowed_box, reason = "moka's weigher takes the key type by reference")]
fn weigh(url: &Box<str>, _: &Arc<Parsed>) -> u32 {
    u32::try_from(url.len()).unwrap_or(u32::MAX).saturating_add(ENTRY_OVERHEAD)
}

/// The bounded map of parsed URLs; one per server, shared by its connections.
pub struct RouteMemo {
    parsed: moka::sync::Cache<Box<str>, Arc<Parsed>, foldhash::fast::RandomState>,
}

impl Default for RouteMemo {
    fn default() -> RouteMemo {
        RouteMemo::new()
    }
}

impl RouteMemo {
    /// An empty map.
    pub fn new() -> RouteMemo {
        let parsed = moka::sync::Cache::builder()
            .max_capacity(MEMO_BUDGET_BYTES)
            .weigher(weigh)
            .build_with_hasher(foldhash::fast::RandomState::default());
        RouteMemo { parsed }
    }

    /// [`parse_route_in`] of `path` and `query` in `context`, for a client whose `Accept` header is `accept`, with a
    /// native image request keyed; `path_and_query` is the URI's raw path and query (what the map is keyed by). The
    /// same answer as `parse_route_in(context, path, query, accept)`, from the map when the URL was seen before.
    /// One memo serves one context (the server's, fixed for its life).
    pub fn route(
        &self,
        context: &RouteContext,
        path_and_query: &str,
        path: &str,
        query: &str,
        accept: Option<&str>,
    ) -> Result<MemoRoute, RequestError> {
        if let Some(parsed) = self.parsed.get(path_and_query) {
            return Ok(MemoRoute::Image { request: parsed.request_for(accept), signature: parsed.signature.clone() });
        }
        match parse_route_in(context, path, query, accept)? {
            Route::Health => Ok(MemoRoute::Health),
            Route::NotFound => Ok(MemoRoute::NotFound),
            Route::Dialect(dialect) => Ok(MemoRoute::Dialect(dialect)),
            Route::Image { request, signature } => {
                // Kept as a client without WebP or AVIF would have it; each class is made from that.
                let parsed = Arc::new(Parsed::new(request.for_accept_class(AcceptClass::Basic), signature));
                self.parsed.insert(Box::from(path_and_query), Arc::clone(&parsed));
                Ok(MemoRoute::Image { request: parsed.request_for(accept), signature: parsed.signature.clone() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_route;
    use super::*;

    const TARGET: &str = "http://static.1sapp.com/qupost/img/a.jpeg";

    /// The memo's answer, twice (the second from the map), checked against `parse_route` itself.
    fn both(memo: &RouteMemo, path: &str, query: &str, accept: Option<&str>) -> Arc<KeyedRequest> {
        let path_and_query = format!("{path}?{query}");
        let Ok(Route::Image { request: direct, signature }) = parse_route(path, query, accept) else {
            panic!("{path_and_query} is an image route");
        };
        for _ in 0..2 {
            let Ok(MemoRoute::Image { request, signature: memo_signature }) =
                memo.route(&RouteContext::NATIVE, &path_and_query, path, query, accept)
            else {
                panic!("{path_and_query} is an image route");
            };
            assert_eq!(request.request(), &direct, "{path_and_query} {accept:?}");
            assert_eq!(request.key(), direct.key());
            assert_eq!(memo_signature.as_deref(), signature.as_deref());
        }
        match memo.route(&RouteContext::NATIVE, &path_and_query, path, query, accept) {
            Ok(MemoRoute::Image { request, .. }) => request,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_memo_answers_what_parse_route_answers() {
        let memo = RouteMemo::new();
        both(&memo, "/", TARGET, None);
        both(&memo, "/w=300/", TARGET, Some("image/webp"));
        both(&memo, "/sig=abc,w=300/", TARGET, None);
        both(&memo, "/width=300,format=original/", TARGET, None);
    }

    #[test]
    fn format_auto_is_keyed_per_accept_class_and_others_are_not() {
        let memo = RouteMemo::new();
        let path = "/w=300,f=auto/";
        let avif = both(&memo, path, TARGET, Some("image/avif,image/webp,*/*"));
        let webp = both(&memo, path, TARGET, Some("image/webp,*/*"));
        let basic = both(&memo, path, TARGET, Some("*/*"));
        assert_ne!(avif.key(), webp.key());
        assert_ne!(webp.key(), basic.key());
        assert_eq!(basic.key(), both(&memo, path, TARGET, None).key());
        // Asked by a WebP client first, the same URL still answers each class its own request.
        let memo = RouteMemo::new();
        assert_eq!(both(&memo, path, TARGET, Some("image/webp")).key(), webp.key());
        assert_eq!(both(&memo, path, TARGET, None).key(), basic.key());
        // An explicit format is one request for every client.
        let explicit = both(&memo, "/w=300,f=webp/", TARGET, Some("image/avif,image/webp"));
        assert_eq!(explicit.key(), both(&memo, "/w=300,f=webp/", TARGET, None).key());
    }

    #[test]
    fn errors_and_other_routes_are_not_kept() {
        let memo = RouteMemo::new();
        for _ in 0..2 {
            assert!(matches!(
                memo.route(&RouteContext::NATIVE, "/w=huge/?x", "/w=huge/", TARGET, None),
                Err(RequestError::Options(_))
            ));
            assert!(matches!(
                memo.route(&RouteContext::NATIVE, "/healthz", "/healthz", "", None),
                Ok(MemoRoute::Health)
            ));
            assert!(matches!(memo.route(&RouteContext::NATIVE, "/a/b?c", "/a/b", "c", None), Ok(MemoRoute::NotFound)));
        }
        memo.parsed.run_pending_tasks();
        assert_eq!(memo.parsed.entry_count(), 0);
    }

    #[test]
    fn dialect_routes_are_answered_but_not_kept() {
        let memo = RouteMemo::new();
        let context = RouteContext { dialects: super::super::Dialects::ALL, origin: None };
        let query = "url=static.1sapp.com/qupost/img/a.jpeg&w=300";
        for _ in 0..2 {
            let Ok(MemoRoute::Dialect(dialect)) = memo.route(&context, &format!("/?{query}"), "/", query, None) else {
                panic!("a weserv URL");
            };
            assert_eq!(dialect.request.target.canonical(), TARGET);
        }
        memo.parsed.run_pending_tasks();
        assert_eq!(memo.parsed.entry_count(), 0);
        // The same map still keeps native URLs in that context.
        let _ = memo.route(&context, &format!("/w=300/?{TARGET}"), "/w=300/", TARGET, None);
        memo.parsed.run_pending_tasks();
        assert_eq!(memo.parsed.entry_count(), 1);
    }

    #[test]
    fn the_map_is_bounded_by_bytes() {
        let memo = RouteMemo::new();
        // Each URL weighs about 1 KiB with its overhead: four times the budget's worth of distinct URLs.
        let count = 4 * MEMO_BUDGET_BYTES / u64::from(ENTRY_OVERHEAD);
        for n in 0..count {
            let query = format!("http://h.example/{n}.jpg");
            let _ = memo.route(&RouteContext::NATIVE, &format!("/?{query}"), "/", &query, None);
        }
        memo.parsed.run_pending_tasks();
        assert!(memo.parsed.weighted_size() <= MEMO_BUDGET_BYTES, "{}", memo.parsed.weighted_size());
        assert!(memo.parsed.entry_count() > 0);
    }
}
