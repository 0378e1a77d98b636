//! The end-of-run aggregate: counts per event and per device, distinct kernel functions, loss.
use std::{collections::HashMap, sync::Arc};

use dockertrace_common::{Event, EVENT_HAS_DEV};
use serde::{Deserialize, Serialize};

use crate::{
    decode::c_str,
    pipeline::TracedEvent,
    stacks::Stack,
    tracer::{Counters, ProbeStatus},
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
}

impl TraceReport {
    pub fn event_count(&self, name: &str) -> u64 {
        self.events.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c)
    }

    pub fn has_function(&self, name: &str) -> bool {
        self.functions.iter().any(|(f, _)| f == name)
    }
}

/// Accumulates a [`TraceReport`] from the event stream.
#[derive(Default)]
pub struct Aggregate {
    per_event: HashMap<Arc<str>, u64>,
    per_dev: HashMap<(u32, u32), (String, u64)>,
    /// Events per stack id.
    per_stack: HashMap<i32, (Arc<Stack>, u64)>,
    first_ts: Option<u64>,
    last_ts: u64,
    total: u64,
}

impl Aggregate {
    pub fn add(&mut self, ev: &TracedEvent) {
        let raw: &Event = &ev.raw;
        self.total += 1;
        self.first_ts.get_or_insert(raw.ts_ns);
        self.last_ts = self.last_ts.max(raw.ts_ns);
        match self.per_event.get_mut(&ev.name) {
            Some(c) => *c += 1,
            None => {
                self.per_event.insert(ev.name.clone(), 1);
            }
        }
        if raw.flags & EVENT_HAS_DEV != 0 {
            self.per_dev
                .entry((raw.netns, raw.ifindex))
                .or_insert_with(|| (c_str(&raw.dev).to_owned(), 0))
                .1 += 1;
        }
        if let Some(st) = &ev.stack {
            self.per_stack.entry(raw.stack_id).or_insert_with(|| (st.clone(), 0)).1 += 1;
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Builds the report. `duration_s` is the wall-clock length of the run.
    pub fn report(&self, duration_s: f64, counters: Counters) -> TraceReport {
        let mut events: Vec<(String, u64)> =
            self.per_event.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        events.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut devices: Vec<DeviceCount> = self
            .per_dev
            .iter()
            .map(|(&(netns, ifindex), (dev, n))| DeviceCount { dev: dev.clone(), ifindex, netns, events: *n })
            .collect();
        devices.sort_by(|a, b| b.events.cmp(&a.events).then(a.dev.cmp(&b.dev)));
        let mut funcs: HashMap<&str, u64> = HashMap::new();
        for (stack, n) in self.per_stack.values() {
            let mut seen: Vec<&str> = stack.functions().collect();
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
    }
}
