//! One HTTP request, top to bottom: route -> parse -> pipeline -> respond.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response};

use crate::error::{Error, ErrorCode};
use crate::fallback;
use crate::metrics::RouteKind;
use crate::pipeline::{CacheStatus, Pipeline};
use crate::request::{Dialect, DialectRequest, ImageRequest, MemoRoute, Route, parse_route_in};
use crate::respond::{self, Body};

/// What the access log needs to know about an answer, beyond its status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// Where the image came from, when there was one.
    pub cache_status: Option<CacheStatus>,
    /// The stable code of the error, when there was one.
    pub error_code: Option<ErrorCode>,
    /// What kind of request it was, for metrics.
    pub route: RouteKind,
    /// The URL dialect it was written in, when not Mirage's own (the access log leaves its signature out).
    pub dialect: Option<Dialect>,
}

/// Answers one request. Never fails: every error becomes a response here.
pub async fn handle<B>(pipeline: &Pipeline, request: &Request<B>) -> (Response<Body>, Outcome) {
    let head_only = request.method() == Method::HEAD;
    let mut kind = RouteKind::Other;
    let mut dialect = None;
    match route(pipeline, request, &mut kind, &mut dialect).await {
        Ok((response, outcome)) => (response, Outcome { route: kind, dialect, ..outcome }),
        Err(error) => {
            let public = error.public();
            // Only our own failures are errors here. Upstream's (502/504, and 503 overload) are logged where
            // they happen, once per fetch (a remembered refusal or an open breaker answers many requests from one
            // failure, and must not log each), and every request's code is in the access log.
            if public.status == http::StatusCode::INTERNAL_SERVER_ERROR {
                tracing::error!(code = public.code.as_str(), %error, "request failed");
            } else {
                tracing::debug!(code = public.code.as_str(), %error, "request refused");
            }
            let outcome = Outcome { cache_status: None, error_code: Some(public.code), route: kind, dialect };
            (respond::error(&public, head_only), outcome)
        }
    }
}

/// Answers a request refused before routing, by a server-level limit, exactly as `handle` answers errors.
pub fn refuse<B>(request: &Request<B>, error: &Error) -> (Response<Body>, Outcome) {
    let public = error.public();
    tracing::debug!(code = public.code.as_str(), %error, "request refused");
    let head_only = request.method() == Method::HEAD;
    let outcome = Outcome { cache_status: None, error_code: Some(public.code), route: RouteKind::Other, dialect: None };
    (respond::error(&public, head_only), outcome)
}

/// Routes and answers; sets `kind` (and `dialect`) as soon as the route is known, so that errors are counted and
/// logged under it too.
async fn route<B>(
    pipeline: &Pipeline,
    request: &Request<B>,
    kind: &mut RouteKind,
    dialect_seen: &mut Option<Dialect>,
) -> Result<(Response<Body>, Outcome), Error> {
    let method = request.method();
    let head_only = method == Method::HEAD;
    if method == Method::OPTIONS {
        return Ok((respond::preflight(request.headers()), Outcome::default()));
    }
    if method != Method::GET && !head_only {
        // 405 is for our routes; a path that is none of them is a 404 whatever the method, so `POST /purge` here
        // says "no such thing" exactly as `GET /purge` does (purge lives on the admin listener only).
        let path = request.uri().path();
        let query = request.uri().query().unwrap_or_default();
        let context = &pipeline.dialects().context;
        let ours = path == "/readyz" || !matches!(parse_route_in(context, path, query, None), Ok(Route::NotFound));
        return Err(if ours { Error::MethodNotAllowed } else { Error::NoRoute });
    }
    // Readiness (liveness is /healthz): 503 until the disk cache's index is built. Requests are answered before
    // that, so a load balancer may route here early; this tells one that waits for full speed.
    if request.uri().path() == "/readyz" {
        *kind = RouteKind::Health;
        return Ok((readiness(pipeline.cache().is_ready(), head_only), Outcome::default()));
    }
    // Everything after the first `?`, raw: the target's own query belongs to it.
    let uri = request.uri();
    let query = uri.query().unwrap_or_default();
    let path_and_query = uri.path_and_query().map_or("", |path_and_query| path_and_query.as_str());
    let accept = request.headers().get(http::header::ACCEPT).and_then(|value| value.to_str().ok());
    let context = &pipeline.dialects().context;
    // Native URLs are parsed and keyed once per distinct URL (and `Accept` class, for `format=auto`): see
    // `request::memo`.
    let routed = pipeline.routes().route(context, path_and_query, uri.path(), query, accept);
    let (image_request, signature) = match routed {
        Ok(MemoRoute::Health) => {
            *kind = RouteKind::Health;
            return Ok((respond::text("ok\n", head_only), Outcome::default()));
        }
        Ok(MemoRoute::Image { request, signature }) => {
            *kind = if request.request().variant.is_none() { RouteKind::Mirror } else { RouteKind::Transform };
            (request, signature)
        }
        Ok(MemoRoute::Dialect(dialect)) => {
            *kind = if dialect.request.variant.is_none() { RouteKind::Mirror } else { RouteKind::Transform };
            *dialect_seen = Some(dialect.dialect);
            // Each dialect's signature with its own key only; before the cache, as for native signatures.
            pipeline.signing().check_dialect(&pipeline.dialects().keys, &dialect.signature)?;
            return dialect_answer(pipeline, request, &dialect, head_only).await;
        }
        Ok(MemoRoute::NotFound) => return Err(Error::NoRoute),
        Err(error) => return Err(error.into()),
    };
    // Before the cache: a signed-only server never answers an unsigned request, not even from the cache.
    pipeline.signing().check(image_request.request(), signature.as_deref())?;
    let served = match pipeline.get_keyed(&image_request).await {
        Ok(served) => served,
        // Upstream's and the source's failures may be answered by the fallback image instead.
        Err(error) => return fallback::answer(pipeline, image_request.request(), error, head_only).await,
    };
    let outcome = Outcome { cache_status: Some(served.cache_status), ..Outcome::default() };
    Ok((respond::image(&served, head_only, request.headers(), pipeline.cache_tag_header()), outcome))
}

/// Answers a dialect request exactly as its native spelling is answered (same pipeline, same cache entry), plus
/// weserv's two extras: `default` stands in for the target when it fails as `--fallback-image` would cover (and
/// wins over it: the page asked for that image), and `maxage` sets the lifetime clients are told.
async fn dialect_answer<B>(
    pipeline: &Pipeline,
    request: &Request<B>,
    dialect: &DialectRequest,
    head_only: bool,
) -> Result<(Response<Body>, Outcome), Error> {
    let served = match pipeline.get(&dialect.request).await {
        Ok(served) => served,
        Err(error) => {
            if let Some(default) = &dialect.default_image
                && let Some(answer) = default_image_answer(pipeline, dialect, default, &error, head_only).await
            {
                return Ok(answer);
            }
            return fallback::answer(pipeline, &dialect.request, error, head_only).await;
        }
    };
    let outcome = Outcome { cache_status: Some(served.cache_status), ..Outcome::default() };
    let mut response = respond::image(&served, head_only, request.headers(), pipeline.cache_tag_header());
    if let Some(max_age) = dialect.max_age {
        let freshness = pipeline.freshness();
        tell_max_age(&mut response, max_age.clamp(freshness.min_ttl, freshness.max_ttl.max(freshness.min_ttl)));
    }
    Ok((response, outcome))
}

/// weserv's `default`: the default image made as the request asks, fetched like any target (SSRF rules, host
/// rules, limits) and cached as its own source. `None` when the error is not one a fallback covers or the
/// default image fails too: the client then gets what it would have got without `default`.
async fn default_image_answer(
    pipeline: &Pipeline,
    dialect: &DialectRequest,
    default: &crate::request::Target,
    error: &Error,
    head_only: bool,
) -> Option<(Response<Body>, Outcome)> {
    let public = error.public();
    if !public.code.fallback_applies() {
        return None;
    }
    let request = ImageRequest { target: default.clone(), variant: dialect.request.variant.clone() };
    let served = match pipeline.get(&request).await {
        Ok(served) => served,
        Err(default_error) => {
            tracing::debug!(%default_error, code = public.code.as_str(), "weserv default image failed too");
            return None;
        }
    };
    // As long as a fallback image is kept downstream (`--fallback-ttl`), else as long as a 404 is remembered:
    // the target is asked again after that.
    let ttl = pipeline.fallback_image().map_or(pipeline.freshness().negative_ttl, |fallback| fallback.ttl);
    let status = pipeline.fallback_image().map_or(public.status, |fallback| fallback.status_for(public.status));
    pipeline.metrics().fallback(public.code);
    let response = respond::fallback(&served, status, public.code, ttl, head_only);
    let outcome =
        Outcome { cache_status: Some(CacheStatus::Fallback), error_code: Some(public.code), ..Outcome::default() };
    Some((response, outcome))
}

/// Replaces the lifetime of a cacheable answer (`public, max-age=N...`) with `max_age`; answers nobody may keep
/// (`no-store`, `private`) or that must be revalidated (`no-cache`) keep theirs.
fn tell_max_age(response: &mut Response<Body>, max_age: Duration) {
    let headers = response.headers_mut();
    let Some(rest) =
        headers.get(header::CACHE_CONTROL).and_then(|value| value.to_str().ok()?.strip_prefix("public, max-age="))
    else {
        return;
    };
    let directives = rest.trim_start_matches(|c: char| c.is_ascii_digit()).to_owned();
    let value = format!("public, max-age={}{directives}", max_age.as_secs());
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(header::CACHE_CONTROL, value);
    }
}

/// `GET /readyz`: 200 `ready`, or 503 `starting` (no-store, like `/healthz`).
fn readiness(ready: bool, head_only: bool) -> Response<Body> {
    if ready {
        return respond::text("ready\n", head_only);
    }
    let mut response = respond::text("starting: building the disk cache index\n", head_only);
    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    response
}
