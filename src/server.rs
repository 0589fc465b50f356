//! The accept loop: connection limits, header and send timeouts, one access-log line per request, graceful
//! shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

mod access_log;
mod send_timeout;

use crate::admin;
use crate::config::Config;
use crate::error::Error;
use crate::handler;
use crate::pipeline::Pipeline;
use send_timeout::SendTimeout;

/// Serves HTTP on an already-bound `listener` until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish (at most `config.shutdown_timeout`), waits for running fills and queued cache writes (at most
/// `config.shutdown_timeout` again) and returns.
///
/// With `config.admin`, the admin listener is bound here too (before the public `listening` line is logged) and
/// stops accepting when the public listener does.
pub async fn serve(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    let pipeline = Pipeline::new(&config.pipeline).await?;
    let Some(admin_config) = config.admin.clone() else {
        serve_with(listener, pipeline, &config, shutdown).await;
        access_log::flush();
        return Ok(());
    };
    let admin_listener = admin::bind(&admin_config).await?;
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin = tokio::spawn(admin::serve(
        admin_listener,
        pipeline.clone(),
        admin_config,
        config.shutdown_timeout,
        async move {
            let _ = admin_stopped.await;
        },
    ));
    serve_with(listener, pipeline, &config, async move {
        shutdown.await;
        let _ = stop_admin.send(());
    })
    .await;
    // The admin task stopped accepting with the public one and had the same grace period to finish.
    let _ = admin.await;
    // The last lines of the access log are still in its buffer.
    access_log::flush();
    Ok(())
}

/// `serve` with a pipeline built by the caller.
pub async fn serve_with(
    listener: TcpListener,
    pipeline: Pipeline,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) {
    // HTTP/1.1 only. Browsers speak HTTP/2 only over TLS and CDNs fetch from origins over HTTP/1.1, so cleartext
    // HTTP/2 (h2c) would serve nobody, and its server has no idle timeout: a client answering pings without ever
    // sending a request would hold a connection slot forever.
    let mut builder = http1::Builder::new();
    // hyper has no timer of its own: without one, header_read_timeout (slowloris protection) is inert. The timeout
    // runs from the moment a connection is polled and restarts after every response, so it bounds silent
    // clients and idle keep-alive connections too. The read buffer bounds a request head: past it, hyper answers
    // 431 itself.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_request_bytes);
    let graceful = GracefulShutdown::new();
    let connection_slots = Arc::new(Semaphore::new(config.max_connections));
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "listening");
    }
    tokio::pin!(shutdown);
    loop {
        let Some((slot, stream, peer)) = accept(&listener, &connection_slots, &mut shutdown, "accept failed").await
        else {
            break;
        };
        let _ = stream.set_nodelay(true);
        let open = pipeline.metrics().connection();
        let pipeline = pipeline.clone();
        let max_uri_bytes = config.max_uri_bytes;
        let peer_text = Arc::new(access_log::Peer::new(peer));
        let service = service_fn(move |request: hyper::Request<Incoming>| {
            let pipeline = pipeline.clone();
            let peer_text = Arc::clone(&peer_text);
            async move {
                let started = Instant::now();
                let uri_bytes = request.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
                let (response, outcome) = if uri_bytes > max_uri_bytes {
                    handler::refuse(&request, &Error::UriTooLong { limit: max_uri_bytes })
                } else {
                    handler::handle(&pipeline, &request).await
                };
                let bytes = hyper::body::Body::size_hint(response.body()).exact().unwrap_or(0);
                let status = response.status().as_u16();
                // One clock read serves the metrics and the access log.
                let took = started.elapsed();
                pipeline.metrics().request(outcome.route, status, outcome.cache_status, bytes, took);
                access_log::record(request.method(), request.uri(), status, outcome, bytes, took, &peer_text);
                Ok::<_, Infallible>(response)
            }
        });
        let connection = graceful
            .watch(builder.serve_connection(TokioIo::new(SendTimeout::new(stream, config.send_timeout)), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop((slot, open));
        });
    }
    drop(listener);
    tracing::info!("shutting down: waiting for in-flight requests");
    if tokio::time::timeout(config.shutdown_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!("shutdown timeout passed with requests still in flight");
    }
    // Fills whose clients hung up still run; they store what they fetched, then the queued disk writes land,
    // each within --shutdown-timeout. Then the disk is closed: nothing is written after this point.
    pipeline.shutdown(config.shutdown_timeout).await;
    tracing::info!("stopped");
}

/// The next connection and the slot it holds, or `None` once `shutdown` resolves (or the slots are closed). The
/// slot is taken before accepting, so extra clients wait in the kernel's backlog instead of in our memory; an
/// accept error (EMFILE and friends) is logged as `what` and backed off from instead of spun on.
pub(crate) async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    what: &'static str,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let slot = tokio::select! {
        slot = Arc::clone(slots).acquire_owned() => slot.ok()?,
        () = shutdown.as_mut() => return None,
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => return Some((slot, stream, peer)),
                Err(error) => {
                    tracing::warn!(%error, "{what}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = shutdown.as_mut() => return None,
        }
    }
}
