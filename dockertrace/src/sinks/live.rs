//! The live stream on the terminal: one line per event, capped to a readable rate; what does
//! not fit is summarized once a second. Never blocks the kernel side: the ring buffer absorbs
//! bursts and this sink only formats what it prints.
use std::{io::Write, sync::Arc};

use foldhash::HashMap as FastMap;

use crate::{
    decode::TracedEvent,
    pipeline::{Progress, Sink},
    render::style::Style,
    summary::TraceReport,
};

/// Prints events as they arrive.
pub struct LiveSink<W: Write> {
    out: W,
    style: Style,
    /// Lines per second at most (0: unlimited).
    cap: u32,
    shown_this_second: u32,
    /// Events not shown this second, by kind (with the kind's name).
    suppressed: FastMap<u32, (Arc<str>, u64)>,
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
            suppressed: FastMap::default(),
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
            self.suppressed.entry(ev.kind).or_insert_with(|| (ev.name.clone(), 0)).1 += 1;
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
            let total: u64 = self.suppressed.values().map(|(_, n)| n).sum();
            let mut top: Vec<(Arc<str>, u64)> = self.suppressed.drain().map(|(_, v)| v).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::Aggregate,
        counters::Counters,
        decode::{Device, KernelStr},
        render::summary::render_summary,
        stacks::StackMode,
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
    fn kernel_strings_reach_the_terminal_escaped() {
        let evil = "\x1b[31mEVIL\x1b[0m";
        let mut e = ev(1);
        e.comm = KernelStr::from(evil);
        e.dev = Some(Device { netns: 9, ifindex: 3, name: KernelStr::from("v\x1b]0;t\x07") });
        let mut sink = LiveSink::new(Vec::new(), Style::plain(), 0);
        sink.event(&e).unwrap();
        let mut a = Aggregate::new(StackMode::Every);
        a.add(&e);
        let summary = render_summary(&TraceReport::new(&a, 1.0, Counters::default()), Style::plain(), 5);
        for text in [String::from_utf8(sink.out).unwrap(), summary] {
            assert!(!text.contains('\x1b') && !text.contains('\x07'), "raw control bytes in {text:?}");
            assert!(text.contains("v\\x1b]0;t\\x07@9"), "{text}");
        }
        let line = LiveSink::new(Vec::new(), Style::plain(), 0).format(&e, 0);
        assert!(line.contains("\\x1b[31mEVIL\\x1b[0m"), "{line}");
    }
}
