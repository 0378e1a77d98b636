//! BENCHMARKS.md: the throughput table with the cost per event, the coverage of adaptive
//! stacks, the targets (met or missed, and by how much), the burst ladder and the
//! per-program costs.
use std::fmt::Write as _;

use super::{coverage::MISS_PER_MESSAGE, Results, Row, Stacks, Variant};

fn dash() -> String {
    "–".to_string()
}

pub fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| mode | variant | msg/s median | spread (min–max) | vs untraced | ns/event | events/msg | events/s | lost | tracer CPU s | peak RSS MiB | attach s |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let base = r.variant == Variant::Untraced;
        let or_dash = |x: String| if base { dash() } else { x };
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.0}–{:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.mode,
            r.label,
            r.msgs_per_s_median,
            r.msgs_per_s_min,
            r.msgs_per_s_max,
            r.ratio_to_untraced.map_or_else(dash, |x| format!("{:.1}%", x * 100.0)),
            r.ns_per_event.map_or_else(dash, |x| format!("{x:.0}")),
            r.events_per_msg
                .map_or_else(dash, |x| { format!("{x:.1}{}", if r.variant.external() { "*" } else { "" }) }),
            or_dash(format!("{:.0}", r.events_per_s)),
            or_dash(r.lost.to_string()),
            or_dash(format!("{:.2}", r.cpu_s)),
            or_dash(format!("{:.1}", r.peak_rss_kib as f64 / 1024.0)),
            r.attach_s.map_or_else(dash, |a| format!("{a:.2}")),
        );
    }
    s
}

/// The modes the issue sets targets for.
const TARGET_MODES: [&str; 2] = ["normal", "bridge"];

/// One line of the targets table.
struct Targets(String);

impl Targets {
    /// `met`: None when it could not be measured (a variant that did not run).
    /// A figure the issue asks to report, with no target to meet.
    fn figure(&mut self, what: &str, measured: String) {
        let _ = writeln!(self.0, "| {what} | {measured} | – | reported (no target) |");
    }

    fn line(&mut self, target: &str, measured: String, met: Option<bool>, missed_by: String) {
        let (met, by) = match met {
            Some(true) => ("yes", dash()),
            Some(false) => ("**no**", missed_by),
            None => ("?", "not measured".to_owned()),
        };
        let _ = writeln!(self.0, "| {target} | {measured} | {met} | {by} |");
    }
}

/// The cost per event a ratio target allows: `(1/(r·U) − 1/U) ÷ events per message`.
fn budget_ns(ratio: f64, untraced: f64, events_per_msg: f64) -> f64 {
    (1.0 / (ratio * untraced) - 1.0 / untraced) / events_per_msg * 1e9
}

/// "kept ≥ r of untraced": measured, met, and by how much it was missed (in points and in ns
/// per event over the budget the target allows).
fn ratio_target(t: &mut Targets, r: &Results, mode: &str, v: Variant, target: f64, what: &str) {
    let row = find(r, mode, v);
    let untraced = find(r, mode, Variant::Untraced).map(|u| u.msgs_per_s_median);
    let name = format!("{mode}: {what} keeps ≥ {:.0}% of untraced msg/s", target * 100.0);
    let Some((row, ratio, untraced)) = row.and_then(|x| Some((x, x.ratio_to_untraced?, untraced?))) else {
        t.line(&name, dash(), None, String::new());
        return;
    };
    let ns = row.ns_per_event.map_or_else(String::new, |n| format!(" ({n:.0} ns/event)"));
    let measured = format!("{:.1}%{ns}", ratio * 100.0);
    let mut by = format!("{:.1} points", (target - ratio) * 100.0);
    if let (Some(n), Some(e)) = (row.ns_per_event, row.events_per_msg) {
        let b = budget_ns(target, untraced, e);
        let _ = write!(by, "; {:.0} ns/event over the {b:.0} ns/event the target allows", n - b);
    }
    t.line(&name, measured, Some(ratio >= target), by);
}

fn find<'a>(r: &'a Results, mode: &str, v: Variant) -> Option<&'a Row> {
    r.rows.iter().find(|x| x.mode == mode && x.variant == v)
}

/// What following packets costs: the default's ns per event minus `--no-journeys`' (both
/// against the same untraced runs), and the msg/s each keeps.
fn journeys_cost(t: &mut Targets, r: &Results, mode: &str) {
    let name = format!("{mode}: cost of packet journeys (default vs `--no-journeys`)");
    match (find(r, mode, Variant::Default), find(r, mode, Variant::NoJourneys)) {
        (Some(d), Some(n)) => {
            let per_event = match (d.ns_per_event, n.ns_per_event) {
                (Some(a), Some(b)) => format!("{:+.0} ns/event", a - b),
                _ => dash(),
            };
            let kept = |x: &Row| x.ratio_to_untraced.map_or_else(dash, |v| format!("{:.0}%", v * 100.0));
            t.figure(&name, format!("{per_event} (msg/s kept: {} with, {} without)", kept(d), kept(n)));
        }
        _ => t.line(&name, dash(), None, String::new()),
    }
}

/// The targets against what was measured (reported, not asserted).
pub fn targets(r: &Results) -> String {
    let mut t = Targets(String::from("| target | measured | met | missed by |\n|---|---|:-:|---|\n"));
    for mode in TARGET_MODES {
        if !r.rows.iter().any(|x| x.mode == mode) {
            continue;
        }
        ratio_target(&mut t, r, mode, Variant::Default, 0.85, "default (streaming, adaptive stacks)");
        journeys_cost(&mut t, r, mode);
        ratio_target(&mut t, r, mode, Variant::StacksNone, 0.90, "`--stacks none`");
        ratio_target(&mut t, r, mode, Variant::Aggregate, 0.92, "`--aggregate` (adaptive)");
        let name = format!("{mode}: `--stacks every` at least 1.4× perf's msg/s");
        match (find(r, mode, Variant::StacksEvery), find(r, mode, Variant::Perf)) {
            (Some(e), Some(p)) if p.msgs_per_s_median > 0.0 => {
                let x = e.msgs_per_s_median / p.msgs_per_s_median;
                let need = 1.4 * p.msgs_per_s_median;
                t.line(
                    &name,
                    format!("{x:.2}× ({:.0} vs {:.0} msg/s)", e.msgs_per_s_median, p.msgs_per_s_median),
                    Some(x >= 1.4),
                    format!(
                        "{:.0} msg/s short of {need:.0} ({:.0}%)",
                        need - e.msgs_per_s_median,
                        (need - e.msgs_per_s_median) / need * 100.0
                    ),
                );
            }
            _ => t.line(&name, dash(), None, String::new()),
        }
        let traced: Vec<&Row> = r.rows.iter().filter(|x| x.mode == mode && x.variant.traced()).collect();
        let lost: u64 = traced.iter().map(|x| x.lost).sum();
        let lossy: Vec<String> =
            traced.iter().filter(|x| x.lost > 0).map(|x| format!("{} {}", x.label, x.lost)).collect();
        t.line(
            &format!("{mode}: 0 lost events (every dockertrace variant)"),
            format!("{lost} over {} variants", traced.len()),
            (!traced.is_empty()).then_some(lost == 0),
            lossy.join(", "),
        );
        let cov: Vec<_> = r.coverage.iter().filter(|c| c.mode == mode).collect();
        let name = format!(
            "{mode}: adaptive coverage ≥ 99% of the weight, no function at ≥ {MISS_PER_MESSAGE} per message missed"
        );
        match cov.iter().map(|c| c.weight_found).reduce(f64::min) {
            Some(worst) => {
                let mut missed: Vec<String> = cov
                    .iter()
                    .flat_map(|c| c.missed.iter().map(|m| format!("`{}` in {}", m.function, m.event)))
                    .collect();
                missed.sort();
                missed.dedup();
                let mut by = Vec::new();
                if worst < 0.99 {
                    by.push(format!("{:.2} points of weight", (0.99 - worst) * 100.0));
                }
                if !missed.is_empty() {
                    by.push(format!("{} missed: {}", missed.len(), missed.join(", ")));
                }
                t.line(
                    &name,
                    format!("{:.2}% (worst round), {} missed", worst * 100.0, missed.len()),
                    Some(worst >= 0.99 && missed.is_empty()),
                    by.join("; "),
                );
            }
            None => t.line(&name, dash(), None, String::new()),
        }
    }
    let series: Vec<_> = r.burst.iter().filter(|b| b.stacks == "default").collect();
    let name = "burst: ≥ 1 M events/s to userspace without loss (default stacks)";
    match series.last() {
        Some(last) => {
            let best = r.burst_max_zero_loss_events_per_s;
            let why = if last.lost > 0 {
                format!("lost {} at {} datagrams/s", last.lost, last.target_datagrams_per_s)
            } else if !last.kept_up {
                format!(
                    "the sender could not reach {} datagrams/s (no loss): the tracing cost charged to the \
                     sending CPUs is the limit",
                    last.target_datagrams_per_s
                )
            } else {
                "the ladder's top step".into()
            };
            t.line(
                name,
                best.map_or("none".into(), |b| format!("{:.2} M events/s", b / 1e6)),
                Some(best.is_some_and(|b| b >= 1e6)),
                format!("{:.2} M events/s short; then {why}", (1e6 - best.unwrap_or(0.0)) / 1e6),
            );
        }
        None => t.line(name, dash(), None, String::new()),
    }
    let ours: Vec<&Row> = r.rows.iter().filter(|x| x.variant.traced()).collect();
    let rss = ours.iter().map(|x| x.peak_rss_kib).max();
    t.line(
        "peak RSS < 64 MiB",
        rss.map_or_else(dash, |k| format!("{:.1} MiB", k as f64 / 1024.0)),
        rss.map(|k| k < 64 * 1024),
        rss.map_or_else(String::new, |k| format!("{:.1} MiB over", k as f64 / 1024.0 - 64.0)),
    );
    let attach = ours.iter().filter_map(|x| x.attach_s).reduce(f64::max);
    t.line(
        "attach < 1 s",
        attach.map_or_else(dash, |a| format!("{a:.2} s (slowest median)")),
        attach.map(|a| a < 1.0),
        attach.map_or_else(String::new, |a| format!("{:.2} s over", a - 1.0)),
    );
    t.0
}

fn coverage_section(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Coverage of adaptive stacks\n\n\
         In each round, the `--stacks every` run and the `--stacks adaptive` run of a mode are \
         compared by their recordings: the weight of an (event, function) pair is the number of \
         events of that kind whose stack holds the function (the adaptive run's unwalked events \
         are shared out over its walked stacks). Found: the share of the every-stack run's \
         weight whose pair the adaptive run also has. Every pair it misses at ≥ {MISS_PER_MESSAGE} \
         per workload message is named.\n\n\
         | mode | round | weight found | pairs found | missed at ≥ {MISS_PER_MESSAGE}/msg | missed below |\n\
         |---|---:|---:|---:|---|---:|"
    );
    for c in &r.coverage {
        let missed = if c.missed.is_empty() {
            "none".to_owned()
        } else {
            c.missed
                .iter()
                .map(|m| format!("`{}` in {} ({:.3}/msg)", m.function, m.event, m.per_message))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.2}% | {}/{} | {missed} | {} |",
            c.mode,
            c.round,
            c.weight_found * 100.0,
            c.pairs_found,
            c.pairs_every,
            c.missed_lighter
        );
    }
    s
}

fn pinning_sentence(r: &Results) -> String {
    match r.pinning {
        Some(p) => format!(
            "The workload's server and client ran on CPU {w} (`--workload-cpus {w}`: processes \
             pinned before exec, containers with that cpuset) and the tracer on CPU {t} \
             (`--tracer-cpus {t}` for dockertrace's threads; perf and bpftrace pinned before exec); \
             the untraced runs are pinned the same way. The eBPF programs run on the CPU of each \
             event, the workload's, so their cost is in the traced msg/s. The bench uses one CPU \
             per side whatever the machine's size ({} CPUs here), so figures compare across \
             machines. The burst ladder is not pinned (its senders use every CPU).",
            r.machine.cpus,
            w = p.workload_cpu,
            t = p.tracer_cpu
        ),
        None => "Not pinned (`--no-pin`, or fewer than two usable CPUs): the untraced msg/s moves \
                 between runs with the scheduler's cross-CPU wakeups."
            .to_owned(),
    }
}

pub fn markdown(r: &Results) -> String {
    let m = &r.machine;
    let mut s = String::new();
    let variants: Vec<String> = r.variants.iter().map(|v| v.label()).collect();
    let _ = writeln!(
        s,
        "# Benchmarks\n\n\
         Written by `cargo xtask bench` (do not edit by hand). Each mode was run {} round{}, \
         interleaved ({}{}), with the default echo workload for {} s per run, runtime \
         `{}`.\n\n{}\n\n\
         - date: {}\n- machine: {} ({} CPUs, {} MiB)\n- kernel: {}\n- commit: {}\n\n\
         What the numbers mean, where the time goes and what was done about it: \
         [docs/performance.md](docs/performance.md).\n",
        r.rounds,
        if r.rounds == 1 { "" } else { "s" },
        variants.join(", "),
        if r.rounds == 1 { "" } else { "; then again" },
        r.duration_s,
        r.runtime,
        pinning_sentence(r),
        m.date_utc,
        m.cpu,
        m.cpus,
        m.memory_mib,
        m.kernel,
        m.commit
    );
    if !r.stacks_flag {
        let _ = writeln!(
            s,
            "This dockertrace predates `--stacks`: its default takes every stack, and `--stacks none` \
             ran as `--no-stacks`.\n"
        );
    }
    for k in &r.skipped {
        let _ = writeln!(s, "- not run: {} ({})", k.label, k.reason);
    }
    if !r.skipped.is_empty() {
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "## Workload throughput and tracer cost\n\n{}\n\
         msg/s is the workload's echoed messages per second (median over the rounds; spread is \
         min–max). **ns/event** is the tracing cost per event, `(1/traced − 1/untraced msg/s) ÷ \
         events per message`, from the medians: the time tracing added to each message, shared \
         over that message's events; it holds across runs where the ratio moves with the \
         untraced round trip. Events per message come from the traced run's own counts (its \
         events, filtered in the kernel to the workload's, over the workload's messages); perf \
         and bpftrace (marked *) count every `net:*` event of the machine from their start to \
         their stop, so theirs is the default variant's of the same mode (the same tracepoints \
         on the same packets), and their events/s is the machine's. Lost: events that never \
         reached userspace, summed over the rounds. Tracer CPU is the tracer process's user + \
         system time; the eBPF programs' own time is charged to the traffic and shows in the \
         msg/s ratio and the per-program table below.\n",
        table(&r.rows)
    );
    if !r.coverage.is_empty() {
        let _ = writeln!(s, "{}", coverage_section(r));
    }
    let _ = writeln!(
        s,
        "## Targets (measured, not asserted)\n\n\
         The issue's targets for `normal` and `bridge`. A ratio target missed is also given in ns \
         per event: the measured cost over the cost per event the target allows at this run's \
         untraced msg/s and events per message, `(1/(target × untraced) − 1/untraced) ÷ events \
         per message`.\n\n{}",
        targets(r)
    );
    if !r.burst.is_empty() {
        let _ = writeln!(
            s,
            "## Burst ladder\n\n`dockertrace trace --dev lo` (streaming; default stacks, then \
             `--stacks none`) while `dockertrace workload burst` sends UDP datagrams over loopback \
             at each rate for {} s; each series stops at the first loss or when the generator \
             cannot reach its rate.\n\n\
             | stacks | datagrams/s asked | sent | events/s traced | lost | tracer CPU s |\n|---|---:|---:|---:|---:|---:|",
            r.burst_step_s
        );
        for b in &r.burst {
            let _ = writeln!(
                s,
                "| {} | {} | {:.0}{} | {:.0} | {} | {:.2} |",
                b.stacks,
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
            "\nHighest zero-loss rate with default stacks: {}.\n",
            r.burst_max_zero_loss_events_per_s.map_or("none".into(), |b| format!("{b:.0} events/s"))
        );
    }
    if !r.programs.is_empty() {
        let mut kinds: Vec<Stacks> = Vec::new();
        for p in &r.programs {
            if !kinds.contains(&p.stacks) {
                kinds.push(p.stacks);
            }
        }
        let kinds: Vec<String> = kinds.iter().map(|k| format!("`--stacks {}`", k.name())).collect();
        let _ = writeln!(
            s,
            "## Per-program cost (`--stats`, kernel.bpf_stats_enabled)\n\n\
             One streaming run per mode with each of {} (pinned like the rest; every minus none is \
             the kernel's stack walk, `bpf_get_stackid`); programs that ran, most total time \
             first.\n\n\
             | mode | stacks | program | runs | avg ns/run |\n|---|---|---|---:|---:|",
            kinds.join(", ")
        );
        for p in &r.programs {
            let _ = writeln!(
                s,
                "| {} | {} | `{}` | {} | {:.0} |",
                p.mode,
                p.stacks.name(),
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
    fn a_ratio_targets_budget_is_the_cost_that_keeps_it_exactly() {
        // Keeping 80% of 40 000 msg/s allows 6.25 µs more per message: 625 ns per event of 10.
        let b = budget_ns(0.8, 40_000.0, 10.0);
        assert!((b - 625.0).abs() < 1e-9, "{b}");
        let kept = super::super::ns_per_event(0.8 * 40_000.0, 40_000.0, 10.0).unwrap();
        assert!((kept - b).abs() < 1e-9);
    }
}
