//! Offline commands on recordings: `report`, `diff`, `import`.
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use super::junit;
use super::outputs::{check_dir, check_file, present, present_as, Format, OutputArgs};
use crate::{
    compare::{ModeReport, Phase},
    recording::{ModeRun, Recording},
    render::{ladders::ns, style::Style},
};

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// Recordings (from `--record` or `dockertrace import`).
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// What to print: text tables, Markdown for a CI job's summary (`$GITHUB_STEP_SUMMARY`),
    /// or one JSON document (docs/json-schema.md, "Summary").
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Join two hosts' recordings of the same traffic (`dockertrace trace --record` on each,
    /// at the same time) into one journey per packet across both: the hosts' clock offset,
    /// estimated from request/response pairs, and per direction one hop ladder with the wire
    /// time between the hosts (docs/journeys.md, "Two machines"). Text or `--format json`.
    #[arg(long)]
    pub stitch: bool,
    #[command(flatten)]
    pub out: OutputArgs,
}

fn load_runs(files: &[PathBuf]) -> anyhow::Result<Vec<ModeRun>> {
    let mut runs = Vec::new();
    for f in files {
        runs.extend(Recording::load(f)?.runs);
    }
    Ok(runs)
}

/// `dockertrace report FILE...`
pub fn report(args: ReportArgs) -> anyhow::Result<()> {
    if args.stitch {
        return stitch(&args);
    }
    args.out.check()?;
    let runs = load_runs(&args.files)?;
    let names: Vec<String> = args.files.iter().map(|f| f.display().to_string()).collect();
    let title = format!("dockertrace: {}", names.join(", "));
    present_as(&runs, Vec::new(), &args.out, Style::for_stdout(), args.format, &title)
}

/// `dockertrace report --stitch A B`
fn stitch(args: &ReportArgs) -> anyhow::Result<()> {
    let [a, b] = args.files.as_slice() else {
        anyhow::bail!("--stitch joins two recordings, one per host (got {})", args.files.len());
    };
    anyhow::ensure!(
        args.out.svg.is_none() && args.out.html.is_none(),
        "--stitch prints a ladder per direction (text or --format json); it writes no --svg or --html"
    );
    anyhow::ensure!(args.format != Format::Markdown, "--stitch prints text or --format json, not Markdown");
    let load = |f: &PathBuf| -> anyhow::Result<(String, crate::packet_log::PacketLog, crate::names::Names)> {
        let name = f.display().to_string();
        let mut runs = Recording::load(f)?.runs;
        anyhow::ensure!(
            runs.len() == 1,
            "{name} holds {} runs: --stitch takes one `dockertrace trace --record` recording per host",
            runs.len()
        );
        let run = runs.remove(0);
        let Some(log) = run.packets else {
            anyhow::bail!(
                "{name} has no packet log: record it with `dockertrace trace --record` (journeys on, not --aggregate)"
            );
        };
        Ok((name, log, run.names))
    };
    let (na, la, ma) = load(a)?;
    let (nb, lb, mb) = load(b)?;
    let (sa, sb) = (
        crate::stitch::Side { name: na, log: &la, names: &ma },
        crate::stitch::Side { name: nb, log: &lb, names: &mb },
    );
    let r = crate::stitch::stitch(&sa, &sb)?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&r)?),
        _ => print!("{}", crate::stitch::render(&r)),
    }
    Ok(())
}

/// A change `diff --fail-on` can guard against.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Kernel functions appearing or vanishing.
    Functions,
    /// Kernel events per message moving past --threshold.
    EventsPerMsg,
    /// Workload messages per second moving past --threshold (the untraced phase's when both
    /// recordings have one, else the traced figures).
    MsgsPerS,
    /// Devices appearing or vanishing, by name (`eth0@server`, `veth(server)@host`; devices
    /// of unnamed namespaces by their own name only, as inodes change every run).
    Devices,
    /// A hop ladder's sequence of (event, device name) changing, or a direction's ladder
    /// appearing or vanishing.
    Hops,
    /// A ladder's one-way time or a hop's p50 time from the previous hop moving past
    /// --threshold (and by at least 1 µs).
    HopLatency,
}

#[derive(Args, Debug, Clone)]
pub struct DiffArgs {
    /// The reference recording.
    pub a: PathBuf,
    /// The recording to compare with it.
    pub b: PathBuf,
    /// Exit with code 3 when one of these changes (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "CHANGE")]
    pub fail_on: Vec<Change>,
    /// Relative change (percent) that counts for events-per-msg, msgs-per-s and hop-latency.
    #[arg(long, value_name = "PCT", default_value_t = 10.0, value_parser = parse_threshold)]
    pub threshold: f64,
    /// Functions seen less often than this per workload message (in the run that has them)
    /// do not count for `--fail-on functions`: they come and go between runs (docs/ci.md).
    #[arg(long, value_name = "PER_MSG", default_value_t = FUNCTION_FLOOR_PER_MSG, value_parser = parse_floor)]
    pub function_floor: f64,
    /// Also write a differential flame graph per compared mode into DIR.
    #[arg(long, value_name = "DIR")]
    pub svg: Option<PathBuf>,
    /// Also write a JUnit XML report to FILE: one test suite per compared mode, one test case
    /// per --fail-on property, failures carrying the reasons and the mode's diff (for CI).
    #[arg(long, value_name = "FILE", requires = "fail_on")]
    pub junit: Option<PathBuf>,
}

/// `--threshold PCT`: a non-negative, finite percentage (else a usage error, exit 2).
fn parse_threshold(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("`{s}` is not a non-negative percentage")),
    }
}

/// `--function-floor PER_MSG`: a non-negative, finite rate.
fn parse_floor(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("`{s}` is not a non-negative rate per message")),
    }
}

/// Exit code of `diff --fail-on` when a guarded change happened.
pub const EXIT_CHANGED: i32 = super::exit::GUARD_TRIPPED;

/// What changed between two runs of one mode.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDiff {
    pub mode: String,
    /// Functions only in the second run, only in the first, seen at least
    /// [`FUNCTION_FLOOR_PER_MSG`] times per workload message (or without a workload).
    pub appeared: Vec<String>,
    pub vanished: Vec<String>,
    /// The same below the floor: ACK timing, timers and IPv6 router solicitations put such
    /// functions on a few stacks of one run and not of the next. Shown, never guarded.
    pub appeared_rare: Vec<String>,
    pub vanished_rare: Vec<String>,
    /// Devices (by [`crate::compare::DeviceCount::key`]) only in the second run, only in the first.
    pub devices_appeared: Vec<String>,
    pub devices_vanished: Vec<String>,
    /// (before, after, percent change)
    pub events_per_msg: Option<(f64, f64, f64)>,
    pub msgs_per_s: Option<(f64, f64, f64)>,
    /// Which phase `msgs_per_s` compares: untraced when both runs have an untraced phase.
    pub msgs_phase: Phase,
    /// The tracer's cost per event in ns, when both runs have it.
    pub ns_per_event: Option<(f64, f64, f64)>,
    /// The hop ladders, direction by direction (empty unless both runs have journeys).
    pub ladders: Vec<LadderDiff>,
    /// Drops per `reason at function` whose count changed: (site, before, after); benign
    /// drops left out.
    pub drops: Vec<(String, u64, u64)>,
}

/// Drops per `REASON in function`, benign ones left out.
fn drop_sites(m: &ModeReport) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for d in m.drops.iter().filter(|d| !d.benign) {
        *out.entry(format!("{} in {}", d.reason, d.function)).or_default() += d.count;
    }
    out
}

/// How one direction's hop ladder changed.
#[derive(Debug, Clone, PartialEq)]
pub struct LadderDiff {
    pub direction: String,
    /// The hops as `event dev` ([`crate::journeys::LadderHop::identity`]: inodes and generated
    /// names differ between runs), before and after; empty when the direction has no ladder on
    /// that side.
    pub before: Vec<String>,
    pub after: Vec<String>,
    /// One-way p50 (ns) before, after, percent change.
    pub one_way: Option<(u64, u64, f64)>,
    /// Hops of an unchanged sequence whose p50 time from the previous hop changed: (index,
    /// `event dev`, before ns, after ns, percent).
    pub hops: Vec<(usize, String, u64, u64, f64)>,
}

impl LadderDiff {
    pub fn same_hops(&self) -> bool {
        self.before == self.after
    }
}

/// Latency changes smaller than this (ns) never count: a few hundred ns come and go.
pub const HOP_LATENCY_FLOOR_NS: u64 = 1_000;

fn hop_names(d: &crate::journeys::DirectionLadder) -> Vec<String> {
    d.hops.iter().map(crate::journeys::LadderHop::identity).collect()
}

/// The ladders of two runs compared direction by direction.
pub fn diff_ladders(
    a: Option<&crate::journeys::JourneyReport>,
    b: Option<&crate::journeys::JourneyReport>,
) -> Vec<LadderDiff> {
    let (Some(a), Some(b)) = (a, b) else { return Vec::new() };
    let mut names: Vec<&str> = a.directions.iter().map(|d| d.direction.as_str()).collect();
    for d in &b.directions {
        if !names.contains(&d.direction.as_str()) {
            names.push(&d.direction);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let x = a.directions.iter().find(|d| d.direction == name);
            let y = b.directions.iter().find(|d| d.direction == name);
            let (before, after) =
                (x.map(hop_names).unwrap_or_default(), y.map(hop_names).unwrap_or_default());
            let one_way = x.zip(y).filter(|(x, y)| !x.hops.is_empty() && !y.hops.is_empty()).map(|(x, y)| {
                (x.one_way_p50_ns, y.one_way_p50_ns, pct(x.one_way_p50_ns as f64, y.one_way_p50_ns as f64))
            });
            let mut hops = Vec::new();
            if let (Some(x), Some(y)) = (x, y) {
                if before == after {
                    for (i, (h, k)) in x.hops.iter().zip(&y.hops).enumerate().skip(1) {
                        let p = pct(h.delta_p50_ns as f64, k.delta_p50_ns as f64);
                        hops.push((i, before[i].clone(), h.delta_p50_ns, k.delta_p50_ns, p));
                    }
                }
            }
            LadderDiff { direction: name.to_owned(), before, after, one_way, hops }
        })
        .collect()
}

/// Whether a latency change counts: past the threshold and by at least the floor.
fn latency_moved(a: u64, b: u64, p: f64, threshold: f64) -> bool {
    p.abs() > threshold && a.abs_diff(b) >= HOP_LATENCY_FLOOR_NS
}

fn pct(a: f64, b: f64) -> f64 {
    if a == 0.0 {
        if b == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (b - a) / a * 100.0
    }
}

/// Functions seen less often than this per workload message, in the run that has them, come
/// and go between runs of the same machine (docs/ci.md measured up to 0.03: delayed ACKs sent
/// from `tcp_recvmsg`, timers); a function on the workload's datapath runs about once per
/// message or more.
pub const FUNCTION_FLOOR_PER_MSG: f64 = 0.05;

/// The functions of `x` that `y` lacks, split at `floor` per message: (at or above, below).
fn function_changes(x: &ModeReport, y: &ModeReport, floor: f64) -> (Vec<String>, Vec<String>) {
    let other: std::collections::BTreeSet<&str> = y.functions.iter().map(|f| f.name.as_str()).collect();
    let mut only: Vec<&crate::compare::Rate> =
        x.functions.iter().filter(|f| !other.contains(f.name.as_str())).collect();
    only.sort_by(|p, q| p.name.cmp(&q.name));
    let (common, rare): (Vec<_>, Vec<_>) =
        only.into_iter().partition(|f| f.per_msg.is_none_or(|r| r >= floor));
    (common.into_iter().map(|f| f.name.clone()).collect(), rare.into_iter().map(|f| f.name.clone()).collect())
}

/// Compares two runs of one mode.
pub fn diff_runs(a: &ModeReport, b: &ModeReport) -> RunDiff {
    diff_runs_with(a, b, FUNCTION_FLOOR_PER_MSG)
}

/// [`diff_runs`] with functions below `floor` per message not guarded (`--function-floor`).
pub fn diff_runs_with(a: &ModeReport, b: &ModeReport, floor: f64) -> RunDiff {
    let (appeared, appeared_rare) = function_changes(b, a, floor);
    let (vanished, vanished_rare) = function_changes(a, b, floor);
    let both = |x: Option<f64>, y: Option<f64>| x.zip(y).map(|(x, y)| (x, y, pct(x, y)));
    // Devices by name, not by inode: inodes (and Docker's veth names) change every run.
    let da: std::collections::BTreeSet<&str> = a.devices.iter().map(|d| d.key.as_str()).collect();
    let db: std::collections::BTreeSet<&str> = b.devices.iter().map(|d| d.key.as_str()).collect();
    RunDiff {
        mode: if a.mode == b.mode { a.mode.clone() } else { format!("{} → {}", a.mode, b.mode) },
        appeared,
        vanished,
        appeared_rare,
        vanished_rare,
        devices_appeared: db.difference(&da).map(|s| (*s).to_owned()).collect(),
        devices_vanished: da.difference(&db).map(|s| (*s).to_owned()).collect(),
        events_per_msg: both(a.events_per_msg, b.events_per_msg),
        msgs_per_s: match (&a.untraced, &b.untraced) {
            (Some(x), Some(y)) => both(Some(x.msgs_per_s), Some(y.msgs_per_s)),
            _ => both(a.msgs_per_s, b.msgs_per_s),
        },
        msgs_phase: if a.untraced.is_some() && b.untraced.is_some() {
            Phase::Untraced
        } else {
            Phase::Traced
        },
        ns_per_event: both(
            a.workload_cost.as_ref().and_then(|c| c.ns_per_event),
            b.workload_cost.as_ref().and_then(|c| c.ns_per_event),
        ),
        ladders: diff_ladders(a.journeys.as_ref(), b.journeys.as_ref()),
        drops: {
            let (x, y) = (drop_sites(a), drop_sites(b));
            let sites: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            sites
                .into_iter()
                .map(|s| (s.clone(), x.get(s).copied().unwrap_or(0), y.get(s).copied().unwrap_or(0)))
                .filter(|(_, p, q)| p != q)
                .collect()
        },
    }
}

/// The reasons `--fail-on` fires, one line each.
pub fn violations(d: &RunDiff, fail_on: &[Change], threshold: f64) -> Vec<String> {
    let mut v = Vec::new();
    for c in fail_on {
        match c {
            Change::Functions if !d.appeared.is_empty() || !d.vanished.is_empty() => v.push(format!(
                "{}: kernel functions changed (+{} −{})",
                d.mode,
                d.appeared.len(),
                d.vanished.len()
            )),
            Change::Devices if !d.devices_appeared.is_empty() || !d.devices_vanished.is_empty() => {
                v.push(format!(
                    "{}: devices changed (+{} −{})",
                    d.mode,
                    d.devices_appeared.len(),
                    d.devices_vanished.len()
                ))
            }
            Change::EventsPerMsg => {
                if let Some((a, b, p)) = d.events_per_msg.filter(|e| e.2.abs() > threshold) {
                    v.push(format!("{}: events per message {a:.2} → {b:.2} ({p:+.1}%)", d.mode));
                }
            }
            Change::MsgsPerS => {
                if let Some((a, b, p)) = d.msgs_per_s.filter(|e| e.2.abs() > threshold) {
                    v.push(format!("{}: msg/s ({}) {a:.0} → {b:.0} ({p:+.1}%)", d.mode, d.msgs_phase.name()));
                }
            }
            Change::Hops => {
                for l in d.ladders.iter().filter(|l| !l.same_hops()) {
                    v.push(format!(
                        "{}: {} hop ladder changed ({} hops → {})",
                        d.mode,
                        l.direction,
                        l.before.len(),
                        l.after.len()
                    ));
                }
            }
            Change::HopLatency => {
                for l in &d.ladders {
                    if let Some((a, b, p)) =
                        l.one_way.filter(|(a, b, p)| latency_moved(*a, *b, *p, threshold))
                    {
                        v.push(format!(
                            "{}: {} one-way time p50 {} → {} ({p:+.1}%)",
                            d.mode,
                            l.direction,
                            ns(a),
                            ns(b)
                        ));
                    }
                    for (i, hop, a, b, p) in l.hops.iter().filter(|h| latency_moved(h.2, h.3, h.4, threshold))
                    {
                        v.push(format!(
                            "{}: {} hop {i} ({hop}) p50 {} → {} ({p:+.1}%)",
                            d.mode,
                            l.direction,
                            ns(*a),
                            ns(*b)
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    v
}

/// Pairs the runs of two recordings: by mode name, or the single runs of each.
fn pair<'a>(a: &'a [ModeRun], b: &'a [ModeRun]) -> Vec<(&'a ModeRun, &'a ModeRun)> {
    if a.len() == 1 && b.len() == 1 {
        return vec![(&a[0], &b[0])];
    }
    a.iter().filter_map(|x| b.iter().find(|y| y.mode == x.mode).map(|y| (x, y))).collect()
}

/// The modes of one recording that the other lacks (none when both hold a single run: those
/// are compared whatever their names).
fn unpaired<'a>(a: &'a [ModeRun], b: &[ModeRun]) -> Vec<&'a str> {
    if a.len() == 1 && b.len() == 1 {
        return Vec::new();
    }
    a.iter().filter(|x| !b.iter().any(|y| y.mode == x.mode)).map(|x| x.mode.as_str()).collect()
}

/// The name `--fail-on` gives a change (`hop-latency`).
pub fn change_name(c: Change) -> String {
    clap::ValueEnum::to_possible_value(&c).map_or_else(|| format!("{c:?}"), |v| v.get_name().to_owned())
}

/// `dockertrace diff A B`; returns the exit code.
pub fn diff(args: DiffArgs) -> anyhow::Result<i32> {
    if let Some(dir) = &args.svg {
        check_dir("--svg", dir)?;
    }
    if let Some(file) = &args.junit {
        check_file("--junit", file)?;
    }
    let (ra, rb) = (Recording::load(&args.a)?, Recording::load(&args.b)?);
    let pairs = pair(&ra.runs, &rb.runs);
    anyhow::ensure!(
        !pairs.is_empty(),
        "{} and {} have no mode in common (modes: {} / {})",
        args.a.display(),
        args.b.display(),
        ra.runs.iter().map(|r| r.mode.as_str()).collect::<Vec<_>>().join(", "),
        rb.runs.iter().map(|r| r.mode.as_str()).collect::<Vec<_>>().join(", ")
    );
    let style = Style::for_stdout();
    let mut failures = Vec::new();
    let mut cases = Vec::new();
    for (x, y) in pairs {
        let d = diff_runs_with(&ModeReport::from_run(x, 0), &ModeReport::from_run(y, 0), args.function_floor);
        print!("{}", render_run_diff(&d, &args, style));
        if let Some(dir) = &args.svg {
            write_diff_svg(dir, x, y, &d.mode, &args)?;
        }
        let plain = render_run_diff(&d, &args, Style::plain());
        for c in &args.fail_on {
            let reasons = violations(&d, &[*c], args.threshold);
            let outcome = if reasons.is_empty() {
                junit::Outcome::Passed
            } else {
                junit::Outcome::Failed { reasons, diff: plain.clone() }
            };
            cases.push(junit::Case { mode: d.mode.clone(), property: change_name(*c), outcome });
        }
        failures.extend(violations(&d, &args.fail_on, args.threshold));
    }
    for (mode, only, other) in unpaired(&ra.runs, &rb.runs)
        .into_iter()
        .map(|m| (m, &args.a, &args.b))
        .chain(unpaired(&rb.runs, &ra.runs).into_iter().map(|m| (m, &args.b, &args.a)))
    {
        let why = format!("only in {}: not compared (no {mode} run in {})", only.display(), other.display());
        println!("{}", style.bold(&format!("{mode}: {why}")));
        for c in &args.fail_on {
            let outcome = junit::Outcome::Skipped(why.clone());
            cases.push(junit::Case { mode: mode.to_owned(), property: change_name(*c), outcome });
        }
    }
    if let Some(file) = &args.junit {
        std::fs::write(file, junit::render(&cases))
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    for f in &failures {
        eprintln!("dockertrace: changed: {f}");
    }
    Ok(if failures.is_empty() { super::exit::OK } else { EXIT_CHANGED })
}

/// One mode's diff as text: the heading, functions, devices, drops, figures and ladders.
pub fn render_run_diff(d: &RunDiff, args: &DiffArgs, style: Style) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ =
        writeln!(s, "{}", style.bold(&format!("{} ({} → {})", d.mode, args.a.display(), args.b.display())));
    let show = |v: &[String]| if v.is_empty() { "(none)".to_owned() } else { v.join(" ") };
    let rare = |v: &[String]| match v.len() {
        0 => String::new(),
        n => style.dim(&format!(
            "; {n} rare (below {} per message, not guarded): {}",
            args.function_floor,
            v.join(" ")
        )),
    };
    let _ =
        writeln!(s, "  functions appeared: {}{}", style.yellow(&show(&d.appeared)), rare(&d.appeared_rare));
    let _ =
        writeln!(s, "  functions vanished: {}{}", style.yellow(&show(&d.vanished)), rare(&d.vanished_rare));
    if !d.devices_appeared.is_empty() || !d.devices_vanished.is_empty() {
        let _ = writeln!(s, "  devices appeared: {}", style.yellow(&show(&d.devices_appeared)));
        let _ = writeln!(s, "  devices vanished: {}", style.yellow(&show(&d.devices_vanished)));
    }
    for (site, a, b) in &d.drops {
        let _ = writeln!(s, "  drops {}: {a} → {b}", style.red(site));
    }
    if let Some((a, b, p)) = d.events_per_msg {
        let _ = writeln!(s, "  events per message: {a:.2} → {b:.2} ({p:+.1}%)");
    }
    if let Some((a, b, p)) = d.msgs_per_s {
        let _ = writeln!(s, "  msg/s ({}): {a:.0} → {b:.0} ({p:+.1}%)", d.msgs_phase.name());
    }
    if let Some((a, b, p)) = d.ns_per_event {
        let _ = writeln!(s, "  tracer's cost: {a:.0} → {b:.0} ns per event ({p:+.1}%)");
    }
    s.push_str(&render_ladder_diffs(&d.ladders, args.threshold, style));
    s
}

/// `--svg DIR`: the differential flame graph of one compared mode.
fn write_diff_svg(dir: &Path, x: &ModeRun, y: &ModeRun, mode: &str, args: &DiffArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let svg = crate::render::flame::diff_svg(
        &crate::render::flame::folded(x),
        &crate::render::flame::folded(y),
        &format!("{mode}: {} → {}", args.a.display(), args.b.display()),
    )?;
    let file = dir.join(format!("diff-{}.svg", crate::render::flame::file_stem(&x.mode)));
    std::fs::write(&file, svg).with_context(|| format!("cannot write {}", file.display()))
}

/// The ladders' changes as text: per direction the hop sequence (kept or changed, with the
/// hops that differ) and the latencies that moved past `threshold`.
pub fn render_ladder_diffs(ladders: &[LadderDiff], threshold: f64, style: Style) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for l in ladders {
        let one_way = l
            .one_way
            .map_or_else(String::new, |(a, b, p)| format!("; one-way p50 {} → {} ({p:+.1}%)", ns(a), ns(b)));
        if l.same_hops() {
            let _ = writeln!(s, "  hop ladder {}: the same {} hops{one_way}", l.direction, l.before.len());
            for (i, hop, a, b, p) in l.hops.iter().filter(|h| latency_moved(h.2, h.3, h.4, threshold)) {
                let _ = writeln!(s, "    hop {i} {hop}: p50 {} → {} ({p:+.1}%)", ns(*a), ns(*b));
            }
            continue;
        }
        let _ = writeln!(
            s,
            "  hop ladder {}: {}{one_way}",
            l.direction,
            style.yellow(&format!("changed, {} hops → {}", l.before.len(), l.after.len()))
        );
        let common = l.before.iter().zip(&l.after).take_while(|(x, y)| x == y).count();
        for (i, h) in l.before.iter().enumerate().skip(common) {
            let _ = writeln!(s, "    − {i:>2} {h}");
        }
        for (i, h) in l.after.iter().enumerate().skip(common) {
            let _ = writeln!(s, "    + {i:>2} {h}");
        }
    }
    s
}

#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    /// `perf script` output of `perf record -e 'net:*' --call-graph fp`.
    pub file: PathBuf,
    /// Name of the run in reports (default: the file's stem).
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,
    /// Where to write the recording (default: FILE.dtrec.json).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `dockertrace import FILE`
pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    if let Some(out) = &args.output {
        check_file("--output", out)?;
    }
    let (run, stats) = crate::import::perf_script_file(&args.file, args.label.as_deref())?;
    let out = args.output.clone().unwrap_or_else(|| with_suffix(&args.file, ".dtrec.json"));
    let mut rec = Recording::new("perf-script", vec![run]);
    rec.kernel.clear();
    rec.save(&out)?;
    eprintln!(
        "dockertrace: imported {} events with {} frames from {} lines of {}; {} unparseable lines",
        stats.events,
        stats.frames,
        stats.lines,
        args.file.display(),
        stats.unparseable
    );
    for (line, text) in &stats.examples {
        eprintln!("dockertrace:   line {line}: {text}");
    }
    eprintln!("dockertrace: wrote {}", out.display());
    present(
        &rec.runs,
        Vec::new(),
        &OutputArgs { paths: 8, functions: 30, ..Default::default() },
        Style::for_stdout(),
    )
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{counters::Counters, recording::RunBuilder};

    fn report(mode: &str, fs: &[&str], n: u64) -> ModeReport {
        let mut b = RunBuilder::default();
        let s = b.stack(fs.iter().map(|f| (*f).to_owned()).collect());
        b.add("net:netif_rx", "eth0", 1, 1, Some(s), n);
        let w =
            crate::workload::WorkloadReport::new(crate::workload::Pattern::Echo, 1, 42, 100, 4200, 1.0, None);
        ModeReport::from_run(&b.finish(mode, 1.0, Some(w), Counters::default()), 3)
    }

    #[test]
    fn diff_finds_function_and_rate_changes() {
        let a = report("bridge", &["netif_rx", "veth_xmit"], 100);
        let b = report("bridge", &["netif_rx", "veth_xmit", "nf_hook_slow"], 150);
        let d = diff_runs(&a, &b);
        assert_eq!(d.appeared, ["nf_hook_slow"]);
        assert!(d.vanished.is_empty());
        assert!(d.drops.is_empty());
        let dropping = ModeReport::from_run(&crate::render::tables::tests::dropping_run(), 3);
        let d2 = diff_runs(&a, &dropping);
        assert_eq!(
            d2.drops,
            vec![("NETFILTER_DROP in nft_do_chain".to_owned(), 0, 4)],
            "benign QUEUE_PURGE left out"
        );
        assert_eq!(d.events_per_msg, Some((1.0, 1.5, 50.0)));
        let v = violations(&d, &[Change::Functions, Change::EventsPerMsg, Change::MsgsPerS], 10.0);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[1].contains("+50.0%"));
        assert!(violations(&d, &[Change::EventsPerMsg], 60.0).is_empty());
        assert!(violations(&diff_runs(&a, &a), &[Change::Functions, Change::EventsPerMsg], 0.0).is_empty());
    }

    #[test]
    fn diff_compares_untraced_msgs_when_both_runs_have_them() {
        let with_untraced = |rate: u64| {
            let mut b = RunBuilder::default();
            b.add("net:netif_rx", "eth0", 1, 1, None, 200);
            let w = |n| {
                crate::workload::WorkloadReport::new(
                    crate::workload::Pattern::Echo,
                    1,
                    42,
                    n,
                    n * 42,
                    1.0,
                    None,
                )
            };
            let mut run = b.finish("bridge", 1.0, Some(w(100)), Counters::default());
            run.untraced = Some(w(rate));
            ModeReport::from_run(&run, 3)
        };
        let (a, b) = (with_untraced(200), with_untraced(300));
        let d = diff_runs(&a, &b);
        assert_eq!((d.msgs_per_s, d.msgs_phase), (Some((200.0, 300.0, 50.0)), Phase::Untraced));
        // 1/100 − 1/200 s over 2 events → 1/100 − 1/300 s over 2 events.
        let (x, y, _) = d.ns_per_event.unwrap();
        assert!((x - 2.5e6).abs() < 1e-3 && (y - 1e7 / 3.0).abs() < 1e-3, "{d:?}");
        let v = violations(&d, &[Change::MsgsPerS], 10.0);
        assert_eq!(v, ["bridge: msg/s (untraced) 200 → 300 (+50.0%)"]);
        // Against an older recording (no untraced phase): the traced figures, as before.
        let old = report("bridge", &["netif_rx"], 200);
        let d = diff_runs(&old, &b);
        assert_eq!(
            (d.msgs_per_s, d.msgs_phase, d.ns_per_event),
            (Some((100.0, 100.0, 0.0)), Phase::Traced, None)
        );
    }

    #[test]
    fn devices_compare_by_name_across_runs() {
        // Two runs of one topology: new inodes, a new Docker veth name, the same names.
        let run = |host: u32, server: u32, veth: &str, extra: bool| {
            let mut b = RunBuilder::default();
            b.add("net:netif_rx", "eth0", server, 2, None, 10);
            b.add("net:netif_rx", veth, host, 9, None, 10);
            if extra {
                b.add("net:netif_rx", "docker0", host, 3, None, 10);
            }
            let mut r = b.finish("bridge", 1.0, None, Counters::default());
            r.names.add_netns(host, "host");
            r.names.add_netns(server, "server");
            r.names.add_peer(host, 9, "server");
            ModeReport::from_run(&r, 3)
        };
        let d = diff_runs(&run(1, 100, "veth1a2b", false), &run(1, 200, "vethc3d4", true));
        assert_eq!(d.devices_appeared, ["docker0@host"]);
        assert!(d.devices_vanished.is_empty(), "{d:?}");
        let v = violations(&d, &[Change::Devices], 0.0);
        assert_eq!(v, ["bridge: devices changed (+1 −0)"]);
        let same = diff_runs(&run(1, 100, "veth1a2b", true), &run(5, 300, "vethffff", true));
        assert!(violations(&same, &[Change::Devices], 0.0).is_empty(), "{same:?}");
    }

    #[test]
    fn diff_compares_ladders_by_device_name() {
        use crate::render::ladders::tests::report as ladders;
        let mut a = report("bridge", &["netif_rx"], 100);
        let mut b = a.clone();
        a.journeys = Some(ladders(1500));
        // Another run: other inodes, the same names; one hop 3× slower.
        let mut j = ladders(1500);
        for h in j.directions.iter_mut().flat_map(|d| d.hops.iter_mut()) {
            h.netns += 1000;
        }
        j.directions[0].hops[2].delta_p50_ns = 4500;
        j.directions[0].one_way_p50_ns += 3000;
        b.journeys = Some(j);
        let d = diff_runs(&a, &b);
        assert_eq!(d.ladders.len(), 2);
        assert!(d.ladders.iter().all(LadderDiff::same_hops), "inodes do not count");
        assert!(violations(&d, &[Change::Hops], 10.0).is_empty());
        let v = violations(&d, &[Change::HopLatency], 10.0);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("request one-way time p50 4.5 µs → 7.5 µs (+66.7%)"), "{v:?}");
        assert!(
            v[1].contains("request hop 2 (net:net_dev_queue dtpb) p50 1.5 µs → 4.5 µs (+200.0%)"),
            "{v:?}"
        );
        assert!(violations(&d, &[Change::HopLatency], 250.0).is_empty());
        let text = render_ladder_diffs(&d.ladders, 10.0, Style::plain());
        assert!(text.contains("hop ladder request: the same 4 hops; one-way p50 4.5 µs → 7.5 µs"), "{text}");
        assert!(text.contains("    hop 2 net:net_dev_queue dtpb: p50 1.5 µs → 4.5 µs"), "{text}");
        assert!(text.contains("hop ladder response: the same 4 hops; one-way p50 4.5 µs → 4.5 µs (+0.0%)\n"));

        // A hop vanishes from the response ladder, and a small change (< 1 µs) never counts.
        let mut j = ladders(1500);
        j.directions[1].hops.remove(2);
        j.directions[0].hops[1].delta_p50_ns = 2400;
        b.journeys = Some(j);
        let d = diff_runs(&a, &b);
        let v = violations(&d, &[Change::Hops, Change::HopLatency], 10.0);
        assert_eq!(v, ["bridge: response hop ladder changed (4 hops → 3)"]);
        let text = render_ladder_diffs(&d.ladders, 10.0, Style::plain());
        assert!(text.contains("hop ladder response: changed, 4 hops → 3"), "{text}");
        assert!(
            text.contains("    −  2 net:net_dev_queue dtpa") && text.contains("    +  2 net:netif_rx eth0"),
            "{text}"
        );

        // Without journeys on one side there is nothing to compare.
        b.journeys = None;
        assert!(diff_runs(&a, &b).ladders.is_empty());
    }

    #[test]
    fn rare_functions_are_shown_but_not_guarded() {
        let run = |rare: u64, common: bool| {
            let mut b = RunBuilder::default();
            let s = b.stack(vec!["netif_rx".into()]);
            b.add("net:netif_rx", "eth0", 1, 1, Some(s), 1000);
            if rare > 0 {
                let t = b.stack(vec!["netif_rx".into(), "tcp_delack_timer".into()]);
                b.add("net:netif_rx", "eth0", 1, 1, Some(t), rare);
            }
            if common {
                let t = b.stack(vec!["netif_rx".into(), "nf_hook_slow".into()]);
                b.add("net:netif_rx", "eth0", 1, 1, Some(t), 1000);
            }
            let w = crate::workload::WorkloadReport::new(
                crate::workload::Pattern::Echo,
                1,
                42,
                1000,
                42_000,
                1.0,
                None,
            );
            ModeReport::from_run(&b.finish("bridge", 1.0, Some(w), Counters::default()), 3)
        };
        // 20 of 1000 messages: below the floor either way.
        let d = diff_runs(&run(0, false), &run(20, true));
        assert_eq!(
            (d.appeared.as_slice(), d.appeared_rare.as_slice()),
            (&["nf_hook_slow".to_owned()][..], &["tcp_delack_timer".to_owned()][..])
        );
        assert_eq!(violations(&d, &[Change::Functions], 10.0), ["bridge: kernel functions changed (+1 −0)"]);
        let d = diff_runs(&run(20, false), &run(0, false));
        assert_eq!(d.vanished_rare, ["tcp_delack_timer"]);
        assert!(violations(&d, &[Change::Functions], 10.0).is_empty(), "{d:?}");
        // A lower floor guards it.
        let d = diff_runs_with(&run(20, false), &run(0, false), 0.01);
        assert_eq!(d.vanished, ["tcp_delack_timer"]);
    }

    #[test]
    fn percentages() {
        assert_eq!(pct(2.0, 3.0), 50.0);
        assert_eq!(pct(0.0, 0.0), 0.0);
        assert!(pct(0.0, 1.0).is_infinite());
    }
}
