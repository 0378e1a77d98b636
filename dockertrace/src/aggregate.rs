//! The end-of-run aggregate: counts per (event, device, stack), from which the recording entry
//! is derived, and from that the summary.
use std::{borrow::Cow, collections::HashMap, sync::Arc};

use foldhash::HashMap as FastMap;

use dockertrace_common::record::STACK_SKIPPED;

use crate::{
    counters::Counters,
    decode::{Device, TracedEvent},
    recording::{ModeRun, RunBuilder},
    stacks::{Stack, StackMode},
    workload::WorkloadReport,
};

/// What [`Aggregate::add_counted`] counts: events of one kind, on one device, with one stack.
#[derive(Debug, Clone, Copy)]
pub struct Counted<'a> {
    /// The event's kind (tracefs id or `PROBE_BASE + index`): what the counts are keyed by.
    pub kind: u32,
    /// The event's name (kept once per kind).
    pub name: &'a Arc<str>,
    /// None when the device is unknown.
    pub dev: Option<&'a Device>,
    /// The kernel's stack id (`STACK_SKIPPED`: passed over by sampling).
    pub stack_id: i32,
    /// The symbolized `stack_id`; None: no usable stack.
    pub stack: Option<&'a Arc<Stack>>,
    /// The events' path class (adaptive stacks; 0 otherwise): skipped events are shared out
    /// over the walked stacks of their own class first.
    pub class: u8,
}

/// One cell of the aggregate: events of one kind, on one device, of one path class, with one
/// stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: u32,
    netns: u32,
    ifindex: u32,
    class: u8,
    stack_id: i32,
}

/// Accumulates the event stream into counts per (event, device, stack) — the same shape as a
/// recording's count table — from which the recording ([`ModeRun`]) is derived, and from that
/// the summary ([`crate::summary::TraceReport`]).
///
/// With adaptive or sampled stacks (`--stacks adaptive|sample:N`), events whose stack was not
/// walked are counted under [`STACK_SKIPPED`]; the summary and the recording hand each (event,
/// device, path class)'s skipped count out to that key's walked stacks in proportion
/// ([`Aggregate::estimated`]), so every consumer sees exact event counts and estimated stack
/// counts, in the usual shape.
#[derive(Default)]
pub struct Aggregate {
    counts: FastMap<Key, u64>,
    names: FastMap<u32, Arc<str>>,
    dev_names: HashMap<(u32, u32), String>,
    stacks: HashMap<i32, Arc<Stack>>,
    total: u64,
    /// When the kernel walked stacks.
    pub stack_mode: StackMode,
    /// Drops per (site, device, previous hop's device).
    drops: HashMap<DropKey, u64>,
}

/// One cell of the drops: a site (reason, location), the drop's device and the device of the
/// journey's hop before it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DropKey {
    site: Arc<crate::drops::DropSite>,
    dev: Option<(String, u32, u32)>,
    last_hop: Option<(String, u32, u32)>,
    /// Sent to a multicast group (the rule table tells its chatter apart).
    multicast: bool,
}

impl Aggregate {
    /// An aggregate for a run whose stacks were walked as `stacks` says.
    pub fn new(stacks: StackMode) -> Self {
        Aggregate { stack_mode: stacks.normalized(), ..Default::default() }
    }

    /// Counts one streamed event.
    pub fn add(&mut self, ev: &TracedEvent) {
        if let Some(d) = &ev.drop {
            let key = |dev: &Device| (dev.name.to_lossy().into_owned(), dev.netns, dev.ifindex);
            let k = DropKey {
                site: d.site.clone(),
                dev: ev.dev.as_ref().map(key),
                last_hop: ev.last_hop.as_ref().map(key),
                multicast: ev.headers.as_ref().is_some_and(|h| h.is_multicast()),
            };
            *self.drops.entry(k).or_default() += 1;
        }
        self.add_counted(
            Counted {
                kind: ev.kind,
                name: &ev.name,
                dev: ev.dev.as_ref(),
                stack_id: ev.stack_id,
                stack: ev.stack.as_ref(),
                class: ev.class,
            },
            1,
        );
    }

    /// Counts `n` events of one kind on one device with one stack: the one path behind both
    /// the streaming mode ([`Aggregate::add`]) and the in-kernel aggregate mode. The first
    /// name given for a device is kept.
    pub fn add_counted(&mut self, c: Counted<'_>, n: u64) {
        self.total += n;
        let (netns, ifindex) = match c.dev {
            Some(dev) => {
                self.dev_names
                    .entry((dev.netns, dev.ifindex))
                    .or_insert_with(|| dev.name.to_lossy().into_owned());
                (dev.netns, dev.ifindex)
            }
            None => (0, 0),
        };
        let stack_id = match c.stack {
            Some(st) => {
                self.stacks.entry(c.stack_id).or_insert_with(|| st.clone());
                c.stack_id
            }
            None if c.stack_id == STACK_SKIPPED => STACK_SKIPPED,
            None => -1,
        };
        let key = Key { kind: c.kind, netns, ifindex, class: c.class, stack_id };
        match self.counts.get_mut(&key) {
            Some(count) => *count += n,
            // A new cell: the only time the kind's name may be new too (one lookup per event).
            None => {
                self.names.entry(c.kind).or_insert_with(|| c.name.clone());
                self.counts.insert(key, n);
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The counts with every (event, device, class)'s skipped-stack count handed out to its
    /// walked stacks in proportion to how often each was walked (largest remainder, so the
    /// key's total is exact); a class without any walked stack borrows those of its (event,
    /// device), and without those too its events stay stackless. Without skipped events these
    /// are the counts themselves.
    fn estimated(&self) -> Cow<'_, FastMap<Key, u64>> {
        if !self.counts.keys().any(|k| k.stack_id == STACK_SKIPPED) {
            return Cow::Borrowed(&self.counts);
        }
        type Pair = (u32, u32, u32);
        let mut walked: HashMap<(Pair, u8), Vec<(i32, u64)>> = HashMap::new();
        let mut walked_any: HashMap<Pair, Vec<(i32, u64)>> = HashMap::new();
        for (k, &n) in &self.counts {
            if k.stack_id >= 0 {
                let pair = (k.kind, k.netns, k.ifindex);
                walked.entry((pair, k.class)).or_default().push((k.stack_id, n));
                walked_any.entry(pair).or_default().push((k.stack_id, n));
            }
        }
        let mut out: FastMap<Key, u64> = self
            .counts
            .iter()
            .filter(|(k, _)| k.stack_id != STACK_SKIPPED)
            .map(|(k, &n)| (k.clone(), n))
            .collect();
        for (k, &skipped) in self.counts.iter().filter(|(k, _)| k.stack_id == STACK_SKIPPED) {
            let key = |stack_id| Key { stack_id, ..k.clone() };
            let pair = (k.kind, k.netns, k.ifindex);
            let stacks = match walked.get_mut(&(pair, k.class)) {
                Some(s) => s,
                None => match walked_any.get_mut(&pair) {
                    Some(s) => s,
                    None => {
                        *out.entry(key(-1)).or_default() += skipped;
                        continue;
                    }
                },
            };
            for (stack_id, share) in apportion(skipped, stacks) {
                *out.entry(key(stack_id)).or_default() += share;
            }
        }
        Cow::Owned(out)
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
            let name = self.names.get(&k.kind).map_or("unknown", |n| &**n);
            b.add(name, dev, k.netns, k.ifindex, stack, n);
        }
        let mut run = b.finish(mode, duration_s, workload, counters);
        run.set_stack_mode(self.stack_mode);
        run.drops = self.drop_counts();
        run
    }
}

impl Aggregate {
    /// The drops, most frequent first.
    fn drop_counts(&self) -> Vec<crate::recording::DropCount> {
        let mut v: Vec<crate::recording::DropCount> = self
            .drops
            .iter()
            .map(|(k, &count)| {
                let (dev, netns, ifindex) = k.dev.clone().unwrap_or_default();
                crate::recording::DropCount {
                    reason: k.site.reason.clone(),
                    function: k.site.function.clone(),
                    location: k.site.location.clone(),
                    dev,
                    netns,
                    ifindex,
                    last_hop: k.last_hop.clone(),
                    multicast: k.multicast,
                    count,
                }
            })
            .collect();
        v.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| (&a.reason, &a.location, &a.dev).cmp(&(&b.reason, &b.location, &b.dev)))
        });
        v
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
    use crate::{decode::KernelStr, stacks::Frame, summary::TraceReport};

    fn ev(name: &str, dev: &str, ifindex: u32, stack: Option<Arc<Stack>>) -> TracedEvent {
        TracedEvent { stack_id: 0, stack, len: 60, ..TracedEvent::named(name).on(7, ifindex, dev) }
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
        let mut a = Aggregate::new(StackMode::Every);
        a.add(&ev("net:netif_rx", "veth0", 4, Some(s1.clone())));
        a.add(&ev("net:netif_rx", "veth0", 4, Some(s1)));
        let mut e = ev("net:net_dev_queue", "br0", 3, Some(s2));
        e.stack_id = 1;
        a.add(&e);
        a.add(&ev("net:net_dev_queue", "br0", 3, None));
        let r = TraceReport::new(&a, 1.0, Counters::default());
        assert_eq!(r.total_events(), 4);
        let events: Vec<(&str, u64)> = r.summary.events.iter().map(|e| (e.name.as_str(), e.count)).collect();
        assert_eq!(events, vec![("net:net_dev_queue", 2), ("net:netif_rx", 2)]);
        assert_eq!(r.event_count("net:netif_rx"), 2);
        assert_eq!(r.summary.devices.len(), 2);
        assert_eq!((r.summary.functions[0].name.as_str(), r.summary.functions[0].count), ("netif_rx", 3));
        // veth_xmit appears twice in one stack but counts once per event.
        assert_eq!(r.function_count("veth_xmit"), 2);
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
        let mut a = Aggregate::new(StackMode::Sample(4));
        let name: Arc<str> = Arc::from("net:netif_rx");
        let veth0 = Device { netns: 7, ifindex: 4, name: KernelStr::from("veth0") };
        let br0 = Device { netns: 7, ifindex: 3, name: KernelStr::from("br0") };
        let at = |dev, stack_id, stack| Counted {
            kind: 1,
            name: &name,
            dev: Some(dev),
            stack_id,
            stack,
            class: 0,
        };
        // veth0: 3 events sampled with s1, 1 with s2, 12 skipped; br0: 5 skipped, none sampled.
        a.add_counted(at(&veth0, 0, Some(&s1)), 3);
        a.add_counted(at(&veth0, 1, Some(&s2)), 1);
        a.add_counted(at(&veth0, STACK_SKIPPED, None), 12);
        a.add_counted(at(&br0, STACK_SKIPPED, None), 5);
        let r = TraceReport::new(&a, 1.0, Counters::default());
        assert_eq!(r.total_events(), 21);
        assert_eq!(r.event_count("net:netif_rx"), 21);
        assert_eq!(r.summary.stacks, Some(StackMode::Sample(4)));
        // veth0's 16 events: 12 with s1's functions, 4 with s2's; br0's stay stackless.
        assert_eq!(r.function_count("netif_rx"), 16);
        assert_eq!(r.function_count("veth_xmit"), 12);
        assert_eq!(r.function_count("br_dev_xmit"), 4);
        let run = a.to_run("bridge", 1.0, None, Counters::default());
        assert_eq!((run.stack_mode, run.stack_sample), (Some(StackMode::Sample(4)), Some(4)));
        assert_eq!(run.counts.iter().map(|c| c.count).sum::<u64>(), 21);
        assert_eq!(run.counts.iter().filter(|c| c.stack.is_none()).map(|c| c.count).sum::<u64>(), 5);
        // Without sampling nothing is estimated and the recording says so.
        let plain = Aggregate::new(StackMode::Every).to_run("bridge", 1.0, None, Counters::default());
        assert_eq!((plain.stack_mode, plain.stack_sample), (Some(StackMode::Every), None));
    }
}
