//! Purge: an original and every variant of it leave memory and disk, through `answer` (what the admin listener
//! calls) on a running server and through `mirage purge --cache-dir` offline, also across restarts; every URL
//! spelling names the same source; image answers carry the source's CDN cache tag; a fill in flight during a
//! purge does not store its result.

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use common::{Proxy, Route, Upstream, client, entry_files, get, photo};
use mirage::admin::purge::{self, Report};
use mirage::config::ServeArgs;
use mirage::pipeline::Pipeline;
use mirage::request::{ImageRequest, Target};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The three variants cached beside the original.
const VARIANTS: [&str; 3] = ["w=100", "w=120,h=80,fit=cover", "w=90,f=png"];

/// The original's URL and each variant's, through `proxy_base` (`http://ADDR`).
fn request_urls(proxy_base: &str, target: &str) -> Vec<String> {
    let mut urls = vec![format!("{proxy_base}/?{target}")];
    urls.extend(VARIANTS.iter().map(|options| format!("{proxy_base}/{options}/?{target}")));
    urls
}

/// The tag every answer about `target` carries.
fn tag_of(target: &str) -> String {
    ImageRequest::source_key_of(&Target::parse(target).unwrap()).tag()
}

/// GETs each URL; returns the `X-Cache` values, checking each answer is a 200 image.
async fn x_caches(urls: &[String]) -> Vec<String> {
    let client = client();
    let mut caches = Vec::new();
    for url in urls {
        let reply = get(&client, url).await;
        assert_eq!(reply.status, 200, "{url}");
        caches.push(reply.x_cache().to_owned());
    }
    caches
}

/// The server in-process over a pipeline the test holds, so it can call `purge::answer` on the very pipeline that
/// serves (what the admin listener does).
struct Running {
    pipeline: Pipeline,
    base: String,
    shutdown: oneshot::Sender<()>,
    join: JoinHandle<()>,
}

impl Running {
    async fn start(dir: &Path, flags: &[&str]) -> Running {
        let mut argv = vec!["serve", "--cache-dir", dir.to_str().unwrap(), "--allow-private-networks"];
        argv.extend_from_slice(flags);
        let config = ServeArgs::try_parse_from(&argv).unwrap().into_config().unwrap();
        let pipeline = Pipeline::new(&config.pipeline).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, stop) = oneshot::channel::<()>();
        let serving = pipeline.clone();
        let join = tokio::spawn(async move {
            mirage::server::serve_with(listener, serving, &config, async {
                let _ = stop.await;
            })
            .await;
        });
        Running { pipeline, base, shutdown, join }
    }

    async fn purge(&self, body: &str) -> Report {
        let response = purge::answer(&self.pipeline, Bytes::from(body.to_owned())).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/json");
        let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }

    async fn stop(self) {
        let _ = self.shutdown.send(());
        tokio::time::timeout(Duration::from_secs(15), self.join).await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn offline_purge_of_a_stopped_servers_cache_then_every_entry_misses_after_restart() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    upstream.route("/other.jpg", Route::image(photo()));
    let target = upstream.url("/a.jpg");
    let other = upstream.url("/other.jpg");
    let dir = tempfile::tempdir().unwrap();

    let proxy = Proxy::local(dir.path(), &[]).await;
    let base = format!("http://{}", proxy.addr);
    let urls = request_urls(&base, &target);
    assert_eq!(x_caches(&urls).await, ["MISS"; 4]);
    assert_eq!(x_caches(&[format!("{base}/?{other}")]).await, ["MISS"]);
    assert_eq!(upstream.hits("/a.jpg"), 1, "variants are made from the cached original");
    // Every image answer names the source, the same tag for the original and its variants.
    let client = client();
    for url in &urls {
        assert_eq!(get(&client, url).await.header("cache-tag"), tag_of(&target), "{url}");
    }
    assert_ne!(tag_of(&target), tag_of(&other));
    // Errors carry no tag.
    let missing = get(&client, &format!("{base}/?{}", upstream.url("/missing.jpg"))).await;
    assert_eq!((missing.status, missing.header("cache-tag")), (404, ""));
    proxy.stop().await;
    assert_eq!(entry_files(dir.path()).len(), 5);

    // A CORS-prefixed spelling, from a file.
    let list = dir.path().join("urls.txt");
    std::fs::write(&list, format!("# taken down\nhttps://cors.zfour.workers.dev/?{target}\n")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mirage"))
        .env_remove("MIRAGE_CACHE_DIR")
        .env_remove("MIRAGE_ADMIN_TOKEN")
        .args(["purge", "--cache-dir", dir.path().to_str().unwrap(), &format!("@{}", list.display())])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout.trim(), "purged 4 entries of 1 URLs (0 invalid)");
    assert_eq!(entry_files(dir.path()).len(), 1, "only the other image is left");

    let proxy = Proxy::local(dir.path(), &[]).await;
    let base = format!("http://{}", proxy.addr);
    assert_eq!(x_caches(&request_urls(&base, &target)).await, ["MISS"; 4]);
    assert_eq!(upstream.hits("/a.jpg"), 2, "the original was fetched again");
    assert_eq!(x_caches(&[format!("{base}/?{other}")]).await, ["HIT-DISK"]);
    proxy.stop().await;
}

#[tokio::test]
async fn purge_command_usage_and_failures_have_their_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().to_str().unwrap();
    let run = |args: &[&str]| purge_command(args.iter().map(|arg| (*arg).to_owned()).collect());
    // No URL at all, or both destinations: usage.
    assert_eq!(run(&["--cache-dir", cache_dir]).await.0, Some(2));
    assert_eq!(run(&["--cache-dir", cache_dir, "--server", "http://127.0.0.1:9", "http://h/a.jpg"]).await.0, Some(2));
    assert_eq!(run(&["--cache-dir", cache_dir, "@/nonexistent/list"]).await.0, Some(2));
    // An unknown URL purges nothing and succeeds; a line that is no URL fails the run, after the others.
    let ok = run(&["--cache-dir", cache_dir, "http://h.example/unknown.jpg"]).await;
    assert_eq!(ok, (Some(0), "purged 0 entries of 1 URLs (0 invalid)".to_owned()));
    let bad = run(&["--cache-dir", cache_dir, "http://h.example/a.jpg", "not a url"]).await;
    assert_eq!(bad, (Some(1), "purged 0 entries of 1 URLs (1 invalid)".to_owned()));
    // A server that does not answer.
    let down = run(&["--server", &format!("http://{}", common::dead_addr().await), "http://h.example/a.jpg"]).await;
    assert_eq!(down.0, Some(1));
}

#[tokio::test]
async fn purging_a_running_server_misses_every_entry_next_time_and_after_a_restart() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    let target = upstream.url("/a.jpg");
    let dir = tempfile::tempdir().unwrap();

    let server = Running::start(dir.path(), &[]).await;
    let urls = request_urls(&server.base, &target);
    assert_eq!(x_caches(&urls).await, ["MISS"; 4]);
    assert_eq!(x_caches(&urls).await, ["HIT-MEMORY"; 4]);
    server.pipeline.flush().await;

    let report = server.purge(&format!("{target}\n")).await;
    assert_eq!(report.invalid, Vec::<String>::new());
    assert_eq!(report.purged.len(), 1);
    assert_eq!(report.purged[0].url, target);
    assert_eq!(report.purged[0].tag, tag_of(&target));
    assert_eq!(report.purged[0].entries, 4);
    assert_eq!(entry_files(dir.path()).len(), 0);
    // Nothing left to purge.
    assert_eq!(server.purge(&target).await.purged[0].entries, 0);

    assert_eq!(x_caches(&urls).await, ["MISS"; 4]);
    assert_eq!(upstream.hits("/a.jpg"), 2);
    server.pipeline.flush().await;
    // Purged again, then restarted: the purge held on disk too (the links came from the headers at start-up).
    assert_eq!(server.purge(&format!(r#"{{"urls": ["{target}"]}}"#)).await.purged[0].entries, 4);
    server.stop().await;
    let server = Running::start(dir.path(), &[]).await;
    let urls = request_urls(&server.base, &target);
    assert_eq!(x_caches(&urls).await, ["MISS"; 4]);
    assert_eq!(upstream.hits("/a.jpg"), 3);
    server.pipeline.flush().await;
    server.stop().await;

    // A new process learns the links from the files' headers: purge right after a restart is exact too.
    let server = Running::start(dir.path(), &[]).await;
    assert_eq!(server.purge(&target).await.purged[0].entries, 4);
    assert_eq!(entry_files(dir.path()).len(), 0);
    server.stop().await;
}

#[tokio::test]
async fn every_spelling_purges_the_same_source_and_unknown_urls_purge_nothing() {
    let upstream = Upstream::start().await;
    upstream.route("/s.jpg", Route::image(photo()));
    let target = upstream.url("/s.jpg");
    let encoded = percent_encoding::utf8_percent_encode(&target, percent_encoding::NON_ALPHANUMERIC).to_string();
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path(), &[]).await;
    let urls = vec![format!("{}/?{target}", server.base), format!("{}/w=100/?{target}", server.base)];
    let spellings = [
        target.clone(),
        encoded.clone(),
        format!("https://cors.zfour.workers.dev/?{target}"),
        format!("https://cors.zfour.workers.dev/?{encoded}"),
        format!("http://any-mirage-host/?{target}"),
        format!("http://any-mirage-host/w=300,f=webp/?{encoded}"),
        format!("/w=100/?{target}"),
        format!("/?{encoded}"),
    ];
    for spelling in &spellings {
        assert_eq!(x_caches(&urls).await.len(), 2);
        let report = server.purge(spelling).await;
        assert_eq!(report.purged.len(), 1, "{spelling}");
        assert_eq!((report.purged[0].url.as_str(), report.purged[0].entries), (target.as_str(), 2), "{spelling}");
        assert_eq!(entry_files(dir.path()), Vec::<std::path::PathBuf>::new(), "{spelling}");
        assert_eq!(x_caches(&urls).await, ["MISS"; 2], "{spelling}");
    }
    let report = server.purge(&format!("{}\nnot a url\n", upstream.url("/never-cached.jpg"))).await;
    assert_eq!(report.purged[0].entries, 0);
    assert_eq!(report.invalid, ["not a url"]);
    // Bounds: too many URLs is 413 and purges nothing; a body that is not a list is 400.
    let many = format!("{target}\n").repeat(purge::MAX_URLS + 1);
    assert_eq!(purge::answer(&server.pipeline, Bytes::from(many)).await.status(), 413);
    assert_eq!(purge::answer(&server.pipeline, Bytes::from_static(b"{\"url\": 1}")).await.status(), 400);
    assert_eq!(x_caches(&urls[..1]).await, ["HIT-MEMORY"]);
    server.stop().await;
}

#[tokio::test]
async fn a_fill_in_flight_during_a_purge_is_not_stored() {
    let upstream = Upstream::start().await;
    upstream.route("/slow.jpg", Route::image(photo()).delay(Duration::from_millis(1500)));
    let target = upstream.url("/slow.jpg");
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path(), &[]).await;
    let variant = format!("{}/w=100/?{target}", server.base);
    let original = format!("{}/?{target}", server.base);

    let in_flight = tokio::spawn(x_caches_owned(vec![variant.clone()]));
    upstream.wait_for_hits("/slow.jpg", 1).await;
    // The upstream is answering slowly: purge now, while the fill waits for it.
    assert_eq!(server.purge(&target).await.purged[0].entries, 0);
    assert_eq!(in_flight.await.unwrap(), ["MISS"], "the request in flight is answered");
    server.pipeline.flush().await;
    assert_eq!(entry_files(dir.path()).len(), 0, "but neither the original nor the variant was stored");
    assert_eq!(x_caches(&[variant.clone(), original.clone()]).await, ["MISS", "HIT-MEMORY"]);
    assert_eq!(upstream.hits("/slow.jpg"), 2, "upstream is asked again");
    // The fills after the purge store as usual.
    assert_eq!(x_caches(&[variant]).await, ["HIT-MEMORY"]);
    server.stop().await;
}

async fn x_caches_owned(urls: Vec<String>) -> Vec<String> {
    x_caches(&urls).await
}

#[tokio::test]
async fn cache_tag_header_can_be_renamed_or_turned_off() {
    let upstream = Upstream::start().await;
    upstream.route("/a.jpg", Route::image(photo()));
    let target = upstream.url("/a.jpg");
    let client = client();
    for (flag, header, expected) in
        [("Surrogate-Key", "surrogate-key", tag_of(&target)), ("off", "cache-tag", String::new())]
    {
        let dir = tempfile::tempdir().unwrap();
        let proxy = Proxy::local(dir.path(), &["--cache-tag-header", flag]).await;
        for url in request_urls(&format!("http://{}", proxy.addr), &target) {
            let reply = get(&client, &url).await;
            assert_eq!(reply.status, 200);
            assert_eq!(reply.header(header), expected, "{flag}: {url}");
            if flag == "Surrogate-Key" {
                assert_eq!(reply.header("cache-tag"), "", "only the header asked for");
            }
        }
        proxy.stop().await;
    }
    // A name Mirage uses for something else is refused at start.
    let args = ServeArgs::try_parse_from(["serve", "--cache-tag-header", "ETag", "--no-disk-cache"]).unwrap();
    assert!(args.into_config().unwrap_err().contains("--cache-tag-header"));
}

/// `mirage purge --server ADMIN_URL [--admin-token T] URL...`: exit code and stdout.
async fn purge_command(args: Vec<String>) -> (Option<i32>, String) {
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mirage"))
            .env_remove("MIRAGE_CACHE_DIR")
            .env_remove("MIRAGE_ADMIN_TOKEN")
            .arg("purge")
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The whole path an operator takes: a real `mirage serve` with an admin listener and a token, `POST /purge` over
/// HTTP (a wrong token purges nothing), then `mirage purge --server`; every entry is a `MISS` again, also after a
/// restart, and upstream is asked again.
#[tokio::test]
async fn purge_through_the_admin_listener_needs_the_token_and_removes_every_variant() {
    const TOKEN: &str = "s3cret-token";
    let upstream = Upstream::start().await;
    upstream.route("/p.jpg", Route::image(photo()));
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--admin-listen", "127.0.0.1:0", "--admin-token", TOKEN];
    let proxy = Proxy::local(dir.path(), &flags).await;
    let target = upstream.url("/p.jpg");
    let urls = request_urls(&format!("http://{}", proxy.addr), &target);
    assert_eq!(x_caches(&urls).await, ["MISS"; 4]);
    assert_eq!(upstream.hits("/p.jpg"), 1);
    let http = client();

    // A wrong token: 401, and nothing is purged.
    let refused = http.post(proxy.admin("/purge")).bearer_auth("wrong").body(target.clone()).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(x_caches(&urls).await, ["HIT-MEMORY"; 4]);

    // The right token: the original and its three variants, reported with the source's tag.
    let answer = http.post(proxy.admin("/purge")).bearer_auth(TOKEN).body(format!("{target}\n")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let report: serde_json::Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert_eq!(report["purged"][0]["url"], target.as_str(), "{report}");
    assert_eq!(report["purged"][0]["tag"], tag_of(&target).as_str(), "{report}");
    assert_eq!(report["purged"][0]["entries"], 4, "{report}");
    assert_eq!(report["invalid"].as_array().map(Vec::len), Some(0), "{report}");
    assert_eq!(x_caches(&urls).await, ["MISS"; 4]);
    assert_eq!(upstream.hits("/p.jpg"), 2, "the original was fetched again");

    // The command, through the admin listener: a one-line summary and exit 0; then restart.
    let admin = format!("http://{}", proxy.admin_addr.unwrap());
    let (code, summary) =
        purge_command(vec!["--server".into(), admin.clone(), "--admin-token".into(), TOKEN.into(), target.clone()])
            .await;
    assert_eq!((code, summary.as_str()), (Some(0), "purged 4 entries of 1 URLs (0 invalid)"));
    let wrong = vec!["--server".into(), admin, "--admin-token".into(), "wrong".into(), target.clone()];
    let (code, _) = purge_command(wrong).await;
    assert_eq!(code, Some(1), "a refused token is a failure");
    let metrics = http.get(proxy.admin("/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
    let purged = metrics.lines().find_map(|line| line.strip_prefix("mirage_purged_entries_total "));
    assert_eq!(purged, Some("8"), "the purges are counted:\n{metrics}");
    proxy.stop().await;
    let proxy = Proxy::local(dir.path(), &flags).await;
    let urls = request_urls(&format!("http://{}", proxy.addr), &target);
    assert_eq!(x_caches(&urls).await, ["MISS"; 4], "purged entries came back from disk after a restart");
    assert_eq!(upstream.hits("/p.jpg"), 3);
    proxy.stop().await;
}
