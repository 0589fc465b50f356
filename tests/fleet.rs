//! Fleet mode (issue 11): several `mirage serve` processes sharing a cache tier in a real S3 server (moto's, on
//! loopback): a second node answers `HIT-SHARED` without asking upstream, variants included; a corrupt object is
//! never served; one upstream fetch for a cold image however many nodes ask at once; a purge reaches every node
//! within the poll; the store going down fails no request and its return restores sharing; an empty disk refills
//! from the store; `mirage warm` fills the fleet. Each test skips, saying why, when python3 or moto is missing.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::s3::S3Server;
use common::{Proxy, Reply, Route, Upstream, client, get, photo, send};
use mirage::request::{ImageRequest, Target, parse_route};
use tempfile::TempDir;

/// The admin token of every node.
const TOKEN: &str = "fleet-admin-token";
/// Where the nodes keep their objects in the bucket.
const PREFIX: &str = "edge";
/// How long a test waits for a background write to reach the store.
const WRITE_LIMIT: Duration = Duration::from_secs(5);
/// Two variants of every image: a resize in the original format and a format change.
const VARIANTS: [&str; 2] = ["w=100", "w=90,f=png"];

// ---------------------------------------------------------------------------------------------------------------
// The fleet: one S3 server, one upstream, nodes that share the bucket
// ---------------------------------------------------------------------------------------------------------------

/// One `mirage serve` process with its own cache directory.
struct Node {
    proxy: Proxy,
    _dir: TempDir,
}

struct Fleet {
    s3: S3Server,
    upstream: Upstream,
    /// `None` once stopped, so indexes stay stable.
    nodes: Vec<Option<Node>>,
    /// `--shared-probe-interval` of the nodes started from now on.
    probe_interval: &'static str,
}

impl Fleet {
    /// An S3 server with `bucket` and an upstream; `None` (the test skips) when moto is missing.
    async fn start(bucket: &str) -> Option<Fleet> {
        let Some(s3) = S3Server::start(bucket).await else {
            eprintln!("skipping: no S3 server (install moto: pip install 'moto[server]')");
            return None;
        };
        Some(Fleet { s3, upstream: Upstream::start().await, nodes: Vec::new(), probe_interval: "2s" })
    }

    /// The flags every node gets: the shared cache with a 1 s timeout, a 1 s purge poll, an admin listener.
    fn node_flags(&self) -> Vec<String> {
        let mut flags = vec!["--shared-cache".to_owned(), self.s3.url(PREFIX)];
        flags.extend(["--shared-timeout", "1s", "--shared-probe-interval", self.probe_interval].map(str::to_owned));
        flags
            .extend(["--purge-poll", "1s", "--admin-listen", "127.0.0.1:0", "--admin-token", TOKEN].map(str::to_owned));
        flags
    }

    /// Starts a node with an empty cache directory; returns its index.
    async fn node(&mut self) -> usize {
        let flags = self.node_flags();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        self.start_node(&flags, &self.s3.env()).await
    }

    /// Starts a node with `flags` and `envs` (and no others) and an empty cache directory; returns its index.
    async fn start_node(&mut self, flags: &[&str], envs: &[(String, String)]) -> usize {
        let dir = tempfile::tempdir().unwrap();
        let proxy = Proxy::local_env(dir.path(), flags, envs).await;
        self.nodes.push(Some(Node { proxy, _dir: dir }));
        self.nodes.len() - 1
    }

    fn proxy(&self, node: usize) -> &Proxy {
        &self.nodes[node].as_ref().expect("the node is running").proxy
    }

    /// Stops the node gracefully (it must exit with success); returns its log.
    async fn stop(&mut self, node: usize) -> String {
        let stopped = self.nodes[node].take().expect("the node is running");
        stopped.proxy.stop().await
    }

    /// Stops every running node gracefully.
    async fn stop_all(&mut self) {
        for node in 0..self.nodes.len() {
            if self.nodes[node].is_some() {
                self.stop(node).await;
            }
        }
    }

    /// The upstream's image at `path` (installing the route): its target URL.
    fn image(&self, path: &str) -> String {
        self.upstream.route(path, Route::image(photo()));
        self.upstream.url(path)
    }

    /// GET the original of `target` through `node`.
    async fn get(&self, node: usize, target: &str) -> Reply {
        get(&client(), &self.proxy(node).url(target)).await
    }

    /// GET the variant `options` of `target` through `node`.
    async fn get_variant(&self, node: usize, options: &str, target: &str) -> Reply {
        get(&client(), &self.proxy(node).path(&format!("/{options}/?{target}"))).await
    }

    /// `node`'s metrics, as series text (`name{label="value"}`) to value.
    async fn metrics(&self, node: usize) -> BTreeMap<String, f64> {
        let reply = send(client().get(self.proxy(node).admin("/metrics")).bearer_auth(TOKEN)).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let text = std::str::from_utf8(&reply.body).expect("UTF-8 exposition");
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.rsplit_once(' '))
            .filter_map(|(series, value)| Some((series.to_owned(), value.parse().ok()?)))
            .collect()
    }

    /// One series of `node`'s metrics (e.g. `mirage_shared_lookups_total{result="hit"}`); 0 when the series is
    /// absent (a counter not yet incremented may be left out), but its family must be there: a misnamed metric
    /// fails here rather than reading as 0.
    async fn metric(&self, node: usize, series: &str) -> f64 {
        let metrics = self.metrics(node).await;
        let family = series.split('{').next().unwrap_or(series);
        let in_family = |name: &String| name == family || name.starts_with(&format!("{family}{{"));
        assert!(
            metrics.keys().any(in_family),
            "node {node} exposes no {family}; its shared-tier series: {:?}",
            metrics.keys().filter(|name| name.starts_with("mirage_shared")).collect::<Vec<_>>()
        );
        metrics.get(series).copied().unwrap_or(0.0)
    }

    /// Waits (at most [`WRITE_LIMIT`]) for a node's background write of `key`; returns the object. Panics,
    /// listing the bucket, when it never comes.
    async fn written(&self, key: &str) -> Bytes {
        match self.s3.wait_for(key, WRITE_LIMIT).await {
            Some(object) => object,
            None => panic!("{key} was never written; the bucket holds {:?}", self.s3.keys(PREFIX).await),
        }
    }

    /// Polls `node`'s `series` (every 50 ms, at most `limit`) until it is `value`; returns the last value read.
    async fn wait_for_metric(&self, node: usize, series: &str, value: f64, limit: Duration) -> f64 {
        let deadline = Instant::now() + limit;
        loop {
            let read = self.metric(node, series).await;
            if read == value || Instant::now() >= deadline {
                return read;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every node's log and the S3 server's, for a failure message.
    fn logs(&self) -> String {
        let mut all = String::new();
        for (index, node) in self.nodes.iter().enumerate() {
            if let Some(node) = node {
                let _ = write!(all, "--- node {index}:\n{}", node.proxy.log());
            }
        }
        let _ = write!(all, "--- S3 server:\n{}", self.s3.log());
        all
    }
}

impl Drop for Fleet {
    /// A failing test shows what every process said: the cause is usually in a node's log.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The layout in the bucket
// ---------------------------------------------------------------------------------------------------------------

/// `{PREFIX}/v1/{source-key-hex}`: where everything about `target` lives.
fn source_dir(target: &str) -> String {
    let key = ImageRequest::source_key_of(&Target::parse(target).unwrap());
    format!("{PREFIX}/v1/{}", key.to_hex())
}

/// The object of `target`'s original.
fn source_object(target: &str) -> String {
    format!("{}/source", source_dir(target))
}

/// The object of `target`'s variant `options` (as the transform route spells them; no `Accept` involved).
fn variant_object(options: &str, target: &str) -> String {
    let Ok(mirage::request::Route::Image { request, .. }) = parse_route(&format!("/{options}/"), target, None) else {
        panic!("/{options}/?{target} is no image request");
    };
    format!("{}/v/{}", source_dir(target), request.key().to_hex())
}

/// Whether `object` holds `body` in the disk entry format: a header, then the body as its last bytes.
fn holds(object: &[u8], body: &[u8]) -> bool {
    object.len() > body.len() && object.ends_with(body)
}

/// The 99th percentile of `samples`.
fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99).div_ceil(100) - 1]
}

/// Asserts a 200 whose body is `body` and whose `X-Cache` is `x_cache`.
#[track_caller]
fn assert_served(reply: &Reply, x_cache: &str, body: &Bytes, what: &str) {
    assert_eq!((reply.status, reply.x_cache()), (200, x_cache), "{what}");
    assert!(reply.body == *body, "{what}: the body differs from the expected image ({} bytes)", reply.body.len());
}

// ---------------------------------------------------------------------------------------------------------------
// The harness itself
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_s3_harness_starts_stops_restarts_and_edits_objects() {
    let Some(mut s3) = S3Server::start("fleet-harness").await else {
        eprintln!("skipping: no S3 server");
        return;
    };
    let body = Bytes::from_static(b"header, then body");
    assert!(!s3.exists("p/v1/a/source").await);
    assert_eq!(s3.get("p/v1/a/source").await, None);
    s3.put("p/v1/a/source", body.clone()).await;
    s3.put("p/v1/b/source", body.clone()).await;
    s3.put("other/x", body.clone()).await;
    assert!(s3.exists("p/v1/a/source").await);
    assert_eq!(s3.get("p/v1/a/source").await, Some(body.clone()));
    assert_eq!(s3.keys("p/v1").await, ["p/v1/a/source", "p/v1/b/source"]);
    assert_eq!(s3.wait_for("p/v1/b/source", Duration::from_secs(1)).await, Some(body.clone()));
    assert_eq!(s3.wait_for("p/v1/c/source", Duration::from_millis(200)).await, None);
    s3.delete("p/v1/b/source").await;
    assert_eq!(s3.keys("p").await, ["p/v1/a/source"]);

    // Create-only writes behave as in S3, also when they race (the script serialises moto's writes): a fill
    // lease is taken by exactly one of many.
    assert!(!s3.create("p/v1/a/source", body.clone()).await, "created over an existing object");
    let racing = (0..20).map(|i| s3.create("p/v1/a/lease", Bytes::from(format!("node {i}"))));
    let created = futures_util::future::join_all(racing).await;
    assert_eq!(created.iter().filter(|created| **created).count(), 1, "{created:?}");
    s3.delete("p/v1/a/lease").await;

    // Requests must be signed (moto refuses anonymous ones), with the pairs `env` gives a node.
    let env: BTreeMap<String, String> = s3.env().into_iter().collect();
    assert_eq!(env["AWS_ENDPOINT_URL"], s3.endpoint());
    assert_eq!((env["AWS_REGION"].as_str(), env["AWS_ALLOW_HTTP"].as_str()), ("us-east-1", "true"));
    let anonymous = get(&client(), &format!("{}/fleet-harness/p/v1/a/source", s3.endpoint())).await;
    assert_eq!(anonymous.status, 403);

    // Stopped: refused. Restarted on the same port: the bucket is back, empty, and usable.
    let port = s3.port();
    s3.stop().await;
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "still listening after stop");
    s3.restart().await;
    assert_eq!(s3.port(), port);
    assert_eq!(s3.keys("p").await, Vec::<String>::new());
    s3.put("p/v1/a/source", body.clone()).await;
    assert_eq!(s3.get("p/v1/a/source").await, Some(body.clone()));

    // Paused: a connection is accepted but never answered (a hanging store). Resumed: it answers again.
    s3.pause();
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    let mut stream = stream.expect("the kernel accepts for a paused server");
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET /fleet-harness HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut buffer = [0u8; 64];
    let read =
        tokio::time::timeout(Duration::from_millis(500), tokio::io::AsyncReadExt::read(&mut stream, &mut buffer));
    assert!(read.await.is_err(), "a paused server answered");
    s3.resume();
    assert_eq!(s3.get("p/v1/a/source").await, Some(body));
}

// ---------------------------------------------------------------------------------------------------------------
// Sharing
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_second_node_answers_hit_shared_without_asking_upstream() {
    let Some(mut fleet) = Fleet::start("fleet-second-node").await else { return };
    let (a, b) = (fleet.node().await, fleet.node().await);
    let target = fleet.image("/a.jpg");

    assert_served(&fleet.get(a, &target).await, "MISS", &photo(), "node A, cold");
    assert_eq!(fleet.upstream.hits("/a.jpg"), 1);
    // The write is asynchronous: wait until the original is in the bucket, at its place in the layout.
    let object = fleet.written(&source_object(&target)).await;
    assert!(holds(&object, &photo()), "the object is not header + image ({} bytes)", object.len());

    let shared = fleet.get(b, &target).await;
    assert_served(&shared, "HIT-SHARED", &photo(), "node B, from the store");
    assert_eq!(shared.header("content-type"), "image/jpeg");
    assert_served(&fleet.get(b, &target).await, "HIT-MEMORY", &photo(), "node B, promoted into memory");
    assert_served(&fleet.get(a, &target).await, "HIT-MEMORY", &photo(), "node A");
    assert_eq!(fleet.upstream.hits("/a.jpg"), 1, "node B asked upstream");
    assert_eq!(fleet.metric(b, r#"mirage_shared_lookups_total{result="hit"}"#).await, 1.0);
    assert_eq!(fleet.metric(b, "mirage_shared_breaker_open").await, 0.0);
    fleet.stop_all().await;
}

#[tokio::test]
async fn variants_are_shared_between_nodes() {
    let Some(mut fleet) = Fleet::start("fleet-variants").await else { return };
    let (a, b) = (fleet.node().await, fleet.node().await);
    let target = fleet.image("/a.jpg");

    assert_served(&fleet.get(a, &target).await, "MISS", &photo(), "node A, original");
    let mut made = Vec::new();
    for options in VARIANTS {
        let variant = fleet.get_variant(a, options, &target).await;
        assert_eq!((variant.status, variant.x_cache()), (200, "MISS"), "node A, {options}");
        assert_ne!(variant.body, photo(), "{options} is no transform");
        made.push(variant.body);
    }
    assert_eq!(fleet.upstream.hits("/a.jpg"), 1, "variants are made from the cached original");
    for (options, body) in VARIANTS.iter().zip(&made) {
        let object = fleet.written(&variant_object(options, &target)).await;
        assert!(holds(&object, body), "{options}: the object is not header + variant");
    }
    fleet.written(&source_object(&target)).await;
    // Nothing but the original, the variants and perhaps the fill lease under the source's directory.
    let mut expected = vec![source_object(&target)];
    expected.extend(VARIANTS.iter().map(|options| variant_object(options, &target)));
    expected.sort();
    let lease = format!("{}/lease", source_dir(&target));
    let stored: Vec<String> = fleet.s3.keys(PREFIX).await.into_iter().filter(|key| *key != lease).collect();
    assert_eq!(stored, expected);

    // Node B: the variants first (it needs no original to serve them), then the original.
    for (options, body) in VARIANTS.iter().zip(&made) {
        assert_served(&fleet.get_variant(b, options, &target).await, "HIT-SHARED", body, &format!("node B, {options}"));
    }
    assert_served(&fleet.get(b, &target).await, "HIT-SHARED", &photo(), "node B, original");
    for (options, body) in VARIANTS.iter().zip(&made) {
        assert_served(&fleet.get_variant(b, options, &target).await, "HIT-MEMORY", body, &format!("again, {options}"));
    }
    assert_eq!(fleet.upstream.hits("/a.jpg"), 1, "node B asked upstream");
    fleet.stop_all().await;
}

#[tokio::test]
async fn a_corrupt_object_is_never_served_and_is_replaced() {
    let Some(mut fleet) = Fleet::start("fleet-corrupt").await else { return };
    let (a, b) = (fleet.node().await, fleet.node().await);
    let target = fleet.image("/a.jpg");
    let key = source_object(&target);

    assert_served(&fleet.get(a, &target).await, "MISS", &photo(), "node A");
    let good = fleet.written(&key).await;
    // One bit flipped inside the image, near its end: only the header's SHA-256 can tell.
    let mut bad = good.to_vec();
    let near_end = bad.len() - 10;
    bad[near_end] ^= 0x01;
    let bad = Bytes::from(bad);
    fleet.s3.put(&key, bad.clone()).await;

    assert_served(&fleet.get(b, &target).await, "MISS", &photo(), "node B, over a corrupt object");
    assert_eq!(fleet.upstream.hits("/a.jpg"), 2, "the corrupt object was not treated as a miss");
    assert_eq!(fleet.metric(b, r#"mirage_shared_lookups_total{result="corrupt"}"#).await, 1.0);
    // Node B deleted it and wrote the good one in its place.
    let replaced = fleet.s3.wait_for_object(&key, WRITE_LIMIT, |object| *object != bad).await;
    let replaced = replaced.expect("the corrupt object was never replaced");
    assert!(holds(&replaced, &photo()), "the replacement is not header + image");

    // A third node gets the good copy from the store.
    let c = fleet.node().await;
    assert_served(&fleet.get(c, &target).await, "HIT-SHARED", &photo(), "node C, the replacement");
    assert_eq!(fleet.upstream.hits("/a.jpg"), 2);

    // A truncated object (a write cut short) is no better: never served, counted, fetched again.
    let other = fleet.image("/b.jpg");
    let other_key = source_object(&other);
    assert_served(&fleet.get(a, &other).await, "MISS", &photo(), "node A, second image");
    let whole = fleet.written(&other_key).await;
    fleet.s3.put(&other_key, whole.slice(..whole.len() - photo().len() / 2)).await;
    assert_served(&fleet.get(c, &other).await, "MISS", &photo(), "node C, over a truncated object");
    assert_eq!(fleet.upstream.hits("/b.jpg"), 2);
    assert_eq!(fleet.metric(c, r#"mirage_shared_lookups_total{result="corrupt"}"#).await, 1.0);
    fleet.stop_all().await;
}

// ---------------------------------------------------------------------------------------------------------------
// One fill per image across the fleet
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_concurrent_cold_requests_over_three_nodes_make_one_upstream_request() {
    let Some(mut fleet) = Fleet::start("fleet-lease-concurrent").await else { return };
    let nodes = [fleet.node().await, fleet.node().await, fleet.node().await];
    // A slow origin, so that every request arrives while the first fill is still in flight.
    fleet.upstream.route("/slow.jpg", Route::image(photo()).delay(Duration::from_millis(300)));
    let target = fleet.upstream.url("/slow.jpg");

    let client = client();
    let requests = (0..30).map(|i| {
        let url = fleet.proxy(nodes[i % 3]).url(&target);
        let client = client.clone();
        tokio::spawn(async move { get(&client, &url).await })
    });
    let replies = futures_util::future::join_all(requests).await;
    let mut x_caches = BTreeMap::<String, usize>::new();
    for reply in replies {
        let reply = reply.expect("request task");
        assert_eq!((reply.status, reply.body == photo()), (200, true), "a concurrent request, {}", reply.x_cache());
        *x_caches.entry(reply.x_cache().to_owned()).or_default() += 1;
    }
    assert_eq!(fleet.upstream.hits("/slow.jpg"), 1, "X-Cache of the answers: {x_caches:?}");
    assert!(
        x_caches.keys().all(|x_cache| ["MISS", "HIT-SHARED", "HIT-MEMORY"].contains(&x_cache.as_str())),
        "{x_caches:?}"
    );
    assert!(x_caches.contains_key("HIT-SHARED"), "the other nodes did not wait for the store: {x_caches:?}");
    let mut won = 0.0;
    for node in nodes {
        won += fleet.metric(node, r#"mirage_shared_leases_total{result="won"}"#).await;
    }
    assert_eq!(won, 1.0, "exactly one node won the fill lease");
    fleet.stop_all().await;
}

#[tokio::test]
async fn sequential_requests_to_different_nodes_make_one_upstream_request() {
    let Some(mut fleet) = Fleet::start("fleet-lease-sequential").await else { return };
    let nodes = [fleet.node().await, fleet.node().await, fleet.node().await];
    fleet.upstream.route("/slow.jpg", Route::image(photo()).delay(Duration::from_millis(300)));
    let target = fleet.upstream.url("/slow.jpg");

    // No waiting between the requests: the next node asks while the first node's write may still be queued, and
    // must find the object or the lease, not go upstream.
    assert_served(&fleet.get(nodes[0], &target).await, "MISS", &photo(), "first node");
    assert_served(&fleet.get(nodes[1], &target).await, "HIT-SHARED", &photo(), "second node");
    assert_served(&fleet.get(nodes[2], &target).await, "HIT-SHARED", &photo(), "third node");
    assert_eq!(fleet.upstream.hits("/slow.jpg"), 1);
    fleet.stop_all().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Purge
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_purge_through_one_node_reaches_the_others_within_the_poll() {
    let Some(mut fleet) = Fleet::start("fleet-purge").await else { return };
    let (a, b) = (fleet.node().await, fleet.node().await);
    let target = fleet.image("/a.jpg");

    // Node A fills the original and two variants; node B has them all from the store.
    assert_served(&fleet.get(a, &target).await, "MISS", &photo(), "node A");
    for options in VARIANTS {
        assert_eq!(fleet.get_variant(a, options, &target).await.x_cache(), "MISS", "node A, {options}");
    }
    for key in [source_object(&target), variant_object(VARIANTS[0], &target), variant_object(VARIANTS[1], &target)] {
        fleet.written(&key).await;
    }
    assert_served(&fleet.get(b, &target).await, "HIT-SHARED", &photo(), "node B");
    for options in VARIANTS {
        assert_eq!(fleet.get_variant(b, options, &target).await.x_cache(), "HIT-SHARED", "node B, {options}");
    }
    assert_eq!(fleet.get(b, &target).await.x_cache(), "HIT-MEMORY");
    assert_eq!(fleet.upstream.hits("/a.jpg"), 1);

    let purge =
        send(client().post(fleet.proxy(a).admin("/purge")).bearer_auth(TOKEN).body(format!("{target}\n"))).await;
    assert_eq!(purge.status, 200, "{:?}", purge.body);
    let purged = Instant::now();
    // The record that tells the other nodes: `purges/{13-digit unix millis}-{source key}`.
    let source_key = ImageRequest::source_key_of(&Target::parse(&target).unwrap()).to_hex();
    let is_record = |key: &str| {
        let name = key.strip_prefix(&format!("{PREFIX}/v1/purges/")).unwrap_or_default();
        name.len() == 13 + 1 + 64
            && name[..13].bytes().all(|b| b.is_ascii_digit())
            && name[13..] == format!("-{source_key}")
    };
    let mut records = Vec::new();
    for _ in 0..40 {
        records = fleet.s3.keys(&format!("{PREFIX}/v1/purges")).await;
        if records.iter().any(|key| is_record(key)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(records.iter().any(|key| is_record(key)), "no purge record for {source_key} in {records:?}");

    // Node B hears of it by polling the records: within the poll (1 s) and 2 s more, it has dropped everything.
    // Asking B the original until it is no memory hit has no side effect until then; the first other answer is
    // the one that counts.
    let limit = Duration::from_secs(3);
    let original = loop {
        let reply = fleet.get(b, &target).await;
        if reply.x_cache() != "HIT-MEMORY" || purged.elapsed() > limit {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_served(&original, "MISS", &photo(), "node B, the original after the purge");
    assert!(purged.elapsed() <= limit + Duration::from_millis(500), "node B took {:?}", purged.elapsed());
    for options in VARIANTS {
        assert_eq!(fleet.get_variant(b, options, &target).await.x_cache(), "MISS", "node B, {options} after the purge");
    }
    assert_eq!(fleet.upstream.hits("/a.jpg"), 2, "the original was fetched again once");
    fleet.stop_all().await;
}

// ---------------------------------------------------------------------------------------------------------------
// The store failing
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_store_going_down_fails_no_request_and_coming_back_restores_hit_shared() {
    let Some(mut fleet) = Fleet::start("fleet-store-down").await else { return };
    let (a, b) = (fleet.node().await, fleet.node().await);
    let cached = fleet.image("/cached.jpg");
    assert_served(&fleet.get(a, &cached).await, "MISS", &photo(), "node A");
    fleet.written(&source_object(&cached)).await;
    assert_served(&fleet.get(b, &cached).await, "HIT-SHARED", &photo(), "node B");

    // Down: connections refused. Cached images answer from the local tiers, new ones from upstream on each node.
    fleet.s3.stop().await;
    for node in [a, b] {
        assert_served(&fleet.get(node, &cached).await, "HIT-MEMORY", &photo(), "cached, store down");
    }
    for path in ["/new-1.jpg", "/new-2.jpg"] {
        let target = fleet.image(path);
        assert_served(&fleet.get(a, &target).await, "MISS", &photo(), &format!("node A, {path}, store down"));
        assert_served(&fleet.get(b, &target).await, "MISS", &photo(), &format!("node B, {path}, store down"));
        assert_eq!(fleet.upstream.hits(path), 2);
    }
    for node in [a, b] {
        let open = fleet.wait_for_metric(node, "mirage_shared_breaker_open", 1.0, Duration::from_secs(3)).await;
        assert_eq!(open, 1.0, "node {node}: the breaker did not open with the store down");
    }
    // With the breaker open, cached requests stay in the local-hit range, far below the 1 s shared timeout, and
    // new images are not held up by the store either.
    let mut cached_times = Vec::new();
    for round in 0..55 {
        let started = Instant::now();
        assert_served(&fleet.get(b, &cached).await, "HIT-MEMORY", &photo(), "cached, breaker open");
        if round >= 5 {
            cached_times.push(started.elapsed());
        }
    }
    assert!(p99(cached_times.clone()) < Duration::from_millis(300), "cached, store down: {cached_times:?}");
    let mut new_times = Vec::new();
    for round in 0..5 {
        let target = fleet.image(&format!("/down-{round}.jpg"));
        let started = Instant::now();
        assert_served(&fleet.get(a, &target).await, "MISS", &photo(), "new, breaker open");
        new_times.push(started.elapsed());
    }
    assert!(new_times.iter().all(|time| *time < Duration::from_secs(1)), "new, store down: {new_times:?}");

    // Back on the same port, empty: without restarting either node, sharing resumes once the breaker probes
    // again (2 s). Each attempt uses a new image, so an attempt made while a breaker is still open costs nothing.
    fleet.s3.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let path = format!("/back-{attempts}.jpg");
        let target = fleet.image(&path);
        assert_served(&fleet.get(a, &target).await, "MISS", &photo(), &format!("node A, {path}, store back"));
        if fleet.s3.wait_for(&source_object(&target), Duration::from_secs(2)).await.is_some() {
            let reply = fleet.get(b, &target).await;
            assert_eq!((reply.status, reply.body == photo()), (200, true), "node B, {path}, store back");
            if reply.x_cache() == "HIT-SHARED" {
                assert_eq!(fleet.upstream.hits(&path), 1);
                break;
            }
        }
        assert!(Instant::now() < deadline, "HIT-SHARED did not come back after {attempts} new images");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for node in [a, b] {
        let open = fleet.wait_for_metric(node, "mirage_shared_breaker_open", 0.0, Duration::from_secs(5)).await;
        assert_eq!(open, 0.0, "node {node}: the breaker stayed open");
    }
    fleet.stop_all().await;
}

#[tokio::test]
async fn a_hanging_store_costs_one_timeout_then_the_breaker_skips_it() {
    let Some(mut fleet) = Fleet::start("fleet-store-hangs").await else { return };
    // No probe during the test: every request after the breaker opened must skip the store.
    fleet.probe_interval = "60s";
    let a = fleet.node().await;
    let cached = fleet.image("/cached.jpg");
    assert_served(&fleet.get(a, &cached).await, "MISS", &photo(), "before");
    fleet.written(&source_object(&cached)).await;

    // Paused: connections are accepted, nothing answers. The first new image waits out the 1 s timeout (a lookup,
    // perhaps a lease), not the client's 10 s.
    fleet.s3.pause();
    let first = fleet.image("/first.jpg");
    let started = Instant::now();
    assert_served(&fleet.get(a, &first).await, "MISS", &photo(), "first new image, store hanging");
    assert!(started.elapsed() < Duration::from_secs(4), "the first miss took {:?}", started.elapsed());
    let open = fleet.wait_for_metric(a, "mirage_shared_breaker_open", 1.0, Duration::from_secs(3)).await;
    assert_eq!(open, 1.0, "the breaker did not open");

    // Open: new images go straight upstream, cached ones answer from memory, both in the local range.
    let skipped_before = fleet.metric(a, r#"mirage_shared_lookups_total{result="skipped"}"#).await;
    let mut new_times = Vec::new();
    for round in 0..10 {
        let target = fleet.image(&format!("/new-{round}.jpg"));
        let started = Instant::now();
        assert_served(&fleet.get(a, &target).await, "MISS", &photo(), "new image, breaker open");
        new_times.push(started.elapsed());
    }
    assert!(p99(new_times.clone()) < Duration::from_millis(300), "new images, breaker open: {new_times:?}");
    let mut cached_times = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        assert_served(&fleet.get(a, &cached).await, "HIT-MEMORY", &photo(), "cached, breaker open");
        cached_times.push(started.elapsed());
    }
    assert!(p99(cached_times.clone()) < Duration::from_millis(300), "cached, breaker open: {cached_times:?}");
    let skipped = fleet.metric(a, r#"mirage_shared_lookups_total{result="skipped"}"#).await - skipped_before;
    assert!(skipped >= 10.0, "{skipped} lookups skipped for 10 new images");
    fleet.s3.resume();
    fleet.stop_all().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Refilling from the store
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_node_restarted_with_an_empty_disk_answers_hit_shared() {
    let Some(mut fleet) = Fleet::start("fleet-empty-disk").await else { return };
    let a = fleet.node().await;
    let target = fleet.image("/a.jpg");
    assert_served(&fleet.get(a, &target).await, "MISS", &photo(), "before the restart");
    fleet.written(&source_object(&target)).await;
    fleet.stop(a).await;

    // A new cache directory, and the store named through the environment this time (MIRAGE_SHARED_CACHE).
    let flags = fleet.node_flags();
    assert_eq!(flags[0], "--shared-cache");
    let flags: Vec<&str> = flags[2..].iter().map(String::as_str).collect();
    let mut envs = fleet.s3.env();
    envs.push(("MIRAGE_SHARED_CACHE".to_owned(), fleet.s3.url(PREFIX)));
    let restarted = fleet.start_node(&flags, &envs).await;
    assert_served(&fleet.get(restarted, &target).await, "HIT-SHARED", &photo(), "after the restart");
    assert_served(&fleet.get(restarted, &target).await, "HIT-MEMORY", &photo(), "again");
    assert_eq!(fleet.upstream.hits("/a.jpg"), 1);
    fleet.stop_all().await;
}

/// A store without create-only writes (here S3 told so with `AWS_CONDITIONAL_PUT=disabled`, as for a server that
/// lacks them): the node says so at start, still shares entries, and fills without a lease (per-node coalescing).
#[tokio::test]
async fn a_store_without_conditional_writes_is_said_at_start_and_fills_still_work() {
    let Some(mut fleet) = Fleet::start("fleet-no-conditional").await else { return };
    let flags = fleet.node_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut envs = fleet.s3.env();
    envs.push(("AWS_CONDITIONAL_PUT".to_owned(), "disabled".to_owned()));
    let a = fleet.start_node(&flags, &envs).await;
    let b = fleet.start_node(&flags, &envs).await;
    let target = fleet.image("/a.jpg");
    assert_served(&fleet.get(a, &target).await, "MISS", &photo(), "node A");
    fleet.written(&source_object(&target)).await;
    assert_served(&fleet.get(b, &target).await, "HIT-SHARED", &photo(), "node B");
    assert_eq!(fleet.upstream.hits("/a.jpg"), 1);
    assert_eq!(fleet.metric(a, r#"mirage_shared_leases_total{result="won"}"#).await, 0.0);
    assert_eq!(fleet.metric(a, r#"mirage_shared_leases_total{result="unsupported"}"#).await, 1.0);
    assert!(!fleet.s3.keys(PREFIX).await.iter().any(|key| key.ends_with("/lease")), "a lease was written");
    let log = fleet.stop(a).await;
    assert!(log.contains("does not support create-only writes"), "not said at start:\n{log}");
    fleet.stop_all().await;
}

#[tokio::test]
async fn warm_with_shared_cache_fills_the_fleet() {
    let Some(mut fleet) = Fleet::start("fleet-warm").await else { return };
    let targets = [fleet.image("/a.jpg"), fleet.image("/b.jpg")];
    let work = tempfile::tempdir().unwrap();
    let list = work.path().join("images.txt");
    std::fs::write(&list, targets.join("\n") + "\n").unwrap();
    let cache = work.path().join("cache");
    let shared = fleet.s3.url(PREFIX);
    let args = [list.to_str().unwrap(), "--cache-dir", cache.to_str().unwrap(), "--allow-private-networks"];
    let (code, output) =
        warm(&args, &["--shared-cache", &shared, "--variant", "width=100", "--quiet"], &fleet.s3.env()).await;
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(fleet.upstream.total_hits(), 2, "{output}");

    // Warm has flushed its writes before exiting: nothing to wait for.
    let mut variants = Vec::new();
    for target in &targets {
        let original = fleet.s3.get(&source_object(target)).await;
        assert!(original.is_some_and(|object| holds(&object, &photo())), "{target}: no original in the store");
        let variant = fleet.s3.get(&variant_object("w=100", target)).await;
        let Some(variant) = variant else { panic!("{target}: no variant in {:?}", fleet.s3.keys(PREFIX).await) };
        variants.push(variant);
    }

    // A fresh node (empty disk) answers everything from the store.
    let node = fleet.node().await;
    for (target, object) in targets.iter().zip(&variants) {
        assert_served(&fleet.get(node, target).await, "HIT-SHARED", &photo(), target);
        let variant = fleet.get_variant(node, "w=100", target).await;
        assert_eq!((variant.status, variant.x_cache()), (200, "HIT-SHARED"), "{target}, w=100");
        assert!(holds(object, &variant.body), "{target}, w=100: not the warmed variant");
    }
    assert_eq!(fleet.upstream.total_hits(), 2, "the fresh node went upstream");
    fleet.stop_all().await;
}

/// `mirage warm ARGS... FLAGS...` with `envs` (and no inherited `MIRAGE_*`, `AWS_*` or `RUST_LOG`), to the end
/// (at most 30 s): its exit code and everything it printed.
async fn warm(args: &[&str], flags: &[&str], envs: &[(String, String)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mirage"));
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("MIRAGE_") || text.starts_with("AWS_") || text == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command.arg("warm").args(args).args(flags).envs(envs.iter().map(|(name, value)| (name, value)));
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = child.wait_with_output().unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code(), printed)
}

/// A node started while its store cannot be reached (nothing listens at the endpoint) logs a warning and serves:
/// the first miss costs at most the store's refusal, then the breaker skips the store. Needs no S3 server.
#[tokio::test]
async fn a_node_started_with_the_store_unreachable_warns_and_serves() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    let dead = common::dead_addr().await;
    let envs: Vec<(String, String)> = [
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ENDPOINT_URL", format!("http://{dead}")),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--shared-cache", "s3://fleet/edge", "--shared-timeout", "1s", "--admin-listen", "127.0.0.1:0"];
    let proxy = Proxy::local_env(dir.path(), &flags, &envs).await;
    let started = Instant::now();
    let reply = get(&client(), &proxy.url(&upstream.url("/a.jpg"))).await;
    assert_served(&reply, "MISS", &photo(), "a miss with the store unreachable");
    assert!(started.elapsed() < Duration::from_secs(3), "the miss took {:?}", started.elapsed());
    assert_served(&get(&client(), &proxy.url(&upstream.url("/a.jpg"))).await, "HIT-MEMORY", &photo(), "again");
    let metrics = send(client().get(proxy.admin("/metrics"))).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(text.contains("mirage_shared_breaker_open 1"), "the breaker is not open:\n{text}");
    let log = proxy.stop().await;
    assert!(log.contains("shared cache failing"), "no warning about the store in the log:\n{log}");
    assert_eq!(upstream.hits("/a.jpg"), 1);
}
