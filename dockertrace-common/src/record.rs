//! Ring-buffer records: a [`RecordHeader`] (record kind, size) and a payload per kind.
//!
//! Every record in the `EVENTS` ring buffer starts with a header; userspace walks it with
//! bounds checks (`dockertrace::decode`) and dispatches on the kind, so a new record kind
//! (packet journeys, drops) is added beside the others without touching them.
use core::mem::size_of;

use crate::{journey::Packet, NAME_LEN};

/// The first 4 bytes of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// One of `RECORD_*`.
    pub record: u16,
    /// Bytes of the whole record, header included (at most the ring entry's length).
    pub size: u16,
}

impl RecordHeader {
    /// The header of a record of type `T` (`size_of::<T>()`, which fits: records are small).
    #[inline(always)]
    pub const fn of<T>(record: u16) -> RecordHeader {
        RecordHeader { record, size: size_of::<T>() as u16 }
    }
}

/// Record kind of [`Event`].
pub const RECORD_EVENT: u16 = 1;

/// `Event::flags`: the event refers to an skb (`skbaddr` is valid).
pub const EVENT_HAS_SKB: u8 = 1 << 0;
/// `Event::flags`: `ifindex`, `netns` and `dev` were read from a `struct net_device`.
pub const EVENT_HAS_DEV: u8 = 1 << 1;
/// `Event::flags`: the device was inherited from the matching entry event on this CPU
/// (e.g. `net:net_dev_xmit` takes the device of its `net:net_dev_start_xmit`).
pub const EVENT_DEV_FROM_PAIR: u8 = 1 << 2;
/// `Event::flags`: the event is a drop (`skb:kfree_skb`): `drop_location` is the address of
/// the code that freed the skb.
pub const EVENT_DROP: u8 = 1 << 3;
/// `Event::flags`: `drop_reason` was read from the tracepoint (`enum skb_drop_reason`, kernels
/// 5.17+). Without it the kernel does not report why it dropped the packet.
pub const EVENT_HAS_REASON: u8 = 1 << 4;

/// `Event::stack_id` when no stack was requested.
pub const STACK_NONE: i32 = -1_000;
/// `Event::stack_id` when stacks are sampled (`Settings::stacks` > 1) and this event was not
/// picked: it is counted, and stands for the stacks of the picked events of its kind.
pub const STACK_SKIPPED: i32 = -1_001;
/// `Event::stack_id`s at or above this value name a stack in the `STACKS_SPILL` map (at
/// `stack_id - STACK_SPILL_BASE`): the kernel puts a stack there when its bucket in `STACKS`
/// already holds another stack (`bpf_get_stackid` keeps one stack per hash bucket).
pub const STACK_SPILL_BASE: i32 = 1 << 24;

/// One traced event, as written to the `EVENTS` ring buffer. 176 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `{ RECORD_EVENT, size_of::<Event>() }`.
    pub header: RecordHeader,
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
    /// `EVENT_*` flags.
    pub flags: u8,
    /// The skb's path class (`crate::path_class`), when stacks are adaptive; else 0.
    pub class: u8,
    pub comm: [u8; NAME_LEN],
    pub dev: [u8; NAME_LEN],
    /// The packet the event belongs to, its hop and its headers (`packet.id` 0: none).
    pub packet: Packet,
    /// Drops (`EVENT_DROP`): the address of the code that freed the skb (the tracepoint's
    /// `location`); 0 otherwise.
    pub drop_location: u64,
    /// Drops with `EVENT_HAS_REASON`: the kernel's `enum skb_drop_reason` value (its names come
    /// from the running kernel's BTF: the numbering changes between kernels); 0 otherwise.
    pub drop_reason: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, integers and integer arrays only, every padding byte spelled out as a
// field: any bit pattern is valid.
unsafe impl aya::Pod for Event {}
