//! Helpers of the security suite: a raw-TCP upstream that can misbehave byte by byte and counts connections,
//! a raw client for malformed requests, and the proxy started with a configuration tweak.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One thing the raw upstream does while answering.
pub enum Step {
    /// Write these bytes.
    Write(Vec<u8>),
    /// Wait.
    Sleep(Duration),
    /// Write these bytes one at a time, `every` apart.
    Trickle { bytes: Vec<u8>, every: Duration },
}

type Handler = Arc<dyn Fn(&str) -> Vec<Step> + Send + Sync>;

/// A loopback origin speaking raw HTTP/1.1 (one request per connection, then close), counting connections and
/// keeping every request head.
pub struct RawUpstream {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
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

    /// Listens on `addr`; `None` when it cannot be bound (e.g. the port is taken on that address).
    pub async fn bind(
        addr: SocketAddr,
        handler: impl Fn(&str) -> Vec<Step> + Send + Sync + 'static,
    ) -> Option<RawUpstream> {
        let listener = TcpListener::bind(addr).await.ok()?;
        let addr = listener.local_addr().ok()?;
        let handler: Handler = Arc::new(handler);
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (c, h) = (connections.clone(), heads.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_one(stream, handler.clone(), h.clone()));
            }
        });
        Some(RawUpstream { addr, connections, heads, task })
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
        self.connections.load(Ordering::SeqCst)
    }

    /// Request heads received so far.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn serve_one(mut stream: TcpStream, handler: Handler, heads: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    heads.lock().unwrap().push(head.clone());
    for step in handler(&head) {
        match step {
            Step::Write(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
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
        }
    }
    let _ = stream.shutdown().await;
}

/// A response head with `Connection: close` and the given headers.
pub fn head(status: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// A complete 200 answer with an honest Content-Length.
pub fn ok(content_type: &str, body: &[u8]) -> Vec<Step> {
    let mut bytes = head("200 OK", &[("Content-Type", content_type), ("Content-Length", &body.len().to_string())]);
    bytes.extend_from_slice(body);
    vec![Step::Write(bytes)]
}

/// The proxy, configured as `mirage serve --listen 127.0.0.1:0 {flags}` would be and then adjusted by `tweak`
/// (for what no flag can express, such as a fake DNS).
pub struct TweakedProxy {
    pub addr: SocketAddr,
    shutdown_tx: Option<oneshot::Sender<()>>,
    join: JoinHandle<Result<(), String>>,
}

impl TweakedProxy {
    pub async fn start(flags: &[&str], tweak: impl FnOnce(&mut mirage::config::Config)) -> TweakedProxy {
        let mut argv = vec!["serve", "--listen", "127.0.0.1:0", "--no-disk-cache"];
        argv.extend_from_slice(flags);
        let args = mirage::config::ServeArgs::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        let mut config = args.into_config().unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let join = tokio::spawn(mirage::server::serve(listener, config, async {
            let _ = shutdown_rx.await;
        }));
        TweakedProxy { addr, shutdown_tx: Some(shutdown_tx), join }
    }

    /// `http://PROXY/?{target}`.
    pub fn url(&self, target: &str) -> String {
        format!("http://{}/?{target}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        let join = &mut self.join;
        tokio::time::timeout(Duration::from_secs(15), join).await.expect("proxy stops").expect("no panic").unwrap();
    }
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
            Ok(Ok(0)) | Ok(Err(_)) => break true,
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

/// CRC-32 (IEEE), for hand-made PNG chunks.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// One PNG chunk: length, type, data, CRC.
pub fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    let mut crc_input = kind.to_vec();
    crc_input.extend_from_slice(data);
    chunk.extend_from_slice(&crc32(&crc_input).to_be_bytes());
    chunk
}
