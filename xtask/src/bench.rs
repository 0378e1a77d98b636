//! `cargo xtask bench`: what tracing costs the datapath it measures, against the study's method.
//!
//! For each mode, interleaved round by round (A B C D A B C D …, the same workload and duration):
//! A the workload untraced, B dockertrace streaming with stacks, C dockertrace aggregate, D `perf
//! record -ae 'net:*' --call-graph fp` around an untraced run, E dockertrace without stacks, F
//! dockertrace aggregate with sampled stacks. Then a synthetic burst ladder (the
//! highest event rate traced for the step's length with zero loss) and one run per mode with the
//! kernel's per-program statistics. Results: `BENCHMARKS.md` and `BENCHMARKS.json`.
//!
//! Numbers are measured and reported, never asserted: only the smoke form checks that every row
//! was produced.
use std::{
    fmt::Write as _,
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use serde::Serialize;
use serde_json::Value;

use crate::{step, workspace_root};

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
    /// The CI form: one round of 2 s, a short ladder, results under target/bench-smoke; fails
    /// unless every row was produced.
    #[arg(long)]
    smoke: bool,
    /// Where BENCHMARKS.md and BENCHMARKS.json go (default: the workspace root; with --smoke,
    /// target/bench-smoke).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// The four ways a mode is run.
#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Variant {
    Untraced,
    Streaming,
    Aggregate,
    Perf,
    /// Streaming without stacks: separates the pipeline's cost from the kernel's stack unwinding.
    NoStacks,
    /// Aggregate with a stack for 1 in [`SAMPLE`] events: the cheapest way to get functions.
    AggregateSampled,
}

/// The `--stack-sample` of [`Variant::AggregateSampled`].
const SAMPLE: &str = "16";

impl Variant {
    const ALL: [Variant; 6] = [
        Variant::Untraced,
        Variant::Streaming,
        Variant::Aggregate,
        Variant::Perf,
        Variant::NoStacks,
        Variant::AggregateSampled,
    ];

    /// dockertrace traces this variant (rather than nothing, or perf).
    fn traced(self) -> bool {
        !matches!(self, Variant::Untraced | Variant::Perf)
    }

    fn label(self) -> &'static str {
        match self {
            Variant::Untraced => "untraced",
            Variant::Streaming => "dockertrace, streaming + stacks",
            Variant::Aggregate => "dockertrace --aggregate",
            Variant::Perf => "perf record -ae 'net:*' --call-graph fp",
            Variant::NoStacks => "dockertrace --no-stacks",
            Variant::AggregateSampled => "dockertrace --aggregate --stack-sample 16",
        }
    }
}

/// One run of one variant.
#[derive(Clone, Serialize)]
struct Sample {
    mode: String,
    variant: Variant,
    round: u32,
    msgs_per_s: f64,
    /// Events the tracer captured (perf: samples written, every net:* event of the machine).
    events: u64,
    events_per_s: f64,
    lost: u64,
    /// The tracer process's CPU time (user + system).
    cpu_s: f64,
    peak_rss_kib: u64,
    /// Loading and attaching (dockertrace only).
    attach_s: Option<f64>,
}

/// Medians over the rounds of one (mode, variant).
#[derive(Clone, Serialize)]
struct Row {
    mode: String,
    variant: Variant,
    label: &'static str,
    rounds: usize,
    msgs_per_s_median: f64,
    msgs_per_s_min: f64,
    msgs_per_s_max: f64,
    /// Median msg/s over the untraced median of the same mode.
    ratio_to_untraced: Option<f64>,
    events_per_s: f64,
    /// Summed over the rounds.
    lost: u64,
    cpu_s: f64,
    peak_rss_kib: u64,
    attach_s: Option<f64>,
}

#[derive(Clone, Serialize)]
struct BurstStep {
    /// The tracer took kernel stacks (the default) or not (`--no-stacks`).
    stacks: bool,
    target_datagrams_per_s: u64,
    datagrams_per_s: f64,
    /// The generator reached its target rate (within 5%).
    kept_up: bool,
    events: u64,
    events_per_s: f64,
    lost: u64,
    cpu_s: f64,
}

#[derive(Clone, Serialize)]
struct ProgramStat {
    mode: String,
    /// Measured in a run with kernel stacks (the default) or with `--no-stacks`.
    stacks: bool,
    program: String,
    runs: u64,
    avg_ns: f64,
}

#[derive(Serialize)]
struct Machine {
    date_utc: String,
    kernel: String,
    cpu: String,
    cpus: usize,
    memory_mib: u64,
    commit: String,
}

#[derive(Serialize)]
struct Results {
    machine: Machine,
    runtime: String,
    rounds: u32,
    duration_s: f64,
    burst_step_s: f64,
    samples: Vec<Sample>,
    rows: Vec<Row>,
    burst: Vec<BurstStep>,
    /// Highest events/s traced over a zero-loss ladder step.
    burst_max_zero_loss_events_per_s: Option<f64>,
    programs: Vec<ProgramStat>,
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
    let which =
        |p: &str| Command::new(p).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    which("perf").context("perf is not installed (apt-get install linux-perf)")?;
    let exe = workspace_root().join("target/release/dockertrace");
    let mut modes = vec!["normal".to_string(), "bridge".to_string()];
    for m in &args.mode {
        if !modes.contains(m) {
            modes.push(m.clone());
        }
    }
    let scratch = Scratch::new()?;
    let t0 = Instant::now();
    let runs = args.rounds as usize * modes.len() * Variant::ALL.len();
    step(&format!(
        "bench: {} rounds x {} modes x {} variants = {runs} runs of {} s, interleaved",
        args.rounds,
        modes.len(),
        Variant::ALL.len(),
        args.duration
    ));
    let mut samples = Vec::new();
    for round in 1..=args.rounds {
        for mode in &modes {
            for v in Variant::ALL {
                eprint!("xtask: bench: round {round}/{}: {mode}: {:<40}", args.rounds, v.label());
                let s = run_variant(&exe, &scratch, mode, &args.runtime, v, round, args.duration)
                    .with_context(|| format!("{mode}, {}, round {round}", v.label()))?;
                eprintln!(" {:>9.0} msg/s {:>10.0} events/s  lost {}", s.msgs_per_s, s.events_per_s, s.lost);
                samples.push(s);
            }
        }
    }
    let rows = rows(&modes, &samples);

    let mut programs = Vec::new();
    for mode in &modes {
        for stacks in [true, false] {
            step(&format!(
                "bench: {mode}: per-program statistics (--stats{})",
                if stacks { "" } else { " --no-stacks" }
            ));
            programs.extend(program_stats(&exe, &scratch, mode, &args.runtime, args.duration, stacks)?);
        }
    }

    let burst = if args.no_burst { Vec::new() } else { burst_ladder(&exe, &scratch, &args)? };
    let best = burst.iter().filter(|s| s.lost == 0).map(|s| s.events_per_s).reduce(f64::max);

    let results = Results {
        machine: machine(),
        runtime: args.runtime.clone(),
        rounds: args.rounds,
        duration_s: args.duration,
        burst_step_s: args.burst_step,
        samples,
        rows,
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
    fs::write(&md, markdown(&results)).with_context(|| format!("cannot write {}", md.display()))?;
    fs::write(&json, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("cannot write {}", json.display()))?;
    println!("{}", table(&results.rows));
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

/// The smoke check: every (mode, variant) row, with the figures it exists for.
fn check_complete(r: &Results, modes: &[String], burst: bool) -> Result<()> {
    let mut missing = Vec::new();
    for mode in modes {
        for v in Variant::ALL {
            match r.rows.iter().find(|row| &row.mode == mode && row.variant == v) {
                None => missing.push(format!("{mode}/{}: no row", v.label())),
                Some(row) if row.msgs_per_s_median <= 0.0 => {
                    missing.push(format!("{mode}/{}: no workload messages", v.label()))
                }
                Some(row) if v != Variant::Untraced && row.events_per_s <= 0.0 => {
                    missing.push(format!("{mode}/{}: no events captured", v.label()))
                }
                Some(row) if v.traced() && row.attach_s.is_none() => {
                    missing.push(format!("{mode}/{}: no tracer cost recorded", v.label()))
                }
                Some(_) => {}
            }
        }
        if !r.programs.iter().any(|p| &p.mode == mode && p.runs > 0) {
            missing.push(format!("{mode}: no per-program statistics"));
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

/// Runs dockertrace with `args`, stdout discarded; fails with its stderr.
fn dockertrace(exe: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
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

fn run_variant(
    exe: &Path,
    scratch: &Scratch,
    mode: &str,
    runtime: &str,
    v: Variant,
    round: u32,
    duration: f64,
) -> Result<Sample> {
    let rec = scratch.file("run.json");
    let rec_s = rec.to_str().context("non-UTF-8 scratch path")?;
    let dur = duration.to_string();
    let mut a = vec!["--mode", mode, "--runtime", runtime, "--duration", &dur, "--quiet", "--record", rec_s];
    let mut perf = None;
    match v {
        Variant::Untraced => a.push("--untraced"),
        Variant::Streaming => {}
        Variant::Aggregate => a.push("--aggregate"),
        Variant::NoStacks => a.push("--no-stacks"),
        Variant::AggregateSampled => a.extend(["--aggregate", "--stack-sample", SAMPLE]),
        Variant::Perf => {
            a.push("--untraced");
            perf = Some(Perf::start(&scratch.file("perf.data"))?);
        }
    }
    let ran = dockertrace(exe, &a);
    let perf = match perf {
        Some(p) => Some(p.stop()?),
        None => None,
    };
    ran?;
    let run = read_recording(&rec)?;
    let msgs_per_s =
        f64_at(&run, &["workload", "msgs_per_s"]).context("the recording has no workload figures")?;
    let run_s = f64_at(&run, &["duration_s"]).unwrap_or(duration).max(1e-3);
    let mut s = Sample {
        mode: mode.to_string(),
        variant: v,
        round,
        msgs_per_s,
        events: 0,
        events_per_s: 0.0,
        lost: 0,
        cpu_s: 0.0,
        peak_rss_kib: 0,
        attach_s: None,
    };
    match (v, perf) {
        (Variant::Perf, Some(p)) => {
            s.events = p.samples;
            s.events_per_s = p.samples as f64 / p.wall_s.max(1e-3);
            s.lost = p.lost;
            s.cpu_s = p.cpu_s;
            s.peak_rss_kib = p.peak_rss_kib;
        }
        (v, _) if v.traced() => {
            s.events = events_of(&run);
            s.events_per_s = s.events as f64 / run_s;
            s.lost = u64_at(&run, &["counters", "ring_full"]) + u64_at(&run, &["counters", "agg_full"]);
            s.cpu_s = f64_at(&run, &["tracer", "cpu_s"]).unwrap_or(0.0);
            s.peak_rss_kib = u64_at(&run, &["tracer", "peak_rss_kib"]);
            s.attach_s = f64_at(&run, &["tracer", "attach_s"]);
        }
        _ => {}
    }
    Ok(s)
}

/// A `perf record` of the whole machine, as the study ran it.
struct Perf {
    pid: libc::pid_t,
    err: PathBuf,
    data: PathBuf,
    started: Instant,
}

struct PerfResult {
    samples: u64,
    lost: u64,
    wall_s: f64,
    cpu_s: f64,
    peak_rss_kib: u64,
}

impl Perf {
    fn start(data: &Path) -> Result<Perf> {
        let err = data.with_extension("stderr");
        let child = Command::new("perf")
            .args(["record", "-a", "-e", "net:*", "--call-graph", "fp", "-o"])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err)?)
            .spawn()
            .context("cannot start perf")?;
        let pid = child.id() as libc::pid_t;
        // The child is reaped with wait4 (for its rusage), not through `Child`.
        std::mem::forget(child);
        let perf = Perf { pid, err, data: data.to_path_buf(), started: Instant::now() };
        // perf writes its header once its events are open; give it that long (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && fs::metadata(data).map(|m| m.len() == 0).unwrap_or(true) {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(perf)
    }

    /// SIGINT (perf's normal stop), then reap it and read what it wrote.
    fn stop(self) -> Result<PerfResult> {
        let wall_s = self.started.elapsed().as_secs_f64();
        // SAFETY: signalling and reaping our own child by pid.
        let (status, ru) = unsafe {
            libc::kill(self.pid, libc::SIGINT);
            let mut status = 0;
            let mut ru: libc::rusage = std::mem::zeroed();
            libc::wait4(self.pid, &mut status, 0, &mut ru);
            (status, ru)
        };
        let mut err = String::new();
        fs::File::open(&self.err).and_then(|mut f| f.read_to_string(&mut err)).ok();
        let _ = fs::remove_file(&self.err);
        let _ = fs::remove_file(&self.data);
        let _ = fs::remove_file(self.data.with_extension("data.old"));
        let Some((samples, lost)) = parse_perf_stderr(&err) else {
            bail!("perf record did not report its samples (status {status}): {}", err.trim());
        };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Ok(PerfResult {
            samples,
            lost,
            wall_s,
            cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
            peak_rss_kib: ru.ru_maxrss as u64,
        })
    }
}

/// `perf record`'s closing lines: "… wrote 38.9 MB f (165989 samples) ]" and, when it lost
/// some, "Processed 182080 samples and lost 8.84%!". Returns (samples written, samples lost).
fn parse_perf_stderr(err: &str) -> Option<(u64, u64)> {
    // perf leaves the "(N samples)" out when there were none.
    let samples = err.lines().find(|l| l.contains("perf record: Captured and wrote")).map(|l| {
        l.rsplit_once('(')
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    })?;
    let processed = err.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("Processed ")?;
        let (n, tail) = rest.split_once(' ')?;
        tail.starts_with("samples and lost").then(|| n.parse::<u64>().ok()).flatten()
    });
    Some((samples, processed.map_or(0, |p| p.saturating_sub(samples))))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn rows(modes: &[String], samples: &[Sample]) -> Vec<Row> {
    let mut rows = Vec::new();
    for mode in modes {
        let mut base = None;
        for v in Variant::ALL {
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
                lost: of.iter().map(|s| s.lost).sum(),
                cpu_s: pick(|s| s.cpu_s),
                peak_rss_kib: of.iter().map(|s| s.peak_rss_kib).max().unwrap_or(0),
                attach_s: (!attach.is_empty()).then(|| median(&mut attach.clone())),
            });
        }
    }
    rows
}

fn program_stats(
    exe: &Path,
    scratch: &Scratch,
    mode: &str,
    runtime: &str,
    duration: f64,
    stacks: bool,
) -> Result<Vec<ProgramStat>> {
    let rec = scratch.file("stats.json");
    let dur = duration.to_string();
    let mut a = vec![
        "--mode",
        mode,
        "--runtime",
        runtime,
        "--duration",
        &dur,
        "--quiet",
        "--stats",
        "--record",
        rec.to_str().unwrap_or_default(),
    ];
    if !stacks {
        a.push("--no-stacks");
    }
    dockertrace(exe, &a)?;
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

/// Datagrams per second of the ladder's steps (a loopback datagram makes ~6 net:* events).
const LADDER: &[u64] = &[25_000, 50_000, 100_000, 150_000, 200_000, 250_000, 300_000];

/// Traces loopback (streaming; with stacks, then without) while `workload burst` sends at
/// rising rates; each series stops at the first step that loses events or that the generator
/// cannot reach (the kernel-side cost of tracing is charged to the sender).
fn burst_ladder(exe: &Path, scratch: &Scratch, args: &BenchArgs) -> Result<Vec<BurstStep>> {
    let ladder = if args.smoke { &LADDER[..2] } else { LADDER };
    let mut steps = Vec::new();
    for stacks in [true, false] {
        for &rate in ladder {
            eprint!(
                "xtask: bench: burst{} {rate} datagrams/s for {} s:",
                if stacks { "" } else { " (--no-stacks)" },
                args.burst_step
            );
            let s = burst_step(exe, scratch, rate, args.burst_step, stacks)?;
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

fn burst_step(exe: &Path, scratch: &Scratch, rate: u64, secs: f64, stacks: bool) -> Result<BurstStep> {
    let rec = scratch.file("burst.json");
    let err_path = scratch.file("burst-trace.stderr");
    let mut tracer = Command::new(exe)
        .args(["trace", "--dev", "lo", "--quiet", "--record"])
        .arg(&rec)
        .args(if stacks { None } else { Some("--no-stacks") })
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
    let out = Command::new(exe)
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

fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| mode | variant | msg/s median | spread (min–max) | vs untraced | events/s | lost | tracer CPU s | peak RSS MiB | attach s |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let dash = || "–".to_string();
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.0}–{:.0} | {} | {} | {} | {} | {} | {} |",
            r.mode,
            r.label,
            r.msgs_per_s_median,
            r.msgs_per_s_min,
            r.msgs_per_s_max,
            r.ratio_to_untraced.map_or_else(dash, |x| format!("{:.1}%", x * 100.0)),
            if r.variant == Variant::Untraced { dash() } else { format!("{:.0}", r.events_per_s) },
            if r.variant == Variant::Untraced { dash() } else { r.lost.to_string() },
            if r.variant == Variant::Untraced { dash() } else { format!("{:.2}", r.cpu_s) },
            if r.variant == Variant::Untraced {
                dash()
            } else {
                format!("{:.1}", r.peak_rss_kib as f64 / 1024.0)
            },
            r.attach_s.map_or_else(dash, |a| format!("{a:.2}")),
        );
    }
    s
}

/// The issue's targets against what was measured (reported, not asserted).
fn targets(r: &Results) -> String {
    let mut s = String::from("| target | measured | met |\n|---|---|:-:|\n");
    let mut line = |t: &str, m: String, ok: bool| {
        let _ = writeln!(s, "| {t} | {m} | {} |", if ok { "yes" } else { "**no**" });
    };
    let row = |mode: &str, v: Variant| r.rows.iter().find(|x| x.mode == mode && x.variant == v);
    let modes: Vec<&str> = {
        let mut m: Vec<&str> = r.rows.iter().map(|x| x.mode.as_str()).collect();
        m.dedup();
        m
    };
    for mode in &modes {
        let (Some(st), Some(ag), Some(pf)) =
            (row(mode, Variant::Streaming), row(mode, Variant::Aggregate), row(mode, Variant::Perf))
        else {
            continue;
        };
        let pct = |x: Option<f64>| x.map_or("?".into(), |x| format!("{:.1}%", x * 100.0));
        line(
            &format!("{mode}: streaming with stacks keeps ≥ 90% of untraced msg/s"),
            pct(st.ratio_to_untraced),
            st.ratio_to_untraced.is_some_and(|x| x >= 0.90),
        );
        line(
            &format!("{mode}: aggregate keeps ≥ 97% of untraced msg/s"),
            pct(ag.ratio_to_untraced),
            ag.ratio_to_untraced.is_some_and(|x| x >= 0.97),
        );
        if let Some(sa) = row(mode, Variant::AggregateSampled) {
            line(
                &format!("{mode}: aggregate keeps ≥ 97% of untraced msg/s, with --stack-sample {SAMPLE}"),
                pct(sa.ratio_to_untraced),
                sa.ratio_to_untraced.is_some_and(|x| x >= 0.97),
            );
        }
        line(
            &format!("{mode}: both lose less than perf in the same run"),
            format!("streaming {}, aggregate {}, perf {}", st.lost, ag.lost, pf.lost),
            (st.lost < pf.lost && ag.lost < pf.lost) || (st.lost == 0 && ag.lost == 0 && pf.lost == 0),
        );
        line(
            &format!("{mode}: 0 lost events at the default workload"),
            format!("streaming {}, aggregate {}", st.lost, ag.lost),
            st.lost == 0 && ag.lost == 0,
        );
    }
    let rss = r.rows.iter().filter(|x| x.attach_s.is_some()).map(|x| x.peak_rss_kib).max().unwrap_or(0);
    line("peak RSS < 64 MiB", format!("{:.1} MiB", rss as f64 / 1024.0), rss < 64 * 1024);
    let attach = r.rows.iter().filter_map(|x| x.attach_s).fold(0.0, f64::max);
    line("attach < 1 s", format!("{attach:.2} s"), attach < 1.0);
    for stacks in [true, false] {
        let series: Vec<&BurstStep> = r.burst.iter().filter(|b| b.stacks == stacks).collect();
        let Some(last) = series.last() else { continue };
        let best = series.iter().filter(|b| b.lost == 0).map(|b| b.events_per_s).reduce(f64::max);
        let why = if last.lost > 0 {
            format!("; lost {} at {} datagrams/s", last.lost, last.target_datagrams_per_s)
        } else if !last.kept_up {
            format!(
                "; then the sender could not reach {} datagrams/s (no loss): the tracing cost charged \
                 to the sending CPUs is the limit",
                last.target_datagrams_per_s
            )
        } else {
            "; the ladder's top step".into()
        };
        line(
            &format!(
                "≥ 1 M events/s sustained without loss ({})",
                if stacks { "stacks" } else { "--no-stacks" }
            ),
            format!("{}{why}", best.map_or("none".into(), |b| format!("{:.2} M events/s", b / 1e6))),
            best.is_some_and(|b| b >= 1e6),
        );
    }
    s
}

fn markdown(r: &Results) -> String {
    let m = &r.machine;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Benchmarks\n\n\
         Written by `cargo xtask bench` (do not edit by hand). Each mode was run {} rounds, \
         interleaved (untraced, dockertrace streaming, dockertrace aggregate, perf, dockertrace \
         --no-stacks, dockertrace --aggregate --stack-sample {SAMPLE}; then again), \
         with the default echo workload for {} s per run, runtime `{}`.\n\n\
         - date: {}\n- machine: {} ({} CPUs, {} MiB)\n- kernel: {}\n- commit: {}\n\n\
         What the numbers mean, where the time goes and what was done about it: \
         [docs/performance.md](docs/performance.md).\n",
        r.rounds, r.duration_s, r.runtime, m.date_utc, m.cpu, m.cpus, m.memory_mib, m.kernel, m.commit
    );
    let _ = writeln!(
        s,
        "## Workload throughput and tracer cost\n\n{}\n\
         msg/s is the workload's echoed messages per second (median over the rounds; spread is \
         min–max). dockertrace's events/s are the workload's own events (filtered in the kernel); \
         perf's are every `net:*` event of the machine from its start to its stop (the study's \
         method). Lost: events that never reached userspace, summed over the rounds. Tracer CPU \
         is the tracer process's user + system time; the eBPF programs' own time is charged to \
         the traffic and shows in the msg/s ratio and the per-program table below.\n",
        table(&r.rows)
    );
    let _ = writeln!(s, "## Targets (measured, not asserted)\n\n{}", targets(r));
    if !r.burst.is_empty() {
        let _ = writeln!(
            s,
            "## Burst ladder\n\n`dockertrace trace --dev lo` (streaming, stacks) while `dockertrace workload \
             burst` sends UDP datagrams over loopback at each rate for {} s; the ladder stops at the \
             first loss or when the generator cannot reach its rate.\n\n\
             | stacks | datagrams/s asked | sent | events/s traced | lost | tracer CPU s |\n|---|---:|---:|---:|---:|---:|",
            r.burst_step_s
        );
        for b in &r.burst {
            let _ = writeln!(
                s,
                "| {} | {} | {:.0}{} | {:.0} | {} | {:.2} |",
                if b.stacks { "yes" } else { "no" },
                b.target_datagrams_per_s,
                b.datagrams_per_s,
                if b.kept_up { "" } else { " (below target)" },
                b.events_per_s,
                b.lost,
                b.cpu_s
            );
        }
        let _ = writeln!(
            s,
            "\nHighest zero-loss rate: {}.\n",
            r.burst_max_zero_loss_events_per_s.map_or("none".into(), |b| format!("{b:.0} events/s"))
        );
    }
    if !r.programs.is_empty() {
        let _ = writeln!(
            s,
            "## Per-program cost (`--stats`, kernel.bpf_stats_enabled)\n\n\
             One streaming run per mode with stacks and one without (the difference is the \
             kernel's stack unwinding, `bpf_get_stackid`); programs that ran, most total time \
             first.\n\n\
             | mode | stacks | program | runs | avg ns/run |\n|---|---|---|---:|---:|"
        );
        for p in &r.programs {
            let _ = writeln!(
                s,
                "| {} | {} | `{}` | {} | {:.0} |",
                p.mode,
                if p.stacks { "yes" } else { "no" },
                p.program,
                p.runs,
                p.avg_ns
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_variant_label_names_its_sample() {
        assert!(Variant::AggregateSampled.label().ends_with(&format!("--stack-sample {SAMPLE}")));
        assert_eq!(Variant::ALL.iter().filter(|v| v.traced()).count(), 4);
    }

    #[test]
    fn perf_closing_lines_give_samples_and_losses() {
        let lossy = "[ perf record: Woken up 19412 times to write data ]\nWarning:\n\
                     Processed 182080 samples and lost 8.84%!\n\n\
                     [ perf record: Captured and wrote 38.901 MB /tmp/p.data (165989 samples) ]\n";
        assert_eq!(parse_perf_stderr(lossy), Some((165989, 16091)));
        let clean = "[ perf record: Woken up 1 times to write data ]\n\
                     [ perf record: Captured and wrote 0.024 MB /tmp/p.data (12 samples) ]\n";
        assert_eq!(parse_perf_stderr(clean), Some((12, 0)));
        let none = "[ perf record: Captured and wrote 0.024 MB /tmp/p.data ]\n";
        assert_eq!(parse_perf_stderr(none), Some((0, 0)));
        assert_eq!(parse_perf_stderr("perf: interrupted"), None);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
