//! The end-of-run aggregate: counts per event and per device, distinct kernel functions, loss.
use std::{collections::HashMap, sync::Arc};

use dockertrace_common::{Event, EVENT_HAS_DEV};
use serde::{Deserialize, Serialize};

use crate::{
    decode::c_str,
    pipeline::TracedEvent,
    recording::{ModeRun, RunBuilder},
    stacks::Stack,
    tracer::{Counters, ProbeStatus},
    workload::WorkloadReport,
};

/// Events of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCount {
    pub dev: String,
    pub ifindex: u32,
    pub netns: u32,
    pub events: u64,
}

/// What a run saw, ready to print or save.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TraceReport {
    pub duration_s: f64,
    pub total_events: u64,
    /// (event name, count), most frequent first.
    pub events: Vec<(String, u64)>,
    pub devices: Vec<DeviceCount>,
    /// (kernel function, events whose stack contains it), most frequent first.
    pub functions: Vec<(String, u64)>,
    pub counters: Counters,
    pub decode_errors: u64,
    pub stack_misses: u64,
    #[serde(skip_deserializing)]
    pub probes: Vec<ProbeStatus>,
    /// What tracing cost (tracer CPU and memory; per-program statistics with `--stats`).
    #[serde(default)]
    pub cost: Option<crate::cost::TracerCost>,
}

impl TraceReport {
    pub fn event_count(&self, name: &str) -> u64 {
        self.events.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c)
    }

    pub fn has_function(&self, name: &str) -> bool {
        self.functions.iter().any(|(f, _)| f == name)
    }
}

/// One cell of the aggregate: events of one kind, on one device, with one stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    name: Arc<str>,
    netns: u32,
    ifindex: u32,
    stack_id: i32,
}

/// Accumulates the event stream into counts per (event, device, stack) — the same shape as a
/// recording's count table — from which the summary ([`TraceReport`]) and the recording
/// ([`ModeRun`]) are both derived.
#[derive(Default)]
pub struct Aggregate {
    counts: HashMap<Key, u64>,
    dev_names: HashMap<(u32, u32), String>,
    stacks: HashMap<i32, Arc<Stack>>,
    total: u64,
}

impl Aggregate {
    /// Counts one streamed event.
    pub fn add(&mut self, ev: &TracedEvent) {
        let raw: &Event = &ev.raw;
        let has_dev = raw.flags & EVENT_HAS_DEV != 0;
        let (netns, ifindex) = if has_dev { (raw.netns, raw.ifindex) } else { (0, 0) };
        let dev_name = has_dev.then(|| c_str(&raw.dev));
        self.add_counted(ev.name.clone(), netns, ifindex, dev_name, ev.stack.clone(), raw.stack_id, 1);
    }

    /// Counts `n` events of kind `name` on one device with one stack: the one path behind both
    /// the streaming mode ([`Aggregate::add`]) and the in-kernel aggregate mode.
    /// `dev_name` is None when the device is unknown (then `netns` and `ifindex` are ignored and
    /// recorded as 0); `stack` is the symbolized `stack_id` (None: no usable stack). The first
    /// name given for a device is kept.
    #[allow(clippy::too_many_arguments)]
    pub fn add_counted(
        &mut self,
        name: Arc<str>,
        netns: u32,
        ifindex: u32,
        dev_name: Option<&str>,
        stack: Option<Arc<Stack>>,
        stack_id: i32,
        n: u64,
    ) {
        self.total += n;
        let (netns, ifindex) = match dev_name {
            Some(dev) => {
                self.dev_names.entry((netns, ifindex)).or_insert_with(|| dev.to_owned());
                (netns, ifindex)
            }
            None => (0, 0),
        };
        let stack_id = match stack {
            Some(st) => {
                self.stacks.entry(stack_id).or_insert(st);
                stack_id
            }
            None => -1,
        };
        *self.counts.entry(Key { name, netns, ifindex, stack_id }).or_default() += n;
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The end-of-run summary. `duration_s` is the wall-clock length of the run.
    pub fn report(&self, duration_s: f64, counters: Counters) -> TraceReport {
        let mut per_event: HashMap<&str, u64> = HashMap::new();
        let mut per_dev: HashMap<(u32, u32), u64> = HashMap::new();
        let mut per_stack: HashMap<i32, u64> = HashMap::new();
        for (k, &n) in &self.counts {
            *per_event.entry(&k.name).or_default() += n;
            if self.dev_names.contains_key(&(k.netns, k.ifindex)) {
                *per_dev.entry((k.netns, k.ifindex)).or_default() += n;
            }
            if k.stack_id >= 0 {
                *per_stack.entry(k.stack_id).or_default() += n;
            }
        }
        let mut events: Vec<(String, u64)> = per_event.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        events.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut devices: Vec<DeviceCount> = per_dev
            .into_iter()
            .map(|((netns, ifindex), n)| DeviceCount {
                dev: self.dev_names[&(netns, ifindex)].clone(),
                ifindex,
                netns,
                events: n,
            })
            .collect();
        devices.sort_by(|a, b| b.events.cmp(&a.events).then(a.dev.cmp(&b.dev)));
        let mut funcs: HashMap<&str, u64> = HashMap::new();
        for (id, n) in per_stack {
            let mut seen: Vec<&str> = self.stacks[&id].functions().collect();
            seen.sort_unstable();
            seen.dedup();
            for f in seen {
                *funcs.entry(f).or_default() += n;
            }
        }
        let mut functions: Vec<(String, u64)> = funcs.into_iter().map(|(f, n)| (f.to_owned(), n)).collect();
        functions.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        TraceReport {
            duration_s,
            total_events: self.total,
            events,
            devices,
            functions,
            counters,
            ..Default::default()
        }
    }

    /// The run as a recording entry.
    pub fn to_run(
        &self,
        mode: &str,
        duration_s: f64,
        workload: Option<WorkloadReport>,
        counters: Counters,
    ) -> ModeRun {
        let mut b = RunBuilder::default();
        let mut index: HashMap<i32, u32> = HashMap::new();
        for (k, &n) in &self.counts {
            let stack = (k.stack_id >= 0).then(|| {
                *index.entry(k.stack_id).or_insert_with(|| {
                    b.stack(self.stacks[&k.stack_id].functions().map(str::to_owned).collect())
                })
            });
            let dev = self.dev_names.get(&(k.netns, k.ifindex)).map_or("", String::as_str);
            b.add(&k.name, dev, k.netns, k.ifindex, stack, n);
        }
        b.finish(mode, duration_s, workload, counters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stacks::Frame;
    use dockertrace_common::{NAME_LEN, RECORD_EVENT};

    fn ev(name: &str, dev: &str, ifindex: u32, stack: Option<Arc<Stack>>) -> TracedEvent {
        let mut d = [0u8; NAME_LEN];
        d[..dev.len()].copy_from_slice(dev.as_bytes());
        TracedEvent {
            raw: Event {
                record: RECORD_EVENT,
                flags: EVENT_HAS_DEV,
                cpu: 0,
                ts_ns: 1_000,
                kind: 1,
                pid: 1,
                tgid: 1,
                len: 60,
                skbaddr: 1,
                ifindex,
                netns: 7,
                stack_id: 0,
                protocol: 0x800,
                _pad: 0,
                comm: [0; NAME_LEN],
                dev: d,
            },
            name: Arc::from(name),
            stack,
        }
    }

    fn stack(fs: &[&str]) -> Arc<Stack> {
        Arc::new(Stack {
            frames: fs
                .iter()
                .map(|f| Frame { addr: 0, function: Arc::from(*f), offset: 0, module: None })
                .collect(),
        })
    }

    #[test]
    fn counts_events_devices_and_functions_once_per_event() {
        let s1 = stack(&["netif_rx", "veth_xmit", "dev_hard_start_xmit", "veth_xmit"]);
        let s2 = stack(&["netif_rx", "br_dev_xmit"]);
        let mut a = Aggregate::default();
        a.add(&ev("net:netif_rx", "veth0", 4, Some(s1.clone())));
        a.add(&ev("net:netif_rx", "veth0", 4, Some(s1)));
        let mut e = ev("net:net_dev_queue", "br0", 3, Some(s2));
        e.raw.stack_id = 1;
        a.add(&e);
        a.add(&ev("net:net_dev_queue", "br0", 3, None));
        let r = a.report(1.0, Counters::default());
        assert_eq!(r.total_events, 4);
        assert_eq!(r.events, vec![("net:net_dev_queue".into(), 2), ("net:netif_rx".into(), 2)]);
        assert_eq!(r.event_count("net:netif_rx"), 2);
        assert_eq!(r.devices.len(), 2);
        assert_eq!(r.functions[0], ("netif_rx".into(), 3));
        // veth_xmit appears twice in one stack but counts once per event.
        assert!(r.functions.contains(&("veth_xmit".into(), 2)));
        assert!(r.has_function("br_dev_xmit"));
        assert!(!r.has_function("macvlan_start_xmit"));
        // The recording entry carries the same information.
        let run = a.to_run("bridge", 1.0, None, Counters::default());
        assert_eq!(run.stacks.len(), 2);
        assert_eq!(run.counts.iter().map(|c| c.count).sum::<u64>(), 4);
        let m = crate::compare::ModeReport::from_run(&run, 5);
        assert_eq!(m.functions.iter().find(|f| f.name == "veth_xmit").map(|f| f.count), Some(2));
        assert_eq!(m.devices.len(), 2);
    }
}
