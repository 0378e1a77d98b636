//! The end-of-run summary of a trace: the tallies — events, devices, kernel functions, paths —
//! derived once, by [`ModeReport::from_run`] from the same recording entry that `--record`
//! saves, and beside them only what a live tracer knows (counters, probes, cost, decode
//! errors).
use serde::Serialize;

use crate::{
    aggregate::Aggregate, compare::ModeReport, cost::TracerCost, counters::Counters,
    probes::datapath::ProbeStatus, stacks::StackMode,
};

/// Stack paths kept in a trace's summary.
pub const TOP_PATHS: usize = 10;

/// What a run saw, ready to print.
#[derive(Debug, Clone, Serialize)]
pub struct TraceReport {
    /// The tallies, as for a recorded run (mode `trace`, no workload figures).
    pub summary: ModeReport,
    /// Wall-clock length of the tracing.
    pub duration_s: f64,
    pub counters: Counters,
    pub decode_errors: u64,
    /// Stack ids that could not be read back from the kernel's stack maps.
    pub stack_misses: u64,
    pub probes: Vec<ProbeStatus>,
    /// How the tracepoints were attached (`tp_btf`, `raw_tp`, `perf`, or a mix with counts).
    pub attach: String,
    /// What tracing cost (tracer CPU and memory; per-program statistics with `--stats`).
    pub cost: Option<TracerCost>,
}

impl TraceReport {
    /// The summary of `agg`, traced for `duration_s` with these final counters.
    pub fn new(agg: &Aggregate, duration_s: f64, counters: Counters) -> TraceReport {
        let run = agg.to_run("trace", duration_s, None, counters);
        TraceReport {
            summary: ModeReport::from_run(&run, TOP_PATHS),
            duration_s,
            counters,
            decode_errors: 0,
            stack_misses: 0,
            probes: Vec::new(),
            attach: String::new(),
            cost: None,
        }
    }

    pub fn total_events(&self) -> u64 {
        self.summary.total_events
    }

    /// Events named `name` (`net:netif_rx`).
    pub fn event_count(&self, name: &str) -> u64 {
        self.summary.events.iter().find(|r| r.name == name).map_or(0, |r| r.count)
    }

    /// Events whose stack contains kernel function `name`.
    pub fn function_count(&self, name: &str) -> u64 {
        self.summary.functions.iter().find(|r| r.name == name).map_or(0, |r| r.count)
    }

    pub fn has_function(&self, name: &str) -> bool {
        self.summary.functions.iter().any(|r| r.name == name)
    }

    /// Whether the stack-derived counts (functions, paths) are estimates, and why.
    pub fn estimated_stacks(&self) -> Option<StackMode> {
        self.summary.stacks
    }
}
