//! The client's final report, as JSON (one line) or human text.

use std::fmt::Write as _;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use super::histogram::Histogram;
use super::Pattern;

/// Round-trip time statistics in microseconds (echo pattern only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RttSummary {
    /// Median RTT.
    pub p50: f64,
    /// 99th percentile RTT.
    pub p99: f64,
    /// Largest RTT (exact).
    pub max: f64,
    /// Mean RTT (exact).
    pub mean: f64,
    /// Number of measured round trips.
    pub samples: u64,
}

impl RttSummary {
    /// Summarizes a histogram of nanosecond samples; `None` when it is empty.
    pub(crate) fn from_nanos(hist: &Histogram) -> Option<Self> {
        if hist.count() == 0 {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Some(Self {
            p50: us(hist.value_at_quantile(0.50)),
            p99: us(hist.value_at_quantile(0.99)),
            max: us(hist.max()),
            mean: hist.mean() / 1_000.0,
            samples: hist.count(),
        })
    }
}

/// What a client run measured (after the warm-up).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkloadReport {
    /// `echo` or `stream`.
    pub pattern: String,
    /// Number of TCP connections.
    pub connections: u32,
    /// Message size in bytes.
    pub message_size: u32,
    /// Messages echoed back (stream: echoed bytes / message size).
    pub messages: u64,
    /// Payload bytes echoed back (one direction; the same amount went the other way).
    pub bytes: u64,
    /// Length of the measured window in seconds.
    pub duration_s: f64,
    /// Messages per second.
    pub msgs_per_s: f64,
    /// Megabytes (10^6 bytes) per second, one direction.
    pub mb_per_s: f64,
    /// Round-trip times; `None` for the stream pattern (many requests in flight).
    pub rtt_us: Option<RttSummary>,
}

impl WorkloadReport {
    /// Builds a report, deriving the rates (0 when the window is empty).
    pub fn new(
        pattern: Pattern,
        connections: u32,
        message_size: u32,
        messages: u64,
        bytes: u64,
        duration_s: f64,
        rtt_us: Option<RttSummary>,
    ) -> Self {
        let rate = |amount: f64| {
            if duration_s > 0.0 && duration_s.is_finite() {
                amount / duration_s
            } else {
                0.0
            }
        };
        Self {
            pattern: pattern.as_str().to_owned(),
            connections,
            message_size,
            messages,
            bytes,
            duration_s,
            msgs_per_s: rate(messages as f64),
            mb_per_s: rate(bytes as f64 / 1e6),
            rtt_us,
        }
    }

    /// Parses the report the client printed with `--json`.
    ///
    /// `s` may be the client's whole stdout: the last non-empty line starting with `{` is used.
    pub fn parse_json_line(s: &str) -> Result<Self> {
        let line = s
            .lines()
            .map(str::trim)
            .rev()
            .find(|line| line.starts_with('{'))
            .with_context(|| format!("no JSON report in workload output {:?}", snippet(s)))?;
        serde_json::from_str(line).map_err(|e| anyhow!("invalid workload report {:?}: {e}", snippet(line)))
    }

    /// The report as one line of JSON (what `--json` prints).
    pub fn to_json_line(&self) -> Result<String> {
        serde_json::to_string(self).context("serializing the workload report")
    }

    /// A few lines of text for people.
    pub fn human(&self) -> String {
        let mut out = format!(
            "{} pattern: {} connection(s), {}-byte messages\n\
             {} messages, {} bytes in {:.3} s: {:.1} msg/s, {:.3} MB/s\n",
            self.pattern,
            self.connections,
            self.message_size,
            self.messages,
            self.bytes,
            self.duration_s,
            self.msgs_per_s,
            self.mb_per_s,
        );
        match &self.rtt_us {
            Some(rtt) => {
                let _ = writeln!(
                    out,
                    "rtt (us): p50 {:.1}, p99 {:.1}, max {:.1}, mean {:.1} ({} samples)",
                    rtt.p50, rtt.p99, rtt.max, rtt.mean, rtt.samples
                );
            }
            None => out.push_str("rtt: not measured\n"),
        }
        out
    }
}

/// The start of a text, for error messages.
fn snippet(s: &str) -> String {
    s.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WorkloadReport {
        WorkloadReport::new(
            Pattern::Echo,
            1,
            42,
            1000,
            42_000,
            2.0,
            Some(RttSummary { p50: 40.5, p99: 80.3, max: 412.0, mean: 41.125, samples: 1000 }),
        )
    }

    #[test]
    fn rates_are_derived() {
        let r = sample();
        assert_eq!(r.msgs_per_s, 500.0);
        assert_eq!(r.mb_per_s, 0.021);
        let empty = WorkloadReport::new(Pattern::Stream, 1, 42, 0, 0, 0.0, None);
        assert_eq!(empty.msgs_per_s, 0.0);
        assert_eq!(empty.mb_per_s, 0.0);
    }

    #[test]
    fn json_round_trip() {
        let r = sample();
        let line = r.to_json_line().unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(WorkloadReport::parse_json_line(&line).unwrap(), r);
        let stream = WorkloadReport::new(Pattern::Stream, 2, 42, 10, 420, 1.0, None);
        let line = stream.to_json_line().unwrap();
        assert!(line.contains("\"rtt_us\":null"), "{line}");
        assert_eq!(WorkloadReport::parse_json_line(&line).unwrap(), stream);
    }

    #[test]
    fn parse_picks_the_json_line_from_noisy_output() {
        let r = sample();
        let out = format!("some log line\n{}\n\n", r.to_json_line().unwrap());
        assert_eq!(WorkloadReport::parse_json_line(&out).unwrap(), r);
    }

    #[test]
    fn parse_errors_are_clear() {
        let err = WorkloadReport::parse_json_line("connection refused").unwrap_err();
        assert!(err.to_string().contains("no JSON report"), "{err}");
        let err = WorkloadReport::parse_json_line("{\"pattern\": 1}").unwrap_err();
        assert!(err.to_string().contains("invalid workload report"), "{err}");
    }

    #[test]
    fn human_text() {
        let text = sample().human();
        assert_eq!(
            text,
            "echo pattern: 1 connection(s), 42-byte messages\n\
             1000 messages, 42000 bytes in 2.000 s: 500.0 msg/s, 0.021 MB/s\n\
             rtt (us): p50 40.5, p99 80.3, max 412.0, mean 41.1 (1000 samples)\n"
        );
        let stream = WorkloadReport::new(Pattern::Stream, 2, 42, 10, 420, 1.0, None);
        assert!(stream.human().ends_with("rtt: not measured\n"));
    }

    #[test]
    fn summary_from_histogram() {
        let mut h = Histogram::new();
        (1..=100u64).for_each(|v| h.record(v * 1_000));
        let s = RttSummary::from_nanos(&h).unwrap();
        assert_eq!(s.samples, 100);
        assert_eq!(s.max, 100.0);
        assert!((s.mean - 50.5).abs() < 1e-9);
        assert!((s.p50 - 50.0).abs() / 50.0 < 0.01, "{}", s.p50);
        assert!(RttSummary::from_nanos(&Histogram::new()).is_none());
    }
}
