//! Wire types shared by dockertrace's eBPF programs and its userspace loader.
//!
//! Everything here crosses the kernel/user boundary as raw bytes, so every type is `#[repr(C)]`
//! with fixed-width integers and explicit padding: no `bool`, `Option` or Rust enums. Userspace
//! decodes discriminants and checks lengths (see `dockertrace::decode`).
//!
//! One module per probe family (its own wire types), plus what every family shares:
//! - [`record`]: the ring-buffer record header and the event record;
//! - [`tracepoints`]: tracepoint slots, their configuration and entry/exit pairing;
//! - [`datapath`]: the datapath functions (kprobe/fentry) and their event kinds;
//! - [`journey`]: packet journeys (packet ids, hops, headers, hop-latency histograms);
//! - this file: the kernel layout, settings, filters, aggregation keys and counters.
#![no_std]

pub mod capture;
pub mod datapath;
pub mod journey;
pub mod record;
pub mod tracepoints;

/// Length of a kernel task name (`TASK_COMM_LEN`) and of a device name (`IFNAMSIZ`).
pub const NAME_LEN: usize = 16;

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
    /// `sk_buff.data` (pointer to the current header: the network header on receive once
    /// the link layer is pulled).
    pub skb_data: u32,
    /// `sk_buff.mac_header` (u16 offset from `head`; `u16::MAX`: unset).
    pub skb_mac_header: u32,
    /// `sk_buff.tail` (u32 offset from `head` on 64-bit kernels: the end of the linear data).
    pub skb_tail: u32,
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, integers and integer arrays only, every padding byte spelled out as a
// field: any bit pattern is a valid value.
unsafe impl aya::Pod for KernelLayout {}

/// `Settings::filters` bit: keep only events whose netns is in `FILTER_NETNS`.
pub const FILTER_NETNS: u32 = 1 << 0;
/// `Settings::filters` bit: keep only events whose (netns, ifindex) is in `FILTER_DEVS`.
pub const FILTER_DEV: u32 = 1 << 1;
/// `Settings::filters` bit: keep only events whose tgid is in `FILTER_PIDS`.
pub const FILTER_PID: u32 = 1 << 2;
/// `Settings::filters` bit: keep only TCP/IP packets with `Settings::port` as source or
/// destination port (the loopback flow of the `normal` and `host` modes).
pub const FILTER_PORT: u32 = 1 << 3;
/// `Settings::filters` bit (capture programs only): keep only packets the `--filter` program
/// (`CBPF_PROG`) accepts, and the later hops of their journeys.
pub const FILTER_CBPF: u32 = 1 << 4;
/// `Settings::filters` bit: describe the packet inside a VXLAN tunnel (IPv4 UDP to port 4789)
/// instead of the tunnel's datagram, so that its journey goes on across encapsulation (overlay
/// runs, `trace --vxlan`). Not a filter: it keeps every event. Off, the verifier never sees
/// the peel (a branch on a read-only setting it knows).
pub const FILTER_VXLAN: u32 = 1 << 5;

/// Run-time settings, a read-only global set by the loader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `FILTER_*` bits.
    pub filters: u32,
    /// With `stack_mode` `STACKS_SAMPLE`: a stack for 1 in this many events on average; with
    /// `STACKS_ADAPTIVE`: the same, once a key's first `adapt_first` events of its window are
    /// walked (random sampling; the others get `STACK_SKIPPED`).
    pub stacks: u32,
    /// TCP port for `FILTER_PORT`.
    pub port: u16,
    /// 1: count events in the `AGG` map instead of sending them through the ring buffer.
    pub aggregate: u8,
    /// When the kernel walks the stack: one of `STACKS_*`.
    pub stack_mode: u8,
    /// Ring-buffer wakeup batching: records are submitted without waking the reader
    /// (`BPF_RB_NO_WAKEUP`, the reader polls on a short timer) until this many bytes are
    /// waiting, then with `BPF_RB_FORCE_WAKEUP`. 0: the kernel's default (wake on every record
    /// that finds the reader idle — a self-IPI per record on virtual machines).
    pub wake_bytes: u32,
    /// Adaptive stacks: events walked per key at the start of each window.
    pub adapt_first: u32,
    /// 1: follow packets (`journey`): every event on an skb carries its packet id, hop and
    /// headers; in aggregate mode the kernel keeps hop-latency histograms (`HOP_HIST`).
    pub journeys: u32,
    /// Adaptive stacks: length of a key's window, ns.
    pub adapt_window_ns: u64,
    /// Journeys: a hop older than this does not continue (`journey::JOURNEY_GAP_NS`).
    pub journey_gap_ns: u64,
    /// Capture programs: bytes of each frame kept for the pcap file (`--snaplen`, at most
    /// `capture::FRAME_MAX`).
    pub snaplen: u32,
    /// Capture programs: `FILTER_CBPF` set when a `--filter` program is loaded; the lengths of
    /// its Ethernet and raw-IP programs in `CBPF_PROG`.
    pub cbpf_eth_len: u16,
    pub cbpf_raw_len: u16,
}

/// `Settings::stack_mode`: no stacks.
pub const STACKS_NONE: u8 = 0;
/// `Settings::stack_mode`: a stack for every event.
pub const STACKS_EVERY: u8 = 1;
/// `Settings::stack_mode`: a stack for 1 in `Settings::stacks` events, at random.
pub const STACKS_SAMPLE: u8 = 2;
/// `Settings::stack_mode`: adaptive. Events are keyed by (kind, netns, ifindex, path class);
/// a key's first `adapt_first` events of each `adapt_window_ns` window take a stack, later ones
/// 1 in `stacks` at random. Keys live in hashed slots of a per-CPU array (`ADAPT`): a key that
/// finds its slot held by another takes it over and starts a new window, so a key seen for the
/// first time always gets its stack.
pub const STACKS_ADAPTIVE: u8 = 3;
/// Slots of the per-CPU `ADAPT` array (a power of two).
pub const ADAPT_SLOTS: u32 = 1024;

/// One slot of the `ADAPT` array: the key that holds it and its window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdaptSlot {
    pub kind: u32,
    pub netns: u32,
    pub ifindex: u32,
    /// The key's path class (`path_class`). A slot with kind 0 was never used.
    pub class: u32,
    /// When the key's current window began (`bpf_ktime_get_ns`).
    pub window_start: u64,
    /// Events of the window so far.
    pub count: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, integers only, every padding byte spelled out as a field: any bit pattern
// is a valid value.
unsafe impl aya::Pod for AdaptSlot {}

/// Path classes (`Event::class`, `AggKey::class`): what an skb is, read cheaply from its
/// headers, so that rare paths (ARP, SYN/FIN/RST, ICMP) have adaptive keys of their own.
/// Bits 0–1: network protocol; 2–3: L4 protocol; 4–5: TCP flag class; 6: raised in the idle
/// task (softirq on an idle CPU).
pub mod path_class {
    pub const NET_OTHER: u8 = 0;
    pub const NET_IPV4: u8 = 1;
    pub const NET_IPV6: u8 = 2;
    pub const NET_ARP: u8 = 3;
    pub const L4_OTHER: u8 = 0 << 2;
    pub const L4_TCP: u8 = 1 << 2;
    pub const L4_UDP: u8 = 2 << 2;
    pub const L4_ICMP: u8 = 3 << 2;
    pub const TCP_OTHER: u8 = 0 << 4;
    pub const TCP_SYN: u8 = 1 << 4;
    pub const TCP_FIN: u8 = 2 << 4;
    pub const TCP_RST: u8 = 3 << 4;
    pub const IDLE: u8 = 1 << 6;

    /// The TCP flag class of a TCP flags byte (CWR ECE URG ACK PSH RST SYN FIN).
    #[inline(always)]
    pub fn tcp_flag_class(flags: u8) -> u8 {
        if flags & 0x04 != 0 {
            TCP_RST
        } else if flags & 0x02 != 0 {
            TCP_SYN
        } else if flags & 0x01 != 0 {
            TCP_FIN
        } else {
            TCP_OTHER
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, integers and integer arrays only, every padding byte spelled out as a
// field: any bit pattern is a valid value.
unsafe impl aya::Pod for Settings {}

/// Key of the `FILTER_DEVS` map: a device is only unique within its network namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevKey {
    pub netns: u32,
    pub ifindex: u32,
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, integers and integer arrays only, every padding byte spelled out as a
// field: any bit pattern is a valid value.
unsafe impl aya::Pod for DevKey {}

/// Key of the `AGG` map (aggregate mode): events of one kind, on one device, with one stack.
/// Events without a known device have `netns` and `ifindex` 0; `stack_id` is as in
/// [`record::Event::stack_id`] (negative: no stack).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AggKey {
    /// Tracepoint id or `PROBE_BASE + datapath index`.
    pub kind: u32,
    pub netns: u32,
    pub ifindex: u32,
    pub stack_id: i32,
    /// The events' path class (`path_class`; 0 unless stacks are adaptive).
    pub class: u8,
    pub _pad: [u8; 3],
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, integers and integer arrays only, every padding byte spelled out as a
// field: any bit pattern is a valid value.
unsafe impl aya::Pod for AggKey {}

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
    /// Adaptive stacks: a key took over a slot held by another key (a new window started).
    pub const ADAPT_TAKEOVER: u32 = 11;
    /// Journeys started (packets seen for the first time).
    pub const JOURNEY_STARTED: u32 = 12;
    /// Journeys cut short: another skb took their slot of `JOURNEYS` while they were live (the
    /// evicted packet's next hop starts a journey of its own).
    pub const JOURNEY_EVICTED: u32 = 13;
    /// An skb address came back with another packet's headers (or after the gap): a new
    /// journey started, as it should (not a loss).
    pub const JOURNEY_REUSED: u32 = 14;
    /// Journeys ended by `skb:consume_skb` / `skb:kfree_skb`.
    pub const JOURNEY_ENDED: u32 = 15;
    /// Events on an IP or ARP skb whose headers could not be read.
    pub const HEADERS_UNREADABLE: u32 = 16;
    /// Aggregate mode: hop pairs not counted because the `HOP_HIST` map was full.
    pub const HOP_HIST_FULL: u32 = 17;
    /// Capture programs: events on packets the `--filter` program rejected (not part of a
    /// matched journey either). Also counted in `FILTERED`.
    pub const CBPF_REJECTED: u32 = 18;
    /// Capture programs: events on packets the `--filter` program accepted.
    pub const CBPF_ACCEPTED: u32 = 19;
    /// Capture programs: events that passed the filter only because their skb continues a
    /// matched journey (NAT or encapsulation changed its headers, or a hop without them).
    pub const CBPF_FOLLOWED: u32 = 20;
    /// Number of counters.
    pub const COUNT: u32 = 21;
}

#[cfg(test)]
mod tests {
    use super::{datapath::*, record::*, tracepoints::*, *};
    use core::mem::size_of;

    #[test]
    fn wire_sizes_are_stable() {
        assert_eq!(size_of::<RecordHeader>(), 4);
        assert_eq!(size_of::<Event>(), 176);
        assert_eq!(size_of::<journey::Packet>(), 72);
        assert_eq!(size_of::<journey::JourneySlot>(), 48);
        assert_eq!(size_of::<journey::HopKey>(), 28);
        assert!(journey::JOURNEY_SLOTS.is_power_of_two());
        assert_eq!(journey::hop_bucket(0), 0);
        assert_eq!(journey::hop_bucket(1), 1);
        assert_eq!(journey::hop_bucket(1023), 10);
        assert_eq!(journey::hop_bucket(1024), 11);
        assert_eq!(journey::hop_bucket(u64::MAX), journey::HOP_BUCKETS - 1);
        assert_eq!(RecordHeader::of::<Event>(RECORD_EVENT).size, 176);
        assert_eq!(size_of::<TpConfig>(), 24);
        assert_eq!(size_of::<KernelLayout>(), 48);
        assert_eq!(size_of::<Settings>(), 48);
        assert_eq!(size_of::<capture::EventCap>(), 448);
        assert_eq!(size_of::<capture::EventCap>(), size_of::<Event>() + size_of::<capture::Frame>());
        assert_eq!(capture::EventCap::HEADER.size, 448);
        assert_eq!(size_of::<capture::CbpfInsn>(), 8);
        assert_eq!(size_of::<AggKey>(), 20);
        assert_eq!(size_of::<AdaptSlot>(), 32);
        assert!(ADAPT_SLOTS.is_power_of_two());
        assert_eq!(size_of::<PairEntry>(), 64);
        assert_eq!(size_of::<PairStack>(), 8 + 64 * PAIR_DEPTH);
    }

    #[test]
    fn probe_kinds_do_not_overlap_tracepoint_ids() {
        // tracefs ids are u16 (`common_type`), so they stay below PROBE_BASE.
        assert!(u32::from(u16::MAX) < PROBE_BASE);
        assert!(DATAPATH_FUNCS.iter().all(|f| f.skb_arg < 6));
    }
}
