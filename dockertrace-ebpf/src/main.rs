//! dockertrace's kernel-side programs.
//!
//! - `dt_btf_<slot>`, `dt_raw_<slot>`, `dt_tp_<slot>`: the tracepoint family, three programs
//!   per slot (tp_btf, raw_tp, perf path); `TP_CONFIG[slot]` says how to read that slot's
//!   tracepoint (argument positions from BTF, record offsets from its tracefs `format`).
//! - `kp_*` / `fe_*`: kprobe and fentry twins on the datapath functions in
//!   `dockertrace_common::datapath::DATAPATH_FUNCS`; the loader attaches whichever the kernel allows,
//!   with its return twin (`kr_*` / `fx_*`): the function's duration on its hop.
//!
//! Every program funnels into `emit::emit`, which filters in the kernel, follows the event's
//! packet (`journey`: packet id, hop, headers), reserves a ring-buffer record, takes a stack id
//! and counts every failure in `COUNTERS`.
#![no_std]
#![no_main]

mod capture;
mod emit;
mod journey;
mod maps;
mod pair;
mod probes;

// Host builds (clippy, tests) link std, which has its own.
#[cfg(all(not(test), target_arch = "bpf"))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
