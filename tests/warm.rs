//! `mirage warm`, black-box: the real binary against a loopback upstream that counts requests per path and
//! tracks how many are in flight per host, in both modes (the disk cache directly, and a running server), with
//! a following `serve` checking that every entry is there.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Proxy, client, entry_files, photo};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

// ---------------------------------------------------------------------------------------------------------------
// A scripted upstream: per-path answer sequences, hit counters, in-flight tracking per host
// ---------------------------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Canned {
    status: u16,
    content_type: &'static str,
    body: Bytes,
    delay: Duration,
}

fn image() -> Canned {
    Canned { status: 200, content_type: "image/jpeg", body: photo(), delay: Duration::ZERO }
}

fn status(status: u16) -> Canned {
    Canned { status, content_type: "text/plain", body: Bytes::from_static(b"nope\n"), delay: Duration::ZERO }
}

fn html() -> Canned {
    Canned {
        status: 200,
        content_type: "text/html",
        body: Bytes::from_static(b"<!doctype html><p>hi"),
        delay: Duration::ZERO,
    }
}

impl Canned {
    fn delay(mut self, delay: Duration) -> Canned {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct State {
    /// Answers per path, in order; the last one repeats.
    routes: Mutex<HashMap<String, Vec<Canned>>>,
    hits: Mutex<HashMap<String, usize>>,
    /// Per host (listener IP): (in flight now, most ever in flight).
    in_flight: Mutex<HashMap<String, (usize, usize)>>,
    /// All hosts together.
    in_flight_total: Mutex<(usize, usize)>,
}

struct Origin {
    state: Arc<State>,
    addrs: Vec<SocketAddr>,
}

impl Origin {
    /// One origin listening on each of `ips` (ephemeral ports), sharing routes and counters.
    async fn start(ips: &[&str]) -> Origin {
        let state = Arc::new(State::default());
        let mut addrs = Vec::new();
        for ip in ips {
            let listener = TcpListener::bind(format!("{ip}:0")).await.expect("bind origin");
            let addr = listener.local_addr().expect("local addr");
            addrs.push(addr);
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let state = Arc::clone(&state);
                    tokio::spawn(async move {
                        let host = addr.ip().to_string();
                        let service = service_fn(move |request| answer(Arc::clone(&state), host.clone(), request));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        }
        Origin { state, addrs }
    }

    fn route(&self, path: &str, answers: Vec<Canned>) {
        self.state.routes.lock().unwrap().insert(path.to_owned(), answers);
    }

    /// `http://IP:PORT{path}` on the `host`th listener.
    fn url_on(&self, host: usize, path: &str) -> String {
        format!("http://{}{path}", self.addrs[host])
    }

    fn url(&self, path: &str) -> String {
        self.url_on(0, path)
    }

    fn hits(&self, path: &str) -> usize {
        self.state.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn total_hits(&self) -> usize {
        self.state.hits.lock().unwrap().values().sum()
    }

    fn max_in_flight(&self, host: usize) -> usize {
        let host = self.addrs[host].ip().to_string();
        self.state.in_flight.lock().unwrap().get(&host).map_or(0, |(_, max)| *max)
    }

    fn max_in_flight_total(&self) -> usize {
        self.state.in_flight_total.lock().unwrap().1
    }
}

async fn answer(
    state: Arc<State>,
    host: String,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let seen = {
        let mut hits = state.hits.lock().unwrap();
        let count = hits.entry(path.clone()).or_default();
        *count += 1;
        *count
    };
    let canned = {
        let routes = state.routes.lock().unwrap();
        routes.get(&path).and_then(|answers| answers.get(seen - 1).or(answers.last()).cloned())
    }
    .unwrap_or_else(|| status(404));
    {
        let mut in_flight = state.in_flight.lock().unwrap();
        let (now, max) = in_flight.entry(host.clone()).or_default();
        *now += 1;
        *max = (*max).max(*now);
        let mut total = state.in_flight_total.lock().unwrap();
        total.0 += 1;
        total.1 = total.1.max(total.0);
    }
    tokio::time::sleep(canned.delay).await;
    {
        let mut in_flight = state.in_flight.lock().unwrap();
        if let Some((now, _)) = in_flight.get_mut(&host) {
            *now -= 1;
        }
        state.in_flight_total.lock().unwrap().0 -= 1;
    }
    let mut response = Response::new(Full::new(canned.body));
    *response.status_mut() = StatusCode::from_u16(canned.status).unwrap();
    response.headers_mut().insert("content-type", canned.content_type.parse().unwrap());
    Ok(response)
}

// ---------------------------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------------------------

fn mirage() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mirage"));
    for name in ["RUST_LOG", "MIRAGE_CACHE_DIR", "MIRAGE_NO_DISK_CACHE", "MIRAGE_ALLOW_PRIVATE_NETWORKS"] {
        command.env_remove(name);
    }
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// A list file with one URL per line.
fn list(dir: &Path, name: &str, urls: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, urls.join("\n") + "\n").unwrap();
    path
}

/// What a finished run printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// A number of the text report, by its label (`warmed`, `already cached`, ...).
    fn count(&self, label: &str) -> u64 {
        let prefix = format!("{label}:");
        let line = self.stdout.lines().map(str::trim).find(|line| line.starts_with(&prefix));
        let value = line.and_then(|line| line[prefix.len()..].split_whitespace().next());
        value.and_then(|value| value.parse().ok()).unwrap_or_else(|| panic!("no {label:?} in:\n{}", self.stdout))
    }
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Waits (at most 30 s, then kills it) for `child` to end, without blocking the runtime.
async fn finish(mut child: Child) -> Run {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("mirage warm did not finish within 30 s; stderr:\n{}", String::from_utf8_lossy(&output.stderr));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.wait_with_output().unwrap().into()
}

/// `mirage warm ARGS...`, to the end.
async fn warm(args: &[&str]) -> Run {
    finish(mirage().arg("warm").args(args).spawn().unwrap()).await
}

/// `mirage warm INPUT --cache-dir DIR --allow-private-networks ARGS...`.
async fn warm_dir(input: &Path, cache: &Path, args: &[&str]) -> Run {
    let mut all = vec![input.to_str().unwrap(), "--cache-dir", cache.to_str().unwrap(), "--allow-private-networks"];
    all.extend_from_slice(args);
    warm(&all).await
}

async fn x_cache(client: &reqwest::Client, url: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut request = client.get(url);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let reply = common::send(request).await;
    (reply.status, reply.x_cache().to_owned(), reply.header("content-type").to_owned())
}

// ---------------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_dir_mode_stores_every_variant_for_a_following_serve() {
    let origin = Origin::start(&["127.0.0.1"]).await;
    let paths = ["/a.jpg", "/b.jpg", "/c.jpg"];
    for path in paths {
        origin.route(path, vec![image()]);
    }
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let urls: Vec<String> = paths.iter().map(|path| origin.url(path)).collect();
    let input = list(work.path(), "images.txt", &urls);
    let report = work.path().join("report.json");

    let run = warm_dir(
        &input,
        &cache,
        &["--variant", "width=100", "--variant", "width=50,format=webp", "--report", report.to_str().unwrap()],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!((run.count("urls"), run.count("jobs"), run.count("warmed")), (3, 9, 9), "{}", run.stdout);
    assert_eq!((run.count("already cached"), run.count("failed")), (0, 0));
    assert!(run.count("bytes fetched") > photo().len() as u64 * 3, "{}", run.stdout);
    // Only the originals went upstream: the variants were made from the cached copies.
    assert_eq!(origin.total_hits(), 3);
    assert_eq!(entry_files(&cache).len(), 9);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!((json["warmed"].as_u64(), json["jobs"].as_u64(), json["failed"].as_u64()), (Some(9), Some(9), Some(0)));
    assert_eq!(json["interrupted"], serde_json::Value::Bool(false));

    // A server started on the same directory answers every entry from disk, without contacting upstream.
    let proxy = Proxy::local(&cache, &[]).await;
    let client = client();
    for url in &urls {
        for route in ["/", "/width=100/", "/w=50,f=webp/"] {
            let (status, x_cache, _) = x_cache(&client, &proxy.path(&format!("{route}?{url}")), None).await;
            assert_eq!((status, x_cache.as_str()), (200, "HIT-DISK"), "{route}?{url}");
        }
    }
    assert_eq!(origin.total_hits(), 3, "serve went upstream");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_fetches_nothing() {
    let origin = Origin::start(&["127.0.0.1"]).await;
    let paths = ["/one.jpg", "/two.jpg"];
    for path in paths {
        origin.route(path, vec![image()]);
    }
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let input = list(work.path(), "list.txt", &paths.map(|path| origin.url(path)));

    let first = warm_dir(&input, &cache, &["--variant", "w=64"]).await;
    assert_eq!((first.code, first.count("warmed")), (Some(0), 4), "{}", first.stdout);
    assert_eq!(origin.total_hits(), 2);

    let second = warm_dir(&input, &cache, &["--variant", "w=64"]).await;
    assert_eq!(second.code, Some(0), "{}\n{}", second.stdout, second.stderr);
    assert_eq!((second.count("warmed"), second.count("already cached")), (0, 4), "{}", second.stdout);
    assert_eq!(second.count("bytes fetched"), 0);
    assert_eq!(origin.total_hits(), 2, "the second run went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_format_variants_are_warmed_once_per_negotiated_class() {
    let origin = Origin::start(&["127.0.0.1"]).await;
    origin.route("/auto.jpg", vec![image()]);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let url = origin.url("/auto.jpg");
    let input = list(work.path(), "list.txt", std::slice::from_ref(&url));

    let run = warm_dir(&input, &cache, &["--variant", "width=80,format=auto"]).await;
    // The original, then AVIF, WebP and JPEG.
    assert_eq!((run.code, run.count("jobs"), run.count("warmed")), (Some(0), 4, 4), "{}", run.stdout);

    let proxy = Proxy::local(&cache, &[]).await;
    let client = client();
    let auto = proxy.path(&format!("/w=80,f=auto/?{url}"));
    let avif = x_cache(&client, &auto, Some("image/avif,image/webp,*/*")).await;
    assert_eq!(avif, (200, "HIT-DISK".to_owned(), "image/avif".to_owned()));
    let webp = x_cache(&client, &auto, Some("image/webp,*/*")).await;
    assert_eq!(webp, (200, "HIT-DISK".to_owned(), "image/webp".to_owned()));
    let basic = x_cache(&client, &auto, Some("image/*")).await;
    assert_eq!(basic, (200, "HIT-DISK".to_owned(), "image/jpeg".to_owned()));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_mode_warms_a_running_server() {
    let origin = Origin::start(&["127.0.0.1"]).await;
    let paths = ["/s1.jpg", "/s2.jpg"];
    for path in paths {
        origin.route(path, vec![image()]);
    }
    origin.route("/gone.jpg", vec![status(404)]);
    let work = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(&work.path().join("cache"), &[]).await;
    let server = format!("http://{}", proxy.addr);
    let urls: Vec<String> = paths.iter().map(|path| origin.url(path)).collect();
    let input = list(work.path(), "list.txt", &urls);
    let args = [input.to_str().unwrap(), "--server", &server, "--variant", "width=120", "--variant", "w=60,f=auto"];

    let run = warm(&args).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    // Per URL: the original, width=120, and w=60 as AVIF, WebP and JPEG.
    assert_eq!((run.count("jobs"), run.count("warmed"), run.count("already cached")), (10, 10, 0), "{}", run.stdout);
    assert_eq!(origin.total_hits(), 2);
    let client = client();
    for url in &urls {
        for (route, accept) in [("/", None), ("/width=120/", None), ("/w=60,f=auto/", Some("image/webp"))] {
            let (status, x_cache, _) = x_cache(&client, &proxy.path(&format!("{route}?{url}")), accept).await;
            assert_eq!((status, x_cache.as_str()), (200, "HIT-MEMORY"), "{route}?{url}");
        }
    }

    let again = warm(&args).await;
    assert_eq!(
        (again.code, again.count("warmed"), again.count("already cached")),
        (Some(0), 0, 10),
        "{}",
        again.stdout
    );
    assert_eq!(origin.total_hits(), 2);

    // Failures are named after the server's status.
    let bad = list(work.path(), "bad.txt", &[origin.url("/gone.jpg")]);
    let failed = warm(&[bad.to_str().unwrap(), "--server", &server]).await;
    assert_eq!((failed.code, failed.count("failed")), (Some(1), 1), "{}", failed.stdout);
    assert!(failed.stdout.contains("upstream_not_found: 1 job"), "{}", failed.stdout);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_grouped_by_reason_with_their_urls() {
    let origin = Origin::start(&["127.0.0.1"]).await;
    origin.route("/ok.jpg", vec![image()]);
    origin.route("/page.html", vec![html()]);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let missing = origin.url("/missing.jpg");
    let page = origin.url("/page.html");
    let input = list(work.path(), "list.txt", &[origin.url("/ok.jpg"), missing.clone(), page.clone()]);
    let report = work.path().join("report.json");

    let run = warm_dir(&input, &cache, &["--variant", "w=90", "--report", report.to_str().unwrap()]).await;
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    // A failed original fails its variants too, without trying them.
    assert_eq!((run.count("warmed"), run.count("failed")), (2, 4), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("upstream_not_found: 2 jobs\n    {missing}\n")), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("not_an_image: 2 jobs\n    {page}\n")), "{}", run.stdout);
    assert_eq!((origin.hits("/missing.jpg"), origin.hits("/page.html")), (1, 1), "4xx are not retried");

    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["failed"].as_u64(), Some(4));
    assert_eq!(json["failures"]["upstream_not_found"]["urls"], serde_json::json!([missing]));
    assert_eq!(json["failures"]["not_an_image"]["urls"], serde_json::json!([page]));
    assert_eq!(json["failures"]["not_an_image"]["jobs"].as_u64(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_backoff_and_client_errors_are_not() {
    let origin = Origin::start(&["127.0.0.1"]).await;
    let flaky = || vec![status(500), status(500), image()];
    origin.route("/flaky.jpg", flaky());
    origin.route("/flaky-once.jpg", flaky());
    let work = tempfile::tempdir().unwrap();

    let input = list(work.path(), "a.txt", &[origin.url("/flaky.jpg")]);
    let started = Instant::now();
    let run = warm_dir(&input, &work.path().join("c1"), &[]).await;
    assert_eq!((run.code, run.count("warmed")), (Some(0), 1), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(origin.hits("/flaky.jpg"), 3);
    assert!(started.elapsed() >= Duration::from_millis(600), "no backoff: {:?}", started.elapsed());

    let input = list(work.path(), "b.txt", &[origin.url("/flaky-once.jpg")]);
    let run = warm_dir(&input, &work.path().join("c2"), &["--retries", "0"]).await;
    assert_eq!((run.code, run.count("failed")), (Some(1), 1), "{}", run.stdout);
    assert!(run.stdout.contains("upstream_status: 1 job"), "{}", run.stdout);
    assert_eq!(origin.hits("/flaky-once.jpg"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_host_limit_is_reached_but_never_exceeded() {
    let origin = Origin::start(&["127.0.0.1", "127.0.0.2"]).await;
    let slow = || vec![image().delay(Duration::from_millis(100))];
    let mut one_host = Vec::new();
    let mut two_hosts = Vec::new();
    for index in 0..20 {
        let path = format!("/one/{index}.jpg");
        origin.route(&path, slow());
        one_host.push(origin.url(&path));
        let path = format!("/two/{index}.jpg");
        origin.route(&path, slow());
        two_hosts.push(origin.url_on(index % 2, &path));
    }
    let work = tempfile::tempdir().unwrap();
    let limits = ["--concurrency", "16", "--per-host", "2"];

    let run = warm_dir(&list(work.path(), "one.txt", &one_host), &work.path().join("c1"), &limits).await;
    assert_eq!((run.code, run.count("warmed")), (Some(0), 20), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(origin.max_in_flight(0), 2, "one host: the limit must be reached and never exceeded");

    let run = warm_dir(&list(work.path(), "two.txt", &two_hosts), &work.path().join("c2"), &limits).await;
    assert_eq!((run.code, run.count("warmed")), (Some(0), 20), "{}\n{}", run.stdout, run.stderr);
    assert_eq!((origin.max_in_flight(0), origin.max_in_flight(1)), (2, 2));
    assert!(origin.max_in_flight_total() > 2, "two hosts are warmed side by side");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_usage_exits_2() {
    let work = tempfile::tempdir().unwrap();
    let input = list(work.path(), "list.txt", &["http://127.0.0.1:9/a.jpg".to_owned()]);
    let input = input.to_str().unwrap();
    let cache = work.path().join("cache");
    let cache = cache.to_str().unwrap();
    let cases: [&[&str]; 5] = [
        &[input, "--cache-dir", cache, "--variant", "width=abc"],
        &[input, "--cache-dir", cache, "--server", "http://127.0.0.1:9"],
        &[input, "--cache-dir", cache, "--concurrency", "0"],
        &["/nonexistent/list.txt", "--cache-dir", cache],
        &[input, "--cache-dir", cache, "--no-disk-cache"],
    ];
    for args in cases {
        let run = warm(args).await;
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(!run.stderr.is_empty(), "{args:?}: no message");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_prints_only_the_report_and_a_pipe_gets_plain_lines() {
    let origin = Origin::start(&["127.0.0.1"]).await;
    origin.route("/q.jpg", vec![image()]);
    let work = tempfile::tempdir().unwrap();
    let input = list(work.path(), "list.txt", &[origin.url("/q.jpg")]);

    let quiet = warm_dir(&input, &work.path().join("c1"), &["--quiet"]).await;
    assert_eq!(quiet.code, Some(0));
    assert_eq!(quiet.stderr, "", "--quiet wrote to stderr");
    assert!(quiet.stdout.starts_with("mirage warm: done"), "{}", quiet.stdout);

    let plain = warm_dir(&input, &work.path().join("c2"), &[]).await;
    assert_eq!(plain.code, Some(0));
    assert!(!plain.stderr.contains('\x1b'), "escape sequences on a pipe: {:?}", plain.stderr);
    assert!(plain.stderr.contains("mirage warm: 1/1 jobs (warmed 1, cached 0, failed 0)"), "{}", plain.stderr);
    assert!(!plain.stdout.contains('\x1b'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_cleanly_keeps_what_was_warmed_and_reports() {
    let origin = Origin::start(&["127.0.0.1"]).await;
    let mut urls = Vec::new();
    for index in 0..12 {
        let path = format!("/slow/{index}.jpg");
        origin.route(&path, vec![image().delay(Duration::from_millis(400))]);
        urls.push(origin.url(&path));
    }
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let input = list(work.path(), "list.txt", &urls);
    let child = mirage()
        .args(["warm", input.to_str().unwrap(), "--cache-dir", cache.to_str().unwrap(), "--allow-private-networks"])
        .args(["--concurrency", "2", "--per-host", "2"])
        .spawn()
        .unwrap();
    // Two done, two more in flight.
    let reached = common::wait_until(Duration::from_secs(10), || origin.total_hits() >= 4).await;
    assert!(reached, "the warm run never got going");
    let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let run = finish(child).await;

    assert_eq!(run.code, Some(130), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("INTERRUPTED"), "{}", run.stdout);
    let warmed = run.count("warmed");
    assert!(warmed >= 4, "in-flight entries were not let finish: {}", run.stdout);
    assert_eq!(run.count("failed"), 0, "{}", run.stdout);
    assert!(run.count("not started") > 0, "{}", run.stdout);
    assert_eq!(warmed + run.count("not started"), 12);
    assert!(origin.total_hits() < 12, "new jobs were started after SIGINT");
    assert_eq!(entry_files(&cache).len() as u64, warmed, "what was warmed is on disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cache_dir_the_default_cache_of_serve_is_warmed() {
    let origin = Origin::start(&["127.0.0.1"]).await;
    origin.route("/d.jpg", vec![image()]);
    let work = tempfile::tempdir().unwrap();
    let input = list(work.path(), "list.txt", &[origin.url("/d.jpg")]);
    let xdg = work.path().join("xdg");
    let child = mirage()
        .env("XDG_CACHE_HOME", &xdg)
        .args(["warm", input.to_str().unwrap(), "--allow-private-networks", "--quiet"])
        .spawn()
        .unwrap();
    let run = finish(child).await;
    assert_eq!((run.code, run.count("warmed")), (Some(0), 1), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(entry_files(&xdg.join("mirage")).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_that_do_not_stay_on_disk_are_reported_not_stored() {
    let origin = Origin::start(&["127.0.0.1"]).await;
    let paths = ["/e1.jpg", "/e2.jpg", "/e3.jpg"];
    for path in paths {
        origin.route(path, vec![image()]);
    }
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let input = list(work.path(), "list.txt", &paths.map(|path| origin.url(path)));

    // Room for one photo only (its blocks, its two shard directories and the cache's fixed overhead): the LRU
    // evicts what was just written.
    let run = warm_dir(&input, &cache, &["--disk-cache-size", "80KiB", "--concurrency", "1"]).await;
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert_eq!((run.count("warmed"), run.count("failed")), (1, 2), "{}", run.stdout);
    assert!(run.stdout.contains("not_stored: 2 jobs"), "{}", run.stdout);
    assert_eq!(entry_files(&cache).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_through_the_server_itself_are_recognised_as_a_proxy_prefix() {
    let origin = Origin::start(&["127.0.0.1"]).await;
    origin.route("/migrated.jpg", vec![image()]);
    let work = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(&work.path().join("cache"), &[]).await;
    let server = format!("http://{}", proxy.addr);
    // An article already migrated to this server: its images link through `{server}/?{target}`.
    let article = work.path().join("post.md");
    std::fs::write(&article, format!("# Post\n\n![photo]({server}/?{})\n", origin.url("/migrated.jpg"))).unwrap();

    let run = warm(&[article.to_str().unwrap(), "--server", &server]).await;
    assert_eq!((run.code, run.count("warmed")), (Some(0), 1), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(origin.total_hits(), 1);
    let (status, direct, _) =
        x_cache(&client(), &proxy.path(&format!("/?{}", origin.url("/migrated.jpg"))), None).await;
    assert_eq!((status, direct.as_str()), (200, "HIT-MEMORY"));
    // Had the prefix not been stripped, the server would have been asked for itself, and cached that too.
    let through_itself = proxy.path(&format!("/?{server}/?{}", origin.url("/migrated.jpg")));
    let (_, inner, _) = x_cache(&client(), &through_itself, None).await;
    assert_eq!(inner, "MISS");
    proxy.stop().await;
}
