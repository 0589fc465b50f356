//! Slow clients cannot hold connections: a partial request line, a silent connection and an idle keep-alive
//! connection are all closed by the server after `--header-read-timeout`; an HTTP/2 preface (the server speaks
//! HTTP/1.1 only) is refused at once.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::Proxy;
use crate::common::raw::{raw_exchange, raw_status};

const TIMEOUT: &str = "1s";

/// Sends `bytes` and waits; returns when the server closed the connection, or panics after 5 s.
async fn closed_after(proxy: &Proxy, bytes: &[u8]) -> Duration {
    let (_, closed, elapsed) = raw_exchange(proxy.addr, bytes, Duration::from_secs(5)).await;
    assert!(closed, "the server kept a connection open for 5 s after {:?}", String::from_utf8_lossy(bytes));
    elapsed
}

#[tokio::test]
async fn partial_request_line_is_closed_after_the_header_read_timeout() {
    let proxy = Proxy::start(&["--no-disk-cache", "--header-read-timeout", TIMEOUT]).await;
    let elapsed = closed_after(&proxy, b"GET /?http://example.com/a.jpg HT").await;
    assert!(elapsed >= Duration::from_millis(900), "closed too early: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn partial_headers_are_closed_after_the_header_read_timeout() {
    let proxy = Proxy::start(&["--no-disk-cache", "--header-read-timeout", TIMEOUT]).await;
    let elapsed = closed_after(&proxy, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n").await;
    assert!((Duration::from_millis(900)..Duration::from_secs(3)).contains(&elapsed), "{elapsed:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn silent_connection_is_closed_after_the_header_read_timeout() {
    let proxy = Proxy::start(&["--no-disk-cache", "--header-read-timeout", TIMEOUT]).await;
    let elapsed = closed_after(&proxy, b"").await;
    assert!((Duration::from_millis(900)..Duration::from_secs(3)).contains(&elapsed), "{elapsed:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn http2_prior_knowledge_is_refused_not_held_open() {
    let proxy = Proxy::start(&["--no-disk-cache", "--header-read-timeout", TIMEOUT]).await;
    let elapsed = closed_after(&proxy, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let elapsed = closed_after(&proxy, b"PRI * HTTP/2.0\r\n").await;
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let proxy = Proxy::start(&["--no-disk-cache", "--header-read-timeout", TIMEOUT]).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    // Read the whole answer ("ok\n" after the head), then stay idle.
    while !got.ends_with(b"ok\n") {
        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(raw_status(&got), 200);
    let idle_since = std::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(matches!(end, Ok(Ok(0) | Err(_))), "idle keep-alive connection not closed: {end:?}");
    let idle = idle_since.elapsed();
    assert!((Duration::from_millis(900)..Duration::from_secs(3)).contains(&idle), "{idle:?}");
    proxy.stop().await;
}

/// Slow clients hold no slot past the timeout: with one connection slot, a silent client delays a real one
/// only until the silent one is dropped.
#[tokio::test]
async fn a_silent_client_cannot_starve_the_connection_slots() {
    let proxy = Proxy::start(&["--no-disk-cache", "--header-read-timeout", TIMEOUT, "--max-connections", "1"]).await;
    let _silent = TcpStream::connect(proxy.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (response, _, elapsed) = raw_exchange(proxy.addr, request, Duration::from_secs(5)).await;
    assert_eq!(raw_status(&response), 200, "{}", String::from_utf8_lossy(&response));
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    proxy.stop().await;
}
