//! The accept loop: connection limits, header timeouts, one access-log line per request, graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::error::Error;
use crate::handler;
use crate::pipeline::Pipeline;

/// Serves HTTP on an already-bound `listener` until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish (at most `config.shutdown_timeout`), waits for queued cache writes and returns.
pub async fn serve(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let pipeline = Pipeline::new(&config.pipeline).await?;
    serve_with(listener, pipeline, &config, shutdown).await;
    Ok(())
}

/// `serve` with a pipeline built by the caller.
pub async fn serve_with(
    listener: TcpListener,
    pipeline: Pipeline,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper has no timer of its own: without one, header_read_timeout (slowloris protection) is inert.
    // The header read timeout also restarts after every response, so it bounds idle keep-alive connections too.
    // The read buffer bounds a request head: past it, hyper answers 431 itself.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_request_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_header_list_size(u32::try_from(config.max_request_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let connection_slots = Arc::new(Semaphore::new(config.max_connections));
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "listening");
    }
    tokio::pin!(shutdown);
    loop {
        // Take a slot before accepting, so extra clients wait in the kernel's backlog instead of in our memory.
        let slot = tokio::select! {
            slot = connection_slots.clone().acquire_owned() => match slot { Ok(slot) => slot, Err(_) => break },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let pipeline = pipeline.clone();
        let max_uri_bytes = config.max_uri_bytes;
        let service = service_fn(move |request: hyper::Request<Incoming>| {
            let pipeline = pipeline.clone();
            async move {
                let started = Instant::now();
                let uri_bytes = request.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
                let (response, outcome) = if uri_bytes > max_uri_bytes {
                    handler::refuse(&request, &Error::UriTooLong { limit: max_uri_bytes })
                } else {
                    handler::handle(&pipeline, &request).await
                };
                tracing::info!(
                    method = %request.method(),
                    path = %request.uri(),
                    status = response.status().as_u16(),
                    x_cache = outcome.cache_status.map_or("-", |status| status.as_str()),
                    error = outcome.error_code.unwrap_or("-"),
                    bytes = hyper::body::Body::size_hint(response.body()).exact().unwrap_or(0),
                    ms = started.elapsed().as_secs_f64() * 1000.0,
                    %peer,
                    "request"
                );
                Ok::<_, Infallible>(response)
            }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let header_read_timeout = config.header_read_timeout;
        tokio::spawn(async move {
            if !first_bytes_in_time(&stream, header_read_timeout).await {
                tracing::debug!(%peer, "client sent no request in time");
                drop(slot);
                return;
            }
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!("shutting down: waiting for in-flight requests");
    if tokio::time::timeout(config.shutdown_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!("shutdown timeout passed with requests still in flight");
    }
    pipeline.flush().await;
    tracing::info!("stopped");
}

/// Waits until the client has sent enough to tell HTTP/1 from HTTP/2; `false` if it sent nothing in `limit` or
/// went away.
///
/// hyper-util's auto builder reads those first bytes with no time limit, and hyper's header read timeout only
/// starts after them: without this, a client that connects and stays silent (or sends part of the HTTP/2
/// preface) would hold a connection slot forever.
async fn first_bytes_in_time(stream: &TcpStream, limit: Duration) -> bool {
    const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let decided = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n >= H2_PREFACE.len() || buf[..n] != H2_PREFACE[..n] => return true,
                // Part of the HTTP/2 preface: peeking again would return the same bytes at once.
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    tokio::time::timeout(limit, decided).await.unwrap_or(false)
}
