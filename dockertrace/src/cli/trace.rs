//! `dockertrace trace`.
use std::{io::BufWriter, path::PathBuf, time::Duration};

use clap::Args;

use super::outputs::{check_file, OutputFile};
use crate::{
    filter::{Filter, FilterSpec, NetnsSpec},
    kernel::tracefs::Tracefs,
    pipeline::Sink,
    probes::{datapath::ProbeState, tracepoints::AttachType},
    recording::Recording,
    render::{style::Style, summary::render_summary},
    select::{EventSelector, DEFAULT_EVENTS},
    session::Session,
    sinks::{json::JsonSink, live::LiveSink},
    stacks::StackMode,
    tracer::{TraceOptions, Tracer},
};

/// How to trace and what to show: shared by `dockertrace trace` and `dockertrace --mode`.
#[derive(Args, Debug, Clone)]
pub struct TracingArgs {
    /// Tracepoints to trace: comma-separated perf-style globs (`net:*`, `skb:kfree_skb`,
    /// `net:net_dev_*`); a leading `!` excludes (`net:*,!net:napi_*`).
    #[arg(short, long, value_name = "GLOBS", default_value = DEFAULT_EVENTS)]
    pub events: String,
    /// Also write every event as a JSON line to FILE (`-` for stdout; the live stream is then
    /// turned off). Schema: docs/json-schema.md.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// When the kernel walks an event's stack — most of tracing's cost (~4 µs a walk here,
    /// docs/performance.md). Every event is counted in every mode. `adaptive` (default): per
    /// (event, device, path class) the first 4 events of each 100 ms, then 1 in 256 — a path
    /// seen for the first time always gets its stack; `every`; `sample:N`: 1 in N at random;
    /// `none`: no function names. Except with `every`, function counts, paths and flame graphs
    /// are estimates scaled to the exact event counts.
    #[arg(long, value_name = "MODE", default_value = "adaptive", conflicts_with_all = ["no_stacks", "stack_sample"])]
    pub stacks: StackMode,
    /// Same as `--stacks none` (kept for older scripts).
    #[arg(long, conflicts_with = "stack_sample")]
    pub no_stacks: bool,
    /// Same as `--stacks sample:N` (kept for older scripts).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub stack_sample: Option<u32>,
    /// Do not probe the datapath functions (veth_xmit, br_dev_xmit, ...).
    #[arg(long)]
    pub no_datapath: bool,
    /// Print no live stream, only the summary.
    #[arg(short, long)]
    pub quiet: bool,
    /// Live lines per second at most; the rest is summarized each second (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub rate: u32,
    /// Kernel functions listed with counts in the summary (the rest by name only).
    #[arg(long, value_name = "N", default_value_t = 25)]
    pub top: usize,
    /// Ring buffer size in MiB (a power of two).
    #[arg(long, value_name = "MIB", default_value_t = 4, value_parser = parse_ring_mib)]
    pub ring_mib: u32,
    /// Count events in the kernel instead of streaming each one (cheaper; no live stream, no
    /// JSON lines): the summary and recordings are the same.
    #[arg(long)]
    pub aggregate: bool,
    /// How to attach the tracepoints: `tp_btf` (BTF-typed raw tracepoints: the kernel writes
    /// no trace record, the cheapest), `raw_tp` (raw tracepoints), `perf` (classic
    /// tracepoints, perf's path), or `auto`: the first of those that attaches, per tracepoint.
    #[arg(long, value_name = "TYPE", default_value = "auto")]
    pub attach: AttachType,
    /// Measure each eBPF program's run count and average run time (the kernel's
    /// BPF_ENABLE_STATS, as `sysctl kernel.bpf_stats_enabled=1`) and show them in the summary.
    #[arg(long)]
    pub stats: bool,
}

#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(short, long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Keep only events of this network namespace: an inode number, a path
    /// (`/proc/PID/ns/net`) or an `ip netns` name. Repeatable.
    #[arg(long, value_name = "INODE|PATH")]
    pub netns: Vec<NetnsSpec>,
    /// Keep only events of this device (looked up in the --netns namespaces, else in
    /// dockertrace's own). Repeatable.
    #[arg(long, value_name = "NAME")]
    pub dev: Vec<String>,
    /// Keep only events raised by this process (tgid). Repeatable.
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Keep only TCP packets from or to this port (IPv4 and IPv6).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Save the counts and stacks to FILE (a recording, as `--mode … --record` writes; the run
    /// is labelled `trace`), for `dockertrace report` and `dockertrace diff`.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Pin dockertrace's own threads (ring-buffer reader, decoding, output) to these CPUs
    /// (`1`, `2-3`); the eBPF programs still run on the CPU of each event.
    #[arg(long, value_name = "LIST", value_parser = crate::sys::cpus::parse_usable)]
    pub tracer_cpus: Option<crate::sys::cpus::CpuList>,
    #[command(flatten)]
    pub tracing: TracingArgs,
}

/// The JSON lines' write buffer: a write per 256 KiB (~1000 events), not per 8 KiB.
const JSON_BUFFER: usize = 256 << 10;

fn parse_ring_mib(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if v == 0 || !v.is_power_of_two() || v > 1024 {
        return Err("must be a power of two between 1 and 1024".into());
    }
    Ok(v)
}

impl TracingArgs {
    /// `--stacks`, or what its older spellings (`--no-stacks`, `--stack-sample N`) ask for.
    pub fn stack_mode(&self) -> StackMode {
        match (self.no_stacks, self.stack_sample) {
            (true, _) => StackMode::None,
            (_, Some(n)) => StackMode::Sample(n).normalized(),
            _ => self.stacks,
        }
    }

    /// Tracer options for a resolved filter.
    pub fn options(&self, filter: Filter) -> anyhow::Result<TraceOptions> {
        anyhow::ensure!(
            !(self.aggregate && self.json.is_some()),
            "--aggregate counts events in the kernel, so there are no events to write with --json: use one or the other"
        );
        Ok(TraceOptions {
            events: EventSelector::parse(&self.events)?,
            filter,
            stacks: self.stack_mode(),
            datapath: !self.no_datapath,
            ring_bytes: Some(self.ring_mib << 20),
            stack_map_entries: None,
            aggregate: self.aggregate,
            attach: self.attach,
        })
    }
}

impl TracingArgs {
    /// Checks everything these options can get wrong (the event globs, `--json` with
    /// `--aggregate`, whether the `--json` file can be written) without touching the kernel.
    pub fn check(&self) -> anyhow::Result<()> {
        self.options(Filter::default())?;
        match &self.json {
            Some(p) if p.as_os_str() != "-" => check_file("--json", p),
            _ => Ok(()),
        }
    }

    /// `--json FILE`, opened before anything is deployed or attached (None for none or stdout).
    pub fn open_json(&self) -> anyhow::Result<Option<OutputFile>> {
        match &self.json {
            Some(p) if p.as_os_str() != "-" => Ok(Some(OutputFile::open("--json", p)?)),
            _ => Ok(None),
        }
    }
}

/// Prints what did not work but does not stop the session.
pub fn print_warnings(session: &Session) {
    for w in &session.warnings {
        eprintln!("dockertrace: warning: {w}");
    }
}

impl TraceArgs {
    /// Resolves the arguments into tracer options (fails before anything is loaded).
    pub fn options(&self) -> anyhow::Result<TraceOptions> {
        let filter = FilterSpec {
            netns: self.netns.clone(),
            devs: self.dev.clone(),
            pids: self.pid.clone(),
            port: self.port,
        }
        .resolve()?;
        self.tracing.options(filter)
    }
}

/// Resolves when the user or the clock ends the run.
pub async fn stop_signal(duration: Option<Duration>) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("cannot watch SIGTERM: {e}");
            return std::future::pending().await;
        }
    };
    let sleep = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = sleep => {}
    }
}

/// Prints what was attached and what could not be (one line per missing probe).
pub fn print_attached(tracer: &Tracer, filtered: bool) {
    let err = Style::for_stderr();
    let probes =
        tracer.probes.iter().filter(|p| matches!(p.state, ProbeState::Kprobe | ProbeState::Fentry)).count();
    eprintln!(
        "{}",
        err.dim(&format!(
            "dockertrace: attached {} tracepoints ({}) and {probes} datapath probes in {} ms{}; Ctrl-C to stop",
            tracer.tracepoints.len(),
            tracer.attach,
            tracer.attach_time.as_millis(),
            if filtered { " (filtered in kernel)" } else { "" },
        ))
    );
    for (tp, e) in &tracer.tracepoint_errors {
        eprintln!("dockertrace: warning: tracepoint {tp} not attached: {e}");
    }
    for p in &tracer.probes {
        if !matches!(p.state, ProbeState::Kprobe) {
            eprintln!("dockertrace: datapath probe {p}");
        }
    }
}

/// The sinks the tracing options ask for.
pub struct Outputs {
    json: Option<JsonSink<Box<dyn std::io::Write>>>,
    live: Option<LiveSink<std::io::StdoutLock<'static>>>,
    /// JSON goes to stdout: human text moves to stderr.
    pub json_stdout: bool,
}

impl Outputs {
    /// The sinks for one session; `json` is the `--json` file opened up front.
    pub fn new(t: &TracingArgs, json: Option<&mut OutputFile>) -> anyhow::Result<Outputs> {
        let json_stdout = t.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
        let json: Option<JsonSink<Box<dyn std::io::Write>>> = match json {
            _ if json_stdout => {
                Some(JsonSink::new(Box::new(BufWriter::with_capacity(JSON_BUFFER, std::io::stdout()))))
            }
            Some(file) => {
                Some(JsonSink::new(Box::new(BufWriter::with_capacity(JSON_BUFFER, file.writer()?))))
            }
            None => None,
        };
        let live = (!t.quiet && !json_stdout)
            .then(|| LiveSink::new(std::io::stdout().lock(), Style::for_stdout(), t.rate));
        Ok(Outputs { json, live, json_stdout })
    }

    pub fn sinks(&mut self) -> Vec<&mut dyn Sink> {
        let mut v: Vec<&mut dyn Sink> = Vec::new();
        if let Some(j) = self.json.as_mut() {
            v.push(j);
        }
        if let Some(l) = self.live.as_mut() {
            v.push(l);
        }
        v
    }

    /// Prints human text where it belongs (stdout, or stderr when JSON owns stdout).
    pub fn print(&self, text: &str) {
        if self.json_stdout {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }

    pub fn style(&self) -> Style {
        if self.json_stdout {
            Style::for_stderr()
        } else {
            Style::for_stdout()
        }
    }
}

pub fn run(args: TraceArgs) -> anyhow::Result<()> {
    // What the user can get wrong first, then root and the eBPF object, then the kernel.
    if let Some(d) = args.duration {
        anyhow::ensure!(d > 0.0 && d.is_finite(), "--duration must be a positive number of seconds");
    }
    args.tracing.check()?;
    if let Some(path) = &args.record {
        check_file("--record", path)?;
    }
    crate::tracer::preflight()?;
    let opts = args.options()?;
    warn_unmatched(&opts.events);
    let mut json = args.tracing.open_json()?;
    let mut outputs = Outputs::new(&args.tracing, json.as_mut())?;
    // Before the tracer and the runtime start their threads (they inherit it).
    if let Some(c) = &args.tracer_cpus {
        crate::sys::cpus::pin_process(c)?;
    }
    let session = Session::start(&opts, args.tracing.stats)?;
    print_warnings(&session);
    print_attached(session.tracer(), !opts.filter.is_empty());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let duration = args.duration.map(Duration::from_secs_f64);
    let outcome = runtime.block_on(session.run(&mut outputs.sinks(), stop_signal(duration)))?;
    let text = render_summary(&outcome.report, outputs.style(), args.tracing.top);
    drop(outputs.live.take());
    outputs.print(&format!("\n{text}"));
    if let Some(path) = &args.record {
        Recording::new("dockertrace", vec![outcome.to_run("trace", None)]).save(path)?;
        eprintln!("dockertrace: recorded the trace in {}", path.display());
    }
    Ok(())
}

/// Warns about patterns that matched nothing, unless nothing matched at all (then the tracer
/// reports the error).
pub fn warn_unmatched(events: &EventSelector) {
    let Ok(tracefs) = Tracefs::locate() else { return };
    if let Some(all) = tracefs.events().ok().filter(|all| !events.select(all).is_empty()) {
        for p in events.unmatched_patterns(&all) {
            eprintln!("dockertrace: warning: no tracepoint matches `{p}`");
        }
    }
}
