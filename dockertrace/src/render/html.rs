//! A self-contained HTML report of a [`Comparison`]: summary table, functions × modes matrix,
//! differences from `normal`, one section per mode and the modes' flame graphs.
//!
//! The page loads nothing: CSS is inline and each flame graph is an `<iframe srcdoc=...>`
//! holding inferno's SVG (with its zoom/search script), one document per graph so that the
//! graphs' element ids and scripts do not clash. Every string from the data is HTML-escaped.
use std::fmt::Write as _;

use crate::{
    compare::{Comparison, ModeReport, Phase, Rate},
    datapath::{self, Component},
    recording::ModeRun,
    render::{flame, ladders},
};

/// Escapes text for HTML content and (quoted) attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The `id` of a mode's section: `mode-<name>` (whitespace, invalid in ids, becomes `-`).
pub fn mode_id(mode: &str) -> String {
    let name: String = mode.chars().map(|c| if c.is_whitespace() { '-' } else { c }).collect();
    format!("mode-{name}")
}

const COMPONENTS: [Component; 7] = [
    Component::Veth,
    Component::Bridge,
    Component::Macvlan,
    Component::Ipvlan,
    Component::Loopback,
    Component::Vxlan,
    Component::Netfilter,
];

const CSS: &str = r#"
:root { --fg: #1d2330; --muted: #5b6475; --line: #d8dde6; --head: #eef1f6; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  margin: 0 auto; padding: 0 24px 48px; max-width: 1400px; }
h1 { margin: 20px 0 4px; } h2 { margin-top: 36px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { margin: 22px 0 6px; }
.meta, .note { color: var(--muted); }
nav { position: sticky; top: 0; background: #fff; z-index: 3; padding: 6px 0; border-bottom: 1px solid var(--line); }
nav a { margin-right: 14px; text-decoration: none; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
thead th { position: sticky; top: 34px; background: var(--head); z-index: 2; }
tbody tr:nth-child(even) { background: #fafbfd; }
td.absent { background: #f4f4f4; }
code, .fn, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
.fn.dp { font-weight: 600; border-left: 4px solid var(--c); padding-left: 4px; background: color-mix(in srgb, var(--c) 14%, white); }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; background: var(--c); vertical-align: -1px; margin-right: 4px; }
.legend span { margin-right: 14px; white-space: nowrap; }
ul.fns { columns: 3 260px; padding-left: 18px; margin: 4px 0; }
ol.paths li { margin: 4px 0; font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
ol.paths .count { color: var(--muted); font-family: system-ui, sans-serif; }
.pair { display: flex; gap: 32px; flex-wrap: wrap; } .pair > div { flex: 1 1 420px; }
svg.waterfall { display: block; max-width: 100%; height: auto; margin: 6px 0; }
h4 { margin: 14px 0 4px; }
iframe.flame { width: 100%; border: 1px solid var(--line); display: block; background: #fff; }
.error { color: #b3261e; }
.phase { font-size: 11px; color: var(--muted); border: 1px solid var(--line); border-radius: 3px; padding: 0 3px; }
"#;

/// Sizes each flame graph's frame to its SVG and marks it `data-rendered` with its frame count
/// (the srcdoc documents share the page's origin, so the page can look inside).
const SCRIPT: &str = r##"
window.addEventListener("load", function () {
  document.querySelectorAll("iframe.flame").forEach(function (f) {
    try {
      var svg = f.contentDocument && f.contentDocument.querySelector("svg");
      if (!svg) return;
      var h = svg.getBoundingClientRect().height;
      if (h > 0) f.style.height = Math.ceil(h + 4) + "px";
      f.setAttribute("data-rendered", String(svg.querySelectorAll("#frames > g").length));
    } catch (e) { /* leave the precomputed height */ }
  });
});
"##;

fn component_style(c: Component) -> String {
    let (r, g, b) = flame::component_color(c);
    format!("--c: rgb({r},{g},{b})")
}

/// A function name in monospace; datapath functions are coloured by component.
fn function(name: &str) -> String {
    match datapath::component(name) {
        Some(c) => format!(
            r#"<code class="fn dp" style="{}" title="{}">{}</code>"#,
            component_style(c),
            c.name(),
            escape(name)
        ),
        None => format!(r#"<code class="fn">{}</code>"#, escape(name)),
    }
}

fn num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.01 || a == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), num)
}

/// A figure to the unit (ns per event).
fn whole(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite()).map_or_else(|| "–".into(), |x| format!("{x:.0}"))
}

/// A difference, with its sign.
fn signed(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |x| if x > 0.0 { format!("+{}", num(x)) } else { num(x) })
}

/// `2024-05-01 12:00:00 UTC` from seconds since the epoch (proleptic Gregorian calendar).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Removes the XML prolog (declaration, DOCTYPE) of an SVG document and drops the scheme of
/// URLs in it (comments, script strings) except namespace names in `xmlns` attributes, so that
/// the page has no web references.
fn embeddable_svg(svg: &str) -> String {
    let svg = svg.find("<svg").map_or(svg, |i| &svg[i..]);
    let mut out = String::with_capacity(svg.len());
    let mut rest = svg;
    while let Some(i) = rest.find("http") {
        let (before, at) = rest.split_at(i);
        out.push_str(before);
        let scheme = ["https://", "http://"].into_iter().find(|s| at.starts_with(s));
        let in_xmlns = {
            // `xmlns="` or `xmlns:prefix="` right before the URL.
            let attr = out.strip_suffix('"').and_then(|s| s.rsplit(char::is_whitespace).next()).unwrap_or("");
            attr.strip_suffix('=').is_some_and(|a| a == "xmlns" || a.starts_with("xmlns:"))
        };
        match scheme {
            Some(s) if !in_xmlns => rest = &at[s.len()..],
            _ => {
                out.push_str("http");
                rest = &at[4..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `height` attribute of the root `<svg>` element, in pixels.
fn svg_height(svg: &str) -> Option<f64> {
    let start = svg.find("<svg")?;
    let tag = &svg[start..start + svg[start..].find('>')?];
    let h = &tag[tag.find(" height=\"")? + 9..];
    h[..h.find('"')?].parse().ok()
}

/// An SVG in its own document, so that its ids and script are independent of the page's.
fn iframe(svg: &str, label: &str) -> String {
    let height = svg_height(svg).map_or(400.0, |h| h + 4.0);
    let doc = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>html,body{{margin:0;padding:0;overflow:hidden;background:#fff}}svg{{display:block;width:100%}}</style>\
         </head><body>{}</body></html>",
        escape(label),
        embeddable_svg(svg)
    );
    format!(
        r#"<iframe class="flame" title="{}" style="height: {height:.0}px" loading="eager" srcdoc="{}"></iframe>"#,
        escape(label),
        escape(&doc)
    )
}

fn graph(result: anyhow::Result<String>, label: &str) -> String {
    match result {
        Ok(svg) => iframe(&svg, label),
        Err(e) => {
            format!(r#"<p class="error">{} unavailable: {}</p>"#, escape(label), escape(&format!("{e:#}")))
        }
    }
}

fn summary(out: &mut String, c: &Comparison) -> std::fmt::Result {
    writeln!(out, r#"<section id="summary"><h2>Comparison</h2>"#)?;
    writeln!(
        out,
        r#"<p class="note">Workload throughput and latency, the tracer's cost, and what the kernel did per echoed message (per event when the run has no workload figures). {}The tracer's cost is the traced phase (the same workload, same duration, on the same deployment) against the untraced one: <i>kept</i> = traced ÷ untraced msg/s, <i>+µs/msg</i> = 1/traced − 1/untraced msg/s, <i>ns/event</i> = that ÷ events per message. Kernel figures come from the traced phase.</p>"#,
        crate::render::tables::headline_note(c).map_or_else(String::new, |n| format!("{}. ", escape(&n)))
    )?;
    writeln!(
        out,
        "<table><thead><tr><th>mode</th><th>msg/s</th><th>MB/s</th><th>RTT p50 (µs)</th><th>RTT p99 (µs)</th>\
         <th>traced msg/s</th><th>traced RTT p50 (µs)</th><th>kept</th><th>+µs/msg</th><th>+RTT p50 (µs)</th><th>ns/event</th>\
         <th>events</th><th>events/msg</th><th>mean stack depth</th><th>distinct functions</th><th>lost</th>\
         <th>stack errors</th><th>drops</th></tr></thead><tbody>"
    )?;
    for m in &c.modes {
        let h = m.headline();
        let f = h.map(|(f, _)| f);
        let tag = match h {
            Some((_, Phase::Traced)) => {
                r#" <span class="phase" title="no untraced phase: the tracer's cost is in this figure">traced</span>"#
            }
            _ => "",
        };
        let t = m.traced.as_ref();
        let w = m.workload_cost.as_ref();
        writeln!(
            out,
            r##"<tr><td><a href="#{}">{}</a></td><td>{}{tag}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"##,
            escape(&mode_id(&m.mode)),
            escape(&m.mode),
            opt(f.map(|f| f.msgs_per_s)),
            opt(f.map(|f| f.mb_per_s)),
            opt(f.and_then(|f| f.rtt_p50_us)),
            opt(f.and_then(|f| f.rtt_p99_us)),
            opt(t.map(|t| t.msgs_per_s)),
            opt(t.and_then(|t| t.rtt_p50_us)),
            w.map_or_else(|| "–".into(), |w| format!("{:.0}%", w.kept * 100.0)),
            signed(w.map(|w| w.added_us_per_msg)),
            signed(w.and_then(|w| w.added_rtt_p50_us)),
            whole(w.and_then(|w| w.ns_per_event)),
            m.total_events,
            opt(m.events_per_msg),
            num(m.mean_stack_depth),
            m.functions.len(),
            m.lost,
            m.stack_errors,
            m.total_drops(),
        )?;
    }
    writeln!(out, "</tbody></table></section>")?;
    if !c.skipped.is_empty() {
        writeln!(out, r#"<section id="skipped"><h2>Skipped modes</h2><ul>"#)?;
        for (mode, reason) in &c.skipped {
            writeln!(out, "<li><b>{}</b>: {}</li>", escape(mode), escape(reason))?;
        }
        writeln!(out, "</ul></section>")?;
    }
    Ok(())
}

fn legend(out: &mut String) -> std::fmt::Result {
    write!(out, r#"<p class="legend">Datapath components: "#)?;
    for comp in COMPONENTS {
        write!(
            out,
            r#"<span><i class="swatch" style="{}"></i>{}</span>"#,
            component_style(comp),
            comp.name()
        )?;
    }
    let (r, g, b) = flame::EVENT_COLOR;
    writeln!(
        out,
        r#"<span><i class="swatch" style="--c: rgb({r},{g},{b})"></i>tracepoint (flame graph leaf)</span></p>"#
    )
}

fn matrix(out: &mut String, c: &Comparison) -> std::fmt::Result {
    let m = &c.matrix;
    writeln!(out, r#"<section id="matrix"><h2>Functions × modes</h2>"#)?;
    writeln!(
        out,
        r#"<p class="note">Events per message whose kernel stack contains the function (per event for runs without workload figures); blank: the function never appeared. Functions present in most modes first.</p>"#
    )?;
    write!(out, "<table><thead><tr><th>function</th>")?;
    for mode in &m.modes {
        write!(out, "<th>{}</th>", escape(mode))?;
    }
    writeln!(out, "</tr></thead><tbody>")?;
    for (f, row) in m.functions.iter().zip(&m.cells) {
        write!(out, "<tr><td>{}</td>", function(f))?;
        for cell in row {
            match cell {
                Some(v) => write!(out, "<td>{}</td>", num(*v))?,
                None => write!(out, r#"<td class="absent"></td>"#)?,
            }
        }
        writeln!(out, "</tr>")?;
    }
    writeln!(out, "</tbody></table></section>")
}

fn function_list(out: &mut String, fs: &[String]) -> std::fmt::Result {
    if fs.is_empty() {
        return writeln!(out, r#"<p class="note">none</p>"#);
    }
    write!(out, r#"<ul class="fns">"#)?;
    for f in fs {
        write!(out, "<li>{}</li>", function(f))?;
    }
    writeln!(out, "</ul>")
}

fn vs_baseline(out: &mut String, c: &Comparison) -> std::fmt::Result {
    writeln!(out, r#"<section id="vs-normal"><h2>Compared with normal</h2>"#)?;
    if c.vs_baseline.is_empty() {
        writeln!(out, r#"<p class="note">No <code>normal</code> run to compare with.</p>"#)?;
    }
    for d in &c.vs_baseline {
        writeln!(
            out,
            r##"<h3><a href="#{}">{}</a> vs {}</h3><div class="pair"><div><h4>only in {} ({})</h4>"##,
            escape(&mode_id(&d.mode)),
            escape(&d.mode),
            escape(&d.baseline),
            escape(&d.mode),
            d.only_here.len()
        )?;
        function_list(out, &d.only_here)?;
        writeln!(out, "</div><div><h4>only in {} ({})</h4>", escape(&d.baseline), d.only_baseline.len())?;
        function_list(out, &d.only_baseline)?;
        writeln!(out, "</div></div>")?;
    }
    writeln!(out, "</section>")
}

fn rate_cell(r: &Rate) -> String {
    opt(r.per_msg)
}

/// One mode's section: its figures, tables, top paths and flame graphs.
fn mode_section(
    out: &mut String,
    m: &ModeReport,
    run: Option<&ModeRun>,
    baseline: Option<(&str, &str)>,
) -> std::fmt::Result {
    mode_header(out, m)?;
    drops_table(out, m)?;
    ladder_section(out, m)?;
    events_table(out, m)?;
    datapath_table(out, m)?;
    devices_table(out, m)?;
    top_paths(out, m)?;
    flame_graphs(out, m, run, baseline)?;
    writeln!(out, "</section>")
}

/// The section's heading and its figures in one line.
fn mode_header(out: &mut String, m: &ModeReport) -> std::fmt::Result {
    writeln!(
        out,
        r#"<section class="mode-section" id="{}"><h2>{}{}</h2>"#,
        escape(&mode_id(&m.mode)),
        escape(&m.mode),
        m.runtime.as_deref().map_or_else(String::new, |r| format!(" (runtime {})", escape(r)))
    )?;
    writeln!(
        out,
        r#"<p class="meta">traced {} s; {} messages; {} events ({} per message); mean stack depth {}; {} lost{}</p>"#,
        num(m.duration_s),
        m.messages.map_or_else(|| "–".into(), |n| n.to_string()),
        m.total_events,
        opt(m.events_per_msg),
        num(m.mean_stack_depth),
        m.lost,
        m.stacks.map_or_else(String::new, |n| format!(
            "; stacks: {n}: function figures are estimates, rare functions may be missing"
        ))
    )?;
    if let (Some(u), Some(t)) = (&m.untraced, &m.traced) {
        let phase = |f: &crate::compare::WorkloadFigures| {
            format!(
                "{} msg/s, RTT p50 {} µs, p99 {} µs",
                num(f.msgs_per_s),
                opt(f.rtt_p50_us),
                opt(f.rtt_p99_us)
            )
        };
        writeln!(
            out,
            r#"<p class="meta">untraced (the workload alone, before tracing): {}; traced: {}{}</p>"#,
            phase(u),
            phase(t),
            m.workload_cost.as_ref().map_or_else(String::new, |c| format!(
                "; tracing kept {:.0}% ({} µs per message, {} ns per event)",
                c.kept * 100.0,
                signed(Some(c.added_us_per_msg)),
                whole(c.ns_per_event)
            ))
        )?;
    }
    Ok(())
}

/// The mode's hop ladders: per direction a latency waterfall (inline SVG) and the hops' table.
fn ladder_section(out: &mut String, m: &ModeReport) -> std::fmt::Result {
    let Some(j) = &m.journeys else { return Ok(()) };
    writeln!(out, "<h3>Hop ladders</h3>")?;
    writeln!(
        out,
        r#"<p class="note">The usual hops of the workload's data packets per direction: each bar starts at the previous hop's cumulated p50 and is as wide as the hop's p50 time, its whisker reaches the p99; hover for the figures. {} journeys{}.</p>"#,
        j.journeys,
        j.note.as_deref().map_or_else(String::new, |n| format!("; {}", escape(n)))
    )?;
    for d in &j.directions {
        writeln!(
            out,
            r#"<h4>{} <span class="note">({}): {} data packets, {} on this ladder; one-way p50 {}, p99 {}</span></h4>"#,
            escape(&d.direction),
            escape(&d.label),
            d.data_packets,
            d.ladder_packets,
            ladders::ns(d.one_way_p50_ns),
            ladders::ns(d.one_way_p99_ns)
        )?;
        if !d.hops.is_empty() {
            writeln!(out, "{}", ladders::waterfall_svg(&m.mode, d))?;
            writeln!(
                out,
                "<table><thead><tr><th>#</th><th>event</th><th>device</th><th>datapath function</th><th>p50 Δ</th><th>p99 Δ</th><th>p50 cumulated</th><th>p99 cumulated</th></tr></thead><tbody>"
            )?;
            for (i, h) in d.hops.iter().enumerate() {
                writeln!(
                    out,
                    "<tr><td>{i}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&h.event),
                    escape(&h.device_label()),
                    h.function.as_deref().map_or_else(|| "–".to_owned(), function),
                    ladders::ns(h.delta_p50_ns),
                    ladders::ns(h.delta_p99_ns),
                    ladders::ns(h.cum_p50_ns),
                    ladders::ns(h.cum_p99_ns)
                )?;
            }
            writeln!(out, "</tbody></table>")?;
        }
        let other = ladders::other_paths(d);
        if !other.is_empty() {
            writeln!(out, r#"<p class="note">Other paths: {}</p>"#, escape(&other))?;
        }
    }
    Ok(())
}

/// The modes' ladders side by side: per direction one column per mode, one row per hop
/// (device, p50 time from the previous hop), and each mode's one-way time.
fn ladders_overview(out: &mut String, c: &Comparison) -> std::fmt::Result {
    if c.modes.iter().all(|m| m.journeys.is_none()) {
        return Ok(());
    }
    writeln!(out, r#"<section id="ladders"><h2>Hop ladders</h2>"#)?;
    writeln!(
        out,
        r#"<p class="note">Per direction, the usual hops of the workload's data packets in each mode: device and p50 time from the previous hop; the last row is the one-way time in the kernel (first to last hop). Each mode's section has its waterfall.</p>"#
    )?;
    let mut names: Vec<&str> = Vec::new();
    for m in &c.modes {
        for d in m.journeys.iter().flat_map(|j| &j.directions) {
            if !names.contains(&d.direction.as_str()) {
                names.push(&d.direction);
            }
        }
    }
    for dir in names {
        let ladders: Vec<Option<&crate::journeys::DirectionLadder>> = c
            .modes
            .iter()
            .map(|m| m.journeys.as_ref().and_then(|j| j.directions.iter().find(|d| d.direction == dir)))
            .collect();
        writeln!(out, "<h3>{}</h3>", escape(dir))?;
        write!(out, "<table><thead><tr><th>hop</th>")?;
        for m in &c.modes {
            write!(out, "<th>{}</th>", escape(&m.mode))?;
        }
        writeln!(out, "</tr></thead><tbody>")?;
        let rows = ladders.iter().map(|l| l.map_or(0, |l| l.hops.len())).max().unwrap_or(0);
        for i in 0..rows {
            write!(out, "<tr><td>{i}</td>")?;
            for l in &ladders {
                match l.and_then(|l| l.hops.get(i)) {
                    Some(h) => write!(
                        out,
                        r#"<td style="text-align:left" title="{}"><code>{}</code> {}</td>"#,
                        escape(&h.event),
                        escape(&h.device_label()),
                        if i == 0 { String::new() } else { format!("+{}", ladders::ns(h.delta_p50_ns)) }
                    )?,
                    None => write!(out, r#"<td class="absent"></td>"#)?,
                }
            }
            writeln!(out, "</tr>")?;
        }
        write!(out, "<tr><td>one-way</td>")?;
        for l in &ladders {
            match l {
                Some(l) => write!(
                    out,
                    "<td><b>p50 {}</b>, p99 {}</td>",
                    ladders::ns(l.one_way_p50_ns),
                    ladders::ns(l.one_way_p99_ns)
                )?,
                None => write!(out, r#"<td class="absent">–</td>"#)?,
            }
        }
        writeln!(out, "</tr></tbody></table>")?;
    }
    writeln!(out, "</section>")
}

/// Events per tracepoint, in all and per message.
fn events_table(out: &mut String, m: &ModeReport) -> std::fmt::Result {
    writeln!(out, "<h3>Events per tracepoint</h3>")?;
    writeln!(out, "<table><thead><tr><th>event</th><th>count</th><th>per message</th></tr></thead><tbody>")?;
    for e in &m.events {
        writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            escape(&e.name),
            e.count,
            rate_cell(e)
        )?;
    }
    writeln!(out, "</tbody></table>")?;
    Ok(())
}

/// The datapath functions seen, by component.
fn datapath_table(out: &mut String, m: &ModeReport) -> std::fmt::Result {
    writeln!(out, "<h3>Datapath functions</h3>")?;
    if m.datapath.is_empty() {
        writeln!(
            out,
            r#"<p class="note">No veth, bridge, macvlan, ipvlan, loopback, vxlan or netfilter functions in the stacks.</p>"#
        )?;
    } else {
        writeln!(out, "<table><thead><tr><th>component</th><th>functions</th></tr></thead><tbody>")?;
        for comp in &m.datapath {
            let fs: Vec<String> = comp.functions.iter().map(|f| function(f)).collect();
            writeln!(
                out,
                "<tr><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
                escape(&comp.component),
                fs.join(" ")
            )?;
        }
        writeln!(out, "</tbody></table>")?;
    }
    Ok(())
}

/// Events per device (none for runs without devices).
/// Where and why the mode's packets died, with the hints (docs/drops.md).
fn drops_table(out: &mut String, m: &ModeReport) -> std::fmt::Result {
    if m.drops.is_empty() {
        return Ok(());
    }
    writeln!(out, r#"<h3 class="drops">Drops ({})</h3>"#, m.total_drops())?;
    writeln!(
        out,
        "<table class=\"drops\"><thead><tr><th>drops</th><th>reason</th><th>location</th><th>where</th><th>why</th><th>fix</th></tr></thead><tbody>"
    )?;
    for d in &m.drops {
        writeln!(
            out,
            "<tr><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            d.count,
            escape(&d.reason),
            escape(&d.location),
            escape(&d.device),
            escape(d.why.as_deref().unwrap_or("")),
            escape(d.fix.as_deref().unwrap_or("")),
        )?;
    }
    writeln!(out, "</tbody></table>")
}

fn devices_table(out: &mut String, m: &ModeReport) -> std::fmt::Result {
    if !m.devices.is_empty() {
        writeln!(out, "<h3>Devices</h3>")?;
        writeln!(out, "<table><thead><tr><th>device</th><th>netns</th><th>ifindex</th><th>events</th></tr></thead><tbody>")?;
        for d in &m.devices {
            writeln!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&d.device_label()),
                match &d.netns_name {
                    Some(n) => format!("{} ({})", escape(n), d.netns),
                    None => d.netns.to_string(),
                },
                d.ifindex,
                d.events
            )?;
        }
        writeln!(out, "</tbody></table>")?;
    }
    Ok(())
}

/// The most frequent stack paths, outermost frame first.
fn top_paths(out: &mut String, m: &ModeReport) -> std::fmt::Result {
    writeln!(out, "<h3>Top stack paths</h3>")?;
    writeln!(
        out,
        r#"<p class="note">Outermost frame first (entry point → … → innermost function ⇒ tracepoint).</p>"#
    )?;
    if m.top_paths.is_empty() {
        writeln!(out, r#"<p class="note">No events with a stack.</p>"#)?;
    } else {
        writeln!(out, r#"<ol class="paths">"#)?;
        for p in &m.top_paths {
            let chain: Vec<String> = p.frames.iter().rev().map(|f| function(f)).collect();
            writeln!(
                out,
                r#"<li>{} ⇒ <b>{}</b> <span class="count">({} events, {} per message)</span></li>"#,
                chain.join(" → "),
                escape(&p.event),
                p.count,
                opt(p.per_msg)
            )?;
        }
        writeln!(out, "</ol>")?;
    }
    Ok(())
}

/// The mode's flame graph and, against the baseline, its differential one.
fn flame_graphs(
    out: &mut String,
    m: &ModeReport,
    run: Option<&ModeRun>,
    baseline: Option<(&str, &str)>,
) -> std::fmt::Result {
    writeln!(out, "<h3>Flame graph</h3>")?;
    match run {
        None => writeln!(out, r#"<p class="note">No recorded stacks for this mode.</p>"#)?,
        Some(run) => {
            let folded = flame::folded(run);
            if flame::has_samples(&folded) {
                writeln!(
                    out,
                    r#"<p class="note">Frames outermost at the bottom; the top frames are the tracepoints. Click to zoom, Ctrl-F to search.</p>"#
                )?;
                let label = format!("{}: kernel stacks of traced events", m.mode);
                writeln!(out, "{}", graph(flame::svg(&folded, &label), &label))?;
            } else {
                writeln!(out, r#"<p class="note">No events recorded.</p>"#)?;
            }
            if let Some((name, base)) = baseline.filter(|(name, _)| *name != m.mode) {
                writeln!(out, "<h3>Differential flame graph vs {}</h3>", escape(name))?;
                writeln!(
                    out,
                    r##"<p class="note">Widths: {mode}. Colours: red frames have more events than in {name}, blue fewer ({name} scaled to the same event total). Stacks only in {name} are not drawn — see <a href="#vs-normal">compared with normal</a>.</p>"##,
                    mode = escape(&m.mode),
                    name = escape(name)
                )?;
                if flame::has_samples(&folded) {
                    let label = format!("{} vs {}: differential kernel stacks", m.mode, name);
                    writeln!(out, "{}", graph(flame::diff_svg(base, &folded, &label), &label))?;
                } else {
                    writeln!(out, r#"<p class="note">No events recorded.</p>"#)?;
                }
            }
        }
    }
    Ok(())
}

/// Renders the comparison and the runs' flame graphs as one self-contained HTML page.
///
/// `runs` supply the flame graphs and are matched to `c.modes` by mode name; modes without a
/// run get no graph. Each non-`normal` mode also gets a differential flame graph against the
/// `normal` run when there is one. A graph that cannot be drawn shows an error in its place.
pub fn render(c: &Comparison, runs: &[ModeRun], title: &str) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let run_of = |mode: &str| runs.iter().find(|r| r.mode == mode);
    let baseline_folded = run_of("normal").map(flame::folded);
    let baseline = baseline_folded.as_deref().map(|f| ("normal", f));

    let mut out = String::new();
    writeln!(out, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")?;
    writeln!(out, r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#)?;
    writeln!(
        out,
        "<title>{}</title>\n<style>{CSS}</style>\n<script>{SCRIPT}</script>\n</head><body>",
        escape(title)
    )?;
    writeln!(out, "<h1>{}</h1>", escape(title))?;
    writeln!(
        out,
        r#"<p class="meta">Generated by dockertrace {} on {}; {} mode{} compared{}.</p>"#,
        env!("CARGO_PKG_VERSION"),
        utc(now),
        c.modes.len(),
        if c.modes.len() == 1 { "" } else { "s" },
        if c.skipped.is_empty() { String::new() } else { format!(", {} skipped", c.skipped.len()) }
    )?;
    write!(out, r##"<nav><a href="#summary">comparison</a>"##)?;
    if !c.skipped.is_empty() {
        write!(out, r##"<a href="#skipped">skipped</a>"##)?;
    }
    if c.modes.iter().any(|m| m.journeys.is_some()) {
        write!(out, r##"<a href="#ladders">hop ladders</a>"##)?;
    }
    write!(out, r##"<a href="#matrix">functions</a><a href="#vs-normal">vs normal</a>"##)?;
    for m in &c.modes {
        write!(out, r##"<a href="#{}">{}</a>"##, escape(&mode_id(&m.mode)), escape(&m.mode))?;
    }
    writeln!(out, "</nav>")?;
    summary(&mut out, c)?;
    ladders_overview(&mut out, c)?;
    legend(&mut out)?;
    matrix(&mut out, c)?;
    vs_baseline(&mut out, c)?;
    for m in &c.modes {
        mode_section(&mut out, m, run_of(&m.mode), baseline)?;
    }
    writeln!(out, "</body></html>")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        counters::Counters,
        recording::RunBuilder,
        workload::{Pattern, RttSummary, WorkloadReport},
    };

    fn run(mode: &str, messages: u64, paths: &[(&str, &[&str], u64)]) -> ModeRun {
        let mut b = RunBuilder::default();
        for (event, frames, n) in paths {
            let s = b.stack(frames.iter().map(|f| (*f).to_owned()).collect());
            b.add(event, "eth0", 1, 2, Some(s), *n);
        }
        let rtt = RttSummary { p50: 50.0, p99: 90.0, max: 100.0, mean: 55.0, samples: messages };
        let w = WorkloadReport::new(Pattern::Echo, 1, 42, messages, messages * 42, 1.0, Some(rtt));
        b.finish(mode, 1.0, Some(w), Counters::default())
    }

    fn runs() -> Vec<ModeRun> {
        vec![
            run("normal", 10, &[("net:netif_rx", &["netif_rx", "loopback_xmit", "ip_output"], 20)]),
            run("bridge", 20, &[("net:netif_rx", &["netif_rx", "veth_xmit", "br_forward", "ip_output"], 40)]),
            run(
                "<script>alert(1)</script>",
                5,
                &[("net:net_dev_queue", &["__dev_queue_xmit", "macvlan_start_xmit"], 9)],
            ),
        ]
    }

    fn comparison(runs: &[ModeRun]) -> Comparison {
        Comparison::new(
            runs.iter().map(|r| ModeReport::from_run(r, 10)).collect(),
            vec![("ipvlan".into(), "no <CONFIG_IPVLAN>".into())],
        )
    }

    #[test]
    fn page_has_the_drops_with_their_hints() {
        let run = crate::render::tables::tests::dropping_run();
        let c = Comparison::new(vec![ModeReport::from_run(&run, 10)], Vec::new());
        let page = render(&c, &[run], "t").unwrap();
        assert!(page.contains(r#"<h3 class="drops">Drops (4)</h3>"#), "{page}");
        assert!(page.contains("<td><code>NETFILTER_DROP</code></td><td><code>nft_do_chain+0x46f</code></td><td><code>veth1a2b(server)@host</code></td>"));
        assert!(page.contains("DOCKER-ISOLATION"));
        assert!(page.contains("<th>drops</th>"));
    }

    #[test]
    fn page_has_ladders_and_waterfalls() {
        let mut with = runs();
        with[1].journeys = Some(ladders::tests::report(1500));
        let mut j = ladders::tests::report(900);
        j.directions[0].hops[1].dev = "<evil>".into();
        with[0].journeys = Some(j);
        let page = render(&comparison(&with), &with, "t").unwrap();
        assert!(page.contains(r##"<a href="#ladders">hop ladders</a>"##));
        assert!(page.contains(r#"<section id="ladders">"#));
        // One waterfall per direction of the two modes with journeys.
        assert_eq!(page.matches(r#"<svg class="waterfall""#).count(), 4);
        assert!(page.contains("dtpa@9</code> +1.5 µs"), "side by side");
        assert!(page.contains("&lt;evil&gt;@9") && !page.contains("<evil>"));
        let start = page.find(r#"<svg class="waterfall""#).unwrap();
        let svg = &page[start..start + page[start..].find("</svg>").unwrap() + 6];
        ladders::tests::balanced(svg).unwrap();
        assert!(page.contains("Other paths: other data paths 3, ARP 2, handshake 3, retransmits 0"));
        let bare = runs();
        let plain = render(&comparison(&bare), &bare, "t").unwrap();
        assert!(!plain.contains("id=\"ladders\"") && !plain.contains("waterfall\""));
    }

    #[test]
    fn page_has_every_section_and_escapes_data() {
        let runs = runs();
        let page = render(&comparison(&runs), &runs, "Docker & modes").unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<title>Docker &amp; modes</title>"));
        for id in ["summary", "skipped", "matrix", "vs-normal", "mode-normal", "mode-bridge"] {
            assert!(page.contains(&format!("id=\"{id}\"")), "{id}");
        }
        assert!(page.contains(r#"id="mode-&lt;script&gt;alert(1)&lt;/script&gt;""#));
        assert_eq!(page.matches(r#"class="mode-section""#).count(), 3);
        // The only scripts are the page's own and, inside srcdoc (escaped), inferno's.
        assert_eq!(page.matches("<script>").count(), 1);
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("no &lt;CONFIG_IPVLAN&gt;"));
        // Flame graphs: one per mode, one differential per non-normal mode.
        assert_eq!(page.matches(r#"<iframe class="flame""#).count(), 5);
        assert!(page.contains("veth_xmit") && page.contains("br_forward"));
        assert!(page.contains("differential kernel stacks"));
        // Datapath functions are highlighted; paths are outermost first.
        assert!(page
            .contains(r#"<code class="fn dp" style="--c: rgb(66,133,244)" title="veth">veth_xmit</code>"#));
        assert!(page.contains("<code class=\"fn\">ip_output</code> → "));
    }

    #[test]
    fn the_summary_has_untraced_figures_and_the_tracer_cost() {
        let mut runs = runs();
        // bridge: 20 msg/s traced, 40 untraced, 2 events per message.
        let rtt = RttSummary { p50: 25.0, p99: 45.0, max: 50.0, mean: 26.0, samples: 40 };
        runs[1].untraced = Some(WorkloadReport::new(Pattern::Echo, 1, 42, 40, 40 * 42, 1.0, Some(rtt)));
        let page = render(&comparison(&runs), &runs, "t").unwrap();
        let row = |mode: &str| {
            let start = page.find(&format!(r##"<tr><td><a href="#mode-{mode}">"##)).unwrap();
            page[start..start + page[start..].find("</tr>").unwrap()].to_owned()
        };
        let bridge = row("bridge");
        // untraced msg/s, RTT p50; traced msg/s; kept; +µs/msg (1/20 − 1/40 s); +RTT p50; ns/event.
        for cell in [
            "<td>40.0</td>",
            "<td>25.0</td>",
            "<td>20.0</td>",
            "<td>50%</td>",
            "<td>+25000</td>",
            "<td>+25.0</td>",
            "<td>12500000</td>",
        ] {
            assert!(bridge.contains(cell), "{cell} not in {bridge}");
        }
        assert!(!bridge.contains(r#"class="phase""#), "{bridge}");
        // normal has no untraced phase: its traced figures, marked as such.
        assert!(row("normal").contains(r#"<td>10.0 <span class="phase""#), "{}", row("normal"));
        assert!(page.contains("msg/s and RTT: the untraced phase, except normal"), "the note");
        assert!(
            page.contains("untraced (the workload alone, before tracing): 40.0 msg/s"),
            "the mode's section"
        );
    }

    #[test]
    fn page_references_nothing_outside() {
        let runs = runs();
        let page = render(&comparison(&runs), &runs, "t").unwrap();
        let mut rest = page.as_str();
        while let Some(i) = rest.find("http") {
            let before = &rest[..i];
            let after = &rest[i..];
            if after.starts_with("http://") || after.starts_with("https://") {
                let attr = before.rsplit(char::is_whitespace).next().unwrap_or("");
                assert!(
                    attr.starts_with("xmlns") && attr.ends_with("=&quot;"),
                    "external reference: {:?}",
                    after.get(..40)
                );
            }
            rest = &after[4..];
        }
        for s in
            ["src=\"http", "href=\"http", "src=\"//", "href=\"//", "@import", "url(http", "url(//", "<link"]
        {
            assert!(!page.contains(s), "{s}");
        }
    }

    #[test]
    fn svg_embedding() {
        let svg = flame::svg("a;veth_xmit;net:x 3\n", "t").unwrap();
        assert!(svg.contains("DOCTYPE") && svg.contains("http://www.brendangregg.com"));
        let e = embeddable_svg(&svg);
        assert!(e.starts_with("<svg") && !e.contains("DOCTYPE"));
        assert!(e.contains(r#"xmlns="http://www.w3.org/2000/svg""#));
        assert!(!e.contains("http://www.brendangregg") && e.contains("www.brendangregg.com"));
        assert!(svg_height(&svg).is_some_and(|h| h > 30.0));
        assert_eq!(embeddable_svg("x http y https://a.b"), "x http y a.b");
    }

    #[test]
    fn helpers() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_709_210_096), "2024-02-29 12:34:56 UTC");
        assert_eq!(num(1234.4), "1234");
        assert_eq!(num(2.0), "2.00");
        assert_eq!(num(0.001234), "0.0012");
        assert_eq!(mode_id("a b"), "mode-a-b");
        assert_eq!(escape(r#"<a href="x">'&"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;");
    }
}
