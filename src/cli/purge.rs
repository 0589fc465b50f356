//! `mirage purge`: removes images, each original with every variant made from it, from a running server
//! (`--server`, through its admin listener's `POST /purge`) or from a cache directory directly (`--cache-dir`).
//! Prints one summary line; exit 0 when every URL was purged, 1 when something failed, 2 on bad usage.

use std::io::{BufRead, Read};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use mirage::admin::purge::{MAX_BODY_BYTES, MAX_URLS, Report};
use mirage::config::{PurgeArgs, default_cache_dir};
use mirage::request::{self, ImageRequest};
use mirage_cache::{CacheKey, DiskTier};

/// How long the server may take to answer one purge request (it may first finish indexing its disk cache).
const SERVER_TIMEOUT: Duration = Duration::from_secs(300);

/// Why nothing was purged: (message, exit code).
type Failure = (String, u8);

/// Runs the command.
pub async fn run(args: PurgeArgs) -> ExitCode {
    let result = match read_urls(&args.urls) {
        Err(message) => Err((message, 2)),
        Ok(urls) => match &args.server {
            Some(server) => through_server(server, args.admin_token.as_deref(), &urls).await,
            None => offline(args.cache_dir.clone(), args.shared_cache.as_deref(), urls).await,
        },
    };
    match result {
        Ok(report) => {
            for invalid in &report.invalid {
                eprintln!("mirage purge: not an image URL: {invalid}");
            }
            let unrecorded: Vec<&str> = report
                .purged
                .iter()
                .filter(|purged| purged.shared.is_some_and(|shared| !shared.recorded))
                .map(|purged| purged.url.as_str())
                .collect();
            for url in &unrecorded {
                eprintln!("mirage purge: the shared cache was not purged (other nodes keep their copies): {url}");
            }
            let shared: usize =
                report.purged.iter().filter_map(|purged| purged.shared).map(|shared| shared.objects).sum();
            let fleet = if report.purged.iter().any(|purged| purged.shared.is_some()) {
                format!(", {shared} shared objects")
            } else {
                String::new()
            };
            println!(
                "purged {} entries{fleet} of {} URLs ({} invalid)",
                report.entries(),
                report.purged.len(),
                report.invalid.len()
            );
            let failed = !report.invalid.is_empty() || !unrecorded.is_empty();
            if failed { ExitCode::from(1) } else { ExitCode::SUCCESS }
        }
        Err((message, code)) => {
            eprintln!("mirage purge: {message}");
            ExitCode::from(code)
        }
    }
}

/// The URLs named by the arguments: each argument itself, or `-` for standard input and `@FILE` for a file, one
/// URL per line (blank lines and `#` comments skipped).
fn read_urls(args: &[String]) -> Result<Vec<String>, String> {
    let mut urls = Vec::new();
    for arg in args {
        let text = if arg == "-" {
            let mut text = String::new();
            std::io::stdin()
                .lock()
                .take(MAX_BODY_BYTES as u64 * 64)
                .read_to_string(&mut text)
                .map_err(|error| format!("reading standard input: {error}"))?;
            text
        } else if let Some(path) = arg.strip_prefix('@') {
            std::fs::read_to_string(path).map_err(|error| format!("reading {path}: {error}"))?
        } else {
            urls.push(arg.clone());
            continue;
        };
        for line in text.as_bytes().lines() {
            let line = line.map_err(|error| format!("reading {arg}: {error}"))?;
            let line = line.trim();
            if !line.is_empty() && !line.starts_with('#') {
                urls.push(line.to_owned());
            }
        }
    }
    if urls.is_empty() {
        return Err("no URLs given".to_owned());
    }
    Ok(urls)
}

/// The URLs as request bodies of one per line, each within the server's bounds (`MAX_URLS`, `MAX_BODY_BYTES`).
fn bodies(urls: &[String]) -> Vec<String> {
    let mut bodies = vec![String::new()];
    let mut count = 0;
    for url in urls {
        let Some(body) = bodies.last_mut() else { break };
        if count == MAX_URLS || (!body.is_empty() && body.len() + url.len() + 1 > MAX_BODY_BYTES) {
            bodies.push(String::new());
            count = 0;
        }
        if let Some(body) = bodies.last_mut() {
            body.push_str(url);
            body.push('\n');
            count += 1;
        }
    }
    bodies
}

/// POSTs the URLs to `{server}/purge`, in as many requests as the server's bounds need, and merges the answers.
async fn through_server(server: &url::Url, token: Option<&str>, urls: &[String]) -> Result<Report, Failure> {
    let endpoint = format!("{}/purge", server.as_str().trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(SERVER_TIMEOUT)
        .build()
        .map_err(|error| (format!("building the HTTP client: {error}"), 1))?;
    let mut report = Report::default();
    for body in bodies(urls) {
        let mut request = client.post(&endpoint).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|error| (format!("{endpoint}: {error}"), 1))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|error| (format!("{endpoint}: {error}"), 1))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err((format!("{endpoint} answered {status}: {}", text.trim()), 1));
        }
        let part: Report = serde_json::from_slice(&body)
            .map_err(|error| (format!("{endpoint} answered something else than a purge report: {error}"), 1))?;
        report.purged.extend(part.purged);
        report.invalid.extend(part.invalid);
    }
    Ok(report)
}

/// Purges the disk cache at `dir` (default: the one `serve` uses) directly: the links from sources to variants
/// come from the entries' headers, read once for the whole directory. With `shared`, also the fleet's shared cache
/// (then a missing local directory is skipped).
async fn offline(dir: Option<std::path::PathBuf>, shared: Option<&str>, urls: Vec<String>) -> Result<Report, Failure> {
    let dir = dir.or_else(default_cache_dir).ok_or_else(|| ("no cache directory: give --cache-dir".to_owned(), 2))?;
    let mut report = if dir.is_dir() {
        let urls = urls.clone();
        tokio::task::spawn_blocking(move || purge_directory(&dir, &urls))
            .await
            .map_err(|error| (format!("purge failed: {error}"), 1))??
    } else if shared.is_none() {
        return Err((format!("{} is not a cache directory", dir.display()), 1));
    } else {
        purge_nothing(&urls)
    };
    if let Some(url) = shared {
        purge_shared(url, &mut report).await?;
    }
    Ok(report)
}

/// The report of a purge without a local cache: every valid URL with 0 entries.
fn purge_nothing(urls: &[String]) -> Report {
    report_of(urls, |_| 0)
}

/// Reads each of `urls` as an image URL and purges its source with `purge_source` (which returns the entries it
/// removed); what is no image URL is listed as invalid.
fn report_of(urls: &[String], mut purge_source: impl FnMut(&CacheKey) -> usize) -> Report {
    let mut report = Report::default();
    for text in urls {
        match request::target_of_any_spelling(text) {
            Ok(target) => {
                let source = ImageRequest::source_key_of(&target);
                let entries = purge_source(&source);
                let url = target.canonical().to_owned();
                report.purged.push(mirage::admin::purge::Purged { url, tag: source.tag(), entries, shared: None });
            }
            Err(_) => report.invalid.push(text.clone()),
        }
    }
    report
}

/// Purges each source of `report` from the shared cache at `url`, recording what it did in the report.
async fn purge_shared(url: &str, report: &mut Report) -> Result<(), Failure> {
    let options = mirage_cache::shared::SharedOptions {
        url: url.to_owned(),
        timeout: Duration::from_secs(5),
        probe_interval: Duration::from_secs(30),
        purge_poll: Duration::from_secs(10),
        lease_ttl: Duration::from_secs(20),
        purge_retention: Duration::MAX,
        wait_for_queue: true,
    };
    let shared = mirage_cache::shared::SharedTier::open(&options).map_err(|message| (message, 2))?;
    for purged in &mut report.purged {
        let target =
            request::target_of_any_spelling(&purged.url).map_err(|_| (format!("{}: not a URL", purged.url), 1))?;
        let outcome = shared.purge(&ImageRequest::source_key_of(&target)).await;
        purged.shared =
            Some(mirage::admin::purge::SharedPurged { objects: outcome.objects, recorded: outcome.recorded });
    }
    Ok(())
}

fn purge_directory(dir: &Path, urls: &[String]) -> Result<Report, Failure> {
    // No budget: nothing is written, and nothing but what is purged may be deleted.
    let disk =
        DiskTier::open_unindexed(dir, u64::MAX).map_err(|error| (format!("opening {}: {error}", dir.display()), 1))?;
    Ok(report_of(urls, |source| disk.purge_source(source).len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_stay_within_the_servers_bounds() {
        let urls: Vec<String> = (0..MAX_URLS + 5).map(|i| format!("http://h.example/{i}.jpg")).collect();
        let split = bodies(&urls);
        assert_eq!(split.len(), 2);
        assert_eq!(split[0].lines().count(), MAX_URLS);
        assert_eq!(split.concat().lines().count(), urls.len());
        let long: Vec<String> =
            (0..3).map(|i| format!("http://h.example/{i}/{}", "a".repeat(MAX_BODY_BYTES / 2))).collect();
        let split = bodies(&long);
        assert_eq!(split.len(), 3);
        assert!(split.iter().all(|body| body.len() <= MAX_BODY_BYTES));
    }
}
