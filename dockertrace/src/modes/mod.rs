//! Networking modes: what each one deploys, and the options that shape it.
//!
//! A mode is deployed by a [`Runtime`] (Docker, or namespaces dockertrace builds itself) into a
//! [`Deployment`]: where the client must connect, where it runs, and which packets belong to the
//! workload (the in-kernel filter). The run command has one path for every runtime.
use std::{fmt, net::IpAddr, path::PathBuf, str::FromStr};

use ipnet::IpNet;

use crate::{
    docker::Docker, filter::Filter, names::Names, sys::cpus::CpuList, teardown::Teardown,
    workload::WorkloadReport,
};

pub mod docker_overlay;
pub mod docker_runtime;
pub mod faults;
pub mod host;
pub mod leftovers;
pub mod netns_runtime;
pub mod subnet;

/// A networking mode of the study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// No Docker: server and client are host processes talking over 127.0.0.1.
    Normal,
    /// Both containers with `--network host` (loopback between them).
    Host,
    /// Docker's default bridge (docker0).
    Bridge,
    /// A user-defined bridge network.
    BridgeUser,
    /// A macvlan network (bridge mode) on a parent link.
    Macvlan,
    /// An ipvlan network in L2 mode.
    IpvlanL2,
    /// An ipvlan network in L3 mode.
    IpvlanL3,
    /// A VXLAN overlay network across two hosts (Docker's overlay driver): the server on one
    /// host, the client on the other.
    Overlay,
    /// Docker's overlay network with both containers on one engine (the same host).
    OverlayLocal,
}

impl Mode {
    pub const ALL: [Mode; 9] = [
        Mode::Normal,
        Mode::Host,
        Mode::Bridge,
        Mode::BridgeUser,
        Mode::Macvlan,
        Mode::IpvlanL2,
        Mode::IpvlanL3,
        Mode::Overlay,
        Mode::OverlayLocal,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Host => "host",
            Mode::Bridge => "bridge",
            Mode::BridgeUser => "bridge-user",
            Mode::Macvlan => "macvlan",
            Mode::IpvlanL2 => "ipvlan-l2",
            Mode::IpvlanL3 => "ipvlan-l3",
            Mode::Overlay => "overlay",
            Mode::OverlayLocal => "overlay-local",
        }
    }

    /// One line for help and reports.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Normal => "host processes over 127.0.0.1 (loopback), no Docker",
            Mode::Host => "two containers with --network host, over 127.0.0.1",
            Mode::Bridge => "two containers on Docker's default bridge (docker0)",
            Mode::BridgeUser => "two containers on a user-defined bridge network",
            Mode::Macvlan => "two containers on a macvlan network (bridge mode)",
            Mode::IpvlanL2 => "two containers on an ipvlan network, L2 mode",
            Mode::IpvlanL3 => "two containers on an ipvlan network, L3 mode",
            Mode::Overlay => "two containers on two hosts' engines, joined by a VXLAN overlay network",
            Mode::OverlayLocal => "two containers on one engine's VXLAN overlay network (swarm scope)",
        }
    }

    /// Uses Docker at all.
    pub fn uses_docker(self) -> bool {
        self != Mode::Normal
    }

    /// Sits on a parent link (macvlan, ipvlan).
    pub fn needs_parent(self) -> bool {
        matches!(self, Mode::Macvlan | Mode::IpvlanL2 | Mode::IpvlanL3)
    }

    /// Traffic crosses loopback, so the workload is told apart by its TCP port.
    pub fn over_loopback(self) -> bool {
        matches!(self, Mode::Normal | Mode::Host)
    }

    /// The Docker network driver and its options.
    pub fn driver(self) -> Option<(&'static str, &'static [(&'static str, &'static str)])> {
        match self {
            Mode::BridgeUser => Some(("bridge", &[])),
            Mode::Macvlan => Some(("macvlan", &[("macvlan_mode", "bridge")])),
            Mode::IpvlanL2 => Some(("ipvlan", &[("ipvlan_mode", "l2")])),
            Mode::IpvlanL3 => Some(("ipvlan", &[("ipvlan_mode", "l3")])),
            _ => None,
        }
    }

    /// The kernel link type the mode needs (checked before anything is created).
    pub fn link_kind(self) -> Option<&'static str> {
        match self {
            Mode::Macvlan => Some("macvlan"),
            Mode::IpvlanL2 | Mode::IpvlanL3 => Some("ipvlan"),
            Mode::Bridge | Mode::BridgeUser => Some("bridge"),
            Mode::Overlay | Mode::OverlayLocal => Some("vxlan"),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Mode::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<_> = Mode::ALL.iter().map(|m| m.name()).collect();
            format!("unknown mode `{s}` (modes: {})", names.join(", "))
        })
    }
}

/// The user's choice of parent link and addresses for macvlan/ipvlan (the study's LAN setup).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LanSpec {
    pub parent: Option<String>,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_server: Option<String>,
    pub ip_client: Option<String>,
}

/// Validated addresses for a macvlan/ipvlan network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressing {
    pub subnet: IpNet,
    pub gateway: IpAddr,
    pub server: Option<IpAddr>,
    pub client: Option<IpAddr>,
}

/// A user mistake in the mode's options, found before anything is created.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("`{0}` is not a subnet in CIDR form (like 192.168.8.0/24)")]
    BadSubnet(String),
    #[error("`{value}` given to {option} is not an IP address")]
    BadIp { option: &'static str, value: String },
    #[error("{option} {ip} is outside the subnet {subnet}")]
    Outside { option: &'static str, ip: IpAddr, subnet: IpNet },
    #[error("{option} {ip} is the subnet's network or broadcast address")]
    Reserved { option: &'static str, ip: IpAddr },
    #[error("{a} and {b} must be different addresses ({ip})")]
    Same { a: &'static str, b: &'static str, ip: IpAddr },
    #[error("--subnet and --gateway go together (the study's LAN setup needs both)")]
    Incomplete,
    #[error("{0} only applies to the macvlan and ipvlan modes")]
    NotApplicable(&'static str),
    #[error("parent link `{0}` does not exist")]
    NoParent(String),
}

fn parse_ip(option: &'static str, v: &str) -> Result<IpAddr, SpecError> {
    v.parse().map_err(|_| SpecError::BadIp { option, value: v.to_owned() })
}

fn check_inside(option: &'static str, ip: IpAddr, subnet: IpNet) -> Result<IpAddr, SpecError> {
    if !subnet.contains(&ip) {
        return Err(SpecError::Outside { option, ip, subnet });
    }
    if let IpNet::V4(n) = subnet {
        if n.prefix_len() < 31 && (ip == IpAddr::V4(n.network()) || ip == IpAddr::V4(n.broadcast())) {
            return Err(SpecError::Reserved { option, ip });
        }
    }
    Ok(ip)
}

impl LanSpec {
    /// Whether the user asked for the explicit LAN setup.
    pub fn is_explicit(&self) -> bool {
        self.parent.is_some() || self.subnet.is_some() || self.gateway.is_some()
    }

    /// Checks every option against `mode` without touching the system (except for looking
    /// the parent link up). `None`: the tool picks a private subnet itself.
    pub fn validate(&self, mode: Mode) -> Result<Option<Addressing>, SpecError> {
        if !mode.needs_parent() {
            for (set, name) in [
                (self.parent.is_some(), "--parent"),
                (self.subnet.is_some(), "--subnet"),
                (self.gateway.is_some(), "--gateway"),
                (self.ip_server.is_some(), "--ip-server"),
                (self.ip_client.is_some(), "--ip-client"),
            ] {
                if set {
                    return Err(SpecError::NotApplicable(name));
                }
            }
            return Ok(None);
        }
        if let Some(p) = &self.parent {
            if crate::sys::netns::ifindex(None, p).is_err() {
                return Err(SpecError::NoParent(p.clone()));
            }
        }
        let (subnet, gateway) = match (&self.subnet, &self.gateway) {
            (None, None) => {
                if self.ip_server.is_some() || self.ip_client.is_some() {
                    return Err(SpecError::Incomplete);
                }
                return Ok(None);
            }
            (Some(s), Some(g)) => {
                let subnet: IpNet = s.parse().map_err(|_| SpecError::BadSubnet(s.clone()))?;
                (subnet, check_inside("--gateway", parse_ip("--gateway", g)?, subnet)?)
            }
            _ => return Err(SpecError::Incomplete),
        };
        let server = match &self.ip_server {
            Some(v) => Some(check_inside("--ip-server", parse_ip("--ip-server", v)?, subnet)?),
            None => None,
        };
        let client = match &self.ip_client {
            Some(v) => Some(check_inside("--ip-client", parse_ip("--ip-client", v)?, subnet)?),
            None => None,
        };
        for (a, ia, b, ib) in [
            ("--ip-server", server, "--gateway", Some(gateway)),
            ("--ip-client", client, "--gateway", Some(gateway)),
            ("--ip-server", server, "--ip-client", client),
        ] {
            if let (Some(x), Some(y)) = (ia, ib) {
                if x == y {
                    return Err(SpecError::Same { a, b, ip: x });
                }
            }
        }
        Ok(Some(Addressing { subnet, gateway, server, client }))
    }
}

/// What a runtime deployed for one mode.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub mode: Mode,
    /// Where the client connects.
    pub server_ip: IpAddr,
    /// The packets that belong to the workload.
    pub filter: Filter,
    /// Human lines describing what was set up (containers, addresses, devices).
    pub notes: Vec<String>,
    /// Where the workload client runs.
    pub client: ClientPlace,
    /// The CPUs the workload's processes run on (`--workload-cpus`; containers: their cpuset).
    pub workload_cpus: Option<CpuList>,
    /// What the deployment's namespaces and devices are called: `host`, the roles `server` and
    /// `client`, the host ends of their veths.
    pub names: Names,
}

/// Where a runtime runs the workload client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientPlace {
    /// A process in dockertrace's own network namespace.
    Host,
    /// `docker exec` in this container (id).
    Container(String),
    /// A process that enters the network namespace at this path first.
    Namespace(PathBuf),
    /// `docker exec` in this container (id) of the engine listening on `socket` (the overlay
    /// mode's second engine).
    Engine { socket: PathBuf, id: String },
}

/// Which runtime builds the modes' topology (`--runtime`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    /// The Docker engine: containers and Docker networks (the default).
    #[default]
    Docker,
    /// No Docker: the same topologies in network namespaces dockertrace creates and removes.
    Netns,
}

impl RuntimeKind {
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Netns => "netns",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything a runtime needs to deploy one mode.
pub struct DeployRequest<'a> {
    pub mode: Mode,
    /// Names every object of the run (`dockertrace-<run>-...`).
    pub run_id: &'a str,
    /// Docker: the user's `--image` (None: dockertrace's own, built locally).
    pub image: Option<&'a str>,
    pub port: u16,
    pub lan: &'a LanSpec,
    pub addressing: Option<Addressing>,
    /// `--workload-cpus`: the server's and client's CPUs (processes, or the containers' cpuset).
    pub workload_cpus: Option<&'a CpuList>,
    /// `--inject`: the trap to build into the topology (checked against the mode before).
    pub fault: Option<faults::Fault>,
}

/// A runtime, opened for one mode: the one interface the run command deploys through.
pub enum Runtime {
    /// `--runtime docker --mode normal`: host processes, no engine needed.
    Host,
    /// The Docker engine.
    Docker(Docker),
    /// Network namespaces, links and rules dockertrace creates itself.
    Netns,
}

impl Runtime {
    /// Opens `kind` for `mode` (connects to the engine when the mode needs it), then removes
    /// what dead runs left that this runtime can see ([`leftovers::remove_dead_runs`]: host
    /// links and namespaces always, containers and networks with the engine) and says so in
    /// one line.
    pub async fn open(kind: RuntimeKind, mode: Mode, step: &dyn Fn(&str)) -> anyhow::Result<Runtime> {
        let runtime = match kind {
            RuntimeKind::Netns => Runtime::Netns,
            RuntimeKind::Docker if !mode.uses_docker() => Runtime::Host,
            RuntimeKind::Docker => {
                step("connecting to the Docker engine");
                Runtime::Docker(Docker::connect().await?)
            }
        };
        step("looking for what earlier runs left");
        // What a dead run left is in the way of nothing this run creates (names are per run):
        // a failure to remove it is worth a line, not the run.
        match leftovers::remove_dead_runs(runtime.docker()).await {
            Ok(removed) if removed.is_empty() => {}
            Ok(removed) => print_line(&format!("dockertrace: {}", removed.line())),
            Err(e) => print_line(&format!(
                "dockertrace: could not remove what an earlier run left ({}); try `dockertrace cleanup`",
                crate::errors::describe(&e)
            )),
        }
        Ok(runtime)
    }

    /// The runtime the user chose (`normal` on Docker's runtime runs on the host).
    pub fn kind(&self) -> RuntimeKind {
        match self {
            Runtime::Host | Runtime::Docker(_) => RuntimeKind::Docker,
            Runtime::Netns => RuntimeKind::Netns,
        }
    }

    /// The engine, for teardown of containers and networks.
    pub fn docker(&self) -> Option<&Docker> {
        match self {
            Runtime::Docker(d) => Some(d),
            _ => None,
        }
    }

    /// One line for the run's banner and reports.
    pub fn describe(&self, mode: Mode) -> &'static str {
        match self {
            Runtime::Netns => netns_runtime::describe(mode),
            _ => mode.describe(),
        }
    }

    /// Deploys `req.mode`; every object is registered in `teardown` before it is created.
    pub async fn deploy(
        &self,
        req: &DeployRequest<'_>,
        teardown: &mut Teardown,
        step: &(dyn Fn(&str) + Send + Sync),
    ) -> anyhow::Result<Deployment> {
        match self {
            Runtime::Host => host::deploy_normal(req.port, req.workload_cpus, teardown),
            Runtime::Docker(d) => docker_runtime::deploy(d, req, teardown, step).await,
            Runtime::Netns => netns_runtime::deploy(req, teardown, step),
        }
    }

    /// Ends the workload's traffic at once (the user interrupted): the client's container is
    /// killed; a process client was killed already, with its `run_client` future. The tracer
    /// then detaches from an idle datapath, as after a normal run: detaching the probes while
    /// the echo went on crashed Linux 5.10 in the VM matrix (a NULL call entering the probed
    /// `dev_forward_skb`).
    pub async fn stop_client(&self, dep: &Deployment) {
        match (&dep.client, self) {
            (ClientPlace::Container(id), Runtime::Docker(d)) => d.kill_container(id).await,
            (ClientPlace::Engine { socket, id }, Runtime::Docker(_)) => {
                if let Ok(d) = Docker::connect_socket(socket).await {
                    d.kill_container(id).await;
                }
            }
            _ => {}
        }
    }

    /// Runs the workload client where the deployment put it; returns its figures.
    pub async fn run_client(
        &self,
        dep: &Deployment,
        client_args: &[String],
    ) -> anyhow::Result<WorkloadReport> {
        match (&dep.client, self) {
            (ClientPlace::Container(id), Runtime::Docker(d)) => {
                docker_runtime::run_client(d, id, client_args).await
            }
            (ClientPlace::Engine { socket, id }, Runtime::Docker(_)) => {
                let d = Docker::connect_socket(socket).await?;
                docker_runtime::run_client(&d, id, client_args).await
            }
            (ClientPlace::Container(_) | ClientPlace::Engine { .. }, _) => {
                anyhow::bail!("a container client needs the Docker runtime")
            }
            (ClientPlace::Host, _) => host::run_client(None, dep.workload_cpus.as_ref(), client_args).await,
            (ClientPlace::Namespace(p), _) => {
                host::run_client(Some(p), dep.workload_cpus.as_ref(), client_args).await
            }
        }
    }
}

/// A line on stderr that stays, also while a progress spinner shows on the terminal (the
/// spinner's line is cleared first; it redraws itself on its next tick).
fn print_line(line: &str) {
    use std::io::IsTerminal as _;
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
    eprintln!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lan(
        parent: Option<&str>,
        subnet: Option<&str>,
        gw: Option<&str>,
        s: Option<&str>,
        c: Option<&str>,
    ) -> LanSpec {
        LanSpec {
            parent: parent.map(Into::into),
            subnet: subnet.map(Into::into),
            gateway: gw.map(Into::into),
            ip_server: s.map(Into::into),
            ip_client: c.map(Into::into),
        }
    }

    #[test]
    fn mode_names_round_trip() {
        for m in Mode::ALL {
            assert_eq!(m.name().parse::<Mode>(), Ok(m));
        }
        let err = "ipvlan".parse::<Mode>().unwrap_err();
        assert!(err.contains("ipvlan-l2") && err.contains("normal"), "{err}");
        assert!(Mode::Macvlan.needs_parent() && !Mode::Bridge.needs_parent());
        assert!(Mode::Normal.over_loopback() && Mode::Host.over_loopback() && !Mode::Bridge.over_loopback());
        assert_eq!(Mode::IpvlanL3.driver().unwrap().1, &[("ipvlan_mode", "l3")]);
    }

    #[test]
    fn default_addressing_is_chosen_by_the_tool() {
        assert_eq!(LanSpec::default().validate(Mode::Macvlan), Ok(None));
        assert_eq!(LanSpec::default().validate(Mode::Bridge), Ok(None));
    }

    #[test]
    fn the_studys_lan_setup_validates() {
        let a = lan(
            Some("lo"),
            Some("192.168.8.0/24"),
            Some("192.168.8.1"),
            Some("192.168.8.245"),
            Some("192.168.8.246"),
        )
        .validate(Mode::Macvlan)
        .unwrap()
        .unwrap();
        assert_eq!(a.subnet.to_string(), "192.168.8.0/24");
        assert_eq!(a.server, Some("192.168.8.245".parse().unwrap()));
    }

    #[test]
    fn mistakes_are_caught_before_anything_is_created() {
        let m = Mode::IpvlanL2;
        let e = |l: LanSpec| l.validate(m).unwrap_err().to_string();
        assert!(e(lan(None, Some("10.0.0.0/33"), Some("10.0.0.1"), None, None)).contains("CIDR"));
        assert!(e(lan(None, Some("10.0.0.0/24"), Some("10.0.1.1"), None, None)).contains("outside"));
        assert!(
            e(lan(None, Some("10.0.0.0/24"), Some("10.0.0.1"), Some("10.0.0.1"), None)).contains("different")
        );
        assert!(e(lan(None, Some("10.0.0.0/24"), Some("10.0.0.1"), Some("10.0.0.255"), None))
            .contains("broadcast"));
        assert!(e(lan(None, Some("10.0.0.0/24"), Some("10.0.0.1"), Some("nope"), None)).contains("not an IP"));
        assert!(e(lan(None, Some("10.0.0.0/24"), None, None, None)).contains("go together"));
        assert!(e(lan(None, None, None, Some("10.0.0.5"), None)).contains("go together"));
        assert!(e(lan(Some("no-such-parent9"), None, None, None, None)).contains("does not exist"));
        let err = lan(Some("eth0"), None, None, None, None).validate(Mode::Bridge).unwrap_err();
        assert_eq!(err, SpecError::NotApplicable("--parent"));
    }
}
