//! The Docker runtime: deploys a mode's network and the server/client containers through the
//! Engine API, and works out which devices belong to the workload.
use std::{collections::HashMap, net::IpAddr, path::PathBuf};

use anyhow::{bail, Context as _};
use dockertrace_common::DevKey;

use super::{faults::Fault, subnet, ClientPlace, DeployRequest, Deployment, Mode};
use crate::{
    docker::{ContainerInfo, ContainerSpec, Docker, NetworkSpec, LABEL, LABEL_PID, LABEL_START},
    filter::Filter,
    names::{Resolver, HOST},
    sys::{
        links::{self, LinkRef},
        netns,
        owner::Owner,
    },
    teardown::{Resource, Teardown},
    workload::WorkloadReport,
};

/// The labels of a run's containers and networks: the run, and the process that owns it.
pub fn labels(run_id: &str) -> HashMap<String, String> {
    let owner = Owner::current();
    HashMap::from([
        (LABEL.to_owned(), run_id.to_owned()),
        (LABEL_PID.to_owned(), owner.pid.to_string()),
        (LABEL_START.to_owned(), owner.start.to_string()),
    ])
}

/// Container-side device and its host-side counterpart, as filter keys.
fn container_devices(info: &ContainerInfo, host_netns: u32) -> anyhow::Result<(u32, Vec<DevKey>)> {
    let path = PathBuf::from(format!("/proc/{}/ns/net", info.pid));
    let inode = netns::inode_of(&path)?;
    let eth0 = links::link_info(Some(&path), "eth0")
        .with_context(|| format!("cannot inspect eth0 of container {}", info.name))?;
    let mut keys = vec![DevKey { netns: inode, ifindex: eth0.ifindex }];
    // veth: the peer in the host namespace; macvlan/ipvlan: the parent in the host namespace.
    if let Some(LinkRef::Index(i)) = eth0.link {
        keys.push(DevKey { netns: host_netns, ifindex: i });
    }
    Ok((inode, keys))
}

/// The image the containers run: the user's `--image` (which must exist locally: dockertrace
/// never pulls), or dockertrace's own, built from this binary when it changed.
pub async fn workload_image(
    docker: &Docker,
    image: Option<&str>,
    step: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<String> {
    match image {
        Some(img) => {
            if !docker.image_exists(img).await? {
                bail!("image `{img}` is not available locally (dockertrace never pulls; build or load it first)");
            }
            Ok(img.to_owned())
        }
        None => Ok(docker.ensure_workload_image(step).await?),
    }
}

/// Deploys `req.mode`; every created object is registered in `teardown` first.
pub async fn deploy(
    docker: &Docker,
    req: &DeployRequest<'_>,
    teardown: &mut Teardown,
    step: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<Deployment> {
    let image = workload_image(docker, req.image, step).await?;
    if matches!(req.mode, Mode::Overlay | Mode::OverlayLocal) {
        return super::docker_overlay::deploy(docker, req, &image, teardown, step).await;
    }
    let mut found = Found {
        host_netns: netns::current_inode()?,
        filter: Filter::default(),
        notes: Vec::new(),
        bridge: None,
    };
    let network = network(docker, req, teardown, step, &mut found).await?;
    let [server, client] = start_containers(docker, req, &image, &network, teardown, step).await?;
    let server_ip = if req.mode == Mode::Host {
        found.filter.port = Some(req.port);
        // On the host's loopback only: runs in other namespaces may use the port too.
        found.filter.netns.insert(found.host_netns);
        found.notes.push(format!("containers share the host network; traced: TCP port {} on lo", req.port));
        IpAddr::from([127, 0, 0, 1])
    } else {
        for info in [&server, &client] {
            found.add_container(info)?;
        }
        let server_ip = server.ip.with_context(|| format!("container {} has no IP address", server.name))?;
        inject(req, &server, &client, server_ip, teardown, &mut found)?;
        server_ip
    };
    // The host, and the containers by their roles (their names carry the run id): the same
    // names as the netns runtime's, from run to run.
    let mut names = Resolver::new();
    names.add(&PathBuf::from("/proc/self/ns/net"), HOST);
    for (info, role) in [(&server, "server"), (&client, "client")] {
        names.add(&PathBuf::from(format!("/proc/{}/ns/net", info.pid)), role);
    }
    Ok(Deployment {
        mode: req.mode,
        server_ip,
        filter: found.filter,
        notes: found.notes,
        client: ClientPlace::Container(client.id.clone()),
        workload_cpus: req.workload_cpus.cloned(),
        names: names.finish(),
    })
}

/// What the deployment learns on its way: the workload's devices and the notes for the user.
struct Found {
    host_netns: u32,
    filter: Filter,
    notes: Vec<String>,
    /// The bridge device the containers are on (bridge modes).
    bridge: Option<String>,
}

/// Builds `req.fault` into the deployment: only on what this run created (its containers'
/// devices) or matching only its own traffic (a DOCKER-USER rule for its two addresses on its
/// bridge, registered in the teardown before it is inserted).
fn inject(
    req: &DeployRequest<'_>,
    server: &ContainerInfo,
    client: &ContainerInfo,
    server_ip: IpAddr,
    teardown: &mut Teardown,
    found: &mut Found,
) -> anyhow::Result<()> {
    match req.fault {
        Some(Fault::ForwardDrop) => {
            let br = found.bridge.clone().context("forward-drop: the run's bridge device is unknown")?;
            let client_ip =
                client.ip.with_context(|| format!("container {} has no IP address", client.name))?;
            let tag = links::owner_alias(req.run_id, Owner::current());
            let rule = super::faults::forward_drop_rule(&br, client_ip, server_ip, req.port, Some(&tag));
            teardown.push(Resource::IptablesRule { chain: "DOCKER-USER".into(), rule: rule.clone() });
            let out = std::process::Command::new("iptables")
                .args(["-w", "-I", "DOCKER-USER", "1"])
                .args(&rule)
                .output()
                .context("cannot run iptables")?;
            if !out.status.success() {
                bail!(
                    "cannot inject forward-drop (is Docker's iptables integration on?): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            found.notes.push(format!(
                "injected forward-drop: iptables -I DOCKER-USER {} (removed at the end)",
                rule.iter()
                    .map(|a| if a.contains(' ') { format!("\"{a}\"") } else { a.clone() })
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        Some(Fault::Mtu) => {
            let path = PathBuf::from(format!("/proc/{}/ns/net", server.pid));
            let eth0 = links::link_info(Some(&path), "eth0")?;
            let Some(LinkRef::Index(i)) = eth0.link else {
                bail!("mtu: the server container's eth0 has no host-side peer");
            };
            let name = links::all_links(None)?
                .into_iter()
                .find(|(l, _)| l.ifindex == i)
                .map(|(l, _)| l.name)
                .context("mtu: the server's host-side veth is not in this namespace")?;
            let mtu = super::faults::FAULT_MTU.to_string();
            netns::ip(&["link", "set", "dev", &name, "mtu", &mtu])?;
            found.notes.push(format!(
                "injected mtu: {name} (the server container's bridge port, removed with it) has MTU {mtu}"
            ));
        }
        _ => {}
    }
    Ok(())
}

impl Found {
    /// A device of the host namespace, by name.
    fn add_host_dev(&mut self, dev: &str) -> anyhow::Result<()> {
        self.filter.devs.insert(DevKey { netns: self.host_netns, ifindex: netns::ifindex(None, dev)? });
        Ok(())
    }

    /// A container's devices, and a note naming its address and namespace.
    fn add_container(&mut self, info: &ContainerInfo) -> anyhow::Result<()> {
        let (inode, keys) = container_devices(info, self.host_netns)?;
        self.notes.push(format!(
            "{}: {} netns {inode}",
            info.name,
            info.ip.map_or_else(|| "no address".to_owned(), |ip| ip.to_string())
        ));
        self.filter.devs.extend(keys);
        Ok(())
    }
}

/// The Docker network the containers join: `host`, the default `bridge` (docker0), or a
/// network of this run (created here).
async fn network(
    docker: &Docker,
    req: &DeployRequest<'_>,
    teardown: &mut Teardown,
    step: &(dyn Fn(&str) + Send + Sync),
    found: &mut Found,
) -> anyhow::Result<String> {
    match req.mode {
        Mode::Host => Ok("host".to_owned()),
        Mode::Bridge => {
            found.add_host_dev("docker0")?;
            found.bridge = Some("docker0".into());
            Ok("bridge".to_owned())
        }
        Mode::BridgeUser | Mode::Macvlan | Mode::IpvlanL2 | Mode::IpvlanL3 => {
            create_network(docker, req, teardown, step, found).await
        }
        Mode::Normal => bail!("the normal mode runs without Docker"),
        Mode::Overlay | Mode::OverlayLocal => unreachable!("deployed by docker_overlay"),
    }
}

/// Creates the run's network (`dockertrace-<run>`) with the mode's driver; macvlan/ipvlan on
/// their parent link with the run's addressing.
async fn create_network(
    docker: &Docker,
    req: &DeployRequest<'_>,
    teardown: &mut Teardown,
    step: &(dyn Fn(&str) + Send + Sync),
    found: &mut Found,
) -> anyhow::Result<String> {
    let run = req.run_id;
    let (driver, opts) = req.mode.driver().expect("networked mode");
    let mut options: HashMap<String, String> =
        opts.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let (mut subnet, mut gateway) = (None, None);
    if req.mode.needs_parent() {
        let parent = parent_link(req, teardown, step)?;
        let a = match &req.addressing {
            Some(a) => a.clone(),
            None => subnet::default_addressing(run)?,
        };
        found.notes.push(format!("parent link {parent}, subnet {}, gateway {}", a.subnet, a.gateway));
        subnet = Some(a.subnet.to_string());
        gateway = Some(a.gateway.to_string());
        options.insert("parent".into(), parent);
    }
    let name = format!("dockertrace-{run}");
    step(&format!("creating {driver} network {name}"));
    teardown.push(Resource::Network(name.clone()));
    let info = docker
        .create_network(&NetworkSpec {
            name: name.clone(),
            driver: driver.to_owned(),
            subnet,
            gateway,
            options,
            labels: labels(run),
            attachable: false,
        })
        .await?;
    if let Some(dev) = &info.bridge_dev {
        found.bridge = Some(dev.clone());
        found.add_host_dev(dev)?;
        found.notes.push(format!("bridge device {dev}"));
    }
    Ok(name)
}

/// The macvlan/ipvlan parent: the user's `--parent`, or an isolated veth pair of this run.
fn parent_link(
    req: &DeployRequest<'_>,
    teardown: &mut Teardown,
    step: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<String> {
    if let Some(p) = &req.lan.parent {
        return Ok(p.clone());
    }
    let (p0, _) = links::parent_names(req.run_id);
    step(&format!("creating the isolated parent link {p0}"));
    teardown.push(Resource::Link(p0.clone()));
    Ok(links::create_parent(req.run_id)?)
}

/// Starts the server (the echo server) and client (idle, for `docker exec`) containers, on the
/// `--workload-cpus` (their cpuset; the client `docker exec` runs in inherits it).
async fn start_containers(
    docker: &Docker,
    req: &DeployRequest<'_>,
    image: &str,
    network: &str,
    teardown: &mut Teardown,
    step: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<[ContainerInfo; 2]> {
    let run = req.run_id;
    let port = req.port.to_string();
    let mut server_cmd =
        vec!["workload".to_owned(), "server".into(), "--port".into(), port, "--quiet".into()];
    if req.mode == Mode::Host {
        server_cmd.extend(["--listen".into(), "127.0.0.1".into()]);
    }
    let ips = req.addressing.as_ref().map_or((None, None), |a| (a.server, a.client));
    let mut started = Vec::new();
    for (role, cmd, ip) in
        [("server", server_cmd, ips.0), ("client", vec!["workload".to_owned(), "idle".into()], ips.1)]
    {
        let name = format!("dockertrace-{run}-{role}");
        step(&format!("starting container {name}"));
        teardown.push(Resource::Container(name.clone()));
        let info = docker
            .run_container(&ContainerSpec {
                name,
                image: image.to_owned(),
                cmd,
                network: network.to_owned(),
                ip,
                labels: labels(run),
                cpuset: req.workload_cpus.map(ToString::to_string),
            })
            .await?;
        started.push(info);
    }
    let client = started.pop().expect("two containers");
    let server = started.pop().expect("two containers");
    Ok([server, client])
}

/// Runs the client inside its container (`docker exec`), returns its report.
pub async fn run_client(
    docker: &Docker,
    client_id: &str,
    client_args: &[String],
) -> anyhow::Result<WorkloadReport> {
    let mut cmd = vec!["/dockertrace".to_owned()];
    cmd.extend_from_slice(client_args);
    let out = docker.exec(client_id, &cmd).await?;
    if out.exit_code != 0 {
        bail!("the workload client failed (exit {}): {}", out.exit_code, out.stderr.trim());
    }
    WorkloadReport::parse_json_line(&out.stdout)
}
