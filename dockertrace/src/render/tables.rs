//! Text tables of per-mode reports and of the comparison of modes.
use std::fmt::Write as _;

use crate::{
    compare::{Comparison, ModeReport, WorkloadFigures},
    render::{ladders, style::Style},
};

/// Devices listed in a mode's table.
const DEVICES: usize = 8;

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
}

/// One phase's workload figures in a few words.
fn figures(f: &WorkloadFigures) -> String {
    format!("{:.0} msg/s, RTT p50 {} µs, p99 {} µs", f.msgs_per_s, opt(f.rtt_p50_us, 1), opt(f.rtt_p99_us, 1))
}

/// The per-mode report: events per tracepoint (total and per message), the functions on the
/// path, the top stack paths and the datapath functions that identify the mode.
pub fn render_mode(m: &ModeReport, style: Style, functions: usize) -> String {
    let mut s = String::new();
    let title = match &m.runtime {
        Some(r) => format!("Mode {} (runtime {r})", m.mode),
        None => format!("Mode {}", m.mode),
    };
    let _ = writeln!(s, "\n{}", style.bold(&title));
    let counts = format!(
        "{} events, {} per message; lost {}; stack errors {}",
        m.total_events,
        opt(m.events_per_msg, 2),
        m.lost,
        m.stack_errors
    );
    match (&m.untraced, &m.traced) {
        (Some(u), Some(t)) => {
            let _ = writeln!(
                s,
                "  workload untraced: {} {}",
                figures(u),
                style.dim("(the workload alone, before tracing)")
            );
            let cost = m.workload_cost.as_ref().map_or_else(String::new, |c| {
                format!(
                    "; tracing kept {:.0}% ({:+.1} µs per message{}{})",
                    c.kept * 100.0,
                    c.added_us_per_msg,
                    c.added_rtt_p50_us.map_or_else(String::new, |r| format!(", RTT p50 {r:+.1} µs")),
                    c.ns_per_event.map_or_else(String::new, |n| format!(", {n:.0} ns per event"))
                )
            });
            let _ = writeln!(s, "  workload traced: {}{cost}", figures(t));
            let _ = writeln!(s, "  {counts}");
        }
        _ => {
            let _ = writeln!(
                s,
                "  workload: {} msg/s, RTT p50 {} µs, p99 {} µs; {counts}",
                opt(m.msgs_per_s, 0),
                opt(m.rtt_p50_us, 1),
                opt(m.rtt_p99_us, 1),
            );
        }
    }
    if let Some(mode) = m.stacks {
        let _ = writeln!(
            s,
            "  {}",
            style.dim(&format!(
                "stacks: {mode}: event counts are exact, function and path counts are estimates"
            ))
        );
    }
    let _ =
        writeln!(s, "  {:<38} {:>10} {:>9}", style.dim("event"), style.dim("count"), style.dim("per msg"));
    for e in &m.events {
        let _ = writeln!(s, "  {:<38} {:>10} {:>9}", e.name, e.count, opt(e.per_msg, 2));
    }
    if !m.datapath.is_empty() {
        let _ = writeln!(s, "  {}", style.dim("datapath functions that identify the mode:"));
        for c in &m.datapath {
            let _ = writeln!(s, "    {:<10} {}", c.component, style.yellow(&c.functions.join(" ")));
        }
    }
    if !m.functions.is_empty() {
        let _ = writeln!(
            s,
            "  {}",
            style.dim(&format!("kernel functions on the path ({} distinct):", m.functions.len()))
        );
        for f in m.functions.iter().take(functions) {
            let _ = writeln!(s, "    {:<40} {:>10} {:>9}", f.name, f.count, opt(f.per_msg, 2));
        }
        if m.functions.len() > functions {
            let _ = writeln!(s, "    … {} more (see --html or --svg)", m.functions.len() - functions);
        }
    }
    if !m.devices.is_empty() {
        // The busiest devices, by name where the run knew them (`veth1a2b(server)@host`).
        let list: Vec<String> =
            m.devices.iter().take(DEVICES).map(|d| format!("{} {}", d.label(), d.events)).collect();
        let more = m.devices.len().saturating_sub(DEVICES);
        let more = if more > 0 { format!(" … and {more} more") } else { String::new() };
        let _ = writeln!(s, "  {} {}{more}", style.dim("devices (events):"), list.join(", "));
    }
    if !m.top_paths.is_empty() {
        let _ = writeln!(s, "  {}", style.dim("top stack paths (outermost → innermost → event):"));
        for p in &m.top_paths {
            let chain: Vec<&str> = p.frames.iter().rev().map(String::as_str).collect();
            let _ = writeln!(s, "    {:>9} × {} → {}", p.count, chain.join(" → "), style.cyan(&p.event));
        }
    }
    s.push_str(&render_drops(&m.drops, style));
    if let Some(j) = &m.journeys {
        s.push_str(&ladders::render_ladders(j, style));
    }
    s
}

/// Where and why the workload's packets died: one block per (reason, location, device), with
/// the hint of the rule table. Empty without drops.
pub fn render_drops(drops: &[crate::compare::DropRow], style: Style) -> String {
    if drops.is_empty() {
        return String::new();
    }
    let mut s = String::new();
    let total: u64 = drops.iter().filter(|d| !d.benign).map(|d| d.count).sum();
    let benign: u64 = drops.iter().filter(|d| d.benign).map(|d| d.count).sum();
    let also = if benign > 0 { format!(" (and {benign} harmless, explained below)") } else { String::new() };
    let head = format!("Drops: {total} of the workload's packets died in the kernel{also}");
    let _ = writeln!(s, "\n{}", if total > 0 { style.red(&style.bold(&head)) } else { style.bold(&head) });
    for d in drops {
        let place = if d.device.is_empty() { "(no device)".to_owned() } else { format!("at {}", d.device) };
        let per = d.per_msg.map_or_else(String::new, |p| format!(" ({p:.2} per message)"));
        let _ = writeln!(
            s,
            "  {:>7} × {} in {} {place}{per}",
            d.count,
            style.red(&style.bold(&d.reason)),
            style.yellow(&d.location),
        );
        if let Some(why) = &d.why {
            let _ = writeln!(s, "            why: {why}");
        }
        if let Some(fix) = &d.fix {
            let _ = writeln!(s, "            fix: {}", style.green(fix));
        }
    }
    s
}

/// Drops per reason and location, mode by mode (the comparison's table). Empty when no mode
/// dropped any of its packets.
fn drops_table(s: &mut String, c: &Comparison, style: Style) {
    if c.modes.iter().all(|m| m.drops.is_empty()) {
        return;
    }
    let _ = writeln!(s, "\n  {}", style.dim("drops of the workload's packets, by reason and location:"));
    let _ = writeln!(s, "  {:<12} {:>8} {:<24} location", "mode", "drops", "reason");
    for m in &c.modes {
        if m.drops.is_empty() {
            let _ = writeln!(s, "  {:<12} {:>8}", m.mode, 0);
        }
        for d in &m.drops {
            let _ = writeln!(
                s,
                "  {:<12} {:>8} {:<24} {}{}",
                m.mode,
                d.count,
                d.reason,
                d.location,
                d.why.as_ref().map_or_else(String::new, |w| style.dim(&format!("  ({w})")))
            );
        }
    }
}

/// Modes side by side: one row per mode (msg/s and RTT of the untraced phase when there is
/// one), the tracer's cost per mode (the traced phase against the untraced one), the functions
/// × modes matrix (per message), and what each mode has that `normal` lacks and vice versa.
pub fn render_comparison(c: &Comparison, style: Style, max_functions: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n{}", style.bold("Comparison"));
    let _ = writeln!(
        s,
        "  {:<12} {:>10} {:>9} {:>9} {:>10} {:>9} {:>9} {:>6}",
        "mode", "msg/s", "p50 µs", "p99 µs", "events/msg", "depth", "functions", "lost"
    );
    for m in &c.modes {
        let h = m.headline().map(|(f, _)| f);
        let _ = writeln!(
            s,
            "  {:<12} {:>10} {:>9} {:>9} {:>10} {:>9.1} {:>9} {:>6}",
            m.mode,
            opt(h.map(|f| f.msgs_per_s), 0),
            opt(h.and_then(|f| f.rtt_p50_us), 1),
            opt(h.and_then(|f| f.rtt_p99_us), 1),
            opt(m.events_per_msg, 2),
            m.mean_stack_depth,
            m.functions.len(),
            m.lost
        );
    }
    for (mode, why) in &c.skipped {
        let _ = writeln!(s, "  {:<12} {}", mode, style.dim(&format!("skipped: {why}")));
    }
    if let Some(note) = headline_note(c) {
        let _ = writeln!(s, "  {}", style.dim(&note));
    }
    if c.modes.iter().any(|m| m.workload_cost.is_some()) {
        cost_table(&mut s, c, style);
    }
    drops_table(&mut s, c, style);
    let sampled: Vec<String> =
        c.modes.iter().filter_map(|m| m.stacks.map(|n| format!("{} ({n})", m.mode))).collect();
    if !sampled.is_empty() {
        let _ = writeln!(
            s,
            "  {}",
            style.dim(&format!(
                "stacks not walked for every event in {}: function figures are estimates, and rare functions may be missing",
                sampled.join(", ")
            ))
        );
    }
    if !c.matrix.functions.is_empty() && c.modes.len() > 1 {
        let _ = writeln!(s, "\n  {}", style.dim("events per message whose stack contains the function:"));
        let mut header = format!("  {:<40}", "function");
        for m in &c.matrix.modes {
            let _ = write!(header, " {m:>11}");
        }
        let _ = writeln!(s, "{header}");
        // Functions that differ between modes are the interesting rows: show those first.
        let mut rows: Vec<usize> = (0..c.matrix.functions.len()).collect();
        rows.sort_by_key(|&i| c.matrix.cells[i].iter().all(Option::is_some));
        for &i in rows.iter().take(max_functions) {
            let f = &c.matrix.functions[i];
            let name = if crate::datapath::component(f).is_some() { style.yellow(f) } else { f.clone() };
            let pad = 40usize.saturating_sub(f.chars().count());
            let mut line = format!("  {name}{}", " ".repeat(pad));
            for cell in &c.matrix.cells[i] {
                let _ = write!(line, " {:>11}", opt(*cell, 2));
            }
            let _ = writeln!(s, "{line}");
        }
        if rows.len() > max_functions {
            let _ = writeln!(s, "  … {} more functions (see --html)", rows.len() - max_functions);
        }
    }
    for d in &c.vs_baseline {
        let _ = writeln!(s, "\n  {} vs {}:", style.bold(&d.mode), d.baseline);
        let show = |v: &[String]| if v.is_empty() { "(none)".to_owned() } else { v.join(" ") };
        let _ = writeln!(s, "    only in {}: {}", d.mode, style.yellow(&show(&d.only_here)));
        let _ = writeln!(s, "    only in {}: {}", d.baseline, show(&d.only_baseline));
    }
    if c.modes.len() > 1 {
        s.push_str(&ladders::render_side_by_side(&c.modes.iter().collect::<Vec<_>>(), style));
    }
    s
}

/// Where the comparison's msg/s and RTT come from (None: no mode has workload figures).
pub fn headline_note(c: &Comparison) -> Option<String> {
    let with_workload = c.modes.iter().filter(|m| m.headline().is_some()).count();
    if with_workload == 0 {
        return None;
    }
    Some(if c.traced_figures.is_empty() {
        "msg/s and RTT: the untraced phase (the workload alone, same duration, before tracing)".into()
    } else if c.traced_figures.len() == with_workload {
        "msg/s and RTT: traced (no untraced phase: --no-untraced, or an older recording), the tracer's cost included".into()
    } else {
        format!(
            "msg/s and RTT: the untraced phase, except {} (traced: no untraced phase, the tracer's cost included)",
            c.traced_figures.join(", ")
        )
    })
}

/// The tracer's cost per mode: the traced phase's figures and what tracing took from them.
fn cost_table(s: &mut String, c: &Comparison, style: Style) {
    let _ =
        writeln!(s, "\n  {}", style.dim("the tracer's cost (the same workload traced, against untraced):"));
    let _ = writeln!(
        s,
        "  {:<12} {:>12} {:>13} {:>6} {:>10} {:>9} {:>9}",
        "mode", "traced msg/s", "traced p50 µs", "kept", "+µs/msg", "+p50 µs", "ns/event"
    );
    for m in &c.modes {
        let t = m.traced.as_ref();
        let w = m.workload_cost.as_ref();
        let _ = writeln!(
            s,
            "  {:<12} {:>12} {:>13} {:>6} {:>10} {:>9} {:>9}",
            m.mode,
            opt(t.map(|t| t.msgs_per_s), 0),
            opt(t.and_then(|t| t.rtt_p50_us), 1),
            w.map_or_else(|| "-".to_owned(), |w| format!("{:.0}%", w.kept * 100.0)),
            signed(w.map(|w| w.added_us_per_msg), 1),
            signed(w.and_then(|w| w.added_rtt_p50_us), 1),
            opt(w.and_then(|w| w.ns_per_event), 0)
        );
    }
}

fn signed(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:+.digits$}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        compare::{Comparison, ModeReport},
        counters::Counters,
        recording::{ModeRun, RunBuilder},
        workload::{Pattern, RttSummary, WorkloadReport},
    };

    #[test]
    fn tables_show_every_mode_and_the_differences() {
        let mk = |mode: &str, f: &str| {
            let mut b = RunBuilder::default();
            let s = b.stack(vec!["netif_rx".into(), f.into()]);
            b.add("net:netif_rx", "eth0", 1, 2, Some(s), 10);
            ModeReport::from_run(&b.finish(mode, 1.0, None, Counters::default()), 3)
        };
        let c = Comparison::new(
            vec![mk("normal", "loopback_xmit"), mk("bridge", "veth_xmit")],
            vec![("ipvlan-l2".into(), "kernel lacks ipvlan".into())],
        );
        let text = render_comparison(&c, Style::plain(), 10);
        assert!(text.contains("normal") && text.contains("bridge"));
        assert!(text.contains("skipped: kernel lacks ipvlan"));
        assert!(text.contains("only in bridge: veth_xmit"));
        assert!(text.contains("only in normal: loopback_xmit"));
        // Rows that differ come before shared ones.
        assert!(text.find("veth_xmit").unwrap() < text.rfind("netif_rx").unwrap());
        assert!(!text.contains("the tracer's cost ("), "no cost table without workloads");
        assert!(!text.contains("msg/s and RTT:"), "no figures, no note on them");
        assert!(!text.contains("hop ladders"), "no journeys, no ladders");
        let mut with = c.clone();
        with.modes[1].journeys = Some(ladders::tests::report(1500));
        let text = render_comparison(&with, Style::plain(), 10);
        assert!(text.contains("hop ladders (device, p50 time from the previous hop)"), "{text}");
        assert!(render_mode(&with.modes[1], Style::plain(), 5).contains("Hop ladders (210 packet journeys"));
        let m = render_mode(&c.modes[1], Style::plain(), 5);
        assert!(
            m.contains("Mode bridge")
                && m.contains("veth")
                && m.contains("veth_xmit → netif_rx → net:netif_rx")
        );
        assert!(m.contains("devices (events): eth0@1 10"), "{m}");
    }

    /// A bridge run whose SYNs a DOCKER-USER rule dropped, plus one benign drop at a close.
    pub(crate) fn dropping_run() -> ModeRun {
        use crate::recording::DropCount;
        let mut run = RunBuilder::default().finish("bridge", 1.0, None, Counters::default());
        run.names.add_netns(1, "host");
        run.names.add_peer(1, 5, "server");
        let d = |reason: &str, function: &str, count| DropCount {
            reason: reason.into(),
            function: function.into(),
            location: format!("{function}+0x46f"),
            dev: "veth1a2b".into(),
            netns: 1,
            ifindex: 5,
            last_hop: None,
            multicast: false,
            count,
        };
        run.drops =
            vec![d("NETFILTER_DROP", "nft_do_chain", 4), d("QUEUE_PURGE", "sk_stream_kill_queues", 1)];
        run
    }

    #[test]
    fn drops_show_where_why_and_the_fix_per_mode() {
        let m = ModeReport::from_run(&dropping_run(), 3);
        assert_eq!(m.total_drops(), 4, "the benign drop is not counted");
        let text = render_mode(&m, Style::plain(), 5);
        assert!(
            text.contains(
                "Drops: 4 of the workload's packets died in the kernel (and 1 harmless, explained below)"
            ),
            "{text}"
        );
        assert!(text.contains("4 × NETFILTER_DROP in nft_do_chain+0x46f at veth1a2b(server)@host"), "{text}");
        assert!(
            text.contains("why: iptables dropped the bridged packet")
                && text.contains("fix: check `iptables -vL FORWARD`"),
            "{text}"
        );
        let quiet = ModeReport::from_run(&traced("normal", 10, 10), 3);
        let c = Comparison::new(vec![quiet, m], Vec::new());
        let text = render_comparison(&c, Style::plain(), 10);
        let rows: Vec<&str> =
            text.lines().filter(|l| l.starts_with("  normal ") || l.contains("NETFILTER_DROP")).collect();
        assert!(text.contains("drops of the workload's packets, by reason and location:"), "{text}");
        assert!(
            rows.iter().any(|l| l.contains("NETFILTER_DROP")
                && l.contains("nft_do_chain+0x46f")
                && l.starts_with("  bridge")),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.trim_start().starts_with("normal") && l.trim_end().ends_with(" 0")),
            "{text}"
        );
        // A run without drops says nothing about them.
        assert!(!render_comparison(
            &Comparison::new(vec![c.modes[0].clone()], Vec::new()),
            Style::plain(),
            10
        )
        .contains("drops"));
    }

    #[test]
    fn devices_show_their_names() {
        let mut b = RunBuilder::default();
        b.add("net:netif_rx", "eth0", 7, 2, None, 10);
        b.add("net:netif_rx", "veth1a2b", 1, 5, None, 9);
        b.add("net:netif_rx", "lo", 3, 1, None, 1);
        let mut run = b.finish("bridge", 1.0, None, Counters::default());
        run.names.add_netns(1, "host");
        run.names.add_netns(7, "server");
        run.names.add_peer(1, 5, "server");
        let m = render_mode(&ModeReport::from_run(&run, 3), Style::plain(), 5);
        assert!(m.contains("devices (events): eth0@server 10, veth1a2b(server)@host 9, lo@3 1"), "{m}");
    }

    fn echo(messages: u64, p50: f64) -> WorkloadReport {
        let rtt = RttSummary { p50, p99: p50 * 2.0, max: p50 * 3.0, mean: p50, samples: messages };
        WorkloadReport::new(Pattern::Echo, 1, 42, messages, messages * 42, 1.0, Some(rtt))
    }

    fn traced(mode: &str, messages: u64, events: u64) -> ModeRun {
        let mut b = RunBuilder::default();
        let s = b.stack(vec!["netif_rx".into(), "veth_xmit".into()]);
        b.add("net:netif_rx", "eth0", 1, 2, Some(s), events);
        b.finish(mode, 1.0, Some(echo(messages, 50.0)), Counters::default())
    }

    #[test]
    fn the_comparison_shows_untraced_figures_and_the_cost_beside_them() {
        let mut bridge = traced("bridge", 20_000, 280_000);
        bridge.untraced = Some(echo(40_000, 25.0));
        let mut normal = traced("normal", 30_000, 210_000);
        normal.untraced = Some(echo(40_000, 24.0));
        let reports = |runs: &[&ModeRun]| runs.iter().map(|r| ModeReport::from_run(r, 3)).collect();
        let c = Comparison::new(reports(&[&normal, &bridge]), Vec::new());
        let text = render_comparison(&c, Style::plain(), 10);
        let row =
            |t: &str, mode: &str| t.lines().find(|l| l.trim_start().starts_with(mode)).unwrap().to_owned();
        // The main row: untraced msg/s and RTT.
        assert!(row(&text, "bridge").contains("40000") && row(&text, "bridge").contains("25.0"), "{text}");
        assert!(text.contains("msg/s and RTT: the untraced phase"), "{text}");
        // The cost table: traced msg/s, kept, added time per message, added p50, ns per event.
        let cost = &text[text.find("the tracer's cost (").expect("a cost table")..];
        let b = row(cost, "bridge");
        for cell in ["20000", "50.0", "50%", "+25.0", "+25.0", "1786"] {
            assert!(b.contains(cell), "{cell} not in {b:?}\n{text}");
        }
        let m = render_mode(&c.modes[1], Style::plain(), 5);
        assert!(m.contains("workload untraced: 40000 msg/s, RTT p50 25.0 µs"), "{m}");
        assert!(
            m.contains("workload traced: 20000 msg/s, RTT p50 50.0 µs, p99 100.0 µs; tracing kept 50% (+25.0 µs per message, RTT p50 +25.0 µs, 1786 ns per event)"),
            "{m}"
        );

        // A mode without an untraced phase falls back to its traced figures, and it is said.
        let c = Comparison::new(reports(&[&traced("normal", 30_000, 210_000), &bridge]), Vec::new());
        let text = render_comparison(&c, Style::plain(), 10);
        assert!(row(&text, "normal").contains("30000"), "{text}");
        assert!(text.contains("except normal (traced"), "{text}");
        let cost = &text[text.find("the tracer's cost (").unwrap()..];
        assert!(row(cost, "normal").ends_with('-'), "no cost without an untraced phase: {cost}");
        let c = Comparison::new(reports(&[&traced("normal", 30_000, 210_000)]), Vec::new());
        let text = render_comparison(&c, Style::plain(), 10);
        assert!(text.contains("msg/s and RTT: traced (no untraced phase"), "{text}");
        assert!(!text.contains("the tracer's cost ("), "{text}");
        let m = render_mode(&c.modes[0], Style::plain(), 5);
        assert!(m.contains("  workload: 30000 msg/s, RTT p50 50.0 µs, p99 100.0 µs; 210000 events"), "{m}");
    }
}
