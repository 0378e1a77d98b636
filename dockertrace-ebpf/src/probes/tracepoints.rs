//! The tracepoint family's programs: one per slot and attach type (see `TP_SLOTS` for why),
//! sharing one body per way of reading the event: `dt_tp_<slot>` on the perf path (fields from
//! the trace record), `dt_btf_<slot>` (`tp_btf`) and `dt_raw_<slot>` (`raw_tp`), whose fields
//! come from the tracepoint's arguments. All three end in the same `deliver` step.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
    },
    programs::{tracing::StackIdContext, BtfTracePointContext, RawTracePointContext, TracePointContext},
    EbpfContext,
};
use aya_log_ebpf::warn;
use dockertrace_common::{
    counter,
    journey::JOURNEY_ENDS,
    record::{EVENT_DEV_FROM_PAIR, EVENT_DROP, EVENT_HAS_REASON, EVENT_HAS_SKB, STACK_NONE},
    tracepoints::{
        stack_shared, TpConfig, DROP_SLOT, NO_ARG, NO_FIELD, PAIR_GET, PAIR_NONE, PAIR_POP, PAIR_PUSH,
        PAIR_SET,
    },
};

use crate::{
    capture::{dt_capture, CAP_HOP},
    emit::{
        dt_followed_drop, emit, pass_dev, pass_pid, pass_port, path_class, read_dev, read_skb, DevInfo,
        Fields,
    },
    journey,
    maps::{bump, layout, settings, TP_CONFIG},
    pair,
};

/// Return value of tracepoint programs: non-zero lets the event through to other perf users
/// of the same tracepoint (`perf record` running beside dockertrace); 0 would hide it from them.
const PASS_THROUGH: u32 = 1;

/// The shared bodies return what these read-only globals hold, through a volatile load. A
/// constant return would let the compiler fold it into the callers and leave the subprogram's
/// own return register undefined — the verifier refuses a subprogram that may return a pointer
/// into its stack. The verifier knows the values (the map is frozen): 1 and 0.
#[no_mangle]
static RET_PASS_THROUGH: u32 = PASS_THROUGH;
#[no_mangle]
static RET_RAW: i32 = 0;

#[inline(always)]
fn ret<T: Copy>(v: &T) -> T {
    // SAFETY: a plain read of a global the loader initialised before load.
    unsafe { core::ptr::read_volatile(v) }
}

/// Shared body of the perf-path slot programs.
///
/// Not inlined, like [`on_args`]: the 64 slot programs call one body (a BPF-to-BPF call) instead
/// of carrying a copy each — the object's size, and the loader's memory, stay those of one.
#[inline(never)]
fn on_tracepoint<const DROP: bool, const CAP: bool>(ctx: &TracePointContext, slot: u32) -> u32 {
    if let Some(cfg) = config(ctx, slot) {
        if try_record::<DROP, CAP>(ctx, &cfg).is_err() {
            bump(counter::READ_ERROR);
        }
    }
    ret(&RET_PASS_THROUGH)
}

/// Shared body of the `tp_btf` and `raw_tp` slot programs: both get the tracepoint's
/// `TP_PROTO` arguments as an array of u64 at `ctx` (no trace record is written for them).
///
/// Not inlined: the 128 slot programs call this one body (a BPF-to-BPF call, linked into each
/// program the loader loads) instead of carrying a copy each.
#[inline(never)]
fn on_args<C: StackIdContext + EbpfContext, const DROP: bool, const CAP: bool>(ctx: &C, slot: u32) -> i32 {
    if let Some(cfg) = config(ctx, slot) {
        try_args::<C, DROP, CAP>(ctx, &cfg);
    }
    ret(&RET_RAW)
}

/// The slot's configuration, counting the event as seen (and a slot without one).
#[inline(always)]
fn config<C: EbpfContext>(ctx: &C, slot: u32) -> Option<TpConfig> {
    bump(counter::SEEN);
    match TP_CONFIG.get(slot) {
        Some(c) if c.kind != 0 => Some(*c),
        _ => {
            if bump(counter::NO_CONFIG) == 0 {
                warn!(ctx, "tracepoint program slot {} fired without configuration", slot);
            }
            None
        }
    }
}

/// Whether an event of this role takes its device from the paired entry event: an exit
/// event's skb may already belong to someone else (net_dev_xmit runs after the driver took
/// it, veth has re-pointed `skb->dev` to its peer).
#[inline(always)]
fn inherits(cfg: &TpConfig) -> bool {
    cfg.pair_role == PAIR_POP || cfg.pair_role == PAIR_GET
}

/// Perf path: reads the event's fields from the trace record at the offsets of its format.
#[inline(always)]
fn try_record<const DROP: bool, const CAP: bool>(ctx: &TracePointContext, cfg: &TpConfig) -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if skips::<DROP>(cfg, pid_tgid) {
        if cfg.journey == JOURNEY_ENDS && cfg.skbaddr_off != NO_FIELD {
            // SAFETY: read_at reads the record through bpf_probe_read; the offset is the field's.
            journey::end(unsafe { ctx.read_at::<u64>(usize::from(cfg.skbaddr_off)) }?);
        }
        return Ok(());
    }
    let mut f = Fields::new(cfg.kind, pid_tgid);
    let mut dev = DevInfo::UNKNOWN;
    if cfg.skbaddr_off != NO_FIELD {
        // SAFETY: read_at reads the record through bpf_probe_read; the offset is the field's.
        f.skbaddr = unsafe { ctx.read_at::<u64>(usize::from(cfg.skbaddr_off)) }?;
        from_skb(cfg, &mut f, &mut dev);
    }
    if cfg.len_off != NO_FIELD {
        // SAFETY: as above.
        f.len = unsafe { ctx.read_at::<u32>(usize::from(cfg.len_off)) }?;
    }
    if DROP {
        f.flags |= EVENT_DROP;
        if cfg.location_off != NO_FIELD {
            // SAFETY: as above.
            f.drop_location = unsafe { ctx.read_at::<u64>(usize::from(cfg.location_off)) }?;
        }
        if cfg.reason_off != NO_FIELD {
            // SAFETY: as above.
            f.drop_reason = unsafe { ctx.read_at::<u32>(usize::from(cfg.reason_off)) }?;
            f.flags |= EVENT_HAS_REASON;
        }
    }
    let named = cfg.name_off != NO_FIELD;
    if named {
        read_name(ctx, cfg, &mut dev);
    }
    deliver::<_, DROP, CAP>(ctx, cfg, &mut f, &mut dev, named);
    Ok(())
}

/// `tp_btf` / `raw_tp`: reads the event's fields from the tracepoint's arguments, at the
/// positions the loader found in the kernel's BTF prototype.
#[inline(always)]
fn try_args<C: StackIdContext + EbpfContext, const DROP: bool, const CAP: bool>(ctx: &C, cfg: &TpConfig) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if skips::<DROP>(cfg, pid_tgid) {
        if cfg.journey == JOURNEY_ENDS && cfg.skb_arg != NO_ARG {
            journey::end(arg(ctx, cfg.skb_arg));
        }
        return;
    }
    let mut f = Fields::new(cfg.kind, pid_tgid);
    let mut dev = DevInfo::UNKNOWN;
    if cfg.skb_arg != NO_ARG {
        f.skbaddr = arg(ctx, cfg.skb_arg);
        from_skb(cfg, &mut f, &mut dev);
    }
    if cfg.len_arg != NO_ARG {
        f.len = arg(ctx, cfg.len_arg) as u32;
    }
    if DROP {
        f.flags |= EVENT_DROP;
        if cfg.location_arg != NO_ARG {
            f.drop_location = arg(ctx, cfg.location_arg);
        }
        if cfg.reason_arg != NO_ARG {
            f.drop_reason = arg(ctx, cfg.reason_arg) as u32;
            f.flags |= EVENT_HAS_REASON;
        }
    }
    // A device argument names the device of an event without an skb (net_dev_xmit_timeout);
    // with an skb, the skb's device is the one every attach type reports.
    if cfg.dev_arg != NO_ARG && !dev.known() && !inherits(cfg) {
        read_dev(arg(ctx, cfg.dev_arg) as *const u8, layout(), &mut dev);
    }
    deliver::<C, DROP, CAP>(ctx, cfg, &mut f, &mut dev, false);
}

/// Whether the event goes no further than its journey's end: a slot attached only to end
/// journeys, or an event of a process the pid filter drops (unless pairing needs it; counted
/// as filtered).
#[inline(always)]
fn skips<const DROP: bool>(cfg: &TpConfig, pid_tgid: u64) -> bool {
    if cfg.emit == 0 && cfg.journey == JOURNEY_ENDS && cfg.pair_role == PAIR_NONE {
        return true;
    }
    // A drop's pid is whoever ran when the kernel freed the skb (often softirq): its journey
    // decides (`deliver`), not the pid filter.
    if !DROP && !pass_pid(settings(), (pid_tgid >> 32) as u32) && cfg.pair_role == PAIR_NONE {
        bump(counter::FILTERED);
        return true;
    }
    false
}

/// Argument `n` of a raw tracepoint. The context is an array of u64; the verifier allows only
/// constant offsets into it, so the slot's (run-time) index is read through
/// bpf_probe_read_kernel instead.
#[inline(always)]
fn arg<C: EbpfContext>(ctx: &C, n: u8) -> u64 {
    let at = (ctx.as_ptr() as *const u64).wrapping_add(usize::from(n & 15));
    // SAFETY: bpf_probe_read_kernel tolerates any address; the arguments live on the stack
    // of the kernel's tracepoint trampoline.
    unsafe { bpf_probe_read_kernel(at) }.unwrap_or_else(|_| {
        bump(counter::READ_ERROR);
        0
    })
}

/// The event's skb: its device, length and protocol, unless the event inherits them.
#[inline(always)]
fn from_skb(cfg: &TpConfig, f: &mut Fields, dev: &mut DevInfo) {
    if f.skbaddr == 0 {
        return;
    }
    f.flags |= EVENT_HAS_SKB;
    f.ends = cfg.journey == JOURNEY_ENDS;
    f.hop = !inherits(cfg);
    if !inherits(cfg) {
        let l = layout();
        let skb = read_skb(f.skbaddr as *const u8, l);
        f.len = skb.len;
        f.protocol = skb.protocol;
        f.class = path_class(settings(), f.skbaddr as *const u8, skb.protocol, f.pid_tgid);
        *dev = skb.dev;
    }
}

/// What every attach type shares once the fields are read: filters, pairing, emit. `named`:
/// the device name came from the event itself (a record's `name` field), so an inherited
/// device keeps it.
#[inline(always)]
fn deliver<C: StackIdContext, const DROP: bool, const CAP: bool>(
    ctx: &C,
    cfg: &TpConfig,
    f: &mut Fields,
    dev: &mut DevInfo,
    named: bool,
) {
    let s = settings();
    let skb = f.skbaddr as *const u8;
    // The exit event found its entry: the entry's filter decision holds.
    let mut from_entry = false;
    let (mut pass, shared) = match cfg.pair_role {
        PAIR_PUSH | PAIR_SET => (
            pass_pid(s, (f.pid_tgid >> 32) as u32) && pass_dev(s, dev) && pass_port(s, skb, layout()),
            STACK_NONE,
        ),
        PAIR_POP | PAIR_GET => match pair::recall(u32::from(cfg.pair_slot), cfg.pair_role, false) {
            Some(entry) => {
                // SAFETY: a live per-CPU map value (see recall); read in place, not copied:
                // a 64-byte copy on the stack would count against every call chain's 512 bytes.
                let entry = unsafe { &*entry };
                from_entry = true;
                if entry.flags != 0 {
                    dev.ifindex = entry.ifindex;
                    dev.netns = entry.netns;
                    dev.flags = entry.flags as u8;
                    if !named {
                        dev.name = entry.dev;
                    }
                    f.flags |= EVENT_DEV_FROM_PAIR;
                }
                f.class = entry.class as u8;
                if entry.packet != 0 && cfg.pair_role == PAIR_POP {
                    f.entry_packet = entry.packet;
                    f.entry_hop = entry.hop as u16;
                    f.entry_ts = entry.ts;
                }
                (entry.pass != 0, if stack_shared(entry.stack_id) { entry.stack_id } else { STACK_NONE })
            }
            None => (pass_dev(s, dev) && pass_port(s, skb, layout()), STACK_NONE),
        },
        // A drop belongs to the workload when its skb is a journey being followed (its device
        // is often gone by then), or, like any event, when it passes the filters.
        _ if DROP => (
            dt_followed_drop(f.skbaddr, now(), (f.pid_tgid & 0xffff_ffff) | (u64::from(f.protocol) << 32))
                != 0
                || (pass_pid(s, (f.pid_tgid >> 32) as u32)
                    && pass_dev(s, dev)
                    && pass_port(s, skb, layout())),
            STACK_NONE,
        ),
        _ => (pass_dev(s, dev) && pass_port(s, skb, layout()), STACK_NONE),
    };
    // Capture programs: the frame, and the `--filter` decision (an exit event that found its
    // entry took the entry's). The default programs have no such call.
    if CAP && pass && !from_entry {
        pass = capture(f);
    }
    // One call site for `emit` (it is inlined: every extra site is another copy in each
    // program). Slots attached only for pairing send nothing.
    let stack_id = if cfg.emit == 0 {
        STACK_NONE
    } else if pass {
        emit::<C, CAP>(ctx, f, dev, shared)
    } else {
        bump(counter::FILTERED);
        STACK_NONE
    };
    // An end event that did not go out still ends its journey.
    if f.ends && (cfg.emit == 0 || !pass) {
        journey::end(f.skbaddr);
    }
    // The entry is remembered after it went out, so that its exit can reuse its stack.
    if cfg.pair_role == PAIR_PUSH || cfg.pair_role == PAIR_SET {
        let hop = pair::sent_hop(pass && cfg.emit != 0);
        pair::remember(u32::from(cfg.pair_slot), cfg.pair_role, dev, pass, hop, stack_id, f);
    }
}

/// The capture programs' step before `emit` (see `capture::dt_capture`): copies the frame of
/// a hop and applies the `--filter` program. Whether the event passes.
#[inline(always)]
fn capture(f: &Fields) -> bool {
    let mut meta = (f.pid_tgid & 0xffff_ffff) | (u64::from(f.protocol) << 32);
    if f.hop {
        meta |= CAP_HOP;
    }
    dt_capture(f.skbaddr, meta) != 0
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// Reads a `__data_loc char[] name` field into `dev.name`.
#[inline(always)]
fn read_name(ctx: &TracePointContext, cfg: &TpConfig, dev: &mut DevInfo) {
    // __data_loc: low 16 bits = offset of the string in the record, high 16 bits = length.
    // SAFETY: read_at reads the record through bpf_probe_read; the offset is the field's.
    let Ok(loc) = (unsafe { ctx.read_at::<u32>(usize::from(cfg.name_off)) }) else {
        return;
    };
    let off = (loc & 0xffff) as usize;
    let mut name = [0u8; 16];
    let src = (ctx.as_ptr() as *const u8).wrapping_add(off);
    // SAFETY: bpf_probe_read_kernel_str_bytes tolerates any address; the string lives inside
    // the trace record.
    if unsafe { bpf_probe_read_kernel_str_bytes(src, &mut name) }.is_ok() {
        dev.name = name;
    }
}

/// The drop tracepoint's programs (`skb:kfree_skb` as drops), configured in
/// `TP_CONFIG[DROP_SLOT]`: the slot bodies compiled with `DROP` set. Reading the drop's reason
/// and location and keeping the drops of followed journeys are branches of their own; in the
/// other 64 slots' programs each would double the paths an old verifier (5.10) walks through
/// everything after it, for events that are never drops.
#[no_mangle]
#[link_section = "tracepoint"]
pub fn dt_tp_drop(ctx: *mut core::ffi::c_void) -> u32 {
    on_tracepoint::<true, false>(&TracePointContext::new(ctx), DROP_SLOT)
}

#[no_mangle]
#[link_section = "tp_btf"]
pub fn dt_btf_drop(ctx: *mut core::ffi::c_void) -> i32 {
    on_args::<_, true, false>(&BtfTracePointContext::new(ctx), DROP_SLOT)
}

#[no_mangle]
#[link_section = "raw_tp"]
pub fn dt_raw_drop(ctx: *mut core::ffi::c_void) -> i32 {
    on_args::<_, true, false>(&RawTracePointContext::new(ctx), DROP_SLOT)
}

/// The drop programs' capture twins (`--pcap`, `--filter`).
#[no_mangle]
#[link_section = "tracepoint"]
pub fn dt_tp_cap_drop(ctx: *mut core::ffi::c_void) -> u32 {
    on_tracepoint::<true, true>(&TracePointContext::new(ctx), DROP_SLOT)
}

#[no_mangle]
#[link_section = "tp_btf"]
pub fn dt_btf_cap_drop(ctx: *mut core::ffi::c_void) -> i32 {
    on_args::<_, true, true>(&BtfTracePointContext::new(ctx), DROP_SLOT)
}

#[no_mangle]
#[link_section = "raw_tp"]
pub fn dt_raw_cap_drop(ctx: *mut core::ffi::c_void) -> i32 {
    on_args::<_, true, true>(&RawTracePointContext::new(ctx), DROP_SLOT)
}

/// Three programs per slot: `dt_tp_<slot>`, `dt_btf_<slot>`, `dt_raw_<slot>`, and their
/// capture twins `dt_tp_cap_<slot>`, `dt_btf_cap_<slot>`, `dt_raw_cap_<slot>` (frame copy and
/// `--filter`; the loader picks them only with `--pcap` or `--filter`). The loader relies on
/// these names.
///
/// Written out instead of using `#[tracepoint]`: aya's macro always returns 0, which makes the
/// kernel drop the event for every perf user of the tracepoint (see `PASS_THROUGH`).
/// Raw tracepoint programs' return values are ignored.
macro_rules! slots {
    ($($slot:literal: $tp:ident $btf:ident $raw:ident $tpc:ident $btfc:ident $rawc:ident),* $(,)?) => {
        $(
            #[no_mangle]
            #[link_section = "tracepoint"]
            pub fn $tp(ctx: *mut core::ffi::c_void) -> u32 {
                on_tracepoint::<false, false>(&TracePointContext::new(ctx), $slot)
            }

            #[no_mangle]
            #[link_section = "tp_btf"]
            pub fn $btf(ctx: *mut core::ffi::c_void) -> i32 {
                on_args::<_, false, false>(&BtfTracePointContext::new(ctx), $slot)
            }

            #[no_mangle]
            #[link_section = "raw_tp"]
            pub fn $raw(ctx: *mut core::ffi::c_void) -> i32 {
                on_args::<_, false, false>(&RawTracePointContext::new(ctx), $slot)
            }

            #[no_mangle]
            #[link_section = "tracepoint"]
            pub fn $tpc(ctx: *mut core::ffi::c_void) -> u32 {
                on_tracepoint::<false, true>(&TracePointContext::new(ctx), $slot)
            }

            #[no_mangle]
            #[link_section = "tp_btf"]
            pub fn $btfc(ctx: *mut core::ffi::c_void) -> i32 {
                on_args::<_, false, true>(&BtfTracePointContext::new(ctx), $slot)
            }

            #[no_mangle]
            #[link_section = "raw_tp"]
            pub fn $rawc(ctx: *mut core::ffi::c_void) -> i32 {
                on_args::<_, false, true>(&RawTracePointContext::new(ctx), $slot)
            }
        )*
    };
}

slots!(
    0: dt_tp_0 dt_btf_0 dt_raw_0 dt_tp_cap_0 dt_btf_cap_0 dt_raw_cap_0,
    1: dt_tp_1 dt_btf_1 dt_raw_1 dt_tp_cap_1 dt_btf_cap_1 dt_raw_cap_1,
    2: dt_tp_2 dt_btf_2 dt_raw_2 dt_tp_cap_2 dt_btf_cap_2 dt_raw_cap_2,
    3: dt_tp_3 dt_btf_3 dt_raw_3 dt_tp_cap_3 dt_btf_cap_3 dt_raw_cap_3,
    4: dt_tp_4 dt_btf_4 dt_raw_4 dt_tp_cap_4 dt_btf_cap_4 dt_raw_cap_4,
    5: dt_tp_5 dt_btf_5 dt_raw_5 dt_tp_cap_5 dt_btf_cap_5 dt_raw_cap_5,
    6: dt_tp_6 dt_btf_6 dt_raw_6 dt_tp_cap_6 dt_btf_cap_6 dt_raw_cap_6,
    7: dt_tp_7 dt_btf_7 dt_raw_7 dt_tp_cap_7 dt_btf_cap_7 dt_raw_cap_7,
    8: dt_tp_8 dt_btf_8 dt_raw_8 dt_tp_cap_8 dt_btf_cap_8 dt_raw_cap_8,
    9: dt_tp_9 dt_btf_9 dt_raw_9 dt_tp_cap_9 dt_btf_cap_9 dt_raw_cap_9,
    10: dt_tp_10 dt_btf_10 dt_raw_10 dt_tp_cap_10 dt_btf_cap_10 dt_raw_cap_10,
    11: dt_tp_11 dt_btf_11 dt_raw_11 dt_tp_cap_11 dt_btf_cap_11 dt_raw_cap_11,
    12: dt_tp_12 dt_btf_12 dt_raw_12 dt_tp_cap_12 dt_btf_cap_12 dt_raw_cap_12,
    13: dt_tp_13 dt_btf_13 dt_raw_13 dt_tp_cap_13 dt_btf_cap_13 dt_raw_cap_13,
    14: dt_tp_14 dt_btf_14 dt_raw_14 dt_tp_cap_14 dt_btf_cap_14 dt_raw_cap_14,
    15: dt_tp_15 dt_btf_15 dt_raw_15 dt_tp_cap_15 dt_btf_cap_15 dt_raw_cap_15,
    16: dt_tp_16 dt_btf_16 dt_raw_16 dt_tp_cap_16 dt_btf_cap_16 dt_raw_cap_16,
    17: dt_tp_17 dt_btf_17 dt_raw_17 dt_tp_cap_17 dt_btf_cap_17 dt_raw_cap_17,
    18: dt_tp_18 dt_btf_18 dt_raw_18 dt_tp_cap_18 dt_btf_cap_18 dt_raw_cap_18,
    19: dt_tp_19 dt_btf_19 dt_raw_19 dt_tp_cap_19 dt_btf_cap_19 dt_raw_cap_19,
    20: dt_tp_20 dt_btf_20 dt_raw_20 dt_tp_cap_20 dt_btf_cap_20 dt_raw_cap_20,
    21: dt_tp_21 dt_btf_21 dt_raw_21 dt_tp_cap_21 dt_btf_cap_21 dt_raw_cap_21,
    22: dt_tp_22 dt_btf_22 dt_raw_22 dt_tp_cap_22 dt_btf_cap_22 dt_raw_cap_22,
    23: dt_tp_23 dt_btf_23 dt_raw_23 dt_tp_cap_23 dt_btf_cap_23 dt_raw_cap_23,
    24: dt_tp_24 dt_btf_24 dt_raw_24 dt_tp_cap_24 dt_btf_cap_24 dt_raw_cap_24,
    25: dt_tp_25 dt_btf_25 dt_raw_25 dt_tp_cap_25 dt_btf_cap_25 dt_raw_cap_25,
    26: dt_tp_26 dt_btf_26 dt_raw_26 dt_tp_cap_26 dt_btf_cap_26 dt_raw_cap_26,
    27: dt_tp_27 dt_btf_27 dt_raw_27 dt_tp_cap_27 dt_btf_cap_27 dt_raw_cap_27,
    28: dt_tp_28 dt_btf_28 dt_raw_28 dt_tp_cap_28 dt_btf_cap_28 dt_raw_cap_28,
    29: dt_tp_29 dt_btf_29 dt_raw_29 dt_tp_cap_29 dt_btf_cap_29 dt_raw_cap_29,
    30: dt_tp_30 dt_btf_30 dt_raw_30 dt_tp_cap_30 dt_btf_cap_30 dt_raw_cap_30,
    31: dt_tp_31 dt_btf_31 dt_raw_31 dt_tp_cap_31 dt_btf_cap_31 dt_raw_cap_31,
    32: dt_tp_32 dt_btf_32 dt_raw_32 dt_tp_cap_32 dt_btf_cap_32 dt_raw_cap_32,
    33: dt_tp_33 dt_btf_33 dt_raw_33 dt_tp_cap_33 dt_btf_cap_33 dt_raw_cap_33,
    34: dt_tp_34 dt_btf_34 dt_raw_34 dt_tp_cap_34 dt_btf_cap_34 dt_raw_cap_34,
    35: dt_tp_35 dt_btf_35 dt_raw_35 dt_tp_cap_35 dt_btf_cap_35 dt_raw_cap_35,
    36: dt_tp_36 dt_btf_36 dt_raw_36 dt_tp_cap_36 dt_btf_cap_36 dt_raw_cap_36,
    37: dt_tp_37 dt_btf_37 dt_raw_37 dt_tp_cap_37 dt_btf_cap_37 dt_raw_cap_37,
    38: dt_tp_38 dt_btf_38 dt_raw_38 dt_tp_cap_38 dt_btf_cap_38 dt_raw_cap_38,
    39: dt_tp_39 dt_btf_39 dt_raw_39 dt_tp_cap_39 dt_btf_cap_39 dt_raw_cap_39,
    40: dt_tp_40 dt_btf_40 dt_raw_40 dt_tp_cap_40 dt_btf_cap_40 dt_raw_cap_40,
    41: dt_tp_41 dt_btf_41 dt_raw_41 dt_tp_cap_41 dt_btf_cap_41 dt_raw_cap_41,
    42: dt_tp_42 dt_btf_42 dt_raw_42 dt_tp_cap_42 dt_btf_cap_42 dt_raw_cap_42,
    43: dt_tp_43 dt_btf_43 dt_raw_43 dt_tp_cap_43 dt_btf_cap_43 dt_raw_cap_43,
    44: dt_tp_44 dt_btf_44 dt_raw_44 dt_tp_cap_44 dt_btf_cap_44 dt_raw_cap_44,
    45: dt_tp_45 dt_btf_45 dt_raw_45 dt_tp_cap_45 dt_btf_cap_45 dt_raw_cap_45,
    46: dt_tp_46 dt_btf_46 dt_raw_46 dt_tp_cap_46 dt_btf_cap_46 dt_raw_cap_46,
    47: dt_tp_47 dt_btf_47 dt_raw_47 dt_tp_cap_47 dt_btf_cap_47 dt_raw_cap_47,
    48: dt_tp_48 dt_btf_48 dt_raw_48 dt_tp_cap_48 dt_btf_cap_48 dt_raw_cap_48,
    49: dt_tp_49 dt_btf_49 dt_raw_49 dt_tp_cap_49 dt_btf_cap_49 dt_raw_cap_49,
    50: dt_tp_50 dt_btf_50 dt_raw_50 dt_tp_cap_50 dt_btf_cap_50 dt_raw_cap_50,
    51: dt_tp_51 dt_btf_51 dt_raw_51 dt_tp_cap_51 dt_btf_cap_51 dt_raw_cap_51,
    52: dt_tp_52 dt_btf_52 dt_raw_52 dt_tp_cap_52 dt_btf_cap_52 dt_raw_cap_52,
    53: dt_tp_53 dt_btf_53 dt_raw_53 dt_tp_cap_53 dt_btf_cap_53 dt_raw_cap_53,
    54: dt_tp_54 dt_btf_54 dt_raw_54 dt_tp_cap_54 dt_btf_cap_54 dt_raw_cap_54,
    55: dt_tp_55 dt_btf_55 dt_raw_55 dt_tp_cap_55 dt_btf_cap_55 dt_raw_cap_55,
    56: dt_tp_56 dt_btf_56 dt_raw_56 dt_tp_cap_56 dt_btf_cap_56 dt_raw_cap_56,
    57: dt_tp_57 dt_btf_57 dt_raw_57 dt_tp_cap_57 dt_btf_cap_57 dt_raw_cap_57,
    58: dt_tp_58 dt_btf_58 dt_raw_58 dt_tp_cap_58 dt_btf_cap_58 dt_raw_cap_58,
    59: dt_tp_59 dt_btf_59 dt_raw_59 dt_tp_cap_59 dt_btf_cap_59 dt_raw_cap_59,
    60: dt_tp_60 dt_btf_60 dt_raw_60 dt_tp_cap_60 dt_btf_cap_60 dt_raw_cap_60,
    61: dt_tp_61 dt_btf_61 dt_raw_61 dt_tp_cap_61 dt_btf_cap_61 dt_raw_cap_61,
    62: dt_tp_62 dt_btf_62 dt_raw_62 dt_tp_cap_62 dt_btf_cap_62 dt_raw_cap_62,
    63: dt_tp_63 dt_btf_63 dt_raw_63 dt_tp_cap_63 dt_btf_cap_63 dt_raw_cap_63,
);
