//! What a user knows namespaces and devices by: a table from netns inode to a label (a
//! container's name, an `ip netns` name, `host` for the root namespace, a run's role) and, for
//! the veths whose peer lives in a named namespace, that namespace (`veth1a2b(server)`).
//!
//! Events and recordings keep inodes and ifindexes (the kernel's identity of a device); the
//! table is applied when something is shown to a human, and it is saved in recordings so that
//! `report` and `diff` show the same names offline. Inodes change with every run, names much
//! less: [`Names::key`] is how runs compare devices.
//!
//! [`Resolver`] builds a table from the running system, best-effort: a namespace that cannot be
//! read keeps showing its inode.
use std::{
    borrow::Cow,
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    decode::printable,
    sys::{
        links::{self, LinkNetns, LinkRef},
        netns,
    },
};

/// The label of the root network namespace (the netns of pid 1), and of the namespace that
/// stands in for the Docker host in the netns runtime.
pub const HOST: &str = "host";

/// Labels for network namespaces and devices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Names {
    /// Netns inode → label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub netns: BTreeMap<u32, String>,
    /// Devices whose veth peer lives in another, named namespace (sorted by netns, ifindex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Peer>,
}

/// A device (by netns inode and ifindex) and the label of its veth peer's namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Peer {
    pub netns: u32,
    pub ifindex: u32,
    /// The label of the namespace the peer lives in (`server`).
    pub peer: String,
}

impl Names {
    pub fn is_empty(&self) -> bool {
        self.netns.is_empty() && self.peers.is_empty()
    }

    /// Names namespace `inode` `label`, unless it has a label already (the first source wins).
    pub fn add_netns(&mut self, inode: u32, label: &str) {
        if !label.is_empty() {
            self.netns.entry(inode).or_insert_with(|| label.to_owned());
        }
    }

    /// Notes that device (`netns`, `ifindex`) has its veth peer in namespace `peer`.
    pub fn add_peer(&mut self, netns: u32, ifindex: u32, peer: &str) {
        if let Err(i) = self.peers.binary_search_by(|p| (p.netns, p.ifindex).cmp(&(netns, ifindex))) {
            self.peers.insert(i, Peer { netns, ifindex, peer: peer.to_owned() });
        }
    }

    /// Adds what `other` knows and this table does not.
    pub fn merge(&mut self, other: &Names) {
        for (inode, label) in &other.netns {
            self.add_netns(*inode, label);
        }
        for p in &other.peers {
            self.add_peer(p.netns, p.ifindex, &p.peer);
        }
    }

    /// The label of namespace `inode`, if known.
    pub fn netns_name(&self, inode: u32) -> Option<&str> {
        self.netns.get(&inode).map(String::as_str)
    }

    /// The label of the namespace where device (`netns`, `ifindex`)'s veth peer lives.
    pub fn peer(&self, netns: u32, ifindex: u32) -> Option<&str> {
        self.peers
            .binary_search_by(|p| (p.netns, p.ifindex).cmp(&(netns, ifindex)))
            .ok()
            .map(|i| self.peers[i].peer.as_str())
    }

    /// A namespace as shown to humans: its label, else its inode.
    pub fn netns_label(&self, inode: u32) -> Cow<'_, str> {
        match self.netns_name(inode) {
            Some(l) => printable(l),
            None => Cow::Owned(inode.to_string()),
        }
    }

    /// A device as shown to humans, without its namespace: `eth0`, `veth1a2b(server)`, `?`
    /// for an unknown name. Control characters are escaped.
    pub fn device_label(&self, dev: &str, netns: u32, ifindex: u32) -> String {
        let name = if dev.is_empty() { Cow::Borrowed("?") } else { printable(dev) };
        match self.peer(netns, ifindex) {
            Some(p) => format!("{name}({})", printable(p)),
            None => name.into_owned(),
        }
    }

    /// A device with its namespace, as shown to humans: `eth0@server`,
    /// `veth1a2b(server)@host`, `eth0@4026532290` when the namespace has no name.
    pub fn device(&self, dev: &str, netns: u32, ifindex: u32) -> String {
        format!("{}@{}", self.device_label(dev, netns, ifindex), self.netns_label(netns))
    }

    /// The device's identity across runs (inodes, ifindexes and Docker's veth names change
    /// with every run): `eth0@server`, `veth(server)@host` for a veth by its peer, `eth0@?`
    /// in a namespace without a name; ids in device names (6 or more hex digits, as in
    /// `br-1a2b3c4d5e6f` or `dt0-0cad91b4`) become `*`.
    pub fn key(&self, dev: &str, netns: u32, ifindex: u32) -> String {
        let ns = self.netns_name(netns).map_or(Cow::Borrowed("?"), printable);
        match self.peer(netns, ifindex) {
            Some(p) => {
                let kind = if dev.starts_with("veth") { "veth".to_owned() } else { without_ids(dev) };
                format!("{}({})@{ns}", printable(&kind), printable(p))
            }
            None if dev.is_empty() => format!("?@{ns}"),
            None => format!("{}@{ns}", printable(&without_ids(dev))),
        }
    }
}

/// `dev` with every run of 6 or more hex digits (a run's or a network's id) as `*`.
fn without_ids(dev: &str) -> String {
    crate::journeys::stable_name(dev)
}

/// Builds a [`Names`] table from the running system: namespaces are added by path with their
/// label, then [`Resolver::finish`] looks at each namespace's links once to find the veth pairs
/// between them. Everything is best-effort: what cannot be read is left out.
#[derive(Debug, Default)]
pub struct Resolver {
    names: Names,
    /// A path to enter each named namespace by.
    paths: BTreeMap<u32, PathBuf>,
}

impl Resolver {
    pub fn new() -> Resolver {
        Resolver::default()
    }

    /// Names the namespace behind `path` `label` (the first label of a namespace wins); returns
    /// its inode, or None when it cannot be read.
    pub fn add(&mut self, path: &Path, label: &str) -> Option<u32> {
        let inode = netns::inode_of(path).ok()?;
        self.names.add_netns(inode, label);
        self.paths.entry(inode).or_insert_with(|| path.to_owned());
        Some(inode)
    }

    /// The root namespace (pid 1's) as [`HOST`]; where pid 1's cannot be read (a sandbox),
    /// dockertrace's own, which is the host's in any ordinary run.
    pub fn add_root(&mut self) -> Option<u32> {
        self.add(Path::new("/proc/1/ns/net"), HOST).or_else(|| self.add(Path::new("/proc/self/ns/net"), HOST))
    }

    /// Every `ip netns` namespace (`/var/run/netns/NAME`) by its name.
    pub fn add_ip_netns(&mut self) {
        let Ok(dir) = std::fs::read_dir(netns::NETNS_DIR) else { return };
        let mut entries: Vec<_> = dir.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            self.add(&e.path(), &e.file_name().to_string_lossy());
        }
    }

    /// The table, with the veth pairs between the namespaces added.
    pub fn finish(mut self) -> Names {
        // One `ip -o link show` per namespace, all at once.
        let listed: Vec<(u32, Vec<Listed>)> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .paths
                .iter()
                .map(|(inode, path)| (*inode, s.spawn(move || links::all_links(Some(path)))))
                .collect();
            handles.into_iter().filter_map(|(inode, h)| Some((inode, h.join().ok()?.ok()?))).collect()
        });
        let named = |n: &str| netns::inode_of(&Path::new(netns::NETNS_DIR).join(n)).ok();
        let found: Vec<Link> = listed
            .iter()
            .flat_map(|(inode, ls)| {
                ls.iter().filter_map(move |(l, at)| match l.link {
                    Some(LinkRef::Index(peer)) => Some(Link {
                        netns: *inode,
                        ifindex: l.ifindex,
                        peer,
                        peer_netns: match at {
                            Some(LinkNetns::Name(n)) => named(n),
                            _ => None,
                        },
                    }),
                    _ => None,
                })
            })
            .collect();
        for ((dev_ns, ifindex), peer_ns) in veth_pairs(&found) {
            let Some(label) = self.names.netns_name(peer_ns).map(str::to_owned) else { continue };
            // A container's eth0 leads to the host: no news.
            if label != HOST {
                self.names.add_peer(dev_ns, ifindex, &label);
            }
        }
        self.names
    }
}

/// A line of `ip -o link show`: the link, and where its peer lives when `ip` says.
type Listed = (links::LinkInfo, Option<LinkNetns>);

/// A link that names a peer (or lower device) by ifindex: `eth0@if5`.
#[derive(Debug, Clone, Copy)]
struct Link {
    netns: u32,
    ifindex: u32,
    /// The peer's ifindex, in its own namespace.
    peer: u32,
    /// The peer's namespace when `ip` named it (`link-netns NAME`); None: only an id
    /// (`link-netnsid N`, a namespace without a name here, such as a container's).
    peer_netns: Option<u32>,
}

/// The veth pairs among `links`: ((netns, ifindex), the peer's netns). A peer's namespace that
/// `ip` named is taken as is; otherwise the peer is the one link elsewhere that names this one
/// back (ifindexes repeat across namespaces, so a mate whose own `link-netns` points to
/// another namespace does not count). No mate, or several: left out.
fn veth_pairs(links: &[Link]) -> Vec<((u32, u32), u32)> {
    let mut out = Vec::new();
    for l in links {
        if let Some(ns) = l.peer_netns {
            if ns != l.netns {
                out.push(((l.netns, l.ifindex), ns));
            }
            continue;
        }
        let mut mates = links.iter().filter(|m| {
            m.netns != l.netns
                && m.ifindex == l.peer
                && m.peer == l.ifindex
                && m.peer_netns.is_none_or(|back| back == l.netns)
        });
        if let (Some(m), None) = (mates.next(), mates.next()) {
            out.push(((l.netns, l.ifindex), m.netns));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Names {
        let mut n = Names::default();
        n.add_netns(1, HOST);
        n.add_netns(7, "server");
        n.add_netns(7, "other");
        n.add_peer(1, 12, "server");
        n
    }

    #[test]
    fn labels_and_fallbacks() {
        let n = table();
        assert_eq!(n.netns_name(7), Some("server"), "the first label wins");
        assert_eq!(n.device("eth0", 7, 2), "eth0@server");
        assert_eq!(n.device("veth1a2b", 1, 12), "veth1a2b(server)@host");
        assert_eq!(n.device("eth0", 9, 2), "eth0@9");
        assert_eq!(n.device("", 9, 2), "?@9");
        assert_eq!(n.device_label("veth1a2b", 1, 12), "veth1a2b(server)");
        assert_eq!(n.device_label("veth1a2b", 7, 12), "veth1a2b", "the peer is per namespace");
        assert_eq!(Names::default().device("lo", 4026531840, 1), "lo@4026531840");
    }

    #[test]
    fn keys_survive_new_inodes_and_veth_names() {
        let a = table();
        let mut b = Names::default();
        b.add_netns(100, HOST);
        b.add_netns(107, "server");
        b.add_peer(100, 30, "server");
        assert_eq!(a.key("eth0", 7, 2), b.key("eth0", 107, 2));
        assert_eq!(a.key("veth1a2b", 1, 12), "veth(server)@host");
        assert_eq!(b.key("vethffff", 100, 30), "veth(server)@host");
        assert_eq!(a.key("eth0", 9, 2), "eth0@?");
        assert_eq!(a.key("dt0-0cad91b4", 1, 3), "dt0-*@host");
        assert_eq!(a.key("br-1a2b3c4d5e6f", 1, 3), "br-*@host");
        assert_eq!(a.key("docker0", 1, 3), "docker0@host");
        assert_eq!(a.key("dt0cad91b4p0", 1, 4), "dt*p0@host");
    }

    #[test]
    fn labels_from_files_are_escaped() {
        let mut n = Names::default();
        n.add_netns(3, "\x1b[31mred");
        n.add_peer(1, 2, "\x07bell");
        let shown = n.device("v\x1b", 3, 2) + &n.device("veth0", 1, 2) + &n.key("veth0", 1, 2);
        assert!(!shown.contains('\x1b') && !shown.contains('\x07'), "{shown:?}");
        assert!(shown.contains("v\\x1b@\\x1b[31mred"), "{shown}");
    }

    #[test]
    fn merge_keeps_what_is_known() {
        let mut a = table();
        let mut b = Names::default();
        b.add_netns(7, "renamed");
        b.add_netns(8, "client");
        b.add_peer(1, 13, "client");
        b.add_peer(1, 12, "client");
        a.merge(&b);
        assert_eq!((a.netns_name(7), a.netns_name(8)), (Some("server"), Some("client")));
        assert_eq!((a.peer(1, 12), a.peer(1, 13)), (Some("server"), Some("client")));
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Names>(&text).unwrap(), a);
        assert_eq!(serde_json::from_str::<Names>("{}").unwrap(), Names::default());
    }

    fn link(netns: u32, ifindex: u32, peer: u32, peer_netns: Option<u32>) -> Link {
        Link { netns, ifindex, peer, peer_netns }
    }

    #[test]
    fn pairs_are_links_that_name_each_other() {
        // host (1): veth 5 ↔ server (7) eth0 2; veth 6 ↔ client (8) eth0 2, by ids only; a
        // macvlan in 9 on the host's link 3 (which names no peer back); two candidates for
        // 10's link: none.
        let links = [
            link(1, 5, 2, None),
            link(7, 2, 5, None),
            link(1, 6, 2, None),
            link(8, 2, 6, None),
            link(9, 2, 3, None),
            link(10, 4, 20, None),
            link(11, 20, 4, None),
            link(12, 20, 4, None),
        ];
        let mut pairs = veth_pairs(&links);
        pairs.sort();
        assert_eq!(
            pairs,
            [((1, 5), 7), ((1, 6), 8), ((7, 2), 1), ((8, 2), 1), ((11, 20), 10), ((12, 20), 10)]
        );
    }

    #[test]
    fn named_peers_settle_repeated_ifindexes() {
        // Two copies of one topology (20 ↔ 21, 30 ↔ 31; same ifindexes), `ip` naming the peers'
        // namespaces; and a host veth (1) by id whose look-alike mate in 30 points elsewhere.
        let links = [
            link(20, 2, 3, Some(21)),
            link(21, 3, 2, Some(20)),
            link(30, 2, 3, Some(31)),
            link(31, 3, 2, Some(30)),
            link(1, 3, 2, None),
            link(5, 2, 3, None),
        ];
        let mut pairs = veth_pairs(&links);
        pairs.sort();
        assert_eq!(
            pairs,
            [((1, 3), 5), ((5, 2), 1), ((20, 2), 21), ((21, 3), 20), ((30, 2), 31), ((31, 3), 30)]
        );
    }
}
