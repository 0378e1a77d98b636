//! The tracepoint probe family's wire types: per-slot configuration (`TP_CONFIG`) and the
//! per-CPU stacks that pair entry and exit events.
use crate::{record::STACK_SKIPPED, NAME_LEN};

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
/// First pairing slot of the datapath functions' entry/return probes (one each, see
/// `datapath::pair_slot`); the tracepoints' pairs use slots 1 to `DP_PAIR_BASE - 1`.
pub const DP_PAIR_BASE: u32 = 8;
/// Number of pairing slots (index 0 is unused).
pub const PAIR_SLOTS: u32 = DP_PAIR_BASE + crate::datapath::DP_RETURNS_LEN;
/// Depth of each slot's per-CPU stack.
pub const PAIR_DEPTH: usize = 8;

/// Number of program slots of each attach type (`dt_tp_<slot>`, `dt_btf_<slot>`,
/// `dt_raw_<slot>`, slots 0..63): at most this many tracepoints are traced at once. A program
/// cannot learn which tracepoint fired (on the perf path the kernel fills `common_type` only
/// after BPF programs ran; raw tracepoints have no record at all), so each attached tracepoint
/// gets its own program, whose slot indexes `TP_CONFIG`.
pub const TP_SLOTS: u32 = 64;

/// `TP_CONFIG`'s entry for the drop tracepoint (`skb:kfree_skb` traced as drops), past the
/// 64 slots: its programs are `dt_tp_drop`, `dt_btf_drop` and `dt_raw_drop`, the slot bodies
/// compiled for drops (see there why they are programs of their own).
pub const DROP_SLOT: u32 = TP_SLOTS;

/// How the tracepoint program of one slot reads its tracepoint (`TP_CONFIG[slot]`): record
/// offsets from the tracepoint's `format` file (perf path), argument positions from the
/// kernel's BTF prototype `btf_trace_<name>` (`tp_btf`, `raw_tp`), and its pairing role.
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
    /// Pairing slot (1..DP_PAIR_BASE), 0 for none.
    pub pair_slot: u8,
    /// One of `PAIR_*`.
    pub pair_role: u8,
    /// `tp_btf`/`raw_tp` programs: index of the `struct sk_buff *` argument, or `NO_ARG`.
    pub skb_arg: u8,
    /// `tp_btf`/`raw_tp` programs: index of the `struct net_device *` argument, or `NO_ARG`.
    pub dev_arg: u8,
    /// `tp_btf`/`raw_tp` programs: index of an unsigned length argument (`net_dev_xmit`'s
    /// `skb_len`: its skb may be gone by then), or `NO_ARG`.
    pub len_arg: u8,
    /// The event's part in journeys: `journey::JOURNEY_ENDS` or 0.
    pub journey: u8,
    /// `tp_btf`/`raw_tp` programs: index of the `enum skb_drop_reason` argument, or `NO_ARG`.
    pub reason_arg: u8,
    /// `tp_btf`/`raw_tp` programs: index of the `void *location` argument, or `NO_ARG`.
    pub location_arg: u8,
    /// 1: the event is a drop (`skb:kfree_skb`): it reads its location and reason, and goes
    /// out when its skb is a followed journey or its device passes the filter.
    pub drop: u8,
    /// Perf path: offset of the `enum skb_drop_reason reason` field (4 bytes), or `NO_FIELD`
    /// (kernels before 5.17).
    pub reason_off: u16,
    /// Perf path: offset of the `void *location` field, or `NO_FIELD`.
    pub location_off: u16,
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, integers and integer arrays only, every padding byte spelled out as a
// field: any bit pattern is a valid value.
unsafe impl aya::Pod for TpConfig {}

/// Sentinel for "this tracepoint has no such argument" in [`TpConfig`].
pub const NO_ARG: u8 = u8::MAX;

/// How the programs of the tracepoint family are attached (`--attach`).
pub mod attach {
    /// A `tp_btf` program (BTF-typed raw tracepoint, no trace record; kernels since 5.5).
    pub const TP_BTF: u8 = 1;
    /// A `raw_tp` program (raw tracepoint: the `TP_PROTO` arguments, no record).
    pub const RAW_TP: u8 = 2;
    /// A classic tracepoint program on the perf path (reads the trace record).
    pub const PERF: u8 = 3;
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
    /// The entry event's path class (adaptive stacks), which its exit event shares.
    pub class: u32,
    /// The entry event's journey (0: none) and hop: its exit event reports the function's
    /// duration on that hop (`journey::PKT_RETURN`).
    pub packet: u64,
    /// When the entry event fired (`bpf_ktime_get_ns`).
    pub ts: u64,
    pub hop: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, integers and integer arrays only, every padding byte spelled out as a
// field: any bit pattern is a valid value.
unsafe impl aya::Pod for PairEntry {}

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

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, integers and integer arrays only, every padding byte spelled out as a
// field: any bit pattern is a valid value.
unsafe impl aya::Pod for PairStack {}
