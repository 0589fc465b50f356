//! SIGINT and SIGTERM for `mirage warm`: the first signal drains the run, a second one (or the end of the grace
//! period) aborts it, and the exit code says which signal it was. Signals belong to the binary, not the library.

use std::time::Duration;

use mirage::warm::warmer::Stop;
use tokio::sync::watch;

/// SIGINT (Ctrl-C) and SIGTERM, registered up front so that a signal is never missed (or left to the
/// default action, which would kill the process without a report).
pub struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Registers the handlers now. Needs a Tokio runtime.
    pub fn register() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = signal(SignalKind::interrupt()).and_then(|int| Ok((int, signal(SignalKind::terminate())?)));
            Signals { streams: streams.ok() }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next signal, as the exit code it leads to: 130 for SIGINT, 143 for SIGTERM (128 + the number).
    async fn next(&mut self) -> u8 {
        #[cfg(unix)]
        match &mut self.streams {
            Some((interrupt, terminate)) => tokio::select! {
                _ = interrupt.recv() => 130,
                _ = terminate.recv() => 143,
            },
            None => std::future::pending().await,
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            130
        }
    }

    /// First signal: drain, and record its exit code in `exit_code`. Then `grace`, or a second signal: abort.
    pub async fn watch(mut self, stop: watch::Sender<Stop>, exit_code: watch::Sender<Option<u8>>, grace: Duration) {
        let code = self.next().await;
        let _ = exit_code.send(Some(code));
        let _ = stop.send(Stop::Draining);
        tokio::select! {
            _ = self.next() => {}
            () = tokio::time::sleep(grace) => {}
        }
        let _ = stop.send(Stop::Abort);
    }
}
