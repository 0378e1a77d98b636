//! The live stream on the terminal: one line per event, capped to a readable rate; what does
//! not fit is summarized once a second. Never blocks the kernel side: the ring buffer absorbs
//! bursts and this sink only formats what it prints.
use std::{io::Write, sync::Arc};

use foldhash::HashMap as FastMap;

use crate::{
    decode::TracedEvent,
    names::Names,
    pipeline::{Progress, Sink},
    render::style::Style,
    summary::TraceReport,
};

/// A duration in ns as µs with one decimal (`3.2µs`), or ms beyond 10 ms.
pub fn micros(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.1}ms", ns as f64 / 1e6)
    } else {
        format!("{:.1}µs", ns as f64 / 1e3)
    }
}

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
    /// What namespaces and devices are called (`eth0@server`; inodes where unknown).
    names: Arc<Names>,
    /// Drop lines shown this second: drops are not held to `cap`, only to [`DROP_CAP`].
    drops_this_second: u32,
    /// Drops not shown this second, by (reason, location): counted on screen at the tick.
    drops_suppressed: FastMap<(String, String), u64>,
}

/// Drop lines per second at most (beyond them, drops are counted on screen by reason and
/// location, never lost from view). The event cap does not apply to drops.
pub const DROP_CAP: u32 = 50;

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
            names: Arc::default(),
            drops_this_second: 0,
            drops_suppressed: FastMap::default(),
        }
    }

    /// Shows devices by these names (`eth0@server`, `veth1a2b(server)@host`).
    pub fn with_names(mut self, names: Arc<Names>) -> Self {
        self.names = names;
        self
    }

    /// One event as a line (without newline).
    pub fn format(&self, ev: &TracedEvent, t0: u64) -> String {
        let t = ev.ts_ns.saturating_sub(t0) as f64 / 1e9;
        // Kernel strings print escaped (`KernelStr`'s Display): a task or device name cannot
        // drive the terminal.
        let dev = match &ev.dev {
            Some(d) if self.names.is_empty() && d.name.is_empty() => format!("?@{}", d.netns),
            Some(d) if self.names.is_empty() => format!("{}@{}", d.name, d.netns),
            Some(d) => self.names.device(&d.name.to_string(), d.netns, d.ifindex),
            None => ev.name_only.as_ref().map_or_else(|| "-".to_owned(), |n| n.to_string()),
        };
        if let Some(d) = &ev.drop {
            return self.format_drop(ev, d, t, &dev);
        }
        let func = ev.stack.as_ref().and_then(|s| s.innermost_datapath()).unwrap_or("");
        let mut line = format!(
            "{} {} {:<15} {} {:<24} len={:<5}",
            self.style.dim(&format!("{t:>10.6}")),
            self.style.dim(&format!("cpu{:<2}", ev.cpu)),
            ev.comm.to_string(),
            self.style.cyan(&format!("{:<30}", ev.name)),
            dev,
            ev.len,
        );
        if let Some(h) = &ev.hop {
            let delta = if h.hop == 0 { "new".to_owned() } else { format!("+{}", micros(h.delta_ns)) };
            line.push_str(&format!(" {} {:>7}", self.style.dim(&format!("{:<10}", h.label())), delta));
        }
        if let Some(r) = &ev.ret {
            let label = crate::packet::packet_label(r.packet);
            let what = if ev.is_clone_link() { "cloned on hop" } else { "returned from hop" };
            line.push_str(&format!(
                " {} {what} {} after {}",
                self.style.dim(&format!("{label:<10}")),
                r.hop,
                micros(r.duration_ns)
            ));
        }
        if let Some(p) = ev.parent {
            line.push_str(&format!(" clone of {}", crate::packet::packet_label(p)));
        }
        if let Some(hdr) = &ev.headers {
            line.push(' ');
            line.push_str(&hdr.to_string());
        }
        if !func.is_empty() {
            line.push(' ');
            line.push_str(&self.style.yellow(func));
        }
        line
    }

    /// A drop: `DROP NETFILTER_DROP at nf_hook_slow+0x9e on vethXc(client)@host`, then the
    /// journey it ends and the packet's headers.
    fn format_drop(&self, ev: &TracedEvent, d: &crate::drops::Drop, t: f64, dev: &str) -> String {
        let place = match (&ev.dev, &ev.last_hop) {
            (Some(_), _) => format!("on {dev}"),
            (None, Some(h)) => {
                format!("after {}", self.names.device(&h.name.to_string(), h.netns, h.ifindex))
            }
            (None, None) => "(no device)".to_owned(),
        };
        let facts = crate::hints::DropFacts {
            mode: "",
            reason: &d.site.reason,
            function: &d.site.function,
            device: "",
            multicast: ev.headers.as_ref().is_some_and(|h| h.is_multicast()),
        };
        // Drops that belong to a normal close (`QUEUE_PURGE`) are shown, but do not alarm.
        let benign = crate::hints::hint(&facts).is_some_and(|r| r.benign);
        let (tag, reason) = if benign {
            (self.style.dim(" drop "), self.style.dim(&d.site.reason))
        } else {
            (self.style.alarm(" DROP "), self.style.red(&self.style.bold(&d.site.reason)))
        };
        let mut line = format!(
            "{} {} {:<15} {tag} {reason} at {} {place}",
            self.style.dim(&format!("{t:>10.6}")),
            self.style.dim(&format!("cpu{:<2}", ev.cpu)),
            ev.comm.to_string(),
            self.style.yellow(&d.site.location),
        );
        if let Some(h) = &ev.hop {
            line.push_str(&format!(" ends {} at hop {}", h.label(), h.hop));
        }
        if let Some(hdr) = &ev.headers {
            line.push(' ');
            line.push_str(&hdr.to_string());
        }
        line
    }

    fn header(&mut self) -> std::io::Result<()> {
        if !self.header_done {
            self.header_done = true;
            let h = format!(
                "{:>10} {:<5} {:<15} {:<30} {:<24} {:<9} {}",
                "TIME(s)", "CPU", "COMM", "EVENT", "DEV@NETNS", "LEN", "PACKET  +HOP  HEADERS  DATAPATH"
            );
            writeln!(self.out, "{}", self.style.bold(&h))?;
        }
        Ok(())
    }
}

impl<W: Write> Sink for LiveSink<W> {
    fn event(&mut self, ev: &TracedEvent) -> anyhow::Result<()> {
        let t0 = *self.first_ts.get_or_insert(ev.ts_ns);
        if let Some(d) = &ev.drop {
            if self.drops_this_second >= DROP_CAP {
                let k = (d.site.reason.clone(), d.site.location.clone());
                *self.drops_suppressed.entry(k).or_default() += 1;
                return Ok(());
            }
            self.drops_this_second += 1;
            self.header()?;
            let line = self.format(ev, t0);
            writeln!(self.out, "{line}")?;
            return Ok(());
        }
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
        self.drops_this_second = 0;
        if !self.drops_suppressed.is_empty() {
            let mut top: Vec<((String, String), u64)> = self.drops_suppressed.drain().collect();
            let total: u64 = top.iter().map(|(_, n)| n).sum();
            top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let list: Vec<String> = top.iter().map(|((r, l), n)| format!("{r} at {l} ×{n}")).collect();
            let line = format!("  ! {total} more drops ({})", list.join(", "));
            writeln!(self.out, "{}", self.style.red(&line))?;
        }
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

    fn drop_ev(ts: u64) -> TracedEvent {
        let mut d = crate::drops::DropDecoder::default();
        TracedEvent {
            ts_ns: ts,
            drop: Some(d.drop(Some(12), 0)),
            ..TracedEvent::named("skb:kfree_skb").on(99, 4, "veth0")
        }
    }

    #[test]
    fn drops_stand_out_and_are_never_capped_away() {
        let mut sink = LiveSink::new(Vec::new(), Style::plain(), 1);
        sink.event(&ev(1)).unwrap();
        sink.event(&ev(2)).unwrap(); // over the cap of 1
        for i in 0..(DROP_CAP + 5) {
            sink.event(&drop_ev(3 + u64::from(i))).unwrap();
        }
        let p = Progress { elapsed: Default::default(), events: 0, counters: Counters::default() };
        sink.tick(&p).unwrap();
        let text = String::from_utf8(sink.out.clone()).unwrap();
        let drops = text.lines().filter(|l| l.contains(" DROP ")).count();
        assert_eq!(drops, DROP_CAP as usize, "{text}");
        assert!(
            text.lines().any(|l| l.contains("DROP") && l.contains("reason 0xc at 0x0 on veth0@99")),
            "{text}"
        );
        assert!(text.contains("! 5 more drops (reason 0xc at 0x0 ×5)"), "{text}");
        assert!(text.contains("1 more events not shown"), "{text}");
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
    fn a_packet_line_shows_its_journey_and_tuple() {
        use crate::packet::Hop;
        let e = TracedEvent {
            hop: Some(Hop {
                packet: (1 << 48) | 5,
                hop: 2,
                delta_ns: 3200,
                reused: false,
                evicted: false,
                end: false,
            }),
            headers: Some(crate::packet::sample_segment(1, 1)),
            ..ev(5)
        };
        let line = LiveSink::new(Vec::new(), Style::plain(), 0).format(&e, 0);
        assert!(line.contains("#0.5"), "{line}");
        assert!(line.contains("+3.2µs 10.213.0.3:41234 → 10.213.0.2:10000 TCP [P.] len 42"), "{line}");
        assert_eq!(micros(25_000_000), "25.0ms");
    }

    #[test]
    fn devices_show_their_names() {
        let mut names = Names::default();
        names.add_netns(99, "server");
        names.add_netns(1, "host");
        names.add_peer(1, 7, "server");
        let sink = LiveSink::new(Vec::new(), Style::plain(), 0).with_names(Arc::new(names));
        assert!(sink.format(&ev(1), 0).contains(" eth0@server "));
        let host = TracedEvent::named("net:netif_rx").on(1, 7, "veth1a2b");
        assert!(sink.format(&host, 0).contains(" veth1a2b(server)@host "));
        let other = TracedEvent::named("net:netif_rx").on(5, 2, "\x1b");
        assert!(sink.format(&other, 0).contains(" \\x1b@5 "), "{}", sink.format(&other, 0));
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
