//! The end-of-run aggregate: counts per event and per device, distinct kernel functions, loss.
use std::{borrow::Cow, collections::HashMap, sync::Arc};

use dockertrace_common::{Event, EVENT_HAS_DEV, STACK_SKIPPED};
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
    /// Stacks were taken for 1 in this many events (`--stack-sample`); above 1 the function
    /// counts are estimates. 0 and 1: every event.
    #[serde(default)]
    pub stack_sample: u32,
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
///
/// With sampled stacks (`--stack-sample N`), events passed over by the sampling are counted
/// under [`STACK_SKIPPED`]; the summary and the recording hand each (event, device)'s skipped
/// count out to that pair's sampled stacks in proportion ([`Aggregate::estimated`]), so every
/// consumer sees exact event counts and estimated stack counts, in the usual shape.
#[derive(Default)]
pub struct Aggregate {
    counts: HashMap<Key, u64>,
    dev_names: HashMap<(u32, u32), String>,
    stacks: HashMap<i32, Arc<Stack>>,
    total: u64,
    /// 1 in how many events took a stack (0 and 1: every event).
    pub stack_sample: u32,
}

impl Aggregate {
    /// An aggregate for a run whose stacks are taken for 1 in `stack_sample` events.
    pub fn new(stack_sample: u32) -> Self {
        Aggregate { stack_sample, ..Default::default() }
    }

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
            None if stack_id == STACK_SKIPPED => STACK_SKIPPED,
            None => -1,
        };
        *self.counts.entry(Key { name, netns, ifindex, stack_id }).or_default() += n;
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The counts with every (event, device)'s skipped-stack count handed out to its sampled
    /// stacks in proportion to how often each was sampled (largest remainder, so the pair's
    /// total is exact). A pair without any sampled stack keeps its events stackless. Without
    /// sampling these are the counts themselves.
    fn estimated(&self) -> Cow<'_, HashMap<Key, u64>> {
        if !self.counts.keys().any(|k| k.stack_id == STACK_SKIPPED) {
            return Cow::Borrowed(&self.counts);
        }
        type Pair<'a> = (&'a Arc<str>, u32, u32);
        let mut sampled: HashMap<Pair<'_>, Vec<(i32, u64)>> = HashMap::new();
        for (k, &n) in &self.counts {
            if k.stack_id >= 0 {
                sampled.entry((&k.name, k.netns, k.ifindex)).or_default().push((k.stack_id, n));
            }
        }
        let mut out: HashMap<Key, u64> = self
            .counts
            .iter()
            .filter(|(k, _)| k.stack_id != STACK_SKIPPED)
            .map(|(k, &n)| (k.clone(), n))
            .collect();
        for (k, &skipped) in self.counts.iter().filter(|(k, _)| k.stack_id == STACK_SKIPPED) {
            let key = |stack_id| Key { name: k.name.clone(), netns: k.netns, ifindex: k.ifindex, stack_id };
            let Some(stacks) = sampled.get_mut(&(&k.name, k.netns, k.ifindex)) else {
                *out.entry(key(-1)).or_default() += skipped;
                continue;
            };
            for (stack_id, share) in apportion(skipped, stacks) {
                *out.entry(key(stack_id)).or_default() += share;
            }
        }
        Cow::Owned(out)
    }

    /// The end-of-run summary. `duration_s` is the wall-clock length of the run.
    pub fn report(&self, duration_s: f64, counters: Counters) -> TraceReport {
        let mut per_event: HashMap<&str, u64> = HashMap::new();
        let mut per_dev: HashMap<(u32, u32), u64> = HashMap::new();
        let mut per_stack: HashMap<i32, u64> = HashMap::new();
        let counts = self.estimated();
        for (k, &n) in counts.iter() {
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
            stack_sample: self.stack_sample.max(1),
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
        for (k, &n) in self.estimated().iter() {
            let stack = (k.stack_id >= 0).then(|| {
                *index.entry(k.stack_id).or_insert_with(|| {
                    b.stack(self.stacks[&k.stack_id].functions().map(str::to_owned).collect())
                })
            });
            let dev = self.dev_names.get(&(k.netns, k.ifindex)).map_or("", String::as_str);
            b.add(&k.name, dev, k.netns, k.ifindex, stack, n);
        }
        let mut run = b.finish(mode, duration_s, workload, counters);
        run.stack_sample = (self.stack_sample > 1).then_some(self.stack_sample);
        run
    }
}

/// Splits `total` over `weights` ((id, weight), weights not all zero) in proportion, by largest
/// remainder: the shares add up to `total` exactly. Ties go to the lower id, so the result does
/// not depend on the order of `weights`.
fn apportion(total: u64, weights: &mut [(i32, u64)]) -> Vec<(i32, u64)> {
    weights.sort_unstable();
    let sum: u128 = weights.iter().map(|&(_, w)| u128::from(w)).sum();
    if sum == 0 {
        return Vec::new();
    }
    let mut shares: Vec<(i32, u64, u128)> = weights
        .iter()
        .map(|&(id, w)| {
            let x = u128::from(total) * u128::from(w);
            (id, (x / sum) as u64, x % sum)
        })
        .collect();
    let given: u64 = shares.iter().map(|s| s.1).sum();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| shares[b].2.cmp(&shares[a].2).then(shares[a].0.cmp(&shares[b].0)));
    for &i in order.iter().take((total - given) as usize) {
        shares[i].1 += 1;
    }
    shares.into_iter().map(|(id, n, _)| (id, n)).collect()
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

    #[test]
    fn apportion_is_proportional_exact_and_order_free() {
        let mut w = vec![(7, 1), (3, 2), (5, 1)];
        let mut got = apportion(10, &mut w);
        got.sort_unstable();
        // 10 × (2, 1, 1) / 4 = (5, 2.5, 2.5): the tie goes to the lower id.
        assert_eq!(got, vec![(3, 5), (5, 3), (7, 2)]);
        let mut w2 = vec![(5, 1), (7, 1), (3, 2)];
        let mut got2 = apportion(10, &mut w2);
        got2.sort_unstable();
        assert_eq!(got, got2);
        assert_eq!(apportion(0, &mut [(1, 4)]), vec![(1, 0)]);
        assert_eq!(
            apportion(u64::MAX, &mut [(1, u64::MAX), (2, u64::MAX)])
                .iter()
                .map(|s| s.1 as u128)
                .sum::<u128>(),
            u64::MAX as u128
        );
    }

    #[test]
    fn sampled_stacks_are_scaled_to_the_exact_counts() {
        let s1 = stack(&["netif_rx", "veth_xmit"]);
        let s2 = stack(&["netif_rx", "br_dev_xmit"]);
        let mut a = Aggregate::new(4);
        let name: Arc<str> = Arc::from("net:netif_rx");
        // veth0: 3 events sampled with s1, 1 with s2, 12 skipped; br0: 5 skipped, none sampled.
        a.add_counted(name.clone(), 7, 4, Some("veth0"), Some(s1), 0, 3);
        a.add_counted(name.clone(), 7, 4, Some("veth0"), Some(s2), 1, 1);
        a.add_counted(name.clone(), 7, 4, Some("veth0"), None, STACK_SKIPPED, 12);
        a.add_counted(name.clone(), 7, 3, Some("br0"), None, STACK_SKIPPED, 5);
        let r = a.report(1.0, Counters::default());
        assert_eq!(r.total_events, 21);
        assert_eq!(r.event_count("net:netif_rx"), 21);
        assert_eq!(r.stack_sample, 4);
        // veth0's 16 events: 12 with s1's functions, 4 with s2's; br0's stay stackless.
        assert!(r.functions.contains(&("netif_rx".into(), 16)));
        assert!(r.functions.contains(&("veth_xmit".into(), 12)));
        assert!(r.functions.contains(&("br_dev_xmit".into(), 4)));
        let run = a.to_run("bridge", 1.0, None, Counters::default());
        assert_eq!(run.stack_sample, Some(4));
        assert_eq!(run.counts.iter().map(|c| c.count).sum::<u64>(), 21);
        assert_eq!(run.counts.iter().filter(|c| c.stack.is_none()).map(|c| c.count).sum::<u64>(), 5);
        // Without sampling nothing is estimated and the recording says so.
        let plain = Aggregate::new(1).to_run("bridge", 1.0, None, Counters::default());
        assert_eq!(plain.stack_sample, None);
    }
}
