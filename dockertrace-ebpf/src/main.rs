//! dockertrace's kernel-side programs.
//!
//! - `dt_tp_<slot>`: one program per selected tracepoint, sharing one body; `TP_CONFIG[slot]`
//!   says how to read that tracepoint's record (offsets from its tracefs `format`).
//! - `kp_*` / `fe_*`: kprobe and fentry twins on the datapath functions in
//!   `dockertrace_common::datapath::DATAPATH_FUNCS`; the loader attaches whichever the kernel allows.
//!
//! Every program funnels into `emit::emit`, which filters in the kernel, reserves a ring-buffer
//! record, takes a stack id and counts every failure in `COUNTERS`.
#![no_std]
#![no_main]

mod emit;
mod maps;
mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
