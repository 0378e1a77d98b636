//! Links, low level: looking devices up inside namespaces, probing the kernel for a link type,
//! the isolated parent link of macvlan/ipvlan, and the host links dockertrace tagged.
use std::{path::Path, process::Command};

use super::{
    netns::{self, ip, Namespace},
    owner::Owner,
};

/// The alias (`ip link set ... alias`) of every link dockertrace creates in the host namespace
/// starts with this word, so that `dockertrace cleanup` removes only those. After it come the
/// run and its owner: `dockertrace run=RUN pid=PID start=TICKS` (see [`owner_alias`]).
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

/// Where a link's peer or lower device lives, when in another namespace: `ip` names it
/// (`link-netns NAME`, a namespace in /var/run/netns) or gives its id as seen from this
/// namespace (`link-netnsid N`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkNetns {
    Name(String),
    Id(i32),
}

/// The `link-netns`/`link-netnsid` of one line of `ip -o link show`.
pub fn parse_link_netns(line: &str) -> Option<LinkNetns> {
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        match w {
            "link-netns" => return words.next().map(|n| LinkNetns::Name(n.to_owned())),
            "link-netnsid" => return words.next()?.parse().ok().map(LinkNetns::Id),
            _ => {}
        }
    }
    None
}

/// Every device of the namespace at `ns` (None: dockertrace's own), as `ip -o link show`
/// lists them, with where its peer lives when that is another namespace.
pub fn all_links(ns: Option<&Path>) -> Result<Vec<(LinkInfo, Option<LinkNetns>)>, LinkError> {
    let show = || Command::new("ip").args(["-o", "link", "show"]).output();
    let out = match ns {
        Some(p) => netns::run_in(p, show)?,
        None => show(),
    }
    .map_err(|e| LinkError::Show { dev: "(all)".to_owned(), msg: format!("cannot run `ip`: {e}") })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(LinkError::Show { dev: "(all)".to_owned(), msg });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().filter_map(|l| Some((parse_link_line(l)?, parse_link_netns(l)))).collect())
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
    } else if kind == "vxlan" {
        ns.ip(&["link", "add", "p0", "type", "vxlan", "id", "42", "dstport", "4789"])
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

/// The alias of a host link of run `run_id`, owned by `owner`.
pub fn owner_alias(run_id: &str, owner: Owner) -> String {
    format!("{LINK_ALIAS} run={run_id} {}", owner.tag())
}

/// Creates the isolated parent link (both ends up, tagged with [`owner_alias`] for this
/// process).
pub fn create_parent(run_id: &str) -> Result<String, LinkError> {
    let (p0, p1) = parent_names(run_id);
    let alias = owner_alias(run_id, Owner::current());
    ip(&["link", "add", &p0, "type", "veth", "peer", "name", &p1])?;
    for dev in [&p0, &p1] {
        ip(&["link", "set", dev, "alias", &alias])?;
        ip(&["link", "set", dev, "up"])?;
    }
    Ok(p0)
}

/// Names of a run's underlay (the Docker overlay mode): a veth pair whose first end stays in
/// the machine's namespace (the first engine's side) and whose second end is the second
/// host's `eth0`-like link.
pub fn underlay_names(run_id: &str) -> (String, String) {
    let short: String = run_id.chars().take(8).collect();
    (format!("dt{short}u0"), format!("dt{short}u1"))
}

/// Creates the underlay pair, both ends tagged with [`owner_alias`] and up; the second end is
/// moved into the named namespace `netns` first (None: it stays here).
pub fn create_underlay(run_id: &str, netns: Option<&str>) -> Result<(String, String), LinkError> {
    let (u0, u1) = underlay_names(run_id);
    let alias = owner_alias(run_id, Owner::current());
    ip(&["link", "add", &u0, "type", "veth", "peer", "name", &u1])?;
    for dev in [&u0, &u1] {
        ip(&["link", "set", dev, "alias", &alias])?;
    }
    ip(&["link", "set", &u0, "up"])?;
    match netns {
        Some(ns) => {
            ip(&["link", "set", &u1, "netns", ns])?;
            ip(&["-n", ns, "link", "set", &u1, "up"])?;
        }
        None => ip(&["link", "set", &u1, "up"])?,
    }
    Ok((u0, u1))
}

/// Deletes a host link (its veth peer goes with it). A missing link is not an error.
pub fn delete_link(name: &str) -> Result<(), LinkError> {
    match ip(&["link", "del", name]) {
        Ok(()) => Ok(()),
        Err(e) if e.msg.contains("Cannot find device") || e.msg.contains("does not exist") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Host links tagged by dockertrace (leftovers of crashed runs, or links of running ones).
pub fn tagged_links() -> Vec<String> {
    tagged_links_with_alias().into_iter().map(|(name, _)| name).collect()
}

/// Host links tagged by dockertrace, with their alias (which names the owner, see
/// [`owner_alias`]; links of older versions carry the bare [`LINK_ALIAS`]).
pub fn tagged_links_with_alias() -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let alias = std::fs::read_to_string(e.path().join("ifalias")).ok()?.trim().to_owned();
            let tagged = alias == LINK_ALIAS || alias.strip_prefix(LINK_ALIAS)?.starts_with(' ');
            tagged.then(|| (e.file_name().to_string_lossy().into_owned(), alias))
        })
        .collect()
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
        let veth = "2: dtva@if2: <BROADCAST> mtu 1500 qdisc noqueue state UP\\    link/ether 7a:f8 brd ff:ff link-netns dt-vb1";
        assert_eq!(parse_link_netns(veth), Some(LinkNetns::Name("dt-vb1".into())));
        let docker = "7: veth1a2b@if2: <UP> mtu 1500 master docker0\\    link/ether 02:42 link-netnsid 3";
        assert_eq!(parse_link_netns(docker), Some(LinkNetns::Id(3)));
        assert_eq!(parse_link_netns("1: lo: <LOOPBACK> mtu 65536"), None);
    }

    #[test]
    fn parent_names_fit_ifnamsiz() {
        let (a, b) = parent_names("0123456789abcdef");
        assert_eq!((a.as_str(), b.as_str()), ("dt01234567p0", "dt01234567p1"));
        assert!(a.len() < 16);
    }

    #[test]
    fn aliases_name_the_run_and_its_owner() {
        let o = Owner { pid: 12, start: 34 };
        let a = owner_alias("ab12cd34", o);
        assert_eq!(a, "dockertrace run=ab12cd34 pid=12 start=34");
        assert!(a.len() < 256, "IFALIASZ");
        assert_eq!(Owner::from_tag(&a), Some(o));
    }

    #[test]
    fn own_loopback_has_no_link() {
        let l = link_info(None, "lo").unwrap();
        assert_eq!((l.ifindex, l.link), (1, None));
        assert!(link_info(None, "no-such-dev7").unwrap_err().to_string().contains("no-such-dev7"));
        let all = all_links(None).unwrap();
        assert!(all.iter().any(|(l, n)| l.ifindex == 1 && l.name == "lo" && n.is_none()), "{all:?}");
    }
}
