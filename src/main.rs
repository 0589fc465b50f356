//! The `mirage` binary: parse the command line, then `serve` (set up logging, bind, run until a signal) or run
//! one of the commands in `cli`.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use mirage::config::{Cli, Command, ServeArgs};

mod cli;

fn main() -> ExitCode {
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
        Command::Warm(args) => return runtime.block_on(cli::warm::run(args)),
        Command::Sign(args) => return cli::sign::run(&args),
    };
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
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    if let Some((dir, _)) = &config.pipeline.cache.disk {
        tracing::info!(dir = %dir.display(), "disk cache");
    }
    mirage::server::serve(listener, config, shutdown_signal()).await
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("signal received");
}
