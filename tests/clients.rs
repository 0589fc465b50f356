//! Misbehaving and ordinary clients (issue 9, "Clients"): a client that stops reading must not hold a connection
//! slot forever, every `If-None-Match` line counts, and the access log keeps signatures and target queries out.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Proxy, Route, Upstream, client, get, photo, send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// A "JPEG" of `len` bytes: the fixture photo followed by padding after its end marker (decoders stop there; the
/// mirror route serves bytes as they are).
fn large_image(len: usize) -> Bytes {
    let mut bytes = photo().to_vec();
    bytes.resize(len, 0);
    Bytes::from(bytes)
}

/// Four clients that ask for a large cached image and never read it hold all four connection slots; with a send
/// timeout their responses are dropped, so a fifth client gets its `/healthz` answer soon after the timeout.
#[tokio::test]
async fn send_timeout_frees_slots_held_by_clients_that_stop_reading() {
    const BODY: usize = 24 * 1024 * 1024;
    const SEND_TIMEOUT: Duration = Duration::from_secs(2);
    let upstream = Upstream::start().await;
    upstream.route("/big.jpg", Route::image(large_image(BODY)));
    let proxy = Proxy::start(&[
        "--no-disk-cache",
        "--allow-private-networks",
        "--max-source-bytes",
        "64MiB",
        "--max-connections",
        "4",
        "--send-timeout",
        "2s",
    ])
    .await;
    let url = proxy.url(&upstream.url("/big.jpg"));
    // Cache it first, reading it all, on a connection that is then closed (the client is dropped).
    {
        let reply = get(&client(), &url).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body.len(), BODY);
    }
    let request = format!("GET /?{} HTTP/1.1\r\nHost: mirage\r\n\r\n", upstream.url("/big.jpg"));
    let mut stuck = Vec::new();
    for _ in 0..4 {
        // A small receive window, so the server's writes stall after a few hundred KiB instead of megabytes.
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(proxy.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        stuck.push(stream);
    }
    // Connected after the four, so queued behind them in the listen backlog.
    let started = Instant::now();
    let health = tokio::time::timeout(SEND_TIMEOUT + Duration::from_secs(5), async {
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
        send(client.get(proxy.path("/healthz"))).await
    })
    .await
    .expect("/healthz did not answer within --send-timeout + 5 s: stalled responses still hold every slot");
    assert_eq!(health.status, 200);
    assert!(started.elapsed() >= SEND_TIMEOUT / 2, "answered before any slot could have been freed");
    // Each stalled response was cut off: the client reads what was buffered, then the end of the connection.
    for mut stream in stuck {
        let mut received = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        let read_all = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received += n,
                }
            }
        })
        .await;
        assert!(read_all.is_ok(), "the stalled connection was not closed");
        assert!(received < BODY, "the whole body arrived ({received} bytes): the response was not dropped");
    }
}

/// `If-None-Match` may come as several header lines (RFC 9110 5.3: they form one list); a match on any line is a
/// 304, not only on the first.
#[tokio::test]
async fn if_none_match_on_a_later_header_line_is_a_304() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    let proxy = Proxy::start(&["--no-disk-cache", "--allow-private-networks"]).await;
    let client = client();
    let url = proxy.url(&upstream.url("/a.jpg"));
    let first = get(&client, &url).await;
    assert_eq!(first.status, 200);
    let etag = first.header("etag").to_owned();
    assert!(!etag.is_empty());
    // reqwest's `header` appends: two separate lines.
    let request = client.get(&url).header("if-none-match", "\"something-else\"").header("if-none-match", &etag);
    let reply = send(request).await;
    assert_eq!(reply.status, 304, "a match on the second If-None-Match line was ignored");
    assert!(reply.body.is_empty());
    let request = client.get(&url).header("if-none-match", "\"a\"").header("if-none-match", "W/\"b\", \"c\"");
    assert_eq!(send(request).await.status, 200);
}

/// The access log at `info` names the route, the target's host and path, status, cache, bytes and duration, and
/// never a signature or the target's query string (which often carries tokens). Read from a real `mirage serve`.
#[tokio::test]
async fn access_log_has_no_signatures_nor_target_queries() {
    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const SECRET: &str = "SECRETTOKEN42";
    let upstream = Upstream::start().await;
    upstream.route("/img/a.jpg", Route::image(photo()));
    let proxy = Proxy::start(&["--no-disk-cache", "--allow-private-networks", "--signing-key", KEY]).await;
    let addr = proxy.addr;
    let key: mirage::signing::SigningKey = KEY.parse().unwrap();
    let target = upstream.url(&format!("/img/a.jpg?token={SECRET}&x=1"));
    let signed_variant = mirage::signing::sign_path(&key, &format!("/width=100/?{target}")).unwrap();
    let signed_mirror = mirage::signing::sign_path(&key, &target).unwrap();
    let signatures: Vec<String> = [&signed_variant, &signed_mirror]
        .iter()
        .map(|path| path.split("sig=").nth(1).unwrap().split([',', '/']).next().unwrap().to_owned())
        .collect();
    let client = client();
    let variant = get(&client, &format!("http://{addr}{signed_variant}")).await;
    assert_eq!(variant.status, 200);
    let mirror = get(&client, &format!("http://{addr}{signed_mirror}")).await;
    assert_eq!(mirror.status, 200);
    // The target percent-encoded, as CORS-proxy links often are: its query is still left out.
    let encoded: String = target
        .chars()
        .map(|c| match c {
            ':' | '/' | '?' | '=' | '&' => format!("%{:02X}", c as u32),
            c => c.to_string(),
        })
        .collect();
    let encoded_mirror = get(&client, &format!("http://{addr}/?{encoded}")).await;
    assert_eq!(encoded_mirror.status, 200);
    // A bad signature: refused, and still not logged.
    let forged = get(&client, &format!("http://{addr}/sig=FORGEDSIGNATURE,width=50/?{target}")).await;
    assert_eq!(forged.status, 403);
    // The process is gone whether or not the assertions below hold: a failing test leaks no server.
    let stderr = proxy.stop().await;

    assert!(!stderr.contains(SECRET), "the target's query string is in the log:\n{stderr}");
    assert!(!stderr.contains("FORGEDSIGNATURE"), "a signature is in the log:\n{stderr}");
    for signature in &signatures {
        assert!(!stderr.contains(signature.as_str()), "signature {signature} is in the log:\n{stderr}");
    }
    let access: Vec<&str> = stderr.lines().filter(|line| line.contains("\"target_path\":\"/img/a.jpg\"")).collect();
    assert_eq!(access.len(), 4, "one access-log line per image request with the target's path:\n{stderr}");
    let host = format!("\"target_host\":\"{}\"", upstream.addr);
    let expect = [
        ("\"route\":\"/width=100/\"", "\"status\":200", "\"x_cache\":\"MISS\""),
        ("\"route\":\"/\"", "\"status\":200", "\"x_cache\":\"HIT-MEMORY\""),
        ("\"route\":\"/\"", "\"status\":200", "\"x_cache\":\"HIT-MEMORY\""),
        ("\"route\":\"/width=50/\"", "\"status\":403", "\"x_cache\":\"-\""),
    ];
    for (line, (route, status, cache)) in access.iter().zip(expect) {
        for field in [route, status, cache, host.as_str(), "\"bytes\":", "\"ms\":"] {
            assert!(line.contains(field), "{field} missing from the access-log line {line}");
        }
    }
}
