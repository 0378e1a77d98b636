//! Wire types shared by dockertrace's eBPF programs and its userspace loader.
//!
//! Everything here crosses the kernel/user boundary as raw bytes, so every type is `#[repr(C)]`
//! with fixed-width integers and explicit padding: no `bool`, `Option` or Rust enums. Userspace
//! decodes discriminants and checks lengths (see `dockertrace::decode`).
#![no_std]

/// Length of a kernel task name (`TASK_COMM_LEN`) and of a device name (`IFNAMSIZ`).
pub const NAME_LEN: usize = 16;

/// Record type of [`Event`] (the first `u16` of every ring-buffer record).
pub const RECORD_EVENT: u16 = 1;

/// `Event::flags`: the event refers to an skb (`skbaddr` is valid).
pub const EVENT_HAS_SKB: u16 = 1 << 0;
/// `Event::flags`: `ifindex`, `netns` and `dev` were read from a `struct net_device`.
pub const EVENT_HAS_DEV: u16 = 1 << 1;
/// `Event::flags`: the device was inherited from the matching entry event on this CPU
/// (e.g. `net:net_dev_xmit` takes the device of its `net:net_dev_start_xmit`).
pub const EVENT_DEV_FROM_PAIR: u16 = 1 << 2;

/// `Event::stack_id` when no stack was requested.
pub const STACK_NONE: i32 = -1_000;
/// `Event::stack_id` when stacks are sampled (`Settings::stacks` > 1) and this event was not
/// picked: it is counted, and stands for the stacks of the picked events of its kind.
pub const STACK_SKIPPED: i32 = -1_001;
/// `Event::stack_id`s at or above this value name a stack in the `STACKS_SPILL` map (at
/// `stack_id - STACK_SPILL_BASE`): the kernel puts a stack there when its bucket in `STACKS`
/// already holds another stack (`bpf_get_stackid` keeps one stack per hash bucket).
pub const STACK_SPILL_BASE: i32 = 1 << 24;

/// Event kinds at or above this value are datapath function probes (`PROBE_BASE + index` into
/// [`DATAPATH_FUNCS`]); below it they are the tracefs id of a tracepoint (`common_type`).
pub const PROBE_BASE: u32 = 0x1_0000;

/// A datapath function that dockertrace probes (kprobe, else fentry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatapathFunc {
    /// Kernel function name.
    pub name: &'static str,
    /// Index of the argument holding the skb.
    pub skb_arg: u8,
    /// The argument is `struct sk_buff **` rather than `struct sk_buff *`.
    pub skb_arg_is_pptr: bool,
    /// Module that provides the function when it is not built in.
    pub module: &'static str,
}

/// The datapath transmit/receive functions that identify a Docker networking mode.
/// The order is the wire encoding: kind = `PROBE_BASE + index`.
pub const DATAPATH_FUNCS: [DatapathFunc; 8] = [
    DatapathFunc { name: "veth_xmit", skb_arg: 0, skb_arg_is_pptr: false, module: "veth" },
    DatapathFunc { name: "br_dev_xmit", skb_arg: 0, skb_arg_is_pptr: false, module: "bridge" },
    DatapathFunc { name: "br_handle_frame", skb_arg: 0, skb_arg_is_pptr: true, module: "bridge" },
    DatapathFunc { name: "macvlan_start_xmit", skb_arg: 0, skb_arg_is_pptr: false, module: "macvlan" },
    DatapathFunc { name: "ipvlan_start_xmit", skb_arg: 0, skb_arg_is_pptr: false, module: "ipvlan" },
    DatapathFunc { name: "ipvlan_queue_xmit", skb_arg: 0, skb_arg_is_pptr: false, module: "ipvlan" },
    DatapathFunc { name: "loopback_xmit", skb_arg: 0, skb_arg_is_pptr: false, module: "" },
    DatapathFunc { name: "dev_forward_skb", skb_arg: 1, skb_arg_is_pptr: false, module: "" },
];

/// One traced event, as written to the `EVENTS` ring buffer. 88 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Always [`RECORD_EVENT`].
    pub record: u16,
    /// `EVENT_*` flags.
    pub flags: u16,
    pub cpu: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Tracepoint id or `PROBE_BASE + datapath index`.
    pub kind: u32,
    /// Thread id of the current task (0 in idle / softirq on an idle CPU).
    pub pid: u32,
    pub tgid: u32,
    /// Packet length (`skb->len`, or the tracepoint's `len` field).
    pub len: u32,
    pub skbaddr: u64,
    pub ifindex: u32,
    /// Inode number of the device's network namespace.
    pub netns: u32,
    /// Id in the `STACKS` map (or, from [`STACK_SPILL_BASE`] up, in `STACKS_SPILL`); negative:
    /// no stack (`STACK_NONE`, `STACK_SKIPPED` or a negative errno).
    pub stack_id: i32,
    /// `skb->protocol`, host byte order (an EtherType).
    pub protocol: u16,
    pub _pad: u16,
    pub comm: [u8; NAME_LEN],
    pub dev: [u8; NAME_LEN],
}

/// Sentinel for "this tracepoint has no such field" in [`TpConfig`].
pub const NO_FIELD: u16 = u16::MAX;

/// `TpConfig::pair_role`: no pairing.
pub const PAIR_NONE: u8 = 0;
/// Entry event: remember its device on the per-CPU stack of its slot.
pub const PAIR_PUSH: u8 = 1;
/// Exit event: take the device from the top of its slot's stack and pop it.
pub const PAIR_POP: u8 = 2;
/// Entry event of a batch: overwrite the slot's top without pushing.
pub const PAIR_SET: u8 = 3;
/// Exit event of a batch: read the slot's top without popping.
pub const PAIR_GET: u8 = 4;
/// Number of pairing slots (index 0 is unused).
pub const PAIR_SLOTS: u32 = 8;
/// Depth of each slot's per-CPU stack.
pub const PAIR_DEPTH: usize = 8;

/// Number of tracepoint programs (`dt_tp_0` .. `dt_tp_63`): at most this many tracepoints are
/// traced at once. The kernel fills `common_type` only after BPF programs ran, so a program
/// cannot learn which tracepoint fired from the record: each attached tracepoint gets its own
/// program, whose slot indexes `TP_CONFIG`.
pub const TP_SLOTS: u32 = 64;

/// How the tracepoint program of one slot reads its tracepoint's record (`TP_CONFIG[slot]`).
/// Offsets come from the tracepoint's `format` file.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TpConfig {
    /// Event kind reported to userspace: the tracepoint's tracefs id; 0: slot unused.
    pub kind: u32,
    /// Offset of `skbaddr` (a `void *`), or `NO_FIELD`.
    pub skbaddr_off: u16,
    /// Offset of an unsigned `len` field, or `NO_FIELD`.
    pub len_off: u16,
    /// Offset of a `__data_loc char[] name` field, or `NO_FIELD`.
    pub name_off: u16,
    /// 1: send the event to userspace; 0: only run pairing bookkeeping.
    pub emit: u8,
    /// Pairing slot (1..PAIR_SLOTS), 0 for none.
    pub pair_slot: u8,
    /// One of `PAIR_*`.
    pub pair_role: u8,
    pub _pad: [u8; 3],
}

/// Struct member offsets (bytes) read from the running kernel's BTF by userspace and handed to
/// the programs as a read-only global: Rust eBPF has no CO-RE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    pub skb_dev: u32,
    pub skb_len: u32,
    pub skb_protocol: u32,
    /// `sk_buff.head` (pointer to the buffer start).
    pub skb_head: u32,
    /// `sk_buff.network_header` (u16 offset from `head`).
    pub skb_network_header: u32,
    pub dev_ifindex: u32,
    pub dev_name: u32,
    /// `net_device.nd_net.net` (possible_net_t's pointer).
    pub dev_nd_net: u32,
    /// `net.ns.inum`.
    pub net_inum: u32,
    pub _pad: u32,
}

/// `Settings::filters` bit: keep only events whose netns is in `FILTER_NETNS`.
pub const FILTER_NETNS: u32 = 1 << 0;
/// `Settings::filters` bit: keep only events whose (netns, ifindex) is in `FILTER_DEVS`.
pub const FILTER_DEV: u32 = 1 << 1;
/// `Settings::filters` bit: keep only events whose tgid is in `FILTER_PIDS`.
pub const FILTER_PID: u32 = 1 << 2;
/// `Settings::filters` bit: keep only TCP/IP packets with `Settings::port` as source or
/// destination port (the loopback flow of the `normal` and `host` modes).
pub const FILTER_PORT: u32 = 1 << 3;

/// Run-time settings, a read-only global set by the loader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `FILTER_*` bits.
    pub filters: u32,
    /// Kernel stack ids: 0 none, 1 for every event, N > 1 for 1 in N events on average
    /// (random sampling; the others get `STACK_SKIPPED`).
    pub stacks: u32,
    /// TCP port for `FILTER_PORT`.
    pub port: u16,
    /// 1: count events in the `AGG` map instead of sending them through the ring buffer.
    pub aggregate: u8,
    pub _pad: u8,
    /// Ring-buffer wakeup batching: records are submitted without waking the reader
    /// (`BPF_RB_NO_WAKEUP`, the reader polls on a short timer) until this many bytes are
    /// waiting, then with `BPF_RB_FORCE_WAKEUP`. 0: the kernel's default (wake on every record
    /// that finds the reader idle — a self-IPI per record on virtual machines).
    pub wake_bytes: u32,
}

/// Key of the `FILTER_DEVS` map: a device is only unique within its network namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevKey {
    pub netns: u32,
    pub ifindex: u32,
}

/// Key of the `AGG` map (aggregate mode): events of one kind, on one device, with one stack.
/// Events without a known device have `netns` and `ifindex` 0; `stack_id` is as in
/// [`Event::stack_id`] (negative: no stack).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AggKey {
    /// Tracepoint id or `PROBE_BASE + datapath index`.
    pub kind: u32,
    pub netns: u32,
    pub ifindex: u32,
    pub stack_id: i32,
}

/// One entry of a pairing stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairEntry {
    pub ifindex: u32,
    pub netns: u32,
    /// 1 when the entry event passed the filter.
    pub pass: u32,
    /// `EVENT_HAS_DEV` when the entry knew its device.
    pub flags: u32,
    pub dev: [u8; NAME_LEN],
    /// The stack id the entry event was sent with (`STACK_NONE` when it was not sent). The
    /// exit event fires in the same function invocation, so its stack names the same functions:
    /// it reuses this one (see `stack_shared`) instead of walking the stack again.
    pub stack_id: i32,
    pub _pad: u32,
}

/// Whether an exit event may reuse its entry's `stack_id`: a real stack, or the entry's
/// sampling decision (`STACK_SKIPPED`). After a failure or no stack, the exit walks its own.
#[inline(always)]
pub fn stack_shared(entry_stack_id: i32) -> bool {
    entry_stack_id >= 0 || entry_stack_id == STACK_SKIPPED
}

/// A per-CPU stack of entry events for one pairing slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairStack {
    /// Number of pushes not yet popped (may exceed `PAIR_DEPTH`; deeper entries are not kept).
    pub depth: u32,
    pub _pad: u32,
    pub entries: [PairEntry; PAIR_DEPTH],
}

/// Indices of the per-CPU `COUNTERS` array.
pub mod counter {
    /// Program invocations (events seen before filtering).
    pub const SEEN: u32 = 0;
    /// Events dropped by the in-kernel filter.
    pub const FILTERED: u32 = 1;
    /// Events sent to the ring buffer.
    pub const SENT: u32 = 2;
    /// Events lost because the ring buffer was full.
    pub const RING_FULL: u32 = 3;
    /// `bpf_get_stackid` failures other than collisions.
    pub const STACK_ERROR: u32 = 4;
    /// `bpf_get_stackid` returned -EEXIST (bucket already holds another stack).
    pub const STACK_COLLISION: u32 = 5;
    /// Tracepoint fired without a `TP_CONFIG` entry.
    pub const NO_CONFIG: u32 = 6;
    /// Kernel memory reads that failed.
    pub const READ_ERROR: u32 = 7;
    /// Pairing stack deeper than `PAIR_DEPTH`, or popped while empty.
    pub const PAIR_MISS: u32 = 8;
    /// Aggregate mode: events not counted because the `AGG` map was full.
    pub const AGG_FULL: u32 = 9;
    /// Exit events that reused their entry event's stack id instead of walking the stack.
    pub const STACK_SHARED: u32 = 10;
    /// Number of counters.
    pub const COUNT: u32 = 11;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `repr(C)`, made only of integers and integer arrays, with every
    // padding byte spelled out as a field, so any bit pattern is valid.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::TpConfig {}
    unsafe impl aya::Pod for super::KernelLayout {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::DevKey {}
    unsafe impl aya::Pod for super::AggKey {}
    unsafe impl aya::Pod for super::PairEntry {}
    unsafe impl aya::Pod for super::PairStack {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn wire_sizes_are_stable() {
        assert_eq!(size_of::<Event>(), 88);
        assert_eq!(size_of::<TpConfig>(), 16);
        assert_eq!(size_of::<KernelLayout>(), 40);
        assert_eq!(size_of::<Settings>(), 16);
        assert_eq!(size_of::<AggKey>(), 16);
        assert_eq!(size_of::<PairEntry>(), 40);
        assert_eq!(size_of::<PairStack>(), 8 + 40 * PAIR_DEPTH);
    }

    #[test]
    fn probe_kinds_do_not_overlap_tracepoint_ids() {
        // tracefs ids are u16 (`common_type`), so they stay below PROBE_BASE.
        assert!(u32::from(u16::MAX) < PROBE_BASE);
        assert!(DATAPATH_FUNCS.iter().all(|f| f.skb_arg < 6));
    }
}
