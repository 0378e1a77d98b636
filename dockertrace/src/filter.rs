//! In-kernel filters: what the user asks for (`--netns`, `--dev`, `--pid`) resolved to the
//! netns inodes, (netns, ifindex) pairs and tgids that the programs look up.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use dockertrace_common::{DevKey, FILTER_DEV, FILTER_NETNS, FILTER_PID, FILTER_PORT, FILTER_VXLAN};

use crate::sys::netns::{self, NetnsError};

/// A network namespace as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsSpec {
    Inode(u32),
    Path(PathBuf),
}

impl std::str::FromStr for NetnsSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty network namespace".into());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse().map(NetnsSpec::Inode).map_err(|_| format!("`{s}` is not a valid netns inode"));
        }
        // A bare name means `ip netns add NAME`'s file.
        let path = if s.contains('/') { PathBuf::from(s) } else { Path::new(netns::NETNS_DIR).join(s) };
        Ok(NetnsSpec::Path(path))
    }
}

/// Errors resolving filters.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("no network namespace with inode {0} found (looked in /var/run/netns and /proc/*/ns/net)")]
    UnknownInode(u32),
    #[error("device `{0}` not found in {1}")]
    NoDevice(String, String),
    #[error("no process with pid {0}")]
    NoProcess(u32),
}

/// The user's filter request.
#[derive(Debug, Clone, Default)]
pub struct FilterSpec {
    pub netns: Vec<NetnsSpec>,
    pub devs: Vec<String>,
    pub pids: Vec<u32>,
    pub port: Option<u16>,
}

/// Resolved filter, ready for the kernel maps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub netns: BTreeSet<u32>,
    pub devs: BTreeSet<DevKey>,
    pub pids: BTreeSet<u32>,
    /// Keep only TCP segments from or to this port.
    pub port: Option<u16>,
    /// Not a filter: describe packets inside a VXLAN tunnel by their inner headers, so that
    /// journeys go on through it (`FILTER_VXLAN`; overlay runs, `trace --vxlan`).
    pub vxlan: bool,
}

/// The oldest kernel (major, minor) whose verifier takes the VXLAN peel (`Filter::vxlan`) in
/// reasonable time: 5.10's walked it for minutes per program (under emulation in the kernel
/// matrix; 6.1 and 6.12 take seconds).
pub const VXLAN_PEEL_MIN_KERNEL: (u32, u32) = (6, 1);

/// Whether the running kernel gets the VXLAN peel; Err: the one line that says why not.
pub fn vxlan_peel_supported() -> Result<(), String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    vxlan_peel_supported_on(release.trim())
}

fn vxlan_peel_supported_on(release: &str) -> Result<(), String> {
    let mut parts = release.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version >= VXLAN_PEEL_MIN_KERNEL {
        return Ok(());
    }
    let (major, minor) = VXLAN_PEEL_MIN_KERNEL;
    Err(format!(
        "VXLAN peel off on kernel {release} (its verifier takes minutes over it; {major}.{minor} or later): \
         events on the underlay show the tunnel's UDP datagram, and a packet's journey starts anew at each end of the tunnel"
    ))
}

impl Filter {
    /// `Settings::filters` bits for this filter.
    pub fn flags(&self) -> u32 {
        let mut f = 0;
        if !self.netns.is_empty() {
            f |= FILTER_NETNS;
        }
        if !self.devs.is_empty() {
            f |= FILTER_DEV;
        }
        if !self.pids.is_empty() {
            f |= FILTER_PID;
        }
        if self.port.is_some() {
            f |= FILTER_PORT;
        }
        if self.vxlan {
            f |= FILTER_VXLAN;
        }
        f
    }

    /// Keeps every event (`vxlan` is no filter).
    pub fn is_empty(&self) -> bool {
        self.flags() & !FILTER_VXLAN == 0
    }

    /// The same test the kernel applies, for events that userspace checks itself (tests, imports).
    pub fn matches(&self, netns: u32, ifindex: u32, tgid: u32, has_dev: bool) -> bool {
        if !self.pids.is_empty() && !self.pids.contains(&tgid) {
            return false;
        }
        if (!self.netns.is_empty() || !self.devs.is_empty()) && !has_dev {
            return false;
        }
        (self.netns.is_empty() || self.netns.contains(&netns))
            && (self.devs.is_empty() || self.devs.contains(&DevKey { netns, ifindex }))
    }
}

/// Finds a path for a netns inode, so we can enter it.
pub fn path_of_inode(inode: u32) -> Result<PathBuf, FilterError> {
    let named = std::fs::read_dir(netns::NETNS_DIR).into_iter().flatten().flatten().map(|e| e.path());
    let procs = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .map(|e| e.path().join("ns/net"));
    named
        .chain(procs)
        .find(|p| netns::inode_of(p).is_ok_and(|i| i == inode))
        .ok_or(FilterError::UnknownInode(inode))
}

impl FilterSpec {
    /// Resolves names and paths against the running system.
    pub fn resolve(&self) -> Result<Filter, FilterError> {
        let mut out = Filter::default();
        let mut paths = Vec::new();
        for ns in &self.netns {
            match ns {
                NetnsSpec::Inode(i) => {
                    out.netns.insert(*i);
                    if !self.devs.is_empty() {
                        paths.push((*i, path_of_inode(*i)?));
                    }
                }
                NetnsSpec::Path(p) => {
                    let i = netns::inode_of(p)?;
                    out.netns.insert(i);
                    paths.push((i, p.clone()));
                }
            }
        }
        for name in &self.devs {
            let mut found = false;
            if paths.is_empty() {
                let ifindex = netns::ifindex(None, name)?;
                out.devs.insert(DevKey { netns: netns::current_inode()?, ifindex });
                found = true;
            }
            for (inode, path) in &paths {
                if let Ok(ifindex) = netns::ifindex(Some(path), name) {
                    out.devs.insert(DevKey { netns: *inode, ifindex });
                    found = true;
                }
            }
            if !found {
                let list: Vec<_> = paths.iter().map(|(_, p)| p.display().to_string()).collect();
                return Err(FilterError::NoDevice(name.clone(), list.join(", ")));
            }
        }
        for &pid in &self.pids {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return Err(FilterError::NoProcess(pid));
            }
            out.pids.insert(pid);
        }
        out.port = self.port;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vxlan_peel_needs_6_1() {
        assert!(vxlan_peel_supported_on("6.1.0-57-amd64").is_ok());
        assert!(vxlan_peel_supported_on("6.18.3").is_ok());
        let e = vxlan_peel_supported_on("5.10.0-46-amd64").unwrap_err();
        assert!(e.contains("5.10.0-46-amd64") && e.contains("6.1 or later"), "{e}");
    }

    #[test]
    fn netns_spec_parsing() {
        assert_eq!("4026531840".parse::<NetnsSpec>(), Ok(NetnsSpec::Inode(4026531840)));
        assert_eq!("/proc/1/ns/net".parse::<NetnsSpec>(), Ok(NetnsSpec::Path("/proc/1/ns/net".into())));
        assert_eq!("blue".parse::<NetnsSpec>(), Ok(NetnsSpec::Path("/var/run/netns/blue".into())));
        assert!("".parse::<NetnsSpec>().is_err());
        assert!("99999999999".parse::<NetnsSpec>().is_err());
    }

    #[test]
    fn filter_semantics_match_the_kernel() {
        let mut f = Filter::default();
        assert!(f.is_empty());
        assert!(f.matches(1, 2, 3, false));
        f.netns.insert(10);
        assert_eq!(f.flags(), FILTER_NETNS);
        assert!(f.matches(10, 2, 3, true));
        assert!(!f.matches(11, 2, 3, true));
        assert!(!f.matches(10, 2, 3, false), "unknown device fails an active netns filter");
        f.devs.insert(DevKey { netns: 10, ifindex: 4 });
        assert!(f.matches(10, 4, 3, true));
        assert!(!f.matches(10, 5, 3, true));
        f.pids.insert(99);
        assert_eq!(f.flags(), FILTER_NETNS | FILTER_DEV | FILTER_PID);
        assert!(!f.matches(10, 4, 3, true));
        assert!(f.matches(10, 4, 99, true));
    }

    #[test]
    fn resolves_own_namespace_and_loopback() {
        let own = netns::current_inode().unwrap();
        let spec = FilterSpec {
            netns: vec![NetnsSpec::Path("/proc/self/ns/net".into())],
            devs: vec!["lo".into()],
            pids: vec![std::process::id()],
            port: Some(10000),
        };
        let f = spec.resolve().expect("resolves");
        assert!(f.netns.contains(&own));
        assert!(f.devs.contains(&DevKey { netns: own, ifindex: 1 }));
        assert_eq!(f.port, Some(10000));
        assert_eq!(f.flags(), FILTER_NETNS | FILTER_DEV | FILTER_PID | FILTER_PORT);
        let bad = FilterSpec { pids: vec![u32::MAX - 1], ..Default::default() };
        assert!(bad.resolve().unwrap_err().to_string().contains("no process"));
    }
}
