//! The `normal` mode: the study's baseline, server and client as host processes over loopback.
use std::{
    net::{IpAddr, Ipv4Addr, TcpListener},
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};

use super::{Deployment, Mode};
use crate::{
    filter::Filter,
    teardown::{Resource, Teardown},
    workload::WorkloadReport,
};

/// The binary that runs the workload: this one.
pub fn self_exe() -> anyhow::Result<PathBuf> {
    std::fs::read_link("/proc/self/exe").context("cannot find dockertrace's own binary (/proc/self/exe)")
}

/// Starts the echo server as a host process on 127.0.0.1:`port`.
pub fn deploy_normal(port: u16, teardown: &mut Teardown) -> anyhow::Result<Deployment> {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if let Err(e) = TcpListener::bind((loopback, port)) {
        bail!("port {port} on 127.0.0.1 is not free ({e}); choose another with --port");
    }
    let child = Command::new(self_exe()?)
        .args(["workload", "server", "--listen", "127.0.0.1", "--port", &port.to_string(), "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start the workload server")?;
    let pid = child.id();
    teardown.push(Resource::Child(child));
    Ok(Deployment {
        mode: Mode::Normal,
        server_ip: loopback,
        filter: Filter { port: Some(port), ..Default::default() },
        notes: vec![format!("server: host process {pid} on 127.0.0.1:{port}; traced: TCP port {port} on lo")],
    })
}

/// Runs the client as a host process; returns its report.
pub async fn run_client(client_args: &[String]) -> anyhow::Result<WorkloadReport> {
    let out = tokio::process::Command::new(self_exe()?)
        .args(client_args)
        .stdin(Stdio::null())
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
