//! The `urls` and `warm` commands: find every image URL in a blog's articles, and fill the cache with them
//! (and with every variant the blog's theme uses) before traffic arrives.

pub mod extract;
pub mod report;
pub mod warmer;

use std::process::ExitCode;

use crate::config::{UrlsArgs, WarmArgs};

/// `mirage urls`: prints the distinct image URLs found in the inputs, one per line in order of first appearance
/// (or JSON lines with file, line, url and proxied), and a count of the dropped candidates on stderr. Exit code:
/// 0 on success, 2 when an input cannot be read, 1 when stdout cannot be written.
pub fn urls_command(args: &UrlsArgs) -> ExitCode {
    use std::io::Write;

    let options = extract::ExtractOptions {
        extensions: args.extract.extensions.clone(),
        proxy_prefixes: args.extract.proxy_prefixes.clone(),
    };
    let extraction = match extract::extract(&args.extract.inputs, &options) {
        Ok(extraction) => extraction,
        Err(error) => {
            eprintln!("mirage urls: {error}");
            return ExitCode::from(2);
        }
    };
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let written = extraction
        .urls
        .iter()
        .try_for_each(|found| {
            if args.json {
                serde_json::to_writer(&mut stdout, found).map_err(std::io::Error::from)?;
                writeln!(stdout)
            } else {
                writeln!(stdout, "{}", found.url)
            }
        })
        .and_then(|()| stdout.flush());
    if let Some(summary) = extraction.dropped_summary() {
        eprintln!("{summary}");
    }
    match written {
        // `mirage urls ... | head` closing the pipe early is not a failure.
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("mirage urls: cannot write to stdout: {error}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

/// `mirage warm`: warms every image URL found in the inputs, and every `--variant` of it, into the disk cache
/// (`--cache-dir`, by default the one `serve` uses) through the server's own pipeline, or through a running
/// server (`--server`); then prints the report. Exit code: 0 when every entry is cached, 1 when some failed,
/// 2 for bad usage or unreadable inputs, 130 (SIGINT) or 143 (SIGTERM) when interrupted.
pub async fn warm_command(args: WarmArgs) -> ExitCode {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use report::{Progress, ProgressStyleChoice, Report, ReportHead, Tally};
    use warmer::{Backend, ServerClient, Settings, Signals, Stop, Unit, Warmer};

    /// How long in-flight entries may take to finish after SIGINT/SIGTERM before they are abandoned.
    const GRACE: Duration = Duration::from_secs(5);
    /// The first retry's delay; each next one doubles.
    const BACKOFF: Duration = Duration::from_millis(200);
    /// Server mode: how much longer than the server's own upstream fetch an answer may take (transforms).
    const SERVER_SLACK: Duration = Duration::from_secs(30);

    let started = Instant::now();
    // First: a signal during extraction or set-up must not kill the process without a report.
    let signals = Signals::register();
    if std::env::var_os("RUST_LOG").is_some() {
        crate::telemetry::init(crate::config::LogFormat::Text);
    }
    let usage = |message: &str| {
        eprintln!("mirage warm: {message}");
        ExitCode::from(2)
    };
    let mut proxy_prefixes = args.extract.proxy_prefixes.clone();
    // Articles already migrated to this server link through it: `{server}/?{target}` is a proxy prefix too.
    if let Some(server) = &args.server {
        proxy_prefixes.push(format!("{}/?", server.as_str().trim_end_matches('/')));
    }
    let options = extract::ExtractOptions { extensions: args.extract.extensions.clone(), proxy_prefixes };
    let extraction = match extract::extract(&args.extract.inputs, &options) {
        Ok(extraction) => extraction,
        Err(error) => return usage(&error.to_string()),
    };
    let (backend, mode, destination, concurrency) = match &args.server {
        Some(server) => {
            let answer_timeout = args.pipeline.fetch_timeout.saturating_add(SERVER_SLACK);
            let client = match ServerClient::new(server, args.pipeline.connect_timeout, answer_timeout) {
                Ok(client) => client,
                Err(message) => return usage(&message),
            };
            if let Err(message) = client.check_reachable().await {
                eprintln!("mirage warm: {message}");
                return ExitCode::FAILURE;
            }
            (Backend::Server(client), "server", server.to_string(), args.concurrency as usize)
        }
        None => {
            if args.pipeline.no_disk_cache {
                return usage("--no-disk-cache leaves nothing to warm: give --cache-dir or --server");
            }
            let config = match args.pipeline.clone().into_config() {
                Ok(config) => config,
                Err(message) => return usage(&message),
            };
            let Some((dir, _)) = config.cache.disk.clone() else {
                return usage("no disk cache configured");
            };
            let pipeline = match crate::pipeline::Pipeline::new(&config).await {
                Ok(pipeline) => pipeline,
                Err(message) => {
                    eprintln!("mirage warm: {message}");
                    return ExitCode::FAILURE;
                }
            };
            if pipeline.cache().disk().is_none() {
                eprintln!("mirage warm: cannot open the disk cache at {} (RUST_LOG=warn shows why)", dir.display());
                return ExitCode::FAILURE;
            }
            // Past these bounds the pipeline answers 503 instead of queueing: a warm run stays under them.
            let bound = (config.transform.workers + config.transform.queue).min(config.max_inflight_fetches);
            let concurrency = (args.concurrency as usize).min(bound.max(1));
            (Backend::Cache(pipeline), "cache-dir", dir.display().to_string(), concurrency)
        }
    };

    let variants = warmer::expand_variants(&args.variants);
    let entries_per_url = 1 + variants.len() as u64;
    let tally = Arc::new(Tally::default());
    let mut units = Vec::new();
    for found in &extraction.urls {
        match crate::request::Target::parse(&found.url) {
            Ok(target) => units.push(Unit { url: found.url.clone(), target }),
            Err(_) => tally.failed(crate::error::ErrorCode::BadTarget.into(), &found.url, entries_per_url),
        }
    }
    let urls = extraction.urls.len() as u64;
    let head = ReportHead {
        mode,
        destination,
        urls,
        variants: warmer::distinct_variant_count(&variants) as u64,
        entries_per_url,
        jobs: urls * entries_per_url,
    };
    if !args.quiet {
        let dropped: Vec<String> = extraction.dropped.iter().map(|(why, count)| format!("{why} {count}")).collect();
        let dropped = if dropped.is_empty() { String::new() } else { format!("; dropped: {}", dropped.join(", ")) };
        eprintln!(
            "mirage warm: {urls} URLs x {entries_per_url} entries = {} jobs into {mode} {} (concurrency {concurrency}, \
             {} per host){dropped}",
            head.jobs, head.destination, args.per_host
        );
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(Stop::Running);
    let signal_task = tokio::spawn(signals.watch(stop_tx, GRACE));
    let settings = Settings { concurrency, per_host: args.per_host as usize, retries: args.retries, backoff: BACKOFF };
    let warmer = Warmer::new(backend, settings, variants, Arc::clone(&tally), stop_rx.clone());
    let progress = Progress::start(ProgressStyleChoice::detect(args.quiet), head.jobs, Arc::clone(&tally));
    warmer.run(units).await;
    // Even when interrupted: what was warmed is kept, so every queued disk write must land.
    warmer.flush_and_verify().await;
    progress.finish().await;
    let stop = *stop_rx.borrow();
    signal_task.abort();

    let report = Report::new(head, &tally, started.elapsed(), stop.exit_code().is_some());
    print!("{}", report.to_text());
    let mut code = match stop.exit_code() {
        Some(code) => code,
        None if report.failed > 0 => 1,
        None => 0,
    };
    if let Some(path) = &args.report {
        let written = serde_json::to_string_pretty(&report)
            .map_err(|error| error.to_string())
            .and_then(|json| std::fs::write(path, json + "\n").map_err(|error| error.to_string()));
        if let Err(error) = written {
            eprintln!("mirage warm: cannot write the report to {}: {error}", path.display());
            code = code.max(1);
        }
    }
    ExitCode::from(code)
}
