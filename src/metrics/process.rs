//! The standard `process_` metrics, read from `/proc/self` at scrape time (Linux; elsewhere none are written).

use std::fs;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second in `/proc/self/stat`. `USER_HZ` is 100 on every Linux architecture Mirage runs on
/// (x86-64, arm64); asking `sysconf` would need unsafe code for a constant.
const TICKS_PER_SECOND: f64 = 100.0;

/// Writes `process_*` from `/proc/self`; a file that cannot be read leaves its metric out.
#[derive(Debug)]
pub struct ProcessCollector;

/// What one scrape read.
#[derive(Debug, Default, PartialEq)]
struct Sample {
    cpu_seconds: Option<f64>,
    start_time_seconds: Option<f64>,
    resident_bytes: Option<i64>,
    virtual_bytes: Option<i64>,
    open_fds: Option<i64>,
    max_fds: Option<i64>,
}

impl Sample {
    fn read() -> Sample {
        let stat = fs::read_to_string("/proc/self/stat").ok();
        let ticks = stat.as_deref().and_then(stat_ticks);
        let boot_time = fs::read_to_string("/proc/stat").ok().and_then(|text| boot_time(&text));
        let status = fs::read_to_string("/proc/self/status").ok();
        Sample {
            cpu_seconds: ticks.map(|(cpu, _)| cpu as f64 / TICKS_PER_SECOND),
            start_time_seconds: ticks
                .zip(boot_time)
                .map(|((_, started), boot)| boot as f64 + started as f64 / TICKS_PER_SECOND),
            resident_bytes: status.as_deref().and_then(|text| status_kib(text, "VmRSS:")).map(|kib| kib * 1024),
            virtual_bytes: status.as_deref().and_then(|text| status_kib(text, "VmSize:")).map(|kib| kib * 1024),
            open_fds: fs::read_dir("/proc/self/fd").ok().map(|entries| entries.count() as i64),
            max_fds: fs::read_to_string("/proc/self/limits").ok().and_then(|text| max_open_files(&text)),
        }
    }
}

/// (utime + stime, starttime) in clock ticks. The command name in parentheses may hold spaces, so fields are
/// counted from its closing parenthesis: the next field is the third (`state`).
fn stat_ticks(stat: &str) -> Option<(u64, u64)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
    Some((field(14)?.checked_add(field(15)?)?, field(22)?))
}

/// `btime` of `/proc/stat`: when the machine booted, in Unix seconds.
fn boot_time(text: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

/// A `kB` value of `/proc/self/status`.
fn status_kib(text: &str, name: &str) -> Option<i64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.split_whitespace().next()?.parse().ok())
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(text: &str) -> Option<i64> {
    text.lines().find_map(|line| line.strip_prefix("Max open files")?.split_whitespace().next()?.parse().ok())
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sample = Sample::read();
        if let Some(seconds) = sample.cpu_seconds {
            let counter = ConstCounter::new(seconds);
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds.",
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        let as_f64 = |value: Option<i64>| value.map(|value| value as f64);
        let gauges = [
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds.",
                sample.start_time_seconds,
            ),
            ("process_resident_memory_bytes", "Resident memory size in bytes.", as_f64(sample.resident_bytes)),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes.", as_f64(sample.virtual_bytes)),
            ("process_open_fds", "Open file descriptors.", as_f64(sample.open_fds)),
            ("process_max_fds", "Most file descriptors the process may open.", as_f64(sample.max_fds)),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 12345 1000 200";
        assert_eq!(stat_ticks(stat), Some((300, 12345)));
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"), Some(1_700_000_000));
        assert_eq!(status_kib("Name:\tmirage\nVmRSS:\t   20480 kB\n", "VmRSS:"), Some(20480));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let sample = Sample::read();
        assert!(sample.resident_bytes.is_some_and(|bytes| bytes > 0));
        assert!(sample.open_fds.is_some_and(|fds| fds > 0));
        assert!(sample.cpu_seconds.is_some());
        assert!(sample.start_time_seconds.is_some_and(|seconds| seconds > 1.5e9));
    }
}
