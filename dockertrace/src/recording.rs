//! Recordings: everything a report needs, saved by `--record FILE` and read back by
//! `dockertrace report` and `dockertrace diff` — also from `perf script` imports.
//!
//! The format is versioned JSON: `{"format": "dockertrace-recording", "version": 2, ...}`.
//! Version 2 (packet journeys) added the untraced phase, the names table, hop ladders and the
//! journey counters, all optional: version-1 files read as before, with none of them.
//! Version 3 (drops) added the drops per reason, location and device (`drops`), optional too:
//! older files read with none.
//! Events are stored aggregated — a count per (event, device, stack) — with a table of
//! symbolized stacks; per-event details (timestamps, pids) are not kept.
use std::{collections::HashMap, path::Path};

use serde::{Deserialize, Serialize};

use crate::{counters::Counters, names::Names, stacks::StackMode, workload::WorkloadReport};

pub const FORMAT: &str = "dockertrace-recording";
pub const VERSION: u32 = 3;

/// A saved set of runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`] for files this dockertrace writes.
    pub version: u32,
    /// dockertrace's version that wrote the file.
    pub tool_version: String,
    /// `uname -r` of the traced machine ("" when unknown, e.g. some imports).
    pub kernel: String,
    /// Seconds since the Unix epoch when the file was written.
    pub created_unix: u64,
    /// Where the data came from: "dockertrace" or "perf-script".
    pub source: String,
    pub runs: Vec<ModeRun>,
}

/// One traced run of one mode (or one imported capture).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeRun {
    /// Mode name (`bridge`, `normal`, ...) or a label for imports (the file name).
    pub mode: String,
    /// Wall-clock length of the tracing.
    pub duration_s: f64,
    /// The workload's own figures, when dockertrace ran the workload: those of the traced
    /// phase (with `--untraced`, of the untraced run).
    pub workload: Option<WorkloadReport>,
    /// The same workload run untraced just before the traced phase, on the same deployment
    /// (same duration, size, connections, pattern and pinning; nothing loaded into the
    /// kernel): the mode's own figures, without the tracer's cost. Absent with
    /// `--no-untraced`, `--untraced` (whose `workload` is untraced), imports and older
    /// recordings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untraced: Option<WorkloadReport>,
    /// Kernel-side counters (lost events, stack errors, ...).
    pub counters: Counters,
    /// Kernel stacks, function names innermost first; referenced by index from `counts`.
    pub stacks: Vec<Vec<String>>,
    /// How often each (event, device, stack) occurred.
    pub counts: Vec<Count>,
    /// What tracing cost (absent from imports, untraced runs and older recordings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracer: Option<crate::cost::TracerCost>,
    /// Who built the topology: "docker" or "netns" (absent from imports and older recordings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Stacks were taken for 1 in this many events (`--stacks sample:N`, `--stack-sample`):
    /// the stack counts are estimates (the events' own counts are exact). Written beside
    /// `stacks` for readers older than it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_sample: Option<u32>,
    /// When the kernel walked stacks (`every`, `adaptive`, `sample:N`, `none`); with
    /// `adaptive` and `sample:N` the stack counts are estimates. Absent from older recordings:
    /// see [`ModeRun::effective_stack_mode`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_mode: Option<StackMode>,
    /// What the run's namespaces and devices are called (container names, `ip netns` names,
    /// `host`, veth peers), for reports and for comparing devices across runs. Absent from
    /// imports and older recordings (then the devices show their inodes).
    #[serde(default, skip_serializing_if = "Names::is_empty")]
    pub names: Names,
    /// The hop ladders of the run's packet journeys (absent with `--no-journeys`, from imports
    /// and older recordings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journeys: Option<crate::journeys::JourneyReport>,
    /// The workload's drops (`skb:kfree_skb`) per reason, location and device, most first
    /// (version 3; absent when there were none, and from older recordings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drops: Vec<DropCount>,
    /// The TCP data packets hop by hop, for `report --stitch` (version 3; absent in aggregate
    /// mode, without journeys, and from older recordings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<crate::packet_log::PacketLog>,
}

/// Drops of one reason, at one location, on one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCount {
    /// The kernel's reason (`NETFILTER_DROP`) or `reason not reported by this kernel`.
    pub reason: String,
    /// The freeing function (`nf_hook_slow`).
    pub function: String,
    /// `function+0xoff`.
    pub location: String,
    /// Device name ("" when the drop had no device).
    #[serde(default)]
    pub dev: String,
    #[serde(default)]
    pub netns: u32,
    #[serde(default)]
    pub ifindex: u32,
    /// The device of the journey's hop before the drop, when the drop itself has none
    /// (`eth0`), with its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_hop: Option<(String, u32, u32)>,
    /// The packets were sent to a multicast group.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub multicast: bool,
    pub count: u64,
}

impl ModeRun {
    /// When the kernel walked stacks for this run; older recordings said only
    /// `stack_sample` (or nothing: every event).
    pub fn effective_stack_mode(&self) -> StackMode {
        self.stack_mode
            .unwrap_or_else(|| self.stack_sample.map_or(StackMode::Every, StackMode::Sample).normalized())
    }

    /// Records the stack mode (and `stack_sample` for older readers).
    pub fn set_stack_mode(&mut self, mode: StackMode) {
        let mode = mode.normalized();
        self.stack_mode = Some(mode);
        self.stack_sample = match mode {
            StackMode::Sample(n) => Some(n),
            _ => None,
        };
    }
}

/// Events of one kind, on one device, with one stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// `net:net_dev_xmit`, `kprobe:veth_xmit`, ...
    pub event: String,
    /// Device name ("" when unknown).
    pub dev: String,
    pub netns: u32,
    pub ifindex: u32,
    /// Index into `ModeRun::stacks`; None: no stack.
    pub stack: Option<u32>,
    pub count: u64,
}

/// Why a recording could not be read. Messages name the file and the position.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{path}: not a dockertrace recording: {msg} (line {line}, column {column})")]
    Syntax { path: String, msg: String, line: usize, column: usize },
    #[error("{path}: not a dockertrace recording (format is `{found}`)")]
    Format { path: String, found: String },
    #[error("{path}: recording version {found} is newer than this dockertrace understands ({VERSION}); upgrade dockertrace")]
    Version { path: String, found: u32 },
    #[error(
        "{path}: run {run} ({mode}): count {index} refers to stack {stack}, but there are {stacks} stacks"
    )]
    BadStack { path: String, run: usize, mode: String, index: usize, stack: u32, stacks: usize },
    #[error("{path}: contains no runs")]
    Empty { path: String },
}

impl Recording {
    pub fn new(source: &str, runs: Vec<ModeRun>) -> Recording {
        Recording {
            format: FORMAT.into(),
            version: VERSION,
            tool_version: env!("CARGO_PKG_VERSION").into(),
            kernel: kernel_release(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            source: source.into(),
            runs,
        }
    }

    /// Parses and validates; `path` only names the file in errors.
    pub fn from_json(text: &str, path: &str) -> Result<Recording, RecordingError> {
        // Check the header first, so a foreign JSON file gets a clear message.
        #[derive(Deserialize)]
        struct Header {
            format: Option<String>,
            version: Option<u32>,
        }
        let syntax = |e: serde_json::Error| RecordingError::Syntax {
            path: path.into(),
            msg: e.to_string().split(" at line ").next().unwrap_or_default().to_owned(),
            line: e.line(),
            column: e.column(),
        };
        let h: Header = serde_json::from_str(text).map_err(syntax)?;
        match h.format.as_deref() {
            Some(FORMAT) => {}
            other => {
                return Err(RecordingError::Format {
                    path: path.into(),
                    found: other.unwrap_or("missing").into(),
                })
            }
        }
        if let Some(v) = h.version.filter(|v| *v > VERSION) {
            return Err(RecordingError::Version { path: path.into(), found: v });
        }
        let rec: Recording = serde_json::from_str(text).map_err(syntax)?;
        rec.validate(path)?;
        Ok(rec)
    }

    fn validate(&self, path: &str) -> Result<(), RecordingError> {
        if self.runs.is_empty() {
            return Err(RecordingError::Empty { path: path.into() });
        }
        for (r, run) in self.runs.iter().enumerate() {
            for (i, c) in run.counts.iter().enumerate() {
                if let Some(s) = c.stack.filter(|s| *s as usize >= run.stacks.len()) {
                    return Err(RecordingError::BadStack {
                        path: path.into(),
                        run: r,
                        mode: run.mode.clone(),
                        index: i,
                        stack: s,
                        stacks: run.stacks.len(),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Recording, RecordingError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| RecordingError::Io { path: shown.clone(), source })?;
        Recording::from_json(&text, &shown)
    }

    pub fn save(&self, path: &Path) -> Result<(), RecordingError> {
        let shown = path.display().to_string();
        let text = serde_json::to_string(self).expect("recordings serialize");
        std::fs::write(path, text).map_err(|source| RecordingError::Write { path: shown, source })
    }
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// Builds a [`ModeRun`]'s stack table and counts from (event, dev, netns, ifindex, stack) keys.
#[derive(Default)]
pub struct RunBuilder {
    stack_index: HashMap<Vec<String>, u32>,
    stacks: Vec<Vec<String>>,
    counts: HashMap<(String, String, u32, u32, Option<u32>), u64>,
}

impl RunBuilder {
    /// Index of a stack in the table (added once).
    pub fn stack(&mut self, frames: Vec<String>) -> u32 {
        if let Some(&i) = self.stack_index.get(&frames) {
            return i;
        }
        let i = self.stacks.len() as u32;
        self.stacks.push(frames.clone());
        self.stack_index.insert(frames, i);
        i
    }

    pub fn add(&mut self, event: &str, dev: &str, netns: u32, ifindex: u32, stack: Option<u32>, n: u64) {
        *self.counts.entry((event.to_owned(), dev.to_owned(), netns, ifindex, stack)).or_default() += n;
    }

    pub fn finish(
        self,
        mode: &str,
        duration_s: f64,
        workload: Option<WorkloadReport>,
        counters: Counters,
    ) -> ModeRun {
        let mut counts: Vec<Count> = self
            .counts
            .into_iter()
            .map(|((event, dev, netns, ifindex, stack), count)| Count {
                event,
                dev,
                netns,
                ifindex,
                stack,
                count,
            })
            .collect();
        counts.sort_by(|a, b| {
            b.count.cmp(&a.count).then_with(|| a.event.cmp(&b.event)).then(a.stack.cmp(&b.stack))
        });
        ModeRun {
            mode: mode.to_owned(),
            duration_s,
            workload,
            untraced: None,
            counters,
            stacks: self.stacks,
            counts,
            tracer: None,
            runtime: None,
            stack_sample: None,
            stack_mode: None,
            names: Names::default(),
            journeys: None,
            drops: Vec::new(),
            packets: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Recording {
        let mut b = RunBuilder::default();
        let s = b.stack(vec!["netif_rx".into(), "veth_xmit".into()]);
        let s2 = b.stack(vec!["netif_rx".into(), "veth_xmit".into()]);
        assert_eq!(s, s2, "stacks are stored once");
        b.add("net:netif_rx", "eth0", 7, 2, Some(s), 10);
        b.add("net:netif_rx", "eth0", 7, 2, Some(s), 5);
        b.add("net:net_dev_queue", "eth0", 7, 2, None, 3);
        Recording::new("dockertrace", vec![b.finish("bridge", 2.0, None, Counters::default())])
    }

    #[test]
    fn round_trip() {
        let r = sample();
        assert_eq!(r.runs[0].counts[0].count, 15);
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(Recording::from_json(&text, "x").unwrap(), r);
        let dir = std::env::temp_dir().join(format!("dt-rec-{}.json", std::process::id()));
        r.save(&dir).unwrap();
        assert_eq!(Recording::load(&dir).unwrap(), r);
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn names_are_optional_and_round_trip() {
        let mut r = sample();
        let old = serde_json::to_string(&r).unwrap();
        assert!(!old.contains("\"names\""), "no empty table in the file");
        assert_eq!(Recording::from_json(&old, "old").unwrap().runs[0].names, Names::default());
        r.runs[0].names.add_netns(7, "server");
        r.runs[0].names.add_peer(1, 5, "server");
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.contains(
                r#""names":{"netns":{"7":"server"},"peers":[{"netns":1,"ifindex":5,"peer":"server"}]}"#
            ),
            "{text}"
        );
        assert_eq!(Recording::from_json(&text, "x").unwrap(), r);
    }

    #[test]
    fn malformed_files_are_clear_errors_with_position() {
        let text = serde_json::to_string(&sample()).unwrap();
        let truncated = &text[..text.len() / 2];
        let e = Recording::from_json(truncated, "cut.json").unwrap_err().to_string();
        assert!(
            e.starts_with("cut.json: not a dockertrace recording") && e.contains("line 1, column"),
            "{e}"
        );
        let e = Recording::from_json(r#"{"format":"other"}"#, "o.json").unwrap_err().to_string();
        assert!(e.contains("format is `other`"), "{e}");
        let e = Recording::from_json("[1,2]", "a.json").unwrap_err().to_string();
        assert!(e.contains("a.json"), "{e}");
        let newer = text.replacen("\"version\":3", "\"version\":99", 1);
        assert!(Recording::from_json(&newer, "n").unwrap_err().to_string().contains("upgrade"));
        let bad = text.replacen("\"stack\":0", "\"stack\":9", 1);
        assert!(Recording::from_json(&bad, "b").unwrap_err().to_string().contains("refers to stack 9"));
        let empty = text.replacen("\"runs\":[", "\"runs\":[],\"x\":[", 1);
        assert!(Recording::from_json(&empty, "e").unwrap_err().to_string().contains("no runs"));
    }

    #[test]
    fn the_untraced_phase_is_kept_and_older_files_still_read() {
        let mut r = sample();
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("\"untraced\""), "absent when there is none: {text}");
        // A file written before the field existed reads as before.
        assert_eq!(Recording::from_json(&text, "old").unwrap().runs[0].untraced, None);
        let w = WorkloadReport::new(crate::workload::Pattern::Echo, 1, 42, 900, 37_800, 2.0, None);
        r.runs[0].untraced = Some(w.clone());
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"untraced\":{\"pattern\":\"echo\""), "{text}");
        let back = Recording::from_json(&text, "new").unwrap();
        assert_eq!(back.runs[0].untraced, Some(w));
        assert_eq!(back.version, VERSION);
    }

    #[test]
    fn a_version_1_recording_still_reads() {
        // Written by dockertrace before packet journeys (no untraced phase, names, ladders or
        // journey counters).
        let v1 = r#"{"format":"dockertrace-recording","version":1,"tool_version":"0.1.0","kernel":"6.1.0",
            "created_unix":1,"source":"dockertrace","runs":[{"mode":"bridge","duration_s":2.0,"workload":null,
            "counters":{"seen":3,"filtered":0,"sent":3,"ring_full":0,"stack_error":0,"stack_collision":0,
            "no_config":0,"read_error":0,"pair_miss":0},"stacks":[["netif_rx","veth_xmit"]],
            "counts":[{"event":"net:netif_rx","dev":"eth0","netns":7,"ifindex":2,"stack":0,"count":3}]}]}"#;
        let r = Recording::from_json(v1, "v1.json").unwrap();
        assert_eq!(r.version, 1);
        let run = &r.runs[0];
        assert_eq!((run.counts[0].count, run.counters.journeys, run.untraced.is_none()), (3, 0, true));
        assert_eq!(Recording::new("dockertrace", r.runs.clone()).version, 3, "new files are version 3");
        assert!(run.drops.is_empty());
    }

    #[test]
    fn version_3_carries_drops_and_a_version_2_file_still_reads() {
        let mut r = sample();
        let v2 = serde_json::to_string(&r).unwrap().replacen("\"version\":3", "\"version\":2", 1);
        assert!(!v2.contains("\"drops\""), "no empty table in the file");
        let old = Recording::from_json(&v2, "v2.json").unwrap();
        assert_eq!((old.version, old.runs[0].drops.len()), (2, 0));
        r.runs[0].drops.push(DropCount {
            reason: "NETFILTER_DROP".into(),
            function: "nf_hook_slow".into(),
            location: "nf_hook_slow+0x9e".into(),
            dev: "vethabc".into(),
            netns: 7,
            ifindex: 4,
            last_hop: None,
            multicast: false,
            count: 3,
        });
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"version\":3") && text.contains("\"reason\":\"NETFILTER_DROP\""), "{text}");
        assert_eq!(Recording::from_json(&text, "v3.json").unwrap(), r);
    }
}
