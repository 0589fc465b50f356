//! The fetcher against in-process loopback servers (127.0.0.1 and 127.0.0.2 only, never the outside world):
//! bodies, headers, redirects, limits, timeouts and the network policy on every hop.
//!
//! The origin is `common::raw`'s raw TCP server rather than hyper, so tests can misbehave precisely: short
//! bodies, stalls, bodies that never end. These tests need only the fetcher's public API, so they are an
//! integration test sharing that server with the security suite (the unit tests of private helpers stay in
//! src/fetch/tests.rs).

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::raw::{RawUpstream, Step, full, head, header_in, path_of, redirect};
use mirage::fetch::{
    FetchConfig, FetchError, Fetched, Fetcher, HostRules, NetworkPolicy, SystemLookup, Upstream, UpstreamHeaders,
    Validators,
};
use url::Url;

/// `http://ADDR{path}` of `server`, as the fetcher takes it.
fn url(server: &RawUpstream, path: &str) -> Url {
    Url::parse(&server.url(path)).unwrap()
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

#[tokio::test]
async fn ok_body_is_byte_identical_and_headers_are_captured() {
    let image: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let served = image.clone();
    let server = RawUpstream::start(move |_| {
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
    let up = body_of(fetcher(config(open())).fetch(&url(&server, "/img.png"), None).await);
    assert_eq!(up.body.as_ref(), image.as_slice());
    assert_eq!(up.final_url, url(&server, "/img.png"));
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
            vary: None,
        }
    );
}

#[tokio::test]
async fn sends_user_agent_and_accept_but_no_credentials_or_referer() {
    let server = RawUpstream::start(|h| match path_of(h) {
        "/first" => redirect("302 Found", "/second"),
        _ => full("200 OK", &[("Content-Type", "image/gif")], b"GIF89a"),
    })
    .await;
    // Userinfo in the URL must not turn into an Authorization header.
    let mut target = url(&server, "/first");
    target.set_username("user").expect("username");
    target.set_password(Some("secret")).expect("password");
    let up = body_of(fetcher(config(open())).fetch(&target, None).await);
    assert_eq!(up.body.as_ref(), b"GIF89a");
    assert_eq!(up.final_url.username(), "");
    let heads = server.heads();
    assert_eq!(heads.len(), 2);
    for h in &heads {
        assert_eq!(header_in(h, "user-agent"), Some("mirage-test/1.0"));
        // The most widely decodable representation: origins that negotiate by Accept must not pick AVIF/WebP.
        assert_eq!(header_in(h, "accept"), Some("image/jpeg,image/png,image/gif;q=0.9,image/*;q=0.5,*/*;q=0.1"));
        assert_eq!(header_in(h, "accept-encoding"), Some("identity"));
        for banned in ["referer", "cookie", "authorization", "proxy-authorization"] {
            assert_eq!(header_in(h, banned), None, "{banned} leaked in {h}");
        }
        assert!(!h.contains("secret"));
    }
}

#[tokio::test]
async fn not_found_and_gone_are_not_found() {
    let server = RawUpstream::start(|h| match path_of(h) {
        "/404" => full("404 Not Found", &[], b"nope"),
        _ => full("410 Gone", &[], b"gone"),
    })
    .await;
    let f = fetcher(config(open()));
    assert_eq!(f.fetch(&url(&server, "/404"), None).await.err(), Some(FetchError::NotFound(404)));
    assert_eq!(f.fetch(&url(&server, "/410"), None).await.err(), Some(FetchError::NotFound(410)));
}

#[tokio::test]
async fn other_statuses_are_upstream_errors() {
    let server = RawUpstream::start(|h| match path_of(h) {
        "/500" => full("500 Internal Server Error", &[], b"upstream secret stack trace"),
        "/204" => full("204 No Content", &[], b""),
        _ => full("304 Not Modified", &[], b""),
    })
    .await;
    let f = fetcher(config(open()));
    let err = f.fetch(&url(&server, "/500"), None).await.err();
    assert_eq!(err, Some(FetchError::UpstreamStatus(500)));
    assert_eq!(err.map(|e| e.to_string()).as_deref(), Some("upstream answered 500"));
    assert_eq!(f.fetch(&url(&server, "/204"), None).await.err(), Some(FetchError::UpstreamStatus(204)));
    // A 304 we did not ask for is not a cache confirmation.
    assert_eq!(f.fetch(&url(&server, "/304"), None).await.err(), Some(FetchError::UpstreamStatus(304)));
}

#[tokio::test]
async fn follows_a_chain_of_three_redirects() {
    let server = RawUpstream::start(|h| match path_of(h) {
        "/a" => redirect("301 Moved Permanently", "/b"),
        "/b" => redirect("307 Temporary Redirect", "c?x=1"),
        "/c?x=1" => redirect("308 Permanent Redirect", "/final.jpg"),
        "/final.jpg" => full("200 OK", &[("Content-Type", "image/jpeg")], b"jpeg"),
        _ => full("500 Internal Server Error", &[], b""),
    })
    .await;
    let up = body_of(fetcher(config(open())).fetch(&url(&server, "/a"), None).await);
    assert_eq!(up.body.as_ref(), b"jpeg");
    assert_eq!(up.final_url, url(&server, "/final.jpg"));
    assert_eq!(server.heads().len(), 4);
}

#[tokio::test]
async fn exactly_max_redirects_is_fine_one_more_is_too_many() {
    // /r/N redirects to /r/N-1; /r/0 answers 200. So /r/5 is five redirects and /r/6 is six.
    let server = RawUpstream::start(|h| {
        let n: usize = path_of(h).trim_start_matches("/r/").parse().unwrap_or(0);
        if n == 0 { full("200 OK", &[], b"done") } else { redirect("302 Found", &format!("/r/{}", n - 1)) }
    })
    .await;
    let f = fetcher(config(open()));
    assert_eq!(body_of(f.fetch(&url(&server, "/r/5"), None).await).body.as_ref(), b"done");
    let before = server.connections();
    assert_eq!(f.fetch(&url(&server, "/r/6"), None).await.err(), Some(FetchError::TooManyRedirects(5)));
    // Six redirect answers were read; the seventh hop was never requested.
    assert_eq!(server.connections() - before, 6);
}

#[tokio::test]
async fn redirect_without_location_or_to_other_schemes_fails() {
    let server = RawUpstream::start(|h| match path_of(h) {
        "/nolocation" => full("302 Found", &[], b""),
        "/ftp" => redirect("302 Found", "ftp://127.0.0.1/x"),
        _ => redirect("302 Found", "file:///etc/passwd"),
    })
    .await;
    let f = fetcher(config(open()));
    assert!(matches!(f.fetch(&url(&server, "/nolocation"), None).await, Err(FetchError::BadRedirect(_))));
    let expected = Some(FetchError::Forbidden("redirect to non-http scheme".to_owned()));
    assert_eq!(f.fetch(&url(&server, "/ftp"), None).await.err(), expected);
    assert_eq!(f.fetch(&url(&server, "/file"), None).await.err(), expected);
}

#[tokio::test]
async fn declared_length_over_limit_is_refused_without_reading() {
    // The server declares 1 GiB, sends a little, then holds the connection: reading would stall until timeout.
    let server = RawUpstream::start(|_| {
        let mut bytes = head("200 OK", &[("Content-Length", "1073741824")]);
        bytes.extend_from_slice(&[0u8; 1000]);
        vec![Step::Write(bytes), Step::Sleep(Duration::from_secs(30))]
    })
    .await;
    let mut cfg = config(open());
    cfg.max_body_bytes = 4096;
    let started = Instant::now();
    let err = fetcher(cfg).fetch(&url(&server, "/big"), None).await.err();
    assert_eq!(err, Some(FetchError::TooLarge { limit: 4096 }));
    assert_eq!(err.map(|e| e.to_string()).as_deref(), Some("source image is larger than 4096 bytes"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn chunked_body_over_limit_is_cut_off() {
    // One 1 KiB chunk at a time, 64 MiB in total if nobody stops it.
    let server = RawUpstream::start(|_| {
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
    let err = fetcher(cfg).fetch(&url(&server, "/stream"), None).await.err();
    assert_eq!(err, Some(FetchError::TooLarge { limit: 100 * 1024 }));
    // Give the server a moment to notice the closed connection, then check it stopped far short of the end.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.written() < 32 * 1024 * 1024);
}

#[tokio::test]
async fn body_shorter_than_declared_is_an_error() {
    let server = RawUpstream::start(|_| {
        let mut bytes = head("200 OK", &[("Content-Length", "5000")]);
        bytes.extend_from_slice(&[1u8; 100]);
        vec![Step::Write(bytes)]
    })
    .await;
    let result = fetcher(config(open())).fetch(&url(&server, "/short"), None).await;
    assert!(matches!(result, Err(FetchError::Body(_))), "got {result:?}");
}

#[tokio::test]
async fn slow_upstream_hits_the_total_timeout() {
    let server = RawUpstream::start(|_| {
        let mut steps = vec![Step::Sleep(Duration::from_secs(5))];
        steps.extend(full("200 OK", &[], b"late"));
        steps
    })
    .await;
    let mut cfg = config(open());
    cfg.total_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = fetcher(cfg).fetch(&url(&server, "/slow"), None).await.err();
    assert_eq!(err, Some(FetchError::Timeout));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn slow_body_hits_the_total_timeout() {
    let server = RawUpstream::start(|_| {
        let mut bytes = head("200 OK", &[("Content-Length", "10")]);
        bytes.extend_from_slice(b"12345");
        vec![Step::Write(bytes), Step::Sleep(Duration::from_secs(5)), Step::Write(b"67890".to_vec())]
    })
    .await;
    let mut cfg = config(open());
    cfg.total_timeout = Duration::from_millis(300);
    assert_eq!(fetcher(cfg).fetch(&url(&server, "/slow"), None).await.err(), Some(FetchError::Timeout));
}

#[tokio::test]
async fn conditional_request_gets_not_modified() {
    let server = RawUpstream::start(|h| {
        if header_in(h, "if-none-match") == Some("\"v1\"") {
            full("304 Not Modified", &[("ETag", "\"v1\""), ("Cache-Control", "max-age=300")], b"")
        } else {
            full("200 OK", &[("ETag", "\"v1\"")], b"image")
        }
    })
    .await;
    let validators =
        Validators { etag: Some("\"v1\"".to_owned()), last_modified: Some("Wed, 21 Oct 2015 07:28:00 GMT".to_owned()) };
    let result = fetcher(config(open())).fetch(&url(&server, "/img"), Some(&validators)).await;
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
    let addr = common::dead_addr().await;
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
    let server = RawUpstream::start(ok_server_handler).await;
    let err = fetcher(config(NetworkPolicy::default())).fetch(&url(&server, "/"), None).await.err();
    assert_eq!(err, Some(FetchError::Forbidden("target address 127.0.0.1 is forbidden (loopback)".to_owned())));
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn localhost_name_is_forbidden_by_the_resolver_and_never_contacted() {
    let server = RawUpstream::start(ok_server_handler).await;
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
    let server = RawUpstream::start(ok_server_handler).await;
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
    let second = RawUpstream::bind("127.0.0.2:0".parse().unwrap(), ok_server_handler).await;
    let second_port = second.as_ref().map_or(9, |s| s.addr.port());
    let first = RawUpstream::start(move |h| match path_of(h) {
        "/to-v4" => redirect("302 Found", &format!("http://127.0.0.2:{second_port}/")),
        "/to-v6" => redirect("302 Found", &format!("http://[::1]:{second_port}/")),
        "/to-name" => redirect("302 Found", &format!("http://localhost:{second_port}/")),
        _ => full("200 OK", &[], b"allowed"),
    })
    .await;
    let f = fetcher(config(only_127_0_0_1()));
    // The first hop itself is allowed by allow_nets.
    assert_eq!(body_of(f.fetch(&url(&first, "/ok"), None).await).body.as_ref(), b"allowed");
    assert_eq!(
        f.fetch(&url(&first, "/to-v4"), None).await.err(),
        Some(FetchError::Forbidden("target address 127.0.0.2 is forbidden (loopback)".to_owned()))
    );
    assert_eq!(
        f.fetch(&url(&first, "/to-v6"), None).await.err(),
        Some(FetchError::Forbidden("target address ::1 is forbidden (loopback)".to_owned()))
    );
    // localhost resolves to 127.0.0.1 (allowed) and possibly ::1 (not): any forbidden address refuses the name.
    let by_name = f.fetch(&url(&first, "/to-name"), None).await;
    if tokio::net::lookup_host(("localhost", 0))
        .await
        .is_ok_and(|mut addrs| addrs.any(|a| a.ip() != IpAddr::from([127, 0, 0, 1])))
    {
        assert!(matches!(by_name, Err(FetchError::Forbidden(_))), "{by_name:?}");
    }
    if let Some(second) = &second {
        assert_eq!(second.connections(), 0);
    }
}

#[tokio::test]
async fn allow_nets_can_open_all_of_loopback() {
    let server = RawUpstream::start(ok_server_handler).await;
    let policy = NetworkPolicy { allow_private: false, allow_nets: vec!["127.0.0.0/8".parse().expect("net")] };
    let f = fetcher(config(policy));
    assert_eq!(body_of(f.fetch(&url(&server, "/"), None).await).body.as_ref(), b"internal");
    let decimal = Url::parse(&format!("http://2130706433:{}/", server.addr.port())).expect("url");
    assert_eq!(body_of(f.fetch(&decimal, None).await).body.as_ref(), b"internal");
    assert_eq!(server.connections(), 2);
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
