//! The admin listener: `/metrics`, `/purge`, `/healthz` and `/readyz` on an address of their own, behind a
//! bearer token.
//!
//! Nothing administrative is ever reachable on the public port. The admin listener is off unless
//! `--admin-listen` is given; a non-loopback address without `--admin-token` is refused at start, so that an
//! operator never exposes purge (or the traffic figures) to the network by accident.

pub mod purge;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::handler;
use crate::metrics;
use crate::pipeline::Pipeline;
use crate::respond::Body;

/// Admin connections served at once: operators and one Prometheus, not the public.
const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The bearer token of the admin listener. Its `Debug` does not print it.
#[derive(Clone)]
pub struct AdminToken(String);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// Whether an `Authorization` header carries this token as `Bearer TOKEN`. Constant-time: both sides are
    /// hashed first and the digests compared without an early exit, so neither the token's length nor how much
    /// of it a guess got right shows in the time taken.
    fn admits(&self, authorization: Option<&HeaderValue>) -> bool {
        let offered = authorization
            .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
            .map(<[u8]>::trim_ascii)
            .unwrap_or_default();
        let (expected, offered) = (Sha256::digest(self.0.as_bytes()), Sha256::digest(offered));
        let difference = expected.iter().zip(offered.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        authorization.is_some() && difference == 0
    }
}

/// The validated settings of the admin listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// The token `/purge` (and `/metrics` unless `metrics_public`) require; `None` on loopback only.
    pub token: Option<AdminToken>,
    /// `/metrics` without the token.
    pub metrics_public: bool,
}

impl AdminConfig {
    /// Checks the admin flags together: `None` when there is no admin listener.
    pub fn from_flags(
        listen: Option<SocketAddr>,
        token: Option<String>,
        metrics_public: bool,
    ) -> Result<Option<AdminConfig>, String> {
        if token.as_deref().is_some_and(|token| token.trim().is_empty()) {
            return Err("--admin-token must not be empty".into());
        }
        let Some(listen) = listen else {
            return Ok(None);
        };
        if !listen.ip().is_loopback() && token.is_none() {
            return Err(format!(
                "--admin-listen {listen} is not a loopback address: set --admin-token (MIRAGE_ADMIN_TOKEN) to protect \
                 it, or listen on 127.0.0.1"
            ));
        }
        Ok(Some(AdminConfig { listen, token: token.map(|token| AdminToken(token.trim().to_owned())), metrics_public }))
    }
}

/// Binds the admin address and logs it (`admin listening`, with `address`).
pub async fn bind(config: &AdminConfig) -> Result<TcpListener, String> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|error| format!("cannot listen on --admin-listen {}: {error}", config.listen))?;
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, token = config.token.is_some(), metrics_public = config.metrics_public, "admin listening");
    }
    Ok(listener)
}

/// Serves the admin routes on `listener` until `shutdown` resolves, then lets open requests finish (at most
/// `grace`).
pub async fn serve(
    listener: TcpListener,
    pipeline: Pipeline,
    config: AdminConfig,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let config = Arc::new(config);
    tokio::pin!(shutdown);
    loop {
        let Some((slot, stream, peer)) =
            crate::server::accept(&listener, &slots, &mut shutdown, "admin accept failed").await
        else {
            break;
        };
        let (pipeline, config) = (pipeline.clone(), Arc::clone(&config));
        let service = service_fn(move |request: Request<Incoming>| {
            let (pipeline, config) = (pipeline.clone(), Arc::clone(&config));
            async move {
                let response = answer(&pipeline, &config, request).await;
                Ok::<_, Infallible>(response)
            }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "admin connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("shutdown timeout passed with admin requests still in flight");
    }
}

/// One admin request.
async fn answer(pipeline: &Pipeline, config: &AdminConfig, request: Request<Incoming>) -> Response<Body> {
    let authorized =
        || config.token.as_ref().is_none_or(|token| token.admits(request.headers().get(header::AUTHORIZATION)));
    let readable = matches!(*request.method(), Method::GET | Method::HEAD);
    match request.uri().path() {
        // The public port's own answers (it routes these two itself).
        "/healthz" | "/readyz" if readable => handler::handle(pipeline, &request).await.0,
        "/metrics" if readable => {
            if !config.metrics_public && !authorized() {
                return unauthorized();
            }
            // moka counts entries and bytes lazily: settle its books so the gauges are current.
            pipeline.cache().memory().run_pending_tasks().await;
            let mut response = Response::new(Full::new(Bytes::from(metrics::render(pipeline))));
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if request.method() == Method::HEAD {
                *response.body_mut() = Full::new(Bytes::new());
            }
            response
        }
        "/purge" if request.method() == Method::POST => {
            // The token is checked before a byte of the body is read.
            if !authorized() {
                return unauthorized();
            }
            match Limited::new(request.into_body(), purge::MAX_BODY_BYTES).collect().await {
                Ok(body) => purge::answer(pipeline, body.to_bytes()).await,
                Err(_) => plain(StatusCode::PAYLOAD_TOO_LARGE, "the purge body is larger than 1 MiB or broke off\n"),
            }
        }
        "/healthz" | "/readyz" | "/metrics" => not_allowed("GET, HEAD"),
        "/purge" => not_allowed("POST"),
        _ => plain(StatusCode::NOT_FOUND, "no such admin route: /metrics, /purge, /healthz, /readyz\n"),
    }
}

/// A small `text/plain`, never cached.
pub(crate) fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn unauthorized() -> Response<Body> {
    let mut response = plain(StatusCode::UNAUTHORIZED, "this admin route needs Authorization: Bearer <token>\n");
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_check() {
        let token = AdminToken("s3cret".into());
        let header = |text: &str| HeaderValue::from_str(text).expect("valid header");
        assert!(token.admits(Some(&header("Bearer s3cret"))));
        assert!(!token.admits(Some(&header("Bearer s3cre"))));
        assert!(!token.admits(Some(&header("Bearer s3cret2"))));
        assert!(!token.admits(Some(&header("Basic s3cret"))));
        assert!(!token.admits(None));
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let public: SocketAddr = "0.0.0.0:9180".parse().expect("address");
        let error = AdminConfig::from_flags(Some(public), None, false).expect_err("refused");
        assert!(error.contains("--admin-listen") && error.contains("--admin-token"), "{error}");
        assert!(!error.contains('\n'));
        assert!(AdminConfig::from_flags(Some(public), Some("t".into()), false).is_ok_and(|c| c.is_some()));
        let loopback: SocketAddr = "127.0.0.1:9180".parse().expect("address");
        assert!(AdminConfig::from_flags(Some(loopback), None, false).is_ok_and(|c| c.is_some()));
        assert!(AdminConfig::from_flags(None, None, true).is_ok_and(|c| c.is_none()));
    }
}
