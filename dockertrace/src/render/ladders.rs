//! Hop ladders ([`JourneyReport`]) as text tables, side by side for several modes, and as an
//! SVG latency waterfall for the HTML page. Device names came from the kernel: text output
//! escapes control characters ([`crate::journeys::device_label`]), SVG output HTML-escapes.
use std::fmt::Write as _;

use crate::{
    compare::ModeReport,
    journeys::{DirectionLadder, JourneyReport, LadderHop, LadderSource},
    render::{html::escape, style::Style},
};

/// A duration for people: `850 ns`, `1.2 µs`, `14 µs`, `3.40 ms`.
pub fn ns(v: u64) -> String {
    let f = v as f64;
    if v < 1_000 {
        format!("{v} ns")
    } else if v < 10_000 {
        format!("{:.1} µs", f / 1e3)
    } else if v < 1_000_000 {
        format!("{:.0} µs", f / 1e3)
    } else {
        format!("{:.2} ms", f / 1e6)
    }
}

/// `ARP 2, handshake 3, retransmits 0, ...`: the direction's other paths, with the data
/// packets that took other hops first.
pub fn other_paths(d: &DirectionLadder) -> String {
    let mut parts = Vec::new();
    if d.other_data_packets() > 0 {
        parts.push(format!("other data paths {}", d.other_data_packets()));
    }
    parts.extend(d.other.iter().map(|t| format!("{} {}", t.path, t.packets)));
    parts.join(", ")
}

/// One line about a direction: its packets and its one-way time.
fn direction_line(d: &DirectionLadder) -> String {
    format!(
        "{} ({}): {} data packets, {} on this ladder of {} hops; one-way in the kernel p50 {}, p99 {}",
        d.direction,
        d.label,
        d.data_packets,
        d.ladder_packets,
        d.hops.len(),
        ns(d.one_way_p50_ns),
        ns(d.one_way_p99_ns)
    )
}

/// The ladders of one run: per direction a table (hop #, event, device, datapath function,
/// p50 Δ, p99 Δ, p50 cumulated) and the other paths its packets took.
pub fn render_ladders(j: &JourneyReport, style: Style) -> String {
    let mut s = String::new();
    let how = match j.source {
        LadderSource::Journeys => format!("{} packet journeys", j.journeys),
        LadderSource::HopPairs => format!("≈{} packets, from the kernel's hop-pair histograms", j.journeys),
    };
    let server = j.server.as_deref().map_or_else(String::new, |s| format!(", server {s}"));
    let _ = writeln!(s, "\n{}", style.bold(&format!("Hop ladders ({how}{server})")));
    if let Some(note) = &j.note {
        let _ = writeln!(s, "  {}", style.dim(&format!("({note})")));
    }
    for d in &j.directions {
        let _ = writeln!(s, "  {}", style.bold(&direction_line(d)));
        if !d.hops.is_empty() {
            let _ = writeln!(
                s,
                "  {}",
                style.dim(&format!(
                    "{:>3}  {:<30} {:<28} {:<24} {:>9} {:>9} {:>9}",
                    "#", "event", "device", "datapath function", "p50 Δ", "p99 Δ", "p50 cum"
                ))
            );
        }
        for (i, h) in d.hops.iter().enumerate() {
            // The hop's function and, where its exit event told, how long it ran.
            let f = match (h.function.as_deref(), h.return_p50_ns) {
                (Some(f), Some(r)) => format!("{f} ({} run)", ns(r)),
                // net_dev_start_xmit → net_dev_xmit: the driver's transmit function.
                (None, Some(r)) if h.event == "net:net_dev_start_xmit" => {
                    format!("ndo_start_xmit ({} run)", ns(r))
                }
                (None, Some(r)) => format!("- ({} run)", ns(r)),
                (f, None) => f.unwrap_or("-").to_owned(),
            };
            let _ = writeln!(
                s,
                "  {i:>3}  {:<30} {:<28} {:<24} {:>9} {:>9} {:>9}",
                h.event,
                h.device_label(),
                f,
                if i == 0 { "-".to_owned() } else { ns(h.delta_p50_ns) },
                if i == 0 { "-".to_owned() } else { ns(h.delta_p99_ns) },
                ns(h.cum_p50_ns)
            );
        }
        let other = other_paths(d);
        if !other.is_empty() {
            let _ = writeln!(s, "  other paths: {other}");
        }
    }
    if !j.unassigned.is_empty() {
        let parts: Vec<String> = j.unassigned.iter().map(|t| format!("{} {}", t.path, t.packets)).collect();
        let _ = writeln!(s, "  {}", style.dim(&format!("not in a direction: {}", parts.join(", "))));
    }
    if j.cut > 0 {
        let _ = writeln!(
            s,
            "  {}",
            style.dim(&format!("{} journeys were finished early to keep memory bounded", j.cut))
        );
    }
    s
}

/// The directions the modes have, in order (`request`, `response` first).
fn direction_names(modes: &[&ModeReport]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for m in modes {
        for d in m.journeys.iter().flat_map(|j| &j.directions) {
            if !names.contains(&d.direction) {
                names.push(d.direction.clone());
            }
        }
    }
    names
}

fn cell(h: &LadderHop, first: bool, width: usize) -> String {
    let dev = h.device_label();
    let time = if first { String::new() } else { format!(" +{}", ns(h.delta_p50_ns)) };
    let room = width.saturating_sub(time.chars().count());
    let dev: String = if dev.chars().count() > room {
        dev.chars().take(room.saturating_sub(1)).chain(std::iter::once('…')).collect()
    } else {
        dev
    };
    format!("{dev}{time}")
}

/// Several modes' ladders side by side: per direction one column per mode, one row per hop
/// (device and p50 time from the previous hop), then each mode's one-way time. Empty when no
/// mode has journeys.
pub fn render_side_by_side(modes: &[&ModeReport], style: Style) -> String {
    const W: usize = 34;
    let mut s = String::new();
    if modes.iter().all(|m| m.journeys.is_none()) {
        return s;
    }
    let _ = writeln!(s, "\n  {}", style.dim("hop ladders (device, p50 time from the previous hop):"));
    for dir in direction_names(modes) {
        let ladders: Vec<Option<&DirectionLadder>> = modes
            .iter()
            .map(|m| m.journeys.as_ref().and_then(|j| j.directions.iter().find(|d| d.direction == dir)))
            .collect();
        let mut header = format!("  {:<4}", "hop");
        for m in modes {
            let _ = write!(header, " {:<W$}", m.mode);
        }
        let _ = writeln!(s, "{}", style.bold(&format!("{dir}:")));
        let _ = writeln!(s, "{header}");
        let rows = ladders.iter().map(|l| l.map_or(0, |l| l.hops.len())).max().unwrap_or(0);
        for i in 0..rows {
            let mut line = format!("  {i:<4}");
            for l in &ladders {
                let c = l.and_then(|l| l.hops.get(i)).map_or_else(String::new, |h| cell(h, i == 0, W));
                let pad = W.saturating_sub(c.chars().count());
                let _ = write!(line, " {c}{}", " ".repeat(pad));
            }
            let _ = writeln!(s, "{}", line.trim_end());
        }
        let mut line = format!("  {:<4}", "1-way");
        for l in &ladders {
            let c = l.map_or_else(
                || "-".to_owned(),
                |l| format!("p50 {} p99 {}", ns(l.one_way_p50_ns), ns(l.one_way_p99_ns)),
            );
            let _ = write!(line, " {c:<W$}");
        }
        let _ = writeln!(s, "{}", line.trim_end());
    }
    s
}

/// A latency waterfall of one direction's ladder as an inline SVG: one row per hop, its bar
/// starting at the previous hop's cumulated p50 and as wide as the hop's p50 time, a whisker
/// out to its p99; each row has a tooltip with the figures.
pub fn waterfall_svg(mode: &str, d: &DirectionLadder) -> String {
    const ROW: f64 = 20.0;
    const LABEL: f64 = 360.0;
    const PLOT: f64 = 520.0;
    const TOP: f64 = 26.0;
    let width = LABEL + PLOT + 90.0;
    let height = TOP + ROW * d.hops.len() as f64 + 30.0;
    let starts: Vec<u64> =
        (0..d.hops.len()).map(|i| if i == 0 { 0 } else { d.hops[i - 1].cum_p50_ns }).collect();
    let span = d
        .hops
        .iter()
        .zip(&starts)
        .map(|(h, s)| s + h.delta_p99_ns.max(h.delta_p50_ns))
        .chain(std::iter::once(d.one_way_p50_ns))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let x = |v: u64| LABEL + PLOT * (v as f64 / span);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg class="waterfall" xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" role="img" aria-label="{}">"#,
        escape(&format!("{mode}: {} hop latency waterfall", d.direction))
    );
    let _ = writeln!(
        s,
        r#"<text x="4" y="16" font-size="13" font-weight="600">{}</text>"#,
        escape(&format!(
            "{mode} — {} ({}): one-way p50 {}, p99 {}",
            d.direction,
            d.label,
            ns(d.one_way_p50_ns),
            ns(d.one_way_p99_ns)
        ))
    );
    for (i, (h, &start)) in d.hops.iter().zip(&starts).enumerate() {
        let y = TOP + ROW * i as f64;
        let label = format!("{i:>2} {} {}", h.event.trim_start_matches("net:"), h.device_label());
        let tip = format!(
            "hop {i}: {} on {}{}; from the previous hop p50 {}, p99 {}; cumulated p50 {}, p99 {}",
            h.event,
            h.device_label(),
            h.function.as_deref().map_or_else(String::new, |f| format!(" in {f}")),
            ns(h.delta_p50_ns),
            ns(h.delta_p99_ns),
            ns(h.cum_p50_ns),
            ns(h.cum_p99_ns)
        );
        let (x0, x1, x99) = (x(start), x(start + h.delta_p50_ns), x(start + h.delta_p99_ns));
        let _ = writeln!(s, r#"<g class="hop"><title>{}</title>"#, escape(&tip));
        if i % 2 == 1 {
            let _ = writeln!(
                s,
                r##"<rect x="0" y="{y:.1}" width="{width:.0}" height="{ROW:.0}" fill="#f5f7fa"/>"##
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="4" y="{:.1}" font-size="12" font-family="monospace">{}</text>"#,
            y + 14.0,
            escape(&label)
        );
        let _ = writeln!(
            s,
            r##"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="12" rx="2" fill="#4285f4"/>"##,
            y + 4.0,
            (x1 - x0).max(1.5)
        );
        if x99 > x1 + 0.5 {
            let _ = writeln!(
                s,
                r##"<line x1="{x1:.1}" y1="{:.1}" x2="{x99:.1}" y2="{:.1}" stroke="#1d2330" stroke-width="1"/>"##,
                y + 10.0,
                y + 10.0
            );
            let _ = writeln!(
                s,
                r##"<line x1="{x99:.1}" y1="{:.1}" x2="{x99:.1}" y2="{:.1}" stroke="#1d2330" stroke-width="1"/>"##,
                y + 6.0,
                y + 14.0
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#5b6475">{}</text>"##,
            x99.max(x1) + 4.0,
            y + 14.0,
            escape(&if i == 0 { "start".to_owned() } else { format!("+{}", ns(h.delta_p50_ns)) })
        );
        let _ = writeln!(s, "</g>");
    }
    let axis = TOP + ROW * d.hops.len() as f64 + 8.0;
    let _ = writeln!(
        s,
        r##"<line x1="{LABEL:.0}" y1="{axis:.1}" x2="{:.0}" y2="{axis:.1}" stroke="#5b6475" stroke-width="1"/>"##,
        LABEL + PLOT
    );
    for k in 0..=4u64 {
        let v = (span as u64) * k / 4;
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#5b6475" text-anchor="middle">{}</text>"##,
            x(v),
            axis + 14.0,
            escape(&ns(v))
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::journeys::PathTally;

    pub(crate) fn ladder(direction: &str, devs: &[(&str, u32)], step: u64) -> DirectionLadder {
        DirectionLadder {
            direction: direction.into(),
            label: "client → server :10000".into(),
            data_packets: 100,
            ladder_packets: 97,
            data_paths: 2,
            hops: devs
                .iter()
                .enumerate()
                .map(|(i, (dev, netns))| LadderHop {
                    event: if i % 2 == 0 { "net:net_dev_queue" } else { "net:netif_rx" }.into(),
                    dev: (*dev).into(),
                    netns: *netns,
                    ifindex: 2,
                    place: None,
                    function: (i == 1).then(|| "veth_xmit".to_owned()),
                    return_p50_ns: (i == 1).then_some(900),
                    delta_p50_ns: if i == 0 { 0 } else { step },
                    delta_p99_ns: if i == 0 { 0 } else { 3 * step },
                    cum_p50_ns: i as u64 * step,
                    cum_p99_ns: i as u64 * 3 * step,
                })
                .collect(),
            one_way_p50_ns: (devs.len() as u64 - 1) * step,
            one_way_p99_ns: (devs.len() as u64 - 1) * 3 * step,
            other: vec![
                PathTally { path: "ARP".into(), packets: 2 },
                PathTally { path: "handshake".into(), packets: 3 },
                PathTally { path: "retransmits".into(), packets: 0 },
            ],
        }
    }

    pub(crate) fn report(step: u64) -> JourneyReport {
        JourneyReport {
            source: LadderSource::Journeys,
            journeys: 210,
            server: Some("10.213.0.2:10000".into()),
            directions: vec![
                ladder("request", &[("eth0", 11), ("dtpa", 9), ("dtpb", 9), ("eth0", 12)], step),
                ladder("response", &[("eth0", 12), ("dtpb", 9), ("dtpa", 9), ("eth0", 11)], step),
            ],
            unassigned: vec![PathTally { path: "other flows".into(), packets: 4 }],
            cut: 0,
            note: None,
        }
    }

    #[test]
    fn text_ladder_has_rows_and_other_paths() {
        let text = render_ladders(&report(1500), Style::plain());
        assert!(text.contains("Hop ladders (210 packet journeys, server 10.213.0.2:10000)"), "{text}");
        assert!(text.contains("request (client → server :10000): 100 data packets, 97 on this ladder of 4 hops; one-way in the kernel p50 4.5 µs, p99 14 µs"), "{text}");
        let row = text.lines().find(|l| l.trim_start().starts_with("1  net:netif_rx")).expect(&text);
        assert!(
            row.contains("dtpa@9")
                && row.contains("veth_xmit (900 ns run)")
                && row.contains("1.5 µs")
                && row.contains("4.5 µs"),
            "{row}"
        );
        assert!(
            text.contains("other paths: other data paths 3, ARP 2, handshake 3, retransmits 0"),
            "{text}"
        );
        assert!(text.contains("not in a direction: other flows 4"));
    }

    #[test]
    fn durations() {
        assert_eq!(ns(850), "850 ns");
        assert_eq!(ns(1234), "1.2 µs");
        assert_eq!(ns(14_400), "14 µs");
        assert_eq!(ns(3_400_000), "3.40 ms");
    }

    /// Whether every element opened is closed, in order (self-closing ones count as both).
    pub(crate) fn balanced(svg: &str) -> Result<usize, String> {
        let mut stack: Vec<String> = Vec::new();
        let mut elements = 0;
        let mut rest = svg;
        while let Some(i) = rest.find('<') {
            let end = rest[i..].find('>').ok_or("unterminated tag")? + i;
            let tag = &rest[i + 1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or(format!("</{name}> without an open tag"))?;
                if open != name.trim() {
                    return Err(format!("<{open}> closed by </{name}>"));
                }
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap_or("").to_owned());
                elements += 1;
            } else {
                elements += 1;
            }
            if tag.contains('<') {
                return Err(format!("`<` inside a tag: {tag}"));
            }
        }
        if stack.is_empty() {
            Ok(elements)
        } else {
            Err(format!("unclosed: {stack:?}"))
        }
    }

    #[test]
    fn waterfall_is_well_formed_and_escaped() {
        let mut d = ladder("request", &[("eth0", 11), ("<dtpa>&", 9), ("dtpb", 9), ("eth0", 12)], 2000);
        d.hops[2].delta_p50_ns = 10_000;
        let svg = waterfall_svg("bridge", &d);
        let n = balanced(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert!(n > 10, "{n} elements");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<g class=\"hop\">").count(), 4);
        assert!(svg.contains("&lt;dtpa&gt;&amp;@9") && !svg.contains("<dtpa>"));
        assert!(svg.contains("<title>hop 1: net:netif_rx on &lt;dtpa&gt;&amp;@9 in veth_xmit; from the previous hop p50 2.0 µs, p99 6.0 µs"));
        // The third bar starts where the second hop's cumulated p50 ends (2 µs of the span).
        assert!(svg.contains("one-way p50 6.0 µs"), "{svg}");
        assert!(balanced("<a><b></a></b>").is_err() && balanced("<a>").is_err());
    }

    #[test]
    fn side_by_side_columns_per_mode() {
        let mk = |mode: &str, j: Option<JourneyReport>| ModeReport {
            journeys: j,
            ..ModeReport::from_run(
                &crate::recording::RunBuilder::default().finish(mode, 1.0, None, Default::default()),
                0,
            )
        };
        let mut normal = report(800);
        normal.directions[0].hops.truncate(1);
        normal.directions[0].hops[0].dev = "lo".into();
        let modes = [mk("normal", Some(normal)), mk("bridge", Some(report(1500))), mk("macvlan", None)];
        let refs: Vec<&ModeReport> = modes.iter().collect();
        let text = render_side_by_side(&refs, Style::plain());
        let head = text.lines().find(|l| l.contains("normal") && l.contains("bridge")).expect(&text);
        assert!(head.contains("macvlan"));
        assert!(text.contains("lo@11"), "{text}");
        let row = text.lines().find(|l| l.starts_with("  2 ")).expect(&text);
        assert!(row.contains("dtpb@9 +1.5 µs"), "{row}");
        assert!(text.lines().any(|l| l.contains("1-way") && l.contains("p50 4.5 µs")), "{text}");
        assert!(text.contains("response:"));
        let none = [mk("a", None)];
        assert!(render_side_by_side(&none.iter().collect::<Vec<_>>(), Style::plain()).is_empty());
    }
}
