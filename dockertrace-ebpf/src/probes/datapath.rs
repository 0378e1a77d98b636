//! Datapath function probes: a kprobe and an fentry twin per function in
//! `dockertrace_common::datapath::DATAPATH_FUNCS`, each with its return twin (kretprobe,
//! fexit). The loader attaches the kprobe pair where the kernel has kprobes, else the fentry
//! pair, else reports the function as unavailable. An entry pushes its device, stack id and
//! journey hop on the function's pairing slot; the return pops it and reports how long the
//! function ran on that hop (`PKT_RETURN`), as the tracepoint exit events do.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{tracing::StackIdContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use dockertrace_common::{
    counter,
    datapath::{pair_slot, DatapathFunc, CLONE_INDEX, DATAPATH_FUNCS, PROBE_BASE, RET_BASE},
    record::{EVENT_DEV_FROM_PAIR, EVENT_HAS_SKB, STACK_NONE},
    tracepoints::{stack_shared, PAIR_POP, PAIR_PUSH},
    FILTER_CBPF,
};

use crate::{
    emit::{emit, pass_dev, pass_pid, pass_port, path_class, read_skb, DevInfo, Fields},
    journey,
    maps::{bump, layout, settings, DP_RETURNS},
    pair,
};

/// Whether `skb` is a journey being followed (the `--filter` decision of these programs).
#[inline(always)]
fn followed(skb: *const u8) -> bool {
    // SAFETY: a helper without arguments.
    journey::followed(skb as u64, unsafe { bpf_ktime_get_ns() })
}

/// Shared entry body: `skb` is the function's `struct sk_buff *` (or `**` when `pptr`).
#[inline(always)]
fn on_call<C: StackIdContext>(ctx: &C, index: u32, skb: *const u8, pptr: bool) -> u32 {
    bump(counter::SEEN);
    let mut f = Fields::new(PROBE_BASE + index, bpf_get_current_pid_tgid());
    let mut dev = DevInfo::UNKNOWN;
    let (pass, stack_id) = call_event(ctx, skb, pptr, &mut f, &mut dev);
    // Every call pushes (passed or not) once the return probe is there, so that each return
    // pops its own call's entry.
    if DP_RETURNS.get(index).is_some_and(|r| *r != 0) {
        pair::remember(pair_slot(index), PAIR_PUSH, &dev, pass, pair::sent_hop(pass), stack_id, &f);
    }
    0
}

/// The entry event: filters, then emit. Returns whether it went out, and its stack id.
#[inline(always)]
fn call_event<C: StackIdContext>(
    ctx: &C,
    skb: *const u8,
    pptr: bool,
    f: &mut Fields,
    dev: &mut DevInfo,
) -> (bool, i32) {
    let s = settings();
    if !pass_pid(s, (f.pid_tgid >> 32) as u32) {
        bump(counter::FILTERED);
        return (false, STACK_NONE);
    }
    let skb = if pptr {
        // SAFETY: reading a kernel pointer through bpf_probe_read_kernel.
        match unsafe { bpf_probe_read_kernel(skb as *const *const u8) } {
            Ok(p) => p,
            Err(_) => {
                bump(counter::READ_ERROR);
                return (false, STACK_NONE);
            }
        }
    } else {
        skb
    };
    if skb.is_null() {
        return (false, STACK_NONE);
    }
    let l = layout();
    let info = read_skb(skb, l);
    *dev = info.dev;
    // With `--filter`, a datapath call belongs to the workload when its skb is a journey the
    // capture programs matched (they start every journey then): these programs carry no
    // frame copy and no interpreter.
    if !pass_dev(s, dev) || !pass_port(s, skb, l) || (s.filters & FILTER_CBPF != 0 && !followed(skb)) {
        bump(counter::FILTERED);
        return (false, STACK_NONE);
    }
    f.flags = EVENT_HAS_SKB;
    f.class = path_class(s, skb, info.protocol, f.pid_tgid);
    f.skbaddr = skb as u64;
    f.len = info.len;
    f.protocol = info.protocol;
    (true, emit::<_, false>(ctx, f, dev, STACK_NONE))
}

/// Shared return body: pops the entry of this call and, when it went out, sends the return
/// event (the entry's device, stack and hop; the time since the entry is the duration).
#[inline(always)]
fn on_return<C: StackIdContext>(ctx: &C, index: u32) -> u32 {
    // Quiet when empty: a call already running when the return probe was attached.
    let Some(entry) = pair::recall(pair_slot(index), PAIR_POP, true) else {
        return 0;
    };
    // SAFETY: a live per-CPU map value (see pair::recall), read in place.
    let entry = unsafe { &*entry };
    if entry.pass == 0 {
        return 0;
    }
    bump(counter::SEEN);
    let dev =
        DevInfo { ifindex: entry.ifindex, netns: entry.netns, name: entry.dev, flags: entry.flags as u8 };
    let mut f = Fields {
        flags: EVENT_DEV_FROM_PAIR,
        class: entry.class as u8,
        hop: false,
        entry_packet: entry.packet,
        entry_hop: entry.hop as u16,
        entry_ts: entry.ts,
        ..Fields::new(RET_BASE + index, bpf_get_current_pid_tgid())
    };
    let shared = if stack_shared(entry.stack_id) { entry.stack_id } else { STACK_NONE };
    emit::<_, false>(ctx, &mut f, &dev, shared);
    0
}

macro_rules! datapath_probe {
    ($index:literal, $kprobe:ident, $fentry:ident, $kretprobe:ident, $fexit:ident) => {
        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            const F: DatapathFunc = DATAPATH_FUNCS[$index];
            let skb: *const u8 = ctx.arg(F.skb_arg as usize).unwrap_or(core::ptr::null());
            on_call(&ctx, $index, skb, F.skb_arg_is_pptr)
        }

        #[fentry]
        pub fn $fentry(ctx: FEntryContext) -> u32 {
            const F: DatapathFunc = DATAPATH_FUNCS[$index];
            let skb: *const u8 = ctx.arg(F.skb_arg as usize);
            on_call(&ctx, $index, skb, F.skb_arg_is_pptr)
        }

        #[kretprobe]
        pub fn $kretprobe(ctx: RetProbeContext) -> u32 {
            on_return(&ctx, $index)
        }

        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            on_return(&ctx, $index)
        }
    };
}

// Program names are `kp_<function>` / `fe_<function>` (entries) and `kr_<function>` /
// `fx_<function>` (returns); the loader relies on that.
datapath_probe!(0, kp_veth_xmit, fe_veth_xmit, kr_veth_xmit, fx_veth_xmit);
datapath_probe!(1, kp_br_dev_xmit, fe_br_dev_xmit, kr_br_dev_xmit, fx_br_dev_xmit);
datapath_probe!(2, kp_br_handle_frame, fe_br_handle_frame, kr_br_handle_frame, fx_br_handle_frame);
datapath_probe!(
    3,
    kp_macvlan_start_xmit,
    fe_macvlan_start_xmit,
    kr_macvlan_start_xmit,
    fx_macvlan_start_xmit
);
datapath_probe!(4, kp_ipvlan_start_xmit, fe_ipvlan_start_xmit, kr_ipvlan_start_xmit, fx_ipvlan_start_xmit);
datapath_probe!(5, kp_ipvlan_queue_xmit, fe_ipvlan_queue_xmit, kr_ipvlan_queue_xmit, fx_ipvlan_queue_xmit);
datapath_probe!(6, kp_loopback_xmit, fe_loopback_xmit, kr_loopback_xmit, fx_loopback_xmit);
datapath_probe!(7, kp_dev_forward_skb, fe_dev_forward_skb, kr_dev_forward_skb, fx_dev_forward_skb);
datapath_probe!(8, kp_vxlan_xmit, fe_vxlan_xmit, kr_vxlan_xmit, fx_vxlan_xmit);
datapath_probe!(9, kp_vxlan_rcv, fe_vxlan_rcv, kr_vxlan_rcv, fx_vxlan_rcv);

/// `skb_clone(skb)` entered: remembers the journey `skb` is on (none: the clone is not linked).
/// Clones of packets nobody follows (TCP clones every segment it sends from its write queue,
/// which no traced event has seen) cost this lookup and nothing else.
#[inline(always)]
fn on_clone(skb: u64) -> u32 {
    if DP_RETURNS.get(CLONE_INDEX).is_none_or(|r| *r == 0) {
        return 0;
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let (packet, hop) = journey::journey_of(skb, now);
    let f = Fields { ts: now, ..Fields::new(PROBE_BASE + CLONE_INDEX, 0) };
    pair::remember(
        pair_slot(CLONE_INDEX),
        PAIR_PUSH,
        &DevInfo::UNKNOWN,
        packet != 0,
        (packet, hop),
        STACK_NONE,
        &f,
    );
    0
}

/// `skb_clone` returned `clone`: a clone of a followed packet goes out as a return event on
/// its parent's hop (`PKT_RETURN`: the parent's journey and hop, skb_clone's duration) with the
/// clone's address as its skb; the clone's own first event then starts its journey, which
/// userspace links to the parent through that address.
#[inline(always)]
fn on_clone_return<C: StackIdContext>(ctx: &C, clone: u64) -> u32 {
    let Some(entry) = pair::recall(pair_slot(CLONE_INDEX), PAIR_POP, true) else {
        return 0;
    };
    // SAFETY: a live per-CPU map value (see pair::recall), read in place.
    let entry = unsafe { &*entry };
    if entry.pass == 0 || clone == 0 {
        return 0;
    }
    bump(counter::SEEN);
    let mut f = Fields {
        flags: EVENT_HAS_SKB,
        skbaddr: clone,
        hop: false,
        entry_packet: entry.packet,
        entry_hop: entry.hop as u16,
        entry_ts: entry.ts,
        ..Fields::new(RET_BASE + CLONE_INDEX, bpf_get_current_pid_tgid())
    };
    emit::<_, false>(ctx, &mut f, &DevInfo::UNKNOWN, STACK_NONE);
    0
}

// Program names `kp_skb_clone` / `kr_skb_clone`, `fe_skb_clone` / `fx_skb_clone`.
#[kprobe]
pub fn kp_skb_clone(ctx: ProbeContext) -> u32 {
    on_clone(ctx.arg::<u64>(0).unwrap_or(0))
}

#[kretprobe]
pub fn kr_skb_clone(ctx: RetProbeContext) -> u32 {
    on_clone_return(&ctx, ctx.ret::<u64>())
}

#[fentry]
pub fn fe_skb_clone(ctx: FEntryContext) -> u32 {
    on_clone(ctx.arg::<u64>(0))
}

#[fexit]
pub fn fx_skb_clone(ctx: FExitContext) -> u32 {
    // fexit's arguments: the function's (skb, gfp_mask), then its return value.
    on_clone_return(&ctx, ctx.arg::<u64>(2))
}
