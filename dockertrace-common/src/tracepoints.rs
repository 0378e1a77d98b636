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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `repr(C)`, made only of integers and integer arrays, with every
    // padding byte spelled out as a field, so any bit pattern is valid.
    unsafe impl aya::Pod for super::TpConfig {}
    unsafe impl aya::Pod for super::PairEntry {}
    unsafe impl aya::Pod for super::PairStack {}
}
