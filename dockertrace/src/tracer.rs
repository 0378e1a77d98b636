//! Loading, configuring and attaching the eBPF programs.
use std::{
    collections::HashMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf, StackTraceMap},
    programs::{FEntry, KProbe, ProgramError, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use dockertrace_common::{
    counter, AggKey, DevKey, Settings, TpConfig, DATAPATH_FUNCS, NAME_LEN, NO_FIELD, PAIR_GET, PAIR_NONE,
    PAIR_POP, PAIR_PUSH, PAIR_SET, PROBE_BASE, TP_SLOTS,
};

use crate::{
    filter::Filter,
    kernel::{
        btf::KernelBtf,
        kallsyms::Kallsyms,
        tracefs::{TpFormat, Tracefs, TracepointId},
    },
    select::EventSelector,
    stacks::StackMaps,
};

/// The eBPF object built by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dockertrace"));

/// What to trace.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    pub events: EventSelector,
    pub filter: Filter,
    /// Collect kernel stack ids.
    pub stacks: bool,
    /// With stacks: take one for 1 in N events on average (1: every event). The others are
    /// counted without a stack and stand for the sampled stacks of their kind and device.
    pub stack_sample: u32,
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
}

/// How a datapath probe ended up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeState {
    Kprobe,
    Fentry,
    /// The function is not in the running kernel (e.g. its module is not loaded).
    NotPresent,
    /// Present, but neither kprobe nor fentry could attach; the reason says why.
    Unavailable,
}

/// One datapath probe's outcome, reported to the user.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeStatus {
    pub function: &'static str,
    pub state: ProbeState,
    pub reason: String,
}

impl std::fmt::Display for ProbeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.state {
            ProbeState::Kprobe => write!(f, "{}: kprobe", self.function),
            ProbeState::Fentry => write!(f, "{}: fentry ({})", self.function, self.reason),
            ProbeState::NotPresent | ProbeState::Unavailable => {
                write!(f, "{}: not traced: {}", self.function, self.reason)
            }
        }
    }
}

/// Event names by kind.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    names: HashMap<u32, Arc<str>>,
}

impl Catalog {
    pub fn insert(&mut self, kind: u32, name: &str) {
        self.names.insert(kind, Arc::from(name));
    }

    /// The event's name (`net:net_dev_xmit`, `kprobe:veth_xmit`), or `unknown:<kind>`.
    pub fn name(&self, kind: u32) -> Arc<str> {
        self.names.get(&kind).cloned().unwrap_or_else(|| Arc::from(format!("unknown:{kind}")))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Sums of the per-CPU kernel counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub seen: u64,
    pub filtered: u64,
    pub sent: u64,
    pub ring_full: u64,
    pub stack_error: u64,
    pub stack_collision: u64,
    pub no_config: u64,
    pub read_error: u64,
    pub pair_miss: u64,
    /// Aggregate mode: events not counted because the in-kernel aggregation map was full.
    /// (Absent from recordings made before aggregate mode existed.)
    #[serde(default)]
    pub agg_full: u64,
    /// Exit events that reused their entry event's stack instead of walking the stack again.
    /// (Absent from recordings made before stacks were shared.)
    #[serde(default)]
    pub stack_shared: u64,
}

impl Counters {
    /// Events that were meant for userspace and never arrived (ring buffer full, or, in
    /// aggregate mode, aggregation map full).
    pub fn lost(&self) -> u64 {
        self.ring_full + self.agg_full
    }

    fn from_slots(v: &[u64]) -> Self {
        let g = |i: u32| v.get(i as usize).copied().unwrap_or(0);
        Counters {
            seen: g(counter::SEEN),
            filtered: g(counter::FILTERED),
            sent: g(counter::SENT),
            ring_full: g(counter::RING_FULL),
            stack_error: g(counter::STACK_ERROR),
            stack_collision: g(counter::STACK_COLLISION),
            no_config: g(counter::NO_CONFIG),
            read_error: g(counter::READ_ERROR),
            pair_miss: g(counter::PAIR_MISS),
            agg_full: g(counter::AGG_FULL),
            stack_shared: g(counter::STACK_SHARED),
        }
    }
}

/// Entry/exit tracepoint pairs whose exit event learns its device from the entry event on the
/// same CPU: (category, entry, exit, slot, batch). Batch pairs fire the entry once per skb and
/// the exit once per batch.
const PAIRS: &[(&str, &str, &str, u8, bool)] = &[
    ("net", "net_dev_start_xmit", "net_dev_xmit", 1, false),
    ("net", "netif_receive_skb_entry", "netif_receive_skb_exit", 2, false),
    ("net", "netif_rx_entry", "netif_rx_exit", 3, false),
    ("net", "napi_gro_receive_entry", "napi_gro_receive_exit", 4, false),
    ("net", "napi_gro_frags_entry", "napi_gro_frags_exit", 5, false),
    ("net", "netif_receive_skb_list_entry", "netif_receive_skb_list_exit", 6, true),
    ("net", "netif_rx_ni_entry", "netif_rx_ni_exit", 7, false),
];

/// A tracepoint to attach and how the program reads it.
#[derive(Debug, Clone)]
pub struct PlannedTracepoint {
    pub id: TracepointId,
    pub format_id: u32,
    pub config: TpConfig,
}

/// Builds the program configuration of one tracepoint from its format.
pub fn tp_config(format: &TpFormat, emit: bool, slot: u8, role: u8) -> TpConfig {
    let off = |name: &str, ok: &dyn Fn(&crate::kernel::tracefs::TpField) -> bool| {
        format.field(name).filter(|f| ok(f)).and_then(|f| u16::try_from(f.offset).ok()).unwrap_or(NO_FIELD)
    };
    TpConfig {
        kind: format.id,
        skbaddr_off: off("skbaddr", &|f| f.size == 8 && !f.is_data_loc()),
        len_off: off("len", &|f| f.size == 4 && !f.is_data_loc()),
        name_off: off("name", &|f| f.is_data_loc()),
        emit: u8::from(emit),
        pair_slot: slot,
        pair_role: role,
        _pad: [0; 3],
    }
}

/// Chooses the tracepoints to attach: the selected ones, plus the pairing partners they need
/// (attached with `emit = 0`). Exits come first so that no entry is pushed without its pop.
pub fn plan(
    tracefs: &Tracefs,
    available: &[TracepointId],
    selected: &[&TracepointId],
) -> Result<Vec<PlannedTracepoint>, TraceError> {
    let mut wanted: Vec<(TracepointId, bool)> = selected.iter().map(|t| ((*t).clone(), true)).collect();
    for &(cat, entry, exit, _, _) in PAIRS {
        let has = |n: &str| wanted.iter().any(|(t, _)| t.category == cat && t.name == n);
        let avail = |n: &str| available.iter().find(|t| t.category == cat && t.name == n).cloned();
        if has(entry) && !has(exit) {
            if let Some(t) = avail(exit) {
                wanted.push((t, false));
            }
        } else if has(exit) && !has(entry) {
            if let Some(t) = avail(entry) {
                wanted.push((t, false));
            }
        }
    }
    let mut out = Vec::with_capacity(wanted.len());
    for (id, emit) in wanted {
        let format = tracefs.format(&id)?;
        let (slot, role) = PAIRS
            .iter()
            .find_map(|&(cat, entry, exit, slot, batch)| {
                if id.category != cat {
                    None
                } else if id.name == entry {
                    Some((slot, if batch { PAIR_SET } else { PAIR_PUSH }))
                } else if id.name == exit {
                    Some((slot, if batch { PAIR_GET } else { PAIR_POP }))
                } else {
                    None
                }
            })
            .unwrap_or((0, PAIR_NONE));
        out.push(PlannedTracepoint {
            format_id: format.id,
            config: tp_config(&format, emit, slot, role),
            id,
        });
    }
    let rank = |p: &PlannedTracepoint| match p.config.pair_role {
        PAIR_POP | PAIR_GET => 0,
        PAIR_NONE => 1,
        _ => 2,
    };
    out.sort_by_key(|p| (rank(p), p.id.clone()));
    Ok(out)
}

/// A loaded and attached tracer.
pub struct Tracer {
    ebpf: Ebpf,
    pub catalog: Catalog,
    /// Tracepoints attached and emitting events.
    pub tracepoints: Vec<TracepointId>,
    /// Tracepoints that failed to attach, with the reason.
    pub tracepoint_errors: Vec<(TracepointId, String)>,
    pub probes: Vec<ProbeStatus>,
    pub kallsyms: Arc<Kallsyms>,
    pub attach_time: Duration,
    ring: Option<RingBuf<MapData>>,
    stacks: Option<StackMaps>,
    counters: PerCpuArray<MapData, u64>,
    /// Aggregate mode: counts per (kind, device, stack id), per CPU.
    agg: PerCpuHashMap<MapData, AggKey, u64>,
    /// Aggregate mode: device names.
    dev_names: BpfHashMap<MapData, DevKey, [u8; NAME_LEN]>,
    /// Whether the programs run in aggregate mode.
    pub aggregate: bool,
    /// 1 in how many events takes a stack (1: every event, or stacks are off).
    pub stack_sample: u32,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// The attached programs: (what they are attached to, program name, reports events).
    programs: Vec<(String, String, bool)>,
    /// Per-program run-time statistics are on while this lives.
    stats: Option<crate::cost::StatsGuard>,
    /// The process's CPU time when loading began.
    cpu_at_start: Duration,
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

fn is_eperm(e: &ProgramError) -> bool {
    match e {
        ProgramError::LoadError { io_error, .. } => io_error.raw_os_error() == Some(libc::EPERM),
        ProgramError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::EPERM),
        _ => false,
    }
}

/// One line for a program error: the first line of its message and, for the verifier, the
/// last line of its log.
fn short(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            let last = verifier_log.to_string();
            let last = last.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
            format!("load failed: {io_error}{}{last}", if last.is_empty() { "" } else { ": " })
        }
        other => chain(other),
    }
}

impl Tracer {
    /// Loads the programs, configures them for `opts` and attaches them.
    pub fn start(opts: &TraceOptions) -> Result<Tracer, TraceError> {
        preflight()?;
        let started = Instant::now();
        let cpu_at_start = crate::cost::process_cpu();
        let tracefs = Tracefs::locate()?;
        let layout = KernelBtf::from_sys()?.kernel_layout()?;
        let available = tracefs.events()?;
        let selected = opts.events.select(&available);
        if selected.is_empty() {
            return Err(TraceError::NoEvents(opts.events.to_string()));
        }
        let planned = plan(&tracefs, &available, &selected)?;
        if planned.len() > TP_SLOTS as usize {
            return Err(TraceError::TooManyEvents {
                spec: opts.events.to_string(),
                count: planned.len(),
                max: TP_SLOTS,
            });
        }
        raise_memlock();
        let settings = Settings {
            filters: opts.filter.flags(),
            stacks: if opts.stacks { opts.stack_sample.max(1) } else { 0 },
            port: opts.filter.port.unwrap_or(0),
            aggregate: u8::from(opts.aggregate),
            _pad: 0,
            wake_bytes: wake_bytes(opts.ring_bytes.unwrap_or(DEFAULT_RING_BYTES)),
        };
        // The loader holds its own parse of the kernel's BTF (tens of MiB): drop it before the
        // datapath probes may parse another.
        let mut ebpf = {
            let mut loader = EbpfLoader::new();
            loader.override_global("SETTINGS", &settings, true).override_global("LAYOUT", &layout, true);
            if opts.aggregate {
                // Nothing goes through the ring buffer: keep it as small as the kernel allows.
                loader.map_max_entries("EVENTS", page_size());
            } else if let Some(bytes) = opts.ring_bytes {
                loader.map_max_entries("EVENTS", bytes);
            }
            if let Some(entries) = opts.stack_map_entries {
                loader.map_max_entries("STACKS", entries.max(1));
            }
            loader.load(EBPF_OBJECT).map_err(|e| TraceError::Load(chain(&e)))?
        };
        // Loading peaks at tens of MiB (BTF, the object's sections), all free now: give them
        // back before the symbol table and the ring buffer's pages come in, so the peaks do not add.
        release_freed_memory();
        let kallsyms = Arc::new(Kallsyms::load()?);
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                log::debug!("eBPF logs unavailable: {e}");
                None
            }
        };
        fill_filter_maps(&mut ebpf, &opts.filter)?;

        let mut catalog = Catalog::default();
        {
            let mut cfg: Array<_, TpConfig> =
                Array::try_from(ebpf.map_mut("TP_CONFIG").ok_or(TraceError::MissingMap("TP_CONFIG"))?)?;
            for (slot, p) in planned.iter().enumerate() {
                cfg.set(slot as u32, p.config, 0)?;
                catalog.insert(p.format_id, &p.id.to_string());
            }
        }

        let (tracepoints, tracepoint_errors) = attach_tracepoints(&mut ebpf, &planned)?;
        let mut programs: Vec<(String, String, bool)> = planned
            .iter()
            .enumerate()
            .filter(|(_, p)| !tracepoint_errors.iter().any(|(t, _)| *t == p.id))
            .map(|(slot, p)| (p.id.to_string(), format!("dt_tp_{slot}"), p.config.emit != 0))
            .collect();
        let probes =
            if opts.datapath { attach_datapath(&mut ebpf, &kallsyms, &mut catalog) } else { Vec::new() };
        for p in &probes {
            let (prefix, label) = match p.state {
                ProbeState::Kprobe => ("kp", "kprobe"),
                ProbeState::Fentry => ("fe", "fentry"),
                _ => continue,
            };
            programs.push((format!("{label}:{}", p.function), format!("{prefix}_{}", p.function), true));
        }

        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").ok_or(TraceError::MissingMap("EVENTS"))?)?;
        let stack_map = |ebpf: &mut Ebpf, name: &'static str| {
            StackTraceMap::try_from(ebpf.take_map(name).ok_or(TraceError::MissingMap(name))?)
                .map_err(TraceError::from)
        };
        let stacks =
            StackMaps { main: stack_map(&mut ebpf, "STACKS")?, spill: stack_map(&mut ebpf, "STACKS_SPILL")? };
        let counters =
            PerCpuArray::try_from(ebpf.take_map("COUNTERS").ok_or(TraceError::MissingMap("COUNTERS"))?)?;
        let agg = PerCpuHashMap::try_from(ebpf.take_map("AGG").ok_or(TraceError::MissingMap("AGG"))?)?;
        let dev_names =
            BpfHashMap::try_from(ebpf.take_map("DEV_NAMES").ok_or(TraceError::MissingMap("DEV_NAMES"))?)?;
        Ok(Tracer {
            ebpf,
            catalog,
            tracepoints,
            tracepoint_errors,
            probes,
            kallsyms,
            attach_time: started.elapsed(),
            ring: Some(ring),
            stacks: Some(stacks),
            counters,
            agg,
            dev_names,
            aggregate: opts.aggregate,
            stack_sample: if opts.stacks { opts.stack_sample.max(1) } else { 1 },
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
            for (label, name, emits) in &self.programs {
                let Some(info) = self.ebpf.program(name).and_then(|p| p.info().ok()) else { continue };
                programs.push(crate::cost::ProgramCost {
                    program: label.clone(),
                    emits: *emits,
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
        self.ring.take()
    }

    /// The stack map, for symbolization (taken once).
    pub fn take_stacks(&mut self) -> Option<StackMaps> {
        self.stacks.take()
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
    pub fn aggregated_dev_names(&self) -> Result<HashMap<(u32, u32), String>, TraceError> {
        let mut out = HashMap::new();
        for item in self.dev_names.iter() {
            let (k, name) = item?;
            out.insert((k.netns, k.ifindex), crate::decode::c_str(&name).to_owned());
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

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}

fn fill_filter_maps(ebpf: &mut Ebpf, filter: &Filter) -> Result<(), TraceError> {
    {
        let mut m: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(
            ebpf.map_mut("FILTER_NETNS").ok_or(TraceError::MissingMap("FILTER_NETNS"))?,
        )?;
        for ns in &filter.netns {
            m.insert(ns, 1, 0)?;
        }
    }
    {
        let mut m: BpfHashMap<_, DevKey, u8> =
            BpfHashMap::try_from(ebpf.map_mut("FILTER_DEVS").ok_or(TraceError::MissingMap("FILTER_DEVS"))?)?;
        for d in &filter.devs {
            m.insert(d, 1, 0)?;
        }
    }
    let mut m: BpfHashMap<_, u32, u8> =
        BpfHashMap::try_from(ebpf.map_mut("FILTER_PIDS").ok_or(TraceError::MissingMap("FILTER_PIDS"))?)?;
    for p in &filter.pids {
        m.insert(p, 1, 0)?;
    }
    Ok(())
}

type Attached = (Vec<TracepointId>, Vec<(TracepointId, String)>);

fn attach_tracepoints(ebpf: &mut Ebpf, planned: &[PlannedTracepoint]) -> Result<Attached, TraceError> {
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    // Slot i's program reads TP_CONFIG[i]; `plan` ordered exits before entries.
    for (slot, p) in planned.iter().enumerate() {
        let name = format!("dt_tp_{slot}");
        let attached = (|| -> Result<(), ProgramError> {
            let prog: &mut TracePoint =
                ebpf.program_mut(&name).ok_or_else(|| ProgramError::UnexpectedProgramType)?.try_into()?;
            prog.load()?;
            prog.attach(&p.id.category, &p.id.name)?;
            Ok(())
        })();
        match attached {
            Ok(()) if p.config.emit != 0 => ok.push(p.id.clone()),
            Ok(()) => {}
            Err(e) => failed.push((p.id.clone(), short(&e))),
        }
    }
    if ok.is_empty() {
        let first = failed.first().map(|(t, e)| format!("{t}: {e}")).unwrap_or_default();
        return Err(TraceError::NothingAttached(first));
    }
    Ok((ok, failed))
}

/// Attaches each datapath probe: kprobe where the kernel has kprobes, else fentry, else says why.
fn attach_datapath(ebpf: &mut Ebpf, kallsyms: &Kallsyms, catalog: &mut Catalog) -> Vec<ProbeStatus> {
    let kprobes = Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
    // Parsed only if a probe falls back to fentry (the parse costs tens of MiB and ~0.1 s).
    let mut btf: Option<Option<Btf>> = None;
    let mut out = Vec::new();
    for (i, f) in DATAPATH_FUNCS.iter().enumerate() {
        let kind = PROBE_BASE + i as u32;
        if kallsyms.address_of(f.name).is_none() {
            let reason = if f.module.is_empty() {
                "not in the running kernel".to_owned()
            } else {
                format!("not in the running kernel (module {} not loaded or not built)", f.module)
            };
            out.push(ProbeStatus { function: f.name, state: ProbeState::NotPresent, reason });
            continue;
        }
        let kprobe_err = if kprobes {
            match attach_kprobe(ebpf, f.name) {
                Ok(()) => {
                    catalog.insert(kind, &format!("kprobe:{}", f.name));
                    out.push(ProbeStatus {
                        function: f.name,
                        state: ProbeState::Kprobe,
                        reason: String::new(),
                    });
                    continue;
                }
                Err(e) => format!("kprobe failed: {e}"),
            }
        } else {
            "kprobes not supported by this kernel".to_owned()
        };
        let fentry_err = match btf.get_or_insert_with(|| Btf::from_sys_fs().ok()).as_ref() {
            None => "fentry needs kernel BTF".to_owned(),
            Some(btf) => match attach_fentry(ebpf, f.name, btf) {
                Ok(()) => {
                    catalog.insert(kind, &format!("fentry:{}", f.name));
                    out.push(ProbeStatus { function: f.name, state: ProbeState::Fentry, reason: kprobe_err });
                    continue;
                }
                Err(e) => e,
            },
        };
        out.push(ProbeStatus {
            function: f.name,
            state: ProbeState::Unavailable,
            reason: format!("{kprobe_err}; {fentry_err}"),
        });
    }
    out
}

fn attach_kprobe(ebpf: &mut Ebpf, function: &str) -> Result<(), String> {
    let name = format!("kp_{function}");
    let prog: &mut KProbe = ebpf
        .program_mut(&name)
        .ok_or_else(|| format!("program {name} missing"))?
        .try_into()
        .map_err(|e: ProgramError| short(&e))?;
    prog.load().map_err(|e| short(&e))?;
    prog.attach(function, 0).map(|_| ()).map_err(|e| short(&e))
}

fn attach_fentry(ebpf: &mut Ebpf, function: &str, btf: &Btf) -> Result<(), String> {
    let name = format!("fe_{function}");
    let prog: &mut FEntry = ebpf
        .program_mut(&name)
        .ok_or_else(|| format!("program {name} missing"))?
        .try_into()
        .map_err(|e: ProgramError| short(&e))?;
    let fentry_msg = |e: &ProgramError| {
        if is_eperm(e) {
            "fentry not permitted".to_owned()
        } else {
            format!("fentry failed: {}", short(e))
        }
    };
    prog.load(function, btf).map_err(|e| fentry_msg(&e))?;
    prog.attach().map(|_| ()).map_err(|e| fentry_msg(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::tracefs::TpFormat;

    // Real format files of this project's development kernel.
    const NET_DEV_XMIT: &str = include_str!("../tests/fixtures/kernel/net_net_dev_xmit.format");
    const RX_EXIT: &str = include_str!("../tests/fixtures/kernel/net_netif_receive_skb_exit.format");

    #[test]
    fn config_from_format() {
        let f = TpFormat::parse(NET_DEV_XMIT).unwrap();
        let c = tp_config(&f, true, 1, PAIR_POP);
        assert_eq!((c.skbaddr_off, c.len_off, c.name_off), (8, 16, 24));
        assert_eq!((c.emit, c.pair_slot, c.pair_role), (1, 1, PAIR_POP));
        let f = TpFormat::parse(RX_EXIT).unwrap();
        let c = tp_config(&f, false, 0, PAIR_NONE);
        assert_eq!((c.skbaddr_off, c.len_off, c.name_off, c.emit), (NO_FIELD, NO_FIELD, NO_FIELD, 0));
    }

    #[test]
    fn pair_table_is_consistent() {
        let mut slots: Vec<u8> = PAIRS.iter().map(|p| p.3).collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), PAIRS.len(), "each pair has its own slot");
        assert!(slots.iter().all(|&s| s >= 1 && u32::from(s) < dockertrace_common::PAIR_SLOTS));
    }

    #[test]
    fn counters_sum_by_index() {
        let mut v = vec![0u64; counter::COUNT as usize];
        v[counter::RING_FULL as usize] = 3;
        v[counter::SENT as usize] = 10;
        let c = Counters::from_slots(&v);
        assert_eq!((c.lost(), c.sent, c.seen), (3, 10, 0));
    }

    #[test]
    fn catalog_names_unknown_kinds() {
        let mut c = Catalog::default();
        c.insert(5, "net:netif_rx");
        assert_eq!(&*c.name(5), "net:netif_rx");
        assert_eq!(&*c.name(6), "unknown:6");
    }
}
