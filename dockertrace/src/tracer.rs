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
    Btf, Ebpf, EbpfLoader,
};
use dockertrace_common::{
    counter, AggKey, DevKey, KernelLayout, Settings, NAME_LEN, STACKS_ADAPTIVE, STACKS_EVERY, STACKS_NONE,
    STACKS_SAMPLE,
};

use crate::{
    counters::Counters,
    decode::{Decoder, KernelStr},
    errors::chain,
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
    stacks::{StackMaps, StackMode, ADAPT_FIRST, ADAPT_TAIL, ADAPT_WINDOW},
};

/// The eBPF object built by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dockertrace"));

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
}

/// Errors a user can cause or meet on a kernel that lacks something. Each prints as one line.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(
        "dockertrace needs root (to load eBPF programs and create namespaces and links): run it with sudo"
    )]
    NotRoot,
    #[error("this dockertrace binary was built without its eBPF programs (AYA_BUILD_SKIP=1); rebuild it with `cargo xtask build`")]
    NoObject,
    #[error(transparent)]
    Tracefs(#[from] crate::kernel::tracefs::TracefsError),
    #[error(transparent)]
    Btf(#[from] crate::kernel::btf::BtfError),
    #[error(transparent)]
    Kallsyms(#[from] crate::kernel::kallsyms::KallsymsError),
    #[error("no tracepoint matches --events `{0}` on this kernel")]
    NoEvents(String),
    #[error("--events `{spec}` selects {count} tracepoints (with the entry/exit partners they need); at most {max} can be traced at once")]
    TooManyEvents { spec: String, count: usize, max: u32 },
    #[error("the kernel refused to load dockertrace's eBPF programs: {0}")]
    Load(String),
    #[error("no tracepoint could be attached (first error: {0})")]
    NothingAttached(String),
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("eBPF map error: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("internal error: {0}")]
    Internal(&'static str),
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
    pub attach_time: Duration,
    maps: Option<RunMaps>,
    counters: PerCpuArray<MapData, u64>,
    /// Aggregate mode: counts per (kind, device, stack id), per CPU.
    agg: PerCpuHashMap<MapData, AggKey, u64>,
    /// Aggregate mode: device names.
    dev_names: BpfHashMap<MapData, DevKey, [u8; NAME_LEN]>,
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

/// Checks the preconditions that have a clear fix, before touching the kernel.
pub fn preflight() -> Result<(), TraceError> {
    if EBPF_OBJECT.is_empty() {
        return Err(TraceError::NoObject);
    }
    preflight_root()
}

/// Root is needed to load programs and to create namespaces, links and containers.
pub fn preflight_root() -> Result<(), TraceError> {
    // SAFETY: trivial libc call.
    if unsafe { libc::geteuid() } != 0 {
        return Err(TraceError::NotRoot);
    }
    Ok(())
}

/// Hands the heap that loading freed (the parsed kernel BTF, the object file's sections: tens
/// of MiB) back to the system, so the ring buffer's pages do not stack on top of it.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free pages of glibc's heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The ring buffer's size in the eBPF object (`EVENTS`), used when no size is asked for.
const DEFAULT_RING_BYTES: u32 = 4 << 20;

/// How often the reader drains the ring buffer without being woken. Records wait at most this
/// long; the programs force a wakeup before a quarter of the ring is used (see [`wake_bytes`]).
pub const RING_POLL: Duration = Duration::from_millis(20);

/// Bytes waiting in the ring buffer at which the programs wake the reader: a quarter of it, so
/// that a burst between two polls has three quarters left before anything is lost.
fn wake_bytes(ring_bytes: u32) -> u32 {
    (ring_bytes / 4).max(1)
}

/// The system page size (the smallest ring buffer the kernel accepts).
fn page_size() -> u32 {
    // SAFETY: trivial libc call.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(n).ok().filter(|n| n.is_power_of_two()).unwrap_or(4096)
}

fn raise_memlock() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        // Kernels since 5.11 account BPF memory to the memory cgroup instead.
        log::debug!("setrlimit(RLIMIT_MEMLOCK) failed: {}", std::io::Error::last_os_error());
    }
}

/// The programs' read-only settings for `opts`.
fn settings(opts: &TraceOptions) -> Settings {
    Settings {
        filters: opts.filter.flags(),
        stacks: match opts.stacks {
            StackMode::Sample(n) => n.max(1),
            StackMode::Adaptive => ADAPT_TAIL,
            _ => 1,
        },
        port: opts.filter.port.unwrap_or(0),
        aggregate: u8::from(opts.aggregate),
        stack_mode: match opts.stacks.normalized() {
            StackMode::None => STACKS_NONE,
            StackMode::Every => STACKS_EVERY,
            StackMode::Sample(_) => STACKS_SAMPLE,
            StackMode::Adaptive => STACKS_ADAPTIVE,
        },
        wake_bytes: wake_bytes(opts.ring_bytes.unwrap_or(DEFAULT_RING_BYTES)),
        adapt_first: ADAPT_FIRST,
        _pad: 0,
        adapt_window_ns: ADAPT_WINDOW.as_nanos() as u64,
    }
}

/// Loads the object with its globals and map sizes, relocating against `btf` (the parse the
/// tracepoints' `tp_btf` programs load against too: tens of MiB, parsed once).
fn load(opts: &TraceOptions, layout: &KernelLayout, btf: Option<&Btf>) -> Result<Ebpf, TraceError> {
    raise_memlock();
    let settings = settings(opts);
    let mut loader = EbpfLoader::new();
    loader.btf(btf);
    loader.override_global("SETTINGS", &settings, true).override_global("LAYOUT", layout, true);
    if opts.aggregate {
        // Nothing goes through the ring buffer: keep it as small as the kernel allows.
        loader.map_max_entries("EVENTS", page_size());
    } else if let Some(bytes) = opts.ring_bytes {
        loader.map_max_entries("EVENTS", bytes);
    }
    if let Some(entries) = opts.stack_map_entries {
        loader.map_max_entries("STACKS", entries.max(1));
    }
    loader.load(EBPF_OBJECT).map_err(|e| TraceError::Load(chain(&e)))
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

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, TraceError> {
    ebpf.take_map(name).ok_or(TraceError::MissingMap(name))
}

impl Tracer {
    /// Loads the programs, configures them for `opts` and attaches them: plan every family
    /// (before the kernel is touched), load, configure, attach, take the maps.
    pub fn start(opts: &TraceOptions) -> Result<Tracer, TraceError> {
        preflight()?;
        let started = Instant::now();
        let cpu_at_start = crate::cost::process_cpu();
        let tracefs = Tracefs::locate()?;
        let (layout, mut tracepoints) = {
            // dockertrace's own BTF reader: struct offsets and tracepoint prototypes.
            let kbtf = KernelBtf::from_sys()?;
            (kbtf.kernel_layout()?, Tracepoints::plan(&tracefs, &kbtf, &opts.events, opts.attach)?)
        };
        let mut datapath = opts.datapath.then(Datapath::plan);

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
            ebpf,
            catalog,
            attach: tracepoints.attach_summary(),
            tracepoints: tracepoints.attached,
            tracepoint_errors: tracepoints.errors,
            probes: datapath.map(|d| d.status).unwrap_or_default(),
            kallsyms,
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

/// Writes the in-kernel filters (netns, devices, pids) the programs check before any work.
fn fill_filter_maps(ebpf: &mut Ebpf, filter: &Filter) -> Result<(), TraceError> {
    fn fill<'k, K: aya::Pod>(
        ebpf: &mut Ebpf,
        name: &'static str,
        keys: impl IntoIterator<Item = &'k K>,
    ) -> Result<(), TraceError> {
        let mut m: BpfHashMap<_, K, u8> =
            BpfHashMap::try_from(ebpf.map_mut(name).ok_or(TraceError::MissingMap(name))?)?;
        for k in keys {
            m.insert(k, 1, 0)?;
        }
        Ok(())
    }
    fill(ebpf, "FILTER_NETNS", &filter.netns)?;
    fill(ebpf, "FILTER_DEVS", &filter.devs)?;
    fill(ebpf, "FILTER_PIDS", &filter.pids)
}
