//! The path every program shares: read the device, filter, reserve, fill, stack id, submit
//! (or, in aggregate mode, count the event in the `AGG` map).
use core::{ffi::c_void, mem::size_of, ptr::addr_of_mut};

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_prandom_u32, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_buf, generated,
    },
    programs::tracing::StackIdContext,
};
use dockertrace_common::{
    capture::{EventCap, Frame},
    counter,
    journey::{Packet, Pending, PKT_RETURN},
    record::{Event, RecordHeader, EVENT_HAS_DEV, RECORD_EVENT, STACK_NONE, STACK_SKIPPED, STACK_SPILL_BASE},
    tracepoints::stack_shared,
    AdaptSlot, AggKey, DevKey, KernelLayout, Settings, ADAPT_SLOTS, FILTER_DEV, FILTER_NETNS, FILTER_PID,
    FILTER_PORT, FILTER_VXLAN, NAME_LEN, STACKS_ADAPTIVE, STACKS_EVERY, STACKS_NONE,
};
use network_types::{
    ip::{IpProto, Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
};

use crate::{
    journey::{dt_headers, dt_journey, vxlan, META_ENDS, META_HOP},
    maps::{
        bump, settings, ADAPT, AGG, DEV_NAMES, EVENTS, FILTER_DEVS, FILTER_NETNS as NETNS_MAP, FILTER_PIDS,
        FRAME, PACKET_OUT, PENDING, STACKS, STACKS_SPILL,
    },
};

const EEXIST: i32 = 17;

/// The device an event is attributed to.
#[derive(Clone, Copy)]
pub struct DevInfo {
    pub ifindex: u32,
    pub netns: u32,
    pub name: [u8; NAME_LEN],
    /// `EVENT_HAS_DEV` when the fields above are real.
    pub flags: u8,
}

impl DevInfo {
    pub const UNKNOWN: DevInfo = DevInfo { ifindex: 0, netns: 0, name: [0; NAME_LEN], flags: 0 };

    pub fn known(&self) -> bool {
        self.flags & EVENT_HAS_DEV != 0
    }
}

/// What an skb says about itself.
pub struct SkbInfo {
    pub dev: DevInfo,
    pub len: u32,
    pub protocol: u16,
}

/// Reads `skb->dev` (and its name, ifindex, netns), `skb->len` and `skb->protocol`.
#[inline(always)]
pub fn read_skb(skb: *const u8, l: &KernelLayout) -> SkbInfo {
    let mut info = SkbInfo { dev: DevInfo::UNKNOWN, len: 0, protocol: 0 };
    // SAFETY: bpf_probe_read_kernel tolerates any address; failures are counted.
    unsafe {
        match bpf_probe_read_kernel(skb.add(l.skb_len as usize) as *const u32) {
            Ok(v) => info.len = v,
            Err(_) => {
                bump(counter::READ_ERROR);
            }
        }
        if let Ok(p) = bpf_probe_read_kernel(skb.add(l.skb_protocol as usize) as *const u16) {
            info.protocol = u16::from_be(p);
        }
        if let Ok(dev) = bpf_probe_read_kernel(skb.add(l.skb_dev as usize) as *const *const u8) {
            read_dev(dev, l, &mut info.dev);
        }
    }
    info
}

/// Fills `out` from a `struct net_device *`.
#[inline(always)]
pub fn read_dev(dev: *const u8, l: &KernelLayout, out: &mut DevInfo) {
    if dev.is_null() {
        return;
    }
    // SAFETY: see read_skb.
    unsafe {
        let Ok(ifindex) = bpf_probe_read_kernel(dev.add(l.dev_ifindex as usize) as *const u32) else {
            bump(counter::READ_ERROR);
            return;
        };
        out.ifindex = ifindex;
        let _ = bpf_probe_read_kernel_buf(dev.add(l.dev_name as usize), &mut out.name);
        if let Ok(net) = bpf_probe_read_kernel(dev.add(l.dev_nd_net as usize) as *const *const u8) {
            if !net.is_null() {
                if let Ok(inum) = bpf_probe_read_kernel(net.add(l.net_inum as usize) as *const u32) {
                    out.netns = inum;
                }
            }
        }
        out.flags = EVENT_HAS_DEV;
    }
}

/// The pid filter, checked before any other work.
#[inline(always)]
pub fn pass_pid(s: &Settings, tgid: u32) -> bool {
    // SAFETY: a lookup in a map of plain values; the value is only tested for presence.
    s.filters & FILTER_PID == 0 || unsafe { FILTER_PIDS.get(tgid) }.is_some()
}

/// The netns and device filters. Events whose device is unknown fail an active filter.
#[inline(always)]
pub fn pass_dev(s: &Settings, dev: &DevInfo) -> bool {
    if s.filters & (FILTER_NETNS | FILTER_DEV) == 0 {
        return true;
    }
    if !dev.known() {
        return false;
    }
    // SAFETY: as in pass_pid.
    if s.filters & FILTER_NETNS != 0 && unsafe { NETNS_MAP.get(dev.netns) }.is_none() {
        return false;
    }
    if s.filters & FILTER_DEV != 0 {
        let key = DevKey { netns: dev.netns, ifindex: dev.ifindex };
        // SAFETY: as in pass_pid.
        if unsafe { FILTER_DEVS.get(key) }.is_none() {
            return false;
        }
    }
    true
}

/// Where the skb's network header is: `skb->head + skb->network_header` (None when unset or
/// unreadable).
#[inline(always)]
fn network_header(skb: *const u8, l: &KernelLayout) -> Option<*const u8> {
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    unsafe {
        let head = bpf_probe_read_kernel(skb.wrapping_add(l.skb_head as usize) as *const *const u8).ok()?;
        let nh = bpf_probe_read_kernel(skb.wrapping_add(l.skb_network_header as usize) as *const u16).ok()?;
        (!head.is_null() && nh != u16::MAX).then(|| head.wrapping_add(usize::from(nh)))
    }
}

/// The L4 protocol and where its header is, after the IPv4 (with its options) or IPv6 header
/// at `ip`.
#[inline(always)]
fn transport_header(ip: *const u8, v6: bool) -> Option<(u8, *const u8)> {
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    unsafe {
        if v6 {
            let h = bpf_probe_read_kernel(ip as *const Ipv6Hdr).ok()?;
            Some((h.next_hdr, ip.wrapping_add(Ipv6Hdr::LEN)))
        } else {
            let h = bpf_probe_read_kernel(ip as *const Ipv4Hdr).ok()?;
            Some((h.proto, ip.wrapping_add(usize::from(h.ihl()))))
        }
    }
}

/// The port filter: a TCP segment over IPv4 or IPv6 whose source or destination port is
/// `Settings::port`. Reads the headers at `skb->head + skb->network_header`.
#[inline(always)]
pub fn pass_port(s: &Settings, skb: *const u8, l: &KernelLayout) -> bool {
    if s.filters & FILTER_PORT == 0 {
        return true;
    }
    if skb.is_null() {
        return false;
    }
    let Some(ip) = network_header(skb, l) else {
        return false;
    };
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    let Ok(first) = (unsafe { bpf_probe_read_kernel(ip) }) else {
        return false;
    };
    let v6 = match first >> 4 {
        4 => false,
        6 => true,
        _ => return false,
    };
    let tcp = match transport_header(ip, v6) {
        Some((proto, l4)) if proto == IpProto::Tcp as u8 => l4,
        _ => return false,
    };
    // SAFETY: bpf_probe_read_kernel tolerates any address.
    unsafe {
        let Ok(t) = bpf_probe_read_kernel(tcp as *const TcpHdr) else {
            return false;
        };
        let want = s.port.to_be_bytes();
        t.source == want || t.dest == want
    }
}

/// Everything an event carries besides what `emit` reads itself.
pub struct Fields {
    pub kind: u32,
    pub flags: u8,
    /// The skb's path class (adaptive stacks only; see [`path_class`]).
    pub class: u8,
    pub skbaddr: u64,
    pub len: u32,
    pub protocol: u16,
    pub pid_tgid: u64,
    /// The event ends its skb's journey (`skb:consume_skb`, `skb:kfree_skb`).
    pub ends: bool,
    /// The event is a hop of its skb's journey. Not so for exit events (`net:net_dev_xmit`,
    /// `*_exit`): they fire when the function their entry event opened returns — often after
    /// the packet's next hops (veth's `netif_rx` runs inside its `ndo_start_xmit`) — and their
    /// skb may already be someone else's.
    pub hop: bool,
    /// Exit events: their entry event's journey id (0: none), hop and time; the event then
    /// reports the function's duration on that hop instead of being a hop. Plain fields, not an
    /// `Option`: a `None`'s payload is uninitialised stack, which kernels before 6.3 refuse to
    /// let a program copy.
    pub entry_packet: u64,
    pub entry_hop: u16,
    pub entry_ts: u64,
    /// Out: the event's time (set by `emit`), for the entry of a pair to hand to its exit
    /// (with its journey and hop, which `PACKET_OUT` still holds).
    pub ts: u64,
    /// Drops: the freeing code's address and the kernel's drop reason (`EVENT_DROP`,
    /// `EVENT_HAS_REASON` in `flags`); 0 otherwise.
    pub drop_location: u64,
    pub drop_reason: u32,
}

impl Fields {
    /// An event of `kind` raised by `pid_tgid`, nothing read yet.
    #[inline(always)]
    pub fn new(kind: u32, pid_tgid: u64) -> Fields {
        Fields {
            kind,
            flags: 0,
            class: 0,
            skbaddr: 0,
            len: 0,
            protocol: 0,
            pid_tgid,
            ends: false,
            hop: true,
            entry_packet: 0,
            entry_hop: 0,
            entry_ts: 0,
            ts: 0,
            drop_location: 0,
            drop_reason: 0,
        }
    }
}

/// The skb's path class for adaptive stacks (0 in the other stack modes): its network
/// protocol, L4 protocol and TCP flag class, read from its headers, and whether the idle task
/// raised it. With journeys on, `emit` takes the class from the journey's header parse
/// instead (one parse per event), and this returns 0; with them off, it is that same parse
/// (`journey::dt_headers`, a global function: verified once on its own, its callers see a
/// scalar), whose packet section nobody reads then.
#[inline(always)]
pub fn path_class(s: &Settings, skb: *const u8, protocol: u16, pid_tgid: u64) -> u8 {
    if s.stack_mode != STACKS_ADAPTIVE || s.journeys != 0 {
        return 0;
    }
    (dt_headers(skb as u64, (pid_tgid & 0xffff_ffff) | (u64::from(protocol) << 32)) & 0x7f) as u8
}

/// Fills `PACKET_OUT` with the event's packet section and, with adaptive stacks, sets the
/// event's path class from the headers read: one call of a global function, without a branch
/// here. Older verifiers (5.10, 6.1) prune little: every branch of `emit` doubles the paths
/// they walk through the rest of it, in every program.
#[inline(always)]
fn packet_section(f: &mut Fields, dev: &DevInfo, now: u64) {
    if let Some(p) = PENDING.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; programs do not nest on one CPU.
        unsafe {
            *p = Pending { packet: f.entry_packet, ts: f.entry_ts, hop: u32::from(f.entry_hop), _pad: 0 }
        };
    }
    // An unknown device is (0, 0).
    let key = (u64::from(dev.netns) << 32) | u64::from(dev.ifindex);
    let mut meta =
        (f.pid_tgid & 0xffff_ffff) | (u64::from(f.protocol) << 32) | (u64::from(f.class & 0x7f) << 56);
    if f.ends {
        meta |= META_ENDS;
    }
    if f.hop {
        meta |= META_HOP;
    }
    f.class = (dt_section(f.skbaddr, f.kind, key, now, meta) & 0x7f) as u8;
}

/// The packet section of an event (see [`packet_section`]): an exit event whose entry event
/// was a hop (`PENDING`) reports that hop and the function's duration (`PKT_RETURN`); a hop
/// (journeys on, an skb, an entry event) has its headers read and its journey followed; any
/// other event gets an empty section. `meta`: the thread id and `skb->protocol` (as for
/// `dt_headers`), `META_ENDS`, `META_HOP`, and the event's class so far (bits 56–62).
/// Returns the event's class: from the headers with adaptive stacks, else the one given.
#[no_mangle]
#[inline(never)]
pub extern "C" fn dt_section(skb: u64, kind: u32, dev: u64, now: u64, meta: u64) -> u32 {
    let class_in = ((meta >> 56) & 0x7f) as u32;
    let Some(out) = PACKET_OUT.get_ptr_mut(0) else {
        return class_in;
    };
    let pending = match PENDING.get(0) {
        Some(p) => *p,
        None => Pending::default(),
    };
    if pending.packet != 0 || settings().journeys == 0 || skb == 0 || meta & META_HOP == 0 {
        let section = if pending.packet == 0 {
            Packet::default()
        } else {
            Packet {
                id: pending.packet,
                hop: pending.hop as u16,
                delta_ns: now.saturating_sub(pending.ts),
                flags: PKT_RETURN,
                ..Packet::default()
            }
        };
        // SAFETY: this CPU's slot; programs do not nest on one CPU.
        unsafe { *out = section };
        return class_in;
    }
    let parsed = headers_of(skb, meta);
    let class = parsed & 0xff;
    dt_journey(skb, kind, dev, now, (parsed >> 32) | (class << 32) | (meta & META_ENDS))
}

/// The headers a journey is followed by (the inner packet's, in a VXLAN tunnel): `dt_headers`
/// and the peel, one after the other. `meta` as for `dt_headers` (higher bits ignored).
#[inline(always)]
fn headers_of(skb: u64, meta: u64) -> u64 {
    let mut parsed = dt_headers(skb, meta & 0x0000_ffff_ffff_ffff);
    if settings().filters & FILTER_VXLAN != 0 {
        parsed = vxlan(skb, parsed);
    }
    parsed
}

/// Whether a drop's skb is a journey being followed: its address is (`journey::followed`),
/// and its headers are the journey's (`journey::matches_journey`). The address alone is not
/// enough: an skb freed without a tracepoint (`__kfree_skb` after TCP has read it) leaves its
/// slot live for the journey gap, and the next skb at that address — an IPv6 router
/// solicitation on some other device — would pass as the workload's drop. The headers are read
/// only for an address that is followed. `meta` as for `dt_headers`. A global function: the
/// drop programs see a scalar.
#[no_mangle]
#[inline(never)]
pub extern "C" fn dt_followed_drop(skb: u64, now: u64, meta: u64) -> u32 {
    if !crate::journey::followed(skb, now) {
        return 0;
    }
    let parsed = headers_of(skb, meta);
    u32::from(crate::journey::matches_journey(skb, now, (parsed >> 32) as u32))
}

/// Sends one event to userspace (already filtered), or counts it in aggregate mode. `shared`:
/// the stack id of the paired entry event, reused instead of walking the stack. Returns the
/// stack id the event went out with (`STACK_NONE` when it did not go out); `f.class` is the
/// class it went out with. `CAP` (the capture programs only): the record is an `EventCap`,
/// the event with the frame `capture::dt_capture` left in `FRAME`.
#[inline(always)]
pub fn emit<C: StackIdContext, const CAP: bool>(ctx: &C, f: &mut Fields, dev: &DevInfo, shared: i32) -> i32 {
    let s = settings();
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    f.ts = now;
    packet_section(f, dev, now);
    if s.aggregate != 0 {
        return count(ctx, s, f, dev, shared, now);
    }
    if CAP {
        send::<C, EventCap>(ctx, s, f, dev, shared, now, EventCap::HEADER)
    } else {
        send::<C, Event>(ctx, s, f, dev, shared, now, RecordHeader::of::<Event>(RECORD_EVENT))
    }
}

/// Reserves a record of type `T` (an `Event`, or an `EventCap`: an `Event` first, then the
/// frame), fills it, walks the stack and submits it.
#[inline(always)]
fn send<C: StackIdContext, T: 'static>(
    ctx: &C,
    s: &Settings,
    f: &mut Fields,
    dev: &DevInfo,
    shared: i32,
    now: u64,
    header: RecordHeader,
) -> i32 {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        bump(counter::RING_FULL);
        return STACK_NONE;
    };
    // Written in place, field by field: an `Event` built on the stack first (176 bytes, and
    // the packet section copied twice) would not fit the programs' 512-byte stack. Everything
    // but the stack id is written before the stack is walked, with helpers whose failure
    // leaves no branch: the stack walk's outcomes (a stack, a spilled one, an error) are paths
    // older verifiers walk to the end of the program each, so little may follow them.
    let e = entry.as_mut_ptr() as *mut Event;
    // SAFETY: `e` points at the reserved record, which starts with an `Event` (`T` is `Event`
    // or the `repr(C)` `EventCap`), valid for writes; every field is written before the
    // record is submitted; addr_of_mut never creates a reference to the uninitialised
    // memory. The raw helpers write at most the sizes given, inside the record (`comm`: 16
    // bytes; `packet`: a `Packet`; `frame`: a `Frame`, only when `T` is an `EventCap`), and
    // tolerate a failed source.
    unsafe {
        addr_of_mut!((*e).header).write(header);
        addr_of_mut!((*e).cpu).write(bpf_get_smp_processor_id());
        addr_of_mut!((*e).ts_ns).write(now);
        addr_of_mut!((*e).kind).write(f.kind);
        addr_of_mut!((*e).pid).write(f.pid_tgid as u32);
        addr_of_mut!((*e).tgid).write((f.pid_tgid >> 32) as u32);
        addr_of_mut!((*e).len).write(f.len);
        addr_of_mut!((*e).skbaddr).write(f.skbaddr);
        addr_of_mut!((*e).ifindex).write(dev.ifindex);
        addr_of_mut!((*e).netns).write(dev.netns);
        addr_of_mut!((*e).protocol).write(f.protocol);
        addr_of_mut!((*e).flags).write(f.flags | dev.flags);
        addr_of_mut!((*e).class).write(f.class);
        addr_of_mut!((*e).dev).write(dev.name);
        addr_of_mut!((*e).drop_location).write(f.drop_location);
        addr_of_mut!((*e).drop_reason).write(f.drop_reason);
        addr_of_mut!((*e)._pad).write(0);
        addr_of_mut!((*e).comm).write([0; NAME_LEN]);
        generated::bpf_get_current_comm(addr_of_mut!((*e).comm).cast(), NAME_LEN as u32);
        let src = PACKET_OUT.get_ptr(0).map_or(0u64, |p| p as u64);
        generated::bpf_probe_read_kernel(
            addr_of_mut!((*e).packet).cast(),
            size_of::<Packet>() as u32,
            src as *const c_void,
        );
        if size_of::<T>() == size_of::<EventCap>() {
            let ec = e as *mut EventCap;
            let src = FRAME.get_ptr(0).map_or(0u64, |p| p as u64);
            generated::bpf_probe_read_kernel(
                addr_of_mut!((*ec).frame).cast(),
                size_of::<Frame>() as u32,
                src as *const c_void,
            );
        }
    }
    let stack_id = stack_id(ctx, s, shared, f, dev, now);
    // SAFETY: as above.
    unsafe { addr_of_mut!((*e).stack_id).write(stack_id) };
    entry.submit(wakeup(s));
    bump(counter::SENT);
    stack_id
}

/// Submit flags: no wakeup while little is waiting (the reader polls on a timer), a forced one
/// once `wake_bytes` are waiting. Waking the reader costs an interrupt (a VM exit on virtual
/// machines); the kernel's default would pay it for nearly every record of a sparse stream.
#[inline(always)]
fn wakeup(s: &Settings) -> u64 {
    if s.wake_bytes == 0 {
        return 0;
    }
    if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= u64::from(s.wake_bytes) {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// The kernel stack id of the current event (`STACK_NONE` when stacks are off, `STACK_SKIPPED`
/// when sampling passed this event over, a negative errno when `bpf_get_stackid` failed;
/// failures are counted).
///
/// `STACKS` keeps one stack per hash bucket: a stack whose bucket holds another gets -EEXIST,
/// and goes to `STACKS_SPILL` instead (a second walk, paid only by such stacks).
///
/// The stack walk is most of an event's cost (the kernel unwinds 20–40 frames: ~4 µs here), so
/// the decision comes before it ([`walks`]). An exit event whose entry event went out with a
/// stack (or was passed over) takes the entry's id: both fire in the same function invocation,
/// so the frames name the same functions.
#[inline(always)]
fn stack_id<C: StackIdContext>(
    ctx: &C,
    s: &Settings,
    shared: i32,
    f: &Fields,
    dev: &DevInfo,
    now: u64,
) -> i32 {
    if s.stack_mode == STACKS_NONE {
        return STACK_NONE;
    }
    if stack_shared(shared) {
        bump(counter::STACK_SHARED);
        return shared;
    }
    if !walks(s, f, dev, now) {
        return STACK_SKIPPED;
    }
    let id = match ctx.get_stackid(&STACKS, 0) {
        Err(e) if e == -EEXIST => ctx.get_stackid(&STACKS_SPILL, 0).map(|id| id + STACK_SPILL_BASE as i64),
        r => r,
    };
    match id {
        Ok(id) => id as i32,
        Err(e) => {
            bump(if e == -EEXIST { counter::STACK_COLLISION } else { counter::STACK_ERROR });
            e
        }
    }
}

/// Whether this event's stack is walked. Every event: always. Sampled: 1 in `stacks` at
/// random. Adaptive: the event's key (kind, netns, ifindex, path class) walks its first
/// `adapt_first` events of each `adapt_window_ns` window, then 1 in `stacks` at random; a key
/// that finds its slot of `ADAPT` held by another key takes the slot over and starts a new
/// window, so a key never seen before always walks.
#[inline(always)]
fn walks(s: &Settings, f: &Fields, dev: &DevInfo, now: u64) -> bool {
    let sample = || {
        // SAFETY: a helper without arguments.
        s.stacks <= 1 || unsafe { bpf_get_prandom_u32() } % s.stacks == 0
    };
    match s.stack_mode {
        STACKS_EVERY => true,
        STACKS_ADAPTIVE => {
            let (netns, ifindex) = if dev.known() { (dev.netns, dev.ifindex) } else { (0, 0) };
            let class = u32::from(f.class);
            let h = f.kind.wrapping_mul(0x9e37_79b1)
                ^ netns.wrapping_mul(0x85eb_ca6b)
                ^ ifindex.wrapping_mul(0xc2b2_ae35)
                ^ class.wrapping_mul(0x27d4_eb2f);
            let Some(slot) = ADAPT.get_ptr_mut((h ^ (h >> 16)) & (ADAPT_SLOTS - 1)) else {
                return sample();
            };
            // SAFETY: this CPU's slot; programs do not nest on one CPU (the kernel's
            // `bpf_prog_active` guard), so nothing else touches it meanwhile.
            let slot = unsafe { &mut *slot };
            if slot.kind != f.kind || slot.netns != netns || slot.ifindex != ifindex || slot.class != class {
                if slot.window_start != 0 {
                    bump(counter::ADAPT_TAKEOVER);
                }
                *slot =
                    AdaptSlot { kind: f.kind, netns, ifindex, class, window_start: now, count: 0, _pad: 0 };
            } else if now.wrapping_sub(slot.window_start) > s.adapt_window_ns {
                slot.window_start = now;
                slot.count = 0;
            }
            if slot.count < s.adapt_first {
                slot.count += 1;
                return true;
            }
            sample()
        }
        _ => sample(),
    }
}

/// Aggregate mode: adds one to `AGG[(kind, device, stack)]` and remembers the device's name.
/// No ring-buffer work at all. Counted events count as sent; events the full map cannot take
/// count as `AGG_FULL`.
#[inline(always)]
fn count<C: StackIdContext>(ctx: &C, s: &Settings, f: &Fields, dev: &DevInfo, shared: i32, now: u64) -> i32 {
    let stack_id = stack_id(ctx, s, shared, f, dev, now);
    let (netns, ifindex) = if dev.known() { (dev.netns, dev.ifindex) } else { (0, 0) };
    if dev.known() {
        // The first writer wins; later ones get -EEXIST, which is fine (same name).
        let _ = DEV_NAMES.insert(DevKey { netns, ifindex }, dev.name, u64::from(BPF_NOEXIST));
    }
    let key = AggKey { kind: f.kind, netns, ifindex, stack_id, class: f.class, _pad: [0; 3] };
    if add_one(&key) {
        bump(counter::SENT);
        stack_id
    } else {
        bump(counter::AGG_FULL);
        STACK_NONE
    }
}

/// Adds one to this CPU's `AGG[key]`, creating the entry if needed. False when the map refused
/// the entry (full).
#[inline(always)]
fn add_one(key: &AggKey) -> bool {
    if increment(key) {
        return true;
    }
    match AGG.insert(key, 1u64, u64::from(BPF_NOEXIST)) {
        Ok(()) => true,
        // Exists after all (a program on another CPU created it between our lookup and insert:
        // the kernel then holds this CPU's zero-filled slot too): add to it.
        Err(e) if e == -EEXIST => increment(key),
        Err(_) => false,
    }
}

/// Adds one to this CPU's slot of an existing `AGG[key]`; false when there is no such entry.
///
/// No atomic is needed (the BPF target of this rustc has no atomic read-modify-write): the map is
/// per-CPU, and tracepoint and kprobe programs do not nest on one CPU (the kernel's
/// `bpf_prog_active` guard skips a program that would run inside another).
#[inline(always)]
fn increment(key: &AggKey) -> bool {
    match AGG.get_ptr_mut(key) {
        Some(p) => {
            // SAFETY: `p` points at this CPU's live, aligned u64 slot; entries are never deleted
            // while programs run.
            unsafe { *p += 1 };
            true
        }
        None => false,
    }
}
