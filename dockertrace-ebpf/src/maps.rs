//! Maps and read-only globals shared by all programs.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
};
use dockertrace_common::{
    capture::{CbpfInsn, CbpfState, Frame, CBPF_SLOTS},
    counter,
    datapath::DP_RETURNS_LEN,
    journey::{HopHist, HopKey, JourneySlot, Packet, Pending, JOURNEY_SLOTS},
    tracepoints::{PairStack, TpConfig, PAIR_SLOTS, TP_SLOTS},
    AdaptSlot, AggKey, DevKey, KernelLayout, Settings, ADAPT_SLOTS, NAME_LEN, STACKS_EVERY,
};

/// Run-time settings (`EbpfLoader::override_global`).
#[no_mangle]
static SETTINGS: Settings = Settings {
    filters: 0,
    stacks: 1,
    port: 0,
    aggregate: 0,
    stack_mode: STACKS_EVERY,
    wake_bytes: 0,
    adapt_first: 0,
    journeys: 0,
    adapt_window_ns: 0,
    journey_gap_ns: 0,
    snaplen: 0,
    cbpf_eth_len: 0,
    cbpf_raw_len: 0,
};

/// Struct offsets from the running kernel's BTF (`EbpfLoader::override_global`).
#[no_mangle]
static LAYOUT: KernelLayout = KernelLayout {
    skb_dev: 0,
    skb_len: 0,
    skb_protocol: 0,
    skb_head: 0,
    skb_network_header: 0,
    dev_ifindex: 0,
    dev_name: 0,
    dev_nd_net: 0,
    net_inum: 0,
    skb_data: 0,
    skb_mac_header: 0,
    skb_tail: 0,
};

/// Event records. The loader may resize it (`EbpfLoader::set_max_entries`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Kernel stacks, referenced by `Event::stack_id`.
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(8192, 0);

/// Stacks whose hash bucket in `STACKS` holds another stack (`Event::stack_id` =
/// `STACK_SPILL_BASE` + id here). It has fewer buckets, so it indexes by fewer hash bits; only
/// such spilled stacks compete for them.
#[map]
pub static STACKS_SPILL: StackTrace = StackTrace::with_max_entries(2048, 0);

/// Per-CPU failure and traffic counters, indexed by `dockertrace_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// How each tracepoint program slot reads its tracepoint (and, at `DROP_SLOT`, the drop
/// tracepoint).
#[map]
pub static TP_CONFIG: Array<TpConfig> = Array::with_max_entries(TP_SLOTS + 1, 0);

/// Network namespaces to keep (key: netns inode).
#[map]
pub static FILTER_NETNS: HashMap<u32, u8> = HashMap::with_max_entries(256, 0);

/// Devices to keep.
#[map]
pub static FILTER_DEVS: HashMap<DevKey, u8> = HashMap::with_max_entries(1024, 0);

/// Processes to keep (key: tgid).
#[map]
pub static FILTER_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// Aggregate mode: event counts per (kind, device, stack id), one count per CPU (summed by
/// userspace, which reads the map at the end).
#[map]
pub static AGG: PerCpuHashMap<AggKey, u64> = PerCpuHashMap::with_max_entries(16384, 0);

/// Aggregate mode: the name of each device seen (`IFNAMSIZ` bytes, NUL-padded).
#[map]
pub static DEV_NAMES: HashMap<DevKey, [u8; NAME_LEN]> = HashMap::with_max_entries(4096, 0);

/// Adaptive stacks: each key's window, in hashed slots (see `dockertrace_common::STACKS_ADAPTIVE`).
/// A per-CPU array: a lookup is an index, ~0.2 µs cheaper per event here than an LRU hash.
#[map]
pub static ADAPT: PerCpuArray<AdaptSlot> = PerCpuArray::with_max_entries(ADAPT_SLOTS, 0);

/// Packet journeys: one slot per tracked skb address (see `dockertrace_common::journey`).
/// Shared by all CPUs: a packet's hops may run on several.
#[map]
pub static JOURNEYS: Array<JourneySlot> = Array::with_max_entries(JOURNEY_SLOTS, 0);

/// Per-CPU count of journeys started (the low bits of their ids).
#[map]
pub static JOURNEY_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `journey::dt_journey`'s result: the current event's packet section.
#[map]
pub static PACKET_OUT: PerCpuArray<Packet> = PerCpuArray::with_max_entries(1, 0);

/// An exit event's entry (journey, hop, time), handed from `emit` to `dt_section`.
#[map]
pub static PENDING: PerCpuArray<Pending> = PerCpuArray::with_max_entries(1, 0);

/// Aggregate mode with journeys: a log2 histogram of the time between two consecutive hops,
/// per (previous hop, hop, path class), per CPU.
#[map]
pub static HOP_HIST: PerCpuHashMap<HopKey, HopHist> = PerCpuHashMap::with_max_entries(4096, 0);

/// Scratch for a new `HOP_HIST` value (too big for the programs' stack next to the rest).
#[map]
pub static HOP_HIST_NEW: PerCpuArray<HopHist> = PerCpuArray::with_max_entries(1, 0);

/// Capture programs: the current event's frame (`capture::dt_frame`), copied into its record.
#[map]
pub static FRAME: PerCpuArray<Frame> = PerCpuArray::with_max_entries(1, 0);

/// Capture programs: the `--filter` programs (Ethernet, raw IP), filled by the loader.
#[map]
pub static CBPF_PROG: Array<CbpfInsn> = Array::with_max_entries(CBPF_SLOTS, 0);

/// Capture programs: the classic-BPF interpreter's registers between steps.
#[map]
pub static CBPF: PerCpuArray<CbpfState> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU entry/exit pairing stacks (see `dockertrace_common::tracepoints::PAIR_*`).
#[map]
pub static PAIRS: PerCpuArray<PairStack> = PerCpuArray::with_max_entries(PAIR_SLOTS, 0);

/// `DP_RETURNS[i]` is 1 once datapath function `i`'s return probe is attached (the loader sets
/// it): only then does its entry probe push onto its pairing slot.
#[map]
pub static DP_RETURNS: Array<u32> = Array::with_max_entries(DP_RETURNS_LEN, 0);

/// The settings, read in place. The loader rewrites the global before load, so the compiler
/// must not fold its reads into the initial values: the pointer goes through a volatile
/// read, after which its target is unknown to the compiler. No copy of the struct lands on
/// the stack (kernels before 6.x count every frame of a call chain against 512 bytes).
#[inline(always)]
pub fn settings() -> &'static Settings {
    let p: *const Settings = &SETTINGS;
    // SAFETY: `p` points at the global, which lives forever and is never written by programs.
    unsafe { &*core::ptr::read_volatile(&p) }
}

/// The kernel layout, read in place (see [`settings`]).
#[inline(always)]
pub fn layout() -> &'static KernelLayout {
    let p: *const KernelLayout = &LAYOUT;
    // SAFETY: as in settings.
    unsafe { &*core::ptr::read_volatile(&p) }
}

/// Adds one to a per-CPU counter; returns the value before.
#[inline(always)]
pub fn bump(index: u32) -> u64 {
    match COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, programs do not nest on one CPU for the same map value
        // in a way that matters for a statistics counter.
        Some(p) => unsafe {
            let before = *p;
            *p = before + 1;
            before
        },
        None => 0,
    }
}
