//! Running the real `dockertrace` binary from root tests (also inside a VM, where the binary
//! may live elsewhere): the binary's path, and leftovers checks.
use std::{path::PathBuf, process::Command};

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

/// A `--runtime netns` run left neither a workload process (they die with dockertrace,
/// PR_SET_PDEATHSIG: the kernel gets 3 s) nor a namespace.
pub fn assert_no_netns_run_left() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while !netns_workload_processes().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(netns_workload_processes(), Vec::<u32>::new(), "workload processes left");
    assert_eq!(leftover_namespaces(), Vec::<String>::new(), "namespaces left");
}

/// The run ids whose recorded owner (Docker labels, or the netns runtime's state file) is `pid`.
pub fn runs_of(pid: u32) -> Vec<String> {
    let mut runs: Vec<String> = dockertrace::sys::owner::states()
        .into_iter()
        .filter(|(_, owner, _)| owner.pid == pid)
        .map(|(run, ..)| run)
        .collect();
    let filter = format!("label={}={pid}", dockertrace::docker::LABEL_PID);
    let format = format!("{{{{.Label \"{}\"}}}}", dockertrace::docker::LABEL);
    if let Ok(out) =
        Command::new("docker").args(["ps", "-a", "--filter", &filter, "--format", &format]).output()
    {
        runs.extend(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned));
    }
    runs.sort();
    runs.dedup();
    runs
}

/// Removes everything run `run` may have left when dropped (a test that kills a run and fails
/// before the next run cleaned up must not leave it behind): its containers and networks, its
/// parent link, its namespaces and its state file. Only that run's objects: other runs on the
/// machine may be live.
pub struct RunLeftovers(pub String);

impl Drop for RunLeftovers {
    fn drop(&mut self) {
        let run = &self.0;
        let quiet = |cmd: &mut Command| {
            let _ = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status();
        };
        let label = format!("label={}={run}", dockertrace::docker::LABEL);
        for (list, rm) in [(["ps", "-aq"], ["rm", "-f"]), (["network", "ls"], ["network", "rm"])] {
            let mut ls = Command::new("docker");
            ls.args(list);
            if list[0] == "network" {
                ls.arg("-q");
            }
            if let Ok(out) = ls.args(["--filter", &label]).output() {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    quiet(Command::new("docker").args(rm).arg(id));
                }
            }
        }
        let (p0, _) = dockertrace::sys::links::parent_names(run);
        if std::path::Path::new("/sys/class/net").join(&p0).exists() {
            quiet(Command::new("ip").args(["link", "del", &p0]));
        }
        for role in dockertrace::modes::netns_runtime::ROLES {
            let _ = dockertrace::sys::netns::delete_namespace(&dockertrace::modes::netns_runtime::ns_name(
                run, role,
            ));
        }
        let _ = std::fs::remove_file(dockertrace::sys::owner::state_file(run));
    }
}
