//! The tracepoint programs: one per slot, sharing one body (see `TP_SLOTS` for why).
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
    programs::TracePointContext,
    EbpfContext,
};
use aya_log_ebpf::warn;
use dockertrace_common::{
    counter,
    record::{EVENT_DEV_FROM_PAIR, EVENT_HAS_SKB, STACK_NONE},
    tracepoints::{
        stack_shared, PairEntry, TpConfig, NO_FIELD, PAIR_DEPTH, PAIR_GET, PAIR_NONE, PAIR_POP, PAIR_PUSH,
        PAIR_SET, PAIR_SLOTS,
    },
};

use crate::{
    emit::{emit, pass_dev, pass_pid, pass_port, read_skb, DevInfo, Fields},
    maps::{bump, layout, settings, PAIRS, TP_CONFIG},
};

/// Return value of tracepoint programs: non-zero lets the event through to other perf users
/// of the same tracepoint (`perf record` running beside dockertrace); 0 would hide it from them.
const PASS_THROUGH: u32 = 1;

/// Shared body of the slot programs.
#[inline(always)]
fn on_tracepoint(ctx: &TracePointContext, slot: u32) -> u32 {
    if try_tracepoint(ctx, slot).is_err() {
        bump(counter::READ_ERROR);
    }
    PASS_THROUGH
}

#[inline(always)]
fn try_tracepoint(ctx: &TracePointContext, slot: u32) -> Result<(), i32> {
    bump(counter::SEEN);
    let cfg = match TP_CONFIG.get(slot) {
        Some(c) if c.kind != 0 => *c,
        _ => {
            if bump(counter::NO_CONFIG) == 0 {
                warn!(ctx, "tracepoint program slot {} fired without configuration", slot);
            }
            return Ok(());
        }
    };
    let kind = cfg.kind;
    let s = settings();
    let pid_tgid = bpf_get_current_pid_tgid();
    if !pass_pid(&s, (pid_tgid >> 32) as u32) && cfg.pair_role == PAIR_NONE {
        bump(counter::FILTERED);
        return Ok(());
    }

    let mut f = Fields { kind, flags: 0, skbaddr: 0, len: 0, protocol: 0, pid_tgid };
    let mut dev = DevInfo::UNKNOWN;
    let inherits = cfg.pair_role == PAIR_POP || cfg.pair_role == PAIR_GET;
    if cfg.skbaddr_off != NO_FIELD {
        f.skbaddr = unsafe { ctx.read_at::<u64>(usize::from(cfg.skbaddr_off)) }?;
        if f.skbaddr != 0 {
            f.flags |= EVENT_HAS_SKB;
            // An exit event's skb may already belong to someone else (net_dev_xmit runs after
            // the driver took it): its device comes from the paired entry instead.
            if !inherits {
                let skb = read_skb(f.skbaddr as *const u8, &layout());
                f.len = skb.len;
                f.protocol = skb.protocol;
                dev = skb.dev;
            }
        }
    }
    if cfg.len_off != NO_FIELD {
        f.len = unsafe { ctx.read_at::<u32>(usize::from(cfg.len_off)) }?;
    }
    if cfg.name_off != NO_FIELD {
        read_name(ctx, &cfg, &mut dev);
    }

    let skb = f.skbaddr as *const u8;
    let (pass, shared) = match cfg.pair_role {
        PAIR_PUSH | PAIR_SET => (
            pass_pid(&s, (pid_tgid >> 32) as u32) && pass_dev(&s, &dev) && pass_port(&s, skb, &layout()),
            None,
        ),
        PAIR_POP | PAIR_GET => match recall(&cfg) {
            Some(entry) => {
                if entry.flags != 0 {
                    dev.ifindex = entry.ifindex;
                    dev.netns = entry.netns;
                    dev.flags = entry.flags as u16;
                    if cfg.name_off == NO_FIELD {
                        dev.name = entry.dev;
                    }
                    f.flags |= EVENT_DEV_FROM_PAIR;
                }
                (entry.pass != 0, stack_shared(entry.stack_id).then_some(entry.stack_id))
            }
            None => (pass_dev(&s, &dev) && pass_port(&s, skb, &layout()), None),
        },
        _ => (pass_dev(&s, &dev) && pass_port(&s, skb, &layout()), None),
    };
    // One call site for `emit` (it is inlined: every extra site is another copy in each of
    // the 64 programs). Slots attached only for pairing send nothing.
    let stack_id = if cfg.emit == 0 {
        STACK_NONE
    } else if pass {
        emit(ctx, &f, &dev, shared)
    } else {
        bump(counter::FILTERED);
        STACK_NONE
    };
    // The entry is remembered after it went out, so that its exit can reuse its stack.
    if cfg.pair_role == PAIR_PUSH || cfg.pair_role == PAIR_SET {
        remember(&cfg, &dev, pass, stack_id);
    }
    Ok(())
}

/// Reads a `__data_loc char[] name` field into `dev.name`.
#[inline(always)]
fn read_name(ctx: &TracePointContext, cfg: &TpConfig, dev: &mut DevInfo) {
    // __data_loc: low 16 bits = offset of the string in the record, high 16 bits = length.
    let Ok(loc) = (unsafe { ctx.read_at::<u32>(usize::from(cfg.name_off)) }) else {
        return;
    };
    let off = (loc & 0xffff) as usize;
    let mut name = [0u8; 16];
    // SAFETY: the string lives inside the trace record.
    let src = unsafe { (ctx.as_ptr() as *const u8).add(off) };
    if unsafe { bpf_probe_read_kernel_str_bytes(src, &mut name) }.is_ok() {
        dev.name = name;
    }
}

/// PUSH / SET: records the entry event's device (and the stack id it went out with) on this
/// CPU's stack for its slot.
#[inline(always)]
fn remember(cfg: &TpConfig, dev: &DevInfo, pass: bool, stack_id: i32) {
    let slot = u32::from(cfg.pair_slot);
    if slot >= PAIR_SLOTS {
        return;
    }
    let Some(st) = PAIRS.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: per-CPU value; tracepoints on one CPU run one at a time for a given nesting level.
    let st = unsafe { &mut *st };
    let entry = PairEntry {
        ifindex: dev.ifindex,
        netns: dev.netns,
        pass: u32::from(pass),
        flags: u32::from(dev.flags),
        dev: dev.name,
        stack_id,
        _pad: 0,
    };
    let depth = if cfg.pair_role == PAIR_SET { 0 } else { st.depth as usize };
    match st.entries.get_mut(depth) {
        Some(e) => *e = entry,
        None => {
            bump(counter::PAIR_MISS);
        }
    }
    if cfg.pair_role == PAIR_PUSH {
        st.depth = st.depth.saturating_add(1);
    }
}

/// POP / GET: the matching entry event's device, if it is known.
#[inline(always)]
fn recall(cfg: &TpConfig) -> Option<PairEntry> {
    let slot = u32::from(cfg.pair_slot);
    if slot >= PAIR_SLOTS {
        return None;
    }
    let st = PAIRS.get_ptr_mut(slot)?;
    // SAFETY: see remember.
    let st = unsafe { &mut *st };
    if cfg.pair_role == PAIR_GET {
        return st.entries.first().copied();
    }
    if st.depth == 0 {
        bump(counter::PAIR_MISS);
        return None;
    }
    st.depth -= 1;
    let top = st.depth as usize;
    if top >= PAIR_DEPTH {
        bump(counter::PAIR_MISS);
        return None;
    }
    st.entries.get(top).copied()
}

/// One program per slot: `dt_tp_<slot>` (the loader relies on these names).
///
/// Written out instead of using `#[tracepoint]`: aya's macro always returns 0, which makes the
/// kernel drop the event for every perf user of the tracepoint (see `PASS_THROUGH`).
macro_rules! slots {
    ($($name:ident = $slot:literal),* $(,)?) => {
        $(
            #[no_mangle]
            #[link_section = "tracepoint"]
            pub fn $name(ctx: *mut core::ffi::c_void) -> u32 {
                on_tracepoint(&TracePointContext::new(ctx), $slot)
            }
        )*
    };
}

slots!(
    dt_tp_0 = 0,
    dt_tp_1 = 1,
    dt_tp_2 = 2,
    dt_tp_3 = 3,
    dt_tp_4 = 4,
    dt_tp_5 = 5,
    dt_tp_6 = 6,
    dt_tp_7 = 7,
    dt_tp_8 = 8,
    dt_tp_9 = 9,
    dt_tp_10 = 10,
    dt_tp_11 = 11,
    dt_tp_12 = 12,
    dt_tp_13 = 13,
    dt_tp_14 = 14,
    dt_tp_15 = 15,
    dt_tp_16 = 16,
    dt_tp_17 = 17,
    dt_tp_18 = 18,
    dt_tp_19 = 19,
    dt_tp_20 = 20,
    dt_tp_21 = 21,
    dt_tp_22 = 22,
    dt_tp_23 = 23,
    dt_tp_24 = 24,
    dt_tp_25 = 25,
    dt_tp_26 = 26,
    dt_tp_27 = 27,
    dt_tp_28 = 28,
    dt_tp_29 = 29,
    dt_tp_30 = 30,
    dt_tp_31 = 31,
    dt_tp_32 = 32,
    dt_tp_33 = 33,
    dt_tp_34 = 34,
    dt_tp_35 = 35,
    dt_tp_36 = 36,
    dt_tp_37 = 37,
    dt_tp_38 = 38,
    dt_tp_39 = 39,
    dt_tp_40 = 40,
    dt_tp_41 = 41,
    dt_tp_42 = 42,
    dt_tp_43 = 43,
    dt_tp_44 = 44,
    dt_tp_45 = 45,
    dt_tp_46 = 46,
    dt_tp_47 = 47,
    dt_tp_48 = 48,
    dt_tp_49 = 49,
    dt_tp_50 = 50,
    dt_tp_51 = 51,
    dt_tp_52 = 52,
    dt_tp_53 = 53,
    dt_tp_54 = 54,
    dt_tp_55 = 55,
    dt_tp_56 = 56,
    dt_tp_57 = 57,
    dt_tp_58 = 58,
    dt_tp_59 = 59,
    dt_tp_60 = 60,
    dt_tp_61 = 61,
    dt_tp_62 = 62,
    dt_tp_63 = 63,
);
