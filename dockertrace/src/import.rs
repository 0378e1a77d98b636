//! Imports `perf script` text into a [`ModeRun`], so captures made with
//! `perf record -e 'net:*' --call-graph fp` appear in the same reports as dockertrace's runs.
//!
//! `perf script`'s default layout is one header line per sample,
//!
//! ```text
//!          python3 29452 [001]  2056.129011: net:net_dev_queue: dev=lo skbaddr=0xffff888134545ce0 len=74
//! ```
//!
//! (command — which may contain spaces —, pid or `pid/tid`, `[cpu]`, `timestamp:`,
//! `category:event:`, then the tracepoint's fields), followed with `--call-graph` by indented
//! frame lines, innermost first, and a blank line:
//!
//! ```text
//!         ffffffff81a2b3c4 __dev_queue_xmit+0x5f4 ([kernel.kallsyms])
//!                        0 [unknown] ([unknown])
//! ```
//!
//! Layouts chosen with `perf script -F ...` work too, as long as they include `event`: the
//! parser looks for the `category:event:` token (preferring the one right after a timestamp)
//! rather than counting columns. Frames keep perf's order and drop the `+0x...` offsets and the
//! `(dso)` suffix; user-space frames and `[unknown]` are kept as perf printed them.
use std::path::Path;

use crate::{
    counters::Counters,
    recording::{ModeRun, RunBuilder},
};

/// How many unparseable lines [`ImportStats::examples`] keeps.
pub const MAX_EXAMPLES: usize = 5;

/// Longest example text kept, in characters.
const MAX_EXAMPLE_CHARS: usize = 200;

/// What the importer saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportStats {
    /// Lines read (including blank lines and comments).
    pub lines: usize,
    /// Samples (event header lines) imported.
    pub events: u64,
    /// Call-graph frames attached to those samples.
    pub frames: u64,
    /// Lines that were neither a header, a frame of a sample, blank nor a `#` comment.
    pub unparseable: usize,
    /// Up to [`MAX_EXAMPLES`] examples: (line number, starting at 1; text, shortened).
    pub examples: Vec<(usize, String)>,
}

/// Why a `perf script` file could not be imported. Messages are one line and name the file.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is a binary perf.data file; convert it first: perf script -i {path} > {path}.txt")]
    PerfData { path: String },
    #[error("{path}: no perf events in {lines} lines ({unparseable} unparseable{first}); expected `perf script` output")]
    NoEvents { path: String, lines: usize, unparseable: usize, first: String },
}

/// Parses `perf script` text (from `perf record -e 'net:*' --call-graph fp`, default output
/// layout) into a [`ModeRun`] labelled `label`.
///
/// Each sample counts once under (event, device, stack): the device comes from the event's
/// `dev=` or `name=` field ("" without one); netns and ifindex are 0 (perf records neither);
/// samples without frames have no stack. `duration_s` is the span between the earliest and
/// the latest timestamp (0 with fewer than two). Never panics; see [`ImportStats`] for what was
/// skipped.
pub fn perf_script(text: &str, label: &str) -> (ModeRun, ImportStats) {
    let mut stats = ImportStats::default();
    let mut builder = RunBuilder::default();
    let mut current: Option<Sample> = None;
    let mut first_time: Option<f64> = None;
    let mut last_time: Option<f64> = None;

    let mut flush = |sample: Option<Sample>, stats: &mut ImportStats| {
        if let Some(s) = sample {
            stats.events += 1;
            stats.frames += s.frames.len() as u64;
            let stack = (!s.frames.is_empty()).then(|| builder.stack(s.frames));
            builder.add(&s.event, &s.dev, 0, 0, stack, 1);
        }
    };

    for (index, raw) in text.lines().enumerate() {
        stats.lines += 1;
        // `lines` keeps a lone trailing `\r`; perf's own lines never end in whitespace.
        let line = raw.trim_end();
        let body = line.trim_start();
        if body.is_empty() {
            flush(current.take(), &mut stats);
            continue;
        }
        if body.starts_with('#') {
            continue;
        }
        if let Some(h) = parse_header(line) {
            flush(current.take(), &mut stats);
            if let Some(t) = h.time {
                first_time = Some(first_time.map_or(t, |f| f.min(t)));
                last_time = Some(last_time.map_or(t, |l| l.max(t)));
            }
            current = Some(Sample { event: h.event.to_owned(), dev: h.dev.to_owned(), frames: Vec::new() });
            continue;
        }
        if let (Some(sample), Some(frame)) = (current.as_mut(), parse_frame(line)) {
            sample.frames.push(frame.to_owned());
            continue;
        }
        stats.unparseable += 1;
        if stats.examples.len() < MAX_EXAMPLES {
            stats.examples.push((index + 1, line.chars().take(MAX_EXAMPLE_CHARS).collect()));
        }
    }
    flush(current.take(), &mut stats);

    let duration_s = match (first_time, last_time) {
        (Some(f), Some(l)) if (l - f).is_finite() => l - f,
        _ => 0.0,
    };
    (builder.finish(label, duration_s, None, Counters::default()), stats)
}

/// Reads and parses a `perf script` text file; the label defaults to the file stem.
///
/// Fails when the file cannot be read, is a binary `perf.data` file, or holds no event at
/// all. Bytes that are not UTF-8 (odd command names) are replaced, not rejected.
pub fn perf_script_file(path: &Path, label: Option<&str>) -> Result<(ModeRun, ImportStats), ImportError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io { path: shown.clone(), source })?;
    if bytes.starts_with(b"PERFILE2") || bytes.starts_with(b"PERFFILE") {
        return Err(ImportError::PerfData { path: shown });
    }
    let text = String::from_utf8_lossy(&bytes);
    let label = match label {
        Some(l) => l.to_owned(),
        None => path.file_stem().map_or_else(|| shown.clone(), |s| s.to_string_lossy().into_owned()),
    };
    let (run, stats) = perf_script(&text, &label);
    if stats.events == 0 {
        let first = stats
            .examples
            .first()
            .map(|(n, t)| format!(", first at line {n}: `{}`", t.chars().take(60).collect::<String>()))
            .unwrap_or_default();
        return Err(ImportError::NoEvents {
            path: shown,
            lines: stats.lines,
            unparseable: stats.unparseable,
            first,
        });
    }
    Ok((run, stats))
}

/// A sample being read: its header and the frames seen so far.
struct Sample {
    event: String,
    dev: String,
    frames: Vec<String>,
}

/// What a sample's header line says.
#[derive(Debug, PartialEq)]
struct Header<'a> {
    /// `category:event`, without the trailing colon.
    event: &'a str,
    /// From `dev=` or `name=`, "" without either.
    dev: &'a str,
    /// Seconds, when the layout has a timestamp.
    time: Option<f64>,
}

/// Recognizes a header line by its `category:event:` token: the one right after a
/// `seconds.fraction:` timestamp when there is one, else the first such token (layouts
/// without `time`). Whatever precedes it (command, pid, cpu) is not needed.
fn parse_header(line: &str) -> Option<Header<'_>> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let after_time = tokens.windows(2).position(|w| timestamp(w[0]).is_some() && is_event_token(w[1]));
    let at = match after_time {
        Some(i) => i + 1,
        None => tokens.iter().position(|t| is_event_token(t))?,
    };
    let event = tokens[at].strip_suffix(':')?;
    let time = at.checked_sub(1).and_then(|i| timestamp(tokens[i]));
    let dev = tokens[at + 1..]
        .iter()
        .find_map(|t| t.strip_prefix("dev=").or_else(|| t.strip_prefix("name=")))
        .map_or("", |v| v.trim_matches(|c| c == '"' || c == '\'' || c == ','));
    Some(Header { event, dev, time })
}

/// `2056.129011:` → 2056.129011.
fn timestamp(token: &str) -> Option<f64> {
    let t = token.strip_suffix(':')?;
    let (secs, frac) = t.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(secs) || !digits(frac) {
        return None;
    }
    t.parse().ok().filter(|v: &f64| v.is_finite())
}

/// `net:net_dev_queue:`, `probe:tcp_v4_rcv:`, `sched:sched_switch:`.
fn is_event_token(token: &str) -> bool {
    let ident =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    token
        .strip_suffix(':')
        .and_then(|t| t.split_once(':'))
        .is_some_and(|(category, name)| ident(category) && ident(name) && !category.starts_with('-'))
}

/// An indented `address symbol[+0xoff] [(dso)]` line → the symbol without offset; `[unknown]`
/// when perf printed no symbol.
fn parse_frame(line: &str) -> Option<&str> {
    if !line.starts_with([' ', '\t']) {
        return None;
    }
    let body = line.trim_start();
    let (addr, rest) = body.split_once([' ', '\t']).unwrap_or((body, ""));
    if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut sym = rest.trim();
    if sym.is_empty() {
        // A bare address: a truncated line, not something perf prints.
        return None;
    }
    if sym.ends_with(')') {
        if let Some(open) = sym.rfind(" (").or_else(|| sym.starts_with('(').then_some(0)) {
            sym = sym[..open].trim_end();
        }
    }
    if let Some(plus) = sym.rfind("+0x") {
        let off = &sym[plus + 3..];
        if !off.is_empty() && off.bytes().all(|b| b.is_ascii_hexdigit()) {
            sym = &sym[..plus];
        }
    }
    Some(if sym.is_empty() { "[unknown]" } else { sym })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;

    const LOOPBACK: &str = include_str!("../tests/fixtures/perf/loopback.txt");
    const NO_CALLGRAPH: &str = include_str!("../tests/fixtures/perf/no_callgraph.txt");
    const PID_TID_NODSO: &str = include_str!("../tests/fixtures/perf/fields_pid_tid_nodso.txt");
    const TID_NOCPU: &str = include_str!("../tests/fixtures/perf/fields_tid_nocpu.txt");

    /// Events per name, summed over devices and stacks.
    fn per_event(run: &ModeRun) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for c in &run.counts {
            *m.entry(c.event.clone()).or_default() += c.count;
        }
        m
    }

    /// `grep -o 'net:[a-z_]*:'`, the simple way: tokens of non-indented lines.
    fn grep_events(text: &str) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('\t')) {
            for t in line.split(' ').filter(|t| t.starts_with("net:") && t.ends_with(':')) {
                *m.entry(t.trim_end_matches(':').to_owned()).or_default() += 1;
            }
        }
        m
    }

    fn stack_of<'a>(run: &'a ModeRun, event: &str) -> Vec<&'a Vec<String>> {
        run.counts
            .iter()
            .filter(|c| c.event == event)
            .filter_map(|c| c.stack.map(|s| &run.stacks[s as usize]))
            .collect()
    }

    #[test]
    fn loopback_capture_counts_match_grep() {
        let (run, stats) = perf_script(LOOPBACK, "loopback");
        let expected = grep_events(LOOPBACK);
        assert_eq!(expected.len(), 7, "fixture has the 7 net events: {expected:?}");
        assert_eq!(per_event(&run), expected);
        assert_eq!(stats.events, expected.values().sum::<u64>());
        assert_eq!(stats.frames, LOOPBACK.lines().filter(|l| l.starts_with('\t')).count() as u64);
        assert_eq!(stats.lines, LOOPBACK.lines().count());
        assert_eq!((stats.unparseable, stats.examples.len()), (0, 0), "{:?}", stats.examples);
        assert_eq!(run.mode, "loopback");
        assert!(run.workload.is_none());
        assert_eq!(run.counters, Counters::default());
        assert!(run.duration_s > 0.0 && run.duration_s < 60.0, "{}", run.duration_s);
        assert!(run.counts.iter().all(|c| c.netns == 0 && c.ifindex == 0));
    }

    #[test]
    fn loopback_devices_and_stacks() {
        let (run, _) = perf_script(LOOPBACK, "lo");
        for c in &run.counts {
            let want = if c.event == "net:netif_rx_exit" { "" } else { "lo" };
            assert_eq!(c.dev, want, "{c:?}");
            assert!(c.stack.is_some(), "{c:?}");
        }
        assert!(!run.stacks.is_empty());
        for s in &run.stacks {
            assert!(!s.is_empty());
            for f in s {
                assert!(!f.contains("+0x") && !f.contains(' ') && !f.contains("kallsyms"), "{f:?} in {s:?}");
            }
        }
        // Innermost first: the tracepoint's caller, then up to the syscall or softirq.
        for s in stack_of(&run, "net:net_dev_queue") {
            assert_eq!(s[0], "__dev_queue_xmit", "{s:?}");
        }
        for s in stack_of(&run, "net:net_dev_start_xmit") {
            assert_eq!(s[0], "dev_hard_start_xmit", "{s:?}");
        }
        let connect = stack_of(&run, "net:net_dev_queue")
            .into_iter()
            .find(|s| s.iter().any(|f| f == "tcp_v4_connect"))
            .expect("the SYN was captured");
        let pos = |name: &str| connect.iter().position(|f| f == name);
        assert!(pos("__dev_queue_xmit") < pos("ip_output") && pos("ip_output") < pos("tcp_v4_connect"));
        assert_eq!(connect.last().map(String::as_str), Some("[unknown]"), "user frames are kept");
    }

    #[test]
    fn without_call_graph_there_is_no_stack() {
        let (run, stats) = perf_script(NO_CALLGRAPH, "nocg");
        assert_eq!(
            stats.events,
            NO_CALLGRAPH.lines().filter(|l| l.contains("net:net_dev_queue:")).count() as u64
        );
        assert!(stats.events > 0);
        assert_eq!((stats.frames, stats.unparseable), (0, 0));
        assert!(run.stacks.is_empty());
        assert!(run
            .counts
            .iter()
            .all(|c| c.stack.is_none() && c.dev == "lo" && c.event == "net:net_dev_queue"));
        assert!(run.duration_s > 0.0);
    }

    #[test]
    fn field_selections_give_the_same_stacks() {
        let (full, _) = perf_script(LOOPBACK, "full");
        let known: HashSet<&Vec<String>> = full.stacks.iter().collect();
        for (name, text) in [("pid/tid, no dso", PID_TID_NODSO), ("tid, no cpu", TID_NOCPU)] {
            let (run, stats) = perf_script(text, name);
            assert_eq!(per_event(&run), grep_events(text), "{name}");
            assert_eq!(stats.unparseable, 0, "{name}: {:?}", stats.examples);
            assert!(stats.frames > 0 && !run.stacks.is_empty(), "{name}");
            for s in &run.stacks {
                assert!(known.contains(s), "{name}: stack not in the default layout's: {s:?}");
            }
            assert!(run.duration_s > 0.0, "{name}");
        }
    }

    #[test]
    fn odd_inputs() {
        let text = "# ========\r\n\
            # captured on: somewhere\r\n\
            \r\n\
            \x20   kworker/u8:2 Xorg  12/34 [003] 100.500000:   net:net_dev_xmit: dev=veth1a2b skbaddr=0x1 len=98 rc=0\r\n\
            \t    ffffffff81a2b3c4 dev_hard_start_xmit+0x5f4 ([kernel.kallsyms])\r\n\
            \t    ffffffffc0123456 veth_xmit+0x1a ([veth])\r\n\
            \t    ffffffff81000000 no_offset\r\n\
            \t    ffffffff81000001 [unknown] ([unknown])\r\n\
            \t    ffffffff81000002 [unknown]\r\n\
            \r\n\
            \r\n\
            this is not perf output\r\n\
            swapper     0 [000]   101.000000: net:netif_receive_skb: name=eth0 skbaddr=0x2 len=60\r\n\
            \t    ffffffff81a2b3c4 dev_hard_start_xmit+0x5f4 ([kernel.kallsyms])\r\n\
            # a comment inside a sample\r\n\
            \t    ffffffffc0123456 veth_xmit+0x1a ([veth])\r\n\
            \t    ffffffff81000000 no_offset\r\n\
            \t    ffffffff81000001 [unknown] ([unknown])\r\n\
            \t    ffffffff81000002 [unknown]\r\n\
            swapper     0 [000]   101.250000: net:netif_rx_exit: ret=0\r\n\
            \n\
            \t    ffffffff81000003 orphan_frame+0x1\n\
            \t    ffffffff\n\
            nonsense net:bad\n\
            \t\tnot-hex symbol\n\
            more nonsense\n\
            and more\r";
        let (run, stats) = perf_script(text, "odd");
        assert_eq!(stats.lines, text.lines().count());
        assert_eq!(stats.events, 3);
        assert_eq!(stats.frames, 10);
        assert_eq!(stats.unparseable, 7, "{:?}", stats.examples);
        let lines: Vec<usize> = stats.examples.iter().map(|e| e.0).collect();
        assert_eq!(lines, [12, 22, 23, 24, 25]);
        assert_eq!(stats.examples[0].1, "this is not perf output");
        assert_eq!(stats.examples[1].1, "\t    ffffffff81000003 orphan_frame+0x1");
        assert!((run.duration_s - 0.75).abs() < 1e-9, "{}", run.duration_s);

        let want = ["dev_hard_start_xmit", "veth_xmit", "no_offset", "[unknown]", "[unknown]"];
        assert_eq!(run.stacks, vec![want.iter().map(|s| s.to_string()).collect::<Vec<_>>()]);
        let find = |event: &str| run.counts.iter().find(|c| c.event == event).expect(event);
        assert_eq!(
            (find("net:net_dev_xmit").dev.as_str(), find("net:net_dev_xmit").stack),
            ("veth1a2b", Some(0))
        );
        assert_eq!(find("net:netif_receive_skb").dev, "eth0");
        assert_eq!(find("net:netif_receive_skb").stack, Some(0));
        assert_eq!((find("net:netif_rx_exit").dev.as_str(), find("net:netif_rx_exit").stack), ("", None));
    }

    #[test]
    fn headers_and_frames() {
        let h = parse_header("         python3 29452 [001]  2056.129011: net:net_dev_queue: dev=lo len=74")
            .unwrap();
        assert_eq!(h, Header { event: "net:net_dev_queue", dev: "lo", time: Some(2056.129011) });
        // A command that looks like an event does not win over the one after the timestamp.
        let h = parse_header("a:b: 1 [0] 3.5: net:netif_rx: dev=x").unwrap();
        assert_eq!((h.event, h.time), ("net:netif_rx", Some(3.5)));
        let h = parse_header("perf 1 net:netif_rx: skbaddr=0x0").unwrap();
        assert_eq!(h, Header { event: "net:netif_rx", dev: "", time: None });
        assert_eq!(parse_header("python3 1 [000] 1.0: ::").map(|h| h.event), None);
        assert_eq!(
            parse_frame("\tffff __dev_queue_xmit+0x486 ([kernel.kallsyms])"),
            Some("__dev_queue_xmit")
        );
        assert_eq!(parse_frame("  0 [unknown] ([unknown])"), Some("[unknown]"));
        assert_eq!(parse_frame("  abc sym+0xzz"), Some("sym+0xzz"));
        assert_eq!(parse_frame("  abc (/lib/x.so)"), Some("[unknown]"));
        assert_eq!(parse_frame("abc sym"), None);
        assert_eq!(parse_frame("  xyz sym"), None);
    }

    /// xorshift64*: deterministic noise without a crate.
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn check_invariants(text: &str) {
        let (run, stats) = perf_script(text, "soup");
        assert_eq!(stats.events, run.counts.iter().map(|c| c.count).sum::<u64>());
        assert!(stats.examples.len() <= MAX_EXAMPLES && stats.examples.len() <= stats.unparseable);
        assert!(stats.lines >= stats.unparseable);
        assert!(run.duration_s.is_finite() && run.duration_s >= 0.0);
        assert!(run.counts.iter().all(|c| c.stack.is_none_or(|s| (s as usize) < run.stacks.len())));
    }

    #[test]
    fn random_soup_never_panics() {
        let mut rng = Noise(0x9e37_79b9_7f4a_7c15);
        let alphabet = b"net:_ dev=name=\t\r\n#[]()+0x123456789abcdef.:/lo\xff\xc3";
        for round in 0..400 {
            let len = rng.below(600);
            let bytes: Vec<u8> = (0..len)
                .map(|_| if round % 2 == 0 { rng.next() as u8 } else { alphabet[rng.below(alphabet.len())] })
                .collect();
            check_invariants(&String::from_utf8_lossy(&bytes));
        }
        // Real lines, shuffled, duplicated and cut anywhere.
        let lines: Vec<&str> = LOOPBACK.lines().take(400).chain(NO_CALLGRAPH.lines()).collect();
        for _ in 0..200 {
            let mut text = String::new();
            for _ in 0..rng.below(60) {
                let line = lines[rng.below(lines.len())];
                let cut =
                    line.char_indices().map(|(i, _)| i).nth(rng.below(line.len() + 1)).unwrap_or(line.len());
                text.push_str(if rng.below(4) == 0 { &line[..cut] } else { line });
                text.push_str(["\n", "\r\n", "\n\n", " "][rng.below(4)]);
            }
            check_invariants(&text);
        }
        // Truncated real captures.
        for text in [LOOPBACK, NO_CALLGRAPH, PID_TID_NODSO, TID_NOCPU] {
            for _ in 0..20 {
                let mut cut = rng.below(text.len());
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                check_invariants(&text[..cut]);
                check_invariants(&text[cut..]);
            }
        }
    }

    #[test]
    fn files_label_and_errors() {
        let dir = std::env::temp_dir().join(format!("dt-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let capture = dir.join("bridge-run.txt");
        std::fs::write(&capture, NO_CALLGRAPH).unwrap();
        let (run, stats) = perf_script_file(&capture, None).unwrap();
        assert_eq!(run.mode, "bridge-run");
        assert!(stats.events > 0);
        assert_eq!(perf_script_file(&capture, Some("host")).unwrap().0.mode, "host");

        let missing = dir.join("missing.txt");
        let e = perf_script_file(&missing, None).unwrap_err().to_string();
        assert!(e.starts_with("cannot read ") && e.contains("missing.txt"), "{e}");

        let garbage = dir.join("notes.txt");
        std::fs::write(&garbage, "hello\nworld\n").unwrap();
        let e = perf_script_file(&garbage, None).unwrap_err().to_string();
        assert!(
            e.contains("notes.txt: no perf events in 2 lines (2 unparseable, first at line 1: `hello`)"),
            "{e}"
        );
        assert!(!e.contains('\n'));

        let empty = dir.join("empty.txt");
        std::fs::write(&empty, "").unwrap();
        assert!(perf_script_file(&empty, None)
            .unwrap_err()
            .to_string()
            .contains("no perf events in 0 lines"));

        let data = dir.join("perf.data");
        std::fs::write(&data, b"PERFILE2\x00\x01binary").unwrap();
        let e = perf_script_file(&data, None).unwrap_err().to_string();
        assert!(e.contains("binary perf.data") && e.contains("perf script -i"), "{e}");

        std::fs::remove_dir_all(&dir).unwrap();
    }
}
