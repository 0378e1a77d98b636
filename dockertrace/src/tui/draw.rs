//! Drawing a [`View`] into a ratatui frame: the header, the pane tabs, the current pane (or an
//! open packet's journey) and the status line. Pure: what is drawn depends only on the view
//! and the [`UiState`], so tests render into ratatui's `TestBackend` and read the buffer.
use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, TableState},
    Frame,
};

use super::model::{short_event, Header, PacketRec, Pane, UiState, View};
use crate::sinks::live::micros;

/// Styles that follow `NO_COLOR`: without color, only bold and reverse video.
#[derive(Clone, Copy)]
struct Paint {
    color: bool,
}

impl Paint {
    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    fn alarm(self, n: u64) -> Style {
        if n > 0 {
            self.fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::default()
        }
    }

    fn selected(self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }

    fn dim(self) -> Style {
        if self.color {
            Style::default().add_modifier(Modifier::DIM)
        } else {
            Style::default()
        }
    }
}

/// Draws one frame.
pub fn draw(f: &mut Frame, view: &View, ui: &UiState) {
    let paint = Paint { color: ui.color };
    let [head, tabs, body, status] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(header_lines(&view.header, paint)), head);
    f.render_widget(Paragraph::new(tab_line(ui, paint)), tabs);
    if ui.help {
        f.render_widget(Paragraph::new(help_lines()).block(Block::default().borders(Borders::TOP)), body);
    } else if let Some(p) = &ui.open {
        journey(f, body, p, ui, paint);
    } else {
        match ui.pane {
            Pane::Ladder => ladder(f, body, view, ui, paint),
            Pane::Rates => rates(f, body, view, ui, paint),
            Pane::Functions => functions(f, body, view, ui, paint),
            Pane::Packets => packets(f, body, view, ui, paint),
            Pane::Compare => compare(f, body, view, paint),
        }
    }
    f.render_widget(Paragraph::new(status_line(view, ui, paint)), status);
}

fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn header_lines(h: &Header, paint: Paint) -> Vec<Line<'static>> {
    let modes = if h.meta.modes.len() > 1 {
        let at = h.meta.modes.iter().position(|m| *m == h.mode).map_or(0, |i| i + 1);
        format!("mode {} ({at}/{})", h.mode, h.meta.modes.len())
    } else if h.mode == "trace" {
        "trace".to_owned()
    } else {
        format!("mode {}", h.mode)
    };
    let mut first = vec![Span::styled("dockertrace ", Style::default().add_modifier(Modifier::BOLD))];
    let mut facts = vec![modes];
    if !h.meta.runtime.is_empty() {
        facts.push(format!("runtime {}", h.meta.runtime));
    }
    facts.push(format!("kernel {}", h.meta.kernel));
    if !h.attach.is_empty() {
        facts.push(h.attach.clone());
    }
    facts.push(format!("stacks {}", h.meta.stacks));
    first.push(Span::raw(facts.join(" · ")));
    let time = match (h.elapsed_s, h.remaining_s) {
        (Some(e), Some(r)) => format!("{} {e:.0}s, {r:.0}s left", h.phase),
        (Some(e), None) => format!("{} {e:.0}s", h.phase),
        _ => h.phase.clone(),
    };
    let second = vec![
        Span::styled(time, paint.fg(Color::Cyan)),
        Span::raw(format!(" · {} ev/s · {} events · ", count(h.rate), count(h.events))),
        Span::styled(format!("lost {}", count(h.lost)), paint.alarm(h.lost)),
        Span::raw(" · "),
        Span::styled(format!("stack err {}", count(h.stack_errors)), paint.alarm(h.stack_errors)),
        Span::raw(format!(" · cpu {:.1}s · mem {} MiB", h.cpu_s, h.rss_kib / 1024)),
    ];
    vec![Line::from(first), Line::from(second)]
}

fn tab_line(ui: &UiState, paint: Paint) -> Line<'static> {
    let mut spans = Vec::new();
    for (i, p) in ui.panes().iter().enumerate() {
        let text = format!(" {} {} ", i + 1, p.title());
        let style = if *p == ui.pane { paint.selected().add_modifier(Modifier::BOLD) } else { paint.dim() };
        spans.push(Span::styled(text, style));
    }
    if ui.paused {
        spans.push(Span::styled(" PAUSED ", paint.fg(Color::Yellow).add_modifier(Modifier::BOLD)));
    }
    if ui.editing || !ui.filter.is_empty() {
        let cursor = if ui.editing { "_" } else { "" };
        spans.push(Span::raw(format!(" /{}{cursor}", ui.filter)));
    }
    spans.push(Span::styled(format!(" sort: {}", ui.sort_name()), paint.dim()));
    Line::from(spans)
}

fn status_line(view: &View, ui: &UiState, paint: Paint) -> Line<'static> {
    let keys = if ui.open.is_some() {
        "Esc back  ↑↓ hop  q quit"
    } else if ui.editing {
        "type to filter  Enter keep  Esc clear"
    } else {
        "q quit  p pause  / filter  s sort  Tab/1-5 pane  Enter open  ? help"
    };
    let mut spans = vec![Span::styled(keys.to_owned(), paint.dim())];
    if !view.log.is_empty() {
        spans.push(Span::raw("  "));
        spans.push(Span::raw(view.log.clone()));
    }
    Line::from(spans)
}

fn help_lines() -> Vec<Line<'static>> {
    [
        "Tab / Shift-Tab, 1-5   switch panes (ladder, rates, functions, packets, compare)",
        "↑ ↓ PgUp PgDn Home End  move the selection",
        "Enter                  packets: open the packet's journey (Esc: back)",
        "p                      pause the view (the kernel keeps counting; nothing is lost)",
        "/                      filter the panes by tuple, device, container or event",
        "s                      change the pane's sort order",
        "q, Ctrl-C              stop: teardown, then the summary after the screen is restored",
    ]
    .into_iter()
    .map(Line::from)
    .collect()
}

/// A table with a header row and the selection at `sel`.
fn table<'a>(
    f: &mut Frame,
    area: Rect,
    rows: Vec<Row<'a>>,
    widths: &[Constraint],
    head: &[&'static str],
    sel: Option<usize>,
) {
    let header =
        Row::new(head.iter().map(|h| Cell::from(*h))).style(Style::default().add_modifier(Modifier::BOLD));
    let t = Table::new(rows, widths.to_vec())
        .header(header)
        .column_spacing(1)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(sel);
    f.render_stateful_widget(t, area, &mut state);
}

fn empty(f: &mut Frame, area: Rect, text: &str) {
    f.render_widget(Paragraph::new(text.to_owned()), area);
}

fn ladder(f: &mut Frame, area: Rect, view: &View, ui: &UiState, paint: Paint) {
    let [spark_area, rest] = Layout::vertical([Constraint::Length(3), Constraint::Min(1)]).areas(area);
    let width = usize::from(spark_area.width.saturating_sub(2)).max(1);
    let data: Vec<u64> = view.spark.iter().rev().take(width).rev().copied().collect();
    let peak = data.iter().max().copied().unwrap_or(0);
    let spark = Sparkline::default()
        .block(Block::default().borders(Borders::TOP).title(format!("events/s (peak {})", count(peak))))
        .data(&data)
        .style(paint.fg(Color::Green));
    f.render_widget(spark, spark_area);
    if view.ladder.is_empty() {
        return empty(f, rest, "no data packet followed yet (journeys need headers: TCP/UDP payload)");
    }
    // Narrow terminals (80 columns) leave the function out: the device comes first.
    let wide = rest.width >= 110;
    let rows: Vec<Row> = view
        .ladder
        .iter()
        .map(|r| {
            let mut cells = vec![
                Cell::from(if r.hop == 0 { r.direction.name().to_owned() } else { String::new() }),
                Cell::from(r.hop.to_string()),
                Cell::from(r.dev.to_string()).style(paint.fg(Color::Cyan)),
                Cell::from(short_event(&r.event).to_owned()),
            ];
            if wide {
                cells.push(
                    Cell::from(r.function.as_deref().unwrap_or("").to_owned()).style(paint.fg(Color::Yellow)),
                );
            }
            cells.push(Cell::from(count(r.packets)));
            cells.push(Cell::from(if r.hop == 0 { "-".to_owned() } else { micros(r.p50_ns) }));
            cells.push(Cell::from(if r.hop == 0 { "-".to_owned() } else { micros(r.p99_ns) }));
            Row::new(cells)
        })
        .collect();
    let mut widths =
        vec![Constraint::Length(8), Constraint::Length(3), Constraint::Fill(1), Constraint::Length(18)];
    let mut head = vec!["dir", "hop", "device@container", "event"];
    if wide {
        widths.push(Constraint::Length(22));
        head.push("function");
    }
    widths.extend([Constraint::Length(8), Constraint::Length(7), Constraint::Length(7)]);
    head.extend(["packets", "p50 Δ", "p99 Δ"]);
    table(f, rest, rows, &widths, &head, Some(ui.selected(view.ladder.len())));
}

/// A dim line above a table when events went beyond the model's cells (counted, not shown);
/// the rest of `area` for the table.
fn beyond_the_cells(f: &mut Frame, area: Rect, view: &View, paint: Paint) -> Rect {
    if view.other_events == 0 {
        return area;
    }
    let [note, rest] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    let text = format!("+{} events beyond the view's cells: counted, not listed", count(view.other_events));
    f.render_widget(Paragraph::new(Span::styled(text, paint.dim())), note);
    rest
}

fn rates(f: &mut Frame, area: Rect, view: &View, ui: &UiState, paint: Paint) {
    if view.rates.is_empty() {
        return empty(f, area, "no event yet");
    }
    let area = beyond_the_cells(f, area, view, paint);
    let rows: Vec<Row> = view
        .rates
        .iter()
        .map(|r| {
            Row::new(vec![
                Cell::from(short_event(&r.event).to_owned()),
                Cell::from(r.dev.to_string()).style(paint.fg(Color::Cyan)),
                Cell::from(count(r.rate)),
                Cell::from(count(r.total)),
            ])
        })
        .collect();
    let widths =
        [Constraint::Length(24), Constraint::Fill(1), Constraint::Length(10), Constraint::Length(12)];
    table(
        f,
        area,
        rows,
        &widths,
        &["event", "device@container", "events/s", "total"],
        Some(ui.selected(view.rates.len())),
    );
}

fn functions(f: &mut Frame, area: Rect, view: &View, ui: &UiState, paint: Paint) {
    if view.functions.is_empty() {
        return empty(f, area, "no stack walked yet (--stacks none shows no functions)");
    }
    let area = beyond_the_cells(f, area, view, paint);
    let top = view.functions.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
    let rows: Vec<Row> = view
        .functions
        .iter()
        .map(|(name, n)| {
            let bar = "█".repeat(((n * 20).div_ceil(top)) as usize);
            Row::new(vec![
                Cell::from(name.to_string()).style(paint.fg(Color::Yellow)),
                Cell::from(count(*n)),
                Cell::from(bar).style(paint.fg(Color::Green)),
            ])
        })
        .collect();
    let widths = [Constraint::Fill(1), Constraint::Length(12), Constraint::Length(20)];
    table(f, area, rows, &widths, &["function", "events", ""], Some(ui.selected(view.functions.len())));
}

fn packets(f: &mut Frame, area: Rect, view: &View, ui: &UiState, paint: Paint) {
    if view.packets.is_empty() {
        return empty(f, area, "no packet followed yet");
    }
    // Narrow terminals leave the packet's id out (its journey shows it): the tuple comes first.
    let wide = area.width >= 100;
    let rows: Vec<Row> = view
        .packets
        .iter()
        .map(|p| {
            let mut cells =
                vec![Cell::from(format!("{:.6}", p.first_ts().saturating_sub(view.t0_ns) as f64 / 1e9))];
            if wide {
                cells.push(Cell::from(p.label()));
            }
            cells.extend([
                Cell::from(p.tuple()).style(paint.fg(Color::Cyan)),
                Cell::from(p.flags()),
                Cell::from(p.hops.len().to_string()),
                Cell::from(micros(p.one_way_ns())),
                Cell::from(if p.drop.is_some() { "DROP" } else { "" }).style(paint.alarm(1)),
            ]);
            Row::new(cells)
        })
        .collect();
    let [note, area] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    let kept = format!(
        "the latest {} packets followed, newest last ({} more not kept); Enter: its journey",
        view.packets.len(),
        count(view.packets_dropped)
    );
    f.render_widget(Paragraph::new(Span::styled(kept, paint.dim())), note);
    let mut widths = vec![Constraint::Length(9)];
    let mut head = vec!["time"];
    if wide {
        widths.push(Constraint::Length(11));
        head.push("packet");
    }
    widths.extend([
        Constraint::Fill(1),
        Constraint::Length(8),
        Constraint::Length(4),
        Constraint::Length(8),
        Constraint::Length(4),
    ]);
    head.extend(["tuple", "flags", "hops", "one-way", ""]);
    table(f, area, rows, &widths, &head, Some(ui.selected(view.packets.len())));
}

fn journey(f: &mut Frame, area: Rect, p: &PacketRec, ui: &UiState, paint: Paint) {
    let [title, hops, stack] =
        Layout::vertical([Constraint::Length(2), Constraint::Min(3), Constraint::Length(6)]).areas(area);
    let mut first = vec![Span::styled(
        format!("journey {}  {} hops, {} one-way", p.label(), p.hops.len(), micros(p.one_way_ns())),
        Style::default().add_modifier(Modifier::BOLD),
    )];
    if p.more_hops > 0 {
        first.push(Span::styled(format!("  (+{} hops not kept)", p.more_hops), paint.dim()));
    }
    if let Some(d) = &p.drop {
        first.push(Span::styled(format!("  DROP {d}"), paint.alarm(1)));
    }
    let second = Line::from(format!("{}  {}", p.tuple(), p.flags()));
    f.render_widget(Paragraph::new(vec![Line::from(first), second]), title);
    let t0 = p.first_ts();
    let rows: Vec<Row> = p
        .hops
        .iter()
        .map(|h| {
            Row::new(vec![
                Cell::from(format!("{:.1}µs", h.ts_ns.saturating_sub(t0) as f64 / 1e3)),
                Cell::from(if h.ts_ns == t0 { "-".to_owned() } else { format!("+{}", micros(h.delta_ns)) }),
                Cell::from(h.dev.to_string()).style(paint.fg(Color::Cyan)),
                Cell::from(short_event(&h.event).to_owned()),
                Cell::from(h.function.as_deref().unwrap_or("").to_owned()).style(paint.fg(Color::Yellow)),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Fill(1),
        Constraint::Length(20),
        Constraint::Length(22),
    ];
    let sel = ui.hop_sel.min(p.hops.len().saturating_sub(1));
    table(f, hops, rows, &widths, &["time", "delta", "device@container", "event", "function"], Some(sel));
    let frames = p.hops.get(sel).and_then(|h| h.stack.as_ref()).map_or_else(
        || "no stack walked for this hop (adaptive stacks walk a few per path)".to_owned(),
        |s| s.functions().collect::<Vec<_>>().join(" ← "),
    );
    let block = Block::default().borders(Borders::TOP).title(format!("stack of hop {sel}, innermost first"));
    f.render_widget(Paragraph::new(frames).wrap(ratatui::widgets::Wrap { trim: true }).block(block), stack);
}

fn compare(f: &mut Frame, area: Rect, view: &View, paint: Paint) {
    if view.compare.is_empty() {
        return empty(f, area, "each mode's figures and ladder appear here as it finishes");
    }
    let n = view.compare.len() as u16;
    let [figs, ladders] = Layout::vertical([Constraint::Length(n + 2), Constraint::Min(3)]).areas(area);
    let opt = |v: Option<f64>, p: usize| v.map_or("-".to_owned(), |v| format!("{v:.p$}"));
    let rows: Vec<Row> = view
        .compare
        .iter()
        .map(|m| {
            Row::new(vec![
                Cell::from(m.mode.clone()).style(Style::default().add_modifier(Modifier::BOLD)),
                Cell::from(opt(m.untraced_msgs_per_s, 0)),
                Cell::from(opt(m.msgs_per_s, 0)),
                Cell::from(opt(m.rtt_p50_us, 1)),
                Cell::from(count(m.events)),
                Cell::from(opt(m.events_per_msg(), 1)),
                Cell::from(count(m.lost)).style(paint.alarm(m.lost)),
                Cell::from(m.note.clone().unwrap_or_default()),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(11),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(10),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Fill(1),
    ];
    let head = ["mode", "untraced", "traced", "RTT µs", "events", "ev/msg", "lost", ""];
    table(f, figs, rows, &widths, &head, None);
    compare_ladders(f, ladders, view, paint);
}

/// The modes' request ladders side by side: the latest ones that fit.
fn compare_ladders(f: &mut Frame, area: Rect, view: &View, paint: Paint) {
    let fit = usize::from(area.width / 32).max(1);
    let with: Vec<_> = view.compare.iter().filter(|m| !m.ladder.is_empty()).collect();
    let shown = &with[with.len().saturating_sub(fit)..];
    if shown.is_empty() {
        return;
    }
    let cols = Layout::horizontal(vec![Constraint::Ratio(1, shown.len() as u32); shown.len()]).split(area);
    for (m, col) in shown.iter().zip(cols.iter()) {
        let mut lines =
            vec![Line::styled(format!("{} request", m.mode), Style::default().add_modifier(Modifier::BOLD))];
        if m.ladder.is_empty() {
            lines.push(Line::raw("no ladder"));
        }
        for (dev, _event, p50) in &m.ladder {
            lines.push(Line::from(vec![
                Span::styled(
                    format!("{:>8} ", if *p50 == 0 { "-".to_owned() } else { micros(*p50) }),
                    paint.dim(),
                ),
                Span::styled(dev.clone(), paint.fg(Color::Cyan)),
            ]));
        }
        f.render_widget(Paragraph::new(lines).block(Block::default().borders(Borders::TOP)), *col);
    }
}

#[cfg(test)]
mod tests {
    use ratatui::{backend::TestBackend, Terminal};

    use super::*;
    use crate::tui::model::{
        tests::{full, model_with},
        Key, ModeFigures,
    };

    /// The frame's text, one string per row (trailing blanks trimmed).
    fn screen(view: &View, ui: &UiState, w: u16, h: u16) -> Vec<String> {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, view, ui)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..h)
            .map(|y| {
                (0..w).map(|x| buf[(x, y)].symbol().to_owned()).collect::<String>().trim_end().to_owned()
            })
            .collect()
    }

    fn has(rows: &[String], needle: &str) -> bool {
        rows.iter().any(|r| r.contains(needle))
    }

    #[test]
    fn header_and_ladder_fit_80_by_24() {
        let mut m = model_with(20, 30);
        m.counters.ring_full = 3;
        m.second();
        let ui = UiState::new(false, false);
        let rows = screen(&full(&m, &ui), &ui, 80, 24);
        let all = rows.join("\n");
        assert!(rows[0].starts_with("dockertrace mode bridge"), "{all}");
        assert!(
            has(&rows, "kernel 6.18.0") && has(&rows, "tp_btf") && has(&rows, "stacks adaptive"),
            "{all}"
        );
        assert!(has(&rows, "60 ev/s") && has(&rows, "lost 3"), "{all}");
        assert!(has(&rows, " 1 ladder ") && has(&rows, " 4 packets "), "{all}");
        assert!(!has(&rows, "compare"), "one mode has no compare page: {all}");
        let ladder: Vec<&String> = rows.iter().filter(|r| r.contains("@7")).collect();
        assert_eq!(ladder.len(), 3, "{all}");
        assert!(ladder[0].contains("request") && ladder[0].contains("eth0@7"), "{all}");
        assert!(ladder[2].contains("netif_receive_skb") && ladder[2].contains("µs"), "{all}");
        assert!(has(&rows, "q quit"), "{all}");
        // The rest of the second line, on a wider terminal: time left, the tracer's own cost.
        m.meta.duration_s = Some(60.0);
        m.now = m.traced_since.expect("tracing") + 12.0;
        (m.cpu_s, m.rss_kib) = (1.54, 46_080);
        m.counters.stack_error = 2;
        let rows = screen(&full(&m, &ui), &ui, 140, 24);
        let all = rows.join("\n");
        assert!(has(&rows, "12s, 48s left"), "{all}");
        assert!(has(&rows, "stack err 2 · cpu 1.5s · mem 45 MiB"), "{all}");
    }

    #[test]
    fn lost_is_red_with_color_and_plain_without() {
        let mut m = model_with(1, 1);
        m.counters.ring_full = 1;
        for color in [true, false] {
            let ui = UiState::new(false, color);
            let mut t = Terminal::new(TestBackend::new(100, 10)).unwrap();
            t.draw(|f| draw(f, &full(&m, &ui), &ui)).unwrap();
            let buf = t.backend().buffer();
            let row: String = (0..100).map(|x| buf[(x, 1)].symbol().to_owned()).collect();
            let x = row.find("lost").map(|b| row[..b].chars().count()).expect("lost shown") as u16;
            let fg = buf[(x, 1)].fg;
            assert_eq!(fg == Color::Red, color, "color {color}: {fg:?}");
        }
    }

    #[test]
    fn panes_rates_functions_packets_and_a_journey() {
        let m = model_with(5, 30);
        let mut ui = UiState::new(false, false);
        let v = full(&m, &ui);
        ui.key(Key::Char('2'), &v);
        let rows = screen(&v, &ui, 80, 24);
        assert!(has(&rows, "device@container") && has(&rows, "netif_receive_skb"), "{}", rows.join("\n"));
        ui.key(Key::Char('3'), &v);
        let rows = screen(&v, &ui, 80, 24);
        assert!(has(&rows, "dev_queue_xmit") && has(&rows, "ip_finish_output2"), "{}", rows.join("\n"));
        ui.key(Key::Char('4'), &v);
        let rows = screen(&v, &ui, 80, 24);
        assert!(
            has(&rows, "10.213.0.3:41234 → 10.213.0.2:10000 TCP") && has(&rows, "[P.] 42"),
            "{}",
            rows.join("\n")
        );
        ui.key(Key::Enter, &v);
        let rows = screen(&v, &ui, 80, 24);
        let all = rows.join("\n");
        assert!(has(&rows, "journey #0.5  3 hops, 32.0µs one-way"), "{all}");
        assert!(has(&rows, "10.213.0.3:41234 → 10.213.0.2:10000 TCP  [P.] 42"), "{all}");
        assert!(has(&rows, "+30.0µs") && has(&rows, "veth1@7"), "{all}");
        assert!(has(&rows, "dev_queue_xmit ← ip_finish_output2"), "the first hop's stack: {all}");
        assert!(!has(&rows, "not kept"), "{all}");
        // What went beyond the caps is said, not silently left out.
        if let Some(p) = ui.open.as_mut() {
            p.more_hops = 4;
        }
        let rows = screen(&v, &ui, 80, 24);
        assert!(has(&rows, "3 hops, 32.0µs one-way  (+4 hops not kept)"), "{}", rows.join("\n"));
        let beyond = View { other_events: 1234, ..v.clone() };
        for pane in ['2', '3'] {
            ui.key(Key::Esc, &beyond);
            ui.key(Key::Char(pane), &beyond);
            let rows = screen(&beyond, &ui, 80, 24);
            assert!(has(&rows, "+1 234 events beyond the view's cells"), "pane {pane}: {}", rows.join("\n"));
        }
        assert!(!has(&screen(&v, &ui, 80, 24), "beyond the view's cells"));
    }

    #[test]
    fn compare_page_puts_modes_side_by_side() {
        let mut m = model_with(1, 1);
        for (mode, dev) in [("bridge", "veth0@host"), ("macvlan", "eth0@server")] {
            m.compare.push(ModeFigures {
                mode: mode.into(),
                events: 1400,
                messages: Some(100),
                msgs_per_s: Some(20.0),
                untraced_msgs_per_s: Some(25_000.0),
                rtt_p50_us: Some(38.5),
                lost: 0,
                ladder: vec![(dev.into(), "netif_rx".into(), 2_500)],
                note: None,
            });
        }
        let mut ui = UiState::new(true, false);
        ui.key(Key::Char('5'), &full(&m, &ui));
        let rows = screen(&full(&m, &ui), &ui, 80, 24);
        let all = rows.join("\n");
        assert!(has(&rows, "25000") && has(&rows, "38.5") && has(&rows, "14.0"), "{all}");
        let side = rows.iter().find(|r| r.contains("bridge request")).expect(&all);
        assert!(side.contains("macvlan request"), "{all}");
        assert!(has(&rows, "2.5µs veth0@host"), "{all}");
    }

    #[test]
    fn tiny_terminals_do_not_panic() {
        let m = model_with(3, 3);
        for pane in ['1', '2', '3', '4', '5'] {
            let mut ui = UiState::new(true, false);
            ui.key(Key::Char(pane), &full(&m, &ui));
            for (w, h) in [(80, 24), (20, 5), (1, 1), (200, 60)] {
                screen(&full(&m, &ui), &ui, w, h);
            }
        }
    }
}
