//! The event pipeline: ring buffer → decode → enrich (name, stack) → aggregate → sinks.
//!
//! In aggregate mode ([`crate::tracer::TraceOptions::aggregate`]) the kernel counts the events
//! itself: nothing is streamed, sinks only get ticks, and the counts are read once at the end
//! into the same [`Aggregate`].
//!
//! New outputs (a TUI, per-packet journeys) plug in as [`Sink`]s; new record kinds are
//! decoded in [`crate::decode`].
use std::{
    future::Future,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use dockertrace_common::DevKey;
use tokio::io::unix::AsyncFd;

use crate::{
    aggregate::{Aggregate, Counted},
    counters::Counters,
    decode::{decode, Decoder, Device, KernelStr, Record, TracedEvent},
    journeys::{JourneyReport, Journeys, Target},
    packet_log::PacketLog,
    stacks::StackCache,
    summary::TraceReport,
    tracer::Tracer,
};

/// Progress, handed to sinks about once a second.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub elapsed: Duration,
    pub events: u64,
    pub counters: Counters,
}

/// A consumer of the event stream.
pub trait Sink {
    fn event(&mut self, ev: &TracedEvent) -> anyhow::Result<()>;
    /// Called about once a second.
    fn tick(&mut self, _p: &Progress) -> anyhow::Result<()> {
        Ok(())
    }
    /// Called once at the end with the final report.
    fn finish(&mut self, _r: &TraceReport) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Keeps every event in memory (tests, future TUI).
#[derive(Default)]
pub struct MemorySink {
    pub events: Vec<TracedEvent>,
}

impl Sink for MemorySink {
    fn event(&mut self, ev: &TracedEvent) -> anyhow::Result<()> {
        self.events.push(ev.clone());
        Ok(())
    }
}

/// What a pipeline run produced.
pub struct Outcome {
    /// The end-of-run summary.
    pub report: TraceReport,
    /// The counts behind it, for recordings and reports.
    pub aggregate: Aggregate,
    /// The hop ladders of the packets' journeys (None without journeys).
    pub journeys: Option<JourneyReport>,
    /// The TCP data packets hop by hop (None without journeys, in aggregate mode, or when
    /// there was none).
    pub packets: Option<PacketLog>,
}

/// Reads the tracer's events until `stop` resolves, then drains what is left and returns the
/// report. Sinks see every event in order (in aggregate mode: none, only ticks).
pub async fn run(
    tracer: &mut Tracer,
    sinks: &mut [&mut dyn Sink],
    stop: impl Future<Output = ()>,
) -> anyhow::Result<TraceReport> {
    Ok(run_full(tracer, sinks, stop).await?.report)
}

/// [`run`], also returning the aggregate.
pub async fn run_full(
    tracer: &mut Tracer,
    sinks: &mut [&mut dyn Sink],
    stop: impl Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    run_following(tracer, sinks, stop, Target::default()).await
}

/// [`run_full`], with the journeys' directions told relative to `target` (the workload's
/// server).
pub async fn run_following(
    tracer: &mut Tracer,
    sinks: &mut [&mut dyn Sink],
    stop: impl Future<Output = ()>,
    target: Target,
) -> anyhow::Result<Outcome> {
    if tracer.aggregate {
        return run_aggregated(tracer, sinks, stop).await;
    }
    let ring = tracer.take_ring().ok_or_else(|| anyhow::anyhow!("the ring buffer was already taken"))?;
    // SAFETY: the AsyncFd owns the ring buffer, so its fd stays open while registered.
    let mut ring = unsafe { AsyncFd::register(ring) }.map_err(std::io::Error::from)?;
    let mut stacks = StackCache::new(tracer.take_stacks(), tracer.kallsyms.clone());
    let mut agg = Aggregate::new(tracer.stacks);
    let mut decode_errors = 0u64;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The programs submit without waking us until the ring fills up (batched wakeups): poll.
    let mut poll = tokio::time::interval(crate::tracer::RING_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let mut decoder = Decoder::with_drops(crate::drops::DropDecoder::new(
        tracer.drop_reasons.clone(),
        Some(tracer.kallsyms.clone()),
    ));
    let mut last_hops = LastHops::default();
    let mut clones = Clones::default();
    let mut journeys = Journeys::new(target);
    let mut ctx = Ctx {
        tracer: &mut *tracer,
        stacks: &mut stacks,
        agg: &mut agg,
        journeys: &mut journeys,
        decoder: &mut decoder,
        last_hops: &mut last_hops,
        clones: &mut clones,
        decode_errors: &mut decode_errors,
    };
    let counters = loop {
        tokio::select! {
            biased;
            _ = &mut stop => {
                // Whatever the kernel wrote before we stopped is still ours.
                drain(ring.get_mut(), &mut ctx, sinks)?;
                ctx.tracer.flush_logs();
                break ctx.tracer.counters();
            }
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &mut ctx, sinks)?;
                guard.clear_ready();
            }
            _ = poll.tick() => {
                drain(ring.get_mut(), &mut ctx, sinks)?;
            }
            _ = tick.tick() => {
                ctx.tracer.flush_logs();
                let p = Progress { elapsed: started.elapsed(), events: ctx.agg.total(), counters: ctx.tracer.counters() };
                for s in sinks.iter_mut() {
                    s.tick(&p)?;
                }
            }
        }
    };
    let (journeys, packets) = journeys.finish_with_log();
    finish(
        tracer,
        sinks,
        Finished { agg, journeys, packets, counters, started, decode_errors, stack_misses: stacks.misses },
    )
}

/// What a pipeline run ends with, before its report is made.
struct Finished {
    agg: Aggregate,
    journeys: Option<JourneyReport>,
    packets: Option<PacketLog>,
    /// The kernel's counters, read after the last event was taken.
    counters: Counters,
    started: Instant,
    decode_errors: u64,
    stack_misses: u64,
}

/// The one finishing step of both modes: the report from the aggregate and the tracer's live
/// facts, handed to every sink.
fn finish(tracer: &Tracer, sinks: &mut [&mut dyn Sink], f: Finished) -> anyhow::Result<Outcome> {
    let mut report = TraceReport::new(&f.agg, f.started.elapsed().as_secs_f64(), f.counters);
    report.summary.journeys = f.journeys.clone();
    report.decode_errors = f.decode_errors;
    report.stack_misses = f.stack_misses;
    report.probes = tracer.probes.clone();
    report.attach = tracer.attach.clone();
    report.cost = Some(tracer.cost());
    for s in sinks.iter_mut() {
        s.finish(&report)?;
    }
    Ok(Outcome { report, aggregate: f.agg, journeys: f.journeys, packets: f.packets })
}

/// [`run_full`] in aggregate mode: ticks until `stop` resolves, then reads the kernel's counts
/// (`AGG`, `DEV_NAMES`) into an [`Aggregate`], symbolizing each stack id once.
async fn run_aggregated(
    tracer: &mut Tracer,
    sinks: &mut [&mut dyn Sink],
    stop: impl Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    let mut stacks = StackCache::new(tracer.take_stacks(), tracer.kallsyms.clone());
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = tick.tick() => {
                tracer.flush_logs();
                let counters = tracer.counters();
                // Counted events are "sent" in this mode.
                let p = Progress { elapsed: started.elapsed(), events: counters.sent, counters };
                for s in sinks.iter_mut() {
                    s.tick(&p)?;
                }
            }
        }
    }
    tracer.flush_logs();
    let agg = collect_aggregated(tracer, &mut stacks)?;
    let journeys = collect_hop_pairs(tracer)?;
    // After the counts: `sent` then covers at least every counted event.
    let counters = tracer.counters();
    finish(
        tracer,
        sinks,
        Finished {
            agg,
            journeys,
            packets: None,
            counters,
            started,
            decode_errors: 0,
            stack_misses: stacks.misses,
        },
    )
}

/// Reads the in-kernel counts into an [`Aggregate`]. Keys with netns and ifindex 0 are events
/// whose device was unknown, as in streaming mode.
fn collect_aggregated(tracer: &Tracer, stacks: &mut StackCache) -> anyhow::Result<Aggregate> {
    let counts = tracer.aggregated()?;
    let names = tracer.aggregated_dev_names()?;
    let mut agg = Aggregate::new(tracer.stacks);
    for (k, n) in counts {
        let key = DevKey { netns: k.netns, ifindex: k.ifindex };
        let known = (k.netns, k.ifindex) != (0, 0) || names.contains_key(&key);
        // A device without a name: DEV_NAMES was full when it was first seen.
        let dev = known.then(|| Device {
            netns: k.netns,
            ifindex: k.ifindex,
            name: names.get(&key).cloned().unwrap_or_else(|| KernelStr::from("")),
        });
        let stack = stacks.get(k.stack_id);
        let name = tracer.catalog.name(k.kind);
        agg.add_counted(
            Counted {
                kind: k.kind,
                name: &name,
                dev: dev.as_ref(),
                stack_id: k.stack_id,
                stack: stack.as_ref(),
                class: k.class,
            },
            n,
        );
    }
    Ok(agg)
}

/// Aggregate mode: the approximate hop ladders of the kernel's hop-pair histograms
/// (`HOP_HIST`; None when it is empty: journeys off).
fn collect_hop_pairs(tracer: &Tracer) -> anyhow::Result<Option<JourneyReport>> {
    let pairs = tracer.hop_pairs()?;
    let names = tracer.aggregated_dev_names()?;
    let event = |kind: u32| tracer.catalog.name(kind).to_string();
    let dev = |netns: u32, ifindex: u32| {
        names.get(&DevKey { netns, ifindex }).map(|n| n.to_lossy().into_owned()).unwrap_or_default()
    };
    Ok(JourneyReport::from_hop_pairs(&pairs, &event, &dev))
}

struct Ctx<'a> {
    tracer: &'a mut Tracer,
    stacks: &'a mut StackCache,
    agg: &'a mut Aggregate,
    journeys: &'a mut Journeys,
    decoder: &'a mut Decoder,
    last_hops: &'a mut LastHops,
    clones: &'a mut Clones,
    decode_errors: &'a mut u64,
}

fn drain(ring: &mut RingBuf<MapData>, ctx: &mut Ctx<'_>, sinks: &mut [&mut dyn Sink]) -> anyhow::Result<()> {
    while let Some(item) = ring.next() {
        let (raw, frame) = match decode(&item) {
            Ok(Record::Event(e)) => (e, None),
            Ok(Record::EventCap(e, frame)) => (e, frame),
            Err(e) => {
                if *ctx.decode_errors == 0 {
                    log::warn!("undecodable record: {e}");
                }
                *ctx.decode_errors += 1;
                continue;
            }
        };
        drop(item);
        let mut ev = ctx.decoder.event(&raw, ctx.tracer.catalog.name(raw.kind), ctx.stacks.get(raw.stack_id));
        ev.frame = frame;
        ctx.last_hops.note(&mut ev);
        ctx.clones.note(&mut ev);
        ctx.agg.add(&ev);
        ctx.journeys.add(&ev);
        for s in sinks.iter_mut() {
            s.event(&ev)?;
        }
    }
    Ok(())
}

/// Remembers the device of each journey's latest hop, so that a drop without a device can say
/// where its packet was last seen. Bounded: starts over past `MAX` journeys. Noted on every
/// hop, so keyed with the fast hasher like the decoder's per-event maps.
#[derive(Debug, Default)]
struct LastHops {
    devs: foldhash::HashMap<u64, Device>,
}

impl LastHops {
    const MAX: usize = 1 << 16;

    /// Notes `ev`'s device for its journey; a drop gets its journey's previous device.
    fn note(&mut self, ev: &mut TracedEvent) {
        let Some(hop) = ev.hop else { return };
        if ev.drop.is_some() {
            ev.last_hop = self.devs.remove(&hop.packet);
            return;
        }
        if hop.end {
            self.devs.remove(&hop.packet);
            return;
        }
        if let Some(dev) = &ev.dev {
            if self.devs.len() >= Self::MAX {
                self.devs.clear();
            }
            self.devs.insert(hop.packet, dev.clone());
        }
    }
}

/// Links clones to their parents: a `kretprobe:skb_clone` event names the clone's skb and the
/// parent's journey; the next journey that starts on that skb is the clone's (its first event
/// gets `parent`). Bounded: starts over past `MAX` clones not yet seen.
#[derive(Debug, Default)]
struct Clones {
    parents: foldhash::HashMap<u64, u64>,
}

impl Clones {
    const MAX: usize = 1 << 12;

    fn note(&mut self, ev: &mut TracedEvent) {
        if ev.is_clone_link() {
            if let (Some(skb), Some(r)) = (ev.skb, ev.ret) {
                if self.parents.len() >= Self::MAX {
                    self.parents.clear();
                }
                self.parents.insert(skb, r.packet);
            }
            return;
        }
        if self.parents.is_empty() {
            return;
        }
        if let (Some(hop), Some(skb)) = (ev.hop, ev.skb) {
            if hop.hop == 0 {
                ev.parent = self.parents.remove(&skb);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Hop, Return};
    use dockertrace_common::datapath::{CLONE_INDEX, RET_BASE};

    fn hop(packet: u64, hop: u16) -> Hop {
        Hop { packet, hop, delta_ns: 0, reused: false, evicted: false, end: false }
    }

    #[test]
    fn a_clone_journey_names_its_parent() {
        let mut clones = Clones::default();
        let mut link = TracedEvent {
            kind: RET_BASE + CLONE_INDEX,
            skb: Some(0xc10e),
            ret: Some(Return { packet: 7, hop: 2, duration_ns: 300 }),
            ..TracedEvent::named("kretprobe:skb_clone")
        };
        assert!(link.is_clone_link());
        clones.note(&mut link);
        // Another skb's journey, and a later hop on the clone's address, are not the clone's.
        let mut other =
            TracedEvent { skb: Some(0xbeef), hop: Some(hop(8, 0)), ..TracedEvent::named("net:netif_rx") };
        clones.note(&mut other);
        assert_eq!(other.parent, None);
        let mut later =
            TracedEvent { skb: Some(0xc10e), hop: Some(hop(9, 1)), ..TracedEvent::named("net:netif_rx") };
        clones.note(&mut later);
        assert_eq!(later.parent, None);
        let mut first = TracedEvent {
            skb: Some(0xc10e),
            hop: Some(hop(9, 0)),
            ..TracedEvent::named("net:net_dev_queue")
        };
        clones.note(&mut first);
        assert_eq!(first.parent, Some(7));
        // Linked once.
        let mut again = TracedEvent {
            skb: Some(0xc10e),
            hop: Some(hop(10, 0)),
            ..TracedEvent::named("net:net_dev_queue")
        };
        clones.note(&mut again);
        assert_eq!(again.parent, None);
    }
}
