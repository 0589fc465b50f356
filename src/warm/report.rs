//! What a warm run did: the live counters (which the binary's progress display reads while it runs), and the
//! final report (plain text on stdout, JSON with `--report FILE`).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::error::ErrorCode;

/// URLs kept per failure reason in the report: enough to start investigating, not a dump of the whole blog.
pub const URLS_PER_REASON: usize = 5;

/// Why an entry could not be warmed: what the report groups failures by. Shown as stable snake_case strings
/// (the report's JSON keys), the server's own error codes among them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The server's own error code: every failure in cache-dir mode, and in server mode a status that has one
    /// meaning in the server's status table.
    Code(ErrorCode),
    /// Server mode: a 400 (a bad target or bad options).
    BadRequest,
    /// Server mode: a 413 (one of the size limits).
    TooLarge,
    /// Server mode: a 502 (upstream failed in one of several ways).
    UpstreamError,
    /// Server mode: another HTTP error status.
    HttpStatus(u16),
    /// Server mode: the server did not answer in time.
    ServerTimeout,
    /// Server mode: the server could not be reached.
    ServerUnreachable,
    /// Server mode: the answer broke off, or another client error.
    ServerError,
    /// Upstream failed and an expired copy answered: the cache was not refreshed.
    Stale,
    /// Upstream said `no-store`: served, but nothing was kept.
    NotCacheable,
    /// Counted as warmed or cached, but not on disk after the final flush (a full disk, or a cache too small).
    NotStored,
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            FailureReason::Code(code) => code.as_str(),
            FailureReason::BadRequest => "bad_request",
            FailureReason::TooLarge => "too_large",
            FailureReason::UpstreamError => "upstream_error",
            FailureReason::HttpStatus(status) => return write!(f, "http_{status}"),
            FailureReason::ServerTimeout => "server_timeout",
            FailureReason::ServerUnreachable => "server_unreachable",
            FailureReason::ServerError => "server_error",
            FailureReason::Stale => "stale",
            FailureReason::NotCacheable => "not_cacheable",
            FailureReason::NotStored => "not_stored",
        };
        f.write_str(text)
    }
}

impl From<ErrorCode> for FailureReason {
    fn from(code: ErrorCode) -> FailureReason {
        FailureReason::Code(code)
    }
}

/// Counters updated by the warm workers as jobs end. Shared; every method takes `&self`.
#[derive(Debug, Default)]
pub struct Tally {
    warmed: AtomicU64,
    cached: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    // A std Mutex: held for a map update, never across an await. Keyed by the reason's text: the report lists
    // reasons in that order.
    failures: Mutex<BTreeMap<String, FailureGroup>>,
}

/// The jobs that failed for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureGroup {
    /// Jobs (URL × variant) that failed for this reason.
    pub jobs: u64,
    /// The first few distinct URLs, in the order they failed.
    pub urls: Vec<String>,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Entries fetched or made by this run.
    pub warmed: u64,
    /// Entries that were already cached.
    pub cached: u64,
    /// Entries that could not be warmed.
    pub failed: u64,
    /// Body bytes of the warmed entries.
    pub bytes: u64,
}

impl Counts {
    /// Jobs ended, whatever their outcome.
    pub fn done(&self) -> u64 {
        self.warmed + self.cached + self.failed
    }
}

impl Tally {
    /// An entry was fetched or made now, `bytes` long.
    pub fn warmed(&self, bytes: u64) {
        self.warmed.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// An entry was already cached.
    pub fn cached(&self) {
        self.cached.fetch_add(1, Ordering::Relaxed);
    }

    /// `jobs` entries of `url` failed for `reason`.
    pub fn failed(&self, reason: FailureReason, url: &str, jobs: u64) {
        if jobs == 0 {
            return;
        }
        self.failed.fetch_add(jobs, Ordering::Relaxed);
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let group = failures.entry(reason.to_string()).or_insert_with(|| FailureGroup { jobs: 0, urls: Vec::new() });
        group.jobs += jobs;
        if group.urls.len() < URLS_PER_REASON && !group.urls.iter().any(|seen| seen == url) {
            group.urls.push(url.to_owned());
        }
    }

    /// Turns a success counted earlier into a failure (an entry that did not reach the disk after all).
    pub fn demote(&self, was_warmed: bool, bytes: u64, reason: FailureReason, url: &str) {
        if was_warmed {
            self.warmed.fetch_sub(1, Ordering::Relaxed);
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        } else {
            self.cached.fetch_sub(1, Ordering::Relaxed);
        }
        self.failed(reason, url, 1);
    }

    /// The counters now.
    pub fn counts(&self) -> Counts {
        Counts {
            warmed: self.warmed.load(Ordering::Relaxed),
            cached: self.cached.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// The failures so far, by reason.
    pub fn failures(&self) -> BTreeMap<String, FailureGroup> {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// The final report, printed as text and written as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was warmed, and how much work that was.
    #[serde(flatten)]
    pub head: ReportHead,
    /// Entries fetched or made by this run.
    pub warmed: u64,
    /// Entries that were cached already.
    pub already_cached: u64,
    /// Entries that could not be warmed.
    pub failed: u64,
    /// Entries never attempted because the run was interrupted.
    pub not_started: u64,
    /// Body bytes of the entries warmed by this run (0 when everything was cached already).
    pub bytes_fetched: u64,
    /// Wall-clock time of the run.
    pub elapsed_seconds: f64,
    /// Whether SIGINT/SIGTERM cut the run short.
    pub interrupted: bool,
    /// Failures by reason (`FailureReason`'s text), with the first few URLs of each.
    pub failures: BTreeMap<String, FailureGroup>,
}

impl Report {
    /// Assembles the report from the final counters.
    pub fn new(head: ReportHead, tally: &Tally, elapsed: Duration, interrupted: bool) -> Report {
        let counts = tally.counts();
        Report {
            not_started: head.jobs.saturating_sub(counts.done()),
            head,
            warmed: counts.warmed,
            already_cached: counts.cached,
            failed: counts.failed,
            bytes_fetched: counts.bytes,
            elapsed_seconds: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            interrupted,
            failures: tally.failures(),
        }
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let status = if self.interrupted { "INTERRUPTED, partial report" } else { "done" };
        let _ = writeln!(out, "mirage warm: {status} ({} {})", self.head.mode, self.head.destination);
        let rows = [
            ("urls", self.head.urls.to_string()),
            (
                "variants",
                format!("{} ({} entries per URL, original included)", self.head.variants, self.head.entries_per_url),
            ),
            ("jobs", self.head.jobs.to_string()),
            ("warmed", self.warmed.to_string()),
            ("already cached", self.already_cached.to_string()),
            ("failed", self.failed.to_string()),
            ("not started", self.not_started.to_string()),
            ("bytes fetched", format!("{} ({})", self.bytes_fetched, human_bytes(self.bytes_fetched))),
            ("elapsed", format!("{:.2}s", self.elapsed_seconds)),
        ];
        for (label, value) in rows {
            let _ = writeln!(out, "  {:<16}{value}", format!("{label}:"));
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "failures by reason:");
            for (reason, group) in &self.failures {
                let plural = if group.jobs == 1 { "" } else { "s" };
                let _ = writeln!(out, "  {reason}: {} job{plural}", group.jobs);
                for url in &group.urls {
                    let _ = writeln!(out, "    {url}");
                }
            }
        }
        out
    }
}

/// What the report knows before the run starts.
#[derive(Debug, Clone, Serialize)]
pub struct ReportHead {
    /// `cache-dir` or `server`.
    pub mode: &'static str,
    /// The cache directory or the server URL warmed.
    pub destination: String,
    /// Distinct image URLs found in the inputs.
    pub urls: u64,
    /// Distinct `--variant`s (besides the original, which is always warmed).
    pub variants: u64,
    /// Cache entries per URL: the original, plus one per variant and negotiated format.
    pub entries_per_url: u64,
    /// URLs × entries per URL.
    pub jobs: u64,
}

/// `1.5 MiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_the_first_distinct_urls() {
        let tally = Tally::default();
        for index in 0..8 {
            tally.failed(ErrorCode::UpstreamNotFound.into(), &format!("http://h/{}.jpg", index % 7), 2);
        }
        tally.failed(ErrorCode::NotAnImage.into(), "http://h/page.html", 1);
        let failures = tally.failures();
        let group = &failures["upstream_not_found"];
        assert_eq!(group.jobs, 16);
        assert_eq!(group.urls.len(), URLS_PER_REASON);
        assert_eq!(group.urls[0], "http://h/0.jpg");
        assert_eq!(tally.counts().failed, 17);
    }

    #[test]
    fn demote_moves_a_success_to_the_failures() {
        let tally = Tally::default();
        tally.warmed(100);
        tally.cached();
        tally.demote(true, 100, FailureReason::NotStored, "http://h/a.jpg");
        assert_eq!(tally.counts(), Counts { warmed: 0, cached: 1, failed: 1, bytes: 0 });
        assert!(tally.failures().contains_key("not_stored"));
    }

    #[test]
    fn reasons_are_the_stable_strings() {
        assert_eq!(FailureReason::Code(ErrorCode::BadTarget).to_string(), "bad_target");
        assert_eq!(FailureReason::HttpStatus(418).to_string(), "http_418");
        assert_eq!(FailureReason::NotCacheable.to_string(), "not_cacheable");
        assert_eq!(FailureReason::ServerUnreachable.to_string(), "server_unreachable");
    }

    #[test]
    fn text_report_lists_totals_and_reasons() {
        let tally = Tally::default();
        tally.warmed(2048);
        tally.failed(ErrorCode::NotAnImage.into(), "http://h/page.html", 3);
        let head = ReportHead {
            mode: "cache-dir",
            destination: "/tmp/c".into(),
            urls: 2,
            variants: 2,
            entries_per_url: 3,
            jobs: 6,
        };
        let text = Report::new(head, &tally, Duration::from_millis(1500), true).to_text();
        assert!(text.contains("INTERRUPTED"), "{text}");
        assert!(text.contains("  warmed:         1\n"), "{text}");
        assert!(text.contains("  not started:    2\n"), "{text}");
        assert!(text.contains("  bytes fetched:  2048 (2.0 KiB)\n"), "{text}");
        assert!(text.contains("  not_an_image: 3 jobs\n    http://h/page.html\n"), "{text}");
    }
}
