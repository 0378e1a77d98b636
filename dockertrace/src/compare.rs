//! Per-mode reports and the comparison of modes, computed from recordings' [`ModeRun`]s.
//!
//! Everything is normalized per workload message when the run has workload figures (per event
//! otherwise), so that modes with different throughput compare fairly.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::{datapath, recording::ModeRun, stacks::StackMode};

/// Events of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCount {
    pub dev: String,
    pub ifindex: u32,
    pub netns: u32,
    pub events: u64,
}

/// A count with its per-message rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub name: String,
    pub count: u64,
    /// count / workload messages (None without workload figures).
    pub per_msg: Option<f64>,
}

/// A distinct kernel stack path and how often events took it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathCount {
    /// Event raised at the end of the path.
    pub event: String,
    /// Function names, innermost first.
    pub frames: Vec<String>,
    pub count: u64,
    pub per_msg: Option<f64>,
}

/// The datapath functions of one component (veth, bridge, macvlan, ...) seen in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentFunctions {
    pub component: String,
    pub functions: Vec<String>,
}

/// What one run of one mode did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeReport {
    pub mode: String,
    /// Who built the topology ("docker", "netns"; None: unknown, e.g. imports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Stacks were not walked for every event (`adaptive`, `sample:N`): function counts are
    /// estimates and rare functions may be missing (None: every event, or no stacks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacks: Option<StackMode>,
    pub duration_s: f64,
    pub messages: Option<u64>,
    pub msgs_per_s: Option<f64>,
    pub mb_per_s: Option<f64>,
    pub rtt_p50_us: Option<f64>,
    pub rtt_p99_us: Option<f64>,
    pub total_events: u64,
    pub events_per_msg: Option<f64>,
    pub lost: u64,
    pub stack_errors: u64,
    /// Mean number of frames of the events' stacks.
    pub mean_stack_depth: f64,
    /// Per tracepoint, most frequent first.
    pub events: Vec<Rate>,
    /// Distinct kernel functions in stacks (events whose stack contains them), most frequent first.
    pub functions: Vec<Rate>,
    /// The most frequent distinct stack paths.
    pub top_paths: Vec<PathCount>,
    /// The datapath functions that identify the mode, by component.
    pub datapath: Vec<ComponentFunctions>,
    pub devices: Vec<DeviceCount>,
}

/// Functions × modes, normalized per message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionMatrix {
    pub modes: Vec<String>,
    pub functions: Vec<String>,
    /// `cells[f][m]`: events per message whose stack contains function f in mode m (None: absent).
    pub cells: Vec<Vec<Option<f64>>>,
}

/// How a mode differs from the baseline (`normal`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineDiff {
    pub mode: String,
    pub baseline: String,
    /// Functions this mode has that the baseline lacks.
    pub only_here: Vec<String>,
    /// Functions the baseline has that this mode lacks.
    pub only_baseline: Vec<String>,
}

/// Several modes side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub modes: Vec<ModeReport>,
    pub matrix: FunctionMatrix,
    pub vs_baseline: Vec<BaselineDiff>,
    /// Modes that could not run here, with the reason.
    pub skipped: Vec<(String, String)>,
}

fn per(count: u64, messages: Option<u64>) -> Option<f64> {
    messages.filter(|m| *m > 0).map(|m| count as f64 / m as f64)
}

fn sorted_rates(map: HashMap<&str, u64>, messages: Option<u64>) -> Vec<Rate> {
    let mut v: Vec<Rate> = map
        .into_iter()
        .map(|(n, c)| Rate { name: n.to_owned(), count: c, per_msg: per(c, messages) })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    v
}

impl ModeReport {
    /// The report of one run; `top` bounds the number of stack paths kept.
    pub fn from_run(run: &ModeRun, top: usize) -> ModeReport {
        let messages = run.workload.as_ref().map(|w| w.messages);
        let mut events: HashMap<&str, u64> = HashMap::new();
        let mut functions: HashMap<&str, u64> = HashMap::new();
        let mut paths: HashMap<(&str, u32), u64> = HashMap::new();
        let mut devices: BTreeMap<(u32, u32), (String, u64)> = BTreeMap::new();
        let (mut total, mut depth_sum, mut with_stack) = (0u64, 0u64, 0u64);
        // Functions of each stack, deduplicated once per stack.
        let stack_functions: Vec<BTreeSet<&str>> =
            run.stacks.iter().map(|s| s.iter().map(String::as_str).collect()).collect();
        for c in &run.counts {
            total += c.count;
            *events.entry(&c.event).or_default() += c.count;
            if !c.dev.is_empty() || c.ifindex != 0 {
                devices.entry((c.netns, c.ifindex)).or_insert_with(|| (c.dev.clone(), 0)).1 += c.count;
            }
            if let Some(s) = c.stack {
                let s = s as usize;
                for f in &stack_functions[s] {
                    *functions.entry(f).or_default() += c.count;
                }
                *paths.entry((&c.event, s as u32)).or_default() += c.count;
                depth_sum += run.stacks[s].len() as u64 * c.count;
                with_stack += c.count;
            }
        }
        let mut top_paths: Vec<PathCount> = paths
            .into_iter()
            .map(|((event, s), count)| PathCount {
                event: event.to_owned(),
                frames: run.stacks[s as usize].clone(),
                count,
                per_msg: per(count, messages),
            })
            .collect();
        top_paths.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.frames.cmp(&b.frames)));
        top_paths.truncate(top);
        let mut by_component: BTreeMap<datapath::Component, BTreeSet<String>> = BTreeMap::new();
        for f in functions.keys() {
            if let Some(c) = datapath::component(f) {
                by_component.entry(c).or_default().insert((*f).to_owned());
            }
        }
        let mut devices: Vec<DeviceCount> = devices
            .into_iter()
            .map(|((netns, ifindex), (dev, events))| DeviceCount { dev, ifindex, netns, events })
            .collect();
        devices.sort_by(|a, b| b.events.cmp(&a.events).then_with(|| a.dev.cmp(&b.dev)));
        let w = run.workload.as_ref();
        ModeReport {
            mode: run.mode.clone(),
            runtime: run.runtime.clone(),
            stacks: Some(run.effective_stack_mode()).filter(|m| m.estimates()),
            duration_s: run.duration_s,
            messages,
            msgs_per_s: w.map(|w| w.msgs_per_s),
            mb_per_s: w.map(|w| w.mb_per_s),
            rtt_p50_us: w.and_then(|w| w.rtt_us.as_ref()).map(|r| r.p50),
            rtt_p99_us: w.and_then(|w| w.rtt_us.as_ref()).map(|r| r.p99),
            total_events: total,
            events_per_msg: per(total, messages),
            lost: run.counters.lost(),
            stack_errors: run.counters.stack_error + run.counters.stack_collision,
            mean_stack_depth: if with_stack > 0 { depth_sum as f64 / with_stack as f64 } else { 0.0 },
            events: sorted_rates(events, messages),
            functions: sorted_rates(functions, messages),
            top_paths,
            datapath: by_component
                .into_iter()
                .map(|(c, fs)| ComponentFunctions {
                    component: c.name().to_owned(),
                    functions: fs.into_iter().collect(),
                })
                .collect(),
            devices,
        }
    }

    /// A function's rate: per message when possible, else per event.
    pub fn function_rate(&self, f: &Rate) -> f64 {
        f.per_msg.unwrap_or_else(|| {
            if self.total_events > 0 {
                f.count as f64 / self.total_events as f64
            } else {
                0.0
            }
        })
    }
}

impl Comparison {
    /// Compares reports; the baseline is `normal` when present.
    pub fn new(modes: Vec<ModeReport>, skipped: Vec<(String, String)>) -> Comparison {
        let names: Vec<String> = modes.iter().map(|m| m.mode.clone()).collect();
        let all: BTreeSet<&str> =
            modes.iter().flat_map(|m| m.functions.iter().map(|f| f.name.as_str())).collect();
        let lookup: Vec<HashMap<&str, &Rate>> =
            modes.iter().map(|m| m.functions.iter().map(|f| (f.name.as_str(), f)).collect()).collect();
        let mut functions: Vec<String> = all.iter().map(|f| (*f).to_owned()).collect();
        // Most widespread and most frequent first.
        let weight = |f: &str| -> (usize, f64) {
            let present = lookup.iter().filter(|l| l.contains_key(f)).count();
            let sum: f64 =
                modes.iter().zip(&lookup).filter_map(|(m, l)| l.get(f).map(|r| m.function_rate(r))).sum();
            (present, sum)
        };
        functions.sort_by(|a, b| {
            let (wa, wb) = (weight(a), weight(b));
            wb.0.cmp(&wa.0).then(wb.1.total_cmp(&wa.1)).then(a.cmp(b))
        });
        let cells = functions
            .iter()
            .map(|f| {
                modes
                    .iter()
                    .zip(&lookup)
                    .map(|(m, l)| l.get(f.as_str()).map(|r| m.function_rate(r)))
                    .collect()
            })
            .collect();
        let vs_baseline = match modes.iter().position(|m| m.mode == "normal") {
            None => Vec::new(),
            Some(b) => modes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != b)
                .map(|(i, m)| {
                    let here: BTreeSet<&str> = lookup[i].keys().copied().collect();
                    let base: BTreeSet<&str> = lookup[b].keys().copied().collect();
                    BaselineDiff {
                        mode: m.mode.clone(),
                        baseline: modes[b].mode.clone(),
                        only_here: here.difference(&base).map(|s| (*s).to_owned()).collect(),
                        only_baseline: base.difference(&here).map(|s| (*s).to_owned()).collect(),
                    }
                })
                .collect(),
        };
        Comparison { modes, matrix: FunctionMatrix { modes: names, functions, cells }, vs_baseline, skipped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        counters::Counters,
        recording::RunBuilder,
        workload::{RttSummary, WorkloadReport},
    };

    fn workload(messages: u64) -> WorkloadReport {
        let rtt = RttSummary { p50: 50.0, p99: 90.0, max: 100.0, mean: 55.0, samples: messages };
        WorkloadReport::new(crate::workload::Pattern::Echo, 1, 42, messages, messages * 42, 1.0, Some(rtt))
    }

    fn run(mode: &str, messages: u64, paths: &[(&str, &[&str], u64)]) -> ModeRun {
        let mut b = RunBuilder::default();
        for (event, frames, n) in paths {
            let s = b.stack(frames.iter().map(|f| (*f).to_owned()).collect());
            b.add(event, "eth0", 1, 2, Some(s), *n);
        }
        b.finish(mode, 1.0, Some(workload(messages)), Counters::default())
    }

    #[test]
    fn per_message_normalization_and_datapath() {
        let r = run(
            "bridge",
            100,
            &[
                ("net:netif_rx", &["netif_rx", "veth_xmit", "br_forward"], 200),
                ("net:net_dev_queue", &["__dev_queue_xmit", "br_dev_queue_push_xmit"], 100),
            ],
        );
        let m = ModeReport::from_run(&r, 10);
        assert_eq!(m.total_events, 300);
        assert_eq!(m.events_per_msg, Some(3.0));
        assert_eq!(m.events[0], Rate { name: "net:netif_rx".into(), count: 200, per_msg: Some(2.0) });
        assert_eq!(m.functions.iter().find(|f| f.name == "veth_xmit").unwrap().per_msg, Some(2.0));
        assert_eq!(m.top_paths[0].frames[1], "veth_xmit");
        assert!((m.mean_stack_depth - (3.0 * 200.0 + 2.0 * 100.0) / 300.0).abs() < 1e-9);
        let comps: Vec<_> = m.datapath.iter().map(|c| c.component.as_str()).collect();
        assert_eq!(comps, ["veth", "bridge"]);
        assert_eq!(m.rtt_p99_us, Some(90.0));
    }

    #[test]
    fn matrix_and_baseline_differences() {
        let normal = run("normal", 10, &[("net:netif_rx", &["netif_rx", "loopback_xmit"], 20)]);
        let bridge = run("bridge", 20, &[("net:netif_rx", &["netif_rx", "veth_xmit"], 20)]);
        let c = Comparison::new(
            vec![ModeReport::from_run(&normal, 5), ModeReport::from_run(&bridge, 5)],
            vec![("ipvlan-l2".into(), "no CONFIG_IPVLAN".into())],
        );
        assert_eq!(c.matrix.modes, ["normal", "bridge"]);
        assert_eq!(c.matrix.functions[0], "netif_rx", "shared functions first");
        let row = |f: &str| &c.matrix.cells[c.matrix.functions.iter().position(|x| x == f).unwrap()];
        assert_eq!(row("netif_rx"), &vec![Some(2.0), Some(1.0)]);
        assert_eq!(row("loopback_xmit"), &vec![Some(2.0), None]);
        assert_eq!(c.vs_baseline.len(), 1);
        assert_eq!(c.vs_baseline[0].only_here, ["veth_xmit"]);
        assert_eq!(c.vs_baseline[0].only_baseline, ["loopback_xmit"]);
        assert_eq!(c.skipped.len(), 1);
    }

    #[test]
    fn without_workload_rates_are_per_event() {
        let mut b = RunBuilder::default();
        let s = b.stack(vec!["a".into()]);
        b.add("net:x", "", 0, 0, Some(s), 4);
        b.add("net:y", "", 0, 0, None, 4);
        let m = ModeReport::from_run(&b.finish("perf", 1.0, None, Counters::default()), 3);
        assert_eq!(m.events_per_msg, None);
        assert_eq!(m.function_rate(&m.functions[0]), 0.5);
        assert!(m.devices.is_empty());
    }
}
