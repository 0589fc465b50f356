//! `mirage warm`: warms every image URL found in the inputs, and every `--variant` of it, into the disk cache
//! (`--cache-dir`, by default the one `serve` uses) through the server's own pipeline, or through a running
//! server (`--server`); then prints the report. One function per step: logging, extraction, the destination,
//! the plan, the run, the report.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mirage::config::{LogFormat, WarmArgs};
use mirage::error::ErrorCode;
use mirage::pipeline::Pipeline;
use mirage::request::{Target, Variant};
use mirage::warm::extract::{self, ExtractOptions, Extraction};
use mirage::warm::report::{Report, ReportHead, Tally};
use mirage::warm::warmer::{self, Backend, ServerClient, Settings, Stop, Unit, Warmer};
use tokio::sync::watch;

use super::progress::{Progress, ProgressStyleChoice};
use super::signals::Signals;

/// How long in-flight entries may take to finish after SIGINT/SIGTERM before they are abandoned.
const GRACE: Duration = Duration::from_secs(5);
/// The first retry's delay; each next one doubles.
const BACKOFF: Duration = Duration::from_millis(200);
/// Server mode: how much longer than the server's own upstream fetch an answer may take (transforms).
const SERVER_SLACK: Duration = Duration::from_secs(30);

/// Why a run ended before warming anything.
enum Failure {
    /// Bad usage or unreadable inputs: exit code 2.
    Usage(String),
    /// The destination cannot be used: exit code 1.
    Fatal(String),
}

impl Failure {
    /// Says why on stderr and gives the exit code.
    fn exit(self) -> ExitCode {
        let (message, code) = match self {
            Failure::Usage(message) => (message, 2),
            Failure::Fatal(message) => (message, 1),
        };
        eprintln!("mirage warm: {message}");
        ExitCode::from(code)
    }
}

/// Where the run warms.
struct Destination {
    /// The pipeline or the server client.
    backend: Backend,
    /// `cache-dir` or `server`, as the report says.
    mode: &'static str,
    /// The cache directory or the server URL.
    name: String,
    /// Entries in progress at once.
    concurrency: usize,
}

/// Runs `mirage warm`. Exit code: 0 when every entry is cached, 1 when some failed, 2 for bad usage or unreadable
/// inputs, 130 (SIGINT) or 143 (SIGTERM) when interrupted.
pub async fn run(args: WarmArgs) -> ExitCode {
    let started = Instant::now();
    // First: a signal during extraction or set-up must not kill the process without a report.
    let signals = Signals::register();
    init_logging();
    let set_up = async { Ok::<_, Failure>((extract_urls(&args)?, choose_destination(&args).await?)) };
    let (extraction, destination) = match set_up.await {
        Ok(set_up) => set_up,
        Err(failure) => return failure.exit(),
    };
    let variants = warmer::expand_variants(&args.variants);
    let tally = Arc::new(Tally::default());
    let units = parse_units(&extraction, 1 + variants.len() as u64, &tally);
    let head = report_head(&extraction, &destination, &variants);
    if !args.quiet {
        announce(&head, &extraction, destination.concurrency, args.per_host);
    }
    let interrupted = warm(destination, &args, variants, units, &tally, head.jobs, signals).await;
    let report = Report::new(head, &tally, started.elapsed(), interrupted.is_some());
    finish(&report, interrupted, args.report.as_deref())
}

/// Logs only when `RUST_LOG` asks for it: the output of a run is its progress and its report.
fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        mirage::telemetry::init(LogFormat::Text);
    }
}

/// The image URLs of the inputs. Articles already migrated to the server link through it, so `{server}/?` is a
/// proxy prefix too.
fn extract_urls(args: &WarmArgs) -> Result<Extraction, Failure> {
    let mut proxy_prefixes = args.extract.proxy_prefixes.clone();
    if let Some(server) = &args.server {
        proxy_prefixes.push(format!("{}/?", server.as_str().trim_end_matches('/')));
    }
    let options = ExtractOptions { extensions: args.extract.extensions.clone(), proxy_prefixes };
    extract::extract(&args.extract.inputs, &options).map_err(|error| Failure::Usage(error.to_string()))
}

/// A running server with `--server`, the disk cache otherwise.
async fn choose_destination(args: &WarmArgs) -> Result<Destination, Failure> {
    match &args.server {
        Some(server) => server_destination(server, args).await,
        None => cache_destination(args).await,
    }
}

/// A client of the server, checked to answer at all.
async fn server_destination(server: &url::Url, args: &WarmArgs) -> Result<Destination, Failure> {
    let answer_timeout = args.pipeline.fetch_timeout.saturating_add(SERVER_SLACK);
    let client = ServerClient::new(server, args.pipeline.connect_timeout, answer_timeout).map_err(Failure::Usage)?;
    client.check_reachable().await.map_err(Failure::Fatal)?;
    Ok(Destination {
        backend: Backend::Server(client),
        mode: "server",
        name: server.to_string(),
        concurrency: args.concurrency as usize,
    })
}

/// The server's own pipeline over the disk cache, with the concurrency cut to what the pipeline admits.
async fn cache_destination(args: &WarmArgs) -> Result<Destination, Failure> {
    if args.pipeline.no_disk_cache {
        return Err(Failure::Usage("--no-disk-cache leaves nothing to warm: give --cache-dir or --server".to_owned()));
    }
    let config = args.pipeline.clone().into_config().map_err(Failure::Usage)?;
    let Some((dir, _)) = config.cache.disk.clone() else {
        return Err(Failure::Usage("no disk cache configured".to_owned()));
    };
    let pipeline = Pipeline::new(&config).await.map_err(Failure::Fatal)?;
    if pipeline.cache().disk().is_none() {
        let message = format!("cannot open the disk cache at {} (RUST_LOG=warn shows why)", dir.display());
        return Err(Failure::Fatal(message));
    }
    // Past these bounds the pipeline answers 503 instead of queueing: a warm run stays under them.
    let bound = (config.transform.workers + config.transform.queue).min(config.max_inflight_fetches);
    Ok(Destination {
        backend: Backend::Cache(pipeline),
        mode: "cache-dir",
        name: dir.display().to_string(),
        concurrency: (args.concurrency as usize).min(bound.max(1)),
    })
}

/// The URLs the server would fetch; the others are counted as failed right away, once per entry.
fn parse_units(extraction: &Extraction, entries_per_url: u64, tally: &Tally) -> Vec<Unit> {
    let mut units = Vec::new();
    for found in &extraction.urls {
        match Target::parse(&found.url) {
            Ok(target) => units.push(Unit { url: found.url.clone(), target }),
            Err(_) => tally.failed(ErrorCode::BadTarget.into(), &found.url, entries_per_url),
        }
    }
    units
}

/// What the report knows before the run.
fn report_head(extraction: &Extraction, destination: &Destination, variants: &[Variant]) -> ReportHead {
    let urls = extraction.urls.len() as u64;
    let entries_per_url = 1 + variants.len() as u64;
    ReportHead {
        mode: destination.mode,
        destination: destination.name.clone(),
        urls,
        variants: warmer::distinct_variant_count(variants) as u64,
        entries_per_url,
        jobs: urls * entries_per_url,
    }
}

/// One line on stderr saying what is about to happen.
fn announce(head: &ReportHead, extraction: &Extraction, concurrency: usize, per_host: u32) {
    let dropped: Vec<String> = extraction.dropped.iter().map(|(why, count)| format!("{why} {count}")).collect();
    let dropped = if dropped.is_empty() { String::new() } else { format!("; dropped: {}", dropped.join(", ")) };
    eprintln!(
        "mirage warm: {} URLs x {} entries = {} jobs into {} {} (concurrency {concurrency}, {per_host} per host)\
         {dropped}",
        head.urls, head.entries_per_url, head.jobs, head.mode, head.destination
    );
}

/// The run itself: every unit through the warmer, progress on stderr, a drain on the first signal and an abort
/// after the grace period. Returns the exit code of the signal that interrupted the run, if one did.
async fn warm(
    destination: Destination,
    args: &WarmArgs,
    variants: Vec<Variant>,
    units: Vec<Unit>,
    tally: &Arc<Tally>,
    jobs: u64,
    signals: Signals,
) -> Option<u8> {
    let (stop_tx, stop_rx) = watch::channel(Stop::Running);
    let (code_tx, code_rx) = watch::channel(None);
    let signal_task = tokio::spawn(signals.watch(stop_tx, code_tx, GRACE));
    let settings = Settings {
        concurrency: destination.concurrency,
        per_host: args.per_host as usize,
        retries: args.retries,
        backoff: BACKOFF,
    };
    let warmer = Warmer::new(destination.backend, settings, variants, Arc::clone(tally), stop_rx.clone());
    let progress = Progress::start(ProgressStyleChoice::detect(args.quiet), jobs, Arc::clone(tally));
    warmer.run(units).await;
    // Even when interrupted: what was warmed is kept, so every queued disk write must land.
    warmer.flush_and_verify().await;
    progress.finish().await;
    signal_task.abort();
    *code_rx.borrow()
}

/// Prints the report, writes it as JSON when asked, and gives the exit code.
fn finish(report: &Report, interrupted: Option<u8>, json_path: Option<&Path>) -> ExitCode {
    print!("{}", report.to_text());
    let mut code = match interrupted {
        Some(code) => code,
        None if report.failed > 0 => 1,
        None => 0,
    };
    if let Some(path) = json_path {
        let written = serde_json::to_string_pretty(report)
            .map_err(|error| error.to_string())
            .and_then(|json| std::fs::write(path, json + "\n").map_err(|error| error.to_string()));
        if let Err(error) = written {
            eprintln!("mirage warm: cannot write the report to {}: {error}", path.display());
            code = code.max(1);
        }
    }
    ExitCode::from(code)
}
