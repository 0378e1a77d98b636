//! Loading: the eBPF object, the preconditions with a clear fix, the programs' settings, the
//! memory the loader frees, the maps the conductor fills and takes.
use std::time::Duration;

use aya::{maps::HashMap as BpfHashMap, Btf, Ebpf, EbpfLoader};
use dockertrace_common::{
    capture::{CbpfInsn, CBPF_MAX},
    journey::JOURNEY_GAP_NS,
    KernelLayout, Settings, FILTER_CBPF, STACKS_ADAPTIVE, STACKS_EVERY, STACKS_NONE, STACKS_SAMPLE,
};

use super::TraceOptions;
use crate::{
    capture::CaptureOptions,
    errors::chain,
    filter::Filter,
    stacks::{StackMode, ADAPT_FIRST, ADAPT_TAIL, ADAPT_WINDOW},
    trace_error::TraceError,
};

/// The eBPF object built by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dockertrace"));

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
pub(super) fn release_freed_memory() {
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
pub(super) fn settings(opts: &TraceOptions) -> Settings {
    let filter = opts.capture.as_ref().and_then(|c| c.filter.as_ref());
    Settings {
        filters: opts.filter.flags() | if filter.is_some() { FILTER_CBPF } else { 0 },
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
        journeys: u32::from(opts.journeys),
        adapt_window_ns: ADAPT_WINDOW.as_nanos() as u64,
        journey_gap_ns: JOURNEY_GAP_NS,
        snaplen: opts.capture.as_ref().map_or(0, |c| c.snaplen),
        cbpf_eth_len: filter.map_or(0, |f| f.eth.len() as u16),
        cbpf_raw_len: filter.map_or(0, |f| f.raw.len() as u16),
    }
}

/// Writes the `--filter` programs into `CBPF_PROG` (Ethernet at 0, raw IP at `CBPF_MAX`).
pub(super) fn fill_cbpf(ebpf: &mut Ebpf, capture: Option<&CaptureOptions>) -> Result<(), TraceError> {
    let Some(f) = capture.and_then(|c| c.filter.as_ref()) else {
        return Ok(());
    };
    let name = "CBPF_PROG";
    let mut m: aya::maps::Array<_, CbpfInsn> =
        aya::maps::Array::try_from(ebpf.map_mut(name).ok_or(TraceError::MissingMap(name))?)?;
    for (base, prog) in [(0, &f.eth), (CBPF_MAX, &f.raw)] {
        for (i, insn) in prog.iter().enumerate() {
            m.set(base + i as u32, insn, 0)?;
        }
    }
    Ok(())
}

/// Loads the object with its globals and map sizes, relocating against `btf` (the parse the
/// tracepoints' `tp_btf` programs load against too: tens of MiB, parsed once).
pub(super) fn load(
    opts: &TraceOptions,
    layout: &KernelLayout,
    btf: Option<&Btf>,
) -> Result<Ebpf, TraceError> {
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

pub(super) fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, TraceError> {
    ebpf.take_map(name).ok_or(TraceError::MissingMap(name))
}

/// Writes the in-kernel filters (netns, devices, pids) the programs check before any work.
pub(super) fn fill_filter_maps(ebpf: &mut Ebpf, filter: &Filter) -> Result<(), TraceError> {
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
