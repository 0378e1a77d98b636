//! The end-of-run summary of a trace and the tracer's cost, as terminal text. Names that came
//! from the kernel (device names) are shown with control characters escaped.
use crate::{cost::TracerCost, counters::Counters, render::style::Style, summary::TraceReport};

/// What following packets did and lost (None when journeys were off or saw nothing):
/// journeys cut short by a full tracking array and a full hop histogram map are losses.
pub fn journeys_line(c: &Counters) -> Option<String> {
    if c.journeys == 0 {
        return None;
    }
    let mut line = format!(
        "journeys: {} packets followed   cut short (tracking slot taken): {}   address reused: {}   freed: {}   headers unreadable: {} events",
        c.journeys, c.journey_evicted, c.journey_reused, c.journey_ended, c.headers_unreadable
    );
    if c.hop_hist_full > 0 {
        line.push_str(&format!("   hop histogram map full: {}", c.hop_hist_full));
    }
    Some(line)
}

/// The end-of-run summary as text.
pub fn render_summary(r: &TraceReport, style: Style, max_functions: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let c = &r.counters;
    let m = &r.summary;
    let rate = if r.duration_s > 0.0 { m.total_events as f64 / r.duration_s } else { 0.0 };
    let _ = writeln!(
        s,
        "{}",
        style.bold(&format!(
            "dockertrace: {} events in {:.1} s ({:.0}/s)",
            m.total_events, r.duration_s, rate
        ))
    );
    let lost_line = format!(
        "lost: {} (ring buffer full)   stack errors: {} (+{} bucket collisions)   decode errors: {}   filtered in kernel: {}",
        c.ring_full, c.stack_error, c.stack_collision, r.decode_errors, c.filtered
    );
    let mut lost_line = lost_line;
    if c.agg_full > 0 {
        lost_line.push_str(&format!("   aggregation map full: {}", c.agg_full));
    }
    let _ = writeln!(s, "{}", if c.lost() > 0 { style.red(&lost_line) } else { style.green(&lost_line) });
    if c.cbpf_accepted + c.cbpf_rejected + c.cbpf_followed > 0 {
        let _ = writeln!(
            s,
            "pcap filter (in kernel): {} events matched   {} followed on a matched journey   {} rejected",
            c.cbpf_accepted, c.cbpf_followed, c.cbpf_rejected
        );
    }
    if let Some(line) = journeys_line(c) {
        let bad = c.journey_evicted > 0 || c.hop_hist_full > 0;
        let _ = writeln!(s, "{}", if bad { style.red(&line) } else { style.green(&line) });
    }
    if !m.events.is_empty() {
        let _ = writeln!(s, "\n{}", style.bold("Events"));
        for e in &m.events {
            let _ = writeln!(s, "  {:<40} {:>10}", e.name, e.count);
        }
    }
    if !m.devices.is_empty() {
        let _ = writeln!(s, "\n{}", style.bold("Devices (name@netns, ifindex)"));
        for d in &m.devices {
            // `eth0@server`, `veth1a2b(server)@host`, `eth0@4026532290` (escaped).
            let label = format!("{} ({})", d.label(), d.ifindex);
            let _ = writeln!(s, "  {label:<40} {:>10}", d.events);
        }
    }
    if !m.functions.is_empty() {
        let _ = writeln!(
            s,
            "\n{}",
            style.bold(&format!("Kernel functions in stacks ({} distinct, by events)", m.functions.len()))
        );
        if let Some(mode) = r.estimated_stacks() {
            let _ = writeln!(
                s,
                "  (stacks: {mode}, not walked for every event: these counts are estimates; the event counts above are exact)"
            );
        }
        if c.stack_shared > 0 {
            let note = format!(
                "  ({} exit events, e.g. net_dev_xmit, took their entry event's stack: both fire in the same call)",
                c.stack_shared
            );
            let _ = writeln!(s, "{}", style.dim(&note));
        }
        for f in m.functions.iter().take(max_functions) {
            let _ = writeln!(s, "  {:<40} {:>10}", f.name, f.count);
        }
        if m.functions.len() > max_functions {
            let rest: Vec<&str> = m.functions[max_functions..].iter().map(|f| f.name.as_str()).collect();
            let _ = writeln!(s, "  … and {}: {}", rest.len(), rest.join(" "));
        }
    }
    s.push_str(&crate::render::tables::render_drops(&m.drops, style));
    if !r.attach.is_empty() {
        let _ = writeln!(s, "{}", style.dim(&format!("tracepoints attached as {}", r.attach)));
    }
    if !r.probes.is_empty() {
        let _ = writeln!(s, "\n{}", style.bold("Datapath probes"));
        for p in &r.probes {
            let _ = writeln!(s, "  {p}");
        }
    }
    if let Some(cost) = &r.cost {
        s.push_str(&render_cost(cost, r.duration_s, style));
    }
    s
}

/// The hop ladders of the trace's packet journeys (empty without journeys).
pub fn render_journeys(r: &TraceReport, style: Style) -> String {
    r.summary.journeys.as_ref().map_or_else(String::new, |j| crate::render::ladders::render_ladders(j, style))
}

/// The tracer's own cost, and each program's with `--stats`.
pub fn render_cost(c: &TracerCost, duration_s: f64, style: Style) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let share = if duration_s > 0.0 {
        format!(" ({:.1}% of one CPU)", 100.0 * c.cpu_s / duration_s)
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "\n{} attach {:.0} ms, CPU {:.2} s{share}, peak memory {:.1} MiB",
        style.bold("Tracer cost:"),
        c.attach_s * 1e3,
        c.cpu_s,
        c.peak_rss_kib as f64 / 1024.0
    );
    if !c.programs.is_empty() {
        let total_ns: u64 = c.programs.iter().map(|p| p.run_ns).sum();
        let _ = writeln!(
            s,
            "\n{}",
            style.bold(&format!(
                "eBPF programs (kernel run-time statistics; {:.1} ms in all)",
                total_ns as f64 / 1e6
            ))
        );
        let _ = writeln!(s, "  {:<40} {:>12} {:>10} {:>12}", "attached to", "runs", "avg ns", "total ms");
        let mut progs: Vec<_> = c.programs.iter().collect();
        progs.sort_by(|a, b| b.run_ns.cmp(&a.run_ns).then(a.program.cmp(&b.program)));
        for p in progs {
            let label = if p.emits { p.program.clone() } else { format!("{} (pairing)", p.program) };
            let _ = writeln!(
                s,
                "  {label:<40} {:>12} {:>10.0} {:>12.2}",
                p.runs,
                p.avg_ns(),
                p.run_ns as f64 / 1e6
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        aggregate::{Aggregate, Counted},
        cost::ProgramCost,
        counters::Counters,
        stacks::{Frame, Stack, StackMode},
    };

    #[test]
    fn summary_lists_counts_and_loss() {
        let stack = Arc::new(Stack {
            frames: ["veth_xmit", "netif_rx"]
                .iter()
                .map(|f| Frame { addr: 0, function: Arc::from(*f), offset: 0, module: None })
                .collect(),
        });
        let mut a = Aggregate::new(StackMode::Every);
        let name: Arc<str> = Arc::from("net:netif_rx");
        a.add_counted(
            Counted { kind: 1, name: &name, dev: None, stack_id: 0, stack: Some(&stack), class: 0 },
            4,
        );
        let r = TraceReport::new(&a, 2.0, Counters::default());
        let text = render_summary(&r, Style::plain(), 1);
        assert!(text.contains("4 events in 2.0 s"));
        assert!(text.contains("lost: 0"));
        assert!(text.contains("net:netif_rx"));
        assert!(text.contains("2 distinct"));
        assert!(text.contains("… and 1: veth_xmit"), "{text}");
        assert!(!text.contains("aggregation map full"));
        let mut r = r;
        r.counters.agg_full = 3;
        assert!(render_summary(&r, Style::plain(), 1).contains("aggregation map full: 3"));
        assert!(!text.contains("Tracer cost"));
    }

    #[test]
    fn devices_show_names_once_known() {
        let mut a = Aggregate::new(StackMode::Every);
        let name: Arc<str> = Arc::from("net:netif_rx");
        a.add(&crate::decode::TracedEvent::named("net:netif_rx").on(7, 2, "eth0"));
        a.add(&crate::decode::TracedEvent::named(&name).on(1, 5, "veth1a2b"));
        let mut r = TraceReport::new(&a, 1.0, Counters::default());
        let text = render_summary(&r, Style::plain(), 5);
        assert!(text.contains("eth0@7 (2)") && text.contains("veth1a2b@1 (5)"), "{text}");
        let mut names = crate::names::Names::default();
        names.add_netns(7, "server");
        names.add_netns(1, "host");
        names.add_peer(1, 5, "server");
        r.summary.apply_names(&names);
        let text = render_summary(&r, Style::plain(), 5);
        assert!(text.contains("eth0@server (2)") && text.contains("veth1a2b(server)@host (5)"), "{text}");
        assert_eq!(r.summary.devices.iter().find(|d| d.ifindex == 5).unwrap().key, "veth(server)@host");
    }

    #[test]
    fn cost_lines_show_share_and_programs() {
        let c = TracerCost {
            attach_s: 0.25,
            cpu_s: 0.5,
            peak_rss_kib: 20 * 1024,
            programs: vec![
                ProgramCost { program: "net:netif_rx".into(), emits: true, runs: 10, run_ns: 5_000_000 },
                ProgramCost {
                    program: "net:netif_rx_entry".into(),
                    emits: false,
                    runs: 10,
                    run_ns: 1_000_000,
                },
            ],
        };
        let text = render_cost(&c, 2.0, Style::plain());
        assert!(
            text.contains("attach 250 ms, CPU 0.50 s (25.0% of one CPU), peak memory 20.0 MiB"),
            "{text}"
        );
        assert!(text.contains("6.0 ms in all"), "{text}");
        let rx = text.lines().find(|l| l.contains("net:netif_rx ")).unwrap();
        assert!(rx.contains(" 10 ") && rx.contains(" 500000 ") && rx.contains(" 5.00"), "{rx}");
        assert!(text.contains("net:netif_rx_entry (pairing)"));
        let first = text.lines().position(|l| l.contains("net:netif_rx ")).unwrap();
        let second = text.lines().position(|l| l.contains("netif_rx_entry")).unwrap();
        assert!(first < second, "costliest first");
    }

    #[test]
    fn the_journeys_line_shows_what_tracking_saw_and_lost() {
        assert_eq!(journeys_line(&Counters::default()), None);
        let c = Counters { journeys: 10, journey_evicted: 2, journey_reused: 7, ..Default::default() };
        let line = journeys_line(&c).unwrap();
        assert!(
            line.contains("10 packets followed") && line.contains("cut short (tracking slot taken): 2"),
            "{line}"
        );
        assert!(line.contains("address reused: 7") && !line.contains("histogram"), "{line}");
    }
}
