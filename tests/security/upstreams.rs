//! Hostile upstreams: trickling bodies, bodies that never end, lying Content-Length, gzip bombs. Each is
//! answered within the configured limits with a clear status while the server keeps answering others.

use std::time::{Duration, Instant};

use crate::common::raw::{RawUpstream, Step, head};
use crate::common::{Proxy, client, get, photo};

fn flags() -> Vec<&'static str> {
    vec!["--no-disk-cache", "--allow-private-networks", "--fetch-timeout", "1s", "--connect-timeout", "1s"]
}

#[tokio::test]
async fn trickling_body_is_504_at_the_fetch_timeout_and_the_server_stays_responsive() {
    let upstream = RawUpstream::start(|_| {
        vec![
            Step::Write(head("200 OK", &[("Content-Type", "image/gif"), ("Content-Length", "1000")])),
            Step::Trickle { bytes: vec![b'G'; 1000], every: Duration::from_millis(100) },
        ]
    })
    .await;
    let proxy = Proxy::start(&flags()).await;
    let client = client();
    let started = Instant::now();
    let slow = tokio::spawn({
        let (client, url) = (client.clone(), proxy.url(&upstream.url("/slow.gif")));
        async move { get(&client, &url).await }
    });
    // While the fetch trickles, other requests are answered at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let asked = Instant::now();
        let health = get(&client, &format!("http://{}/healthz", proxy.addr)).await;
        assert_eq!(health.status, 200);
        assert!(asked.elapsed() < Duration::from_millis(500), "healthz took {:?}", asked.elapsed());
    }
    let reply = slow.await.unwrap();
    assert_eq!(reply.status, 504, "{:?}", reply.body);
    assert_eq!(String::from_utf8_lossy(&reply.body).trim(), "upstream did not answer in time");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3), "took {elapsed:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_that_never_closes_is_504() {
    let upstream = RawUpstream::start(|_| {
        let mut bytes = head("200 OK", &[("Content-Type", "image/jpeg"), ("Content-Length", "100000")]);
        bytes.extend_from_slice(&photo()[..500]);
        vec![Step::Write(bytes), Step::Sleep(Duration::from_secs(60))]
    })
    .await;
    let proxy = Proxy::start(&flags()).await;
    let started = Instant::now();
    let reply = get(&client(), &proxy.url(&upstream.url("/hang.jpg"))).await;
    assert_eq!(reply.status, 504, "{:?}", reply.body);
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    proxy.stop().await;
}

#[tokio::test]
async fn body_shorter_than_its_content_length_is_502() {
    let upstream = RawUpstream::start(|_| {
        let mut bytes = head("200 OK", &[("Content-Type", "image/jpeg"), ("Content-Length", "100")]);
        bytes.extend_from_slice(&photo()[..50]);
        vec![Step::Write(bytes)]
    })
    .await;
    let proxy = Proxy::start(&flags()).await;
    let reply = get(&client(), &proxy.url(&upstream.url("/short.jpg"))).await;
    assert_eq!(reply.status, 502, "{:?}", reply.body);
    proxy.stop().await;
}

/// Content-Length 50 followed by 100 bytes: HTTP/1.1 framing ends the body at 50 (the rest would be the next
/// response on the connection, and is discarded with it). Whatever is served is never the 100 bytes.
#[tokio::test]
async fn body_longer_than_its_content_length_is_cut_at_the_declaration() {
    let upstream = RawUpstream::start(|_| {
        let mut bytes = head("200 OK", &[("Content-Type", "image/jpeg"), ("Content-Length", "50")]);
        bytes.extend_from_slice(&photo()[..100]);
        vec![Step::Write(bytes)]
    })
    .await;
    let proxy = Proxy::start(&flags()).await;
    let reply = get(&client(), &proxy.url(&upstream.url("/long.jpg"))).await;
    if reply.status == 200 {
        assert_eq!(reply.body.len(), 50, "served more than the declared length");
        assert!(reply.body == photo()[..50]);
    } else {
        assert!((400..600).contains(&reply.status), "{}", reply.status);
    }
    proxy.stop().await;
}

/// 100 MB of zeros, gzipped to 97 KB, sent with `Content-Encoding: gzip` although we asked for `identity`.
/// Mirage never decompresses: it sees the gzip magic, which is no image, and refuses with 415 at once.
#[tokio::test]
async fn gzip_bomb_is_never_inflated_and_is_415() {
    let bomb = crate::common::fixture("security/zeros-100MB.gz");
    assert!(bomb.len() < 200 * 1024);
    let upstream = RawUpstream::start(move |_| {
        let mut bytes = head(
            "200 OK",
            &[("Content-Type", "image/png"), ("Content-Encoding", "gzip"), ("Content-Length", &bomb.len().to_string())],
        );
        bytes.extend_from_slice(&bomb);
        vec![Step::Write(bytes)]
    })
    .await;
    let proxy = Proxy::start(&flags()).await;
    let client = client();
    for url in
        [proxy.url(&upstream.url("/bomb.png")), format!("http://{}/w=100/?{}", proxy.addr, upstream.url("/bomb2.png"))]
    {
        let started = Instant::now();
        let reply = get(&client, &url).await;
        assert_eq!(reply.status, 415, "{url}: {:?}", String::from_utf8_lossy(&reply.body));
        assert!(reply.body.len() < 1024, "an error, not the payload");
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }
    // We asked for the identity encoding, every time.
    for head in upstream.heads() {
        let accept_encoding = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("accept-encoding")))
            .map(|(_, v)| v.trim().to_owned());
        assert_eq!(accept_encoding.as_deref(), Some("identity"), "{head}");
    }
    proxy.stop().await;
}

/// A real image sent with a bogus `Content-Encoding: gzip` is relayed byte for byte (never "decoded").
#[tokio::test]
async fn content_encoding_is_not_applied_to_image_bytes() {
    let upstream = RawUpstream::start(|_| {
        let body = photo();
        let mut bytes = head(
            "200 OK",
            &[
                ("Content-Type", "image/jpeg"),
                ("Content-Encoding", "gzip"),
                ("Content-Length", &body.len().to_string()),
            ],
        );
        bytes.extend_from_slice(&body);
        vec![Step::Write(bytes)]
    })
    .await;
    let proxy = Proxy::start(&flags()).await;
    let reply = get(&client(), &proxy.url(&upstream.url("/photo.jpg"))).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(reply.body == photo());
    assert_eq!(reply.header("content-encoding"), "");
    proxy.stop().await;
}
