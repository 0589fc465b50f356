//! One HTTP request, top to bottom: route -> parse -> pipeline -> respond.

use http::{Method, Request, Response};

use crate::error::{Error, ErrorCode};
use crate::fallback;
use crate::metrics::RouteKind;
use crate::pipeline::{CacheStatus, Pipeline};
use crate::request::{MemoRoute, Route, parse_route};
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
}

/// Answers one request. Never fails: every error becomes a response here.
pub async fn handle<B>(pipeline: &Pipeline, request: &Request<B>) -> (Response<Body>, Outcome) {
    let head_only = request.method() == Method::HEAD;
    let mut kind = RouteKind::Other;
    match route(pipeline, request, &mut kind).await {
        Ok((response, outcome)) => (response, Outcome { route: kind, ..outcome }),
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
            let outcome = Outcome { cache_status: None, error_code: Some(public.code), route: kind };
            (respond::error(&public, head_only), outcome)
        }
    }
}

/// Answers a request refused before routing, by a server-level limit, exactly as `handle` answers errors.
pub fn refuse<B>(request: &Request<B>, error: &Error) -> (Response<Body>, Outcome) {
    let public = error.public();
    tracing::debug!(code = public.code.as_str(), %error, "request refused");
    let head_only = request.method() == Method::HEAD;
    let outcome = Outcome { cache_status: None, error_code: Some(public.code), route: RouteKind::Other };
    (respond::error(&public, head_only), outcome)
}

/// Routes and answers; sets `kind` as soon as the route is known, so that errors are counted under it too.
async fn route<B>(
    pipeline: &Pipeline,
    request: &Request<B>,
    kind: &mut RouteKind,
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
        let ours = path == "/readyz" || !matches!(parse_route(path, query, None), Ok(Route::NotFound));
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
    // Parsed and keyed once per distinct URL (and `Accept` class, for `format=auto`): see `request::memo`.
    let (image_request, signature) = match pipeline.routes().route(path_and_query, uri.path(), query, accept) {
        Ok(MemoRoute::Health) => {
            *kind = RouteKind::Health;
            return Ok((respond::text("ok\n", head_only), Outcome::default()));
        }
        Ok(MemoRoute::Image { request, signature }) => {
            *kind = if request.request().variant.is_none() { RouteKind::Mirror } else { RouteKind::Transform };
            (request, signature)
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

/// `GET /readyz`: 200 `ready`, or 503 `starting` (no-store, like `/healthz`).
fn readiness(ready: bool, head_only: bool) -> Response<Body> {
    if ready {
        return respond::text("ready\n", head_only);
    }
    let mut response = respond::text("starting: building the disk cache index\n", head_only);
    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    response
}
