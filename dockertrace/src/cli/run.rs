//! `dockertrace --mode MODE`: the main job. Launches the workload on one networking mode,
//! traces only its packets, streams them live, reports, and removes everything it created.
use std::{future::Future, net::IpAddr, time::Duration};

use anyhow::Context as _;
use clap::Args;

use super::{
    exit,
    outputs::{check_file, present, Failures, OutputArgs, OutputFile},
    trace::{print_attached, print_warnings, start_tui, stop_signal, warn_unmatched, Outputs, TracingArgs},
};
use crate::{
    counters::Counters,
    modes::{
        faults::{Fault, FAULT_CONNECT_TIMEOUT, FAULT_MTU_MESSAGE},
        Addressing, DeployRequest, Deployment, LanSpec, Mode, Runtime, RuntimeKind,
    },
    recording::{ModeRun, Recording, RunBuilder},
    render::{style::Style, summary::render_summary, workload::render_workload},
    session::{Outcome, Session},
    sys::{
        cpus::{self, CpuList},
        links,
    },
    teardown::Teardown,
    ui::Ui,
    workload::{ClientArgs, Pattern, WorkloadReport, DEFAULT_MESSAGE_SIZE, DEFAULT_PORT},
};

/// Options of the main job.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Networking mode: normal (host processes over loopback), host, bridge, bridge-user,
    /// macvlan, ipvlan-l2, ipvlan-l3, overlay (VXLAN between two engines), overlay-local (one
    /// engine's overlay network); several
    /// comma-separated, or `all`, run one after another with the same workload and are compared.
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
    /// (it must contain /dockertrace; dockertrace never pulls). Default inside dockertrace's
    /// own image (`cargo xtask image`): that image, from $DOCKERTRACE_IMAGE.
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
    /// Skip the untraced phase. By default each mode first runs the workload untraced (same
    /// duration, size, connections, pattern and pinning; nothing loaded into the kernel), then
    /// traced: the comparison's msg/s and RTT come from the untraced phase and the tracer's
    /// cost is its own column. Without it they are the traced figures (and the reports say so).
    #[arg(long, conflicts_with = "untraced")]
    pub no_untraced: bool,
    /// Pin the workload's server and client to these CPUs (`0`, `0-1`, `0,2`): host and
    /// namespace processes get the list before they start, containers as their cpuset. Used with
    /// --tracer-cpus on other CPUs, the workload's cross-CPU wakeups stop dominating the round
    /// trip (docs/performance.md). Default: the CPUs dockertrace started with.
    #[arg(long, value_name = "LIST", value_parser = cpus::parse_usable)]
    pub workload_cpus: Option<CpuList>,
    /// Pin dockertrace's own threads (ring-buffer reader, decoding, output) to these CPUs. The
    /// eBPF programs still run on the CPU of each event: the workload's.
    #[arg(long, value_name = "LIST", value_parser = cpus::parse_usable)]
    pub tracer_cpus: Option<CpuList>,
    /// Reproduce a known trap on purpose in the run's own topology, to see what its drop looks
    /// like and the hint it gets (docs/drops.md): forward-drop (a DROP rule for the run's
    /// traffic on its bridge; bridge, bridge-user), closed-port (the client targets a port
    /// without a listener), macvlan-parent (the parent's side talks to a macvlan child;
    /// macvlan, --runtime netns), mtu (the server's bridge port gets MTU 1000 and messages of
    /// at least 1400 bytes; bridge, bridge-user). Touches nothing the run did not create.
    /// The untraced phase is skipped; the run succeeds when the workload's packets were seen
    /// dying.
    #[arg(long, value_enum, value_name = "FAULT")]
    pub inject: Option<Fault>,
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

    /// The workload client this run launches against `server`.
    fn client(&self, server: IpAddr) -> ClientArgs {
        let fault = self.inject;
        ClientArgs {
            port: fault.and_then(|f| f.client_port(self.port)).unwrap_or(self.port),
            duration: self.duration,
            size: if fault == Some(Fault::Mtu) { self.size.max(FAULT_MTU_MESSAGE) } else { self.size },
            connections: self.connections,
            pattern: self.pattern,
            connect_timeout: if fault.is_some() { FAULT_CONNECT_TIMEOUT } else { 10.0 },
            json: true,
            ..ClientArgs::new(server.to_string())
        }
    }

    /// Checks every argument and output before anything is created; returns the modes to run,
    /// each with its checked addressing.
    fn check(&self) -> anyhow::Result<Vec<(Mode, Option<Addressing>)>> {
        let modes = self.mode.clone().context("--mode is required")?.0;
        let mut planned = Vec::new();
        for &m in &modes {
            let addressing =
                if modes.len() > 1 && !m.needs_parent() { None } else { self.lan().validate(m)? };
            planned.push((m, addressing));
        }
        if let Some(f) = self.inject {
            for &m in &modes {
                f.check(m, self.runtime).map_err(anyhow::Error::msg)?;
            }
            anyhow::ensure!(!self.untraced, "--inject needs tracing: it shows where the packets die");
        }
        if self.runtime == RuntimeKind::Netns {
            anyhow::ensure!(
                self.parent.is_none(),
                "--parent only applies to --runtime docker (the netns runtime builds its own isolated parent)"
            );
            anyhow::ensure!(self.image.is_none(), "--image only applies to --runtime docker");
        }
        // The client's own checks (--size, --connections, --duration), made before deploying
        // instead of inside the container; the server's address is not known yet.
        self.client(IpAddr::from([0, 0, 0, 0])).validate()?;
        self.tracing.check()?;
        anyhow::ensure!(
            modes.len() == 1 || self.tracing.pcap.is_none(),
            "--pcap writes the hops of one mode's run: give one --mode"
        );
        anyhow::ensure!(
            !self.untraced || (self.tracing.pcap.is_none() && self.tracing.filter.is_none()),
            "--pcap and --filter need tracing (not --untraced)"
        );
        if let Some(path) = &self.record {
            check_file("--record", path)?;
        }
        self.out.check()?;
        Ok(planned)
    }

    /// The reports follow the runs (the comparison, or a single mode's pictures and pages).
    fn presents(&self, modes: usize) -> bool {
        modes > 1 || self.out.svg.is_some() || self.out.html.is_some()
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
            _ = self.cancelled() => Err(exit::Exit::interrupted("interrupted during setup; nothing is left behind")),
        }
    }
}

/// Where dockertrace's own image (`cargo xtask image`) names itself: run from it, dockertrace
/// runs the workload containers from the same image (docs/container.md) instead of building one
/// from its binary (which needs `ldd`, absent from a `FROM scratch` image). `--image` wins.
pub const IMAGE_ENV: &str = "DOCKERTRACE_IMAGE";

fn image_from_env() -> Option<String> {
    std::env::var(IMAGE_ENV).ok().filter(|s| !s.trim().is_empty())
}

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
    // What the user can get wrong first, then root and the eBPF object, then the machine.
    let modes = args.check()?;
    crate::tracer::preflight()?;
    warn_unmatched(&args.tracing.options(Default::default())?.events);
    let mut json = args.tracing.open_json()?;
    // Before the runtime and the tracer start their threads (they inherit it).
    if let Some(c) = &args.tracer_cpus {
        cpus::pin_process(c)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let names: Vec<String> = modes.iter().map(|(m, _)| m.to_string()).collect();
    let tui = start_tui(&args.tracing, &runtime, names, args.runtime.name(), Some(args.duration));
    let view = tui.as_ref().map(crate::tui::Tui::handle);
    let mut runs: Vec<ModeRun> = Vec::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    // Modes whose workload failed after their trace was taken: the trace is kept and shown,
    // the command still fails.
    let mut workload_failed: Vec<String> = Vec::new();
    let mut interrupted = false;
    let several = modes.len() > 1;
    for (mode, addr) in modes.iter().cloned() {
        if several {
            eprintln!("\ndockertrace: ── mode {mode} ──");
        }
        match runtime.block_on(run_async(&args, mode, addr, json.as_mut(), view.as_ref())) {
            Ok((run, failed, cut_short)) => {
                if let (Some(v), Some(r)) = (&view, &run) {
                    v.finished(crate::tui::model::ModeFigures::from_run(r));
                }
                runs.extend(run);
                workload_failed.extend(failed.map(|e| format!("{mode}: {e}")));
                if cut_short {
                    interrupted = true;
                    break;
                }
            }
            // Ctrl-C or SIGTERM while a mode was set up: what ran before is still reported.
            Err(e) if several && exit::is_interrupted(&e) => {
                eprintln!("dockertrace: {mode}: {}", crate::errors::describe(&e));
                interrupted = true;
                break;
            }
            // One mode: its failure is the command's. Several: skip it and go on.
            Err(e) if several => {
                let e = crate::errors::describe(&e);
                eprintln!("dockertrace: {mode}: skipped: {e}");
                if let Some(v) = &view {
                    let note = Some(format!("skipped: {e}"));
                    v.finished(crate::tui::model::ModeFigures {
                        mode: mode.to_string(),
                        note,
                        ..Default::default()
                    });
                }
                skipped.push((mode.to_string(), e));
            }
            Err(e) => return Err(e),
        }
    }
    // Several modes: the comparison stays on screen until the person leaves; then the screen
    // is restored, and what the runs printed meanwhile shown, before the reports.
    if let (Some(v), true) = (&view, several && !interrupted) {
        linger(v, &runtime);
    }
    drop(tui);
    let written = write_results(&args, &runs, skipped, modes.len());
    if interrupted {
        if let Err(e) = written {
            eprintln!("dockertrace: error: {}", crate::errors::describe(&e));
        }
        std::process::exit(exit::INTERRUPTED);
    }
    written?;
    anyhow::ensure!(
        workload_failed.is_empty(),
        "the workload failed ({}); what was traced until then is kept above",
        workload_failed.join("; ")
    );
    anyhow::ensure!(!runs.is_empty(), "no mode could run here");
    Ok(())
}

/// Keeps the view's comparison up until the person leaves (`q`, Ctrl-C, SIGTERM).
fn linger(view: &crate::tui::TuiHandle, runtime: &tokio::runtime::Runtime) {
    view.linger();
    runtime.block_on(async {
        tokio::select! {
            _ = stop_signal(None) => {}
            _ = async {
                // `q` also says so here: its SIGINT may come before anything listens for it.
                while !view.quit_requested() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            } => {}
        }
    });
}

/// Writes the recording and presents the reports; a result that cannot be written does not
/// keep the others from being written and shown.
fn write_results(
    args: &RunArgs,
    runs: &[ModeRun],
    skipped: Vec<(String, String)>,
    modes: usize,
) -> anyhow::Result<()> {
    let mut failures = Failures::default();
    if let Some(path) = &args.record {
        if failures.note(Recording::new("dockertrace", runs.to_vec()).save(path)).is_some() {
            eprintln!("dockertrace: recorded {} runs in {}", runs.len(), path.display());
        }
    }
    if args.presents(modes) {
        failures.note(present(runs, skipped, &args.out, Style::for_stdout()));
    }
    failures.into_result()
}

/// How one mode ended: its recording entry (None when interrupted before the workload ended
/// or when only the workload ran), the workload's error if it failed after tracing began, and
/// whether the user interrupted.
type ModeEnd = (Option<ModeRun>, Option<String>, bool);

/// Runs one mode.
async fn run_async(
    args: &RunArgs,
    mode: Mode,
    addressing: Option<Addressing>,
    json: Option<&mut OutputFile>,
    view: Option<&crate::tui::TuiHandle>,
) -> anyhow::Result<ModeEnd> {
    let mut cancel = Cancel::install();
    if let Some(v) = view {
        v.begin(mode.name(), Some(args.port));
    }
    let mut ui = Ui::new();
    let mut teardown = Teardown::new();
    let step = |m: &str| ui.step(m);
    let runtime = cancel.guard(Runtime::open(args.runtime, mode, &step)).await?;
    let mut ctx = ModeCtx { args, mode, runtime: &runtime, cancel: &mut cancel, ui: &mut ui, view };
    let result = ctx.session(addressing, &mut teardown, json).await;
    if let Some(v) = view {
        v.phase("tearing down");
    }
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
    result.map(|(run, failed)| (run, failed, interrupted))
}

/// What every step of one mode's run needs.
struct ModeCtx<'a> {
    args: &'a RunArgs,
    mode: Mode,
    runtime: &'a Runtime,
    cancel: &'a mut Cancel,
    ui: &'a mut Ui,
    /// The live view (`--tui`).
    view: Option<&'a crate::tui::TuiHandle>,
}

/// How the workload ended: its figures, its error, or nothing when interrupted.
type WorkloadEnd = Option<anyhow::Result<WorkloadReport>>;

impl ModeCtx<'_> {
    /// Deploys, runs the workload untraced (unless `--no-untraced`), traces it, and prints the
    /// mode's summary; returns the run (None when interrupted before tracing) and, when the
    /// workload failed after tracing began, its error (the trace is kept).
    async fn session(
        &mut self,
        addressing: Option<Addressing>,
        teardown: &mut Teardown,
        json: Option<&mut OutputFile>,
    ) -> anyhow::Result<(Option<ModeRun>, Option<String>)> {
        let deployment = self.deploy(addressing, teardown).await?;
        if self.args.untraced {
            self.ui.clear();
            let run = untraced(self.args, self.mode, &deployment, self.runtime, self.cancel).await?;
            return Ok((run, None));
        }
        for n in &deployment.notes {
            eprintln!("dockertrace: {n}");
        }
        // An injected fault breaks the workload: nothing to measure untraced.
        let untraced = if self.args.no_untraced || self.args.inject.is_some() {
            None
        } else {
            match self.untraced_phase(&deployment).await? {
                Some(w) => Some(w),
                None => return Ok((None, None)),
            }
        };
        let (outcome, workload, outputs) = self.trace_workload(&deployment, untraced.is_some(), json).await?;
        let (text, run, failed) = self.result(&outcome, workload, untraced, outputs.style());
        outputs.print(&text);
        Ok((Some(run), failed))
    }

    /// Checks the kernel's driver for the mode, then builds the topology and starts the server.
    async fn deploy(
        &mut self,
        addressing: Option<Addressing>,
        teardown: &mut Teardown,
    ) -> anyhow::Result<Deployment> {
        let ui: &Ui = self.ui;
        if let Some(kind) = self.mode.link_kind().filter(|k| *k != "bridge") {
            ui.step(&format!("checking that the kernel supports {kind}"));
            links::kernel_supports(kind)?;
        }
        let lan = self.args.lan();
        let image = self.args.image.clone().or_else(image_from_env);
        let req = DeployRequest {
            mode: self.mode,
            run_id: &run_id(),
            image: image.as_deref(),
            port: self.args.port,
            lan: &lan,
            addressing,
            workload_cpus: self.args.workload_cpus.as_ref(),
            fault: self.args.inject,
        };
        let step = |m: &str| ui.step(m);
        let mut deployment = self.cancel.guard(self.runtime.deploy(&req, teardown, &step)).await?;
        if let Some(note) = pinning_note(self.args.workload_cpus.as_ref(), self.args.tracer_cpus.as_ref()) {
            deployment.notes.push(note);
        }
        if let Some(f) = self.args.inject {
            if let Some(closed) = f.client_port(self.args.port) {
                // Over loopback the workload is told by its port: trace the closed one.
                if deployment.filter.port == Some(self.args.port) {
                    deployment.filter.port = Some(closed);
                }
                deployment.notes.push(format!(
                    "injected closed-port: the client connects to port {closed}, where nothing listens (the server is on {})",
                    self.args.port
                ));
            }
            if f == Fault::Mtu && self.args.size < FAULT_MTU_MESSAGE {
                deployment.notes.push(format!(
                    "injected mtu: messages of {FAULT_MTU_MESSAGE} bytes instead of {} (one segment larger than the MTU)",
                    self.args.size
                ));
            }
            deployment.notes.push(format!("injected fault {f}: {}", f.describe()));
        }
        Ok(deployment)
    }

    /// The untraced phase: the same workload on the same deployment, before anything is
    /// loaded into the kernel (no program, no map, no ring buffer; dockertrace only waits for
    /// the client). None when the user interrupted.
    async fn untraced_phase(&mut self, deployment: &Deployment) -> anyhow::Result<Option<WorkloadReport>> {
        let (args, mode, runtime) = (self.args, self.mode, self.runtime);
        // No spinner either: its redraws would be the only work of this process meanwhile.
        self.ui.clear();
        if let Some(v) = self.view {
            v.phase("untraced phase (1 of 2)");
        }
        eprintln!(
            "dockertrace: {mode}: running the workload untraced for {} s (phase 1 of 2: nothing loaded into the kernel; {}; runtime {})",
            args.duration,
            runtime.describe(mode),
            runtime.kind()
        );
        let client_args = args.client(deployment.server_ip).command_line();
        let w = tokio::select! {
            r = runtime.run_client(deployment, &client_args) => r.context("the untraced phase's workload failed")?,
            _ = self.cancel.cancelled() => return Ok(None),
        };
        eprintln!(
            "dockertrace: {mode}: untraced: {:.0} msg/s{}; now the same workload traced",
            w.msgs_per_s,
            w.rtt_us.as_ref().map_or_else(String::new, |r| format!(", RTT p50 {:.1} µs", r.p50))
        );
        self.ui.resume();
        Ok(Some(w))
    }

    /// Attaches the tracer with the deployment's filter and traces until the client is done
    /// (or the user interrupts); `second`: an untraced phase ran before.
    async fn trace_workload(
        &mut self,
        deployment: &Deployment,
        second: bool,
        json: Option<&mut OutputFile>,
    ) -> anyhow::Result<(Outcome, WorkloadEnd, Outputs)> {
        let (args, mode, runtime) = (self.args, self.mode, self.runtime);
        self.ui.step("loading and attaching the eBPF programs");
        let opts = args.tracing.options(deployment.filter.clone())?;
        let mut session = Session::start(&opts, args.tracing.stats)?;
        session.follow(crate::journeys::Target { ip: Some(deployment.server_ip), port: Some(args.port) });
        self.ui.clear();
        print_warnings(&session);
        print_attached(session.tracer(), true);
        eprintln!(
            "dockertrace: {mode}: running the workload for {} s ({}{}; runtime {})",
            args.duration,
            if second { "phase 2 of 2, traced; " } else { "" },
            runtime.describe(mode),
            runtime.kind()
        );
        let client_args = args.client(deployment.server_ip).command_line();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<anyhow::Result<WorkloadReport>>();
        let mut cancel = self.cancel.clone();
        let client = async {
            let r = runtime.run_client(deployment, &client_args).await;
            let _ = tx.send(r);
            // The last packets (FIN, ACK) are still on their way.
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let stop = async move {
            tokio::select! {
                _ = client => {}
                _ = cancel.cancelled() => {
                    // The traffic stops before the tracer detaches (see `stop_client`).
                    runtime.stop_client(deployment).await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        };
        let mut outputs = Outputs::new(&args.tracing, json)?;
        let names = std::sync::Arc::new(deployment.names.clone());
        outputs.set_names(&names);
        if let Some(v) = self.view {
            v.attached(&session.tracer().attach, names.clone());
            outputs.with_tui(v.sink());
        }
        let mut outcome = session.run(&mut outputs.sinks(), stop).await?;
        outcome.set_names(deployment.names.clone());
        Ok((outcome, rx.try_recv().ok(), outputs))
    }

    /// The mode's summary text (trace, workload, and a single mode's report), its run, and
    /// the workload's error if it failed.
    fn result(
        &self,
        outcome: &Outcome,
        workload: WorkloadEnd,
        untraced: Option<WorkloadReport>,
        style: Style,
    ) -> (String, ModeRun, Option<String>) {
        let (args, mode) = (self.args, self.mode);
        // The summary's drops with the hints of this mode (the trace's own summary knows no
        // mode); the per-mode report below then leaves them out.
        let mut report = outcome.report.clone();
        report.summary.drops =
            crate::compare::ModeReport::from_run(&outcome.to_run(mode.name(), None), 0).drops;
        let report = &report;
        let mut text = format!("\n{}", render_summary(report, style, args.tracing.top));
        let mut failed = None;
        let figures = match workload {
            Some(Ok(w)) => {
                let describe = self.runtime.describe(mode);
                text.push_str(&render_workload(mode, describe, &w, untraced.as_ref(), report, style));
                Some(w)
            }
            Some(Err(e)) if args.inject.is_some() => {
                let e = crate::errors::describe(&e);
                text.push_str(&format!("\nWorkload failed, as the injected fault wants: {e}\n"));
                None
            }
            Some(Err(e)) => {
                let e = crate::errors::describe(&e);
                text.push_str(&style.red(&format!(
                    "\nWorkload failed: {e}\nThe trace above is what the kernel did until then.\n"
                )));
                failed = Some(e);
                None
            }
            None => {
                text.push_str(&style.red("\nWorkload interrupted: no figures.\n"));
                None
            }
        };
        if let Some(f) = args.inject {
            let dropped: u64 = report.summary.drops.iter().filter(|d| !d.benign).map(|d| d.count).sum();
            if dropped == 0 {
                let e = format!("--inject {f}: no drop of the workload's packets was seen");
                text.push_str(&style.red(&format!("\n{e}\n")));
                failed = Some(e);
            }
        }
        let mut run = outcome.to_run(mode.name(), figures);
        run.untraced = untraced;
        run.runtime = Some(self.runtime.kind().name().to_owned());
        // The per-mode report (a single mode's; several modes get theirs with the comparison).
        if !args.presents(args.mode.as_ref().map_or(0, |m| m.0.len())) {
            let mut m = crate::compare::ModeReport::from_run(&run, args.out.paths);
            m.drops.clear();
            text.push_str(&crate::render::tables::render_mode(&m, style, args.out.functions));
        }
        (text, run, failed)
    }
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
    let client_args = args.client(deployment.server_ip).command_line();
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

/// One line naming the pinning, when there is any.
fn pinning_note(workload: Option<&CpuList>, tracer: Option<&CpuList>) -> Option<String> {
    let on = |c: &CpuList| {
        let n = c.cpus().count();
        format!("CPU{} {c}", if n == 1 { "" } else { "s" })
    };
    match (workload, tracer) {
        (None, None) => None,
        (Some(w), None) => Some(format!("pinned: workload on {}", on(w))),
        (None, Some(t)) => Some(format!("pinned: dockertrace on {}", on(t))),
        (Some(w), Some(t)) => Some(format!("pinned: workload on {}, dockertrace on {}", on(w), on(t))),
    }
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
