//! Logging set-up: `RUST_LOG`-style filtering, text or JSON lines on stderr.

use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::OnceLock;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// The format `init` chose: the access log writes its lines itself, in the same format (see `server::access_log`).
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The log format in use: the one `init` installed, else text.
pub fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or(LogFormat::Text)
}

/// Installs the global subscriber. `RUST_LOG` takes `level` or `target=level` lists (e.g. `info,mirage=debug`);
/// without it, Mirage logs at `info`.
pub fn init(format: LogFormat) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| Targets::from_str(&spec).ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let _ = FORMAT.set(format);
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
    };
    if let Err(error) = result {
        eprintln!("logging already initialised: {error}");
    }
}
