//! `dockertrace --mode MODE`: the main job. Launches the workload on one networking mode,
//! traces only its packets, streams them live, reports, and removes everything it created.
use std::{future::Future, time::Duration};

use anyhow::{bail, Context as _};
use clap::Args;

use super::{
    report::{present, OutputArgs},
    trace::{print_attached, stop_signal, warn_unmatched, Outputs, TracingArgs},
};
use crate::{
    modes::{self, DeployRequest, Deployment, LanSpec, Mode, Runtime, RuntimeKind},
    pipeline,
    recording::{ModeRun, Recording, RunBuilder},
    report::TraceReport,
    sinks::{live::render_summary, style::Style},
    sys::links,
    teardown::Teardown,
    tracer::{Counters, Tracer},
    ui::Ui,
    workload::{Pattern, WorkloadReport, DEFAULT_MESSAGE_SIZE, DEFAULT_PORT},
};

/// Options of the main job.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Networking mode: normal (host processes over loopback), host, bridge, bridge-user,
    /// macvlan, ipvlan-l2, ipvlan-l3; several comma-separated, or `all`, run one after another
    /// with the same workload and are compared.
    #[arg(short, long, value_name = "MODE[,MODE...]|all", required = true, value_parser = parse_modes)]
    pub mode: Option<ModeList>,
    /// Who builds the mode's topology: docker (containers and Docker networks) or netns (the
    /// same topology in network namespaces dockertrace creates and removes, no Docker needed).
    #[arg(long, value_enum, default_value_t = RuntimeKind::Docker)]
    pub runtime: RuntimeKind,
    /// Save everything the reports need (counts, stacks, workload figures, versions) to FILE,
    /// for `dockertrace report` and `dockertrace diff`.
    #[arg(long, value_name = "FILE")]
    pub record: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub out: OutputArgs,
    /// How long the workload runs, in seconds.
    #[arg(short, long, value_name = "SECS", default_value_t = 5.0)]
    pub duration: f64,
    /// Workload message size in bytes (the study's is 42).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MESSAGE_SIZE)]
    pub size: u32,
    /// Parallel TCP connections of the workload.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub connections: u32,
    /// Workload pattern: echo (one message outstanding, RTTs measured) or stream (bulk).
    #[arg(long, value_enum, default_value_t = Pattern::Echo)]
    pub pattern: Pattern,
    /// TCP port of the echo server.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Use this local image for the containers instead of building dockertrace's own
    /// (it must contain /dockertrace; dockertrace never pulls).
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// macvlan/ipvlan: parent link (default: an isolated veth pair that dockertrace creates,
    /// so no traffic reaches your LAN).
    #[arg(long, value_name = "IFACE")]
    pub parent: Option<String>,
    /// macvlan/ipvlan: subnet in CIDR form (default: a free /24 in 10.213.0.0/16).
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<String>,
    /// macvlan/ipvlan: gateway address inside --subnet.
    #[arg(long, value_name = "IP")]
    pub gateway: Option<String>,
    /// macvlan/ipvlan: the server container's address (default: assigned by Docker).
    #[arg(long, value_name = "IP")]
    pub ip_server: Option<String>,
    /// macvlan/ipvlan: the client container's address (default: assigned by Docker).
    #[arg(long, value_name = "IP")]
    pub ip_client: Option<String>,
    /// Run the workload without tracing: its figures alone, the baseline that shows what
    /// tracing costs (`cargo xtask bench` compares the two).
    #[arg(long, conflicts_with_all = ["aggregate", "json", "stats"])]
    pub untraced: bool,
    #[command(flatten)]
    pub tracing: TracingArgs,
}

impl RunArgs {
    fn lan(&self) -> LanSpec {
        LanSpec {
            parent: self.parent.clone(),
            subnet: self.subnet.clone(),
            gateway: self.gateway.clone(),
            ip_server: self.ip_server.clone(),
            ip_client: self.ip_client.clone(),
        }
    }

    /// The client's command line (after the binary).
    fn client_args(&self, server: &std::net::IpAddr) -> Vec<String> {
        let mut v: Vec<String> = vec!["workload".into(), "client".into(), server.to_string()];
        for (k, val) in [
            ("--port", self.port.to_string()),
            ("--duration", self.duration.to_string()),
            ("--size", self.size.to_string()),
            ("--connections", self.connections.to_string()),
            ("--pattern", self.pattern.as_str().to_owned()),
            ("--connect-timeout", "10".to_owned()),
        ] {
            v.push(k.into());
            v.push(val);
        }
        v.push("--json".into());
        v
    }
}

/// Set by Ctrl-C or SIGTERM.
#[derive(Clone)]
struct Cancel(tokio::sync::watch::Receiver<bool>);

impl Cancel {
    fn install() -> Cancel {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            stop_signal(None).await;
            let _ = tx.send(true);
        });
        Cancel(rx)
    }

    async fn cancelled(&mut self) {
        let _ = self.0.wait_for(|c| *c).await;
    }

    fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }

    /// Runs `f` unless cancelled first.
    async fn guard<T>(&mut self, f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
        tokio::select! {
            r = f => r,
            _ = self.cancelled() => bail!("interrupted during setup; nothing is left behind"),
        }
    }
}

/// Exit code of a run cut short by Ctrl-C/SIGTERM.
const EXIT_INTERRUPTED: i32 = 130;

/// The modes of one invocation, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeList(pub Vec<Mode>);

/// Parses `bridge,macvlan,normal` or `all`.
pub fn parse_modes(s: &str) -> Result<ModeList, String> {
    if s == "all" {
        return Ok(ModeList(Mode::ALL.to_vec()));
    }
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim) {
        let m: Mode = part.parse()?;
        if v.contains(&m) {
            return Err(format!("mode `{m}` is listed twice"));
        }
        v.push(m);
    }
    Ok(ModeList(v))
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let modes = args.mode.clone().context("--mode is required")?.0;
    // Everything the user can get wrong is checked before anything is created.
    let mut addressing = Vec::new();
    for &m in &modes {
        addressing.push(if modes.len() > 1 && !m.needs_parent() { None } else { args.lan().validate(m)? });
    }
    anyhow::ensure!(
        args.duration > 0.0 && args.duration.is_finite(),
        "--duration must be a positive number of seconds"
    );
    anyhow::ensure!(args.size > 0, "--size must be at least 1 byte");
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    if args.runtime == RuntimeKind::Netns {
        anyhow::ensure!(
            args.parent.is_none(),
            "--parent only applies to --runtime docker (the netns runtime builds its own isolated parent)"
        );
        anyhow::ensure!(args.image.is_none(), "--image only applies to --runtime docker");
    }
    crate::tracer::preflight()?;
    let opts = args.tracing.options(Default::default())?;
    warn_unmatched(&opts.events);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut runs: Vec<ModeRun> = Vec::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    let mut interrupted = false;
    for (&mode, addr) in modes.iter().zip(addressing) {
        if modes.len() > 1 {
            eprintln!("\ndockertrace: ── mode {mode} ──");
        }
        match runtime.block_on(run_async(&args, mode, addr)) {
            Ok((run, cut_short)) => {
                runs.extend(run);
                if cut_short {
                    interrupted = true;
                    break;
                }
            }
            // One mode: its failure is the command's. Several: skip it and go on.
            Err(e) if modes.len() > 1 => {
                eprintln!("dockertrace: {mode}: skipped: {e:#}");
                skipped.push((mode.to_string(), format!("{e:#}")));
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(path) = &args.record {
        Recording::new("dockertrace", runs.clone()).save(path)?;
        eprintln!("dockertrace: recorded {} runs in {}", runs.len(), path.display());
    }
    if modes.len() > 1 || args.out.svg.is_some() || args.out.html.is_some() {
        present(&runs, skipped, &args.out, Style::for_stdout())?;
    }
    if interrupted {
        std::process::exit(EXIT_INTERRUPTED);
    }
    anyhow::ensure!(!runs.is_empty(), "no mode could run here");
    Ok(())
}

/// Runs one mode; returns its recording entry (None when interrupted before the workload
/// ended) and whether the user interrupted.
async fn run_async(
    args: &RunArgs,
    mode: Mode,
    addressing: Option<modes::Addressing>,
) -> anyhow::Result<(Option<ModeRun>, bool)> {
    let mut cancel = Cancel::install();
    let mut ui = Ui::new();
    let mut teardown = Teardown::new();
    let step = |m: &str| ui.step(m);
    let runtime = cancel.guard(Runtime::open(args.runtime, mode, &step)).await?;
    let result = session(args, mode, addressing, &runtime, &mut teardown, &mut cancel, &ui).await;
    ui.resume();
    if !teardown.is_empty() {
        ui.step(&format!("removing what this run created ({} objects)", teardown.len()));
    }
    let errors = teardown.run(runtime.docker()).await;
    ui.clear();
    for e in &errors {
        eprintln!("dockertrace: cleanup: {e}");
    }
    if !errors.is_empty() {
        eprintln!("dockertrace: some objects could not be removed; `sudo dockertrace cleanup` retries");
    }
    let interrupted = cancel.is_cancelled();
    result.map(|run| (run, interrupted))
}

async fn session(
    args: &RunArgs,
    mode: Mode,
    addressing: Option<modes::Addressing>,
    runtime: &Runtime,
    teardown: &mut Teardown,
    cancel: &mut Cancel,
    ui: &Ui,
) -> anyhow::Result<Option<ModeRun>> {
    let run_id = run_id();
    if let Some(kind) = mode.link_kind().filter(|k| *k != "bridge") {
        ui.step(&format!("checking that the kernel supports {kind}"));
        links::kernel_supports(kind)?;
    }

    // Deploy.
    let lan = args.lan();
    let req = DeployRequest {
        mode,
        run_id: &run_id,
        image: args.image.as_deref(),
        port: args.port,
        lan: &lan,
        addressing,
    };
    let step = |m: &str| ui.step(m);
    let deployment = cancel.guard(runtime.deploy(&req, teardown, &step)).await?;
    let describe = runtime.describe(mode);

    if args.untraced {
        ui.clear();
        return untraced(args, mode, &deployment, runtime, cancel).await;
    }

    // Trace.
    ui.step("loading and attaching the eBPF programs");
    let opts = args.tracing.options(deployment.filter.clone())?;
    let mut tracer = Tracer::start(&opts)?;
    args.tracing.enable_stats(&mut tracer);
    ui.clear();
    for n in &deployment.notes {
        eprintln!("dockertrace: {n}");
    }
    print_attached(&tracer, true);
    eprintln!(
        "dockertrace: {mode}: running the workload for {} s ({describe}; runtime {})",
        args.duration,
        runtime.kind()
    );

    let client_args = args.client_args(&deployment.server_ip);
    let (tx, mut rx) = tokio::sync::oneshot::channel::<anyhow::Result<WorkloadReport>>();
    let mut c2 = cancel.clone();
    let client = async {
        let r = runtime.run_client(&deployment, &client_args).await;
        let _ = tx.send(r);
        // The last packets (FIN, ACK) are still on their way.
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let stop = async move {
        tokio::select! {
            _ = client => {}
            _ = c2.cancelled() => {}
        }
    };
    let mut outputs = Outputs::new(&args.tracing)?;
    let outcome = pipeline::run_full(&mut tracer, &mut outputs.sinks(), stop).await?;
    tracer.stop();
    let report = &outcome.report;
    let workload = rx.try_recv().ok();
    let style = outputs.style();
    let mut text = format!("\n{}", render_summary(report, style, args.tracing.top));
    let figures = match workload {
        Some(Ok(w)) => {
            text.push_str(&render_workload(mode, describe, &w, report, style));
            Some(w)
        }
        Some(Err(e)) => bail!("{e:#}"),
        None => {
            text.push_str(&style.red("\nWorkload interrupted: no figures.\n"));
            None
        }
    };
    let mut run = outcome.aggregate.to_run(mode.name(), report.duration_s, figures, report.counters);
    run.tracer = report.cost.clone();
    run.runtime = Some(runtime.kind().name().to_owned());
    // The per-mode report (a single mode's; several modes get theirs with the comparison).
    if args.mode.as_ref().is_some_and(|m| m.0.len() == 1) && args.out.svg.is_none() && args.out.html.is_none()
    {
        let m = crate::compare::ModeReport::from_run(&run, args.out.paths);
        text.push_str(&crate::sinks::tables::render_mode(&m, style, args.out.functions));
    }
    outputs.print(&text);
    Ok(Some(run))
}

/// `--untraced`: the workload alone, nothing loaded into the kernel.
async fn untraced(
    args: &RunArgs,
    mode: Mode,
    deployment: &Deployment,
    runtime: &Runtime,
    cancel: &mut Cancel,
) -> anyhow::Result<Option<ModeRun>> {
    for n in &deployment.notes {
        eprintln!("dockertrace: {n}");
    }
    eprintln!(
        "dockertrace: {mode}: running the workload for {} s without tracing ({})",
        args.duration,
        runtime.describe(mode)
    );
    let client_args = args.client_args(&deployment.server_ip);
    let w = tokio::select! {
        r = runtime.run_client(deployment, &client_args) => r?,
        _ = cancel.cancelled() => return Ok(None),
    };
    let style = Style::for_stdout();
    print!(
        "\n{}\n  {}\n",
        style.bold(&format!("Workload ({mode}: {}), untraced", runtime.describe(mode))),
        w.human().trim_end().replace('\n', "\n  ")
    );
    let mut run = RunBuilder::default().finish(mode.name(), args.duration, Some(w), Counters::default());
    run.runtime = Some(runtime.kind().name().to_owned());
    Ok(Some(run))
}

/// The workload's figures and what the kernel did per message.
pub fn render_workload(
    mode: Mode,
    describe: &str,
    w: &WorkloadReport,
    r: &TraceReport,
    style: Style,
) -> String {
    let mut s = format!("\n{}\n", style.bold(&format!("Workload ({mode}: {describe})")));
    s.push_str(&format!("  {}\n", w.human().trim_end().replace('\n', "\n  ")));
    if w.messages > 0 {
        s.push_str(&format!(
            "  kernel events per message: {:.1} ({} events / {} messages)\n",
            r.total_events as f64 / w.messages as f64,
            r.total_events,
            w.messages
        ));
    }
    s
}

/// A short random id for the names of this run's objects.
fn run_id() -> String {
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        b = std::process::id().to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}
