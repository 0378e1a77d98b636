//! Packet journeys (see `dockertrace_common::journey`): every event on an skb reads the
//! packet's headers, finds its address's slot in `JOURNEYS`, and continues the journey there
//! (hop + 1, time since the last hop) or starts a new one.
//!
//! The work is done by global BPF functions (`dt_journey`, `dt_hop_hist`): the kernel verifies
//! each once, on its own, and the programs that call them see only a scalar result — the
//! header parsing's many branches would otherwise multiply the verifier's paths through every
//! program. With adaptive stacks and journeys off, `dt_headers` also gives `emit::path_class`. The packet
//! section goes to the per-CPU `PACKET_OUT` slot, from which `emit` copies it into the event.
use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use dockertrace_common::{
    counter,
    journey::{
        hop_bucket, HopHist, HopKey, JourneySlot, Packet, FAMILY_ARP, FAMILY_IPV4, FAMILY_IPV6,
        JOURNEY_LIVE_NS, JOURNEY_SLOTS, PKT_END, PKT_EVICTED, PKT_HEADERS, PKT_REUSED, PKT_VXLAN,
    },
    path_class as pc, KernelLayout, STACKS_ADAPTIVE,
};
use network_types::{
    arp::ArpHdr,
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
};

use crate::maps::{bump, layout, settings, HOP_HIST, HOP_HIST_NEW, JOURNEYS, JOURNEY_SEQ, PACKET_OUT};

/// `dt_headers`' `meta`: the current thread id (low 32 bits) and `skb->protocol` (bits
/// 32–47). `dt_journey`'s `meta` bit: the event ends its skb's journey.
pub const META_ENDS: u64 = 1 << 48;
/// `dt_section`'s `meta` bit: the event is a hop (an entry event on an skb).
pub const META_HOP: u64 = 1 << 50;

/// The first slot of an skb address's bucket (two slots): a multiplicative hash of the
/// address without its low bits (slab objects are at least 256-byte aligned).
#[inline(always)]
fn bucket_of(skb: u64) -> u32 {
    (((skb >> 8).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as u32 & (JOURNEY_SLOTS / 2 - 1)) * 2
}

/// The slot that tracks `skb`, or the one it should take: its bucket's slot holding it, else
/// the free or least recently used one.
#[inline(always)]
fn slot_for(skb: u64) -> Option<*mut JourneySlot> {
    let b = bucket_of(skb);
    let s0 = JOURNEYS.get_ptr_mut(b)?;
    let s1 = JOURNEYS.get_ptr_mut(b + 1)?;
    // SAFETY: plain reads of two slots of a shared array (see dt_journey).
    let (a0, t0, a1, t1) = unsafe { ((*s0).skbaddr, (*s0).last_ts, (*s1).skbaddr, (*s1).last_ts) };
    Some(if a0 == skb {
        s0
    } else if a1 == skb {
        s1
    } else if a0 == 0 || (a1 != 0 && t0 <= t1) {
        s0
    } else {
        s1
    })
}

/// Follows the event's skb, whose headers [`dt_headers`] has just read into `PACKET_OUT`:
/// continues its journey or starts one, and completes `PACKET_OUT`. Returns the event's path
/// class with adaptive stacks (else 0).
///
/// `dev`: `netns << 32 | ifindex` (0 unknown); `meta`: the headers' fingerprint (low 32 bits),
/// the path class (bits 32–39), `META_ENDS`. Apart from `dt_headers` (not called
/// from here): kernels before 6.x add up the stack frames of a whole call chain, global
/// functions included, against the 512-byte limit.
#[no_mangle]
#[inline(never)]
pub extern "C" fn dt_journey(skb: u64, kind: u32, dev: u64, now: u64, meta: u64) -> u32 {
    let class = ((meta >> 32) & 0xff) as u8;
    let fp = meta as u32;
    let Some(out) = PACKET_OUT.get_ptr_mut(0) else {
        return adaptive_class(class);
    };
    // SAFETY: this CPU's slot; programs do not nest on one CPU.
    let out = unsafe { &mut *out };
    let Some(slot) = slot_for(skb) else {
        return adaptive_class(class);
    };
    // SAFETY: a slot of a shared array. Two CPUs may update one slot at once (two skbs whose
    // addresses hash alike, in flight together): the worst outcome is a journey split or a
    // wrong hop count for those packets, never an invalid access.
    let slot = unsafe { &mut *slot };
    let age = now.saturating_sub(slot.last_ts);
    let live = slot.skbaddr != 0 && age <= settings().journey_gap_ns;
    let same = slot.skbaddr == skb;
    let matches = fp == 0 || slot.fingerprint == 0 || slot.fingerprint == fp;
    let (netns, ifindex) = ((dev >> 32) as u32, dev as u32);
    if same && live && matches {
        let delta = now.saturating_sub(slot.last_ts);
        let hop = slot.hop.saturating_add(1);
        if settings().aggregate != 0 {
            let prev = (u64::from(slot.last_netns) << 32) | u64::from(slot.last_ifindex);
            dt_hop_hist(slot.last_kind, prev, kind, dev, (delta << 8) | u64::from(class & !pc::IDLE));
        }
        slot.hop = hop;
        slot.last_ts = now;
        if slot.fingerprint == 0 {
            slot.fingerprint = fp;
        }
        out.id = slot.id;
        out.hop = hop;
        out.delta_ns = delta;
    } else {
        if same {
            bump(counter::JOURNEY_REUSED);
            out.flags |= PKT_REUSED;
        } else if slot.skbaddr != 0 && age <= JOURNEY_LIVE_NS {
            bump(counter::JOURNEY_EVICTED);
            out.flags |= PKT_EVICTED;
        }
        let id = next_id();
        *slot = JourneySlot { skbaddr: skb, id, last_ts: now, fingerprint: fp, ..JourneySlot::default() };
        bump(counter::JOURNEY_STARTED);
        out.id = id;
    }
    slot.last_kind = kind;
    slot.last_netns = netns;
    slot.last_ifindex = ifindex;
    if meta & META_ENDS != 0 {
        slot.skbaddr = 0;
        out.flags |= PKT_END;
        bump(counter::JOURNEY_ENDED);
    }
    adaptive_class(class)
}

/// The class an event goes out with: its path class with adaptive stacks, else 0.
#[inline(always)]
fn adaptive_class(class: u8) -> u32 {
    if settings().stack_mode == STACKS_ADAPTIVE {
        u32::from(class)
    } else {
        0
    }
}

/// Reads the skb's headers into `PACKET_OUT` (cleared first); returns the path class (low
/// byte, with the idle bit) and the headers' fingerprint (high 32 bits; 0: not read).
/// `meta` as for [`dt_journey`].
#[no_mangle]
#[inline(never)]
pub extern "C" fn dt_headers(skb: u64, meta: u64) -> u64 {
    let Some(out) = PACKET_OUT.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot; programs do not nest on one CPU.
    let out = unsafe { &mut *out };
    *out = Packet::default();
    let l = layout();
    let mut class = headers(skb as *const u8, (meta >> 32) as u16, l, out);
    if meta as u32 == 0 {
        class |= pc::IDLE;
    }
    (u64::from(fingerprint(out)) << 32) | u64::from(class)
}

/// VXLAN's UDP port (IANA; Docker's overlay driver and the netns overlay mode use it).
const VXLAN_PORT: u16 = 4789;

/// The packet inside a VXLAN tunnel (`FILTER_VXLAN`: overlay runs). Called after
/// [`dt_headers`] with its result (`parsed`): when `PACKET_OUT` holds an IPv4 UDP datagram to
/// port 4789 carrying a VXLAN frame (the I flag) with an IPv4 packet inside, it then describes
/// the inner packet — the one the journey follows on both sides of the tunnel — and keeps the
/// outer addresses, UDP source port and VNI in the bytes an IPv4 address leaves free
/// (`PKT_VXLAN`); returns what `dt_headers` returns, for the inner packet. Any other packet:
/// `parsed`, untouched.
///
/// A static function (not a global one), called by `dt_headers`' callers after it, only
/// under `FILTER_VXLAN`: a read-only setting, so without it the verifier prunes the call and
/// never walks the peel. 5.10 verifies every global function of a program, called or not, and
/// under emulation the peel as a global function (or as a branch at the end of `dt_headers`)
/// kept its verifier busy for minutes per program. Not from inside `dt_headers` either: kernels
/// add up the stack frames of a whole call chain against 512 bytes, and the drop programs'
/// chain has no room for a frame below it.
#[inline(never)]
pub fn vxlan(skb: u64, parsed: u64) -> u64 {
    let Some(out) = PACKET_OUT.get_ptr_mut(0) else {
        return parsed;
    };
    // SAFETY: this CPU's slot; programs do not nest on one CPU.
    let p = unsafe { &mut *out };
    if p.dport != VXLAN_PORT || p.l4 != IpProto::Udp as u8 || p.family != FAMILY_IPV4 {
        return parsed;
    }
    // The outer IPv4 header, its UDP header, the VXLAN header (flags, 3 reserved bytes, VNI,
    // 1 reserved byte), the inner Ethernet header (its EtherType at byte 12), the inner IP
    // header. Nothing is kept across the inner parse: the tunnel's fields are read again after
    // it (small reads, no buffer held) — kernels before 6.x count this frame, rounded up to
    // 32 bytes, in a 512-byte budget for the whole call chain.
    let start = network_start(skb as *const u8, layout(), pc::NET_IPV4);
    let vihl: u8 = read(start);
    let udp = start.wrapping_add(usize::from(vihl & 0x0f) * 4);
    let flags: u8 = read(udp.wrapping_add(8));
    let ethertype: u16 = read(udp.wrapping_add(16 + 12));
    if flags & 0x08 == 0 || ethertype != u16::from_ne_bytes([0x08, 0x00]) {
        return parsed;
    }
    *p = Packet::default();
    let l4class = ip(udp.wrapping_add(16 + 14), false, p);
    let idle = parsed as u8 & pc::IDLE;
    if l4class == NOT_READ {
        bump(counter::HEADERS_UNREADABLE);
        return u64::from(pc::NET_IPV4 | idle);
    }
    p.flags |= PKT_HEADERS | PKT_VXLAN;
    let outer_s: [u8; 4] = read(start.wrapping_add(12));
    p.saddr[4..8].copy_from_slice(&outer_s);
    let outer_d: [u8; 4] = read(start.wrapping_add(16));
    p.daddr[4..8].copy_from_slice(&outer_d);
    let vni: [u8; 4] = read(udp.wrapping_add(12));
    p.saddr[8..11].copy_from_slice(&vni[..3]);
    let sport: [u8; 2] = read(udp);
    p.daddr[8..10].copy_from_slice(&sport);
    (u64::from(fingerprint(p)) << 32) | u64::from(pc::NET_IPV4 | l4class | idle)
}

/// Ends the journey of an skb whose end event is not sent (not traced, or filtered out).
#[inline(always)]
pub fn end(skb: u64) {
    if skb == 0 {
        return;
    }
    if let Some(slot) = slot_for(skb) {
        // SAFETY: see dt_journey.
        let slot = unsafe { &mut *slot };
        if slot.skbaddr == skb {
            slot.skbaddr = 0;
            bump(counter::JOURNEY_ENDED);
        }
    }
}

/// Whether `skb` is a journey being followed: its bucket holds it, with a hop more recent than
/// the gap. Journeys start only at events that passed the filter, so such an skb is the
/// workload's — the test drops use, whose device is often unknown (`kfree_skb` after
/// `skb->dev` was cleared, or in the socket layer).
#[inline(always)]
pub fn followed(skb: u64, now: u64) -> bool {
    if skb == 0 || settings().journeys == 0 {
        return false;
    }
    let Some(slot) = slot_for(skb) else {
        return false;
    };
    // SAFETY: see dt_journey (plain reads).
    let (addr, last) = unsafe { ((*slot).skbaddr, (*slot).last_ts) };
    addr == skb && now.saturating_sub(last) <= settings().journey_gap_ns
}

/// Whether `skb` continues a followed journey (see [`followed`]) with the headers' fingerprint
/// `fp` (from `dt_headers`; 0: unread, which any journey accepts): the `--filter` decision
/// for a packet whose headers no longer match the filter (NAT, encapsulation) but whose
/// journey did. The fingerprint keeps another packet that reuses the address out.
#[inline(always)]
pub fn matches_journey(skb: u64, now: u64, fp: u32) -> bool {
    if !followed(skb, now) {
        return false;
    }
    let Some(slot) = slot_for(skb) else {
        return false;
    };
    // SAFETY: see dt_journey (a plain read).
    let have = unsafe { (*slot).fingerprint };
    fp == 0 || have == 0 || have == fp
}

/// The journey `skb` is on, if it is followed (see [`followed`]): its id and last hop.
#[inline(always)]
pub fn journey_of(skb: u64, now: u64) -> (u64, u16) {
    if skb == 0 || settings().journeys == 0 {
        return (0, 0);
    }
    let Some(slot) = slot_for(skb) else {
        return (0, 0);
    };
    // SAFETY: see dt_journey (plain reads).
    let (addr, last, id, hop) = unsafe { ((*slot).skbaddr, (*slot).last_ts, (*slot).id, (*slot).hop) };
    if addr == skb && now.saturating_sub(last) <= settings().journey_gap_ns {
        (id, hop)
    } else {
        (0, 0)
    }
}

/// A new journey id: `(cpu + 1) << 48 | n`, `n` counting this CPU's journeys (no atomics
/// needed: per-CPU).
#[inline(always)]
fn next_id() -> u64 {
    // SAFETY: a helper without arguments.
    let cpu = u64::from(unsafe { bpf_get_smp_processor_id() });
    let n = match JOURNEY_SEQ.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; programs do not nest on one CPU.
        Some(p) => unsafe {
            *p += 1;
            *p
        },
        None => 0,
    };
    ((cpu + 1) << 48) | (n & ((1 << 48) - 1))
}

/// Aggregate mode: adds one to the log2 histogram of the hops (prev → this). `both`:
/// `delta_ns << 8 | path class`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn dt_hop_hist(prev_kind: u32, prev: u64, kind: u32, dev: u64, both: u64) -> u32 {
    let key = HopKey {
        prev_kind,
        prev_netns: (prev >> 32) as u32,
        prev_ifindex: prev as u32,
        kind,
        netns: (dev >> 32) as u32,
        ifindex: dev as u32,
        class: (both & 0xff) as u32,
    };
    let b = hop_bucket(both >> 8) & (dockertrace_common::journey::HOP_BUCKETS - 1);
    if let Some(h) = HOP_HIST.get_ptr_mut(key) {
        // SAFETY: this CPU's value of a per-CPU map; entries are never deleted while programs run.
        let h = unsafe { &mut *h };
        if let Some(c) = h.buckets.get_mut(b) {
            *c += 1;
        }
        return 0;
    }
    let Some(new) = HOP_HIST_NEW.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch slot.
    let new = unsafe { &mut *new };
    *new = HopHist::default();
    if let Some(c) = new.buckets.get_mut(b) {
        *c = 1;
    }
    // Another CPU may have created the key meanwhile: then this CPU's slot of it was zeroed by
    // the kernel and this insert (BPF_ANY) sets it.
    if HOP_HIST.insert(key, new, 0).is_err() {
        bump(counter::HOP_HIST_FULL);
    }
    0
}

/// Reads the skb's headers into `p`; returns the path class they give (without the idle
/// bit). Unreadable headers of an IP or ARP packet are counted.
///
/// Written with as few branches as the parse allows: a failed read leaves zeros, which the
/// checks that follow refuse, instead of a branch of its own. Every branch here multiplies
/// the paths older verifiers walk (5.10 and 6.1 prune far less than 6.18).
#[inline(always)]
fn headers(skb: *const u8, protocol: u16, l: &KernelLayout, p: &mut Packet) -> u8 {
    let class = match protocol {
        0x0800 => pc::NET_IPV4,
        0x86dd => pc::NET_IPV6,
        0x0806 => pc::NET_ARP,
        _ => return pc::NET_OTHER,
    };
    let start = network_start(skb, l, class);
    let l4class = if class == pc::NET_ARP { arp(start, p) } else { ip(start, class == pc::NET_IPV6, p) };
    if l4class == NOT_READ {
        bump(counter::HEADERS_UNREADABLE);
        return class;
    }
    p.flags |= PKT_HEADERS;
    class | l4class
}

/// `ip`'s and `arp`'s result when the headers could not be read.
const NOT_READ: u8 = 0xff;

/// A plain read that leaves zeros where it fails. `T`: a header of integers and byte arrays
/// only (all zeros is a valid value).
#[inline(always)]
fn read<T: Copy>(at: *const u8) -> T {
    // SAFETY: bpf_probe_read_kernel tolerates any address; the `T`s read here are plain
    // headers (integers and byte arrays), for which all zeros is a valid value.
    unsafe { bpf_probe_read_kernel(at as *const T).unwrap_or_else(|_| core::mem::zeroed()) }
}

/// Where the network header is: `head + network_header` when that holds the header `class`
/// says (IP of the right version; an ARP header), else `data` (the network header on receive
/// once the link layer is pulled).
#[inline(always)]
fn network_start(skb: *const u8, l: &KernelLayout, class: u8) -> *const u8 {
    let head: u64 = read(skb.wrapping_add(l.skb_head as usize));
    let nh: u16 = read(skb.wrapping_add(l.skb_network_header as usize));
    let data: u64 = read(skb.wrapping_add(l.skb_data as usize));
    let first = head.wrapping_add(u64::from(nh)) as *const u8;
    let b: u8 = read(first);
    let want = match class {
        pc::NET_IPV4 => 4,
        pc::NET_IPV6 => 6,
        // ARP: hardware type Ethernet (0x0001) starts the header.
        _ => 0,
    };
    let good =
        if class == pc::NET_ARP { b == 0 && read::<u8>(first.wrapping_add(1)) == 1 } else { b >> 4 == want };
    if head != 0 && nh != u16::MAX && good {
        first
    } else {
        data as *const u8
    }
}

#[inline(always)]
fn arp(at: *const u8, p: &mut Packet) -> u8 {
    let h: ArpHdr = read(at);
    if h.hlen != 6 || h.plen != 4 || h.ptype != [0x08, 0x00] {
        return NOT_READ;
    }
    p.family = FAMILY_ARP;
    p.op = h.oper[1];
    p.saddr[..4].copy_from_slice(&h.spa);
    p.daddr[..4].copy_from_slice(&h.tpa);
    0
}

#[inline(always)]
fn ip(start: *const u8, v6: bool, p: &mut Packet) -> u8 {
    let b: u8 = read(start);
    let (proto, l4, mut payload) = if v6 {
        if b >> 4 != 6 {
            return NOT_READ;
        }
        // Straight into the packet section (no 40-byte header on the stack).
        // SAFETY: bpf_probe_read_kernel_buf tolerates any address; failures leave zeros.
        unsafe {
            let _ = bpf_probe_read_kernel_buf(start.wrapping_add(8), &mut p.saddr);
            let _ = bpf_probe_read_kernel_buf(start.wrapping_add(24), &mut p.daddr);
        }
        p.family = FAMILY_IPV6;
        let len: [u8; 2] = read(start.wrapping_add(4));
        let next: u8 = read(start.wrapping_add(6));
        (next, start.wrapping_add(Ipv6Hdr::LEN), u16::from_be_bytes(len))
    } else {
        let h: Ipv4Hdr = read(start);
        if h.vihl >> 4 != 4 {
            return NOT_READ;
        }
        p.family = FAMILY_IPV4;
        p.saddr[..4].copy_from_slice(&h.src_addr);
        p.daddr[..4].copy_from_slice(&h.dst_addr);
        p.ip_id = u16::from_be_bytes(h.id);
        let ihl = u16::from(h.ihl());
        (h.proto, start.wrapping_add(usize::from(ihl)), u16::from_be_bytes(h.tot_len).saturating_sub(ihl))
    };
    p.l4 = proto;
    // The first 20 bytes after the IP header: the TCP header, or UDP's 8 bytes, or ICMP's type.
    let t: TcpHdr = read(l4);
    let class = match proto {
        6 => {
            p.sport = u16::from_be_bytes(t.source);
            p.dport = u16::from_be_bytes(t.dest);
            p.seq = u32::from_be_bytes(t.seq);
            p.ack = u32::from_be_bytes(t.ack_seq);
            // The flags byte: offset 13 (CWR ECE URG ACK PSH RST SYN FIN).
            let flags = (t._bitfield_1.get(8, 8) & 0xff) as u8;
            p.tcp_flags = flags;
            payload = payload.saturating_sub(t.doff() * 4);
            pc::L4_TCP | pc::tcp_flag_class(flags)
        }
        17 => {
            p.sport = u16::from_be_bytes(t.source);
            p.dport = u16::from_be_bytes(t.dest);
            payload = payload.saturating_sub(8);
            pc::L4_UDP
        }
        1 | 58 => {
            p.op = t.source[0];
            pc::L4_ICMP
        }
        _ => pc::L4_OTHER,
    };
    p.payload_len = payload;
    class
}

/// What tells one packet from the next on the same skb address, and stays the same along its
/// way (NAT may rewrite addresses and ports, so they are left out except where nothing else
/// differs): 0 when the headers were not read.
#[inline(always)]
fn fingerprint(p: &Packet) -> u32 {
    if p.flags & PKT_HEADERS == 0 {
        return 0;
    }
    let mut h = mix(
        0x811c_9dc5,
        u32::from(p.family) << 24 | u32::from(p.l4) << 16 | u32::from(p.tcp_flags) << 8 | u32::from(p.op),
    );
    h = mix(h, p.seq);
    h = mix(h, p.ack);
    h = mix(h, u32::from(p.ip_id) << 16 | u32::from(p.payload_len));
    if p.family == FAMILY_ARP || (p.family == FAMILY_IPV6 && p.l4 != IpProto::Tcp as u8) {
        h = mix(h, u32::from_ne_bytes([p.saddr[12], p.saddr[13], p.saddr[14], p.saddr[15]]));
        h = mix(h, u32::from_ne_bytes([p.daddr[12], p.daddr[13], p.daddr[14], p.daddr[15]]));
        h = mix(h, u32::from_ne_bytes([p.saddr[0], p.saddr[1], p.daddr[0], p.daddr[1]]));
        h = mix(h, u32::from(p.sport) << 16 | u32::from(p.dport));
    }
    h | 1
}

/// One FNV-1a step over a 32-bit word.
#[inline(always)]
fn mix(h: u32, v: u32) -> u32 {
    (h ^ v).wrapping_mul(0x0100_0193)
}
