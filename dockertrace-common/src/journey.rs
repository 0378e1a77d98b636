//! The journey family's wire types: which packet an event belongs to, its hop on the packet's
//! way, and what the packet's headers say.
//!
//! Every event on an skb is a hop of that skb's journey. The kernel keeps one [`JourneySlot`]
//! per tracked skb address (a slot of the `JOURNEYS` array, indexed by a hash of the address:
//! an array slot costs ~0.1 µs per event here, an LRU hash lookup ~0.3 µs): the packet's id,
//! its last hop's time and (event, netns, ifindex), and a fingerprint of its headers. An event
//! continues the journey in its address's slot when the address and fingerprint match and the
//! last hop is recent; otherwise it starts a new journey (the address was reused by another
//! packet, or the slot was taken by another skb). `skb:consume_skb` and `skb:kfree_skb` end a
//! journey, whether or not they are traced themselves.

/// The packet section of an event (`record::Event::packet`). 72 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    /// The journey's id: `(cpu + 1) << 48 | n`, where `n` counts journeys started on the CPU
    /// that saw the packet's first event. 0: the event is not part of a journey (no skb, or
    /// journeys are off).
    pub id: u64,
    /// Time since the journey's previous hop (0 at its first hop), ns.
    pub delta_ns: u64,
    /// Index of this hop in the journey (0: first).
    pub hop: u16,
    /// TCP/UDP ports (host byte order), 0 otherwise.
    pub sport: u16,
    pub dport: u16,
    /// IPv4 header id (0 for IPv6).
    pub ip_id: u16,
    /// L4 payload bytes (IP length minus IP and TCP/UDP headers).
    pub payload_len: u16,
    /// `PKT_*` flags.
    pub flags: u8,
    /// One of `FAMILY_*`.
    pub family: u8,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6), 0 when unknown.
    pub l4: u8,
    /// TCP flags byte (CWR ECE URG ACK PSH RST SYN FIN).
    pub tcp_flags: u8,
    /// ICMP / ICMPv6 type, or the ARP operation (1 request, 2 reply).
    pub op: u8,
    pub _pad: u8,
    /// TCP sequence and acknowledgment numbers (host byte order).
    pub seq: u32,
    pub ack: u32,
    /// Source and destination address: IPv4 in the first 4 bytes, IPv6 in all 16; ARP: the
    /// sender's and target's IPv4 address.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, integers and integer arrays only, every padding byte spelled out as a
// field: any bit pattern is a valid value.
unsafe impl aya::Pod for Packet {}

/// `Packet::flags`: the headers were read (family, addresses, ...).
pub const PKT_HEADERS: u8 = 1 << 0;
/// `Packet::flags`: the journey started at this event because its address's slot held the
/// same address with another packet's headers (the address was reused), or a stale journey.
pub const PKT_REUSED: u8 = 1 << 1;
/// `Packet::flags`: the journey started at this event and took the slot of another skb's
/// journey that was still in flight (`JOURNEY_LIVE_NS`): that journey may be cut in two
/// (counted as `JOURNEY_EVICTED`).
pub const PKT_EVICTED: u8 = 1 << 2;
/// `Packet::flags`: this event ends the journey (`skb:consume_skb`, `skb:kfree_skb`).
pub const PKT_END: u8 = 1 << 3;
/// `Packet::flags`: this exit event is not a hop but the return of the function its entry
/// event (hop `hop` of journey `id`) entered: `delta_ns` is the function's duration
/// (`net_dev_start_xmit` → `net_dev_xmit`: the driver's `ndo_start_xmit`, such as `veth_xmit`;
/// `netif_receive_skb_entry` → `_exit`: the whole receive path below the socket).
pub const PKT_RETURN: u8 = 1 << 4;
/// `Packet::flags`: the event's skb carried the packet inside a VXLAN tunnel (IPv4 UDP to
/// port 4789, outer IPv4): the section describes the inner packet, and keeps the tunnel in the
/// bytes an IPv4 address leaves free — outer source and destination in `saddr[4..8]` and
/// `daddr[4..8]`, the VNI in `saddr[8..11]`, the outer UDP source port in `daddr[8..10]`
/// (network byte order).
pub const PKT_VXLAN: u8 = 1 << 5;

/// `Packet::family`: headers unknown or not IP/ARP.
pub const FAMILY_NONE: u8 = 0;
pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;
pub const FAMILY_ARP: u8 = 1;

/// Slots of the `JOURNEYS` array (a power of two): buckets of two slots, indexed by a hash
/// of the skb address. A new skb takes the bucket's free or least recently used slot.
pub const JOURNEY_SLOTS: u32 = 65536;

/// A journey whose last hop is more recent than this (ns) counts as in flight: when another
/// skb takes its slot, the eviction is counted (`JOURNEY_EVICTED`). Older journeys are most
/// likely over — a packet's last traced event is seldom one that frees it (the socket layer
/// frees received data without a tracepoint) — and are replaced silently.
pub const JOURNEY_LIVE_NS: u64 = 10_000_000;

/// A journey's hop older than this (ns) is not continued: the address's next event starts a
/// new journey (the default of `Settings::journey_gap_ns`).
pub const JOURNEY_GAP_NS: u64 = 1_000_000_000;

/// One slot of the `JOURNEYS` array: the skb address it tracks and its journey so far.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JourneySlot {
    /// The tracked skb's address; 0: free.
    pub skbaddr: u64,
    pub id: u64,
    /// Time of the journey's last hop.
    pub last_ts: u64,
    /// The headers' fingerprint (0: headers were never readable).
    pub fingerprint: u32,
    pub hop: u16,
    pub _pad: u16,
    /// The last hop: (event kind, netns, ifindex).
    pub last_kind: u32,
    pub last_netns: u32,
    pub last_ifindex: u32,
    pub _pad2: u32,
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, integers only, every padding byte spelled out as a field: any bit pattern
// is a valid value.
unsafe impl aya::Pod for JourneySlot {}

/// An exit event's entry event, as `emit` hands it to the packet-section step: the hop
/// whose function returned (`packet` 0: none).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub packet: u64,
    pub ts: u64,
    pub hop: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, integers only, every padding byte spelled out as a field: any bit pattern
// is a valid value.
unsafe impl aya::Pod for Pending {}

/// Key of the `HOP_HIST` map (aggregate mode): a pair of consecutive hops of a journey.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HopKey {
    pub prev_kind: u32,
    pub prev_netns: u32,
    pub prev_ifindex: u32,
    pub kind: u32,
    pub netns: u32,
    pub ifindex: u32,
    /// The packet's path class (`crate::path_class`, without the idle bit).
    pub class: u32,
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, integers only: any bit pattern is a valid value.
unsafe impl aya::Pod for HopKey {}

/// Buckets of a hop-latency histogram: bucket `i` counts deltas in `[2^(i-1), 2^i)` ns
/// (bucket 0: 0 ns), the last one everything above.
pub const HOP_BUCKETS: usize = 32;

/// Value of the `HOP_HIST` map: a log2 histogram of the time between the two hops.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HopHist {
    pub buckets: [u32; HOP_BUCKETS],
}

impl Default for HopHist {
    fn default() -> Self {
        HopHist { buckets: [0; HOP_BUCKETS] }
    }
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, an integer array only: any bit pattern is a valid value.
unsafe impl aya::Pod for HopHist {}

/// The histogram bucket of a delta (see [`HOP_BUCKETS`]).
#[inline(always)]
pub fn hop_bucket(delta_ns: u64) -> usize {
    let b = (64 - delta_ns.leading_zeros()) as usize;
    if b >= HOP_BUCKETS {
        HOP_BUCKETS - 1
    } else {
        b
    }
}

/// `TpConfig::journey`: the event ends its skb's journey (`skb:consume_skb`, `skb:kfree_skb`).
pub const JOURNEY_ENDS: u8 = 1;
