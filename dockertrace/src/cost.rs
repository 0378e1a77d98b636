//! What tracing costs: the tracer process's CPU time and memory, and each eBPF program's run
//! count and run time (the kernel's `BPF_STATS_RUN_TIME`, as `kernel.bpf_stats_enabled=1`).
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The tracer's own cost over one run. Recorded with each run; read by `cargo xtask bench`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TracerCost {
    /// Loading and attaching the programs.
    pub attach_s: f64,
    /// CPU time (user + system) of the dockertrace process from loading the programs to the end
    /// of the run: reading the ring buffer, decoding, symbolizing, output.
    pub cpu_s: f64,
    /// Peak resident memory of the dockertrace process.
    pub peak_rss_kib: u64,
    /// Per-program run-time statistics (only with `--stats`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub programs: Vec<ProgramCost>,
}

/// Run-time statistics of one eBPF program while statistics were enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramCost {
    /// What the program is attached to: `net:net_dev_xmit`, `kprobe:veth_xmit`, ...
    pub program: String,
    /// Whether its events are reported (false: it only runs for its pairing partner).
    pub emits: bool,
    pub runs: u64,
    pub run_ns: u64,
}

impl ProgramCost {
    /// Average nanoseconds per run (0 when it never ran).
    pub fn avg_ns(&self) -> f64 {
        if self.runs == 0 {
            0.0
        } else {
            self.run_ns as f64 / self.runs as f64
        }
    }
}

/// What tracing cost the workload of one mode: its traced phase against its untraced phase
/// (the same workload, same duration, on the same deployment, just before). Derived from the
/// two phases' figures; the formulas are those of `cargo xtask bench` (docs/performance.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadCost {
    /// traced msg/s ÷ untraced msg/s: the share of the mode's throughput that tracing kept.
    pub kept: f64,
    /// `1/traced − 1/untraced msg/s`, in µs: the time tracing added to each message (for the
    /// echo with one connection, its round trip; with several, per message of them all).
    pub added_us_per_msg: f64,
    /// traced RTT p50 − untraced RTT p50, in µs (echo only: the stream pattern has no RTTs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_rtt_p50_us: Option<f64>,
    /// `added_us_per_msg ÷ events per message`, in ns: the time added per traced event — the
    /// bench's "tracing cost per event", the figure that holds across modes and machines (a
    /// mode with twice the events per message pays twice the tracer's cost per message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_per_event: Option<f64>,
}

impl WorkloadCost {
    /// The cost from the two phases' msg/s and RTT p50s and the traced phase's events per
    /// message; None when a rate is zero or not finite (no messages in a phase).
    pub fn new(
        traced_msgs_per_s: f64,
        untraced_msgs_per_s: f64,
        rtt_p50_us: Option<(f64, f64)>,
        events_per_msg: Option<f64>,
    ) -> Option<WorkloadCost> {
        let usable = |r: f64| r > 0.0 && r.is_finite();
        if !usable(traced_msgs_per_s) || !usable(untraced_msgs_per_s) {
            return None;
        }
        let added_s = 1.0 / traced_msgs_per_s - 1.0 / untraced_msgs_per_s;
        Some(WorkloadCost {
            kept: traced_msgs_per_s / untraced_msgs_per_s,
            added_us_per_msg: added_s * 1e6,
            added_rtt_p50_us: rtt_p50_us.map(|(traced, untraced)| traced - untraced),
            ns_per_event: events_per_msg.filter(|e| *e > 0.0 && e.is_finite()).map(|e| added_s / e * 1e9),
        })
    }
}

/// This process's CPU time so far (all threads, user + system; children excluded).
pub fn process_cpu() -> Duration {
    let u = usage();
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// This process's peak resident set size in KiB: `VmHWM` of /proc/self/status (the kernel's
/// `ru_maxrss` would also count the memory of the process that spawned us, kept across exec).
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| usage().ru_maxrss as u64)
}

fn usage() -> libc::rusage {
    // SAFETY: getrusage fills the zeroed struct; RUSAGE_SELF is always valid.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    }
}

/// Keeps the kernel's per-program run-time statistics on while alive (BPF_ENABLE_STATS; the
/// same switch as `sysctl kernel.bpf_stats_enabled=1`, released when dropped).
pub struct StatsGuard(
    #[expect(dead_code, reason = "held only to keep the statistics on")] std::os::fd::OwnedFd,
);

impl StatsGuard {
    /// Turns the statistics on, or says why it cannot (kernels before 5.8).
    pub fn enable() -> Result<StatsGuard, String> {
        aya::sys::enable_stats(aya::sys::Stats::RunTime).map(StatsGuard).map_err(|e| {
            format!("cannot enable eBPF run-time statistics (BPF_ENABLE_STATS, Linux 5.8+): {e}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_clock_and_memory_are_read() {
        let before = process_cpu();
        // Burn a little CPU so the clock moves.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(std::hint::black_box(x) != 1);
        assert!(process_cpu() > before);
        assert!(peak_rss_kib() > 100, "a running test binary uses more than 100 KiB");
    }

    #[test]
    fn the_workload_cost_is_the_time_added_per_message_over_its_events() {
        // Half the throughput: 50 µs per message instead of 25, shared by 14 events.
        let c = WorkloadCost::new(20_000.0, 40_000.0, Some((60.0, 35.0)), Some(14.0)).unwrap();
        assert_eq!(c.kept, 0.5);
        assert!((c.added_us_per_msg - 25.0).abs() < 1e-9, "{c:?}");
        assert_eq!(c.added_rtt_p50_us, Some(25.0));
        assert!((c.ns_per_event.unwrap() - 25_000.0 / 14.0).abs() < 1e-6, "{c:?}");
        // Noise can make the traced phase the faster one: a negative cost, kept as measured.
        let c = WorkloadCost::new(41_000.0, 40_000.0, None, Some(14.0)).unwrap();
        assert!(c.kept > 1.0 && c.added_us_per_msg < 0.0 && c.ns_per_event.unwrap() < 0.0);
        assert_eq!(c.added_rtt_p50_us, None);
        assert_eq!(WorkloadCost::new(20_000.0, 40_000.0, None, Some(0.0)).unwrap().ns_per_event, None);
        assert_eq!(WorkloadCost::new(20_000.0, 40_000.0, None, None).unwrap().ns_per_event, None);
        assert_eq!(WorkloadCost::new(0.0, 40_000.0, None, Some(14.0)), None);
        assert_eq!(WorkloadCost::new(20_000.0, 0.0, None, Some(14.0)), None);
        assert_eq!(WorkloadCost::new(f64::NAN, 40_000.0, None, None), None);
    }

    #[test]
    fn average_of_a_program_that_never_ran_is_zero() {
        let p = ProgramCost { program: "net:x".into(), emits: true, runs: 0, run_ns: 0 };
        assert_eq!(p.avg_ns(), 0.0);
        let p = ProgramCost { runs: 4, run_ns: 1000, ..p };
        assert_eq!(p.avg_ns(), 250.0);
    }
}
