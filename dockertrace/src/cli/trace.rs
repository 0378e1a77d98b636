//! `dockertrace trace`.
use std::{collections::BTreeMap, io::BufWriter, path::PathBuf, sync::Arc, time::Duration};

use clap::Args;

use super::outputs::{check_file, OutputFile};
use crate::{
    docker::{Docker, DockerError},
    filter::{Filter, FilterSpec, NetnsSpec},
    kernel::tracefs::Tracefs,
    names::{Names, Resolver},
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
    /// `net:net_dev_*`); a leading `!` excludes (`net:*,!net:napi_*`). The default has the
    /// drops (`skb:kfree_skb`, docs/drops.md); a selection without it leaves them out.
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
    /// Live lines per second at most; the rest is summarized each second (0: no limit). Drops
    /// are not held to it: up to 50 drop lines a second, the rest counted on screen.
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
    /// Do not follow packets: no packet ids, hops, hop latency or headers (tuples, TCP seq),
    /// no hop ladders in the reports — for the lowest tracing cost.
    #[arg(long)]
    pub no_journeys: bool,
    /// A full-screen live view instead of the line stream (on a terminal; elsewhere one line
    /// says so and the plain stream runs): the hop ladder with live p50/p99, events/s per
    /// (event, device), the top kernel functions, the packets and each one's journey, and with
    /// several modes their comparison. Keys: Tab/1-5 panes, Enter open, p pause, / filter,
    /// s sort, q quit (docs/tui.md).
    #[arg(long)]
    pub tui: bool,
    /// Write each traced packet at each hop to FILE (pcapng): the frame's first --snaplen
    /// bytes, copied in the kernel; one interface per (device, namespace) named as in the live
    /// view (`eth0@server`); the event, function, packet, hop and hop delta as each packet's
    /// comment (docs/pcap.md). Loads the capture programs.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Bytes of each frame kept with --pcap (1 to 256).
    #[arg(long, value_name = "BYTES", default_value_t = crate::capture::DEFAULT_SNAPLEN, value_parser = crate::capture::parse_snaplen)]
    pub snaplen: u32,
    /// Keep only packets that match this pcap-filter expression (`tcp port 10000`, as tcpdump
    /// takes it), compiled by libpcap and evaluated in the kernel on each packet's first bytes;
    /// a packet that matched is followed on its later hops even when NAT or encapsulation
    /// changes its headers. Loads the capture programs (docs/pcap.md).
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
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
    /// Keep only events of this running Docker container's network namespace (looked up
    /// through the Engine API; filtered in the kernel like --netns). Repeatable, or a comma list.
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub container: Vec<String>,
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
    /// Describe packets inside VXLAN tunnels (IPv4 UDP to port 4789) by their inner headers,
    /// with the tunnel beside them, so that a packet stays one journey across encapsulation
    /// (docs/journeys.md). On in `--mode overlay` runs.
    #[arg(long)]
    pub vxlan: bool,
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
            journeys: !self.no_journeys,
            capture: self.capture()?,
        })
    }

    /// The capture programs' options (`--pcap`, `--filter`): None without either. A filter
    /// libpcap refuses is a usage error, with libpcap's message.
    fn capture(&self) -> anyhow::Result<Option<crate::capture::CaptureOptions>> {
        if self.pcap.is_none() && self.filter.is_none() {
            return Ok(None);
        }
        anyhow::ensure!(!self.aggregate, "--pcap and --filter need the events: not with --aggregate");
        let filter = match &self.filter {
            Some(expr) => Some(crate::capture::compile(expr).map_err(|message| {
                anyhow::Error::new(super::exit::Exit { code: super::exit::USAGE, message })
            })?),
            None => None,
        };
        Ok(Some(crate::capture::CaptureOptions { snaplen: self.snaplen, filter }))
    }
}

impl TracingArgs {
    /// Checks everything these options can get wrong (the event globs, `--json` with
    /// `--aggregate`, whether the `--json` file can be written) without touching the kernel.
    pub fn check(&self) -> anyhow::Result<()> {
        self.options(Filter::default())?;
        anyhow::ensure!(
            !(self.tui && self.json.as_deref().is_some_and(|p| p.as_os_str() == "-")),
            "--tui and --json - both want stdout: write the JSON lines to a file"
        );
        if let Some(p) = &self.pcap {
            check_file("--pcap", p)?;
        }
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
    /// Resolves the arguments into tracer options (fails before anything is loaded);
    /// `containers` are the `--container` namespaces, resolved by [`container_netns`].
    pub fn options(&self, containers: &[NetnsSpec]) -> anyhow::Result<TraceOptions> {
        let filter = FilterSpec {
            netns: self.netns.iter().chain(containers).cloned().collect(),
            devs: self.dev.clone(),
            pids: self.pid.clone(),
            port: self.port,
        }
        .resolve()?;
        let vxlan = self.vxlan
            && crate::filter::vxlan_peel_supported()
                .map_err(|why| eprintln!("dockertrace: --vxlan: {why}"))
                .is_ok();
        self.tracing.options(Filter { vxlan, ..filter })
    }
}

/// The network namespaces of the `--container` names, through the Engine API: every name
/// must be a running container; otherwise one line says which and why.
pub async fn container_netns(names: &[String]) -> anyhow::Result<Vec<NetnsSpec>> {
    let docker = Docker::connect().await.map_err(|e| anyhow::anyhow!("--container: {e}"))?;
    let mut out = Vec::new();
    for name in names {
        let c = docker.running_container(name).await.map_err(|e| match e {
            DockerError::NotFound { .. } => anyhow::anyhow!("--container {name}: no such container"),
            other => anyhow::anyhow!("--container {name}: {other}"),
        })?;
        out.push(NetnsSpec::Path(PathBuf::from(format!("/proc/{}/ns/net", c.pid))));
    }
    Ok(out)
}

/// How long `trace` waits for the Docker engine when naming containers.
const DOCKER_NAMES_WAIT: Duration = Duration::from_secs(2);

/// What a user knows the system's namespaces by: `host` for the root namespace, every running
/// container's name (through the Engine API; without an engine, no containers), every
/// `ip netns` name; and each veth between them by its peer's namespace. Best-effort.
pub async fn system_names() -> Names {
    let mut r = Resolver::new();
    r.add_root();
    let containers = tokio::time::timeout(DOCKER_NAMES_WAIT, async {
        Docker::connect().await?.running_containers().await
    })
    .await;
    match containers {
        Ok(Ok(list)) => {
            // Containers sharing a namespace (`--network container:…`) share its label.
            let mut by_netns: BTreeMap<u32, (PathBuf, Vec<String>)> = BTreeMap::new();
            for c in list {
                let path = PathBuf::from(format!("/proc/{}/ns/net", c.pid));
                if let Ok(inode) = crate::sys::netns::inode_of(&path) {
                    by_netns.entry(inode).or_insert_with(|| (path, Vec::new())).1.push(c.name);
                }
            }
            for (path, mut names) in by_netns.into_values() {
                names.sort();
                r.add(&path, &names.join("+"));
            }
        }
        Ok(Err(e)) => log::debug!("no container names: {e}"),
        Err(_) => log::debug!("no container names: the Docker engine did not answer in time"),
    }
    r.add_ip_netns();
    r.finish()
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
    tui: Option<crate::tui::TuiSink>,
    /// `--pcap`.
    pub pcap: Option<crate::sinks::pcap::PcapSink>,
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
        let pcap = match &t.pcap {
            Some(p) => Some(crate::sinks::pcap::PcapSink::create(p, t.snaplen)?),
            None => None,
        };
        Ok(Outputs { json, live, tui: None, pcap, json_stdout })
    }

    /// The live view instead of the line stream.
    pub fn with_tui(&mut self, sink: crate::tui::TuiSink) {
        self.live = None;
        self.tui = Some(sink);
    }

    /// Shows devices by these names in the live stream and the JSON lines.
    pub fn set_names(&mut self, names: &Arc<Names>) {
        self.json = self.json.take().map(|j| j.with_names(names.clone()));
        self.live = self.live.take().map(|l| l.with_names(names.clone()));
        self.pcap = self.pcap.take().map(|p| p.with_names(names.clone()));
    }

    pub fn sinks(&mut self) -> Vec<&mut dyn Sink> {
        let mut v: Vec<&mut dyn Sink> = Vec::new();
        if let Some(j) = self.json.as_mut() {
            v.push(j);
        }
        if let Some(l) = self.live.as_mut() {
            v.push(l);
        }
        if let Some(t) = self.tui.as_mut() {
            v.push(t);
        }
        if let Some(p) = self.pcap.as_mut() {
            v.push(p);
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
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let containers = if args.container.is_empty() {
        Vec::new()
    } else {
        runtime.block_on(container_netns(&args.container))?
    };
    let opts = args.options(&containers)?;
    warn_unmatched(&opts.events);
    let names = Arc::new(runtime.block_on(system_names()));
    let mut json = args.tracing.open_json()?;
    let mut outputs = Outputs::new(&args.tracing, json.as_mut())?;
    outputs.set_names(&names);
    // Before the tracer and the runtime start their threads (they inherit it).
    if let Some(c) = &args.tracer_cpus {
        crate::sys::cpus::pin_process(c)?;
    }
    let tui = start_tui(&args.tracing, &runtime, Vec::new(), "", args.duration);
    let mut session = Session::start(&opts, args.tracing.stats)?;
    session.follow(crate::journeys::Target { ip: None, port: args.port });
    print_warnings(&session);
    print_attached(session.tracer(), !opts.filter.is_empty());
    if let Some(t) = &tui {
        let h = t.handle();
        h.begin("trace", args.port);
        h.attached(&session.tracer().attach, names.clone());
        outputs.with_tui(h.sink());
    }
    let duration = args.duration.map(Duration::from_secs_f64);
    let outcome = runtime.block_on(session.run(&mut outputs.sinks(), stop_signal(duration)));
    // The screen is restored before anything else is printed (also after an error).
    drop(tui);
    let mut outcome = outcome?;
    // Containers and namespaces that came up while tracing get their names in the summary.
    let mut names = Arc::unwrap_or_clone(names);
    names.merge(&runtime.block_on(system_names()));
    outcome.set_names(names);
    let mut text = render_summary(&outcome.report, outputs.style(), args.tracing.top);
    text.push_str(&crate::render::summary::render_journeys(&outcome.report, outputs.style()));
    drop(outputs.live.take());
    outputs.print(&format!("\n{text}"));
    if let Some(path) = &args.record {
        let mut run = outcome.to_run("trace", None);
        run.packets = outcome.packets.take();
        Recording::new("dockertrace", vec![run]).save(path)?;
        eprintln!("dockertrace: recorded the trace in {}", path.display());
    }
    Ok(())
}

/// The live view, when `--tui` asks for it and this is a terminal; else one line says why
/// and the plain stream runs. `modes`: the run's modes (empty for `trace`).
pub fn start_tui(
    t: &TracingArgs,
    rt: &tokio::runtime::Runtime,
    modes: Vec<String>,
    runtime: &str,
    duration_s: Option<f64>,
) -> Option<crate::tui::Tui> {
    if !t.tui {
        return None;
    }
    if let Some(why) = crate::tui::unavailable() {
        eprintln!("dockertrace: --tui needs a terminal ({why}): showing the plain stream");
        return None;
    }
    // The view's `q` sends SIGINT: from now on SIGINT starts the teardown (tokio keeps its
    // handler for the life of the process), it never kills outright.
    let sigint =
        rt.block_on(async { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) });
    if let Err(e) = sigint {
        eprintln!("dockertrace: --tui: cannot handle SIGINT ({e}): showing the plain stream");
        return None;
    }
    let meta = crate::tui::model::Meta {
        compare: modes.len() > 1,
        modes,
        runtime: runtime.to_owned(),
        kernel: crate::tui::kernel_release(),
        stacks: t.stack_mode().to_string(),
        duration_s,
    };
    match crate::tui::Tui::start(meta) {
        Ok(tui) => Some(tui),
        Err(e) => {
            eprintln!("dockertrace: --tui: the terminal could not be set up ({e}): showing the plain stream");
            None
        }
    }
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
