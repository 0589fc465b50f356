//! Fetcher tests against in-process loopback servers (127.0.0.1 and 127.0.0.2 only, never the outside world).
//!
//! The upstream is a raw TCP server rather than hyper so tests can misbehave precisely: short bodies, stalls,
//! bodies that never end. It counts accepted connections (not requests), so "never contacted" is really tested.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// One thing the server does while answering.
enum Step {
    /// Write these bytes (counted in `body_bytes_written` after the head).
    Write(Vec<u8>),
    /// Wait before the next step.
    Sleep(Duration),
    /// Keep writing this chunk until the client goes away (or the cap is reached).
    Flood { chunk: Vec<u8>, max_total: usize },
}

/// Decides the reply from the request head (request line plus headers).
type Handler = Arc<dyn Fn(&str) -> Vec<Step> + Send + Sync>;

struct TestServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
    written: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    async fn start(ip: &str, handler: Handler) -> Option<TestServer> {
        let listener = TcpListener::bind((ip.parse::<IpAddr>().ok()?, 0)).await.ok()?;
        let addr = listener.local_addr().ok()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let written = Arc::new(AtomicUsize::new(0));
        let (c, h, w) = (connections.clone(), heads.clone(), written.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_one(stream, handler.clone(), h.clone(), w.clone()));
            }
        });
        Some(TestServer { addr, connections, heads, written, task })
    }

    async fn loopback(handler: impl Fn(&str) -> Vec<Step> + Send + Sync + 'static) -> TestServer {
        TestServer::start("127.0.0.1", Arc::new(handler)).await.expect("bind 127.0.0.1")
    }

    fn url(&self, path: &str) -> Url {
        Url::parse(&format!("http://{}{path}", self.addr)).expect("test url")
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("heads lock").clone()
    }
}

async fn serve_one(
    mut stream: tokio::net::TcpStream,
    handler: Handler,
    heads: Arc<Mutex<Vec<String>>>,
    written: Arc<AtomicUsize>,
) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    heads.lock().expect("heads lock").push(head.clone());
    for step in handler(&head) {
        match step {
            Step::Write(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
                written.fetch_add(bytes.len(), Ordering::SeqCst);
            }
            Step::Sleep(d) => tokio::time::sleep(d).await,
            Step::Flood { chunk, max_total } => {
                let mut sent = 0;
                while sent < max_total {
                    if stream.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += chunk.len();
                    written.fetch_add(chunk.len(), Ordering::SeqCst);
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// The path of the request line.
fn path_of(head: &str) -> &str {
    head.split_whitespace().nth(1).unwrap_or("")
}

/// A response head; `Connection: close` because the server answers one request per connection.
fn head(status: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// A complete response with a Content-Length.
fn full(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<Step> {
    let len = body.len().to_string();
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    all.push(("Content-Length", &len));
    let mut bytes = head(status, &all);
    bytes.extend_from_slice(body);
    vec![Step::Write(bytes)]
}

fn redirect(status: &str, location: &str) -> Vec<Step> {
    full(status, &[("Location", location)], b"")
}

fn config(network: NetworkPolicy) -> FetchConfig {
    FetchConfig {
        user_agent: "mirage-test/1.0".to_owned(),
        connect_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(10),
        max_body_bytes: 1024 * 1024,
        max_redirects: 5,
        network,
        name_lookup: Arc::new(SystemLookup),
        hosts: HostRules::default(),
    }
}

fn open() -> NetworkPolicy {
    NetworkPolicy { allow_private: true, allow_nets: vec![] }
}

fn fetcher(config: FetchConfig) -> Fetcher {
    Fetcher::new(config).expect("fetcher builds")
}

fn body_of(result: Result<Fetched, FetchError>) -> Upstream {
    match result {
        Ok(Fetched::Full(up)) => up,
        other => panic!("expected a full response, got {other:?}"),
    }
}

fn header_in<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn ok_body_is_byte_identical_and_headers_are_captured() {
    let image: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let served = image.clone();
    let server = TestServer::loopback(move |_| {
        full(
            "200 OK",
            &[
                ("Content-Type", "image/png"),
                ("ETag", "\"abc\""),
                ("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
                ("Cache-Control", "public, max-age=60"),
                ("Expires", "Thu, 22 Oct 2015 07:28:00 GMT"),
                ("Date", "Wed, 21 Oct 2015 07:28:00 GMT"),
                ("Age", "12"),
            ],
            &served,
        )
    })
    .await;
    let up = body_of(fetcher(config(open())).fetch(&server.url("/img.png"), None).await);
    assert_eq!(up.body.as_ref(), image.as_slice());
    assert_eq!(up.final_url, server.url("/img.png"));
    assert_eq!(
        up.headers,
        UpstreamHeaders {
            content_type: Some("image/png".into()),
            etag: Some("\"abc\"".into()),
            last_modified: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
            cache_control: Some("public, max-age=60".into()),
            expires: Some("Thu, 22 Oct 2015 07:28:00 GMT".into()),
            date: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
            age: Some("12".into()),
        }
    );
}

#[tokio::test]
async fn sends_user_agent_and_accept_but_no_credentials_or_referer() {
    let server = TestServer::loopback(|h| match path_of(h) {
        "/first" => redirect("302 Found", "/second"),
        _ => full("200 OK", &[("Content-Type", "image/gif")], b"GIF89a"),
    })
    .await;
    // Userinfo in the URL must not turn into an Authorization header.
    let mut url = server.url("/first");
    url.set_username("user").expect("username");
    url.set_password(Some("secret")).expect("password");
    let up = body_of(fetcher(config(open())).fetch(&url, None).await);
    assert_eq!(up.body.as_ref(), b"GIF89a");
    assert_eq!(up.final_url.username(), "");
    let heads = server.heads();
    assert_eq!(heads.len(), 2);
    for h in &heads {
        assert_eq!(header_in(h, "user-agent"), Some("mirage-test/1.0"));
        assert_eq!(header_in(h, "accept"), Some(ACCEPT_IMAGES));
        assert_eq!(header_in(h, "accept-encoding"), Some("identity"));
        for banned in ["referer", "cookie", "authorization", "proxy-authorization"] {
            assert_eq!(header_in(h, banned), None, "{banned} leaked in {h}");
        }
        assert!(!h.contains("secret"));
    }
}

#[tokio::test]
async fn not_found_and_gone_are_not_found() {
    let server = TestServer::loopback(|h| match path_of(h) {
        "/404" => full("404 Not Found", &[], b"nope"),
        _ => full("410 Gone", &[], b"gone"),
    })
    .await;
    let f = fetcher(config(open()));
    assert_eq!(f.fetch(&server.url("/404"), None).await.err(), Some(FetchError::NotFound(404)));
    assert_eq!(f.fetch(&server.url("/410"), None).await.err(), Some(FetchError::NotFound(410)));
}

#[tokio::test]
async fn other_statuses_are_upstream_errors() {
    let server = TestServer::loopback(|h| match path_of(h) {
        "/500" => full("500 Internal Server Error", &[], b"upstream secret stack trace"),
        "/204" => full("204 No Content", &[], b""),
        _ => full("304 Not Modified", &[], b""),
    })
    .await;
    let f = fetcher(config(open()));
    let err = f.fetch(&server.url("/500"), None).await.err();
    assert_eq!(err, Some(FetchError::UpstreamStatus(500)));
    assert_eq!(err.map(|e| e.to_string()).as_deref(), Some("upstream answered 500"));
    assert_eq!(f.fetch(&server.url("/204"), None).await.err(), Some(FetchError::UpstreamStatus(204)));
    // A 304 we did not ask for is not a cache confirmation.
    assert_eq!(f.fetch(&server.url("/304"), None).await.err(), Some(FetchError::UpstreamStatus(304)));
}

#[tokio::test]
async fn follows_a_chain_of_three_redirects() {
    let server = TestServer::loopback(|h| match path_of(h) {
        "/a" => redirect("301 Moved Permanently", "/b"),
        "/b" => redirect("307 Temporary Redirect", "c?x=1"),
        "/c?x=1" => redirect("308 Permanent Redirect", "/final.jpg"),
        "/final.jpg" => full("200 OK", &[("Content-Type", "image/jpeg")], b"jpeg"),
        _ => full("500 Internal Server Error", &[], b""),
    })
    .await;
    let up = body_of(fetcher(config(open())).fetch(&server.url("/a"), None).await);
    assert_eq!(up.body.as_ref(), b"jpeg");
    assert_eq!(up.final_url, server.url("/final.jpg"));
    assert_eq!(server.heads().len(), 4);
}

#[tokio::test]
async fn exactly_max_redirects_is_fine_one_more_is_too_many() {
    // /r/N redirects to /r/N-1; /r/0 answers 200. So /r/5 is five redirects and /r/6 is six.
    let server = TestServer::loopback(|h| {
        let n: usize = path_of(h).trim_start_matches("/r/").parse().unwrap_or(0);
        if n == 0 { full("200 OK", &[], b"done") } else { redirect("302 Found", &format!("/r/{}", n - 1)) }
    })
    .await;
    let f = fetcher(config(open()));
    assert_eq!(body_of(f.fetch(&server.url("/r/5"), None).await).body.as_ref(), b"done");
    let before = server.connections();
    assert_eq!(f.fetch(&server.url("/r/6"), None).await.err(), Some(FetchError::TooManyRedirects(5)));
    // Six redirect answers were read; the seventh hop was never requested.
    assert_eq!(server.connections() - before, 6);
}

#[tokio::test]
async fn redirect_without_location_or_to_other_schemes_fails() {
    let server = TestServer::loopback(|h| match path_of(h) {
        "/nolocation" => full("302 Found", &[], b""),
        "/ftp" => redirect("302 Found", "ftp://127.0.0.1/x"),
        _ => redirect("302 Found", "file:///etc/passwd"),
    })
    .await;
    let f = fetcher(config(open()));
    assert!(matches!(f.fetch(&server.url("/nolocation"), None).await, Err(FetchError::BadRedirect(_))));
    let expected = Some(FetchError::Forbidden("redirect to non-http scheme".to_owned()));
    assert_eq!(f.fetch(&server.url("/ftp"), None).await.err(), expected);
    assert_eq!(f.fetch(&server.url("/file"), None).await.err(), expected);
}

#[tokio::test]
async fn declared_length_over_limit_is_refused_without_reading() {
    // The server declares 1 GiB, sends a little, then holds the connection: reading would stall until timeout.
    let server = TestServer::loopback(|_| {
        let mut bytes = head("200 OK", &[("Content-Length", "1073741824")]);
        bytes.extend_from_slice(&[0u8; 1000]);
        vec![Step::Write(bytes), Step::Sleep(Duration::from_secs(30))]
    })
    .await;
    let mut cfg = config(open());
    cfg.max_body_bytes = 4096;
    let started = Instant::now();
    let err = fetcher(cfg).fetch(&server.url("/big"), None).await.err();
    assert_eq!(err, Some(FetchError::TooLarge { limit: 4096 }));
    assert_eq!(err.map(|e| e.to_string()).as_deref(), Some("source image is larger than 4096 bytes"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn chunked_body_over_limit_is_cut_off() {
    // One 1 KiB chunk at a time, 64 MiB in total if nobody stops it.
    let server = TestServer::loopback(|_| {
        let mut chunk = b"400\r\n".to_vec();
        chunk.extend_from_slice(&[7u8; 1024]);
        chunk.extend_from_slice(b"\r\n");
        vec![
            Step::Write(head("200 OK", &[("Transfer-Encoding", "chunked")])),
            Step::Flood { chunk, max_total: 64 * 1024 * 1024 },
        ]
    })
    .await;
    let mut cfg = config(open());
    cfg.max_body_bytes = 100 * 1024;
    let err = fetcher(cfg).fetch(&server.url("/stream"), None).await.err();
    assert_eq!(err, Some(FetchError::TooLarge { limit: 100 * 1024 }));
    // Give the server a moment to notice the closed connection, then check it stopped far short of the end.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.written.load(Ordering::SeqCst) < 32 * 1024 * 1024);
}

#[tokio::test]
async fn body_shorter_than_declared_is_an_error() {
    let server = TestServer::loopback(|_| {
        let mut bytes = head("200 OK", &[("Content-Length", "5000")]);
        bytes.extend_from_slice(&[1u8; 100]);
        vec![Step::Write(bytes)]
    })
    .await;
    let result = fetcher(config(open())).fetch(&server.url("/short"), None).await;
    assert!(matches!(result, Err(FetchError::Body(_))), "got {result:?}");
}

#[tokio::test]
async fn slow_upstream_hits_the_total_timeout() {
    let server = TestServer::loopback(|_| {
        let mut steps = vec![Step::Sleep(Duration::from_secs(5))];
        steps.extend(full("200 OK", &[], b"late"));
        steps
    })
    .await;
    let mut cfg = config(open());
    cfg.total_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = fetcher(cfg).fetch(&server.url("/slow"), None).await.err();
    assert_eq!(err, Some(FetchError::Timeout));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn slow_body_hits_the_total_timeout() {
    let server = TestServer::loopback(|_| {
        let mut bytes = head("200 OK", &[("Content-Length", "10")]);
        bytes.extend_from_slice(b"12345");
        vec![Step::Write(bytes), Step::Sleep(Duration::from_secs(5)), Step::Write(b"67890".to_vec())]
    })
    .await;
    let mut cfg = config(open());
    cfg.total_timeout = Duration::from_millis(300);
    assert_eq!(fetcher(cfg).fetch(&server.url("/slow"), None).await.err(), Some(FetchError::Timeout));
}

#[tokio::test]
async fn conditional_request_gets_not_modified() {
    let server = TestServer::loopback(|h| {
        if header_in(h, "if-none-match") == Some("\"v1\"") {
            full("304 Not Modified", &[("ETag", "\"v1\""), ("Cache-Control", "max-age=300")], b"")
        } else {
            full("200 OK", &[("ETag", "\"v1\"")], b"image")
        }
    })
    .await;
    let validators =
        Validators { etag: Some("\"v1\"".to_owned()), last_modified: Some("Wed, 21 Oct 2015 07:28:00 GMT".to_owned()) };
    let result = fetcher(config(open())).fetch(&server.url("/img"), Some(&validators)).await;
    match result {
        Ok(Fetched::NotModified(headers)) => {
            assert_eq!(headers.etag.as_deref(), Some("\"v1\""));
            assert_eq!(headers.cache_control.as_deref(), Some("max-age=300"));
        }
        other => panic!("expected NotModified, got {other:?}"),
    }
    let heads = server.heads();
    assert_eq!(header_in(&heads[0], "if-modified-since"), Some("Wed, 21 Oct 2015 07:28:00 GMT"));
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let url = Url::parse(&format!("http://{addr}/")).expect("url");
    let result = fetcher(config(open())).fetch(&url, None).await;
    match result {
        Err(FetchError::Connect(msg)) => assert!(!msg.contains(&addr.to_string()), "{msg}"),
        other => panic!("expected Connect, got {other:?}"),
    }
}

// --- SSRF: the default policy must keep every request away from loopback. ---

fn ok_server_handler(_: &str) -> Vec<Step> {
    full("200 OK", &[], b"internal")
}

#[tokio::test]
async fn loopback_literal_is_forbidden_and_never_contacted() {
    let server = TestServer::loopback(ok_server_handler).await;
    let err = fetcher(config(NetworkPolicy::default())).fetch(&server.url("/"), None).await.err();
    assert_eq!(err, Some(FetchError::Forbidden("target address 127.0.0.1 is forbidden (loopback)".to_owned())));
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn localhost_name_is_forbidden_by_the_resolver_and_never_contacted() {
    let server = TestServer::loopback(ok_server_handler).await;
    let url = Url::parse(&format!("http://localhost:{}/", server.addr.port())).expect("url");
    let result = fetcher(config(NetworkPolicy::default())).fetch(&url, None).await;
    match result {
        Err(FetchError::Forbidden(msg)) => assert!(msg.contains("(loopback)"), "{msg}"),
        other => panic!("expected Forbidden from the resolver, got {other:?}"),
    }
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn other_spellings_of_loopback_are_caught() {
    let server = TestServer::loopback(ok_server_handler).await;
    let port = server.addr.port();
    let f = fetcher(config(NetworkPolicy::default()));
    for spelling in [
        format!("http://2130706433:{port}/"),
        format!("http://0x7f000001:{port}/"),
        format!("http://0177.0.0.1:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://0.0.0.0:{port}/"),
        format!("http://user@127.0.0.1:{port}/"),
    ] {
        let url = Url::parse(&spelling).expect("url");
        let result = f.fetch(&url, None).await;
        assert!(matches!(result, Err(FetchError::Forbidden(_))), "{spelling}: {result:?}");
    }
    assert_eq!(server.connections(), 0);
}

fn only_127_0_0_1() -> NetworkPolicy {
    NetworkPolicy { allow_private: false, allow_nets: vec!["127.0.0.1/32".parse().expect("net")] }
}

#[tokio::test]
async fn redirect_to_a_forbidden_address_is_refused_before_connecting() {
    // Linux routes all of 127/8 to loopback; skip the second listener's check where 127.0.0.2 cannot be bound.
    let second = TestServer::start("127.0.0.2", Arc::new(ok_server_handler)).await;
    let second_port = second.as_ref().map_or(9, |s| s.addr.port());
    let first = TestServer::loopback(move |h| match path_of(h) {
        "/to-v4" => redirect("302 Found", &format!("http://127.0.0.2:{second_port}/")),
        "/to-v6" => redirect("302 Found", &format!("http://[::1]:{second_port}/")),
        "/to-name" => redirect("302 Found", &format!("http://localhost:{second_port}/")),
        _ => full("200 OK", &[], b"allowed"),
    })
    .await;
    let f = fetcher(config(only_127_0_0_1()));
    // The first hop itself is allowed by allow_nets.
    assert_eq!(body_of(f.fetch(&first.url("/ok"), None).await).body.as_ref(), b"allowed");
    assert_eq!(
        f.fetch(&first.url("/to-v4"), None).await.err(),
        Some(FetchError::Forbidden("target address 127.0.0.2 is forbidden (loopback)".to_owned()))
    );
    assert_eq!(
        f.fetch(&first.url("/to-v6"), None).await.err(),
        Some(FetchError::Forbidden("target address ::1 is forbidden (loopback)".to_owned()))
    );
    // localhost resolves to 127.0.0.1 (allowed) and possibly ::1 (not): any forbidden address refuses the name.
    let by_name = f.fetch(&first.url("/to-name"), None).await;
    if tokio::net::lookup_host(("localhost", 0))
        .await
        .map(|mut addrs| addrs.any(|a| a.ip() != IpAddr::from([127, 0, 0, 1])))
        .unwrap_or(false)
    {
        assert!(matches!(by_name, Err(FetchError::Forbidden(_))), "{by_name:?}");
    }
    if let Some(second) = &second {
        assert_eq!(second.connections(), 0);
    }
}

#[tokio::test]
async fn allow_nets_can_open_all_of_loopback() {
    let server = TestServer::loopback(ok_server_handler).await;
    let policy = NetworkPolicy { allow_private: false, allow_nets: vec!["127.0.0.0/8".parse().expect("net")] };
    let f = fetcher(config(policy));
    assert_eq!(body_of(f.fetch(&server.url("/"), None).await).body.as_ref(), b"internal");
    let decimal = Url::parse(&format!("http://2130706433:{}/", server.addr.port())).expect("url");
    assert_eq!(body_of(f.fetch(&decimal, None).await).body.as_ref(), b"internal");
    assert_eq!(server.connections(), 2);
}

#[test]
fn non_http_target_is_forbidden() {
    let f = fetcher(config(open()));
    let url = Url::parse("ftp://127.0.0.1/x").expect("url");
    assert!(matches!(f.check_target(&url, false), Err(FetchError::Forbidden(_))));
}

#[test]
fn error_messages_are_single_public_lines() {
    let errors = [
        FetchError::Forbidden("target address 127.0.0.1 is forbidden (loopback)".into()),
        FetchError::NotFound(404),
        FetchError::UpstreamStatus(502),
        FetchError::TooLarge { limit: 26_214_400 },
        FetchError::Timeout,
        FetchError::TooManyRedirects(5),
        FetchError::BadRedirect("redirect without a Location header".into()),
        FetchError::Connect("Connection refused (os error 111)".into()),
        FetchError::Body("body is shorter than its Content-Length".into()),
    ];
    for e in &errors {
        let s = e.to_string();
        assert!(!s.is_empty() && !s.contains('\n'), "{s:?}");
    }
    assert_eq!(errors[1].to_string(), "upstream answered 404");
    assert_eq!(errors[3].to_string(), "source image is larger than 26214400 bytes");
}

#[tokio::test]
async fn connect_timeout_is_a_timeout() {
    // A listener that never accepts, with its tiny backlog filled: Linux then drops further SYNs, so the connect
    // hangs until the connect timeout. Where the OS still completes the handshake, the check is skipped.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = socket.local_addr().expect("addr");
    let _listener = socket.listen(1).expect("listen");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    let probe = tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await;
    if probe.is_ok() {
        eprintln!("backlog did not fill on this OS; skipping the connect-timeout check");
        return;
    }
    let mut cfg = config(open());
    cfg.connect_timeout = Duration::from_millis(200);
    cfg.total_timeout = Duration::from_secs(5);
    let started = Instant::now();
    let url = Url::parse(&format!("http://{addr}/")).expect("url");
    assert_eq!(fetcher(cfg).fetch(&url, None).await.err(), Some(FetchError::Timeout));
    // It was the connect timeout that fired, not the total one.
    assert!(started.elapsed() < Duration::from_secs(2));
}
