//! Flame graphs of recorded runs, drawn with [inferno].
//!
//! [`folded`] turns a [`ModeRun`] into Brendan Gregg's folded-stack text (outermost frame
//! first, the tracepoint as the leaf), [`svg`] draws it, [`diff_svg`] draws a differential flame
//! graph of two runs, and [`write_svgs`] writes all of that for a set of runs into a directory.
//!
//! Datapath functions (see [`crate::datapath`]) get a fixed colour per component, so the frames
//! that tell the modes apart stand out from the red-yellow of the rest of the kernel; the
//! tracepoint leaves are grey-blue.
use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use inferno::{
    differential,
    flamegraph::{self, color::Color, color::PaletteMap},
};

use crate::{
    datapath::{self, Component},
    recording::ModeRun,
};

/// The root frame of events recorded without a kernel stack.
pub const NO_STACK: &str = "[no stack]";
/// The root frame of events whose stack index is not in the run's stack table.
pub const UNKNOWN_STACK: &str = "[unknown stack]";

/// The fill colour of a datapath component's frames, as RGB.
pub fn component_color(c: Component) -> (u8, u8, u8) {
    match c {
        Component::Veth => (66, 133, 244),
        Component::Bridge => (52, 168, 83),
        Component::Macvlan => (155, 89, 182),
        Component::Ipvlan => (0, 172, 193),
        Component::Loopback => (121, 134, 203),
        Component::Vxlan => (240, 98, 146),
        Component::Netfilter => (141, 110, 99),
    }
}

/// The fill colour of tracepoint (leaf) frames, as RGB.
pub const EVENT_COLOR: (u8, u8, u8) = (176, 190, 197);

/// A frame name made safe for the folded format: `;` separates frames and whitespace separates
/// the count, so both are replaced (by `:` and `_`); an empty name becomes `[unknown]`.
pub fn sanitize_frame(name: &str) -> String {
    if name.is_empty() {
        return "[unknown]".to_owned();
    }
    name.chars()
        .map(|c| match c {
            ';' => ':',
            c if c.is_whitespace() || c.is_control() => '_',
            c => c,
        })
        .collect()
}

/// The run's events as folded stacks, one line per distinct stack: frames outermost first,
/// separated by `;`, with the event name as the leaf frame, then a space and the summed count.
///
/// Events without a stack are folded under [`NO_STACK`] (`[no stack];net:netif_rx 12`). Lines
/// are sorted, so the text is deterministic; zero counts are left out.
pub fn folded(run: &ModeRun) -> String {
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for c in run.counts.iter().filter(|c| c.count > 0) {
        let mut key = match c.stack.map(|s| run.stacks.get(s as usize)) {
            None => NO_STACK.to_owned(),
            Some(None) => UNKNOWN_STACK.to_owned(),
            Some(Some(frames)) if frames.is_empty() => NO_STACK.to_owned(),
            Some(Some(frames)) => {
                frames.iter().rev().map(|f| sanitize_frame(f)).collect::<Vec<_>>().join(";")
            }
        };
        key.push(';');
        key.push_str(&sanitize_frame(&c.event));
        let n = lines.entry(key).or_default();
        *n = n.saturating_add(c.count);
    }
    let mut out = String::new();
    for (stack, n) in lines {
        out.push_str(&stack);
        out.push(' ');
        out.push_str(&n.to_string());
        out.push('\n');
    }
    out
}

/// Whether folded text has at least one stack line (inferno refuses empty input).
pub fn has_samples(folded: &str) -> bool {
    folded.lines().any(|l| {
        let l = l.trim();
        !l.is_empty()
            && !l.starts_with("# ")
            && l.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()).is_some_and(|n| n > 0.0)
    })
}

/// Colours for the datapath functions and tracepoint leaves found in folded text.
fn palette(folded: &str) -> PaletteMap {
    let mut map = PaletteMap::default();
    let mut seen: HashSet<&str> = HashSet::new();
    for line in folded.lines() {
        let stack = line.trim().rsplit_once(' ').map_or("", |(s, _)| s);
        let frames: Vec<&str> = stack.split(';').filter(|f| !f.is_empty()).collect();
        for (i, f) in frames.iter().enumerate() {
            if !seen.insert(f) {
                continue;
            }
            let rgb = match datapath::component(f) {
                Some(c) => Some(component_color(c)),
                // Leaves are the tracepoints (`net:netif_rx`, `kprobe:veth_xmit`).
                None if i + 1 == frames.len() && f.contains(':') => Some(EVENT_COLOR),
                None => None,
            };
            if let Some((r, g, b)) = rgb {
                map.insert(*f, Color { r, g, b });
            }
        }
    }
    map
}

fn options<'a>(title: &str, palette_map: Option<&'a mut PaletteMap>) -> flamegraph::Options<'a> {
    let mut opt = flamegraph::Options::default();
    opt.title = title.to_owned();
    opt.count_name = "events".to_owned();
    // Colours from the function names' hashes: the same input gives the same SVG.
    opt.hash = true;
    opt.palette_map = palette_map;
    opt
}

/// Runs inferno; input without samples gives a small "no events" SVG (inferno would log an
/// error and fail).
fn draw(opt: &mut flamegraph::Options<'_>, folded: &str) -> anyhow::Result<String> {
    if !has_samples(folded) {
        return Ok(empty_svg(&opt.title));
    }
    let mut out = Vec::new();
    flamegraph::from_lines(opt, folded.lines(), &mut out).context("drawing the flame graph")?;
    String::from_utf8(out).context("inferno wrote a non-UTF-8 SVG")
}

/// The SVG drawn for a run without events.
fn empty_svg(title: &str) -> String {
    let title: String = title
        .chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            c => c.to_string(),
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"1200\" height=\"60\" viewBox=\"0 0 1200 60\" xmlns=\"http://www.w3.org/2000/svg\">\
         <rect width=\"100%\" height=\"100%\" fill=\"#f8f8f8\"/>\
         <text x=\"50%\" y=\"24\" text-anchor=\"middle\" font-family=\"monospace\" font-size=\"17\">{title}</text>\
         <text x=\"50%\" y=\"46\" text-anchor=\"middle\" font-family=\"monospace\" font-size=\"12\">no events recorded</text>\
         </svg>\n"
    )
}

/// A flame graph SVG (with inferno's interactive zoom and search) of folded stacks.
///
/// Colours are deterministic; datapath functions get their component's colour
/// ([`component_color`]), tracepoints [`EVENT_COLOR`].
pub fn svg(folded: &str, title: &str) -> anyhow::Result<String> {
    let mut map = palette(folded);
    let mut opt = options(title, Some(&mut map));
    draw(&mut opt, folded)
}

/// A differential flame graph: the frames and widths of `after`, coloured by how the frame's
/// count changed from `before` (red: more, blue: fewer). `before` is first scaled to `after`'s
/// total, so runs with different numbers of events compare. Stacks only in `before` are not
/// drawn.
pub fn diff_svg(before: &str, after: &str, title: &str) -> anyhow::Result<String> {
    let mut three_columns = Vec::new();
    let opt = differential::Options { normalize: true, ..Default::default() };
    differential::from_readers(opt, before.as_bytes(), after.as_bytes(), &mut three_columns)
        .context("folding the differential stacks")?;
    let three_columns = String::from_utf8(three_columns).context("inferno wrote non-UTF-8 stacks")?;
    let mut opt = options(title, None);
    opt.subtitle =
        Some("red: more events than the baseline, blue: fewer (baseline scaled to the same total)".into());
    draw(&mut opt, &three_columns)
}

/// A file-name-safe form of a mode name: ASCII letters, digits, `-`, `_` and `.` (not leading).
pub fn file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect();
    let s = s.trim_start_matches('.');
    if s.is_empty() {
        "run".to_owned()
    } else {
        s.to_owned()
    }
}

/// Writes `<mode>.folded` and `<mode>.svg` for each run into `dir` (created if needed) and the
/// differential graphs: `diff-normal-vs-<mode>.svg` for every other run when a run is named
/// `normal`, else `diff-<a>-vs-<b>.svg` when there are exactly two runs. Mode names are made
/// file-name safe ([`file_stem`]); runs whose names collide get a `-2`, `-3`, ... suffix.
/// Returns the written paths, in writing order.
pub fn write_svgs(dir: &Path, runs: &[ModeRun]) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut used: HashSet<String> = HashSet::new();
    let stems: Vec<String> = runs
        .iter()
        .map(|r| {
            let base = file_stem(&r.mode);
            let mut stem = base.clone();
            let mut n = 1;
            while !used.insert(stem.clone()) {
                n += 1;
                stem = format!("{base}-{n}");
            }
            stem
        })
        .collect();
    let foldeds: Vec<String> = runs.iter().map(folded).collect();
    let mut written = Vec::new();
    let mut write = |name: String, text: &str| -> anyhow::Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    for ((run, stem), f) in runs.iter().zip(&stems).zip(&foldeds) {
        write(format!("{stem}.folded"), f)?;
        let title = format!("{}: kernel stacks of traced events", run.mode);
        write(
            format!("{stem}.svg"),
            &svg(f, &title).with_context(|| format!("flame graph of {}", run.mode))?,
        )?;
    }
    let pairs: Vec<(usize, usize)> = match runs.iter().position(|r| r.mode == "normal") {
        Some(b) => (0..runs.len()).filter(|i| *i != b).map(|i| (b, i)).collect(),
        None if runs.len() == 2 => vec![(0, 1)],
        None => Vec::new(),
    };
    for (a, b) in pairs {
        let title = format!("{} vs {}: differential kernel stacks", runs[b].mode, runs[a].mode);
        let svg = diff_svg(&foldeds[a], &foldeds[b], &title)
            .with_context(|| format!("differential flame graph of {} vs {}", runs[a].mode, runs[b].mode))?;
        write(format!("diff-{}-vs-{}.svg", stems[a], stems[b]), &svg)?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{counters::Counters, recording::RunBuilder};

    fn run(mode: &str, paths: &[(&str, &[&str], u64)]) -> ModeRun {
        let mut b = RunBuilder::default();
        for (event, frames, n) in paths {
            if frames.is_empty() {
                b.add(event, "eth0", 1, 2, None, *n);
            } else {
                let s = b.stack(frames.iter().map(|f| (*f).to_owned()).collect());
                b.add(event, "eth0", 1, 2, Some(s), *n);
            }
        }
        b.finish(mode, 1.0, None, Counters::default())
    }

    fn bridge() -> ModeRun {
        run(
            "bridge",
            &[
                ("net:netif_rx", &["netif_rx", "veth_xmit", "br_forward", "entry_SYSCALL_64"], 7),
                ("net:net_dev_queue", &["__dev_queue_xmit", "ip_output", "entry_SYSCALL_64"], 5),
                ("net:netif_rx", &["netif_rx", "veth_xmit", "br_forward", "entry_SYSCALL_64"], 3),
                ("net:napi_gro_receive_entry", &[], 2),
            ],
        )
    }

    #[test]
    fn folded_lines_are_outermost_first_sorted_and_summed() {
        let text = folded(&bridge());
        assert_eq!(
            text,
            "[no stack];net:napi_gro_receive_entry 2\n\
             entry_SYSCALL_64;br_forward;veth_xmit;netif_rx;net:netif_rx 10\n\
             entry_SYSCALL_64;ip_output;__dev_queue_xmit;net:net_dev_queue 5\n"
        );
        // The same event on two devices with the same stack is one line.
        let mut b = RunBuilder::default();
        let s = b.stack(vec!["f".into()]);
        b.add("net:x", "eth0", 1, 2, Some(s), 1);
        b.add("net:x", "eth1", 1, 3, Some(s), 2);
        b.add("net:x", "eth1", 1, 3, None, 0);
        assert_eq!(folded(&b.finish("m", 1.0, None, Counters::default())), "f;net:x 3\n");
    }

    #[test]
    fn frames_are_sanitized() {
        let r = run("m", &[("net:a b", &["foo;bar", "veth_xmit [veth]", ""], 4)]);
        assert_eq!(folded(&r), "[unknown];veth_xmit_[veth];foo:bar;net:a_b 4\n");
        assert_eq!(sanitize_frame("a\tb\nc"), "a_b_c");
        // A stack index outside the table does not panic.
        let mut bad = run("m", &[("net:x", &["f"], 1)]);
        bad.stacks.clear();
        assert_eq!(folded(&bad), format!("{UNKNOWN_STACK};net:x 1\n"));
    }

    #[test]
    fn svg_is_a_deterministic_flame_graph_with_datapath_colours() {
        let f = folded(&bridge());
        let s = svg(&f, "bridge <test>").unwrap();
        assert!(s.contains("<svg"), "{s}");
        assert!(s.contains("veth_xmit") && s.contains("__dev_queue_xmit"));
        assert!(s.contains("bridge &lt;test&gt;"), "title is escaped by inferno");
        assert!(s.contains("rgb(66,133,244)"), "veth frames are blue");
        assert!(s.contains("rgb(176,190,197)"), "tracepoint leaves are grey-blue");
        assert_eq!(s, svg(&f, "bridge <test>").unwrap(), "deterministic");
        // Empty input draws a placeholder instead of failing.
        let empty = svg("", "empty <run>").unwrap();
        assert!(
            empty.contains("<svg")
                && empty.contains("no events recorded")
                && empty.contains("empty &lt;run&gt;")
        );
        assert!(!has_samples("") && !has_samples("# comment\n") && has_samples("a;b 3\n"));
    }

    #[test]
    fn diff_svg_colours_changes() {
        let before = folded(&run("normal", &[("net:netif_rx", &["netif_rx", "loopback_xmit"], 10)]));
        let after = folded(&bridge());
        let s = diff_svg(&before, &after, "bridge vs normal").unwrap();
        assert!(s.contains("<svg") && s.contains("veth_xmit") && s.contains("bridge vs normal"));
        // Differential frames carry the change in their tooltip.
        assert!(s.contains("%; +"), "{s}");
        assert!(diff_svg("", "", "nothing").unwrap().contains("no events recorded"));
    }

    #[test]
    fn write_svgs_writes_the_expected_files() {
        let dir = std::env::temp_dir().join(format!("dt-flame-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let normal = run("normal", &[("net:netif_rx", &["netif_rx", "loopback_xmit"], 10)]);
        let mut weird = bridge();
        weird.mode = "../mac vlan".into();
        let runs = [normal, bridge(), weird];
        let paths = write_svgs(&dir.join("sub"), &runs).unwrap();
        let mut names: Vec<String> =
            paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "_mac_vlan.folded",
                "_mac_vlan.svg",
                "bridge.folded",
                "bridge.svg",
                "diff-normal-vs-_mac_vlan.svg",
                "diff-normal-vs-bridge.svg",
                "normal.folded",
                "normal.svg",
            ]
        );
        for p in &paths {
            assert!(p.starts_with(dir.join("sub")) && p.is_file(), "{}", p.display());
        }
        assert_eq!(std::fs::read_to_string(dir.join("sub/bridge.folded")).unwrap(), folded(&runs[1]));

        // Two runs without `normal`: one diff; colliding names get suffixes.
        let two = write_svgs(&dir, &[bridge(), bridge()]).unwrap();
        let names: Vec<_> =
            two.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(
            names,
            ["bridge.folded", "bridge.svg", "bridge-2.folded", "bridge-2.svg", "diff-bridge-vs-bridge-2.svg"]
        );
        let three = write_svgs(&dir, &[bridge(), run("a", &[]), run("b", &[])]).unwrap();
        assert_eq!(three.len(), 6, "no diff without normal and more than two runs");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
