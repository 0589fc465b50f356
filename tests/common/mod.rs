//! Shared harness of the black-box tests: a scriptable loopback upstream with hit counters and switchable
//! faults, the real proxy (a `mirage serve` process, or in-process where a test needs a fake clock or DNS) on
//! `127.0.0.1:0`, and a plain HTTP client; `raw` has the
//! byte-level origin and client for misbehaviour hyper will not produce.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

pub mod avif;
pub mod raw;
pub mod s3;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// A JPEG from tests/fixtures.
pub fn fixture(name: &str) -> Bytes {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

/// The 500x355 photo of the seed article (42 342 bytes).
pub fn photo() -> Bytes {
    fixture("photo-500x355.jpg")
}

/// One PNG chunk: length, type, data and CRC, so tests can forge headers (bombs, odd chunks) byte by byte.
pub fn png_chunk(kind: [u8; 4], data: &[u8]) -> Vec<u8> {
    let length = u32::try_from(data.len()).expect("small chunk").to_be_bytes();
    let crc = crc32(&[&kind[..], data].concat()).to_be_bytes();
    [&length[..], &kind, data, &crc].concat()
}

/// CRC-32 (IEEE, reflected, as PNG uses), bit by bit: only a few bytes go through it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFF_u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

// ---------------------------------------------------------------------------------------------------------------
// Upstream
// ---------------------------------------------------------------------------------------------------------------

/// How a route delivers its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Headers with Content-Length, then the whole body.
    Full,
    /// No Content-Length: the body goes out in chunks (Transfer-Encoding: chunked).
    Chunked,
    /// Never sends headers.
    HangBeforeHeaders,
    /// Sends headers announcing twice the body, half of the body, then nothing more.
    HangBody,
    /// Closes the connection without an answer.
    Drop,
}

/// A canned upstream answer.
#[derive(Clone, Debug)]
pub struct Route {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub delay: Duration,
    pub mode: Mode,
}

impl Route {
    /// 200 image/jpeg with `body`.
    pub fn image(body: Bytes) -> Route {
        Route::status(200).header("content-type", "image/jpeg").body(body)
    }

    /// An empty answer with `status`.
    pub fn status(status: u16) -> Route {
        Route { status, headers: Vec::new(), body: Bytes::new(), delay: Duration::ZERO, mode: Mode::Full }
    }

    /// A 302 to `location`.
    pub fn redirect(location: &str) -> Route {
        Route::status(302).header("location", location)
    }

    pub fn header(mut self, name: &str, value: &str) -> Route {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Route {
        self.body = body.into();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Route {
        self.delay = delay;
        self
    }

    pub fn mode(mut self, mode: Mode) -> Route {
        self.mode = mode;
        self
    }

    fn etag(&self) -> Option<&str> {
        self.headers.iter().find(|(name, _)| name.eq_ignore_ascii_case("etag")).map(|(_, value)| value.as_str())
    }
}

/// One request as upstream received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path_and_query: String,
    pub headers: HeaderMap,
}

#[derive(Default)]
struct UpstreamState {
    routes: Mutex<HashMap<String, Route>>,
    hits: Mutex<HashMap<String, usize>>,
    not_modified: Mutex<HashMap<String, usize>>,
    seen: Mutex<Vec<Seen>>,
    connections: AtomicUsize,
}

type UpBody = BoxBody<Bytes, Infallible>;

impl UpstreamState {
    async fn answer(&self, request: Request<Incoming>) -> Result<Response<UpBody>, std::io::Error> {
        let path = request.uri().path().to_owned();
        let path_and_query = request.uri().path_and_query().map_or(path.clone(), |pq| pq.as_str().to_owned());
        self.seen.lock().unwrap().push(Seen { path_and_query, headers: request.headers().clone() });
        *self.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
        let route = self.routes.lock().unwrap().get(&path).cloned();
        let route = route.unwrap_or_else(|| {
            Route::status(404).header("content-type", "text/plain").body(Bytes::from_static(b"no such route\n"))
        });
        if !route.delay.is_zero() {
            tokio::time::sleep(route.delay).await;
        }
        match route.mode {
            Mode::HangBeforeHeaders => std::future::pending::<()>().await,
            Mode::Drop => return Err(std::io::Error::other("dropping the connection on purpose")),
            Mode::Full | Mode::Chunked | Mode::HangBody => {}
        }
        let if_none_match = request.headers().get("if-none-match").and_then(|v| v.to_str().ok());
        let matches = match (route.etag(), if_none_match) {
            (Some(etag), Some(wanted)) => wanted.split(',').any(|tag| tag.trim() == etag),
            _ => false,
        };
        if matches {
            *self.not_modified.lock().unwrap().entry(path).or_default() += 1;
            let mut response = Response::new(Full::new(Bytes::new()).boxed());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            for (name, value) in &route.headers {
                if !name.eq_ignore_ascii_case("content-type") && !name.eq_ignore_ascii_case("content-length") {
                    response
                        .headers_mut()
                        .append(name.parse::<hyper::header::HeaderName>().unwrap(), value.parse().unwrap());
                }
            }
            return Ok(response);
        }
        let body: UpBody = match route.mode {
            Mode::Full => Full::new(route.body.clone()).boxed(),
            Mode::Chunked => {
                let chunks: Vec<Result<Frame<Bytes>, Infallible>> =
                    route.body.chunks(4096).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
                StreamBody::new(futures_util::stream::iter(chunks)).boxed()
            }
            Mode::HangBody => {
                let half = route.body.slice(..route.body.len() / 2);
                let first = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(half))]);
                let stream = futures_util::StreamExt::chain(first, futures_util::stream::pending());
                StreamBody::new(stream).boxed()
            }
            Mode::HangBeforeHeaders | Mode::Drop => unreachable!(),
        };
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::from_u16(route.status).unwrap();
        for (name, value) in &route.headers {
            response.headers_mut().append(name.parse::<hyper::header::HeaderName>().unwrap(), value.parse().unwrap());
        }
        if route.mode == Mode::HangBody {
            response.headers_mut().insert("content-length", (route.body.len() * 2).into());
        }
        Ok(response)
    }
}

/// A loopback HTTP/1 origin serving canned routes, counting what it receives.
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
    stop_tx: watch::Sender<bool>,
    accept_loop: Mutex<Option<JoinHandle<()>>>,
}

impl Upstream {
    /// An upstream on 127.0.0.1 with an ephemeral port.
    pub async fn start() -> Upstream {
        Upstream::start_on("127.0.0.1:0").await
    }

    /// An upstream on `bind` (e.g. `127.0.0.2:0`).
    pub async fn start_on(bind: &str) -> Upstream {
        let listener = TcpListener::bind(bind).await.expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpstreamState::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let loop_state = state.clone();
        let accept_loop = tokio::spawn(async move {
            let mut stop = stop_rx.clone();
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok((stream, _)) => stream, Err(_) => continue },
                    _ = stop.wait_for(|stopped| *stopped) => break,
                };
                loop_state.connections.fetch_add(1, Ordering::SeqCst);
                let state = loop_state.clone();
                let mut conn_stop = stop_rx.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { state.answer(request).await }
                    });
                    let connection =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = connection => {}
                        _ = conn_stop.wait_for(|stopped| *stopped) => {}
                    }
                });
            }
        });
        Upstream { addr, state, stop_tx, accept_loop: Mutex::new(Some(accept_loop)) }
    }

    /// Installs (or replaces, at runtime) the answer for `path`.
    pub fn route(&self, path: &str, route: Route) {
        self.state.routes.lock().unwrap().insert(path.to_owned(), route);
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests received for `path` (any query), including conditional ones.
    pub fn hits(&self, path: &str) -> usize {
        self.state.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Requests for `path` answered 304 thanks to `If-None-Match`.
    pub fn not_modified(&self, path: &str) -> usize {
        self.state.not_modified.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Requests for `path` answered with a full body (hits minus 304s).
    pub fn full_hits(&self, path: &str) -> usize {
        self.hits(path) - self.not_modified(path)
    }

    /// All requests received, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The path and query of every request received, in order.
    pub fn seen_paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|seen| seen.path_and_query).collect()
    }

    /// Requests received in total.
    pub fn total_hits(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Closes the listener and every open connection: afterwards connecting is refused.
    pub async fn stop(&self) {
        let _ = self.stop_tx.send(true);
        let accept_loop = self.accept_loop.lock().unwrap().take();
        if let Some(accept_loop) = accept_loop {
            let _ = accept_loop.await;
        }
    }

    /// Waits (at most 5 s) until `path` has received `count` requests.
    pub async fn wait_for_hits(&self, path: &str, count: usize) {
        let reached = wait_until(Duration::from_secs(5), || self.hits(path) >= count).await;
        assert!(reached, "upstream never received {count} request(s) for {path} (got {})", self.hits(path));
    }
}

/// GETs `url` until `done` holds for the answer (every 20 ms, at most 50 times); returns the last answer. For what a
/// background task (a retry, a revalidation) changes just after upstream has seen it.
pub async fn get_until(client: &reqwest::Client, url: &str, done: impl Fn(&Reply) -> bool) -> Reply {
    let mut reply = get(client, url).await;
    for _ in 0..50 {
        if done(&reply) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        reply = get(client, url).await;
    }
    reply
}

/// Polls `condition` every 20 ms until it holds or `limit` passes; returns whether it held.
pub async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An address where nothing listens (bound, then released).
pub async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// Proxy
// ---------------------------------------------------------------------------------------------------------------

/// The real Mirage server on 127.0.0.1 with an ephemeral port: a `mirage serve` child process (`start`, `local`),
/// or, for a configuration no flag can express (a manual clock, a fake DNS: `start_with`, `local_with`), the same
/// server in-process.
pub struct Proxy {
    pub addr: SocketAddr,
    /// The admin listener's address, when the process was started with `--admin-listen` (child processes only).
    pub admin_addr: Option<SocketAddr>,
    running: Running,
}

enum Running {
    /// A `mirage serve` process, killed if the test ends without `stop`.
    Child {
        child: Option<std::process::Child>,
        log: Arc<Mutex<String>>,
    },
    InProcess {
        shutdown_tx: oneshot::Sender<()>,
        join: JoinHandle<Result<(), String>>,
    },
}

impl Proxy {
    /// Starts `mirage serve --listen 127.0.0.1:0 {flags}`, a real process of the binary under test, and waits
    /// until it listens. Its log (JSON lines at `info`, unless the flags say otherwise) is kept for `log`.
    pub async fn start(flags: &[&str]) -> Proxy {
        let flags: Vec<String> = flags.iter().map(|flag| (*flag).to_owned()).collect();
        tokio::task::spawn_blocking(move || Proxy::spawn(&flags, &[])).await.unwrap()
    }

    fn spawn(flags: &[String], envs: &[(String, String)]) -> Proxy {
        use std::io::BufRead;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mirage"));
        // Only what the test says configures the process: not the developer's MIRAGE_* settings, nor their AWS_*
        // ones (a profile or a real endpoint must never meet a test's shared cache).
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if name_text.starts_with("MIRAGE_") || name_text.starts_with("AWS_") {
                command.env_remove(name);
            }
        }
        command.envs(envs.iter().map(|(name, value)| (name, value)));
        command.args(["serve", "--listen", "127.0.0.1:0"]).args(flags);
        if !flags.iter().any(|flag| flag.starts_with("--log-format")) {
            command.args(["--log-format", "json"]);
        }
        command.env("RUST_LOG", "info").stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
        let mut child = command.stderr(std::process::Stdio::piped()).spawn().expect("spawn mirage serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        // Drains stderr for the whole run (a full pipe would block the server) and reports the bound address.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = listening_address(&line) {
                    let _ = addr_tx.send(addr);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut proxy = Proxy {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: None,
            running: Running::Child { child: Some(child), log },
        };
        match addr_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => {
                proxy.addr = addr;
                // The admin listener is bound and logged before the public one, so its line is in the log now.
                proxy.admin_addr = proxy.log().lines().find_map(|line| logged_address(line, "admin listening"));
            }
            Err(_) => {
                let Running::Child { child, log } = &mut proxy.running else { unreachable!() };
                let status = child.as_mut().unwrap().try_wait().unwrap();
                panic!(
                    "mirage serve {flags:?} did not listen within 20 s (exit: {status:?}):\n{}",
                    log.lock().unwrap()
                );
            }
        }
        proxy
    }

    /// Starts the server in-process, configured exactly as `mirage serve --listen 127.0.0.1:0 {flags}` would be,
    /// then lets `tweak` adjust the configuration before serving: for what no flag can express, such as a fake
    /// DNS (`config.pipeline.fetch.name_lookup`) or a manual clock.
    pub async fn start_with(flags: &[&str], tweak: impl FnOnce(&mut mirage::config::Config)) -> Proxy {
        let mut argv = vec!["serve", "--listen", "127.0.0.1:0"];
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
        Proxy { addr, admin_addr: None, running: Running::InProcess { shutdown_tx, join } }
    }

    /// The `mirage serve` process with a disk cache in `dir`, allowed to reach loopback upstreams, plus `flags`.
    pub async fn local(dir: &Path, flags: &[&str]) -> Proxy {
        Proxy::local_env(dir, flags, &[]).await
    }

    /// `local` with `envs` added to the process's environment (e.g. the `AWS_*` settings of a shared cache).
    pub async fn local_env(dir: &Path, flags: &[&str], envs: &[(String, String)]) -> Proxy {
        let flags = local_flags(dir, flags);
        let envs = envs.to_vec();
        tokio::task::spawn_blocking(move || Proxy::spawn(&flags, &envs)).await.unwrap()
    }

    /// `local` in-process, with the configuration adjusted by `tweak` as in `start_with`.
    pub async fn local_with(dir: &Path, flags: &[&str], tweak: impl FnOnce(&mut mirage::config::Config)) -> Proxy {
        let all = local_flags(dir, flags);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        Proxy::start_with(&all, tweak).await
    }

    /// `http://PROXY/?{target}`.
    pub fn url(&self, target: &str) -> String {
        format!("http://{}/?{target}", self.addr)
    }

    /// `http://PROXY{path}`.
    pub fn path(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://ADMIN{path}`; panics when the proxy has no admin listener.
    pub fn admin(&self, path: &str) -> String {
        let admin = self.admin_addr.expect("started with --admin-listen (as a process)");
        format!("http://{admin}{path}")
    }

    /// What the `mirage serve` process has logged so far (empty for an in-process server).
    pub fn log(&self) -> String {
        match &self.running {
            Running::Child { log, .. } => log.lock().unwrap().clone(),
            Running::InProcess { .. } => String::new(),
        }
    }

    /// Shuts down gracefully (SIGTERM for a process) and waits until in-flight requests and queued disk writes
    /// are done; the process must exit with success within 15 s. Returns everything the process logged.
    pub async fn stop(mut self) -> String {
        match &mut self.running {
            Running::Child { child, log } => {
                let mut child = child.take().unwrap();
                let log = Arc::clone(log);
                let status = tokio::task::spawn_blocking(move || {
                    let terminated =
                        std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
                    assert!(terminated.is_ok_and(|status| status.success()), "kill -TERM failed");
                    let deadline = Instant::now() + Duration::from_secs(15);
                    loop {
                        if let Some(status) = child.try_wait().unwrap() {
                            return Some(status);
                        }
                        if Instant::now() > deadline {
                            let _ = child.kill();
                            let _ = child.wait();
                            return None;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
                .await
                .unwrap();
                let log = log.lock().unwrap().clone();
                let status =
                    status.unwrap_or_else(|| panic!("mirage serve did not stop within 15 s of SIGTERM:\n{log}"));
                assert!(status.success(), "mirage serve exited with {status}:\n{log}");
                log
            }
            Running::InProcess { .. } => {
                let Running::InProcess { shutdown_tx, join } =
                    std::mem::replace(&mut self.running, Running::Child { child: None, log: Arc::default() })
                else {
                    unreachable!()
                };
                let _ = shutdown_tx.send(());
                let result = tokio::time::timeout(Duration::from_secs(15), join).await;
                result.expect("proxy did not stop within 15 s").expect("proxy task panicked").expect("serve failed");
                String::new()
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Running::Child { child: Some(child), .. } = &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `--cache-dir DIR --allow-private-networks {flags}`.
fn local_flags(dir: &Path, flags: &[&str]) -> Vec<String> {
    let mut all =
        vec!["--cache-dir".to_owned(), dir.to_str().unwrap().to_owned(), "--allow-private-networks".to_owned()];
    all.extend(flags.iter().map(|flag| (*flag).to_owned()));
    all
}

/// The address in the server's JSON "listening" line, if `line` is it.
fn listening_address(line: &str) -> Option<SocketAddr> {
    logged_address(line, "listening")
}

/// The `address` of a JSON log line whose message is `message`.
fn logged_address(line: &str, message: &str) -> Option<SocketAddr> {
    // Events are flattened: their fields sit beside `level` and `target`.
    let fields: serde_json::Value = serde_json::from_str(line).ok()?;
    if fields.get("message")?.as_str()? != message {
        return None;
    }
    fields.get("address")?.as_str()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------------------------

/// A client that talks to the proxy directly (no environment proxies, no redirects followed).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A whole answer, read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The header's value as text; "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// `X-Cache`.
    pub fn x_cache(&self) -> &str {
        self.header("x-cache")
    }
}

/// Sends `request` and reads the whole answer.
pub async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request to the proxy failed");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("reading the proxy's body failed");
    Reply { status, headers, body }
}

/// GET `url`.
pub async fn get(client: &reqwest::Client, url: &str) -> Reply {
    send(client.get(url)).await
}

// ---------------------------------------------------------------------------------------------------------------
// Disk
// ---------------------------------------------------------------------------------------------------------------

/// Every file under `dir`, at any depth.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() { pending.push(path) } else { found.push(path) }
        }
    }
    found.sort();
    found
}

/// Every cache entry file under `dir`: files named by 64 hex characters, at any depth.
pub fn entry_files(dir: &Path) -> Vec<PathBuf> {
    let is_entry = |path: &PathBuf| {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    files_under(dir).into_iter().filter(is_entry).collect()
}

/// Total size of every file under `dir`.
pub fn total_file_bytes(dir: &Path) -> u64 {
    files_under(dir).iter().map(|path| std::fs::metadata(path).map_or(0, |m| m.len())).sum()
}
