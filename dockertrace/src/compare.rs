//! Per-mode reports and the comparison of modes, computed from recordings' [`ModeRun`]s.
//!
//! Everything is normalized per workload message when the run has workload figures (per event
//! otherwise), so that modes with different throughput compare fairly.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::{
    cost::WorkloadCost, datapath, journeys::JourneyReport, names::Names, recording::ModeRun,
    stacks::StackMode, workload::WorkloadReport,
};

/// Names the ladders' hops after `names`: a hop's place is its namespace's name (`client`,
/// `host`), and a host-side veth shows its peer (`veth1a2b(server)`). What `names` does not
/// know stays as it was.
pub fn name_ladders(j: &mut JourneyReport, names: &Names) {
    for h in j.directions.iter_mut().flat_map(|d| d.hops.iter_mut()) {
        if h.place.is_none() {
            h.place = names.netns_name(h.netns).map(str::to_owned);
        }
        if let Some(p) = names.peer(h.netns, h.ifindex) {
            let suffix = format!("({p})");
            if !h.dev.ends_with(&suffix) {
                h.dev.push_str(&suffix);
            }
        }
    }
}

/// Events of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCount {
    pub dev: String,
    pub ifindex: u32,
    pub netns: u32,
    pub events: u64,
    /// The namespace's name (container, `ip netns` name, `host`), when the run knew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_name: Option<String>,
    /// For a veth whose peer lives in a named namespace: that namespace's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The device's identity across runs (see [`Names::key`]): `eth0@server`,
    /// `veth(server)@host`, `eth0@?` without names.
    #[serde(default)]
    pub key: String,
}

impl DeviceCount {
    /// As shown to humans: `eth0@server`, `veth1a2b(server)@host`, `eth0@4026532290`.
    pub fn label(&self) -> String {
        self.names().device(&self.dev, self.netns, self.ifindex)
    }

    /// The device alone: `eth0`, `veth1a2b(server)`.
    pub fn device_label(&self) -> String {
        self.names().device_label(&self.dev, self.netns, self.ifindex)
    }

    /// The namespace alone: its name, else its inode.
    pub fn netns_label(&self) -> String {
        self.names().netns_label(self.netns).into_owned()
    }

    /// A one-device table of what this count knows.
    fn names(&self) -> Names {
        let mut n = Names::default();
        if let Some(l) = &self.netns_name {
            n.add_netns(self.netns, l);
        }
        if let Some(p) = &self.peer {
            n.add_peer(self.netns, self.ifindex, p);
        }
        n
    }
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

/// The workload's figures of one phase of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadFigures {
    pub messages: u64,
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    /// None for the stream pattern (no RTTs measured).
    pub rtt_p50_us: Option<f64>,
    pub rtt_p99_us: Option<f64>,
}

impl From<&WorkloadReport> for WorkloadFigures {
    fn from(w: &WorkloadReport) -> WorkloadFigures {
        WorkloadFigures {
            messages: w.messages,
            msgs_per_s: w.msgs_per_s,
            mb_per_s: w.mb_per_s,
            rtt_p50_us: w.rtt_us.as_ref().map(|r| r.p50),
            rtt_p99_us: w.rtt_us.as_ref().map(|r| r.p99),
        }
    }
}

/// Which phase of a run figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The workload alone, nothing loaded into the kernel.
    Untraced,
    /// The workload while dockertrace traced it: the tracer's cost is in the figures.
    Traced,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Untraced => "untraced",
            Phase::Traced => "traced",
        }
    }
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
    /// The run's workload figures (`messages` ... `rtt_p99_us`): its traced phase's (with
    /// `--untraced`, the untraced run's). The comparison shows [`ModeReport::headline`].
    pub messages: Option<u64>,
    pub msgs_per_s: Option<f64>,
    pub mb_per_s: Option<f64>,
    pub rtt_p50_us: Option<f64>,
    pub rtt_p99_us: Option<f64>,
    /// The untraced phase's figures: the mode's own speed (for an `--untraced` run, its
    /// workload). None with `--no-untraced`, for imports and older recordings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untraced: Option<WorkloadFigures>,
    /// The traced phase's figures (None for `--untraced` runs and runs without a workload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traced: Option<WorkloadFigures>,
    /// What tracing cost the workload: the traced phase against the untraced one (both needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_cost: Option<WorkloadCost>,
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
    /// The hop ladders per direction (None without journeys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journeys: Option<JourneyReport>,
    /// The workload's drops per reason, location and device, most first, each with the hint
    /// of the rule table (`crate::hints`) that matches it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drops: Vec<DropRow>,
}

/// Drops of one reason at one location on one device, as the reports show them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropRow {
    pub reason: String,
    pub function: String,
    pub location: String,
    /// Where the packet died: the drop's device, else the journey's previous hop's
    /// (`eth0@server`; "" unknown).
    pub device: String,
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_msg: Option<f64>,
    /// What the rule table says about such a drop (None: no rule matches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Part of normal operation (`QUEUE_PURGE`: freed with a closed socket), per the rule table.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub benign: bool,
    /// The device's name and (netns, ifindex), to name it again once names are known.
    #[serde(skip)]
    pub at: Option<(String, u32, u32)>,
}

impl DropRow {
    /// The row of one recorded drop count in `mode`.
    pub fn new(d: &crate::recording::DropCount, mode: &str, names: &Names, messages: Option<u64>) -> DropRow {
        let at = if !d.dev.is_empty() || d.ifindex != 0 {
            Some((d.dev.clone(), d.netns, d.ifindex))
        } else {
            d.last_hop.clone()
        };
        let device = at.as_ref().map_or_else(String::new, |(n, ns, i)| names.device(n, *ns, *i));
        let facts = crate::hints::DropFacts {
            mode,
            reason: &d.reason,
            function: &d.function,
            device: at.as_ref().map_or("", |a| a.0.as_str()),
            multicast: d.multicast,
        };
        let rule = crate::hints::hint(&facts);
        DropRow {
            reason: d.reason.clone(),
            function: d.function.clone(),
            location: d.location.clone(),
            device,
            count: d.count,
            per_msg: per(d.count, messages),
            why: rule.map(|r| r.why.to_owned()),
            fix: rule.map(|r| r.fix.to_owned()),
            benign: rule.is_some_and(|r| r.benign),
            at,
        }
    }
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
    /// Modes whose msg/s and RTT in the comparison are traced figures, the tracer's cost
    /// included: they have no untraced phase (`--no-untraced`, older recordings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traced_figures: Vec<String>,
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
        top_paths.sort_by(|a, b| {
            b.count.cmp(&a.count).then_with(|| a.frames.cmp(&b.frames)).then_with(|| a.event.cmp(&b.event))
        });
        top_paths.truncate(top);
        let mut by_component: BTreeMap<datapath::Component, BTreeSet<String>> = BTreeMap::new();
        for f in functions.keys() {
            if let Some(c) = datapath::component(f) {
                by_component.entry(c).or_default().insert((*f).to_owned());
            }
        }
        let mut devices: Vec<DeviceCount> = devices
            .into_iter()
            .map(|((netns, ifindex), (dev, events))| DeviceCount {
                netns_name: run.names.netns_name(netns).map(str::to_owned),
                peer: run.names.peer(netns, ifindex).map(str::to_owned),
                key: run.names.key(&dev, netns, ifindex),
                dev,
                ifindex,
                netns,
                events,
            })
            .collect();
        devices.sort_by(|a, b| b.events.cmp(&a.events).then_with(|| a.dev.cmp(&b.dev)));
        let w = run.workload.as_ref();
        // An `--untraced` run: a workload, and neither counts nor a tracer.
        let traced_run = run.tracer.is_some() || !run.counts.is_empty();
        let traced = w.filter(|_| traced_run).map(WorkloadFigures::from);
        let untraced = run.untraced.as_ref().or(w.filter(|_| !traced_run)).map(WorkloadFigures::from);
        let events_per_msg = per(total, messages);
        let workload_cost = traced.as_ref().zip(untraced.as_ref()).and_then(|(t, u)| {
            WorkloadCost::new(t.msgs_per_s, u.msgs_per_s, t.rtt_p50_us.zip(u.rtt_p50_us), events_per_msg)
        });
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
            untraced,
            traced,
            workload_cost,
            total_events: total,
            events_per_msg,
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
            journeys: run.journeys.clone().map(|mut j| {
                name_ladders(&mut j, &run.names);
                j
            }),
            drops: run.drops.iter().map(|d| DropRow::new(d, &run.mode, &run.names, messages)).collect(),
        }
    }

    /// The run's drops of packets on their way (benign ones, such as packets freed with a
    /// closed socket, left out).
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().filter(|d| !d.benign).map(|d| d.count).sum()
    }

    /// The mode's speed as the comparison shows it: the untraced phase's figures when there is
    /// one, else the traced phase's (which carry the tracer's cost); None without a workload.
    pub fn headline(&self) -> Option<(&WorkloadFigures, Phase)> {
        match (&self.untraced, &self.traced) {
            (Some(u), _) => Some((u, Phase::Untraced)),
            (None, Some(t)) => Some((t, Phase::Traced)),
            (None, None) => None,
        }
    }

    /// Names the devices after `names` (what a live run learns after its summary was built);
    /// what `names` does not know stays as it was.
    pub fn apply_names(&mut self, names: &Names) {
        if let Some(j) = &mut self.journeys {
            name_ladders(j, names);
        }
        for d in &mut self.drops {
            if let Some((n, ns, i)) = &d.at {
                d.device = names.device(n, *ns, *i);
            }
        }
        for d in &mut self.devices {
            if let Some(l) = names.netns_name(d.netns) {
                d.netns_name.get_or_insert_with(|| l.to_owned());
            }
            if let Some(p) = names.peer(d.netns, d.ifindex) {
                d.peer.get_or_insert_with(|| p.to_owned());
            }
            let mut known = names.clone();
            if let Some(l) = &d.netns_name {
                known.add_netns(d.netns, l);
            }
            if let Some(p) = &d.peer {
                known.add_peer(d.netns, d.ifindex, p);
            }
            d.key = known.key(&d.dev, d.netns, d.ifindex);
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
        let traced_figures = modes
            .iter()
            .filter(|m| m.headline().is_some_and(|(_, p)| p == Phase::Traced))
            .map(|m| m.mode.clone())
            .collect();
        Comparison {
            modes,
            matrix: FunctionMatrix { modes: names, functions, cells },
            vs_baseline,
            skipped,
            traced_figures,
        }
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
    fn the_headline_is_the_untraced_phase_and_the_cost_its_own_figure() {
        let untraced = |rate: f64| {
            let rtt = RttSummary { p50: 25.0, p99: 40.0, max: 50.0, mean: 26.0, samples: 1 };
            WorkloadReport::new(crate::workload::Pattern::Echo, 1, 42, rate as u64, 0, 1.0, Some(rtt))
        };
        // Traced: 100 msg/s, 3 events per message, RTT p50 50 µs; untraced: 200 msg/s, 25 µs.
        let paths: &[(&str, &[&str], u64)] = &[("net:netif_rx", &["netif_rx", "veth_xmit"], 300)];
        let mut bridge = run("bridge", 100, paths);
        bridge.untraced = Some(untraced(200.0));
        let m = ModeReport::from_run(&bridge, 5);
        let (h, phase) = m.headline().unwrap();
        assert_eq!((h.msgs_per_s, h.rtt_p50_us, phase), (200.0, Some(25.0), Phase::Untraced));
        assert_eq!(m.traced.as_ref().unwrap().msgs_per_s, 100.0);
        assert_eq!(m.msgs_per_s, Some(100.0), "the flat figures stay the traced run's");
        assert_eq!(m.events_per_msg, Some(3.0), "per message of the traced phase");
        let c = m.workload_cost.as_ref().unwrap();
        assert_eq!((c.kept, c.added_rtt_p50_us), (0.5, Some(25.0)));
        // 1/100 − 1/200 s = 5 ms per message, over 3 events.
        assert!((c.added_us_per_msg - 5000.0).abs() < 1e-6);
        assert!((c.ns_per_event.unwrap() - 5e6 / 3.0).abs() < 1e-3);

        // Without an untraced phase: the traced figures, and the comparison says so.
        let normal = run("normal", 10, &[("net:netif_rx", &["netif_rx", "loopback_xmit"], 20)]);
        let n = ModeReport::from_run(&normal, 5);
        assert_eq!(n.headline().map(|(f, p)| (f.msgs_per_s, p)), Some((10.0, Phase::Traced)));
        assert_eq!(n.workload_cost, None);
        let cmp = Comparison::new(vec![n, m], Vec::new());
        assert_eq!(cmp.traced_figures, ["normal"]);
        let json = serde_json::to_string(&cmp).unwrap();
        assert!(
            json.contains("\"traced_figures\":[\"normal\"]") && json.contains("\"ns_per_event\""),
            "{json}"
        );

        // An `--untraced` run: its workload is the untraced figure, there is no traced one.
        let alone = RunBuilder::default().finish("host", 1.0, Some(untraced(300.0)), Counters::default());
        let a = ModeReport::from_run(&alone, 5);
        assert_eq!(a.headline().map(|(f, p)| (f.msgs_per_s, p)), Some((300.0, Phase::Untraced)));
        assert_eq!((a.traced.as_ref(), a.workload_cost.as_ref()), (None, None));
        // An import: no workload at all.
        let mut b = RunBuilder::default();
        b.add("net:x", "", 0, 0, None, 4);
        assert!(ModeReport::from_run(&b.finish("perf", 1.0, None, Counters::default()), 3)
            .headline()
            .is_none());
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

    #[test]
    fn ladder_hops_take_the_names_of_their_places() {
        let mut j = crate::render::ladders::tests::report(1500);
        let h0 = j.directions[0].hops[0].clone();
        let mut names = Names::default();
        names.add_netns(h0.netns, "client");
        names.add_peer(h0.netns, h0.ifindex, "server");
        name_ladders(&mut j, &names);
        name_ladders(&mut j, &names);
        let h = &j.directions[0].hops[0];
        assert_eq!(
            h.device_label(),
            format!("{}(server)@client", h0.dev),
            "named once, however often applied"
        );
        let other = &j.directions[0].hops.iter().find(|x| x.netns != h0.netns).expect("a hop elsewhere");
        assert!(other.place.is_none() && other.device_label().ends_with(&format!("@{}", other.netns)));
    }
}
