//! Links the modes need: looking devices up inside namespaces, probing the kernel for a link
//! type, the isolated parent link of macvlan/ipvlan, and a free private subnet.
use std::{net::Ipv4Addr, path::Path, process::Command};

use ipnet::{IpNet, Ipv4Net};

use crate::netns::{self, ip, Namespace};

/// The alias (`ip link set ... alias`) of every link dockertrace creates in the host namespace,
/// so that `dockertrace cleanup` removes only those.
pub const LINK_ALIAS: &str = "dockertrace";

/// Errors about links.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error(transparent)]
    Ip(#[from] netns::IpError),
    #[error("cannot read link {dev}: {msg}")]
    Show { dev: String, msg: String },
    #[error("this kernel cannot create {kind} links ({msg}): it lacks CONFIG_{config} or the {kind} module cannot be loaded; choose another mode")]
    Unsupported { kind: String, config: String, msg: String },
    #[error("no free private subnet found in 10.213.0.0/16; pass --subnet and --gateway")]
    NoSubnet,
}

/// A device as `ip -o link show` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub ifindex: u32,
    pub name: String,
    /// `@ifN`: the peer (veth) or lower device (macvlan/ipvlan), by its ifindex in the *other*
    /// namespace; `@NAME`: the lower device in the same namespace.
    pub link: Option<LinkRef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRef {
    Index(u32),
    Name(String),
}

/// Parses one line of `ip -o link show` (`5: eth0@if6: <BROADCAST,...> mtu ...`).
pub fn parse_link_line(line: &str) -> Option<LinkInfo> {
    let mut parts = line.splitn(3, ": ");
    let ifindex = parts.next()?.trim().parse().ok()?;
    let name_part = parts.next()?;
    let (name, link) = match name_part.split_once('@') {
        Some((n, l)) => {
            let link = match l.strip_prefix("if").and_then(|i| i.parse().ok()) {
                Some(i) => LinkRef::Index(i),
                None => LinkRef::Name(l.to_owned()),
            };
            (n.to_owned(), Some(link))
        }
        None => (name_part.to_owned(), None),
    };
    Some(LinkInfo { ifindex, name, link })
}

/// Looks `dev` up in the namespace at `ns` (None: dockertrace's own).
pub fn link_info(ns: Option<&Path>, dev: &str) -> Result<LinkInfo, LinkError> {
    let d = dev.to_owned();
    // A child forked from a thread that joined a namespace runs in that namespace.
    let show = move || Command::new("ip").args(["-o", "link", "show", "dev", &d]).output();
    let out = match ns {
        Some(p) => netns::run_in(p, show)?,
        None => show(),
    }
    .map_err(|e| LinkError::Show { dev: dev.to_owned(), msg: format!("cannot run `ip`: {e}") })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(LinkError::Show { dev: dev.to_owned(), msg });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(parse_link_line).ok_or_else(|| LinkError::Show {
        dev: dev.to_owned(),
        msg: format!("unexpected output `{}`", text.trim()),
    })
}

/// Checks that the kernel can create links of `kind` (bridge, macvlan, ipvlan), loading the
/// module if needed, by creating one in a throwaway namespace (removed again).
pub fn kernel_supports(kind: &str) -> Result<(), LinkError> {
    if Path::new("/sys/module").join(kind).exists() {
        return Ok(());
    }
    // Loading the module is the ordinary way; absent modprobe or module is not an error yet.
    let _ = Command::new("modprobe").arg("-q").arg(kind).status();
    let ns = Namespace::create(&format!("dockertrace-probe-{}", std::process::id()))?;
    let created = if kind == "bridge" {
        ns.ip(&["link", "add", "p0", "type", "bridge"])
    } else {
        ns.ip(&["link", "add", "p0", "type", "veth", "peer", "name", "p1"])?;
        let mut args = vec!["link", "add", "link", "p0", "name", "p2", "type", kind];
        if kind == "ipvlan" {
            args.extend(["mode", "l2"]);
        }
        ns.ip(&args)
    };
    drop(ns);
    created.map_err(|e| LinkError::Unsupported {
        kind: kind.to_owned(),
        config: kind.to_uppercase(),
        msg: e.msg.trim_start_matches("Error: ").trim_end_matches('.').to_owned(),
    })
}

/// Names of the isolated parent link of a run: a veth pair in the host namespace whose first end
/// is the macvlan/ipvlan parent. Its traffic never leaves the machine.
pub fn parent_names(run_id: &str) -> (String, String) {
    let short: String = run_id.chars().take(8).collect();
    (format!("dt{short}p0"), format!("dt{short}p1"))
}

/// Creates the isolated parent link (both ends up, tagged with [`LINK_ALIAS`]).
pub fn create_parent(run_id: &str) -> Result<String, LinkError> {
    let (p0, p1) = parent_names(run_id);
    ip(&["link", "add", &p0, "type", "veth", "peer", "name", &p1])?;
    for dev in [&p0, &p1] {
        ip(&["link", "set", dev, "alias", LINK_ALIAS])?;
        ip(&["link", "set", dev, "up"])?;
    }
    Ok(p0)
}

/// Deletes a host link (its veth peer goes with it). A missing link is not an error.
pub fn delete_link(name: &str) -> Result<(), LinkError> {
    match ip(&["link", "del", name]) {
        Ok(()) => Ok(()),
        Err(e) if e.msg.contains("Cannot find device") || e.msg.contains("does not exist") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Host links that carry [`LINK_ALIAS`] (leftovers of crashed runs).
pub fn tagged_links() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path().join("ifalias")).is_ok_and(|a| a.trim() == LINK_ALIAS))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// IPv4 routes of the host (destination networks), from /proc/net/route.
fn host_routes() -> Vec<Ipv4Net> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<_> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            let addr = Ipv4Addr::from(u32::from_be(dest));
            let prefix = u32::from_be(mask).leading_ones() as u8;
            Ipv4Net::new(addr, prefix).ok()
        })
        .filter(|n| n.prefix_len() > 0)
        .collect()
}

/// A /24 in 10.213.0.0/16 that no host route overlaps, chosen from the run id so concurrent
/// runs rarely collide.
pub fn pick_subnet(run_id: &str, taken: &[IpNet]) -> Result<Ipv4Net, LinkError> {
    let routes = host_routes();
    let seed = run_id.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let overlaps = |a: &Ipv4Net, b: &Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
    (0..254u32)
        .map(|i| ((seed + i) % 254 + 1) as u8)
        .map(|x| Ipv4Net::new(Ipv4Addr::new(10, 213, x, 0), 24).expect("valid /24"))
        .find(|n| {
            !routes.iter().any(|r| overlaps(r, n))
                && !taken.iter().any(|t| matches!(t, IpNet::V4(t) if overlaps(t, n)))
        })
        .ok_or(LinkError::NoSubnet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_link_lines() {
        let l =
            parse_link_line("5: eth0@if6: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue").unwrap();
        assert_eq!(l, LinkInfo { ifindex: 5, name: "eth0".into(), link: Some(LinkRef::Index(6)) });
        let l = parse_link_line("12: mv0@dt1234p0: <BROADCAST> mtu 1500").unwrap();
        assert_eq!(l.link, Some(LinkRef::Name("dt1234p0".into())));
        let l = parse_link_line("1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536").unwrap();
        assert_eq!((l.ifindex, l.name.as_str(), l.link), (1, "lo", None));
        assert_eq!(parse_link_line("garbage"), None);
    }

    #[test]
    fn parent_names_fit_ifnamsiz() {
        let (a, b) = parent_names("0123456789abcdef");
        assert_eq!((a.as_str(), b.as_str()), ("dt01234567p0", "dt01234567p1"));
        assert!(a.len() < 16);
    }

    #[test]
    fn picks_a_subnet_outside_taken_ones() {
        let first = pick_subnet("abc", &[]).unwrap();
        let second = pick_subnet("abc", &[IpNet::V4(first)]).unwrap();
        assert_ne!(first, second);
        assert!(second.to_string().starts_with("10.213."));
        assert_eq!(second.prefix_len(), 24);
    }

    #[test]
    fn own_loopback_has_no_link() {
        let l = link_info(None, "lo").unwrap();
        assert_eq!((l.ifindex, l.link), (1, None));
        assert!(link_info(None, "no-such-dev7").unwrap_err().to_string().contains("no-such-dev7"));
    }
}
