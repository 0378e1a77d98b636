//! The comparison as GitHub-flavoured Markdown (`dockertrace report --format markdown`), made
//! for a CI job's summary (`>> "$GITHUB_STEP_SUMMARY"`): the modes side by side, the tracer's
//! cost, the drops, and each mode's hop ladders (folded, one `<details>` per direction).
//!
//! Names come from recordings, so from the kernel and from whoever named the containers: every
//! cell is escaped ([`text`], [`code`]) so that no name can close a table, open a tag or a link.
use std::fmt::Write as _;

use crate::{
    compare::{Comparison, ModeReport},
    journeys::DirectionLadder,
    render::{ladders::ns, tables::headline_note},
};

/// Plain text for a Markdown cell: Markdown's and HTML's special characters escaped, control
/// characters shown as `\xNN`, line breaks as spaces.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\r' | '\t' => out.push(' '),
            '\\' | '|' | '*' | '_' | '`' | '[' | ']' | '#' | '~' | '!' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// An identifier (function, event, device) as a code span; `|` stays inside the table cell
/// and a backtick cannot end the span early.
pub fn code(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    let mut out = String::from("`");
    for c in s.chars() {
        match c {
            '`' => out.push('\''),
            '|' => out.push_str("\\|"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('`');
    out
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The whole summary: a heading, the comparison, the tracer's cost, drops, then the ladders.
pub fn render(c: &Comparison, title: &str) -> String {
    let mut s = format!("## {}\n\n", text(title));
    comparison(&mut s, c);
    cost(&mut s, c);
    drops(&mut s, c);
    for d in &c.vs_baseline {
        let list = |v: &[String]| {
            if v.is_empty() {
                "(none)".to_owned()
            } else {
                v.iter().map(|f| code(f)).collect::<Vec<_>>().join(" ")
            }
        };
        let _ = writeln!(
            s,
            "- **{}** vs {}: only in {}: {}; only in {}: {}",
            text(&d.mode),
            text(&d.baseline),
            text(&d.mode),
            list(&d.only_here),
            text(&d.baseline),
            list(&d.only_baseline)
        );
    }
    if !c.vs_baseline.is_empty() {
        s.push('\n');
    }
    for m in &c.modes {
        ladders(&mut s, m);
    }
    s
}

fn comparison(s: &mut String, c: &Comparison) {
    s.push_str(
        "| mode | msg/s | RTT p50 µs | RTT p99 µs | events/msg | stack depth | functions | lost | drops |\n",
    );
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for m in &c.modes {
        let h = m.headline().map(|(f, _)| f);
        let drops: u64 = m.drops.iter().filter(|d| !d.benign).map(|d| d.count).sum();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.1} | {} | {} | {} |",
            text(&m.mode),
            opt(h.map(|f| f.msgs_per_s), 0),
            opt(h.and_then(|f| f.rtt_p50_us), 1),
            opt(h.and_then(|f| f.rtt_p99_us), 1),
            opt(m.events_per_msg, 2),
            m.mean_stack_depth,
            m.functions.len(),
            m.lost,
            drops
        );
    }
    for (mode, why) in &c.skipped {
        let _ = writeln!(s, "| {} | skipped: {} |{}", text(mode), text(why), " – |".repeat(7));
    }
    if let Some(note) = headline_note(c) {
        let _ = writeln!(s, "\n_{}_", text(&note));
    }
    s.push('\n');
}

fn cost(s: &mut String, c: &Comparison) {
    if c.modes.iter().all(|m| m.workload_cost.is_none()) {
        return;
    }
    s.push_str("**The tracer's cost** (the same workload traced, against untraced)\n\n");
    s.push_str("| mode | traced msg/s | kept | +µs/msg | +RTT p50 µs | ns/event |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|\n");
    for m in &c.modes {
        let w = m.workload_cost.as_ref();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            text(&m.mode),
            opt(m.traced.as_ref().map(|t| t.msgs_per_s), 0),
            w.map_or_else(|| "–".to_owned(), |w| format!("{:.0}%", w.kept * 100.0)),
            opt(w.map(|w| w.added_us_per_msg), 2),
            opt(w.and_then(|w| w.added_rtt_p50_us), 1),
            opt(w.and_then(|w| w.ns_per_event), 0)
        );
    }
    s.push('\n');
}

fn drops(s: &mut String, c: &Comparison) {
    let total: u64 = c.modes.iter().flat_map(|m| &m.drops).filter(|d| !d.benign).map(|d| d.count).sum();
    if c.modes.iter().all(|m| m.drops.is_empty()) {
        s.push_str("**Drops:** none of the workload's packets died in the kernel.\n\n");
        return;
    }
    let _ = writeln!(s, "**Drops:** {total} of the workload's packets died in the kernel\n");
    s.push_str("| mode | drops | reason | where | device | why |\n|---|---:|---|---|---|---|\n");
    for m in &c.modes {
        for d in &m.drops {
            let why = match (&d.why, d.benign) {
                (Some(w), true) => format!("harmless: {}", text(w)),
                (Some(w), false) => text(w),
                (None, _) => String::new(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {why} |",
                text(&m.mode),
                d.count,
                code(&d.reason),
                code(&d.location),
                code(&d.device)
            );
        }
    }
    s.push('\n');
}

/// One `<details>` per direction: the hop table folded under a line with its one-way time.
fn ladders(s: &mut String, m: &ModeReport) {
    let Some(j) = &m.journeys else { return };
    for d in &j.directions {
        let _ = writeln!(
            s,
            "<details><summary><b>{}</b> {} ladder: {} hops, one-way p50 {}, p99 {} ({} of {} data packets)</summary>\n",
            text(&m.mode),
            text(&d.direction),
            d.hops.len(),
            ns(d.one_way_p50_ns),
            ns(d.one_way_p99_ns),
            d.ladder_packets,
            d.data_packets
        );
        hop_table(s, d);
        if let Some(note) = &j.note {
            let _ = writeln!(s, "\n_{}_", text(note));
        }
        s.push_str("\n</details>\n\n");
    }
}

fn hop_table(s: &mut String, d: &DirectionLadder) {
    s.push_str("| # | event | device | function | p50 Δ | p99 Δ | p50 cum |\n");
    s.push_str("|---:|---|---|---|---:|---:|---:|\n");
    for (i, h) in d.hops.iter().enumerate() {
        let delta = |v: u64| if i == 0 { "–".to_owned() } else { ns(v) };
        let _ = writeln!(
            s,
            "| {i} | {} | {} | {} | {} | {} | {} |",
            code(&h.event),
            code(&h.device_label()),
            h.function.as_deref().map(code).unwrap_or_default(),
            delta(h.delta_p50_ns),
            delta(h.delta_p99_ns),
            ns(h.cum_p50_ns)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_break_the_markdown() {
        assert_eq!(text("a|b <script> *x* [l](u)"), "a\\|b &lt;script&gt; \\*x\\* \\[l\\](u)");
        assert_eq!(text("eth0\x1b[31m\nx"), "eth0\\x1b\\[31m x");
        assert_eq!(code("veth|`x`"), "`veth\\|'x'`");
        assert_eq!(code(""), "");
    }

    #[test]
    fn the_summary_has_the_comparison_ladders_and_drops() {
        let mut m = ModeReport::from_run(&crate::render::tables::tests::dropping_run(), 3);
        m.journeys = Some(crate::render::ladders::tests::report(1500));
        let quiet = ModeReport { mode: "normal".into(), drops: Vec::new(), journeys: None, ..m.clone() };
        let c = Comparison::new(vec![quiet, m], vec![("ipvlan-l2".into(), "no CONFIG_IPVLAN".into())]);
        let md = render(&c, "datapath | CI");
        assert!(md.starts_with("## datapath \\| CI\n\n| mode | msg/s |"), "{md}");
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
        let cells = rows[0].matches(" | ").count();
        assert!(rows.iter().take(4).all(|r| r.matches(" | ").count() == cells), "ragged table:\n{md}");
        assert!(md.contains("| ipvlan-l2 | skipped: no CONFIG\\_IPVLAN | – |"), "{md}");
        assert!(md.contains("**Drops:** 4 of the workload's packets died"), "{md}");
        assert!(md.contains("`NETFILTER_DROP`") && md.contains("`nft_do_chain+0x"), "{md}");
        assert_eq!(md.matches("<details>").count(), 2, "one per direction:\n{md}");
        assert_eq!(md.matches("<details>").count(), md.matches("</details>").count());
        assert!(md.contains("request ladder: 4 hops, one-way p50 4.5 µs"), "{md}");
        assert!(md.contains("| 2 | `net:net_dev_queue` |"), "{md}");
    }
}
