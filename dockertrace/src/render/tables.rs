//! Text tables of per-mode reports and of the comparison of modes.
use std::fmt::Write as _;

use crate::{
    compare::{Comparison, ModeReport},
    render::style::Style,
};

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
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
    let _ = writeln!(
        s,
        "  workload: {} msg/s, RTT p50 {} µs, p99 {} µs; {} events, {} per message; lost {}; stack errors {}",
        opt(m.msgs_per_s, 0),
        opt(m.rtt_p50_us, 1),
        opt(m.rtt_p99_us, 1),
        m.total_events,
        opt(m.events_per_msg, 2),
        m.lost,
        m.stack_errors
    );
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
    if !m.top_paths.is_empty() {
        let _ = writeln!(s, "  {}", style.dim("top stack paths (outermost → innermost → event):"));
        for p in &m.top_paths {
            let chain: Vec<&str> = p.frames.iter().rev().map(String::as_str).collect();
            let _ = writeln!(s, "    {:>9} × {} → {}", p.count, chain.join(" → "), style.cyan(&p.event));
        }
    }
    s
}

/// Modes side by side: one row per mode, the functions × modes matrix (per message), and what
/// each mode has that `normal` lacks and vice versa.
pub fn render_comparison(c: &Comparison, style: Style, max_functions: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n{}", style.bold("Comparison"));
    let _ = writeln!(
        s,
        "  {:<12} {:>10} {:>9} {:>9} {:>10} {:>9} {:>9} {:>6}",
        "mode", "msg/s", "p50 µs", "p99 µs", "events/msg", "depth", "functions", "lost"
    );
    for m in &c.modes {
        let _ = writeln!(
            s,
            "  {:<12} {:>10} {:>9} {:>9} {:>10} {:>9.1} {:>9} {:>6}",
            m.mode,
            opt(m.msgs_per_s, 0),
            opt(m.rtt_p50_us, 1),
            opt(m.rtt_p99_us, 1),
            opt(m.events_per_msg, 2),
            m.mean_stack_depth,
            m.functions.len(),
            m.lost
        );
    }
    for (mode, why) in &c.skipped {
        let _ = writeln!(s, "  {:<12} {}", mode, style.dim(&format!("skipped: {why}")));
    }
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
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        compare::{Comparison, ModeReport},
        counters::Counters,
        recording::RunBuilder,
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
        let m = render_mode(&c.modes[1], Style::plain(), 5);
        assert!(
            m.contains("Mode bridge")
                && m.contains("veth")
                && m.contains("veth_xmit → netif_rx → net:netif_rx")
        );
    }
}
