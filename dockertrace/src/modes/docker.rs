//! The Docker runtime: deploys a mode's network and the server/client containers through the
//! Engine API, and works out which devices belong to the workload.
use std::{collections::HashMap, net::IpAddr, path::PathBuf};

use anyhow::{bail, Context as _};
use dockertrace_common::DevKey;
use ipnet::IpNet;

use super::{
    links::{self, LinkRef},
    Addressing, ClientPlace, DeployRequest, Deployment, Mode,
};
use crate::{
    docker::{ContainerInfo, ContainerSpec, Docker, NetworkSpec, LABEL},
    filter::Filter,
    netns,
    teardown::{Resource, Teardown},
    workload::WorkloadReport,
};

fn labels(run_id: &str) -> HashMap<String, String> {
    HashMap::from([(LABEL.to_owned(), run_id.to_owned())])
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
    let mode = req.mode;
    let run = req.run_id;
    let host_netns = netns::current_inode()?;
    let mut filter = Filter::default();
    let mut notes = Vec::new();

    // The network.
    let network = match mode {
        Mode::Host => "host".to_owned(),
        Mode::Bridge => {
            filter.devs.insert(DevKey { netns: host_netns, ifindex: netns::ifindex(None, "docker0")? });
            "bridge".to_owned()
        }
        Mode::BridgeUser | Mode::Macvlan | Mode::IpvlanL2 | Mode::IpvlanL3 => {
            let (driver, opts) = mode.driver().expect("networked mode");
            let mut options: HashMap<String, String> =
                opts.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            let (mut subnet, mut gateway) = (None, None);
            if mode.needs_parent() {
                let parent = match &req.lan.parent {
                    Some(p) => p.clone(),
                    None => {
                        let (p0, _) = links::parent_names(run);
                        step(&format!("creating the isolated parent link {p0}"));
                        teardown.push(Resource::Link(p0.clone()));
                        links::create_parent(run)?
                    }
                };
                let a = match &req.addressing {
                    Some(a) => a.clone(),
                    None => {
                        let net = links::pick_subnet(run, &[])?;
                        let gw = net.hosts().next().context("empty subnet")?;
                        Addressing {
                            subnet: IpNet::V4(net),
                            gateway: IpAddr::V4(gw),
                            server: None,
                            client: None,
                        }
                    }
                };
                notes.push(format!("parent link {parent}, subnet {}, gateway {}", a.subnet, a.gateway));
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
                })
                .await?;
            if let Some(dev) = &info.bridge_dev {
                filter.devs.insert(DevKey { netns: host_netns, ifindex: netns::ifindex(None, dev)? });
                notes.push(format!("bridge device {dev}"));
            }
            name
        }
        Mode::Normal => bail!("the normal mode runs without Docker"),
    };

    // The containers.
    let port = req.port.to_string();
    let mut server_cmd =
        vec!["workload".to_owned(), "server".into(), "--port".into(), port.clone(), "--quiet".into()];
    if mode == Mode::Host {
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
                image: image.clone(),
                cmd,
                network: network.clone(),
                ip,
                labels: labels(run),
            })
            .await?;
        started.push(info);
    }
    let (server, client) = (&started[0], &started[1]);

    let server_ip = if mode == Mode::Host {
        filter.port = Some(req.port);
        notes.push(format!("containers share the host network; traced: TCP port {} on lo", req.port));
        IpAddr::from([127, 0, 0, 1])
    } else {
        for info in [server, client] {
            let (inode, keys) = container_devices(info, host_netns)?;
            notes.push(format!(
                "{}: {} netns {inode}",
                info.name,
                info.ip.map_or_else(|| "no address".to_owned(), |ip| ip.to_string())
            ));
            filter.devs.extend(keys);
        }
        server.ip.with_context(|| format!("container {} has no IP address", server.name))?
    };
    Ok(Deployment { mode, server_ip, filter, notes, client: ClientPlace::Container(client.id.clone()) })
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
