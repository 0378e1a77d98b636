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
    let mut decoder = Decoder::new();
    let mut ctx = Ctx {
        tracer: &mut *tracer,
        stacks: &mut stacks,
        agg: &mut agg,
        decoder: &mut decoder,
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
    finish(tracer, sinks, Finished { agg, counters, started, decode_errors, stack_misses: stacks.misses })
}

/// What a pipeline run ends with, before its report is made.
struct Finished {
    agg: Aggregate,
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
    report.decode_errors = f.decode_errors;
    report.stack_misses = f.stack_misses;
    report.probes = tracer.probes.clone();
    report.attach = tracer.attach.clone();
    report.cost = Some(tracer.cost());
    for s in sinks.iter_mut() {
        s.finish(&report)?;
    }
    Ok(Outcome { report, aggregate: f.agg })
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
    // After the counts: `sent` then covers at least every counted event.
    let counters = tracer.counters();
    finish(tracer, sinks, Finished { agg, counters, started, decode_errors: 0, stack_misses: stacks.misses })
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

struct Ctx<'a> {
    tracer: &'a mut Tracer,
    stacks: &'a mut StackCache,
    agg: &'a mut Aggregate,
    decoder: &'a mut Decoder,
    decode_errors: &'a mut u64,
}

fn drain(ring: &mut RingBuf<MapData>, ctx: &mut Ctx<'_>, sinks: &mut [&mut dyn Sink]) -> anyhow::Result<()> {
    while let Some(item) = ring.next() {
        let raw = match decode(&item) {
            Ok(Record::Event(e)) => e,
            Err(e) => {
                if *ctx.decode_errors == 0 {
                    log::warn!("undecodable record: {e}");
                }
                *ctx.decode_errors += 1;
                continue;
            }
        };
        drop(item);
        let ev = ctx.decoder.event(&raw, ctx.tracer.catalog.name(raw.kind), ctx.stacks.get(raw.stack_id));
        ctx.agg.add(&ev);
        for s in sinks.iter_mut() {
            s.event(&ev)?;
        }
    }
    Ok(())
}
