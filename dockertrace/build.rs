//! Builds the eBPF object from `dockertrace-ebpf` and leaves it in OUT_DIR for
//! `include_bytes_aligned!`. The eBPF crate is compiled by Debian's rustc-web (`/usr`), which ships
//! a prebuilt `core` for the BPF targets; see docs/building.md.
use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-env-changed=DOCKERTRACE_BPF_TOOLCHAIN");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        // Host-only builds (unit tests of pure logic): embed an empty object. The loader refuses
        // to run with it and says why.
        fs::write(out_dir.join("dockertrace"), b"")?;
        println!("cargo:rustc-cfg=dockertrace_no_ebpf");
        println!("cargo:rustc-check-cfg=cfg(dockertrace_no_ebpf)");
        return Ok(());
    }
    println!("cargo:rustc-check-cfg=cfg(dockertrace_no_ebpf)");
    // aya-ebpf needs `#![feature(asm_experimental_arch)]` on a stable compiler: allow unstable
    // features for that one crate. RUSTC_BOOTSTRAP=1 would make aya-build ask for
    // `-Z build-std`, which needs rust-src (not available here).
    env::set_var("RUSTC_BOOTSTRAP", "aya_ebpf");
    let toolchain = env::var("DOCKERTRACE_BPF_TOOLCHAIN").unwrap_or_else(|_| "/usr".into());
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.parent().expect("workspace root").join("dockertrace-ebpf");
    let root = root.to_str().expect("utf-8 path");
    aya_build::build_ebpf(
        [aya_build::Package { name: "dockertrace-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
