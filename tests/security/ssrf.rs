//! SSRF over real HTTP with the default (closed) network policy: every spelling of loopback and every
//! non-public range is refused with 403, and no connection reaches a listener.

use std::time::{Duration, Instant};

use crate::common::raw::{RawUpstream, ok};
use crate::common::{Proxy, client, get};

/// Every way of writing "this machine" that a URL parser or resolver accepts. All must be refused; the
/// listener on 127.0.0.1:PORT proves none got through.
#[tokio::test]
async fn every_spelling_of_loopback_is_403_and_never_connected() {
    let recorder = RawUpstream::recorder().await;
    let port = recorder.addr.port();
    let proxy = Proxy::start(&["--no-disk-cache"]).await;
    let client = client();
    let spellings = [
        format!("http://127.0.0.1:{port}/a.jpg"),
        format!("http://2130706433:{port}/a.jpg"),          // decimal
        format!("http://0x7f000001:{port}/a.jpg"),          // hex integer
        format!("http://0x7f.0.0.1:{port}/a.jpg"),          // hex octet
        format!("http://0177.0.0.1:{port}/a.jpg"),          // octal octet
        format!("http://0177.0000.0000.0001:{port}/a.jpg"), // padded octal
        format!("http://127.1:{port}/a.jpg"),               // short form
        format!("http://127.0.1:{port}/a.jpg"),             // short form
        format!("http://127.0.0.1.:{port}/a.jpg"),          // trailing dot
        format!("http://%31%32%37.0.0.1:{port}/a.jpg"),     // percent-encoded host
        format!("http://127.0.0.2:{port}/a.jpg"),           // elsewhere in 127/8
        format!("http://0.0.0.0:{port}/a.jpg"),             // unspecified: the kernel routes it to this host
        format!("http://0:{port}/a.jpg"),
        format!("http://[::1]:{port}/a.jpg"), // IPv6 loopback
        format!("http://[0:0:0:0:0:0:0:1]:{port}/a.jpg"),
        format!("http://[::]:{port}/a.jpg"),
        format!("http://[::ffff:127.0.0.1]:{port}/a.jpg"), // IPv4-mapped
        format!("http://[::ffff:7f00:1]:{port}/a.jpg"),
        format!("http://[::127.0.0.1]:{port}/a.jpg"),     // IPv4-compatible
        format!("http://[64:ff9b::7f00:1]:{port}/a.jpg"), // NAT64
        format!("http://good@127.0.0.1:{port}/a.jpg"),    // userinfo
        format!("http://good.example.com:pw@127.0.0.1:{port}/a.jpg"),
        format!("http://good.example.com@[::1]:{port}/a.jpg"),
        format!("http://localhost:{port}/a.jpg"), // names, refused by the checking resolver
        format!("http://LOCALHOST:{port}/a.jpg"),
        format!("http://good@localhost:{port}/a.jpg"),
        format!("http://localhost.:{port}/a.jpg"), // trailing dot on a name
    ];
    for target in &spellings {
        let reply = get(&client, &proxy.url(target)).await;
        let text = String::from_utf8_lossy(&reply.body);
        assert_eq!(reply.status, 403, "{target}: {text}");
        assert!(text.contains("non-public address"), "{target}: {text}");
    }
    assert_eq!(recorder.connections(), 0, "a spelling of loopback reached the listener");
    proxy.stop().await;
}

/// Non-public ranges other than loopback. They are IP literals, so they are refused before any connection
/// is attempted (no packet leaves the machine): the answer is immediate, and names neither the address nor its
/// range (the log does).
#[tokio::test]
async fn non_public_ranges_are_403_before_connecting() {
    // A 30 s connect timeout: had the proxy tried to connect to these, the answer could not be this fast.
    let proxy = Proxy::start(&["--no-disk-cache", "--connect-timeout", "30s"]).await;
    let client = client();
    let cases = [
        ("http://100.64.0.1/a.jpg", "carrier-grade NAT"),
        ("http://100.127.255.254/a.jpg", "carrier-grade NAT"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::ffff:169.254.169.254]/latest/meta-data/", "link-local"),
        ("http://[::ffff:a9fe:a9fe]/latest/meta-data/", "link-local"),
        ("http://10.0.0.1/a.jpg", "private"),
        ("http://172.16.5.4/a.jpg", "private"),
        ("http://192.168.1.1/a.jpg", "private"),
        ("http://[::ffff:10.0.0.1]/a.jpg", "private"),
        ("http://[::192.168.0.1]/a.jpg", "private"),
        ("http://[2002:c0a8:101::1]/a.jpg", "private"),
        ("http://[fd00::1]/a.jpg", "unique-local"),
        ("http://[fc00::5]/a.jpg", "unique-local"),
        ("http://[fe80::1]/a.jpg", "link-local"),
        ("http://224.0.0.1/a.jpg", "multicast"),
        ("http://239.255.255.250/a.jpg", "multicast"),
        ("http://[ff02::1]/a.jpg", "multicast"),
        ("http://255.255.255.255/a.jpg", "broadcast"),
        ("http://0.0.0.0/a.jpg", "unspecified"),
        ("http://[::]/a.jpg", "unspecified"),
        ("http://240.0.0.1/a.jpg", "reserved"),
    ];
    for (target, reason) in cases {
        let started = Instant::now();
        let reply = get(&client, &proxy.url(target)).await;
        let text = String::from_utf8_lossy(&reply.body);
        assert_eq!(reply.status, 403, "{target}: {text}");
        assert!(text.contains("forbidden target: the host resolves to a non-public address"), "{target}: {text}");
        assert!(!text.contains(reason), "{target}: the range is disclosed: {text}");
        assert_eq!(reply.header("cache-control"), "no-store");
        assert!(started.elapsed() < Duration::from_secs(2), "{target} took {:?}", started.elapsed());
    }
    proxy.stop().await;
}

/// `--allow-net` opens exactly the range it names: 127.0.0.1/32 open, the rest of loopback still closed.
#[tokio::test]
async fn allow_net_opens_only_its_range() {
    let upstream = RawUpstream::start(|_| ok("image/gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")).await;
    let port = upstream.addr.port();
    let proxy = Proxy::start(&["--no-disk-cache", "--allow-net", "127.0.0.1/32"]).await;
    let client = client();
    let open = get(&client, &proxy.url(&format!("http://127.0.0.1:{port}/a.gif"))).await;
    assert_eq!(open.status, 200, "{:?}", open.body);
    for closed in [format!("http://127.0.0.2:{port}/a.gif"), format!("http://[::1]:{port}/a.gif")] {
        let reply = get(&client, &proxy.url(&closed)).await;
        assert_eq!(reply.status, 403, "{closed}");
    }
    assert_eq!(upstream.connections(), 1);
    proxy.stop().await;
}
