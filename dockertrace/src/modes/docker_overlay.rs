//! The Docker runtime's overlay modes: Docker's own overlay driver (swarm scope, VXLAN).
//!
//! - `overlay`: two real engines on one machine. The second is the Debian `dockerd`, started
//!   by dockertrace in a network namespace of the run (`dockertrace-<run>-host2`, see
//!   [`Engine2`]); an underlay veth pair (`dt<run>u0` here, `dt<run>u1` there, a free /24)
//!   joins the two hosts. The first engine becomes a swarm manager (only if it is in no swarm:
//!   otherwise its swarm is used and left as found), advertising its underlay address; the
//!   second joins as a worker over the underlay. An attachable overlay network
//!   `dockertrace-<run>` carries the server (engine 1) and the client (engine 2): every packet
//!   between them is encapsulated by `vxlan_xmit` in one engine's overlay sandbox, crosses the
//!   underlay as UDP 4789 and is decapsulated by `vxlan_rcv` in the other's.
//! - `overlay-local`: the same overlay network with both containers on the first engine.
//!
//! The in-kernel filter holds the containers' overlay devices, every device of the engines'
//! overlay sandboxes (`<exec-root>/netns/<n>-<network id>`: `br0`, the `vx-…` VXLAN device, the
//! containers' veth ends) and both ends of the underlay.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context as _};
use dockertrace_common::DevKey;
use ipnet::IpNet;

use super::{
    docker_runtime::labels,
    netns_runtime::{ns_name, record_owner},
    subnet, ClientPlace, DeployRequest, Deployment, Mode,
};
use crate::{
    docker::{daemon::Engine2, ContainerInfo, ContainerSpec, Docker, DockerError, NetworkSpec},
    filter::Filter,
    names::{Resolver, HOST},
    sys::{
        links,
        netns::{self, NETNS_DIR},
    },
    teardown::{Resource, Teardown},
};

/// The first engine's exec-root (its overlay sandboxes are in `netns/` there).
const EXEC_ROOT: &str = "/var/run/docker";

/// The bridge swarm creates on each engine for its containers' way out (left behind by `swarm
/// leave`).
const GWBRIDGE: &str = "docker_gwbridge";

/// How long the second engine may take to answer.
const ENGINE_START: Duration = Duration::from_secs(60);

/// Deploys `overlay` or `overlay-local` with `image` (built on the first engine); every object
/// is registered in `teardown` before it is created.
pub async fn deploy(
    docker: &Docker,
    req: &DeployRequest<'_>,
    image: &str,
    teardown: &mut Teardown,
    step: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<Deployment> {
    let run = req.run_id;
    let two_hosts = req.mode == Mode::Overlay;
    if two_hosts {
        crate::docker::daemon::available()?;
    }
    let swarm = docker.swarm_state().await?;
    match swarm.state.as_str() {
        "inactive" => {}
        "active" if swarm.manager => {}
        "active" => bail!(
            "the overlay mode needs the Docker engine to be a swarm manager (or in no swarm): it is a swarm worker"
        ),
        other => bail!("the Docker engine's swarm is {other}: the overlay mode needs it active (as a manager) or inactive"),
    }
    // The owner of the run, for the cleanup of a killed run (its second engine, its swarm).
    record_owner(run, teardown)?;

    let underlay = subnet::pick_subnet(&format!("{run}-underlay"), &[])?;
    let overlay = subnet::pick_subnet(run, &[IpNet::V4(underlay)])?;
    let pool = subnet::pick_subnet(&format!("{run}-pool"), &[IpNet::V4(underlay), IpNet::V4(overlay)])?;
    let mut hosts = underlay.hosts();
    let vtep: [IpAddr; 2] =
        [hosts.next().context("underlay")?.into(), hosts.next().context("underlay")?.into()];
    let prefix = underlay.prefix_len();
    let mut notes = Vec::new();
    // Across two engines, journeys go on through the tunnel: the kernel describes encapsulated
    // packets by their inner headers (where its verifier takes the peel in time).
    let mut filter = Filter::default();
    if two_hosts {
        match crate::filter::vxlan_peel_supported() {
            Ok(()) => filter.vxlan = true,
            Err(why) => notes.push(why),
        }
    }
    let host_netns = netns::current_inode()?;
    let mut names = Resolver::new();
    names.add(Path::new("/proc/self/ns/net"), HOST);

    // The second host: a namespace, the underlay into it.
    let engine2 = Engine2::new(run);
    let host2 = ns_name(run, "host2");
    let (u0, u1) = links::underlay_names(run);
    step(&format!("creating the underlay link {u0}"));
    teardown.push(Resource::Link(u0.clone()));
    if two_hosts {
        step(&format!("creating network namespace {host2}"));
        let ns = teardown.create_namespace(&host2)?;
        let _ = ns.sysctl("ipv6/conf/all/disable_ipv6", "1");
        links::create_underlay(run, Some(&host2))?;
        ns.ip(&["addr", "add", &format!("{}/{prefix}", vtep[1]), "dev", &u1])?;
        if swarm.active {
            // The manager advertises an address of this machine: reached through the underlay.
            ns.ip(&["route", "add", "default", "via", &vtep[0].to_string()])?;
        }
        filter.devs.insert(ns.dev(&u1)?);
        names.add(&ns.path(), "host2");
    } else {
        links::create_underlay(run, None)?;
    }
    netns::ip(&["addr", "add", &format!("{}/{prefix}", vtep[0]), "dev", &u0])?;
    // The run's state directory (the swarm mark, the second engine's files): removed after the
    // swarm is left, so that a run killed while tearing down still leaves the mark to cleanup.
    teardown.push(Resource::EngineFiles(engine2.clone()));
    notes.push(if two_hosts {
        // On the path: the VXLAN frames between the engines.
        filter.devs.insert(DevKey { netns: host_netns, ifindex: netns::ifindex(None, &u0)? });
        format!("underlay {underlay}: {u0} ({}) in this namespace ↔ {u1} ({}) in {host2}", vtep[0], vtep[1])
    } else {
        // Only the swarm's advertised address: the workload never crosses it.
        format!("underlay {underlay}: {u0} ({}), the swarm's advertised address (not traced)", vtep[0])
    });

    // The first engine's swarm: ours only when it was in none.
    let manager = if swarm.active {
        let addr = swarm.node_addr.clone().context("the swarm manager advertises no address")?;
        notes.push(format!("swarm: the engine's own (manager at {addr}), left as found"));
        format!("{addr}:2377")
    } else {
        if !docker.network_exists(GWBRIDGE).await? {
            // Swarm creates it and leaves it behind: removed after the swarm is left.
            teardown.push(Resource::Network(GWBRIDGE.into()));
            engine2.write_swarm_mark(true)?;
        } else {
            engine2.write_swarm_mark(false)?;
        }
        step(&format!("initialising a swarm on the Docker engine (advertising {})", vtep[0]));
        teardown.push(Resource::SwarmLeave(None));
        docker.init_swarm(vtep[0], &pool.to_string(), u32::from(pool.prefix_len())).await?;
        notes.push(format!("swarm: initialised for this run, advertising {}, address pool {pool}", vtep[0]));
        format!("{}:2377", vtep[0])
    };

    // The overlay network.
    let network = format!("dockertrace-{run}");
    let gateway = overlay.hosts().next().context("overlay")?;
    step(&format!("creating overlay network {network}"));
    teardown.push(Resource::Network(network.clone()));
    let net = docker
        .create_network(&NetworkSpec {
            name: network.clone(),
            driver: "overlay".into(),
            subnet: Some(overlay.to_string()),
            gateway: Some(gateway.to_string()),
            labels: labels(run),
            attachable: true,
            ..Default::default()
        })
        .await?;
    notes.push(format!("overlay network {network} ({overlay}, attachable, VXLAN)"));

    // The second engine, a worker of the swarm, with the workload image.
    let engine2_api = if two_hosts {
        step(&format!("starting a second Docker engine in {host2}"));
        teardown.push(Resource::Engine(engine2.clone()));
        let (pid, d2) = engine2.start(&Path::new(NETNS_DIR).join(&host2), ENGINE_START).await?;
        notes.push(format!(
            "second engine: dockerd {pid} in {host2} on {} (data {})",
            engine2.socket().display(),
            engine2.data_root().display()
        ));
        step(&format!("joining the second engine to the swarm at {manager}"));
        teardown.push(Resource::SwarmLeave(Some(engine2.socket())));
        let token = docker.worker_token().await?;
        d2.join_swarm(&manager, vtep[1], &token).await?;
        if swarm.active {
            if let Some(node) = d2.swarm_state().await?.node_id {
                teardown.push(Resource::SwarmNode(node));
            }
        }
        step(&format!("copying image {image} into the second engine"));
        docker.copy_image(image, &d2).await?;
        Some(d2)
    } else {
        None
    };

    // The containers: the server on the first engine, the client on the second (or the first).
    let port = req.port.to_string();
    let server_cmd = vec!["workload".to_owned(), "server".into(), "--port".into(), port, "--quiet".into()];
    let server_name = format!("dockertrace-{run}-server");
    step(&format!("starting container {server_name}"));
    teardown.push(Resource::Container(server_name.clone()));
    let server = run_on(docker, &spec(req, &server_name, image, &network, server_cmd)).await?;
    let client_name = format!("dockertrace-{run}-client");
    step(&format!("starting container {client_name}"));
    let client_spec = spec(req, &client_name, image, &network, vec!["workload".into(), "idle".into()]);
    let (client, place) = match &engine2_api {
        Some(d2) => {
            teardown.push(Resource::ContainerOn { socket: engine2.socket(), name: client_name.clone() });
            let c = run_on(d2, &client_spec).await?;
            let place = ClientPlace::Engine { socket: engine2.socket(), id: c.id.clone() };
            (c, place)
        }
        None => {
            teardown.push(Resource::Container(client_name.clone()));
            let c = run_on(docker, &client_spec).await?;
            let place = ClientPlace::Container(c.id.clone());
            (c, place)
        }
    };

    // The devices the packets cross.
    let server_ip = server.ip.with_context(|| format!("container {} has no address", server.name))?;
    for (info, role) in [(&server, "server"), (&client, "client")] {
        let ns = PathBuf::from(format!("/proc/{}/ns/net", info.pid));
        let ip = info.ip.with_context(|| format!("container {} has no address", info.name))?;
        let dev = dev_with_addr(&ns, ip)?;
        let inode = netns::inode_of(&ns)?;
        filter.devs.insert(DevKey { netns: inode, ifindex: netns::ifindex(Some(&ns), &dev)? });
        notes.push(format!("{}: {ip} netns {inode} ({dev} on {network})", info.name));
        names.add(&ns, role);
    }
    let mut sandboxes = vec![(PathBuf::from(EXEC_ROOT), "overlay1")];
    if two_hosts {
        sandboxes.push((engine2.exec_root(), "overlay2"));
    }
    for (exec_root, role) in sandboxes {
        let sandbox = sandbox(&exec_root, &net.id)?;
        let inode = netns::inode_of(&sandbox)?;
        let devs = links::all_links(Some(&sandbox))?;
        let shown: Vec<String> =
            devs.iter().filter(|(l, _)| l.name != "lo").map(|(l, _)| l.name.clone()).collect();
        for (l, _) in devs.iter().filter(|(l, _)| l.name != "lo") {
            filter.devs.insert(DevKey { netns: inode, ifindex: l.ifindex });
        }
        notes.push(format!("overlay sandbox {} ({role}): {}", sandbox.display(), shown.join(", ")));
        names.add(&sandbox, role);
    }
    Ok(Deployment {
        mode: req.mode,
        server_ip,
        filter,
        notes,
        client: place,
        workload_cpus: req.workload_cpus.cloned(),
        names: names.finish(),
    })
}

fn spec(req: &DeployRequest<'_>, name: &str, image: &str, network: &str, cmd: Vec<String>) -> ContainerSpec {
    ContainerSpec {
        name: name.to_owned(),
        image: image.to_owned(),
        cmd,
        network: network.to_owned(),
        ip: None,
        labels: labels(req.run_id),
        cpuset: req.workload_cpus.map(ToString::to_string),
    }
}

/// Runs a container on `engine`; a worker that joined a moment ago may not know the overlay
/// network yet (it learns it from the manager): that is retried for a while.
async fn run_on(engine: &Docker, spec: &ContainerSpec) -> Result<ContainerInfo, DockerError> {
    let mut tries = 0;
    loop {
        match engine.run_container(spec).await {
            Err(e) if tries < 20 && e.to_string().contains("not found") => {
                tries += 1;
                // A half-created container of that name is in the way of the next try.
                engine.remove_container(&spec.name).await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            r => return r,
        }
    }
}

/// The device of the namespace at `ns` holding address `ip`.
fn dev_with_addr(ns: &Path, ip: IpAddr) -> anyhow::Result<String> {
    let out = netns::run_in(ns, || Command::new("ip").args(["-o", "addr", "show"]).output())?
        .context("cannot run `ip`")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let want = ip.to_string();
    text.lines()
        .find(|l| l.split_whitespace().nth(3).and_then(|a| a.split('/').next()) == Some(want.as_str()))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(|d| d.split('@').next().unwrap_or(d).to_owned())
        .with_context(|| format!("no device with address {ip} in {}", ns.display()))
}

/// The overlay sandbox of network `id` in an engine's exec-root: `netns/<n>-<id[..10]>`
/// (`<n>`: how many times the engine created it).
fn sandbox(exec_root: &Path, id: &str) -> anyhow::Result<PathBuf> {
    let dir = exec_root.join("netns");
    let suffix = format!("-{}", id.get(..10).unwrap_or(id));
    std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list the engine's namespaces in {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(&suffix)))
        .with_context(|| format!("no overlay sandbox *{suffix} in {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandboxes_are_found_by_the_network_ids_prefix() {
        let dir = std::env::temp_dir().join(format!("dt-sandbox-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("netns")).unwrap();
        std::fs::write(dir.join("netns/1-0123456789"), b"").unwrap();
        std::fs::write(dir.join("netns/abcdef012345"), b"").unwrap();
        assert_eq!(sandbox(&dir, "0123456789abcdef").unwrap(), dir.join("netns/1-0123456789"));
        assert!(sandbox(&dir, "fedcba9876543210").unwrap_err().to_string().contains("no overlay sandbox"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
