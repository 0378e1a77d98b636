//! The live stream on the terminal: one line per event, capped to a readable rate; what does
//! not fit is summarized once a second. Never blocks the kernel side: the ring buffer absorbs
//! bursts and this sink only formats what it prints.
use std::{collections::HashMap, io::Write, sync::Arc};

use crate::{
    cost::TracerCost,
    decode::{printable, TracedEvent},
    pipeline::{Progress, Sink},
    sinks::style::Style,
    summary::TraceReport,
};

/// Prints events as they arrive.
pub struct LiveSink<W: Write> {
    out: W,
    style: Style,
    /// Lines per second at most (0: unlimited).
    cap: u32,
    shown_this_second: u32,
    suppressed: HashMap<Arc<str>, u64>,
    first_ts: Option<u64>,
    last_lost: u64,
    last_stack_errors: u64,
    header_done: bool,
}

impl<W: Write> LiveSink<W> {
    pub fn new(out: W, style: Style, cap: u32) -> Self {
        LiveSink {
            out,
            style,
            cap,
            shown_this_second: 0,
            suppressed: HashMap::new(),
            first_ts: None,
            last_lost: 0,
            last_stack_errors: 0,
            header_done: false,
        }
    }

    /// One event as a line (without newline).
    pub fn format(&self, ev: &TracedEvent, t0: u64) -> String {
        let t = ev.ts_ns.saturating_sub(t0) as f64 / 1e9;
        // Kernel strings print escaped (`KernelStr`'s Display): a task or device name cannot
        // drive the terminal.
        let dev = match &ev.dev {
            Some(d) if d.name.is_empty() => format!("?@{}", d.netns),
            Some(d) => format!("{}@{}", d.name, d.netns),
            None => ev.name_only.as_ref().map_or_else(|| "-".to_owned(), |n| n.to_string()),
        };
        let func = ev.stack.as_ref().and_then(|s| s.innermost_datapath()).unwrap_or("");
        format!(
            "{} {} {:<15} {} {:<24} len={:<5} {}",
            self.style.dim(&format!("{t:>10.6}")),
            self.style.dim(&format!("cpu{:<2}", ev.cpu)),
            ev.comm.to_string(),
            self.style.cyan(&format!("{:<30}", ev.name)),
            dev,
            ev.len,
            self.style.yellow(func)
        )
    }

    fn header(&mut self) -> std::io::Result<()> {
        if !self.header_done {
            self.header_done = true;
            let h = format!(
                "{:>10} {:<5} {:<15} {:<30} {:<24} {:<9} {}",
                "TIME(s)", "CPU", "COMM", "EVENT", "DEV@NETNS", "LEN", "DATAPATH"
            );
            writeln!(self.out, "{}", self.style.bold(&h))?;
        }
        Ok(())
    }
}

impl<W: Write> Sink for LiveSink<W> {
    fn event(&mut self, ev: &TracedEvent) -> anyhow::Result<()> {
        let t0 = *self.first_ts.get_or_insert(ev.ts_ns);
        if self.cap != 0 && self.shown_this_second >= self.cap {
            *self.suppressed.entry(ev.name.clone()).or_default() += 1;
            return Ok(());
        }
        self.shown_this_second += 1;
        self.header()?;
        let line = self.format(ev, t0);
        writeln!(self.out, "{line}")?;
        Ok(())
    }

    fn tick(&mut self, p: &Progress) -> anyhow::Result<()> {
        self.shown_this_second = 0;
        if !self.suppressed.is_empty() {
            let total: u64 = self.suppressed.values().sum();
            let mut top: Vec<_> = self.suppressed.drain().collect();
            top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let list: Vec<String> = top.iter().take(4).map(|(n, c)| format!("{n} ×{c}")).collect();
            let more = if top.len() > 4 { ", …" } else { "" };
            let line = format!("  … {total} more events not shown ({}{more})", list.join(", "));
            writeln!(self.out, "{}", self.style.dim(&line))?;
        }
        let lost = p.counters.lost();
        let stack_errors = p.counters.stack_error + p.counters.stack_collision;
        if lost != self.last_lost || stack_errors != self.last_stack_errors {
            let why = if p.counters.agg_full > 0 {
                "ring buffer or aggregation map full"
            } else {
                "ring buffer full"
            };
            let line = format!("  ! lost so far: {lost} events ({why}); stack errors: {stack_errors}");
            writeln!(self.out, "{}", self.style.red(&line))?;
            self.last_lost = lost;
            self.last_stack_errors = stack_errors;
        }
        self.out.flush()?;
        Ok(())
    }

    fn finish(&mut self, _r: &TraceReport) -> anyhow::Result<()> {
        let p = Progress { elapsed: Default::default(), events: 0, counters: Default::default() };
        // Flush the last second's summary line, without repeating counters.
        let saved = (self.last_lost, self.last_stack_errors);
        self.last_lost = 0;
        self.last_stack_errors = 0;
        self.tick(&p)?;
        (self.last_lost, self.last_stack_errors) = saved;
        Ok(())
    }
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
    if !m.events.is_empty() {
        let _ = writeln!(s, "\n{}", style.bold("Events"));
        for e in &m.events {
            let _ = writeln!(s, "  {:<40} {:>10}", e.name, e.count);
        }
    }
    if !m.devices.is_empty() {
        let _ = writeln!(s, "\n{}", style.bold("Devices (name@netns, ifindex)"));
        for d in &m.devices {
            let label = format!("{}@{} ({})", printable(&d.dev), d.netns, d.ifindex);
            let _ = writeln!(s, "  {label:<40} {:>10}", d.events);
        }
    }
    if !m.functions.is_empty() {
        let _ = writeln!(
            s,
            "\n{}",
            style.bold(&format!("Kernel functions in stacks ({} distinct, by events)", m.functions.len()))
        );
        if r.stack_sample() > 1 {
            let _ = writeln!(
                s,
                "  (stacks sampled 1 in {}: these counts are estimates; the event counts above are exact)",
                r.stack_sample()
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
    use super::*;
    use crate::{
        aggregate::{Aggregate, Counted},
        cost::ProgramCost,
        counters::Counters,
        decode::{Device, KernelStr},
        stacks::{Frame, Stack},
    };

    fn ev(ts: u64) -> TracedEvent {
        TracedEvent { ts_ns: ts, len: 60, ..TracedEvent::named("net:netif_rx").on(99, 2, "eth0") }
    }

    #[test]
    fn caps_the_rate_and_summarizes_the_rest() {
        let mut sink = LiveSink::new(Vec::new(), Style::plain(), 3);
        for i in 0..10 {
            sink.event(&ev(1_000_000_000 + i)).unwrap();
        }
        let p = Progress { elapsed: Default::default(), events: 10, counters: Counters::default() };
        sink.tick(&p).unwrap();
        let text = String::from_utf8(sink.out.clone()).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 1 + 3 + 1, "{text}");
        assert!(lines[1].contains("eth0@99"));
        assert!(lines[1].trim_start().starts_with("0.000000"));
        assert!(lines[4].contains("7 more events not shown (net:netif_rx ×7)"), "{text}");
    }

    #[test]
    fn reports_loss_when_it_changes() {
        let mut sink = LiveSink::new(Vec::new(), Style::plain(), 0);
        let c = Counters { ring_full: 5, ..Default::default() };
        sink.tick(&Progress { elapsed: Default::default(), events: 0, counters: c }).unwrap();
        sink.tick(&Progress { elapsed: Default::default(), events: 0, counters: c }).unwrap();
        let text = String::from_utf8(sink.out).unwrap();
        assert_eq!(text.matches("lost so far: 5").count(), 1, "{text}");
    }

    #[test]
    fn summary_lists_counts_and_loss() {
        let stack = Arc::new(Stack {
            frames: ["veth_xmit", "netif_rx"]
                .iter()
                .map(|f| Frame { addr: 0, function: Arc::from(*f), offset: 0, module: None })
                .collect(),
        });
        let mut a = Aggregate::new(1);
        let name: Arc<str> = Arc::from("net:netif_rx");
        a.add_counted(Counted { name: &name, dev: None, stack_id: 0, stack: Some(&stack) }, 4);
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
    fn kernel_strings_reach_the_terminal_escaped() {
        let evil = "\x1b[31mEVIL\x1b[0m";
        let mut e = ev(1);
        e.comm = KernelStr::from(evil);
        e.dev = Some(Device { netns: 9, ifindex: 3, name: KernelStr::from("v\x1b]0;t\x07") });
        let mut sink = LiveSink::new(Vec::new(), Style::plain(), 0);
        sink.event(&e).unwrap();
        let mut a = Aggregate::new(1);
        a.add(&e);
        let summary = render_summary(&TraceReport::new(&a, 1.0, Counters::default()), Style::plain(), 5);
        for text in [String::from_utf8(sink.out).unwrap(), summary] {
            assert!(!text.contains('\x1b') && !text.contains('\x07'), "raw control bytes in {text:?}");
            assert!(text.contains("v\\x1b]0;t\\x07@9"), "{text}");
        }
        let line = LiveSink::new(Vec::new(), Style::plain(), 0).format(&e, 0);
        assert!(line.contains("\\x1b[31mEVIL\\x1b[0m"), "{line}");
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
}
