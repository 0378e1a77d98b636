//! The workload's figures after a traced run, as terminal text.
use crate::{
    cost::WorkloadCost, modes::Mode, render::style::Style, summary::TraceReport, workload::WorkloadReport,
};

/// The workload's figures and what the kernel did per message; with the untraced phase's
/// figures (`untraced`), those first and what tracing cost the workload after them.
pub fn render_workload(
    mode: Mode,
    describe: &str,
    w: &WorkloadReport,
    untraced: Option<&WorkloadReport>,
    r: &TraceReport,
    style: Style,
) -> String {
    let indent = |w: &WorkloadReport| format!("  {}\n", w.human().trim_end().replace('\n', "\n  "));
    let mut s = String::new();
    if let Some(u) = untraced {
        s.push_str(&format!("\n{}\n", style.bold(&format!("Workload ({mode}: {describe}), untraced"))));
        s.push_str(&indent(u));
    }
    let traced = if untraced.is_some() { ", traced" } else { "" };
    s.push_str(&format!("\n{}\n", style.bold(&format!("Workload ({mode}: {describe}){traced}"))));
    s.push_str(&indent(w));
    let events_per_msg = (w.messages > 0).then(|| r.total_events() as f64 / w.messages as f64);
    if let Some(e) = events_per_msg {
        s.push_str(&format!(
            "  kernel events per message: {e:.1} ({} events / {} messages)\n",
            r.total_events(),
            w.messages
        ));
    }
    let rtt = |w: &WorkloadReport| w.rtt_us.as_ref().map(|r| r.p50);
    if let Some(c) = untraced
        .and_then(|u| WorkloadCost::new(w.msgs_per_s, u.msgs_per_s, rtt(w).zip(rtt(u)), events_per_msg))
    {
        s.push_str(&format!("  {}\n", cost_line(&c)));
    }
    s
}

/// What tracing cost the workload, in one line.
pub fn cost_line(c: &WorkloadCost) -> String {
    format!(
        "tracing kept {:.0}% of the untraced msg/s: {:+.1} µs per message{}{}",
        c.kept * 100.0,
        c.added_us_per_msg,
        c.added_rtt_p50_us.map_or_else(String::new, |r| format!(", RTT p50 {r:+.1} µs")),
        c.ns_per_event.map_or_else(String::new, |n| format!(", {n:.0} ns per event"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::Aggregate,
        counters::Counters,
        stacks::StackMode,
        workload::{Pattern, RttSummary},
    };

    fn echo(messages: u64, p50: f64) -> WorkloadReport {
        let rtt = RttSummary { p50, p99: p50, max: p50, mean: p50, samples: messages };
        WorkloadReport::new(Pattern::Echo, 1, 42, messages, messages * 42, 1.0, Some(rtt))
    }

    #[test]
    fn the_untraced_phase_comes_first_and_the_cost_last() {
        let r = TraceReport::new(&Aggregate::new(StackMode::Every), 1.0, Counters::default());
        let (t, u) = (echo(20_000, 50.0), echo(40_000, 25.0));
        let text = render_workload(Mode::Bridge, "veth + docker0", &t, Some(&u), &r, Style::plain());
        let untraced = text.find("Workload (bridge: veth + docker0), untraced\n  echo pattern").unwrap();
        let traced = text.find("Workload (bridge: veth + docker0), traced\n  echo pattern").unwrap();
        let cost = text
            .find("tracing kept 50% of the untraced msg/s: +25.0 µs per message, RTT p50 +25.0 µs")
            .unwrap();
        assert!(untraced < traced && traced < cost, "{text}");
        let alone = render_workload(Mode::Bridge, "veth + docker0", &t, None, &r, Style::plain());
        assert!(
            alone.contains("Workload (bridge: veth + docker0)\n") && !alone.contains("tracing kept"),
            "{alone}"
        );
    }
}
