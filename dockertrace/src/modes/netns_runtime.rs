//! The netns runtime (`--runtime netns`): every mode without Docker. dockertrace builds the
//! topology Docker would build, in network namespaces it creates and removes itself:
//!
//! - `dockertrace-<run>-host` stands in for the Docker host: it holds the bridge, the host ends
//!   of the veth pairs, the isolated macvlan/ipvlan parent and Docker's iptables rules, so the
//!   machine's own namespace, links and firewall are never touched;
//! - `dockertrace-<run>-server` and `dockertrace-<run>-client` stand in for the containers
//!   (their device is called `eth0`, as in a container);
//! - `normal` and `host` run both workload processes over the loopback of the host namespace;
//! - `overlay` builds two hosts instead of one (see [`overlay`]).
//!
//! The workload is this same binary, entering its namespace before exec and killed with
//! dockertrace (PR_SET_PDEATHSIG). Deleting a namespace removes its links, routes, sysctls and
//! iptables rules; `dockertrace cleanup` finds leftovers by the `dockertrace-` name prefix. The
//! run's owner (pid and start time) is kept in `/run/dockertrace/<run>.pid` while it runs, so
//! that the next run removes what a killed one left (see `modes::leftovers`).
use std::{net::IpAddr, path::Path, process::Command};

use anyhow::{bail, Context as _};
use ipnet::IpNet;

use super::{faults::Fault, host, subnet, ClientPlace, DeployRequest, Deployment, Mode};
use crate::{
    filter::Filter,
    names::{Names, Resolver, HOST},
    sys::{
        links,
        netns::Namespace,
        owner::{self, Owner},
    },
    teardown::{Resource, Teardown},
};

/// Every namespace of the runtime is called `dockertrace-<run>-<role>`.
pub const NS_PREFIX: &str = "dockertrace-";

/// The roles of a run's namespaces (`host1`, `host2`, `overlay1`, `overlay2`: the overlay
/// mode's two hosts and their overlay namespaces).
pub const ROLES: [&str; 7] = ["host", "server", "client", "host1", "host2", "overlay1", "overlay2"];

/// The namespace of role `role` (`host`, `server`, `client`) of run `run_id`.
pub fn ns_name(run_id: &str, role: &str) -> String {
    format!("{NS_PREFIX}{run_id}-{role}")
}

/// One line for the run's banner and reports.
pub fn describe(mode: Mode) -> &'static str {
    match mode {
        Mode::Normal => "two processes over 127.0.0.1 in a namespace of their own, no Docker",
        Mode::Host => {
            "two processes sharing one namespace (as with --network host), over 127.0.0.1, no Docker"
        }
        Mode::Bridge => {
            "server and client namespaces on a docker0-like Linux bridge via veth pairs, no Docker"
        }
        Mode::BridgeUser => "server and client namespaces on a br-… Linux bridge via veth pairs, no Docker",
        Mode::Macvlan => {
            "server and client namespaces on macvlan links (bridge mode) over an isolated parent, no Docker"
        }
        Mode::IpvlanL2 => {
            "server and client namespaces on ipvlan links (L2) over an isolated parent, no Docker"
        }
        Mode::IpvlanL3 => {
            "server and client namespaces on ipvlan links (L3) over an isolated parent, no Docker"
        }
        Mode::Overlay => {
            "server and client namespaces on two hosts' br0 + vxlan0 (VNI 4096, UDP 4789, MTU 1450) over an underlay veth, no Docker"
        }
        Mode::OverlayLocal => "not built without Docker: overlay-local needs the Docker runtime (no Docker stand-in)",
    }
}

/// Registers and creates namespace `role` of run `run_id` (the teardown deletes it), without
/// IPv6 as in a Docker container.
fn create_ns(run_id: &str, role: &str, teardown: &mut Teardown) -> anyhow::Result<Namespace> {
    let ns = teardown.create_namespace(&ns_name(run_id, role))?;
    // Docker disables IPv6 in containers without an IPv6 network; so do we (it also keeps
    // autoconfiguration packets out of the trace). No IPv6 in the kernel: nothing to do.
    let _ = ns.sysctl("ipv6/conf/all/disable_ipv6", "1");
    let _ = ns.sysctl("ipv6/conf/default/disable_ipv6", "1");
    Ok(ns)
}

/// Records this process as the owner of run `run_id` (`/run/dockertrace/<run>.pid`), so that a
/// later run can tell whether what this one left belongs to a dead run. Registered first, so
/// the teardown removes it last.
pub(super) fn record_owner(run_id: &str, teardown: &mut Teardown) -> anyhow::Result<()> {
    let path = owner::state_file(run_id);
    teardown.push(Resource::File(path.clone()));
    owner::write_state(run_id, Owner::current())
        .with_context(|| format!("cannot record the run's owner in {}", path.display()))?;
    Ok(())
}

/// The addresses of a networked mode: the user's (`--subnet --gateway [--ip-server
/// --ip-client]`) or a free private /24, gateway first, then server and client, as Docker's
/// IPAM hands them out.
fn addresses(req: &DeployRequest<'_>) -> anyhow::Result<(IpNet, IpAddr, IpAddr, IpAddr)> {
    let (subnet, gateway, fixed) = match &req.addressing {
        Some(a) => (a.subnet, a.gateway, (a.server, a.client)),
        None => {
            let a = subnet::default_addressing(req.run_id)?;
            (a.subnet, a.gateway, (None, None))
        }
    };
    let mut free = subnet.hosts().filter(|h| *h != gateway && Some(*h) != fixed.0 && Some(*h) != fixed.1);
    let server = match fixed.0 {
        Some(s) => s,
        None => free.next().context("the subnet has no room for the server")?,
    };
    let client = match fixed.1 {
        Some(c) => c,
        None => free.next().context("the subnet has no room for the client")?,
    };
    Ok((subnet, gateway, server, client))
}

/// Deploys `req.mode` in namespaces of its own; every object is registered in `teardown` first.
pub fn deploy(
    req: &DeployRequest<'_>,
    teardown: &mut Teardown,
    step: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<Deployment> {
    let run = req.run_id;
    if req.mode == Mode::OverlayLocal {
        bail!(
            "the overlay-local mode needs the Docker runtime (--runtime docker, its swarm overlay network); --runtime netns builds the two-host overlay only"
        );
    }
    record_owner(run, teardown)?;
    if req.mode == Mode::Overlay {
        return overlay(req, teardown, step);
    }
    step(&format!("creating network namespace {}", ns_name(run, "host")));
    let h = create_ns(run, "host", teardown)?;
    let mut notes =
        vec![format!("runtime netns: {} stands in for the Docker host, netns {}", h.name(), h.inode()?)];
    if req.mode.over_loopback() {
        return loopback(req, &h, teardown, notes);
    }

    let net = Net::new(req)?;
    let mut spaces = Vec::new();
    for role in ["server", "client"] {
        step(&format!("creating network namespace {}", ns_name(run, role)));
        spaces.push(create_ns(run, role, teardown)?);
    }
    let (server, client) = (&spaces[0], &spaces[1]);
    let mut filter = Filter::default();
    match req.mode {
        Mode::Bridge | Mode::BridgeUser => {
            bridge(req, &net, &h, [server, client], &mut filter, &mut notes, step)?
        }
        Mode::Macvlan | Mode::IpvlanL2 | Mode::IpvlanL3 => {
            vlan(req, &net, &h, [server, client], &mut filter, &mut notes, step)?
        }
        Mode::Normal | Mode::Host | Mode::Overlay | Mode::OverlayLocal => unreachable!("returned above"),
    }

    let mut client_place = ClientPlace::Namespace(client.path());
    if req.fault == Some(Fault::MacvlanParent) {
        // The parent's side of the macvlan: the host namespace, with the gateway's address on
        // the parent link. The client runs there.
        let (p0, _) = links::parent_names(run);
        h.ip(&["addr", "add", &format!("{}/{}", net.gateway, net.prefix), "dev", &p0])?;
        notes.push(format!(
            "injected macvlan-parent: the client runs in {} on the parent {p0} ({}), talking to its macvlan child {}",
            h.name(),
            net.gateway,
            net.server
        ));
        client_place = ClientPlace::Namespace(h.path());
    }
    let pid = host::spawn_server(Some(&server.path()), req.workload_cpus, "0.0.0.0", req.port, teardown)?;
    notes.push(format!("server: process {pid} in {} on {}:{}", server.name(), net.server, req.port));
    if filter.devs.is_empty() {
        bail!("no device of the workload found");
    }
    Ok(Deployment {
        mode: req.mode,
        server_ip: net.server,
        filter,
        notes,
        client: client_place,
        workload_cpus: req.workload_cpus.cloned(),
        names: role_names(&[(&h, HOST), (server, "server"), (client, "client")]),
    })
}

/// `normal` and `host`: both workload processes over the loopback of the host namespace.
fn loopback(
    req: &DeployRequest<'_>,
    h: &Namespace,
    teardown: &mut Teardown,
    mut notes: Vec<String>,
) -> anyhow::Result<Deployment> {
    let pid = host::spawn_server(Some(&h.path()), req.workload_cpus, "127.0.0.1", req.port, teardown)?;
    notes.push(format!(
        "server: process {pid} in {} on 127.0.0.1:{}; traced: TCP port {} on lo",
        h.name(),
        req.port,
        req.port
    ));
    Ok(Deployment {
        mode: req.mode,
        server_ip: IpAddr::from([127, 0, 0, 1]),
        // The port on this namespace's loopback only: other runs' namespaces may use it too.
        filter: Filter { port: Some(req.port), netns: [h.inode()?].into(), ..Default::default() },
        notes,
        client: ClientPlace::Namespace(h.path()),
        workload_cpus: req.workload_cpus.cloned(),
        names: role_names(&[(h, HOST)]),
    })
}

/// The run's namespaces by their roles (`dockertrace-<run>-server` → `server`), which stay
/// the same from run to run, and the host ends of the veths by the role they lead to.
fn role_names(spaces: &[(&Namespace, &str)]) -> Names {
    let mut r = Resolver::new();
    for (ns, role) in spaces {
        r.add(&ns.path(), role);
    }
    r.finish()
}

/// The addressing of a networked mode, as the topology builders use it.
struct Net {
    subnet: IpNet,
    /// The prefix length, as `ip` wants it.
    prefix: String,
    gateway: String,
    server: IpAddr,
    client: IpAddr,
    /// The run id cut to fit device names (IFNAMSIZ).
    short: String,
}

impl Net {
    fn new(req: &DeployRequest<'_>) -> anyhow::Result<Net> {
        let (subnet, gateway, server, client) = addresses(req)?;
        Ok(Net {
            subnet,
            prefix: subnet.prefix_len().to_string(),
            gateway: gateway.to_string(),
            server,
            client,
            short: req.run_id.chars().take(8).collect(),
        })
    }
}

/// `bridge`/`bridge-user`: a docker0 or br-<id> bridge in the host namespace, a veth pair per
/// container namespace, Docker's br_netfilter and iptables settings.
fn bridge(
    req: &DeployRequest<'_>,
    net: &Net,
    h: &Namespace,
    [server, client]: [&Namespace; 2],
    filter: &mut Filter,
    notes: &mut Vec<String>,
    step: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<()> {
    let (short, gw, prefix) = (&net.short, &net.gateway, &net.prefix);
    // docker0 or br-<id>, but inside our own host namespace: the real docker0 (if any) is
    // never touched.
    let br = if req.mode == Mode::Bridge { format!("dt0-{short}") } else { format!("br-{short}") };
    step(&format!("creating bridge {br} in {}", h.name()));
    h.ip(&["link", "add", &br, "type", "bridge"])?;
    h.ip(&["addr", "add", &format!("{gw}/{prefix}"), "dev", &br])?;
    h.ip(&["link", "set", &br, "up"])?;
    filter.devs.insert(h.dev(&br)?);
    h.sysctl("ipv4/ip_forward", "1")?;
    notes.push(format!("bridge {br} ({gw}/{prefix}) in {}; ip_forward=1", h.name()));
    notes.push(br_netfilter(h));
    notes.push(docker_iptables(h, &br, &net.subnet.to_string()));
    if req.fault == Some(Fault::ForwardDrop) {
        // Inside the run's own namespace: gone with it, no tag needed.
        let rule = super::faults::forward_drop_rule(&br, net.client, net.server, req.port, None);
        let args: Vec<&str> =
            ["-w", "-I", "DOCKER-USER", "1"].into_iter().chain(rule.iter().map(String::as_str)).collect();
        h.exec("iptables", &args).map_err(|e| anyhow::anyhow!("cannot inject forward-drop: {e}"))?;
        notes.push(format!(
            "injected forward-drop: iptables -I DOCKER-USER {}, in {}",
            rule.join(" "),
            h.name()
        ));
    }
    for (ns, addr, tag) in [(server, net.server, 's'), (client, net.client, 'c')] {
        let veth = format!("veth{short}{tag}");
        h.ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns.name()])?;
        h.ip(&["link", "set", &veth, "master", &br])?;
        h.ip(&["link", "set", &veth, "up"])?;
        if req.fault == Some(Fault::Mtu) && tag == 's' {
            let mtu = super::faults::FAULT_MTU.to_string();
            h.ip(&["link", "set", &veth, "mtu", &mtu])?;
            notes.push(format!(
                "injected mtu: {veth} (the server's bridge port) has MTU {mtu}, its peer 1500"
            ));
        }
        filter.devs.insert(h.dev(&veth)?);
        configure_eth0(ns, addr, prefix, &["default", "via", gw])?;
        filter.devs.insert(ns.dev("eth0")?);
        notes.push(format!("{}: {addr} netns {} (host end {veth})", ns.name(), ns.inode()?));
    }
    Ok(())
}

/// `macvlan`/`ipvlan-*`: an isolated parent (a veth pair inside the host namespace, so nothing
/// reaches a LAN) and a link on it per container namespace.
fn vlan(
    req: &DeployRequest<'_>,
    net: &Net,
    h: &Namespace,
    [server, client]: [&Namespace; 2],
    filter: &mut Filter,
    notes: &mut Vec<String>,
    step: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<()> {
    let (short, gw, prefix) = (&net.short, &net.gateway, &net.prefix);
    let (p0, p1) = links::parent_names(req.run_id);
    step(&format!("creating the isolated parent link {p0} in {}", h.name()));
    h.ip(&["link", "add", &p0, "type", "veth", "peer", "name", &p1])?;
    h.ip(&["link", "set", &p0, "up"])?;
    h.ip(&["link", "set", &p1, "up"])?;
    filter.devs.insert(h.dev(&p0)?);
    notes.push(format!("parent link {p0} in {}, subnet {}, gateway {gw}", h.name(), net.subnet));
    let (kind, kmode) = match req.mode {
        Mode::Macvlan => ("macvlan", "bridge"),
        Mode::IpvlanL2 => ("ipvlan", "l2"),
        _ => ("ipvlan", "l3"),
    };
    for (ns, addr, tag) in [(server, net.server, 's'), (client, net.client, 'c')] {
        // As Docker does: create on the parent, move into the namespace, rename eth0.
        let tmp = format!("dt{short}{tag}");
        h.ip(&["link", "add", "link", &p0, "name", &tmp, "type", kind, "mode", kmode])?;
        h.ip(&["link", "set", &tmp, "netns", ns.name()])?;
        ns.ip(&["link", "set", &tmp, "name", "eth0"])?;
        let route: &[&str] =
            if req.mode == Mode::IpvlanL3 { &["default", "dev", "eth0"] } else { &["default", "via", gw] };
        configure_eth0(ns, addr, prefix, route)?;
        filter.devs.insert(ns.dev("eth0")?);
        notes.push(format!("{}: {addr} netns {} ({kind} {kmode} on {p0})", ns.name(), ns.inode()?));
    }
    Ok(())
}

/// The overlay's VXLAN network identifier (Docker's first overlay network gets 4096 too).
pub const OVERLAY_VNI: u32 = 4096;
/// The overlay's MTU: the underlay's 1500 minus VXLAN's 50 bytes (outer IPv4, UDP, VXLAN,
/// inner Ethernet), as Docker sets it.
pub const OVERLAY_MTU: u32 = 1450;

/// A container's MAC address as Docker derives it from its IPv4 address: `02:42:` + the
/// address's four bytes.
fn docker_mac(ip: IpAddr) -> String {
    let o = match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => [0, 0, 0, 0],
    };
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// `overlay`: two hosts (`host1`, `host2`) joined by an underlay veth (`eth0` on both) with a
/// free /24 of its own; on each host an overlay namespace (`overlay1`, `overlay2`) as Docker's
/// overlay driver builds its sandbox: a bridge `br0` with the overlay's gateway address and a
/// VXLAN device `vxlan0` (VNI 4096, UDP port 4789, MTU 1450, ARP proxy) created in the host —
/// its UDP socket stays there — and moved into the overlay namespace; the peer's container as
/// static neighbour and forwarding entries on `vxlan0`. The server's namespace is on host1's
/// `br0`, the client's on host2's, each through a veth. Every packet between them crosses the
/// tunnel: `vxlan_xmit` encapsulates it in host1 (or host2), the underlay carries UDP 4789,
/// `vxlan_rcv` decapsulates it on the other host.
fn overlay(
    req: &DeployRequest<'_>,
    teardown: &mut Teardown,
    step: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<Deployment> {
    let run = req.run_id;
    let net = Net::new(req)?;
    let underlay = subnet::pick_subnet(&format!("{run}-underlay"), &[net.subnet])?;
    let mut vteps = underlay.hosts();
    let vtep = [vteps.next().context("underlay")?, vteps.next().context("underlay")?];
    let mut spaces = Vec::new();
    for role in ["host1", "host2", "overlay1", "overlay2", "server", "client"] {
        step(&format!("creating network namespace {}", ns_name(run, role)));
        spaces.push(create_ns(run, role, teardown)?);
    }
    let [h1, h2, o1, o2, server, client] = &spaces[..] else { unreachable!("six namespaces") };
    let mut notes = vec![format!(
        "runtime netns: {} and {} stand in for two Docker hosts, {} and {} for their overlay sandboxes",
        h1.name(),
        h2.name(),
        o1.name(),
        o2.name()
    )];
    // Journeys go on through the tunnel: the kernel describes encapsulated packets by their
    // inner headers (where its verifier takes the peel in time).
    let peel = crate::filter::vxlan_peel_supported();
    let mut filter = Filter { vxlan: peel.is_ok(), ..Filter::default() };
    if let Err(why) = peel {
        notes.push(why);
    }

    step(&format!("creating the underlay between {} and {}", h1.name(), h2.name()));
    h1.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", h2.name()])?;
    for (h, addr) in [(h1, vtep[0]), (h2, vtep[1])] {
        h.ip(&["addr", "add", &format!("{addr}/{}", underlay.prefix_len()), "dev", "eth0"])?;
        h.ip(&["link", "set", "eth0", "up"])?;
        filter.devs.insert(h.dev("eth0")?);
    }
    notes.push(format!(
        "underlay {underlay}: eth0 of {} ({}) ↔ eth0 of {} ({})",
        h1.name(),
        vtep[0],
        h2.name(),
        vtep[1]
    ));

    let (gw, prefix, mtu, vni) =
        (&net.gateway, &net.prefix, OVERLAY_MTU.to_string(), OVERLAY_VNI.to_string());
    let sides = [(h1, o1, server, net.server, vtep[0], 's'), (h2, o2, client, net.client, vtep[1], 'c')];
    for (h, o, ns, addr, local, tag) in sides {
        step(&format!("creating br0 and vxlan0 in {}", o.name()));
        o.ip(&["link", "add", "br0", "type", "bridge"])?;
        o.ip(&["addr", "add", &format!("{gw}/{prefix}"), "dev", "br0"])?;
        // Created in the host (the tunnel's UDP socket lives there), then moved, as Docker does.
        let local = local.to_string();
        h.ip(&[
            "link",
            "add",
            "vxlan0",
            "mtu",
            &mtu,
            "type",
            "vxlan",
            "id",
            &vni,
            "dstport",
            "4789",
            "local",
            &local,
            "proxy",
            "nolearning",
        ])?;
        h.ip(&["link", "set", "vxlan0", "netns", o.name()])?;
        o.ip(&["link", "set", "vxlan0", "master", "br0"])?;
        o.ip(&["link", "set", "vxlan0", "up"])?;
        o.ip(&["link", "set", "br0", "up"])?;
        let veth = format!("veth{}{tag}", net.short);
        o.ip(&[
            "link",
            "add",
            &veth,
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])?;
        o.ip(&["link", "set", &veth, "master", "br0"])?;
        o.ip(&["link", "set", &veth, "up"])?;
        ns.ip(&["link", "set", "eth0", "mtu", &mtu, "address", &docker_mac(addr)])?;
        ns.ip(&["addr", "add", &format!("{addr}/{prefix}"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        for (key, dev) in [(o, "br0"), (o, "vxlan0"), (o, veth.as_str()), (ns, "eth0")] {
            filter.devs.insert(key.dev(dev)?);
        }
        notes.push(format!(
            "{}: {addr} netns {} on br0 of {} (vxlan0 VNI {vni} from {local}, MTU {mtu}; host end {veth})",
            ns.name(),
            ns.inode()?,
            o.name()
        ));
    }
    // Each side learns the other's container as Docker's overlay driver teaches it (its
    // control plane, gossip, is not needed here): the neighbour (vxlan0 answers ARP for it) and
    // the forwarding entry (its MAC is behind the other host's VTEP).
    for (o, peer, remote) in [(o1, net.client, vtep[1]), (o2, net.server, vtep[0])] {
        let (peer, mac, remote) = (peer.to_string(), docker_mac(peer), remote.to_string());
        o.ip(&["neigh", "add", &peer, "lladdr", &mac, "dev", "vxlan0", "nud", "permanent"])?;
        o.exec("bridge", &["fdb", "add", &mac, "dev", "vxlan0", "dst", &remote, "self", "permanent"])
            .map_err(|e| anyhow::anyhow!("cannot add the overlay's forwarding entry in {}: {e}", o.name()))?;
    }
    notes.push(format!(
        "overlay {} (VNI {vni}), gateway {gw} on each br0; static fdb + neighbour entries",
        net.subnet
    ));

    let pid = host::spawn_server(Some(&server.path()), req.workload_cpus, "0.0.0.0", req.port, teardown)?;
    notes.push(format!("server: process {pid} in {} on {}:{}", server.name(), net.server, req.port));
    Ok(Deployment {
        mode: req.mode,
        server_ip: net.server,
        filter,
        notes,
        client: ClientPlace::Namespace(client.path()),
        workload_cpus: req.workload_cpus.cloned(),
        names: role_names(&[
            (h1, "host1"),
            (h2, "host2"),
            (o1, "overlay1"),
            (o2, "overlay2"),
            (server, "server"),
            (client, "client"),
        ]),
    })
}

/// Address, link up and default route of a namespace's `eth0`.
fn configure_eth0(ns: &Namespace, addr: IpAddr, prefix: &str, route: &[&str]) -> anyhow::Result<()> {
    ns.ip(&["addr", "add", &format!("{addr}/{prefix}"), "dev", "eth0"])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    let mut args = vec!["route", "add"];
    args.extend_from_slice(route);
    ns.ip(&args)?;
    Ok(())
}

/// Docker loads br_netfilter and sets `bridge-nf-call-iptables`, so bridged frames traverse
/// iptables. The module is machine-wide (loaded like Docker loads it, and left loaded); the
/// sysctl is per namespace and is set only in ours. Returns a note on what happened.
fn br_netfilter(h: &Namespace) -> String {
    if !Path::new("/sys/module/br_netfilter").exists() {
        let _ = Command::new("modprobe").args(["-q", "br_netfilter"]).status();
    }
    match h.sysctl("bridge/bridge-nf-call-iptables", "1") {
        Ok(()) => format!("br_netfilter: bridge-nf-call-iptables=1 in {}", h.name()),
        Err(_) => {
            "br_netfilter is not available here: bridged frames skip iptables (Docker would load it)".into()
        }
    }
}

/// Docker's (20.10) iptables rules for one bridge network, in our host namespace. Rules live in
/// that namespace and go with it. Where iptables is missing or refuses a rule, the run goes on
/// without them (policy stays ACCEPT) and says so.
fn docker_iptables(h: &Namespace, br: &str, subnet: &str) -> String {
    let rules: Vec<Vec<&str>> = vec![
        vec!["-t", "nat", "-N", "DOCKER"],
        vec!["-t", "nat", "-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"],
        vec!["-t", "nat", "-A", "POSTROUTING", "-s", subnet, "!", "-o", br, "-j", "MASQUERADE"],
        vec!["-t", "nat", "-A", "DOCKER", "-i", br, "-j", "RETURN"],
        vec!["-N", "DOCKER"],
        vec!["-N", "DOCKER-ISOLATION-STAGE-1"],
        vec!["-N", "DOCKER-ISOLATION-STAGE-2"],
        vec!["-N", "DOCKER-USER"],
        vec!["-A", "FORWARD", "-j", "DOCKER-USER"],
        vec!["-A", "FORWARD", "-j", "DOCKER-ISOLATION-STAGE-1"],
        vec![
            "-A",
            "FORWARD",
            "-o",
            br,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT",
        ],
        vec!["-A", "FORWARD", "-o", br, "-j", "DOCKER"],
        vec!["-A", "FORWARD", "-i", br, "!", "-o", br, "-j", "ACCEPT"],
        vec!["-A", "FORWARD", "-i", br, "-o", br, "-j", "ACCEPT"],
        vec!["-A", "DOCKER-ISOLATION-STAGE-1", "-i", br, "!", "-o", br, "-j", "DOCKER-ISOLATION-STAGE-2"],
        vec!["-A", "DOCKER-ISOLATION-STAGE-1", "-j", "RETURN"],
        vec!["-A", "DOCKER-ISOLATION-STAGE-2", "-o", br, "-j", "DROP"],
        vec!["-A", "DOCKER-ISOLATION-STAGE-2", "-j", "RETURN"],
        vec!["-A", "DOCKER-USER", "-j", "RETURN"],
        // Last, once every ACCEPT is in place.
        vec!["-P", "FORWARD", "DROP"],
    ];
    for rule in &rules {
        let mut args = vec!["-w"];
        args.extend_from_slice(rule);
        if let Err(e) = h.exec("iptables", &args) {
            let _ = h.exec("iptables", &["-w", "-P", "FORWARD", "ACCEPT"]);
            return format!("iptables: Docker's rules not installed ({e}); the run goes on without them");
        }
    }
    format!("iptables: Docker's FORWARD/DOCKER-*/MASQUERADE rules for {br} in {}", h.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modes::{Addressing, LanSpec, RuntimeKind};

    fn req<'a>(lan: &'a LanSpec, addressing: Option<Addressing>) -> DeployRequest<'a> {
        DeployRequest {
            mode: Mode::Bridge,
            run_id: "0a1b2c3d",
            image: None,
            port: 1,
            lan,
            addressing,
            workload_cpus: None,
            fault: None,
        }
    }

    #[test]
    fn names_carry_the_prefix_and_fit_ifnamsiz() {
        assert_eq!(ns_name("0a1b2c3d", "server"), "dockertrace-0a1b2c3d-server");
        assert!(ns_name("x", "host").starts_with(NS_PREFIX));
        for n in ["veth0a1b2c3ds", "dt0-0a1b2c3d", "br-0a1b2c3d", "dt0a1b2c3ds"] {
            assert!(n.len() < 16, "{n}");
        }
    }

    #[test]
    fn addresses_follow_dockers_ipam_order() {
        let lan = LanSpec::default();
        let (net, gw, s, c) = addresses(&req(&lan, None)).unwrap();
        let hosts: Vec<IpAddr> = net.hosts().take(3).collect();
        assert_eq!((gw, s, c), (hosts[0], hosts[1], hosts[2]));
        let a = Addressing {
            subnet: "192.168.8.0/24".parse().unwrap(),
            gateway: "192.168.8.1".parse().unwrap(),
            server: None,
            client: Some("192.168.8.2".parse().unwrap()),
        };
        let (_, _, s, c) = addresses(&req(&lan, Some(a))).unwrap();
        assert_eq!((s.to_string(), c.to_string()), ("192.168.8.3".into(), "192.168.8.2".into()));
    }

    #[test]
    fn recordings_name_the_runtime_and_older_ones_still_load() {
        use crate::{compare::ModeReport, counters::Counters, recording::RunBuilder, render};
        let mut run = RunBuilder::default().finish("bridge", 1.0, None, Counters::default());
        let old = serde_json::to_string(&run).unwrap();
        assert!(!old.contains("runtime"), "{old}");
        assert_eq!(serde_json::from_str::<crate::recording::ModeRun>(&old).unwrap().runtime, None);
        run.runtime = Some(RuntimeKind::Netns.name().into());
        let back: crate::recording::ModeRun =
            serde_json::from_str(&serde_json::to_string(&run).unwrap()).unwrap();
        assert_eq!(back.runtime.as_deref(), Some("netns"));
        let text =
            render::tables::render_mode(&ModeReport::from_run(&back, 3), render::style::Style::plain(), 5);
        assert!(text.contains("Mode bridge (runtime netns)"), "{text}");
    }

    #[test]
    fn every_mode_has_a_netns_description() {
        for m in Mode::ALL {
            assert!(describe(m).contains("no Docker"), "{m}");
        }
    }
}
