//! Operator policy over real HTTP: `--allow-host`/`--deny-host`/`--allow-port` (on the first target and every
//! redirect hop, refused before any connection) and signed URLs (`--signing-key`, `--require-signature`,
//! `mirage sign`).
//!
//! Loopback upstreams are reachable only because the proxy runs with `--allow-private-networks`; the host rules
//! are then told apart by name (`localhost`) versus IP literal (`127.0.0.1`), which match different patterns.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;

use clap::Parser;
use common::{Proxy, Reply, Route, Upstream, client, get, photo};
use mirage::fetch::{LookupFuture, NameLookup};
use mirage::signing::SigningKey;

const IMAGE: &str = "/qupost/img/2022/02/28/4e7cb326c1d77bee6e18452d400abd1b.jpeg";
const KEY_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KEY_B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

async fn upstream_with_image() -> Upstream {
    let upstream = Upstream::start().await;
    upstream.route(IMAGE, Route::image(photo()));
    upstream
}

/// `http://{host}:{port}{path}` for the upstream's port.
fn url_via(upstream: &Upstream, host: &str, path: &str) -> String {
    format!("http://{host}:{}{path}", upstream.addr.port())
}

fn assert_refused(reply: &Reply, status: u16, text: &str, what: &str) {
    let body = String::from_utf8_lossy(&reply.body);
    assert_eq!(reply.status, status, "{what}: {body}");
    assert!(body.contains(text), "{what}: {body:?} should say {text:?}");
    assert_eq!(body.lines().count(), 1, "{what}: one line");
}

// ---------------------------------------------------------------------------------------------------------------
// Host rules
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn allow_host_exact_name_ignores_case_and_trailing_dot() {
    let upstream = upstream_with_image().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--allow-host", "LocalHost."]).await;
    let client = client();

    let allowed = get(&client, &proxy.url(&url_via(&upstream, "localhost", IMAGE))).await;
    assert_eq!(allowed.status, 200, "{:?}", allowed.body);
    assert_eq!(upstream.connections(), 1);

    // The same listener by IP literal does not match a name pattern: refused before connecting.
    let by_ip = get(&client, &proxy.url(&url_via(&upstream, "127.0.0.1", "/other.jpg"))).await;
    assert_refused(&by_ip, 403, "not in the server's allowed hosts", "IP literal");
    let unlisted = get(&client, &proxy.url(&url_via(&upstream, "evil.example", IMAGE))).await;
    assert_refused(&unlisted, 403, "not in the server's allowed hosts", "unlisted name");
    assert_eq!(upstream.connections(), 1, "refused targets must not be contacted");
    assert_eq!(upstream.hits("/other.jpg"), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn ip_literal_patterns_match_every_spelling_of_the_address() {
    let upstream = upstream_with_image().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--allow-host", "127.0.0.1"]).await;
    let client = client();
    // 2130706433 is 127.0.0.1 in decimal; the URL parser normalises it before the rules see it.
    let decimal = get(&client, &proxy.url(&url_via(&upstream, "2130706433", IMAGE))).await;
    assert_eq!(decimal.status, 200, "{:?}", decimal.body);
    let by_name = get(&client, &proxy.url(&url_via(&upstream, "localhost", "/x.jpg"))).await;
    assert_refused(&by_name, 403, "not in the server's allowed hosts", "name vs IP pattern");
    assert_eq!(upstream.hits("/x.jpg"), 0);
    proxy.stop().await;
}

/// A DNS that answers 127.0.0.1 for every name, so wildcard names reach the loopback upstream.
#[derive(Debug)]
struct EverythingIsLoopback;

impl NameLookup for EverythingIsLoopback {
    fn lookup(&self, _host: &str) -> LookupFuture {
        Box::pin(async { Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]) })
    }
}

/// The proxy as `Proxy::local` starts it, but resolving names with `EverythingIsLoopback`.
async fn local_with_fake_dns(dir: &std::path::Path, flags: &[&str]) -> Proxy {
    Proxy::local_with(dir, flags, |config| config.pipeline.fetch.name_lookup = Arc::new(EverythingIsLoopback)).await
}

#[tokio::test]
async fn wildcard_matches_subdomains_at_any_depth_but_not_the_apex() {
    let upstream = upstream_with_image().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = local_with_fake_dns(dir.path(), &["--allow-host", "*.1SAPP.com"]).await;
    let client = client();

    for host in ["static.1sapp.com", "a.b.static.1sapp.com", "Static.1sapp.com."] {
        let reply = get(&client, &proxy.url(&url_via(&upstream, host, IMAGE))).await;
        assert_eq!(reply.status, 200, "{host}: {:?}", reply.body);
    }
    let contacted = upstream.connections();
    for host in ["1sapp.com", "static.1sapp.com.evil.example", "evil1sapp.com"] {
        let reply = get(&client, &proxy.url(&url_via(&upstream, host, "/refused.jpg"))).await;
        assert_refused(&reply, 403, "not in the server's allowed hosts", host);
    }
    assert_eq!(upstream.connections(), contacted, "refused hosts were contacted");
    assert_eq!(upstream.hits("/refused.jpg"), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn idna_pattern_matches_the_punycode_host() {
    let upstream = upstream_with_image().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = local_with_fake_dns(dir.path(), &["--deny-host", "bücher.example"]).await;
    let client = client();
    for host in ["xn--bcher-kva.example", "XN--BCHER-KVA.example", "b%C3%BCcher.example"] {
        let reply = get(&client, &proxy.url(&url_via(&upstream, host, "/x.jpg"))).await;
        assert_refused(&reply, 403, "denied", host);
    }
    let other = get(&client, &proxy.url(&url_via(&upstream, "buecher.example", IMAGE))).await;
    assert_eq!(other.status, 200);
    assert_eq!(upstream.hits("/x.jpg"), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn deny_host_refuses_and_wins_over_allow() {
    let upstream = upstream_with_image().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(
        dir.path(),
        &["--allow-host", "localhost", "--allow-host", "127.0.0.1", "--deny-host", "localhost"],
    )
    .await;
    let client = client();
    for host in ["localhost", "LOCALHOST.", "localhost."] {
        let reply = get(&client, &proxy.url(&url_via(&upstream, host, "/denied.jpg"))).await;
        assert_refused(&reply, 403, "denied by the server's host rules", host);
    }
    assert_eq!(upstream.connections(), 0, "a denied host must not be contacted");
    let other = get(&client, &proxy.url(&url_via(&upstream, "127.0.0.1", IMAGE))).await;
    assert_eq!(other.status, 200, "allowed and not denied");
    proxy.stop().await;
}

#[tokio::test]
async fn host_lists_are_comma_separated_and_validated() {
    // Comma-separated lists (the MIRAGE_ALLOW_HOST/MIRAGE_DENY_HOST form) split like repeated flags.
    let args = mirage::config::ServeArgs::try_parse_from([
        "serve",
        "--deny-host",
        "a.example,*.b.example",
        "--allow-host",
        "static.1sapp.com,*.1sapp.com",
    ])
    .unwrap();
    assert_eq!(args.pipeline.deny_host.len(), 2);
    assert_eq!(args.pipeline.allow_host.len(), 2);
    assert!(mirage::config::ServeArgs::try_parse_from(["serve", "--allow-host", "http://x.example/"]).is_err());
    assert!(mirage::config::ServeArgs::try_parse_from(["serve", "--allow-host", "*"]).is_err());
}

#[tokio::test]
async fn redirect_to_a_host_not_allowed_is_refused_before_connecting() {
    let first = Upstream::start().await;
    let second = upstream_with_image().await;
    first.route("/r.jpg", Route::redirect(&url_via(&second, "127.0.0.1", IMAGE)));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--allow-host", "localhost"]).await;
    let reply = get(&client(), &proxy.url(&url_via(&first, "localhost", "/r.jpg"))).await;
    assert_refused(&reply, 403, "not in the server's allowed hosts", "redirect hop");
    // The hop's host comes from upstream's `Location`: it is logged, not shown.
    assert!(!String::from_utf8_lossy(&reply.body).contains("127.0.0.1"), "{:?}", reply.body);
    assert_eq!(first.hits("/r.jpg"), 1);
    assert_eq!(second.connections(), 0, "the redirect's host must never be contacted");
    proxy.stop().await;
}

#[tokio::test]
async fn allow_port_restricts_targets_and_redirect_hops() {
    let first = Upstream::start().await;
    let second = upstream_with_image().await;
    first.route("/r.jpg", Route::redirect(&second.url(IMAGE)));
    first.route(IMAGE, Route::image(photo()));
    let dir = tempfile::tempdir().unwrap();
    let client = client();

    // Only the default ports: a URL naming another port is refused, however it is spelled.
    let web_only = Proxy::local(dir.path(), &["--allow-port", "80", "--allow-port", "443"]).await;
    let reply = get(&client, &web_only.url(&second.url(IMAGE))).await;
    assert_refused(&reply, 403, "target port is not allowed", "non-default port");
    assert_eq!(second.connections(), 0);
    web_only.stop().await;

    let first_port = first.addr.port().to_string();
    let proxy = Proxy::local(dir.path(), &["--allow-port", &first_port]).await;
    let allowed = get(&client, &proxy.url(&first.url(IMAGE))).await;
    assert_eq!(allowed.status, 200, "{:?}", allowed.body);
    let redirected = get(&client, &proxy.url(&first.url("/r.jpg"))).await;
    assert_refused(&redirected, 403, "is not allowed by the server", "redirect to another port");
    assert_eq!(second.connections(), 0, "the redirect's port must never be contacted");
    proxy.stop().await;

    assert!(mirage::config::ServeArgs::try_parse_from(["serve", "--allow-port", "0"]).is_err());
}

#[tokio::test]
async fn a_newly_denied_host_is_not_served_from_the_cache() {
    let upstream = upstream_with_image().await;
    let dir = tempfile::tempdir().unwrap();
    let target = url_via(&upstream, "localhost", IMAGE);
    let open = Proxy::local(dir.path(), &[]).await;
    assert_eq!(get(&client(), &open.url(&target)).await.status, 200);
    open.stop().await;
    let strict = Proxy::local(dir.path(), &["--deny-host", "localhost"]).await;
    let reply = get(&client(), &strict.url(&target)).await;
    assert_refused(&reply, 403, "denied", "cached but denied");
    strict.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Signed URLs
// ---------------------------------------------------------------------------------------------------------------

fn key(hex: &str) -> SigningKey {
    hex.parse().unwrap()
}

/// The signed path for `input`, as `mirage sign` prints it.
fn signed(hex: &str, input: &str) -> String {
    mirage::signing::sign_path(&key(hex), input).unwrap()
}

#[tokio::test]
async fn signed_mirror_and_transform_are_served_and_forgeries_refused() {
    let upstream = upstream_with_image().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--signing-key", KEY_A]).await;
    let client = client();
    let target = upstream.url(IMAGE);

    let mirror = signed(KEY_A, &target);
    assert!(mirror.starts_with("/sig=") && mirror.ends_with(&format!("/?{target}")), "{mirror}");
    let reply = get(&client, &proxy.path(&mirror)).await;
    assert_eq!(reply.status, 200, "signed mirror: {:?}", reply.body);
    assert!(reply.body == photo());

    let transform = signed(KEY_A, &format!("/w=100/?{target}"));
    let reply = get(&client, &proxy.path(&transform)).await;
    assert_eq!(reply.status, 200, "signed transform: {:?}", reply.body);
    assert_eq!(reply.header("content-type"), "image/jpeg");
    assert!(reply.body.len() < photo().len());

    // Signed for other options, with another key, or mangled: all refused, never ignored.
    let sig = mirror.trim_start_matches("/sig=").split('/').next().unwrap().to_owned();
    let wrong_options = get(&client, &proxy.path(&format!("/sig={sig},width=50/?{target}"))).await;
    assert_refused(&wrong_options, 403, "invalid URL signature", "signature of another request");
    let other_key = get(&client, &proxy.path(&signed(KEY_B, &target))).await;
    assert_refused(&other_key, 403, "invalid URL signature", "unknown key");
    let garbage = get(&client, &proxy.path(&format!("/sig=not-base64!/?{target}"))).await;
    assert_refused(&garbage, 403, "invalid URL signature", "garbage");

    // Not required: unsigned requests still pass.
    assert_eq!(get(&client, &proxy.url(&target)).await.status, 200);
    assert_eq!(get(&client, &proxy.path(&format!("/width=100/?{target}"))).await.status, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn require_signature_refuses_unsigned_requests_even_when_cached() {
    let upstream = upstream_with_image().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--signing-key", KEY_A, "--require-signature"]).await;
    let client = client();
    let target = upstream.url(IMAGE);

    assert_eq!(get(&client, &proxy.path(&signed(KEY_A, &target))).await.status, 200);
    let unsigned_mirror = get(&client, &proxy.url(&target)).await;
    assert_refused(&unsigned_mirror, 403, "only serves signed URLs", "unsigned mirror");
    let unsigned_transform = get(&client, &proxy.path(&format!("/width=100/?{target}"))).await;
    assert_refused(&unsigned_transform, 403, "only serves signed URLs", "unsigned transform");
    assert_eq!(upstream.hits(IMAGE), 1);
    proxy.stop().await;

    let mut startup = mirage::config::ServeArgs::try_parse_from(["serve", "--require-signature"]).unwrap();
    startup.pipeline.no_disk_cache = true;
    assert!(startup.into_config().unwrap_err().contains("--signing-key"));
    assert!(mirage::config::ServeArgs::try_parse_from(["serve", "--signing-key", "abcd"]).is_err(), "short key");
}

#[tokio::test]
async fn any_configured_key_verifies_for_rotation() {
    let upstream = upstream_with_image().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy =
        Proxy::local(dir.path(), &["--signing-key", KEY_A, "--signing-key", KEY_B, "--require-signature"]).await;
    let client = client();
    let target = upstream.url(IMAGE);
    for hex in [KEY_A, KEY_B] {
        let reply = get(&client, &proxy.path(&signed(hex, &format!("/width=120/?{target}")))).await;
        assert_eq!(reply.status, 200, "{hex}: {:?}", reply.body);
    }
    let retired = "42".repeat(32);
    let reply = get(&client, &proxy.path(&signed(&retired, &target))).await;
    assert_refused(&reply, 403, "invalid URL signature", "retired key");
    proxy.stop().await;
}

#[tokio::test]
async fn signatures_cover_the_canonical_request_not_its_spelling() {
    let upstream = upstream_with_image().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--signing-key", KEY_A, "--require-signature"]).await;
    let client = client();
    let target = upstream.url(IMAGE);
    let sig = signed(KEY_A, &format!("/width=300/?{target}"));
    let sig = sig.trim_start_matches("/sig=").split(',').next().unwrap().to_owned();

    // The same request spelled with an alias, dpr, the sig last, and a percent-encoded target.
    let encoded: String =
        percent_encoding::utf8_percent_encode(&target, percent_encoding::NON_ALPHANUMERIC).to_string();
    for path in [
        format!("/sig={sig},width=300/?{target}"),
        format!("/w=150,dpr=2,sig={sig}/?{target}"),
        format!("/sig={sig},w=300/?{encoded}"),
        format!("/sig%3D{sig}%2Cwidth%3D300/?{target}"),
    ] {
        let reply = get(&client, &proxy.path(&path)).await;
        assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
    }
    proxy.stop().await;
}

#[tokio::test]
async fn the_signature_is_not_part_of_the_cache_key() {
    let upstream = upstream_with_image().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::local(dir.path(), &["--signing-key", KEY_A]).await;
    let client = client();
    let target = upstream.url(IMAGE);

    let first = get(&client, &proxy.path(&signed(KEY_A, &format!("/width=100/?{target}")))).await;
    assert_eq!(first.x_cache(), "MISS");
    let unsigned = get(&client, &proxy.path(&format!("/width=100/?{target}"))).await;
    assert!(unsigned.x_cache().starts_with("HIT"), "unsigned after signed: {}", unsigned.x_cache());
    assert!(unsigned.body == first.body);
    let mirror = get(&client, &proxy.path(&signed(KEY_A, &target))).await;
    assert!(mirror.x_cache().starts_with("HIT"), "signed mirror after the variant's fill: {}", mirror.x_cache());
    assert_eq!(upstream.hits(IMAGE), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn mirage_sign_output_is_accepted_by_the_server() {
    let upstream = upstream_with_image().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy =
        Proxy::local(dir.path(), &["--signing-key", KEY_A, "--signing-key", KEY_B, "--require-signature"]).await;
    let client = client();
    let target = upstream.url(IMAGE);
    let run = |args: &[&str], env_key: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mirage"));
        command.arg("sign").args(args).env_remove("MIRAGE_SIGNING_KEY");
        if let Some(keys) = env_key {
            command.env("MIRAGE_SIGNING_KEY", keys);
        }
        command.output().unwrap()
    };

    let transform = format!("/width=120/?{target}");
    for (args, env_key) in [
        (vec!["--key", KEY_A, target.as_str()], None),
        (vec!["--key", KEY_B, transform.as_str()], None),
        (vec![transform.as_str()], Some(format!("{KEY_B},{KEY_A}"))),
    ] {
        let output = run(&args, env_key.as_deref());
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        let path = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        assert!(path.starts_with("/sig="), "{path}");
        let reply = get(&client, &proxy.path(&path)).await;
        assert_eq!(reply.status, 200, "{args:?} -> {path}: {:?}", reply.body);
    }
    // The environment's first key signs, exactly as `--key` with that key does.
    let from_env = run(&[transform.as_str()], Some(&format!("{KEY_B},{KEY_A}")));
    let explicit = run(&["--key", KEY_B, transform.as_str()], None);
    assert_eq!(from_env.stdout, explicit.stdout);

    // Bad usage: exit status 2 and a message.
    for (args, env_key) in [(vec![target.as_str()], None), (vec!["--key", KEY_A, "not a url"], None)] {
        let output = run(&args, env_key);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!output.stderr.is_empty());
    }
    assert_eq!(run(&["--key", "abcd", target.as_str()], None).status.code(), Some(2), "short key");
    proxy.stop().await;
}
