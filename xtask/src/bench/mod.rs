//! `cargo xtask bench`: what tracing costs the datapath it measures, against the study's method
//! and its nearest peers.
//!
//! The workload's server and client run on one CPU, the tracer (dockertrace's threads, perf,
//! bpftrace) on another: unpinned, the echo's cross-CPU wakeups move its msg/s by a factor of
//! three from run to run and drown the tracer's cost. For each mode, interleaved round by round
//! (the same workload and duration), every [`Variant`] runs once per round. Beside each ratio to
//! untraced the bench gives the tracing cost per event in ns, `(1/traced − 1/untraced msg/s) ÷
//! events per message`, a figure that holds across runs; from the `--stacks every` and
//! `--stacks adaptive` runs of a round it measures what adaptive stacks find ([`coverage`]).
//! Then one run per mode with the kernel's per-program statistics and a synthetic burst ladder
//! (the highest event rate traced for the step's length with zero loss). Results:
//! `BENCHMARKS.md` and `BENCHMARKS.json`.
//!
//! Numbers are measured and reported, never asserted: only the smoke form checks that every row
//! was produced.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use serde::Serialize;
use serde_json::Value;

use crate::{step, workspace_root};

mod coverage;
mod report;
mod tools;

use coverage::{Coverage, Weights};
use tools::{Bpftrace, Perf, ToolResult};

#[derive(clap::Args, Clone)]
pub struct BenchArgs {
    /// A mode to measure besides `normal` and `bridge` (repeatable), e.g. `--mode macvlan`.
    #[arg(long, value_name = "MODE")]
    mode: Vec<String>,
    /// How dockertrace builds the modes: `docker` (its default) or `netns` (no Docker).
    #[arg(long, value_name = "RUNTIME", default_value = "docker")]
    runtime: String,
    /// Rounds of the interleaved variants (at least 3 for a median worth reading).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Length of each workload run, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    duration: f64,
    /// Length of each step of the burst ladder, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    burst_step: f64,
    /// Skip the burst ladder.
    #[arg(long)]
    no_burst: bool,
    /// Do not pin the workload and the tracer to CPUs of their own (by default the first usable
    /// CPU runs the workload and the second the tracer, whatever the machine's size).
    #[arg(long)]
    no_pin: bool,
    /// The CI form: one round of 2 s over a subset of the variants that takes every code path,
    /// a short ladder, results under target/bench-smoke; fails unless every row was produced.
    #[arg(long)]
    smoke: bool,
    /// Where BENCHMARKS.md and BENCHMARKS.json go (default: the workspace root; with --smoke,
    /// target/bench-smoke).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// How a dockertrace run takes kernel stacks (`--stacks`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stacks {
    Every,
    Adaptive,
    None,
}

impl Stacks {
    fn name(self) -> &'static str {
        match self {
            Stacks::Every => "every",
            Stacks::Adaptive => "adaptive",
            Stacks::None => "none",
        }
    }
}

/// The ways a mode is run.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    Untraced,
    /// dockertrace without options: streaming, adaptive stacks, the best attach type, journeys.
    Default,
    /// `--no-journeys`: the default without packet tracking (what journeys cost is the
    /// difference to `Default`).
    NoJourneys,
    /// `--attach X --stacks none`: the attach type's own cost, without stack walks.
    AttachTpBtf,
    AttachRawTp,
    AttachPerf,
    StacksEvery,
    StacksAdaptive,
    StacksNone,
    /// `--aggregate` (adaptive stacks): counts in the kernel.
    Aggregate,
    /// `perf record -ae 'net:*' --call-graph fp` around an untraced run: the study's method.
    Perf,
    /// bpftrace counting per probe and kernel stack around an untraced run: aggregate's peer.
    Bpftrace,
}

impl Variant {
    pub const ALL: [Variant; 12] = [
        Variant::Untraced,
        Variant::Default,
        Variant::NoJourneys,
        Variant::AttachTpBtf,
        Variant::AttachRawTp,
        Variant::AttachPerf,
        Variant::StacksEvery,
        Variant::StacksAdaptive,
        Variant::StacksNone,
        Variant::Aggregate,
        Variant::Perf,
        Variant::Bpftrace,
    ];

    /// The smoke run's variants: every code path once (an untraced run, dockertrace with and
    /// without --attach and --stacks, the coverage pair, aggregate, both external tracers).
    const SMOKE: [Variant; 9] = [
        Variant::Untraced,
        Variant::Default,
        Variant::NoJourneys,
        Variant::AttachRawTp,
        Variant::StacksEvery,
        Variant::StacksAdaptive,
        Variant::Aggregate,
        Variant::Perf,
        Variant::Bpftrace,
    ];

    /// dockertrace traces this variant (rather than nothing, perf or bpftrace).
    pub fn traced(self) -> bool {
        !matches!(self, Variant::Untraced | Variant::Perf | Variant::Bpftrace)
    }

    /// Another tool traces this variant.
    pub fn external(self) -> bool {
        matches!(self, Variant::Perf | Variant::Bpftrace)
    }

    pub fn label(self) -> String {
        match self {
            Variant::Untraced => "untraced".into(),
            Variant::Default => "dockertrace (default: streaming, adaptive stacks, journeys)".into(),
            Variant::NoJourneys => "dockertrace --no-journeys".into(),
            Variant::AttachTpBtf => "dockertrace --attach tp_btf --stacks none".into(),
            Variant::AttachRawTp => "dockertrace --attach raw_tp --stacks none".into(),
            Variant::AttachPerf => "dockertrace --attach perf --stacks none".into(),
            Variant::StacksEvery => "dockertrace --stacks every".into(),
            Variant::StacksAdaptive => "dockertrace --stacks adaptive".into(),
            Variant::StacksNone => "dockertrace --stacks none".into(),
            Variant::Aggregate => "dockertrace --aggregate (adaptive stacks)".into(),
            Variant::Perf => "perf record -ae 'net:*' --call-graph fp".into(),
            Variant::Bpftrace => format!("bpftrace -e '{}'", tools::BPFTRACE_PROGRAM),
        }
    }

    /// The run command's options for this variant (besides mode, runtime, duration, pinning).
    fn options(self, caps: &Caps) -> Result<Vec<&'static str>, String> {
        let attach = |t: &'static str| caps.stacks(Stacks::None).map(|s| [vec!["--attach", t], s].concat());
        match self {
            Variant::Untraced | Variant::Perf | Variant::Bpftrace => Ok(vec!["--untraced"]),
            Variant::Default => Ok(vec![]),
            Variant::NoJourneys if caps.journeys_flag => Ok(vec!["--no-journeys"]),
            Variant::NoJourneys => {
                Err("this dockertrace has no --no-journeys (no journeys to turn off)".into())
            }
            Variant::AttachTpBtf => attach("tp_btf"),
            Variant::AttachRawTp => attach("raw_tp"),
            Variant::AttachPerf => attach("perf"),
            Variant::StacksEvery => caps.stacks(Stacks::Every),
            Variant::StacksAdaptive => caps.stacks(Stacks::Adaptive),
            Variant::StacksNone => caps.stacks(Stacks::None),
            Variant::Aggregate => Ok(vec!["--aggregate"]),
        }
    }
}

/// What the dockertrace binary under test offers.
struct Caps {
    /// `--stacks every|adaptive|none|sample:N`. A binary from before it knows `--no-stacks`
    /// and every-stack as its default, and has no adaptive stacks.
    stacks_flag: bool,
    /// `--no-journeys` (binaries from before packet journeys have none).
    journeys_flag: bool,
    /// `--no-untraced`: a binary with it runs an untraced phase before each traced one unless
    /// told not to; the bench runs its untraced variant itself, interleaved.
    no_untraced_flag: bool,
}

impl Caps {
    fn probe(exe: &Path) -> Result<Caps> {
        let out = Command::new(exe)
            .arg("--help")
            .output()
            .with_context(|| format!("cannot run {} --help", exe.display()))?;
        let help = String::from_utf8_lossy(&out.stdout);
        let stacks_flag = help
            .split_whitespace()
            .any(|w| w.trim_end_matches(',') == "--stacks" || w.starts_with("--stacks="));
        let journeys_flag = help.split_whitespace().any(|w| w.trim_end_matches(',') == "--no-journeys");
        let no_untraced_flag = help.split_whitespace().any(|w| w == "--no-untraced");
        Ok(Caps { stacks_flag, journeys_flag, no_untraced_flag })
    }

    /// `--no-untraced` for a traced run of a binary that has it (the runs are the bench's own).
    fn no_untraced(&self, options: &[&str]) -> Option<&'static str> {
        (self.no_untraced_flag && !options.contains(&"--untraced")).then_some("--no-untraced")
    }

    fn stacks(&self, s: Stacks) -> Result<Vec<&'static str>, String> {
        if self.stacks_flag {
            return Ok(vec!["--stacks", s.name()]);
        }
        match s {
            Stacks::Every => Ok(vec![]),
            Stacks::None => Ok(vec!["--no-stacks"]),
            Stacks::Adaptive => Err("this dockertrace has no --stacks: it predates adaptive stacks".into()),
        }
    }
}

/// The CPUs of the two sides.
#[derive(Clone, Copy, Serialize)]
pub struct Pinning {
    /// The workload's server and client (`--workload-cpus`).
    pub workload_cpu: usize,
    /// dockertrace's threads (`--tracer-cpus`), perf, bpftrace.
    pub tracer_cpu: usize,
}

impl Pinning {
    /// The first two usable CPUs (None with fewer).
    fn choose() -> Option<Pinning> {
        let cpus = tools::usable_cpus();
        match cpus[..] {
            [w, t, ..] => Some(Pinning { workload_cpu: w, tracer_cpu: t }),
            _ => None,
        }
    }
}

/// A variant that could not run here, and why.
#[derive(Clone, Serialize)]
pub struct Skipped {
    pub variant: Variant,
    pub label: String,
    pub reason: String,
}

/// One run of one variant.
#[derive(Clone, Serialize)]
pub struct Sample {
    pub mode: String,
    pub variant: Variant,
    pub round: u32,
    pub msgs_per_s: f64,
    /// The workload's echoed messages (in its measured window).
    pub messages: u64,
    /// Events the tracer captured (perf, bpftrace: every net:* event of the machine).
    pub events: u64,
    pub events_per_s: f64,
    /// dockertrace: its events over the workload's messages (None for the others).
    pub events_per_msg: Option<f64>,
    pub lost: u64,
    /// The tracer process's CPU time (user + system).
    pub cpu_s: f64,
    pub peak_rss_kib: u64,
    /// Loading and attaching (dockertrace only).
    pub attach_s: Option<f64>,
}

/// Medians over the rounds of one (mode, variant).
#[derive(Clone, Serialize)]
pub struct Row {
    pub mode: String,
    pub variant: Variant,
    pub label: String,
    pub rounds: usize,
    pub msgs_per_s_median: f64,
    pub msgs_per_s_min: f64,
    pub msgs_per_s_max: f64,
    /// Median msg/s over the untraced median of the same mode.
    pub ratio_to_untraced: Option<f64>,
    pub events_per_s: f64,
    /// Median events per message: the run's own (dockertrace); perf and bpftrace trace the whole
    /// machine, so theirs is the default variant's of the same mode.
    pub events_per_msg: Option<f64>,
    /// `(1/traced − 1/untraced msg/s) ÷ events per message`, in ns, from the medians.
    pub ns_per_event: Option<f64>,
    /// Summed over the rounds.
    pub lost: u64,
    pub cpu_s: f64,
    pub peak_rss_kib: u64,
    pub attach_s: Option<f64>,
}

#[derive(Clone, Serialize)]
pub struct BurstStep {
    /// `default` (the tracer's default stacks) or `none` (`--stacks none`).
    pub stacks: &'static str,
    pub target_datagrams_per_s: u64,
    pub datagrams_per_s: f64,
    /// The generator reached its target rate (within 5%).
    pub kept_up: bool,
    pub events: u64,
    pub events_per_s: f64,
    pub lost: u64,
    pub cpu_s: f64,
}

#[derive(Clone, Serialize)]
pub struct ProgramStat {
    pub mode: String,
    /// The run's `--stacks`.
    pub stacks: Stacks,
    pub program: String,
    pub runs: u64,
    pub avg_ns: f64,
}

#[derive(Serialize)]
pub struct Machine {
    pub date_utc: String,
    pub kernel: String,
    pub cpu: String,
    pub cpus: usize,
    pub memory_mib: u64,
    pub commit: String,
}

#[derive(Serialize)]
pub struct Results {
    pub machine: Machine,
    pub runtime: String,
    pub rounds: u32,
    pub duration_s: f64,
    pub burst_step_s: f64,
    /// None: not pinned (`--no-pin`, or a machine with one CPU).
    pub pinning: Option<Pinning>,
    /// The binary had `--stacks` (false: an older build, whose default takes every stack).
    pub stacks_flag: bool,
    pub variants: Vec<Variant>,
    pub skipped: Vec<Skipped>,
    pub samples: Vec<Sample>,
    pub rows: Vec<Row>,
    pub coverage: Vec<Coverage>,
    pub burst: Vec<BurstStep>,
    /// Highest events/s traced over a zero-loss ladder step (default stacks).
    pub burst_max_zero_loss_events_per_s: Option<f64>,
    pub programs: Vec<ProgramStat>,
}

/// Scratch files of one bench, removed when done (also on error).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let dir = workspace_root().join("target/bench-tmp");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch(dir))
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What every run of one bench shares.
struct Bench<'a> {
    exe: PathBuf,
    scratch: Scratch,
    args: &'a BenchArgs,
    caps: Caps,
    pinning: Option<Pinning>,
}

pub fn bench(mut args: BenchArgs) -> Result<()> {
    ensure!(
        crate::is_root(),
        "the benchmark loads eBPF programs and runs perf -a: run it as root (sudo -E cargo xtask bench)"
    );
    if args.smoke {
        args.rounds = 1;
        args.duration = 2.0;
        args.burst_step = 2.0;
    }
    ensure!(args.rounds >= 1, "--rounds must be at least 1");
    ensure!(args.duration > 0.0 && args.burst_step > 0.0, "durations must be positive");
    ensure!(tools::installed("perf"), "perf is not installed (apt-get install linux-perf)");
    let exe = workspace_root().join("target/release/dockertrace");
    let caps = Caps::probe(&exe)?;
    let pinning = if args.no_pin { None } else { Pinning::choose() };
    let b = Bench { exe, scratch: Scratch::new()?, args: &args, caps, pinning };
    let mut modes = vec!["normal".to_string(), "bridge".to_string()];
    for m in &args.mode {
        if !modes.contains(m) {
            modes.push(m.clone());
        }
    }
    let t0 = Instant::now();
    match pinning {
        Some(p) => step(&format!(
            "bench: workload on CPU {}, tracer on CPU {} ({} CPUs usable)",
            p.workload_cpu,
            p.tracer_cpu,
            tools::usable_cpus().len()
        )),
        None => step("bench: not pinned"),
    }
    let (variants, skipped) = plan(&b);
    let runs = args.rounds as usize * modes.len() * variants.len();
    step(&format!(
        "bench: {} round{} x {} modes x {} variants = {runs} runs of {} s, interleaved",
        args.rounds,
        if args.rounds == 1 { "" } else { "s" },
        modes.len(),
        variants.len(),
        args.duration
    ));
    let mut samples = Vec::new();
    let mut coverage = Vec::new();
    for round in 1..=args.rounds {
        for mode in &modes {
            let mut every = None;
            let mut adaptive = None;
            for &v in &variants {
                eprint!("xtask: bench: round {round}/{}: {mode}: {:<48}", args.rounds, v.label());
                let (s, weights) = b
                    .run_variant(mode, v, round)
                    .with_context(|| format!("{mode}, {}, round {round}", v.label()))?;
                eprintln!(" {:>9.0} msg/s {:>10.0} events/s  lost {}", s.msgs_per_s, s.events_per_s, s.lost);
                match v {
                    Variant::StacksEvery => every = weights,
                    Variant::StacksAdaptive => adaptive = weights,
                    _ => {}
                }
                samples.push(s);
            }
            if let (Some(e), Some(a)) = (&every, &adaptive) {
                coverage.push(Coverage::compare(mode, round, e, a));
            }
        }
    }
    let rows = rows(&modes, &variants, &samples);

    let mut programs = Vec::new();
    let stats_stacks: &[Stacks] =
        if args.smoke { &[Stacks::Every] } else { &[Stacks::Every, Stacks::Adaptive, Stacks::None] };
    for mode in &modes {
        for &stacks in stats_stacks {
            let Ok(extra) = b.caps.stacks(stacks) else {
                step(&format!("bench: {mode}: per-program statistics --stacks {}: skipping", stacks.name()));
                continue;
            };
            step(&format!("bench: {mode}: per-program statistics (--stats --stacks {})", stacks.name()));
            programs.extend(b.program_stats(mode, stacks, &extra)?);
        }
    }

    let burst = if args.no_burst { Vec::new() } else { b.burst_ladder()? };
    let best = burst
        .iter()
        .filter(|s| s.lost == 0 && s.stacks == "default")
        .map(|s| s.events_per_s)
        .reduce(f64::max);

    let results = Results {
        machine: machine(),
        runtime: args.runtime.clone(),
        rounds: args.rounds,
        duration_s: args.duration,
        burst_step_s: args.burst_step,
        pinning,
        stacks_flag: b.caps.stacks_flag,
        variants: variants.clone(),
        skipped,
        samples,
        rows,
        coverage,
        burst,
        burst_max_zero_loss_events_per_s: best,
        programs,
    };
    let out = args.out.clone().unwrap_or_else(|| {
        if args.smoke {
            workspace_root().join("target/bench-smoke")
        } else {
            workspace_root()
        }
    });
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let md = out.join("BENCHMARKS.md");
    let json = out.join("BENCHMARKS.json");
    fs::write(&md, report::markdown(&results)).with_context(|| format!("cannot write {}", md.display()))?;
    fs::write(&json, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("cannot write {}", json.display()))?;
    println!("{}", report::table(&results.rows));
    step(&format!(
        "bench done in {:.0} s: {} and {}",
        t0.elapsed().as_secs_f64(),
        md.display(),
        json.display()
    ));
    if args.smoke {
        check_complete(&results, &modes, !args.no_burst)?;
    }
    Ok(())
}

/// The variants to run, and those that cannot run here (said once, not per round).
fn plan(b: &Bench<'_>) -> (Vec<Variant>, Vec<Skipped>) {
    let all: &[Variant] = if b.args.smoke { &Variant::SMOKE } else { &Variant::ALL };
    let mut run = Vec::new();
    let mut skipped = Vec::new();
    for &v in all {
        let why = match v.options(&b.caps) {
            Err(why) => Some(why),
            Ok(_) if v == Variant::Bpftrace && !tools::installed("bpftrace") => {
                Some("bpftrace not installed".to_owned())
            }
            Ok(_) => None,
        };
        match why {
            Some(reason) => {
                eprintln!("xtask: bench: {}: skipping: {reason}", v.label());
                skipped.push(Skipped { variant: v, label: v.label(), reason });
            }
            None => run.push(v),
        }
    }
    (run, skipped)
}

/// The smoke check: every planned (mode, variant) row, with the figures it exists for; a
/// variant may only be missing for want of bpftrace.
fn check_complete(r: &Results, modes: &[String], burst: bool) -> Result<()> {
    let mut missing: Vec<String> = r
        .skipped
        .iter()
        .filter(|s| s.variant != Variant::Bpftrace)
        .map(|s| format!("{}: skipped: {}", s.label, s.reason))
        .collect();
    for mode in modes {
        for &v in &r.variants {
            let label = v.label();
            match r.rows.iter().find(|row| &row.mode == mode && row.variant == v) {
                None => missing.push(format!("{mode}/{label}: no row")),
                Some(row) if row.msgs_per_s_median <= 0.0 => {
                    missing.push(format!("{mode}/{label}: no workload messages"))
                }
                Some(row) if v != Variant::Untraced && row.events_per_s <= 0.0 => {
                    missing.push(format!("{mode}/{label}: no events captured"))
                }
                Some(row) if v.traced() && row.attach_s.is_none() => {
                    missing.push(format!("{mode}/{label}: no tracer cost recorded"))
                }
                Some(row) if v != Variant::Untraced && row.ns_per_event.is_none() => {
                    missing.push(format!("{mode}/{label}: no cost per event"))
                }
                Some(_) => {}
            }
        }
        if !r.programs.iter().any(|p| &p.mode == mode && p.runs > 0) {
            missing.push(format!("{mode}: no per-program statistics"));
        }
        let pair =
            r.variants.contains(&Variant::StacksEvery) && r.variants.contains(&Variant::StacksAdaptive);
        if pair && !r.coverage.iter().any(|c| &c.mode == mode && c.pairs_every > 0) {
            missing.push(format!("{mode}: no coverage of adaptive stacks"));
        }
    }
    if burst && !r.burst.iter().any(|s| s.events > 0) {
        missing.push("burst ladder: no step captured events".into());
    }
    if !missing.is_empty() {
        bail!("bench smoke: incomplete results: {}", missing.join("; "));
    }
    step("bench smoke: every row produced");
    Ok(())
}

fn read_recording(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let _ = fs::remove_file(path);
    v.get("runs").and_then(|r| r.get(0)).cloned().with_context(|| format!("{}: no run", path.display()))
}

fn f64_at(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn u64_at(v: &Value, path: &[&str]) -> u64 {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_u64).unwrap_or(0)
}

/// Events in a recorded run: the sum of its counts.
fn events_of(run: &Value) -> u64 {
    run.get("counts")
        .and_then(Value::as_array)
        .map(|c| c.iter().map(|c| u64_at(c, &["count"])).sum())
        .unwrap_or(0)
}

/// The tracer that runs beside an untraced workload.
enum External {
    Perf(Perf),
    Bpftrace(Bpftrace),
}

impl External {
    fn stop(self) -> Result<ToolResult> {
        match self {
            External::Perf(p) => p.stop(),
            External::Bpftrace(b) => b.stop(),
        }
    }
}

impl Bench<'_> {
    /// Runs dockertrace with `args`, stdout discarded; fails with its stderr.
    fn dockertrace(&self, args: &[&str]) -> Result<()> {
        let out = Command::new(&self.exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("cannot run {}", self.exe.display()))?;
        if !out.status.success() {
            bail!(
                "dockertrace {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// `--workload-cpus W --tracer-cpus T`, when pinned.
    fn pin_args(&self) -> Vec<String> {
        match self.pinning {
            Some(p) => vec![
                "--workload-cpus".into(),
                p.workload_cpu.to_string(),
                "--tracer-cpus".into(),
                p.tracer_cpu.to_string(),
            ],
            None => Vec::new(),
        }
    }

    /// The run command for `mode` with `extra` options, recording to `rec`.
    fn run_command(&self, mode: &str, rec: &Path, extra: &[&str]) -> Result<Vec<String>> {
        let mut a: Vec<String> = ["--mode", mode, "--runtime", &self.args.runtime, "--quiet", "--record"]
            .map(str::to_owned)
            .into();
        a.push(rec.to_str().context("non-UTF-8 scratch path")?.to_owned());
        a.extend(["--duration".to_owned(), self.args.duration.to_string()]);
        a.extend(self.pin_args());
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a.extend(self.caps.no_untraced(extra).map(str::to_owned));
        Ok(a)
    }

    /// One run of `v`; the (event, function) weights for the coverage pair's variants.
    fn run_variant(&self, mode: &str, v: Variant, round: u32) -> Result<(Sample, Option<Weights>)> {
        let rec = self.scratch.file("run.json");
        let options = v.options(&self.caps).map_err(anyhow::Error::msg)?;
        let a = self.run_command(mode, &rec, &options)?;
        let tracer_cpu = self.pinning.map(|p| p.tracer_cpu);
        let external = match v {
            Variant::Perf => Some(External::Perf(Perf::start(&self.scratch.file("perf.data"), tracer_cpu)?)),
            Variant::Bpftrace => {
                Some(External::Bpftrace(Bpftrace::start(&self.scratch.file("bpftrace.out"), tracer_cpu)?))
            }
            _ => None,
        };
        let ran = self.dockertrace(&a.iter().map(String::as_str).collect::<Vec<_>>());
        let tool = match external {
            Some(t) => Some(t.stop()?),
            None => None,
        };
        ran?;
        let run = read_recording(&rec)?;
        let msgs_per_s =
            f64_at(&run, &["workload", "msgs_per_s"]).context("the recording has no workload figures")?;
        let messages = u64_at(&run, &["workload", "messages"]);
        let run_s = f64_at(&run, &["duration_s"]).unwrap_or(self.args.duration).max(1e-3);
        let mut s = Sample {
            mode: mode.to_string(),
            variant: v,
            round,
            msgs_per_s,
            messages,
            events: 0,
            events_per_s: 0.0,
            events_per_msg: None,
            lost: 0,
            cpu_s: 0.0,
            peak_rss_kib: 0,
            attach_s: None,
        };
        if let Some(t) = tool {
            s.events = t.events;
            s.events_per_s = t.events as f64 / t.wall_s.max(1e-3);
            s.lost = t.lost;
            s.cpu_s = t.cpu_s;
            s.peak_rss_kib = t.peak_rss_kib;
        } else if v.traced() {
            s.events = events_of(&run);
            s.events_per_s = s.events as f64 / run_s;
            s.events_per_msg = (messages > 0).then(|| s.events as f64 / messages as f64);
            s.lost = u64_at(&run, &["counters", "ring_full"]) + u64_at(&run, &["counters", "agg_full"]);
            s.cpu_s = f64_at(&run, &["tracer", "cpu_s"]).unwrap_or(0.0);
            s.peak_rss_kib = u64_at(&run, &["tracer", "peak_rss_kib"]);
            s.attach_s = f64_at(&run, &["tracer", "attach_s"]);
        }
        let weights =
            matches!(v, Variant::StacksEvery | Variant::StacksAdaptive).then(|| Weights::of_run(&run));
        Ok((s, weights))
    }

    fn program_stats(&self, mode: &str, stacks: Stacks, extra: &[&str]) -> Result<Vec<ProgramStat>> {
        let rec = self.scratch.file("stats.json");
        let a = self.run_command(mode, &rec, &[&["--stats"], extra].concat())?;
        self.dockertrace(&a.iter().map(String::as_str).collect::<Vec<_>>())?;
        let run = read_recording(&rec)?;
        let mut out: Vec<ProgramStat> = run
            .pointer("/tracer/programs")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| {
                        let runs = p.get("runs")?.as_u64()?;
                        let ns = p.get("run_ns")?.as_u64()?;
                        let program = p.get("program")?.as_str()?.to_string();
                        (runs > 0).then(|| ProgramStat {
                            mode: mode.to_string(),
                            stacks,
                            program,
                            runs,
                            avg_ns: ns as f64 / runs as f64,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| (b.runs as f64 * b.avg_ns).total_cmp(&(a.runs as f64 * a.avg_ns)));
        Ok(out)
    }

    /// Traces loopback (streaming; default stacks, then none) while `workload burst` sends at
    /// rising rates; each series stops at the first step that loses events or that the
    /// generator cannot reach (the kernel-side cost of tracing is charged to the sender). Not
    /// pinned: the senders use every CPU, the tracer with them.
    fn burst_ladder(&self) -> Result<Vec<BurstStep>> {
        let ladder = if self.args.smoke { &LADDER[..2] } else { LADDER };
        let mut steps = Vec::new();
        for (stacks, extra) in [("default", Ok(vec![])), ("none", self.caps.stacks(Stacks::None))] {
            let extra = extra.map_err(anyhow::Error::msg)?;
            for &rate in ladder {
                eprint!(
                    "xtask: bench: burst (stacks {stacks}) {rate} datagrams/s for {} s:",
                    self.args.burst_step
                );
                let s = self.burst_step(rate, stacks, &extra)?;
                eprintln!(
                    " sent {:.0}/s, traced {:.0} events/s, lost {}{}",
                    s.datagrams_per_s,
                    s.events_per_s,
                    s.lost,
                    if s.kept_up { "" } else { " (generator below target)" }
                );
                let stop = s.lost > 0 || !s.kept_up;
                steps.push(s);
                if stop {
                    break;
                }
            }
        }
        Ok(steps)
    }

    fn burst_step(&self, rate: u64, stacks: &'static str, extra: &[&str]) -> Result<BurstStep> {
        let secs = self.args.burst_step;
        let rec = self.scratch.file("burst.json");
        let err_path = self.scratch.file("burst-trace.stderr");
        let mut tracer = Command::new(&self.exe)
            .args(["trace", "--dev", "lo", "--quiet", "--record"])
            .arg(&rec)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err_path)?)
            .spawn()
            .context("cannot start dockertrace trace")?;
        // Wait for "attached …" (bounded), then send.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let err = fs::read_to_string(&err_path).unwrap_or_default();
            if err.contains("dockertrace: attached") {
                break;
            }
            if Instant::now() > deadline || tracer.try_wait()?.is_some() {
                let _ = tracer.kill();
                let _ = tracer.wait();
                bail!("dockertrace trace did not attach: {}", err.trim());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let senders = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4).to_string();
        let out = Command::new(&self.exe)
            .args(["workload", "burst", "--json", "--senders", &senders, "--rate", &rate.to_string()])
            .args(["--duration", &secs.to_string()])
            .stderr(Stdio::inherit())
            .output();
        // SAFETY: interrupting our own child.
        unsafe { libc::kill(tracer.id() as libc::pid_t, libc::SIGINT) };
        let st = tracer.wait()?;
        let err = fs::read_to_string(&err_path).unwrap_or_default();
        let out = out.context("cannot run dockertrace workload burst")?;
        ensure!(out.status.success(), "dockertrace workload burst failed ({})", out.status);
        ensure!(st.success(), "dockertrace trace failed ({st}): {}", err.trim());
        let b: Value = serde_json::from_slice(&out.stdout).context("workload burst: not JSON")?;
        let run = read_recording(&rec)?;
        let duration_s = f64_at(&b, &["duration_s"]).unwrap_or(secs).max(1e-3);
        let sent_rate = f64_at(&b, &["rate"]).unwrap_or(0.0);
        let events = events_of(&run);
        Ok(BurstStep {
            stacks,
            target_datagrams_per_s: rate,
            datagrams_per_s: sent_rate,
            kept_up: sent_rate >= 0.95 * rate as f64,
            events,
            events_per_s: events as f64 / duration_s,
            lost: u64_at(&run, &["counters", "ring_full"]),
            cpu_s: f64_at(&run, &["tracer", "cpu_s"]).unwrap_or(0.0),
        })
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The tracing cost per event in ns: `(1/traced − 1/untraced msg/s) ÷ events per message`.
pub fn ns_per_event(traced_msgs_per_s: f64, untraced_msgs_per_s: f64, events_per_msg: f64) -> Option<f64> {
    (traced_msgs_per_s > 0.0 && untraced_msgs_per_s > 0.0 && events_per_msg > 0.0)
        .then(|| (1.0 / traced_msgs_per_s - 1.0 / untraced_msgs_per_s) / events_per_msg * 1e9)
}

fn rows(modes: &[String], variants: &[Variant], samples: &[Sample]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for mode in modes {
        let mut base = None;
        for &v in variants {
            let of: Vec<&Sample> = samples.iter().filter(|s| &s.mode == mode && s.variant == v).collect();
            if of.is_empty() {
                continue;
            }
            let pick = |f: fn(&Sample) -> f64| median(&mut of.iter().map(|s| f(s)).collect::<Vec<_>>());
            let msgs = pick(|s| s.msgs_per_s);
            if v == Variant::Untraced {
                base = Some(msgs);
            }
            let attach: Vec<f64> = of.iter().filter_map(|s| s.attach_s).collect();
            let mut epm: Vec<f64> = of.iter().filter_map(|s| s.events_per_msg).collect();
            rows.push(Row {
                mode: mode.clone(),
                variant: v,
                label: v.label(),
                rounds: of.len(),
                msgs_per_s_median: msgs,
                msgs_per_s_min: of.iter().map(|s| s.msgs_per_s).fold(f64::INFINITY, f64::min),
                msgs_per_s_max: of.iter().map(|s| s.msgs_per_s).fold(0.0, f64::max),
                ratio_to_untraced: base.filter(|b| *b > 0.0).map(|b| msgs / b),
                events_per_s: pick(|s| s.events_per_s),
                events_per_msg: (!epm.is_empty()).then(|| median(&mut epm)),
                ns_per_event: None,
                lost: of.iter().map(|s| s.lost).sum(),
                cpu_s: pick(|s| s.cpu_s),
                peak_rss_kib: of.iter().map(|s| s.peak_rss_kib).max().unwrap_or(0),
                attach_s: (!attach.is_empty()).then(|| median(&mut attach.clone())),
            });
        }
        // perf and bpftrace count the machine's every net:* event: they pay for the workload's
        // events per message as dockertrace sees them (the default variant, else any traced one).
        let of_mode =
            |rows: &[Row], v: Variant| rows.iter().find(|r| &r.mode == mode && r.variant == v).cloned();
        let dockertrace_epm = of_mode(&rows, Variant::Default)
            .and_then(|r| r.events_per_msg)
            .or_else(|| rows.iter().filter(|r| &r.mode == mode).find_map(|r| r.events_per_msg));
        let untraced = of_mode(&rows, Variant::Untraced).map(|r| r.msgs_per_s_median);
        for r in rows.iter_mut().filter(|r| &r.mode == mode && r.variant != Variant::Untraced) {
            if r.variant.external() {
                r.events_per_msg = dockertrace_epm;
            }
            r.ns_per_event = match (untraced, r.events_per_msg) {
                (Some(u), Some(e)) => ns_per_event(r.msgs_per_s_median, u, e),
                _ => None,
            };
        }
    }
    rows
}

/// Datagrams per second of the ladder's steps (a loopback datagram makes ~6 net:* events).
const LADDER: &[u64] = &[25_000, 50_000, 100_000, 150_000, 200_000, 250_000, 300_000];

fn machine() -> Machine {
    let out = |p: &str, a: &[&str]| {
        Command::new(p)
            .args(a)
            .current_dir(workspace_root())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let memory_mib = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024;
    Machine {
        date_utc: out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        kernel: out("uname", &["-r"]),
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_mib,
        commit: out("git", &["rev-parse", "--short", "HEAD"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_a_label_and_smoke_takes_every_path() {
        let labels: std::collections::HashSet<String> = Variant::ALL.iter().map(|v| v.label()).collect();
        assert_eq!(labels.len(), Variant::ALL.len());
        assert_eq!(Variant::ALL.iter().filter(|v| v.traced()).count(), 9);
        for v in [
            Variant::Untraced,
            Variant::Perf,
            Variant::Bpftrace,
            Variant::StacksEvery,
            Variant::StacksAdaptive,
        ] {
            assert!(Variant::SMOKE.contains(&v), "{v:?}");
        }
        assert!(Variant::SMOKE.iter().any(|v| matches!(v, Variant::AttachRawTp | Variant::AttachTpBtf)));
    }

    #[test]
    fn options_follow_the_binary() {
        let new = Caps { stacks_flag: true, journeys_flag: true, no_untraced_flag: true };
        assert_eq!(Variant::AttachPerf.options(&new).unwrap(), ["--attach", "perf", "--stacks", "none"]);
        assert_eq!(Variant::StacksAdaptive.options(&new).unwrap(), ["--stacks", "adaptive"]);
        assert!(Variant::Default.options(&new).unwrap().is_empty());
        assert_eq!(Variant::Bpftrace.options(&new).unwrap(), ["--untraced"]);
        assert_eq!(Variant::NoJourneys.options(&new).unwrap(), ["--no-journeys"]);
        assert_eq!(new.no_untraced(&["--stacks", "none"]), Some("--no-untraced"));
        assert_eq!(new.no_untraced(&["--untraced"]), None, "the two conflict");
        let old = Caps { stacks_flag: false, journeys_flag: false, no_untraced_flag: false };
        assert_eq!(old.no_untraced(&[]), None);
        assert_eq!(Variant::StacksNone.options(&old).unwrap(), ["--no-stacks"]);
        assert!(Variant::StacksEvery.options(&old).unwrap().is_empty());
        assert!(Variant::StacksAdaptive.options(&old).is_err());
        assert!(Variant::NoJourneys.options(&old).is_err());
    }

    #[test]
    fn cost_per_event_is_the_time_added_per_message_over_its_events() {
        // 40 000 → 20 000 msg/s: 25 µs added per message; over 14 events: ~1786 ns each.
        let ns = ns_per_event(20_000.0, 40_000.0, 14.0).unwrap();
        assert!((ns - 25_000.0 / 14.0).abs() < 1e-6, "{ns}");
        assert!(ns_per_event(40_000.0, 40_000.0, 14.0).unwrap().abs() < 1e-9);
        assert_eq!(ns_per_event(0.0, 40_000.0, 14.0), None);
        assert_eq!(ns_per_event(20_000.0, 40_000.0, 0.0), None);
    }

    #[test]
    fn rows_give_external_tracers_the_default_events_per_message() {
        let sample = |v: Variant, msgs: f64, epm: Option<f64>| Sample {
            mode: "normal".into(),
            variant: v,
            round: 1,
            msgs_per_s: msgs,
            messages: 1000,
            events: 1,
            events_per_s: 1.0,
            events_per_msg: epm,
            lost: 0,
            cpu_s: 0.0,
            peak_rss_kib: 0,
            attach_s: None,
        };
        let samples = [
            sample(Variant::Untraced, 40_000.0, None),
            sample(Variant::Default, 35_000.0, Some(14.0)),
            sample(Variant::Perf, 10_000.0, None),
        ];
        let vs = [Variant::Untraced, Variant::Default, Variant::Perf];
        let rows = rows(&["normal".into()], &vs, &samples);
        let perf = rows.iter().find(|r| r.variant == Variant::Perf).unwrap();
        assert_eq!(perf.events_per_msg, Some(14.0));
        assert!((perf.ns_per_event.unwrap() - 75_000.0 / 14.0).abs() < 1e-6);
        assert_eq!(rows[0].ns_per_event, None);
        assert!((rows[1].ratio_to_untraced.unwrap() - 0.875).abs() < 1e-12);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
