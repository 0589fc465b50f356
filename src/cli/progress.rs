//! The progress of a warm run on stderr: an indicatif bar on a terminal, a plain line every few seconds otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mirage::warm::report::{Counts, Tally};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often a plain progress line is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(2);
/// How often the progress bar is redrawn.
const BAR_EVERY: Duration = Duration::from_millis(150);

/// How progress is shown while the run goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressStyleChoice {
    /// Nothing (`--quiet`).
    Quiet,
    /// An indicatif bar redrawn in place (stderr is a terminal).
    Bar,
    /// A plain line every few seconds and one at the end (stderr is a file or a pipe).
    Lines,
}

impl ProgressStyleChoice {
    /// The choice for this process: quiet when asked, a bar on a terminal, lines otherwise.
    pub fn detect(quiet: bool) -> ProgressStyleChoice {
        if quiet {
            ProgressStyleChoice::Quiet
        } else if std::io::stderr().is_terminal() {
            ProgressStyleChoice::Bar
        } else {
            ProgressStyleChoice::Lines
        }
    }
}

/// The task that shows progress until `finish`.
#[derive(Debug)]
pub struct Progress {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts showing progress of `jobs` jobs counted by `tally`.
    pub fn start(choice: ProgressStyleChoice, jobs: u64, tally: Arc<Tally>) -> Progress {
        let (stop, stopped) = watch::channel(false);
        let task = match choice {
            ProgressStyleChoice::Quiet => None,
            ProgressStyleChoice::Bar => Some(tokio::spawn(run_bar(jobs, tally, stopped))),
            ProgressStyleChoice::Lines => Some(tokio::spawn(run_lines(jobs, tally, stopped))),
        };
        Progress { stop, task }
    }

    /// Stops the display (the bar is cleared, the plain display prints its last line) and waits for it.
    pub async fn finish(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

async fn run_bar(jobs: u64, tally: Arc<Tally>, mut stopped: watch::Receiver<bool>) {
    let bar = ProgressBar::with_draw_target(Some(jobs), ProgressDrawTarget::stderr());
    let template = "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}, ETA {eta}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    let started = Instant::now();
    loop {
        let counts = tally.counts();
        let rate = counts.done() as f64 / started.elapsed().as_secs_f64().max(0.001);
        // Message first: each setter redraws, and the counts must agree with the position.
        bar.set_message(format!(
            "warmed {} cached {} failed {}, {rate:.1}/s",
            counts.warmed, counts.cached, counts.failed
        ));
        bar.set_position(counts.done());
        bar.tick();
        tokio::select! {
            () = tokio::time::sleep(BAR_EVERY) => {}
            _ = stopped.wait_for(|stop| *stop) => break,
        }
    }
    // The report follows on stdout: leave the terminal clean for it.
    bar.finish_and_clear();
}

async fn run_lines(jobs: u64, tally: Arc<Tally>, mut stopped: watch::Receiver<bool>) {
    let started = Instant::now();
    loop {
        let stop = tokio::select! {
            () = tokio::time::sleep(LINE_EVERY) => false,
            _ = stopped.wait_for(|stop| *stop) => true,
        };
        eprintln!("{}", progress_line(jobs, tally.counts(), started.elapsed()));
        if stop {
            break;
        }
    }
}

/// `mirage warm: 12/90 jobs (warmed 10, cached 1, failed 1), 5.2/s, ETA 15s`.
pub fn progress_line(jobs: u64, counts: Counts, elapsed: Duration) -> String {
    let done = counts.done();
    let rate = if elapsed.is_zero() { 0.0 } else { done as f64 / elapsed.as_secs_f64() };
    let eta = if rate > 0.0 && done < jobs {
        format!(", ETA {}s", ((jobs - done) as f64 / rate).ceil())
    } else {
        String::new()
    };
    format!(
        "mirage warm: {done}/{jobs} jobs (warmed {}, cached {}, failed {}), {rate:.1}/s{eta}",
        counts.warmed, counts.cached, counts.failed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_has_rate_and_eta() {
        let counts = Counts { warmed: 8, cached: 1, failed: 1, bytes: 0 };
        let line = progress_line(20, counts, Duration::from_secs(2));
        assert_eq!(line, "mirage warm: 10/20 jobs (warmed 8, cached 1, failed 1), 5.0/s, ETA 2s");
    }
}
