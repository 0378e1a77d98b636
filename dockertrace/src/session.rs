//! One tracing session: load and attach the programs, run the pipeline until told to stop,
//! detach, and hand back what the run produced. `dockertrace trace` and each mode of
//! `dockertrace --mode` run the same session; the CLI parses arguments and prints.
use std::future::Future;

use crate::{
    aggregate::Aggregate,
    journeys::{JourneyReport, Target},
    names::Names,
    pipeline::{self, Sink},
    recording::ModeRun,
    summary::TraceReport,
    tracer::{TraceError, TraceOptions, Tracer},
    workload::WorkloadReport,
};

/// Programs loaded and attached, not yet read.
pub struct Session {
    tracer: Tracer,
    /// What did not work but does not stop the session (e.g. `--stats` refused), one line each.
    pub warnings: Vec<String>,
    /// The workload's server, to which the journeys' directions refer.
    target: Target,
}

/// What a finished session produced.
pub struct Outcome {
    /// The end-of-run summary, with the counters, the probes and the tracer's cost.
    pub report: TraceReport,
    /// The counts behind it, for recordings and reports.
    pub aggregate: Aggregate,
    /// What the run's namespaces and devices are called (see [`Outcome::set_names`]).
    pub names: Names,
    /// The hop ladders of the packets' journeys (None without journeys).
    pub journeys: Option<JourneyReport>,
    /// The TCP data packets hop by hop, for `report --stitch`: `trace --record` keeps them
    /// (a mode run's two ends are on one host; its recording stays small without them).
    pub packets: Option<crate::packet_log::PacketLog>,
}

impl Session {
    /// Loads, configures and attaches; with `stats`, also turns on the kernel's per-program
    /// statistics (a warning, not an error, when the kernel cannot).
    pub fn start(opts: &TraceOptions, stats: bool) -> Result<Session, TraceError> {
        let mut tracer = Tracer::start(opts)?;
        let mut warnings = Vec::new();
        if stats {
            if let Err(e) = tracer.enable_stats() {
                warnings.push(e);
            }
        }
        Ok(Session { tracer, warnings, target: Target::default() })
    }

    /// What was attached and what could not be.
    pub fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    /// Tells the journeys' directions relative to the workload's server (`request`: to it,
    /// `response`: from it).
    pub fn follow(&mut self, target: Target) {
        self.target = target;
    }

    /// Feeds the sinks until `stop` resolves, drains what is left, then detaches.
    pub async fn run(
        mut self,
        sinks: &mut [&mut dyn Sink],
        stop: impl Future<Output = ()>,
    ) -> anyhow::Result<Outcome> {
        let outcome = pipeline::run_following(&mut self.tracer, sinks, stop, self.target).await?;
        self.tracer.stop();
        Ok(Outcome {
            report: outcome.report,
            aggregate: outcome.aggregate,
            names: Names::default(),
            journeys: outcome.journeys,
            packets: outcome.packets,
        })
    }
}

impl Outcome {
    /// Names the run's namespaces and devices: in the summary's device list, and in the
    /// recording [`Outcome::to_run`] makes.
    pub fn set_names(&mut self, names: Names) {
        self.report.summary.apply_names(&names);
        self.names = names;
    }

    /// The run as a recording holds it: counts, stacks, the workload's figures and what
    /// tracing cost, labelled `label` (a mode's name, or `trace`).
    pub fn to_run(&self, label: &str, workload: Option<WorkloadReport>) -> ModeRun {
        let r = &self.report;
        let mut run = self.aggregate.to_run(label, r.duration_s, workload, r.counters);
        run.tracer = r.cost.clone();
        run.names = self.names.clone();
        run.journeys = self.journeys.clone();
        run
    }
}
