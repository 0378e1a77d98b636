//! Datapath function probes: a kprobe and an fentry twin per function in
//! `dockertrace_common::datapath::DATAPATH_FUNCS`. The loader attaches the kprobe where the kernel has
//! kprobes, else the fentry, else reports the function as unavailable.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{fentry, kprobe},
    programs::{tracing::StackIdContext, FEntryContext, ProbeContext},
};
use dockertrace_common::{
    counter,
    datapath::{DatapathFunc, DATAPATH_FUNCS, PROBE_BASE},
    record::EVENT_HAS_SKB,
};

use crate::{
    emit::{emit, pass_dev, pass_pid, pass_port, path_class, read_skb, Fields},
    maps::{bump, layout, settings},
};

/// Shared body: `skb` is the function's `struct sk_buff *` (or `**` when `pptr`).
#[inline(always)]
fn on_call<C: StackIdContext>(ctx: &C, index: u32, skb: *const u8, pptr: bool) -> u32 {
    bump(counter::SEEN);
    let s = settings();
    let pid_tgid = bpf_get_current_pid_tgid();
    if !pass_pid(&s, (pid_tgid >> 32) as u32) {
        bump(counter::FILTERED);
        return 0;
    }
    let skb = if pptr {
        // SAFETY: reading a kernel pointer through bpf_probe_read_kernel.
        match unsafe { bpf_probe_read_kernel(skb as *const *const u8) } {
            Ok(p) => p,
            Err(_) => {
                bump(counter::READ_ERROR);
                return 0;
            }
        }
    } else {
        skb
    };
    if skb.is_null() {
        return 0;
    }
    let l = layout();
    let info = read_skb(skb, &l);
    if !pass_dev(&s, &info.dev) || !pass_port(&s, skb, &l) {
        bump(counter::FILTERED);
        return 0;
    }
    let f = Fields {
        kind: PROBE_BASE + index,
        flags: EVENT_HAS_SKB,
        class: path_class(&s, skb, info.protocol, pid_tgid),
        skbaddr: skb as u64,
        len: info.len,
        protocol: info.protocol,
        pid_tgid,
    };
    emit(ctx, &f, &info.dev, None);
    0
}

macro_rules! datapath_probe {
    ($index:literal, $kprobe:ident, $fentry:ident) => {
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
    };
}

// Program names are `kp_<function>` / `fe_<function>`; the loader relies on that.
datapath_probe!(0, kp_veth_xmit, fe_veth_xmit);
datapath_probe!(1, kp_br_dev_xmit, fe_br_dev_xmit);
datapath_probe!(2, kp_br_handle_frame, fe_br_handle_frame);
datapath_probe!(3, kp_macvlan_start_xmit, fe_macvlan_start_xmit);
datapath_probe!(4, kp_ipvlan_start_xmit, fe_ipvlan_start_xmit);
datapath_probe!(5, kp_ipvlan_queue_xmit, fe_ipvlan_queue_xmit);
datapath_probe!(6, kp_loopback_xmit, fe_loopback_xmit);
datapath_probe!(7, kp_dev_forward_skb, fe_dev_forward_skb);
