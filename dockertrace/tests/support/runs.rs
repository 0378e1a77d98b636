//! Running the real `dockertrace` binary from root tests (also inside a VM, where the binary
//! may live elsewhere): the binary's path, and leftovers checks.
use std::path::PathBuf;

/// The binary under test: `$DOCKERTRACE_BIN` when set (e.g. a VM image that carries the
/// binary at another path), else the one cargo built for this test.
pub fn bin() -> PathBuf {
    match std::env::var_os("DOCKERTRACE_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_dockertrace")),
    }
}

/// Named network namespaces (`ip netns`) whose name starts with `dockertrace-`.
pub fn leftover_namespaces() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/var/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("dockertrace-"))
        .collect();
    v.sort();
    v
}

/// Pids of running `dockertrace workload server|client` processes of the binary under test
/// that live outside this process's network namespace (where the netns runtime puts them):
/// host-namespace workloads of other tools or benches running meanwhile are not counted.
pub fn netns_workload_processes() -> Vec<u32> {
    let exe = std::fs::canonicalize(bin()).unwrap_or_else(|_| bin());
    let own = std::fs::read_link("/proc/self/ns/net").ok();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            let is_workload =
                args.len() > 2 && args[1] == b"workload" && (args[2] == b"server" || args[2] == b"client");
            let ours = std::fs::read_link(e.path().join("exe")).ok()? == exe;
            let elsewhere = std::fs::read_link(e.path().join("ns/net")).ok() != own;
            (is_workload && ours && elsewhere).then_some(pid)
        })
        .collect()
}
