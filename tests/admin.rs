//! The admin listener against a real `mirage serve` process: the token, what the public port never serves, the
//! refusal to expose an unprotected admin address, and `/metrics` counters that move by exactly the requests
//! made, read with a strict Prometheus text-format parser.

mod common;

use std::collections::BTreeMap;

use common::{Proxy, Route, Upstream, client, get, photo, send};

const TOKEN: &str = "admin-token-for-tests";

/// A proxy with an admin listener on loopback, protected by [`TOKEN`], plus `flags`.
async fn proxy_with_admin(dir: &std::path::Path, flags: &[&str]) -> Proxy {
    let mut all = vec!["--admin-listen", "127.0.0.1:0", "--admin-token", TOKEN];
    all.extend_from_slice(flags);
    Proxy::local(dir, &all).await
}

// ---------------------------------------------------------------------------------------------------------------
// A strict parser of the Prometheus text format (0.0.4)
// ---------------------------------------------------------------------------------------------------------------

/// One series: its sample name and its labels, sorted.
type Series = (String, Labels);

/// Label pairs, sorted.
type Labels = Vec<(String, String)>;

/// Every sample of an exposition, by series. Panics on anything the format does not allow: a sample of an
/// undeclared family, a family declared twice, a repeated series, a bad label or value, a histogram whose buckets
/// are not cumulative or whose `+Inf` bucket is not its `_count`.
fn parse_exposition(text: &str) -> BTreeMap<Series, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _help) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(valid_name(name), "bad HELP name in {line:?}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
            assert!(valid_name(name), "bad TYPE name in {line:?}");
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "bad type in {line:?}");
            assert!(types.insert(name.to_owned(), kind.to_owned()).is_none(), "family declared twice: {line:?}");
        } else if line.starts_with('#') {
            // Other comments are allowed by the format, but this server writes none.
            panic!("unexpected comment {line:?}");
        } else if line.is_empty() {
            panic!("empty line in the exposition");
        } else {
            let (series, value) = parse_sample(line);
            let family =
                family_of(&series.0, &types).unwrap_or_else(|| panic!("sample of no declared family: {line:?}"));
            assert!(!family.is_empty());
            assert!(samples.insert(series, value).is_none(), "repeated series: {line:?}");
        }
    }
    check_histograms(&samples, &types);
    samples
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The declared family a sample name belongs to (a histogram's `_bucket`, `_sum` and `_count` belong to it).
fn family_of<'a>(name: &str, types: &'a BTreeMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return types.get_key_value(name).map(|(name, _)| name.as_str());
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        (types.get(base)? == "histogram").then(|| types.get_key_value(base).map(|(name, _)| name.as_str()))?
    })
}

fn parse_sample(line: &str) -> (Series, f64) {
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value in {line:?}"));
    let name = &line[..name_end];
    assert!(valid_name(name), "bad sample name in {line:?}");
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end;
        loop {
            let Some(&(start, c)) = chars.peek() else { panic!("unclosed labels in {line:?}") };
            if c == '}' {
                end = Some(start + 1);
                break;
            }
            let eq = after[start..].find('=').unwrap_or_else(|| panic!("label without = in {line:?}")) + start;
            let key = &after[start..eq];
            assert!(valid_name(key) && !key.contains(':'), "bad label name {key:?} in {line:?}");
            assert_eq!(after.as_bytes().get(eq + 1), Some(&b'"'), "unquoted label value in {line:?}");
            while chars.peek().is_some_and(|&(i, _)| i <= eq + 1) {
                chars.next();
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => panic!("bad escape {other:?} in {line:?}"),
                    },
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value in {line:?}"),
                }
            }
            assert!(labels.iter().all(|(k, _): &(String, String)| k != key), "repeated label {key} in {line:?}");
            labels.push((key.to_owned(), value));
            match chars.next() {
                Some((_, ',')) => {}
                Some((i, '}')) => {
                    end = Some(i + 1);
                    break;
                }
                other => panic!("expected , or }} but found {other:?} in {line:?}"),
            }
        }
        rest = &after[end.unwrap_or_else(|| panic!("unclosed labels in {line:?}"))..];
    }
    let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("no space before the value in {line:?}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        number => number.parse().unwrap_or_else(|_| panic!("bad value in {line:?} (timestamps are not written)")),
    };
    labels.sort();
    ((name.to_owned(), labels), value)
}

fn check_histograms(samples: &BTreeMap<Series, f64>, types: &BTreeMap<String, String>) {
    for (family, _) in types.iter().filter(|(_, kind)| *kind == "histogram") {
        let bucket_name = format!("{family}_bucket");
        // Buckets grouped by their labels without `le`.
        let mut groups: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
        for ((name, labels), value) in samples {
            if *name != bucket_name {
                continue;
            }
            let le = labels.iter().find(|(k, _)| k == "le").unwrap_or_else(|| panic!("{name} without le"));
            let bound = if le.1 == "+Inf" { f64::INFINITY } else { le.1.parse().expect("numeric le") };
            let others: Vec<_> = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
            groups.entry(others).or_default().push((bound, *value));
        }
        for (labels, mut buckets) in groups {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{family}{labels:?}: buckets not cumulative");
            let (last_bound, last) = *buckets.last().expect("a bucket");
            assert_eq!(last_bound, f64::INFINITY, "{family}{labels:?}: no +Inf bucket");
            let count = samples.get(&(format!("{family}_count"), labels.clone()));
            assert_eq!(count, Some(&last), "{family}{labels:?}: +Inf bucket is not _count");
            assert!(samples.contains_key(&(format!("{family}_sum"), labels.clone())), "{family}{labels:?}: no _sum");
        }
    }
}

/// A sample's value, 0 when the series is absent (a counter not yet incremented may be left out).
fn value(samples: &BTreeMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut labels: Vec<(String, String)> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    labels.sort();
    samples.get(&(name.to_owned(), labels)).copied().unwrap_or(0.0)
}

async fn scrape(proxy: &Proxy) -> BTreeMap<Series, f64> {
    let reply = send(client().get(proxy.admin("/metrics")).bearer_auth(TOKEN)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(reply.header("content-type").starts_with("text/plain; version=0.0.4"), "{:?}", reply.headers);
    parse_exposition(std::str::from_utf8(&reply.body).expect("UTF-8 exposition"))
}

// ---------------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn counters_move_by_exactly_the_requests_made() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    upstream.route("/page.html", Route::status(200).header("content-type", "text/html").body("<html></html>"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_with_admin(dir.path(), &[]).await;
    let client = client();
    let before = scrape(&proxy).await;

    let miss = get(&client, &proxy.url(&upstream.url("/a.jpg"))).await;
    assert_eq!((miss.status, miss.x_cache()), (200, "MISS"));
    for _ in 0..2 {
        let hit = get(&client, &proxy.url(&upstream.url("/a.jpg"))).await;
        assert_eq!((hit.status, hit.x_cache()), (200, "HIT-MEMORY"));
    }
    let missing = get(&client, &proxy.url(&upstream.url("/missing.jpg"))).await;
    assert_eq!(missing.status, 404);
    let variant = get(&client, &proxy.path(&format!("/width=100/?{}", upstream.url("/a.jpg")))).await;
    assert_eq!((variant.status, variant.x_cache()), (200, "MISS"));
    let health = get(&client, &proxy.path("/healthz")).await;
    assert_eq!(health.status, 200);
    let page = get(&client, &proxy.url(&upstream.url("/page.html"))).await;
    assert_eq!(page.status, 415);

    let after = scrape(&proxy).await;
    let moved = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);

    // Every request counter series: exactly these moved, by exactly these amounts.
    let expected: BTreeMap<(String, String, String), f64> = [
        (("mirror", "200", "MISS"), 1.0),
        (("mirror", "200", "HIT-MEMORY"), 2.0),
        (("mirror", "404", "none"), 1.0),
        (("transform", "200", "MISS"), 1.0),
        (("health", "200", "none"), 1.0),
        (("mirror", "415", "none"), 1.0),
    ]
    .into_iter()
    .map(|((route, status, cache), n)| ((route.to_owned(), status.to_owned(), cache.to_owned()), n))
    .collect();
    let mut seen = BTreeMap::new();
    for ((name, labels), value) in &after {
        if name != "mirage_http_requests_total" {
            continue;
        }
        let label = |key: &str| labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).expect("label");
        let earlier = before.get(&(name.clone(), labels.clone())).copied().unwrap_or(0.0);
        if value - earlier != 0.0 {
            seen.insert((label("route"), label("status"), label("cache")), value - earlier);
        }
    }
    assert_eq!(seen, expected);

    let seconds = "mirage_http_request_duration_seconds_count";
    assert_eq!(moved(seconds, &[("route", "mirror"), ("cache", "HIT-MEMORY")]), 2.0);
    assert_eq!(moved(seconds, &[("route", "transform"), ("cache", "MISS")]), 1.0);
    let mirror_bytes = (miss.body.len() * 3 + missing.body.len() + page.body.len()) as f64;
    assert_eq!(moved("mirage_http_response_bytes_total", &[("route", "mirror")]), mirror_bytes);
    assert_eq!(moved("mirage_http_response_bytes_total", &[("route", "transform")]), variant.body.len() as f64);

    // Upstream: one image (the variant was made from the cached original), one 404, one page that is no image.
    assert_eq!(moved("mirage_upstream_requests_total", &[("outcome", "ok")]), 1.0);
    assert_eq!(moved("mirage_upstream_requests_total", &[("outcome", "not_found")]), 1.0);
    assert_eq!(moved("mirage_upstream_requests_total", &[("outcome", "not_image")]), 1.0);
    assert_eq!(moved("mirage_upstream_duration_seconds_count", &[]), 3.0);
    assert_eq!(moved("mirage_upstream_bytes_total", &[]), (photo().len() + "<html></html>".len()) as f64);
    assert_eq!(value(&after, "mirage_upstream_inflight", &[]), 0.0);
    assert_eq!(moved("mirage_transform_duration_seconds_count", &[("format", "jpeg")]), 1.0);
    assert_eq!(value(&after, "mirage_transform_queue_depth", &[]), 0.0);

    // The original and the variant are in memory; nothing purged, nothing fell back, the disk is healthy.
    assert!(value(&after, "mirage_cache_entries", &[("tier", "memory")]) >= 2.0);
    assert!(value(&after, "mirage_cache_bytes", &[("tier", "memory")]) >= photo().len() as f64);
    assert!(after.contains_key(&("mirage_cache_bytes".to_owned(), vec![("tier".to_owned(), "disk".to_owned())])));
    assert_eq!(value(&after, "mirage_disk_degraded", &[]), 0.0);
    assert_eq!(value(&after, "mirage_purged_entries_total", &[]), 0.0);
    assert_eq!(value(&after, "mirage_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    for name in [
        "mirage_http_connections",
        "mirage_cache_evictions_total",
        "mirage_coalesced_requests_total",
        "mirage_transform_rejected_total",
    ] {
        assert!(after.keys().any(|(n, _)| n == name), "{name} missing");
    }
    // The process, from /proc.
    assert!(value(&after, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(value(&after, "process_open_fds", &[]) > 0.0);
    assert!(value(&after, "process_start_time_seconds", &[]) > 1.5e9);
    assert!(after.keys().any(|(name, _)| name == "process_cpu_seconds_total"));
    // Label values come from fixed sets: no URL or host ever appears.
    let port = upstream.addr.port().to_string();
    assert!(after.keys().all(|(_, labels)| labels.iter().all(|(_, v)| !v.contains(&port) && !v.contains('/'))));
    proxy.stop().await;
}

#[tokio::test]
async fn admin_routes_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_with_admin(dir.path(), &[]).await;
    let client = client();
    for (path, method) in [("/metrics", reqwest::Method::GET), ("/purge", reqwest::Method::POST)] {
        let url = proxy.admin(path);
        let without = send(client.request(method.clone(), &url)).await;
        assert_eq!(without.status, 401, "{path} without a token");
        assert_eq!(without.header("www-authenticate"), "Bearer", "{path}");
        let wrong = send(client.request(method.clone(), &url).bearer_auth("admin-token-for-test")).await;
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
        let longer = send(client.request(method.clone(), &url).bearer_auth(format!("{TOKEN}x"))).await;
        assert_eq!(longer.status, 401, "{path} with a longer token");
        let basic = send(client.request(method.clone(), &url).basic_auth(TOKEN, None::<&str>)).await;
        assert_eq!(basic.status, 401, "{path} with Basic credentials");
        let right = send(client.request(method, &url).bearer_auth(TOKEN).body("http://example.com/a.jpg\n")).await;
        assert_ne!(right.status, 401, "{path} with the token");
    }
    // Health answers as on the public port, without a token.
    let health = get(&client, &proxy.admin("/healthz")).await;
    assert_eq!((health.status, &health.body[..]), (200, &b"ok\n"[..]));
    let ready = get(&client, &proxy.admin("/readyz")).await;
    assert_eq!(ready.status, get(&client, &proxy.path("/readyz")).await.status);
    assert_eq!(get(&client, &proxy.admin("/?http://example.com/a.jpg")).await.status, 404);
    assert_eq!(send(client.get(proxy.admin("/purge")).bearer_auth(TOKEN)).await.status, 405);
    proxy.stop().await;
}

#[tokio::test]
async fn the_public_port_serves_nothing_administrative() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_with_admin(dir.path(), &["--metrics-public"]).await;
    let client = client();
    for path in ["/metrics", "/purge"] {
        assert_eq!(get(&client, &proxy.path(path)).await.status, 404, "GET {path}");
        let post = send(client.post(proxy.path(path)).bearer_auth(TOKEN).body("http://example.com/a.jpg")).await;
        assert_eq!(post.status, 404, "POST {path}");
    }
    proxy.stop().await;
    // And without --admin-listen there is no admin listener at all.
    let plain = Proxy::local(dir.path(), &[]).await;
    assert!(plain.admin_addr.is_none());
    assert!(!plain.log().contains("admin listening"));
    plain.stop().await;
}

#[tokio::test]
async fn metrics_public_opens_metrics_but_not_purge() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_with_admin(dir.path(), &["--metrics-public"]).await;
    let client = client();
    let metrics = get(&client, &proxy.admin("/metrics")).await;
    assert_eq!(metrics.status, 200);
    parse_exposition(std::str::from_utf8(&metrics.body).expect("UTF-8"));
    let purge = send(client.post(proxy.admin("/purge")).body("http://example.com/a.jpg\n")).await;
    assert_eq!(purge.status, 401);
    proxy.stop().await;
}

#[test]
fn an_unprotected_admin_listener_off_loopback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (flags, env) in
        [(vec!["--admin-listen", "0.0.0.0:0"], None), (vec![], Some(("MIRAGE_ADMIN_LISTEN", "0.0.0.0:0")))]
    {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mirage"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("MIRAGE_") {
                command.env_remove(name);
            }
        }
        command.args(["serve", "--listen", "127.0.0.1:0", "--cache-dir", dir.path().to_str().unwrap()]).args(&flags);
        if let Some((name, value)) = env {
            command.env(name, value);
        }
        let output = command.output().expect("run mirage serve");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flags:?} {env:?} started:\n{stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|line| line.contains("--admin-listen")).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains("--admin-token"), "{stderr}");
        assert!(!stderr.contains("listening"), "{stderr}");
    }
}
