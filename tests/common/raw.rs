//! Raw HTTP/1.1 over TCP, both ways, for what hyper will not do on purpose: an origin that misbehaves byte by
//! byte (short bodies, stalls, trickles, bodies that never end) and a client that sends malformed requests.
//!
//! The origin counts accepted connections (not requests), so "never contacted" is really tested. It is the one
//! copy for the security suite and for the fetcher's tests (tests/fetch.rs): those tests use only the fetcher's
//! public API, so they live out here as an integration test instead of the library carrying test-only code.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One thing the raw origin does while answering.
pub enum Step {
    /// Write these bytes.
    Write(Vec<u8>),
    /// Wait before the next step.
    Sleep(Duration),
    /// Write these bytes one at a time, `every` apart.
    Trickle { bytes: Vec<u8>, every: Duration },
    /// Keep writing this chunk until the client goes away or `max_total` bytes are out.
    Flood { chunk: Vec<u8>, max_total: usize },
}

/// Decides the reply from the request head (request line plus headers).
type Handler = Arc<dyn Fn(&str) -> Vec<Step> + Send + Sync>;

/// What the accept loop and the connections record.
#[derive(Default)]
struct Counters {
    connections: AtomicUsize,
    heads: Mutex<Vec<String>>,
    written: AtomicUsize,
}

/// A loopback origin speaking raw HTTP/1.1 (one request per connection, then close), counting connections,
/// keeping every request head and counting the bytes it wrote.
pub struct RawUpstream {
    pub addr: SocketAddr,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    /// Listens on 127.0.0.1 with an ephemeral port.
    pub async fn start(handler: impl Fn(&str) -> Vec<Step> + Send + Sync + 'static) -> RawUpstream {
        RawUpstream::bind("127.0.0.1:0".parse().unwrap(), handler).await.expect("bind 127.0.0.1")
    }

    /// Listens on `addr`; `None` when it cannot be bound (e.g. 127.0.0.2 where only 127.0.0.1 is loopback, or
    /// the port is taken on that address).
    pub async fn bind(
        addr: SocketAddr,
        handler: impl Fn(&str) -> Vec<Step> + Send + Sync + 'static,
    ) -> Option<RawUpstream> {
        let listener = TcpListener::bind(addr).await.ok()?;
        let addr = listener.local_addr().ok()?;
        let handler: Handler = Arc::new(handler);
        let counters = Arc::new(Counters::default());
        let loop_counters = counters.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                loop_counters.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_one(stream, handler.clone(), loop_counters.clone()));
            }
        });
        Some(RawUpstream { addr, counters, task })
    }

    /// A listener that only counts connections (it never answers).
    pub async fn recorder() -> RawUpstream {
        RawUpstream::start(|_| vec![Step::Sleep(Duration::from_secs(30))]).await
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Request heads received so far.
    pub fn heads(&self) -> Vec<String> {
        self.counters.heads.lock().unwrap().clone()
    }

    /// Bytes written so far (heads and bodies) by `Write` and `Flood` steps.
    pub fn written(&self) -> usize {
        self.counters.written.load(Ordering::SeqCst)
    }
}

async fn serve_one(mut stream: TcpStream, handler: Handler, counters: Arc<Counters>) {
    let Some(head) = read_head(&mut stream).await else { return };
    counters.heads.lock().unwrap().push(head.clone());
    for step in handler(&head) {
        match step {
            Step::Write(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
                counters.written.fetch_add(bytes.len(), Ordering::SeqCst);
            }
            Step::Sleep(d) => tokio::time::sleep(d).await,
            Step::Trickle { bytes, every } => {
                for byte in bytes {
                    if stream.write_all(&[byte]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(every).await;
                }
            }
            Step::Flood { chunk, max_total } => {
                let mut sent = 0;
                while sent < max_total {
                    if stream.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += chunk.len();
                    counters.written.fetch_add(chunk.len(), Ordering::SeqCst);
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// Reads up to the blank line that ends a request head; `None` when the client leaves first.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut tmp).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// The path of a request head's request line.
pub fn path_of(head: &str) -> &str {
    head.split_whitespace().nth(1).unwrap_or("")
}

/// The value of header `name` (any case) in a request head.
pub fn header_in<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A response head; `Connection: close` because the origin answers one request per connection.
pub fn head(status: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(s, "{k}: {v}\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// A complete response with an honest Content-Length.
pub fn full(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<Step> {
    let len = body.len().to_string();
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    all.push(("Content-Length", &len));
    let mut bytes = head(status, &all);
    bytes.extend_from_slice(body);
    vec![Step::Write(bytes)]
}

/// A complete 200 answer of `content_type`.
pub fn ok(content_type: &str, body: &[u8]) -> Vec<Step> {
    full("200 OK", &[("Content-Type", content_type)], body)
}

/// A redirect with an empty body.
pub fn redirect(status: &str, location: &str) -> Vec<Step> {
    full(status, &[("Location", location)], b"")
}

/// Sends `request` raw and reads until the server closes (or `limit` passes): what came back, whether the server
/// closed, and when.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> (Vec<u8>, bool, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect to the proxy");
    // A server that refuses early may reset the rest of a long write; what it answered is still read below.
    let _ = stream.write_all(request).await;
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut tmp)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&tmp[..n]),
            Err(_) => break false,
        }
    };
    (got, closed, started.elapsed())
}

/// The status code of a raw HTTP/1 response.
pub fn raw_status(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Whether `ip` can be bound here (all of 127/8 is loopback on Linux, not everywhere).
pub async fn can_bind(ip: &str) -> bool {
    TcpListener::bind((ip.parse::<IpAddr>().unwrap(), 0)).await.is_ok()
}
