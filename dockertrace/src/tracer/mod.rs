//! The conductor: loads the eBPF object once, has each probe family configure and attach its
//! programs, and takes the maps the pipeline reads. What each family attaches, and how, lives
//! in [`crate::probes`].
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf, StackTraceMap},
    Btf, Ebpf,
};
use dockertrace_common::{
    counter,
    journey::{HopHist, HopKey, HOP_BUCKETS},
    AggKey, DevKey, NAME_LEN,
};

mod load;

use self::load::{fill_filter_maps, load, release_freed_memory, take_map};
pub use self::load::{preflight, preflight_root, RING_POLL};
pub use crate::trace_error::TraceError;
use crate::{
    counters::Counters,
    decode::{Decoder, KernelStr},
    filter::Filter,
    kernel::{
        btf::KernelBtf,
        kallsyms::Kallsyms,
        tracefs::{Tracefs, TracepointId},
    },
    probes::{
        datapath::{Datapath, ProbeStatus},
        tracepoints::{AttachType, Tracepoints},
        AttachEnv, AttachedProgram, Catalog, Family,
    },
    select::EventSelector,
    stacks::{StackMaps, StackMode},
};

/// What to trace.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    pub events: EventSelector,
    pub filter: Filter,
    /// When the kernel walks an event's stack.
    pub stacks: StackMode,
    /// Attach the datapath function probes (kprobe, else fentry).
    pub datapath: bool,
    /// Ring buffer size in bytes (a power of two multiple of the page size); None: built-in 4 MiB.
    pub ring_bytes: Option<u32>,
    /// Entries (and hash buckets) of the `STACKS` map; None: built-in 8192. Stacks whose bucket
    /// is taken go to `STACKS_SPILL`; the root tests shrink `STACKS` to make them.
    pub stack_map_entries: Option<u32>,
    /// Count events in the kernel (`AGG` map) instead of sending each through the ring buffer;
    /// read them with [`Tracer::aggregated`] at the end.
    pub aggregate: bool,
    /// How the tracepoints are attached (`--attach`).
    pub attach: AttachType,
    /// Follow packets (`--no-journeys` turns it off): packet ids, hops, headers.
    pub journeys: bool,
    /// `--pcap` / `--filter`: load the capture programs (frame copy, in-kernel filter).
    pub capture: Option<crate::capture::CaptureOptions>,
}

/// A loaded and attached tracer.
pub struct Tracer {
    ebpf: Ebpf,
    pub catalog: Catalog,
    /// Tracepoints attached and emitting events.
    pub tracepoints: Vec<TracepointId>,
    /// Tracepoints that failed to attach, with the reason.
    pub tracepoint_errors: Vec<(TracepointId, String)>,
    /// What each datapath probe became (empty without `--datapath`).
    pub probes: Vec<ProbeStatus>,
    /// How the tracepoints were attached (`tp_btf`, or each type with its count when mixed).
    pub attach: String,
    pub kallsyms: Arc<Kallsyms>,
    /// The running kernel's drop reasons (`enum skb_drop_reason`), by value.
    pub drop_reasons: Arc<crate::drops::DropReasons>,
    pub attach_time: Duration,
    maps: Option<RunMaps>,
    counters: PerCpuArray<MapData, u64>,
    /// Aggregate mode: counts per (kind, device, stack id), per CPU.
    agg: PerCpuHashMap<MapData, AggKey, u64>,
    /// Aggregate mode: device names.
    dev_names: BpfHashMap<MapData, DevKey, [u8; NAME_LEN]>,
    /// Aggregate mode with journeys: hop-latency histograms per (previous hop, hop), per CPU.
    hop_hist: PerCpuHashMap<MapData, HopKey, HopHist>,
    /// Whether the programs run in aggregate mode.
    pub aggregate: bool,
    /// When the kernel walks stacks.
    pub stacks: StackMode,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// The attached programs of every family.
    programs: Vec<AttachedProgram>,
    /// Per-program run-time statistics are on while this lives.
    stats: Option<crate::cost::StatsGuard>,
    /// The process's CPU time when loading began.
    cpu_at_start: Duration,
}

/// The maps the pipeline takes once: the ring buffer and the stack maps.
struct RunMaps {
    ring: Option<RingBuf<MapData>>,
    stacks: Option<StackMaps>,
}

/// One family's turn: configure its maps, attach its programs, note them for the cost report.
fn attach_family(
    family: &mut dyn Family,
    ebpf: &mut Ebpf,
    env: &AttachEnv<'_>,
    catalog: &mut Catalog,
    programs: &mut Vec<AttachedProgram>,
) -> Result<(), TraceError> {
    family.configure(ebpf)?;
    family.attach(ebpf, env, catalog)?;
    programs.extend(family.programs());
    Ok(())
}

impl Tracer {
    /// Loads the programs, configures them for `opts` and attaches them: plan every family
    /// (before the kernel is touched), load, configure, attach, take the maps.
    pub fn start(opts: &TraceOptions) -> Result<Tracer, TraceError> {
        preflight()?;
        let started = Instant::now();
        let cpu_at_start = crate::cost::process_cpu();
        let tracefs = Tracefs::locate()?;
        let (layout, mut tracepoints, drop_reasons) = {
            // dockertrace's own BTF reader: struct offsets, tracepoint prototypes and the
            // names of the drop reasons.
            let kbtf = KernelBtf::from_sys()?;
            (
                kbtf.kernel_layout()?,
                Tracepoints::plan(&tracefs, &kbtf, &opts.events, opts.attach, opts.journeys)?,
                Arc::new(crate::drops::DropReasons::from_btf(&kbtf)),
            )
        };
        let mut datapath = opts.datapath.then(|| Datapath::plan(opts.journeys));

        let mut catalog = Catalog::default();
        let mut programs = Vec::new();
        let (mut ebpf, logger) = {
            // aya's parse of the same BTF, for relocations and tp_btf; dropped once the
            // tracepoints are attached, before the symbols come in, so the peaks do not add.
            let btf = Btf::from_sys_fs().ok();
            let mut ebpf = load(opts, &layout, btf.as_ref())?;
            let logger = aya_log::EbpfLogger::init(&mut ebpf)
                .map_err(|e| log::debug!("eBPF logs unavailable: {e}"))
                .ok();
            fill_filter_maps(&mut ebpf, &opts.filter)?;
            load::fill_cbpf(&mut ebpf, opts.capture.as_ref())?;
            tracepoints.capture = opts.capture.is_some();
            let env = AttachEnv { btf: btf.as_ref(), kallsyms: None };
            attach_family(&mut tracepoints, &mut ebpf, &env, &mut catalog, &mut programs)?;
            (ebpf, logger)
        };
        // Loading peaks at tens of MiB (BTF, the object's sections), all free now: give them
        // back before the symbol table and the ring buffer's pages come in.
        release_freed_memory();
        let kallsyms = Arc::new(Kallsyms::load()?);
        if let Some(datapath) = datapath.as_mut() {
            let env = AttachEnv { btf: None, kallsyms: Some(&kallsyms) };
            attach_family(datapath, &mut ebpf, &env, &mut catalog, &mut programs)?;
        }

        let maps = RunMaps {
            ring: Some(RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?)?),
            stacks: Some(StackMaps {
                main: StackTraceMap::try_from(take_map(&mut ebpf, "STACKS")?)?,
                spill: StackTraceMap::try_from(take_map(&mut ebpf, "STACKS_SPILL")?)?,
            }),
        };
        Ok(Tracer {
            counters: PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?)?,
            agg: PerCpuHashMap::try_from(take_map(&mut ebpf, "AGG")?)?,
            dev_names: BpfHashMap::try_from(take_map(&mut ebpf, "DEV_NAMES")?)?,
            hop_hist: PerCpuHashMap::try_from(take_map(&mut ebpf, "HOP_HIST")?)?,
            ebpf,
            catalog,
            attach: tracepoints.attach_summary(),
            tracepoints: tracepoints.attached,
            tracepoint_errors: tracepoints.errors,
            probes: datapath.map(|d| d.status).unwrap_or_default(),
            kallsyms,
            drop_reasons,
            attach_time: started.elapsed(),
            maps: Some(maps),
            aggregate: opts.aggregate,
            stacks: opts.stacks.normalized(),
            logger,
            programs,
            stats: None,
            cpu_at_start,
        })
    }

    /// Turns on the kernel's per-program run-time statistics from now on (they cost a little on
    /// every program run, so they are off unless asked for); see [`Tracer::cost`].
    pub fn enable_stats(&mut self) -> Result<(), String> {
        if self.stats.is_none() {
            self.stats = Some(crate::cost::StatsGuard::enable()?);
        }
        Ok(())
    }

    /// What tracing has cost so far: attach time, this process's CPU time since loading began,
    /// its peak memory, and (with [`Tracer::enable_stats`]) each program's runs and run time.
    pub fn cost(&self) -> crate::cost::TracerCost {
        let mut programs = Vec::new();
        if self.stats.is_some() {
            for p in &self.programs {
                let Some(info) = self.ebpf.program(&p.program).and_then(|p| p.info().ok()) else { continue };
                programs.push(crate::cost::ProgramCost {
                    program: p.label.clone(),
                    emits: p.emits,
                    runs: info.run_count(),
                    run_ns: info.run_time().as_nanos() as u64,
                });
            }
        }
        crate::cost::TracerCost {
            attach_s: self.attach_time.as_secs_f64(),
            cpu_s: crate::cost::process_cpu().saturating_sub(self.cpu_at_start).as_secs_f64(),
            peak_rss_kib: crate::cost::peak_rss_kib(),
            programs,
        }
    }

    /// The ring buffer, for the pipeline's reader (taken once).
    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.maps.as_mut().and_then(|m| m.ring.take())
    }

    /// The stack maps, for symbolization (taken once).
    pub fn take_stacks(&mut self) -> Option<StackMaps> {
        self.maps.as_mut().and_then(|m| m.stacks.take())
    }

    /// Current sums of the kernel counters.
    pub fn counters(&self) -> Counters {
        let mut sums = vec![0u64; counter::COUNT as usize];
        for (i, sum) in sums.iter_mut().enumerate() {
            if let Ok(values) = self.counters.get(&(i as u32), 0) {
                *sum = values.iter().sum();
            }
        }
        Counters::from_slots(&sums)
    }

    /// Aggregate mode: the in-kernel counts per (kind, device, stack id), summed over the CPUs.
    /// Can be read while the programs run (entries are only ever added to).
    pub fn aggregated(&self) -> Result<Vec<(AggKey, u64)>, TraceError> {
        let mut out = Vec::new();
        for item in self.agg.iter() {
            let (k, per_cpu) = item?;
            out.push((k, per_cpu.iter().sum()));
        }
        Ok(out)
    }

    /// Aggregate mode with journeys: the kernel's log2 histograms of the time between two
    /// consecutive hops of a journey, per (previous hop, hop, path class), summed over the CPUs
    /// (bucket `i`: deltas in `[2^(i-1), 2^i)` ns, see `dockertrace_common::journey::hop_bucket`).
    pub fn hop_pairs(&self) -> Result<Vec<(HopKey, [u64; HOP_BUCKETS])>, TraceError> {
        let mut out = Vec::new();
        for item in self.hop_hist.iter() {
            let (k, per_cpu) = item?;
            let mut sum = [0u64; HOP_BUCKETS];
            for h in per_cpu.iter() {
                for (s, &b) in sum.iter_mut().zip(h.buckets.iter()) {
                    *s += u64::from(b);
                }
            }
            out.push((k, sum));
        }
        Ok(out)
    }

    /// Aggregate mode: the names of the devices the counted events were seen on, by
    /// (netns, ifindex).
    pub fn aggregated_dev_names(&self) -> Result<HashMap<DevKey, KernelStr>, TraceError> {
        let mut decoder = Decoder::new();
        let mut out = HashMap::new();
        for item in self.dev_names.iter() {
            let (k, name) = item?;
            out.insert(k, decoder.device_name(&name));
        }
        Ok(out)
    }

    /// Forwards pending eBPF log lines to the `log` crate.
    pub fn flush_logs(&mut self) {
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
    }

    /// Detaches everything (also happens on drop).
    pub fn stop(self) {
        drop(self.ebpf);
    }
}
