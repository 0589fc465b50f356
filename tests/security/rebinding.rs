//! DNS rebinding: a name that answers an allowed address once and a forbidden one the next time.
//!
//! Design. No real DNS and no packet off loopback: the proxy's name lookup is replaced (the
//! `FetchConfig::name_lookup` seam) by a fake DNS for `rebind.test` that answers 127.0.0.2 on the first lookup
//! and 127.0.0.1 on every later one. `--allow-net 127.0.0.2/32` makes the first answer allowed; 127.0.0.1
//! stays forbidden. Two listeners share one port: the allowed one on 127.0.0.2 serves an image and closes the
//! connection after each answer (so the client cannot reuse a pooled connection, and every request needs a new
//! lookup), the forbidden one on 127.0.0.1 only counts connections.
//!
//! A proxy that checked one lookup and connected by another would, on the second request, check 127.0.0.2 and
//! connect to 127.0.0.1. Ours resolves once per connection and connects only to the addresses it checked, so
//! the second request must be a 403 naming 127.0.0.1, the forbidden listener must see no connection, and the
//! fake DNS must have been asked exactly once per request.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mirage::fetch::{LookupFuture, NameLookup};

use crate::common::raw::{RawUpstream, can_bind, header_in, ok, redirect};
use crate::common::{Proxy, client, get};

const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;";

/// A DNS for `rebind.test` whose answers come from `script`, one per lookup (the last one repeats).
#[derive(Debug)]
struct FakeDns {
    script: Vec<Vec<IpAddr>>,
    lookups: AtomicUsize,
}

impl FakeDns {
    fn new(script: Vec<Vec<IpAddr>>) -> Arc<FakeDns> {
        Arc::new(FakeDns { script, lookups: AtomicUsize::new(0) })
    }
}

impl NameLookup for FakeDns {
    fn lookup(&self, host: &str) -> LookupFuture {
        let n = self.lookups.fetch_add(1, Ordering::SeqCst);
        let answer = if host == "rebind.test" {
            Ok(self.script[n.min(self.script.len() - 1)].clone())
        } else {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, "fake DNS knows only rebind.test"))
        };
        Box::pin(async move { answer })
    }
}

/// The proxy allowed to reach 127.0.0.2 only, resolving names with `dns`.
async fn proxy_resolving_with(dns: &Arc<FakeDns>) -> Proxy {
    let lookup: Arc<dyn NameLookup> = dns.clone();
    Proxy::start_with(&["--no-disk-cache", "--allow-net", "127.0.0.2/32"], move |config| {
        config.pipeline.fetch.name_lookup = lookup;
    })
    .await
}

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// The allowed image server on 127.0.0.2 and the forbidden counter on 127.0.0.1, on one port.
async fn two_listeners() -> Option<(RawUpstream, RawUpstream)> {
    if !can_bind("127.0.0.2").await {
        return None;
    }
    for _ in 0..20 {
        let allowed = RawUpstream::bind("127.0.0.2:0".parse().unwrap(), |_| ok("image/gif", GIF)).await?;
        let forbidden_addr = SocketAddr::new(v4(1), allowed.addr.port());
        if let Some(forbidden) = RawUpstream::bind(forbidden_addr, |_| ok("image/gif", GIF)).await {
            return Some((allowed, forbidden));
        }
    }
    None
}

#[tokio::test]
async fn dns_rebinding_between_requests_cannot_reach_a_forbidden_address() {
    let Some((allowed, forbidden)) = two_listeners().await else {
        eprintln!("127.0.0.2 cannot be bound here (or no shared port was free); skipping");
        return;
    };
    let dns = FakeDns::new(vec![vec![v4(2)], vec![v4(1)]]);
    let proxy = proxy_resolving_with(&dns).await;
    let client = client();
    let port = allowed.addr.port();

    let first = get(&client, &proxy.url(&format!("http://rebind.test:{port}/first.gif"))).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert!(first.body == GIF);
    assert_eq!(dns.lookups.load(Ordering::SeqCst), 1, "one lookup per connection");

    // A different path, so the cache does not answer; the upstream closed its connection, so a new one (and a
    // new lookup) is needed. The fake DNS now says 127.0.0.1.
    let second = get(&client, &proxy.url(&format!("http://rebind.test:{port}/second.gif"))).await;
    let text = String::from_utf8_lossy(&second.body);
    assert_eq!(second.status, 403, "{text}");
    // Refused as a non-public address, without telling the client which address the name resolved to.
    assert!(text.contains("forbidden target: the host resolves to a non-public address"), "{text}");
    assert!(!text.contains("127.0.0.1") && !text.contains("loopback"), "the resolved address is disclosed: {text}");
    assert_eq!(dns.lookups.load(Ordering::SeqCst), 2, "check and connect must share one lookup");

    assert_eq!(allowed.connections(), 1);
    assert_eq!(forbidden.connections(), 0, "the rebound address was contacted");
    proxy.stop().await;
}

/// One answer mixing an allowed and a forbidden address is refused whole: a connector that falls back from
/// the first to the second would otherwise reach the forbidden one.
#[tokio::test]
async fn an_answer_mixing_allowed_and_forbidden_addresses_is_refused_whole() {
    let Some((allowed, forbidden)) = two_listeners().await else {
        eprintln!("127.0.0.2 cannot be bound here; skipping");
        return;
    };
    let dns = FakeDns::new(vec![vec![v4(2), v4(1)]]);
    let proxy = proxy_resolving_with(&dns).await;
    let reply = get(&client(), &proxy.url(&format!("http://rebind.test:{}/a.gif", allowed.addr.port()))).await;
    assert_eq!(reply.status, 403, "{:?}", reply.body);
    assert_eq!(allowed.connections() + forbidden.connections(), 0);
    proxy.stop().await;
}

/// Redirects resolve again, through the same checking resolver: a redirect to the same name after the
/// DNS answer changed is refused.
#[tokio::test]
async fn a_redirect_back_to_a_rebound_name_is_refused() {
    if !can_bind("127.0.0.2").await {
        eprintln!("127.0.0.2 cannot be bound here; skipping");
        return;
    }
    let mut pair = None;
    for _ in 0..20 {
        let first = RawUpstream::bind("127.0.0.2:0".parse().unwrap(), |request| {
            let port = header_in(request, "host").and_then(|host| host.rsplit(':').next()).unwrap_or_default();
            redirect("302 Found", &format!("http://rebind.test:{port}/next.gif"))
        })
        .await
        .expect("bind 127.0.0.2");
        let other = SocketAddr::new(v4(1), first.addr.port());
        if let Some(forbidden) = RawUpstream::bind(other, |_| ok("image/gif", GIF)).await {
            pair = Some((first, forbidden));
            break;
        }
    }
    let Some((first, forbidden)) = pair else {
        eprintln!("no shared port was free; skipping");
        return;
    };
    let dns = FakeDns::new(vec![vec![v4(2)], vec![v4(1)]]);
    let proxy = proxy_resolving_with(&dns).await;
    let reply = get(&client(), &proxy.url(&format!("http://rebind.test:{}/start.gif", first.addr.port()))).await;
    assert_eq!(reply.status, 403, "{:?}", reply.body);
    assert_eq!(first.connections(), 1);
    assert_eq!(forbidden.connections(), 0);
    assert_eq!(dns.lookups.load(Ordering::SeqCst), 2);
    proxy.stop().await;
}
