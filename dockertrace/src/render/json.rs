//! The comparison as one JSON document for CI systems and scripts (`dockertrace report
//! --format json`): per mode the workload's figures, the event and function tallies, the
//! tracer's cost, the drops and the hop ladders. The schema is documented in
//! docs/json-schema.md ("Summary"); `format` and `version` name it, and fields are only ever
//! added within a version.
use serde::Serialize;

use crate::{
    compare::{Comparison, ModeReport},
    cost::WorkloadCost,
    journeys::{DirectionLadder, LadderSource},
};

/// The name of the summary's schema (its `format` field).
pub const FORMAT: &str = "dockertrace-summary";
/// The summary schema's version (its `version` field).
pub const VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Summary {
    pub format: &'static str,
    pub version: u32,
    pub tool_version: &'static str,
    pub modes: Vec<ModeSummary>,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Serialize)]
pub struct Skipped {
    pub mode: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct ModeSummary {
    pub mode: String,
    pub runtime: Option<String>,
    /// `adaptive`, `sample:N`: function figures are estimates; null: every event, or none.
    pub stacks: Option<String>,
    pub duration_s: f64,
    /// Which phase `messages` … `rtt_p99_us` come from: `untraced` (the workload alone) or
    /// `traced`; null without a workload.
    pub phase: Option<&'static str>,
    pub messages: Option<u64>,
    pub msgs_per_s: Option<f64>,
    pub rtt_p50_us: Option<f64>,
    pub rtt_p99_us: Option<f64>,
    pub events: u64,
    pub events_per_msg: Option<f64>,
    pub mean_stack_depth: f64,
    pub lost: u64,
    /// The distinct kernel functions in stacks, most frequent first.
    pub functions: Vec<String>,
    /// Devices by name (`eth0@server`, `veth(server)@host`), most events first.
    pub devices: Vec<String>,
    pub cost: Option<WorkloadCost>,
    /// The workload's packets that died in the kernel (harmless drops not counted).
    pub drops: u64,
    pub drop_sites: Vec<DropSite>,
    /// `journeys` (every packet followed) or `hop-pairs` (aggregate mode's approximation);
    /// null without journeys.
    pub ladder_source: Option<LadderSource>,
    pub ladders: Vec<Ladder>,
}

#[derive(Debug, Serialize)]
pub struct DropSite {
    pub reason: String,
    pub function: String,
    pub location: String,
    pub device: String,
    pub count: u64,
    pub benign: bool,
    pub why: Option<String>,
    pub fix: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Ladder {
    pub direction: String,
    pub label: String,
    pub data_packets: u64,
    pub ladder_packets: u64,
    pub one_way_p50_ns: u64,
    pub one_way_p99_ns: u64,
    pub hops: Vec<Hop>,
}

#[derive(Debug, Serialize)]
pub struct Hop {
    pub event: String,
    pub device: String,
    pub function: Option<String>,
    pub delta_p50_ns: u64,
    pub delta_p99_ns: u64,
    pub cum_p50_ns: u64,
    pub cum_p99_ns: u64,
}

impl Summary {
    pub fn new(c: &Comparison) -> Summary {
        Summary {
            format: FORMAT,
            version: VERSION,
            tool_version: env!("CARGO_PKG_VERSION"),
            modes: c.modes.iter().map(ModeSummary::new).collect(),
            skipped: c.skipped.iter().map(|(m, r)| Skipped { mode: m.clone(), reason: r.clone() }).collect(),
        }
    }
}

impl ModeSummary {
    fn new(m: &ModeReport) -> ModeSummary {
        let head = m.headline();
        ModeSummary {
            mode: m.mode.clone(),
            runtime: m.runtime.clone(),
            stacks: m.stacks.map(|s| s.to_string()),
            duration_s: m.duration_s,
            phase: head.map(|(_, p)| p.name()),
            messages: head.map(|(f, _)| f.messages),
            msgs_per_s: head.map(|(f, _)| f.msgs_per_s),
            rtt_p50_us: head.and_then(|(f, _)| f.rtt_p50_us),
            rtt_p99_us: head.and_then(|(f, _)| f.rtt_p99_us),
            events: m.total_events,
            events_per_msg: m.events_per_msg,
            mean_stack_depth: m.mean_stack_depth,
            lost: m.lost,
            functions: m.functions.iter().map(|f| f.name.clone()).collect(),
            devices: m.devices.iter().map(|d| d.key.clone()).collect(),
            cost: m.workload_cost.clone(),
            drops: m.total_drops(),
            drop_sites: m
                .drops
                .iter()
                .map(|d| DropSite {
                    reason: d.reason.clone(),
                    function: d.function.clone(),
                    location: d.location.clone(),
                    device: d.device.clone(),
                    count: d.count,
                    benign: d.benign,
                    why: d.why.clone(),
                    fix: d.fix.clone(),
                })
                .collect(),
            ladder_source: m.journeys.as_ref().map(|j| j.source),
            ladders: m.journeys.iter().flat_map(|j| &j.directions).map(Ladder::new).collect(),
        }
    }
}

impl Ladder {
    fn new(d: &DirectionLadder) -> Ladder {
        Ladder {
            direction: d.direction.clone(),
            label: d.label.clone(),
            data_packets: d.data_packets,
            ladder_packets: d.ladder_packets,
            one_way_p50_ns: d.one_way_p50_ns,
            one_way_p99_ns: d.one_way_p99_ns,
            hops: d
                .hops
                .iter()
                .map(|h| Hop {
                    event: h.event.clone(),
                    device: h.device_label(),
                    function: h.function.clone(),
                    delta_p50_ns: h.delta_p50_ns,
                    delta_p99_ns: h.delta_p99_ns,
                    cum_p50_ns: h.cum_p50_ns,
                    cum_p99_ns: h.cum_p99_ns,
                })
                .collect(),
        }
    }
}

/// The summary as pretty-printed JSON, ending with a newline.
pub fn render(c: &Comparison) -> String {
    // Serializing plain structs of strings and numbers cannot fail (non-finite floats become null).
    let mut s = serde_json::to_string_pretty(&Summary::new(c)).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_has_its_documented_fields() {
        let mut m = ModeReport::from_run(&crate::render::tables::tests::dropping_run(), 3);
        m.journeys = Some(crate::render::ladders::tests::report(1500));
        let c = Comparison::new(vec![m], vec![("ipvlan-l2".into(), "no CONFIG_IPVLAN".into())]);
        let v: serde_json::Value = serde_json::from_str(&render(&c)).unwrap();
        assert_eq!((v["format"].as_str(), v["version"].as_u64()), (Some(FORMAT), Some(1)));
        assert_eq!(v["skipped"][0]["mode"], "ipvlan-l2");
        let mode = &v["modes"][0];
        // Every field docs/json-schema.md lists, present even when null.
        for key in [
            "mode",
            "runtime",
            "stacks",
            "duration_s",
            "phase",
            "messages",
            "msgs_per_s",
            "rtt_p50_us",
            "rtt_p99_us",
            "events",
            "events_per_msg",
            "mean_stack_depth",
            "lost",
            "functions",
            "devices",
            "cost",
            "drops",
            "drop_sites",
            "ladder_source",
            "ladders",
        ] {
            assert!(mode.get(key).is_some(), "missing `{key}` in {mode}");
        }
        assert_eq!(mode["drops"], 4, "the benign drop is not counted");
        assert_eq!(mode["drop_sites"][0]["reason"], "NETFILTER_DROP");
        assert_eq!(mode["drop_sites"][1]["benign"], true);
        assert_eq!(mode["ladder_source"], "journeys");
        let hop = &mode["ladders"][0]["hops"][2];
        assert_eq!(
            (hop["event"].as_str(), hop["delta_p50_ns"].as_u64()),
            (Some("net:net_dev_queue"), Some(1500))
        );
        assert_eq!(mode["ladders"][0]["one_way_p50_ns"], 4500);
    }
}
