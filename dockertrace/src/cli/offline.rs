//! Offline commands on recordings: `report`, `diff`, `import`.
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use super::outputs::{check_dir, check_file, present, OutputArgs};
use crate::{
    compare::ModeReport,
    recording::{ModeRun, Recording},
    render::style::Style,
};

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// Recordings (from `--record` or `dockertrace import`).
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
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
    args.out.check()?;
    let runs = load_runs(&args.files)?;
    present(&runs, Vec::new(), &args.out, Style::for_stdout())
}

/// A change `diff --fail-on` can guard against.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Kernel functions appearing or vanishing.
    Functions,
    /// Kernel events per message moving past --threshold.
    EventsPerMsg,
    /// Workload messages per second moving past --threshold.
    MsgsPerS,
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
    /// Relative change (percent) that counts for events-per-msg and msgs-per-s.
    #[arg(long, value_name = "PCT", default_value_t = 10.0)]
    pub threshold: f64,
    /// Also write a differential flame graph per compared mode into DIR.
    #[arg(long, value_name = "DIR")]
    pub svg: Option<PathBuf>,
}

/// Exit code of `diff --fail-on` when a guarded change happened.
pub const EXIT_CHANGED: i32 = 3;

/// What changed between two runs of one mode.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDiff {
    pub mode: String,
    pub appeared: Vec<String>,
    pub vanished: Vec<String>,
    /// (before, after, percent change)
    pub events_per_msg: Option<(f64, f64, f64)>,
    pub msgs_per_s: Option<(f64, f64, f64)>,
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

/// Compares two runs of one mode.
pub fn diff_runs(a: &ModeReport, b: &ModeReport) -> RunDiff {
    let fa: std::collections::BTreeSet<&str> = a.functions.iter().map(|f| f.name.as_str()).collect();
    let fb: std::collections::BTreeSet<&str> = b.functions.iter().map(|f| f.name.as_str()).collect();
    let both = |x: Option<f64>, y: Option<f64>| x.zip(y).map(|(x, y)| (x, y, pct(x, y)));
    RunDiff {
        mode: if a.mode == b.mode { a.mode.clone() } else { format!("{} → {}", a.mode, b.mode) },
        appeared: fb.difference(&fa).map(|s| (*s).to_owned()).collect(),
        vanished: fa.difference(&fb).map(|s| (*s).to_owned()).collect(),
        events_per_msg: both(a.events_per_msg, b.events_per_msg),
        msgs_per_s: both(a.msgs_per_s, b.msgs_per_s),
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
            Change::EventsPerMsg => {
                if let Some((a, b, p)) = d.events_per_msg.filter(|e| e.2.abs() > threshold) {
                    v.push(format!("{}: events per message {a:.2} → {b:.2} ({p:+.1}%)", d.mode));
                }
            }
            Change::MsgsPerS => {
                if let Some((a, b, p)) = d.msgs_per_s.filter(|e| e.2.abs() > threshold) {
                    v.push(format!("{}: msg/s {a:.0} → {b:.0} ({p:+.1}%)", d.mode));
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

/// `dockertrace diff A B`; returns the exit code.
pub fn diff(args: DiffArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        args.threshold >= 0.0 && args.threshold.is_finite(),
        "--threshold must be a non-negative percentage"
    );
    if let Some(dir) = &args.svg {
        check_dir("--svg", dir)?;
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
    for (x, y) in pairs {
        let d = diff_runs(&ModeReport::from_run(x, 0), &ModeReport::from_run(y, 0));
        println!("{}", style.bold(&format!("{} ({} → {})", d.mode, args.a.display(), args.b.display())));
        let show = |v: &[String]| if v.is_empty() { "(none)".to_owned() } else { v.join(" ") };
        println!("  functions appeared: {}", style.yellow(&show(&d.appeared)));
        println!("  functions vanished: {}", style.yellow(&show(&d.vanished)));
        if let Some((a, b, p)) = d.events_per_msg {
            println!("  events per message: {a:.2} → {b:.2} ({p:+.1}%)");
        }
        if let Some((a, b, p)) = d.msgs_per_s {
            println!("  msg/s: {a:.0} → {b:.0} ({p:+.1}%)");
        }
        if let Some(dir) = &args.svg {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let svg = crate::render::flame::diff_svg(
                &crate::render::flame::folded(x),
                &crate::render::flame::folded(y),
                &format!("{}: {} → {}", d.mode, args.a.display(), args.b.display()),
            )?;
            let file = dir.join(format!("diff-{}.svg", crate::render::flame::file_stem(&x.mode)));
            std::fs::write(&file, svg).with_context(|| format!("cannot write {}", file.display()))?;
        }
        failures.extend(violations(&d, &args.fail_on, args.threshold));
    }
    for f in &failures {
        eprintln!("dockertrace: changed: {f}");
    }
    Ok(if failures.is_empty() { 0 } else { EXIT_CHANGED })
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
        assert_eq!(d.events_per_msg, Some((1.0, 1.5, 50.0)));
        let v = violations(&d, &[Change::Functions, Change::EventsPerMsg, Change::MsgsPerS], 10.0);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[1].contains("+50.0%"));
        assert!(violations(&d, &[Change::EventsPerMsg], 60.0).is_empty());
        assert!(violations(&diff_runs(&a, &a), &[Change::Functions, Change::EventsPerMsg], 0.0).is_empty());
    }

    #[test]
    fn percentages() {
        assert_eq!(pct(2.0, 3.0), 50.0);
        assert_eq!(pct(0.0, 0.0), 0.0);
        assert!(pct(0.0, 1.0).is_infinite());
    }
}
