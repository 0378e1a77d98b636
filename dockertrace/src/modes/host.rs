//! The `normal` mode: the study's baseline, server and client as host processes over loopback.
//! Also how every runtime without containers starts the workload: this same binary, optionally
//! inside a network namespace, never outliving dockertrace.
use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, TcpListener},
    os::{fd::AsRawFd, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};

use super::{ClientPlace, Deployment, Mode};
use crate::{
    filter::Filter,
    sys::cpus::{self, CpuList},
    teardown::{Resource, Teardown},
    workload::WorkloadReport,
};

/// The binary that runs the workload: this one.
pub fn self_exe() -> anyhow::Result<PathBuf> {
    std::fs::read_link("/proc/self/exe").context("cannot find dockertrace's own binary (/proc/self/exe)")
}

/// `dockertrace ARGS` as a child that dies with dockertrace (PR_SET_PDEATHSIG), in a process
/// group of its own, with `ns` inside the network namespace at that path (entered before exec),
/// and on `cpus` (`--workload-cpus`; without it, on the CPUs dockertrace started with, even when
/// `--tracer-cpus` has pinned dockertrace since).
pub fn workload_command(
    ns: Option<&Path>,
    cpus: Option<&CpuList>,
    args: &[String],
) -> anyhow::Result<Command> {
    let mut cmd = Command::new(self_exe()?);
    // A process group of its own: a terminal's Ctrl-C reaches dockertrace only, which then
    // stops the workload in order (instead of the client dying first and failing the run).
    cmd.args(args).stdin(Stdio::null()).process_group(0);
    let ns_file = match ns {
        Some(p) => {
            Some(File::open(p).with_context(|| format!("cannot open network namespace {}", p.display()))?)
        }
        None => None,
    };
    let affinity = cpus::child_affinity(cpus);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe syscalls
    // on an fd and a CPU set prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(f) = &ns_file {
                if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(a) = &affinity {
                a.apply()?;
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// Starts the echo server on `listen:port` (inside `ns` when given, on `cpus`); registered in
/// `teardown`.
pub fn spawn_server(
    ns: Option<&Path>,
    cpus: Option<&CpuList>,
    listen: &str,
    port: u16,
    teardown: &mut Teardown,
) -> anyhow::Result<u32> {
    let args: Vec<String> =
        ["workload", "server", "--listen", listen, "--port", &port.to_string(), "--quiet"]
            .map(str::to_owned)
            .into();
    let child = workload_command(ns, cpus, &args)?
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start the workload server")?;
    let pid = child.id();
    teardown.push(Resource::Child(child));
    Ok(pid)
}

/// Starts the echo server as a host process on 127.0.0.1:`port` (on `cpus`).
pub fn deploy_normal(
    port: u16,
    cpus: Option<&CpuList>,
    teardown: &mut Teardown,
) -> anyhow::Result<Deployment> {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if let Err(e) = TcpListener::bind((loopback, port)) {
        bail!("port {port} on 127.0.0.1 is not free ({e}); choose another with --port");
    }
    let pid = spawn_server(None, cpus, "127.0.0.1", port, teardown)?;
    // The port on this namespace's loopback only: runs in other namespaces may use it too.
    let netns = crate::sys::netns::current_inode()?;
    Ok(Deployment {
        mode: Mode::Normal,
        server_ip: loopback,
        filter: Filter { port: Some(port), netns: [netns].into(), ..Default::default() },
        notes: vec![format!("server: host process {pid} on 127.0.0.1:{port}; traced: TCP port {port} on lo")],
        client: ClientPlace::Host,
        workload_cpus: cpus.cloned(),
        names: {
            let mut r = crate::names::Resolver::new();
            r.add(Path::new("/proc/self/ns/net"), crate::names::HOST);
            r.finish()
        },
    })
}

/// Runs the client as a process (inside `ns` when given, on `cpus`); returns its report.
pub async fn run_client(
    ns: Option<&Path>,
    cpus: Option<&CpuList>,
    client_args: &[String],
) -> anyhow::Result<WorkloadReport> {
    let out = tokio::process::Command::from(workload_command(ns, cpus, client_args)?)
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot start the workload client")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("the workload client failed ({}): {}", out.status, err.trim());
    }
    WorkloadReport::parse_json_line(&stdout)
}
