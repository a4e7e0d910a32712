//! `process_*` series from `/proc/self`, as Go's Prometheus client exports
//! them (`prometheus/procfs`: the kernel's USER_HZ of 100 ticks a second).

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second in `/proc/<pid>/stat` (the kernel's USER_HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads this process's resource use at each scrape. Series it cannot read
/// (not Linux, `/proc` not mounted) are left out.
#[derive(Debug, Clone, Copy)]
pub struct ProcessCollector;

/// What one scrape found.
#[derive(Debug, Default, PartialEq)]
struct Sample {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<i64>,
    virtual_bytes: Option<i64>,
    open_fds: Option<i64>,
    max_fds: Option<i64>,
    start_time_seconds: Option<f64>,
}

impl Sample {
    fn read() -> Sample {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let boot = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let stat = parse_stat(&stat);
        let boot_time = boot
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        Sample {
            cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / TICKS_PER_SECOND),
            resident_bytes: status_kib(&status, "VmRSS:").map(|k| k * 1024),
            virtual_bytes: status_kib(&status, "VmSize:").map(|k| k * 1024),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as i64),
            max_fds: limits
                .lines()
                .find_map(|l| l.strip_prefix("Max open files"))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok()),
            start_time_seconds: stat
                .zip(boot_time)
                .map(|(s, boot)| boot + s.start_ticks as f64 / TICKS_PER_SECOND),
        }
    }
}

/// The fields of `/proc/<pid>/stat` the collector reads.
#[derive(Debug, Clone, Copy)]
struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

/// `/proc/<pid>/stat`: the command name is in parentheses and may hold
/// spaces, so fields are counted after the last `)` (field 3 is the state).
fn parse_stat(stat: &str) -> Option<Stat> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field n of proc(5) is fields[n - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
    })
}

/// A `Name:   123 kB` line of `/proc/<pid>/status`, in KiB.
fn status_kib(status: &str, name: &str) -> Option<i64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = Sample::read();
        if let Some(v) = s.cpu_seconds {
            let m = ConstCounter::new(v);
            m.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                m.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                s.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                s.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                s.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                s.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let m = ConstGauge::new(v);
                m.encode(encoder.encode_descriptor(name, help, None, m.metric_type())?)?;
            }
        }
        let start = s.start_time_seconds.or_else(|| {
            // Without /proc: at least a start time, the first scrape's.
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs_f64())
        });
        if let Some(v) = start {
            let m = ConstGauge::new(v);
            m.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                None,
                m.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_after_the_command_name() {
        // A command name with spaces and a ')' of its own.
        let line = "42 (my (odd) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1234 1000 10 18446744073709551615";
        let s = parse_stat(line).expect("parses");
        assert_eq!((s.utime, s.stime, s.start_ticks), (250, 50, 1234));
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn this_process_is_read_on_linux() {
        let s = Sample::read();
        if cfg!(target_os = "linux") {
            assert!(s.resident_bytes.unwrap_or(0) > 0, "{s:?}");
            assert!(s.open_fds.unwrap_or(0) > 0, "{s:?}");
            assert!(s.max_fds.unwrap_or(0) > 0, "{s:?}");
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            let start = s.start_time_seconds.expect("start time");
            assert!(
                start <= now + 1.0 && start > now - 86400.0 * 365.0,
                "{start}"
            );
        }
    }
}
