//! The `mirage` binary: parse the command line, then `serve` (set up logging, bind, run until a signal) or run
//! one of the commands in `cli`.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use mirage::config::{Cli, Command, ServeArgs};

mod cli;

fn main() -> ExitCode {
    tune_allocator();
    let matches = Cli::command().get_matches();
    let arguments = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    // `warm --server` talks to a server and never opens a cache directory: naming one as well is a mistake.
    // Checked here, not with clap's `conflicts_with`, so that a MIRAGE_CACHE_DIR in the environment (set for
    // `serve`) does not make `--server` unusable.
    if let Some(("warm", warm)) = matches.subcommand()
        && warm.contains_id("server")
        && warm.value_source("cache_dir") == Some(ValueSource::CommandLine)
    {
        Cli::command().error(ErrorKind::ArgumentConflict, "--server and --cache-dir cannot be used together").exit();
    }
    if let Some(("purge", purge)) = matches.subcommand()
        && purge.contains_id("server")
        && purge.value_source("cache_dir") == Some(ValueSource::CommandLine)
    {
        Cli::command().error(ErrorKind::ArgumentConflict, "--server and --cache-dir cannot be used together").exit();
    }
    // reqwest is built without a default TLS provider (aws-lc is a heavy build): choose ring, once, first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mirage: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match arguments.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Urls(args) => return cli::urls::run(&args),
        Command::Warm(args) => {
            let code = runtime.block_on(cli::warm::run(args));
            runtime.shutdown_background();
            return code;
        }
        Command::Sign(args) => return cli::sign::run(&args),
        Command::Cache(args) => return cli::cache::run(&args),
        Command::Rewrite(args) => return cli::rewrite::run(&args),
        Command::Purge(args) => {
            let code = runtime.block_on(cli::purge::run(args));
            runtime.shutdown_background();
            return code;
        }
    };
    // The server's own shutdown is bounded (--shutdown-timeout); what still runs past it, such as a read blocked
    // on a hung disk, is abandoned. Dropping the runtime instead would wait for its blocking threads forever.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("mirage: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    mirage::telemetry::init(args.log_format);
    let listen = args.listen;
    let config = args.into_config()?;
    let shutdown = shutdown_signal();
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    if let Some((dir, _)) = &config.pipeline.cache.disk {
        tracing::info!(dir = %dir.display(), "disk cache");
    }
    mirage::server::serve(listener, config, shutdown).await
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when this is called, not when the future is
/// first polled: called before the port is bound, a signal sent as soon as the server listens (by a supervisor or a
/// test) shuts it down gracefully instead of killing it with the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::terminate()).and_then(|terminate| Ok((terminate, signal(SignalKind::interrupt())?)))
    };
    async move {
        #[cfg(unix)]
        match signals {
            Ok((mut terminate, mut interrupt)) => {
                tokio::select! {
                    _ = terminate.recv() => {},
                    _ = interrupt.recv() => {},
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("signal received");
    }
}

/// Keeps glibc's malloc from holding freed image bodies (see BENCHMARKS.md, "Memory", for the measurements).
///
/// Image bodies (hundreds of KiB to MiBs) live for hours in the cache while buffers of similar sizes come and go
/// on many threads. By default glibc raises its mmap threshold to the size of the last large block freed (up to
/// 32 MiB), so after the first body is freed every later one is carved from the per-thread arenas, where a freed
/// body between two live ones can never be given back: RSS grew to 2.5x the memory budget and stayed there. A
/// fixed threshold gives every block of 128 KiB or more its own mapping, returned to the OS when freed, at the
/// price of an mmap and page faults per large allocation (only on misses: a hit allocates no body). Called first
/// thing, before any thread exists; the environment (`MALLOC_MMAP_THRESHOLD_` and friends) still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code, reason = "one FFI call to glibc's mallopt; the workspace denies unsafe code elsewhere")]
fn tune_allocator() {
    const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only changes allocator parameters; no thread allocates concurrently this early.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}
