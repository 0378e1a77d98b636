//! Capture programs only (`--pcap`, `--filter`): the frame copy and the in-kernel classic-BPF
//! filter. The default programs never call into this file, so their verification is unchanged
//! (the slot programs' `_cap` twins do: see `probes::tracepoints`).
//!
//! All of it runs in global BPF functions, each verified once on its own: `dt_capture` (the
//! decision), `dt_frame` (the copy) and `dt_cbpf_step` (one instruction of the filter). The
//! filter runs as a bounded loop of calls to the step, so a verifier walks the loop's
//! iterations over one call each, never the interpreter's branches times the iterations.
use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, generated};
use dockertrace_common::{
    capture::{Frame, CBPF_ACCEPT, CBPF_CONTINUE, CBPF_MAX, CBPF_REJECT, FRAME_MAX, LINK_ETHERNET, LINK_RAW},
    counter, FILTER_CBPF, FILTER_VXLAN,
};

use crate::{
    journey::{dt_headers, matches_journey, vxlan},
    maps::{bump, layout, settings, CBPF, CBPF_PROG, FRAME},
};

/// `dt_capture`'s `meta` bit: the event is a hop (its frame is copied); else `FRAME` is
/// cleared. The low 48 bits are `dt_headers`' `meta` (thread id, `skb->protocol`).
pub const CAP_HOP: u64 = 1 << 50;

/// Copies the event's frame into `FRAME` (a hop), then applies the `--filter` program:
/// returns 1 when the event passes (no filter, the program accepts the frame, or the skb
/// continues a journey that matched), 0 when it is filtered out (counted).
#[no_mangle]
#[inline(never)]
pub extern "C" fn dt_capture(skb: u64, meta: u64) -> u32 {
    let link = if skb != 0 && meta & CAP_HOP != 0 { dt_frame(skb) } else { no_frame() };
    if settings().filters & FILTER_CBPF == 0 {
        return 1;
    }
    if link != 0 && run_filter(link) {
        bump(counter::CBPF_ACCEPTED);
        return 1;
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut parsed = if skb != 0 { dt_headers(skb, meta & 0x0000_ffff_ffff_ffff) } else { 0 };
    if skb != 0 && settings().filters & FILTER_VXLAN != 0 {
        // Encapsulated: the journey's fingerprint is the inner packet's.
        parsed = vxlan(skb, parsed);
    }
    if skb != 0 && matches_journey(skb, now, (parsed >> 32) as u32) {
        bump(counter::CBPF_FOLLOWED);
        return 1;
    }
    bump(counter::CBPF_REJECTED);
    0
}

/// Marks `FRAME` empty (the event has no frame of its own).
#[inline(always)]
fn no_frame() -> u32 {
    if let Some(f) = FRAME.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; programs do not nest on one CPU.
        unsafe {
            (*f).link = 0;
            (*f).len = 0;
            (*f).snap = 0;
        }
    }
    0
}

/// A plain read that gives 0 where it fails.
#[inline(always)]
fn read<T: Copy + Default>(at: u64) -> T {
    // SAFETY: bpf_probe_read_kernel tolerates any address; T is a plain integer.
    unsafe { bpf_probe_read_kernel(at as *const T) }.unwrap_or_default()
}

/// Copies the skb's first bytes into `FRAME`: from the MAC header when the kernel says there
/// is an Ethernet header in front of the network header (`network_header - mac_header == 14`),
/// else from the network header (raw IP); at most `FRAME_MAX` bytes, and only the linear part
/// (up to `skb->tail`). Returns the link type (`LINK_*`), 0 when nothing could be copied.
#[no_mangle]
#[inline(never)]
pub extern "C" fn dt_frame(skb: u64) -> u32 {
    let Some(f) = FRAME.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot; programs do not nest on one CPU.
    let f: &mut Frame = unsafe { &mut *f };
    f.link = 0;
    f.len = 0;
    f.snap = 0;
    let l = layout();
    let head: u64 = read(skb + u64::from(l.skb_head));
    let data: u64 = read(skb + u64::from(l.skb_data));
    let mac = u64::from(read::<u16>(skb + u64::from(l.skb_mac_header)));
    let nh = u64::from(read::<u16>(skb + u64::from(l.skb_network_header)));
    let tail = u64::from(read::<u32>(skb + u64::from(l.skb_tail)));
    let len = u64::from(read::<u32>(skb + u64::from(l.skb_len)));
    if head == 0 || data < head {
        return 0;
    }
    let data_off = data - head;
    let eth = mac != 0xffff && nh != 0xffff && nh.wrapping_sub(mac) == 14;
    let (start, link) = if eth {
        (mac, LINK_ETHERNET)
    } else if nh != 0xffff {
        (nh, LINK_RAW)
    } else {
        (data_off, LINK_RAW)
    };
    if tail <= start {
        return 0;
    }
    let mut n = tail - start;
    if n > FRAME_MAX as u64 {
        n = FRAME_MAX as u64;
    }
    // SAFETY: writes at most FRAME_MAX bytes into `data`; the helper tolerates a bad source.
    let r = unsafe {
        generated::bpf_probe_read_kernel(
            f.data.as_mut_ptr() as *mut c_void,
            n as u32,
            (head + start) as *const c_void,
        )
    };
    if r != 0 {
        bump(counter::READ_ERROR);
        return 0;
    }
    f.len = n as u16;
    let snap = u64::from(settings().snaplen);
    f.snap = if snap < n { snap as u16 } else { n as u16 };
    // `skb->len` counts from `data`: add what lies between the frame's start and `data`.
    f.orig_len = (len + data_off).saturating_sub(start) as u32;
    f.link = link;
    u32::from(link)
}

/// Runs the `--filter` program for `link` over `FRAME`: a bounded loop of steps (cBPF only
/// jumps forward, so a program of `n` instructions ends within `n` steps).
#[inline(always)]
fn run_filter(link: u32) -> bool {
    let s = settings();
    let (base, len) = if link == u32::from(LINK_RAW) {
        (CBPF_MAX, u32::from(s.cbpf_raw_len))
    } else {
        (0, u32::from(s.cbpf_eth_len))
    };
    let Some(st) = CBPF.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot; programs do not nest on one CPU.
    unsafe {
        (*st).a = 0;
        (*st).x = 0;
        (*st).pc = 0;
        (*st).base = base;
        (*st).len = len;
    }
    for _ in 0..CBPF_MAX {
        match dt_cbpf_step(0) {
            CBPF_CONTINUE => {}
            r => return r == CBPF_ACCEPT,
        }
    }
    false
}

/// `size` bytes (1, 2 or 4) of the frame at `off`, big-endian; None past the copied bytes.
#[inline(always)]
fn load(f: &Frame, off: u32, size: u32) -> Option<u32> {
    let end = u64::from(off) + u64::from(size);
    if end > u64::from(f.len) {
        return None;
    }
    let mut v = 0u32;
    for i in 0..4u32 {
        if i < size {
            // Masked for the verifier (the check above already keeps it inside `len`).
            let at = (off.wrapping_add(i) as usize) & (FRAME_MAX - 1);
            // SAFETY: `at` < FRAME_MAX, the length of `data`.
            v = (v << 8) | u32::from(unsafe { *f.data.as_ptr().add(at) });
        }
    }
    Some(v)
}

/// One classic-BPF instruction on `CBPF`'s registers over `FRAME`. Returns `CBPF_CONTINUE`,
/// `CBPF_ACCEPT` or `CBPF_REJECT` (see `dockertrace_common::capture`).
#[no_mangle]
#[inline(never)]
pub extern "C" fn dt_cbpf_step(_unused: u64) -> u32 {
    let (Some(st), Some(f)) = (CBPF.get_ptr_mut(0), FRAME.get_ptr(0)) else {
        return CBPF_REJECT;
    };
    // SAFETY: this CPU's slots; programs do not nest on one CPU.
    let (st, f) = unsafe { (&mut *st, &*f) };
    if st.pc >= st.len {
        return CBPF_REJECT;
    }
    let Some(i) = CBPF_PROG.get(st.base + st.pc) else {
        return CBPF_REJECT;
    };
    let (code, k) = (i.code, i.k);
    st.pc += 1;
    let src = if code & 0x08 != 0 { st.x } else { k };
    match code & 0x07 {
        // BPF_LD, BPF_LDX
        0x00 | 0x01 => {
            let v = match (code & 0xe0, code & 0x18) {
                (0x20, size) => match load(f, k, width(size)) {
                    Some(v) => v, // BPF_ABS
                    None => return CBPF_REJECT,
                },
                (0x40, size) => match load(f, st.x.wrapping_add(k), width(size)) {
                    Some(v) => v, // BPF_IND
                    None => return CBPF_REJECT,
                },
                (0x60, _) => *st.mem.get((k & 15) as usize).unwrap_or(&0), // BPF_MEM
                (0x80, _) => f.orig_len,                                   // BPF_LEN
                (0xa0, _) => match load(f, k, 1) {
                    Some(b) => (b & 0x0f) * 4, // ldx 4*([k]&0xf) (BPF_MSH)
                    None => return CBPF_REJECT,
                },
                (0x00, _) => k, // BPF_IMM
                _ => return CBPF_REJECT,
            };
            if code & 0x07 == 0 {
                st.a = v;
            } else {
                st.x = v;
            }
        }
        // BPF_ST, BPF_STX
        0x02 | 0x03 => {
            let v = if code & 0x07 == 0x02 { st.a } else { st.x };
            if let Some(m) = st.mem.get_mut((k & 15) as usize) {
                *m = v;
            }
        }
        // BPF_ALU
        0x04 => {
            st.a = match code & 0xf0 {
                0x00 => st.a.wrapping_add(src),
                0x10 => st.a.wrapping_sub(src),
                0x20 => st.a.wrapping_mul(src),
                0x30 if src != 0 => st.a / src,
                0x40 => st.a | src,
                0x50 => st.a & src,
                0x60 => st.a.wrapping_shl(src),
                0x70 => st.a.wrapping_shr(src),
                0x80 => st.a.wrapping_neg(),
                0x90 if src != 0 => st.a % src,
                0xa0 => st.a ^ src,
                _ => return CBPF_REJECT,
            }
        }
        // BPF_JMP
        0x05 => {
            let taken = match code & 0xf0 {
                0x00 => {
                    st.pc = st.pc.wrapping_add(k); // ja
                    return CBPF_CONTINUE;
                }
                0x10 => st.a == src,
                0x20 => st.a > src,
                0x30 => st.a >= src,
                0x40 => st.a & src != 0,
                _ => return CBPF_REJECT,
            };
            st.pc += u32::from(if taken { i.jt } else { i.jf });
        }
        // BPF_RET: K or A
        0x06 => {
            let v = if code & 0x18 == 0x10 { st.a } else { k };
            return if v != 0 { CBPF_ACCEPT } else { CBPF_REJECT };
        }
        // BPF_MISC: TAX, TXA
        _ => {
            if code & 0xf8 == 0x00 {
                st.x = st.a;
            } else {
                st.a = st.x;
            }
        }
    }
    CBPF_CONTINUE
}

/// The byte width of a load's BPF_SIZE field (W, H, B).
#[inline(always)]
fn width(size: u16) -> u32 {
    match size {
        0x00 => 4,
        0x08 => 2,
        _ => 1,
    }
}
