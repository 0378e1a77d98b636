//! Which part of the network stack a kernel function belongs to. This is how dockertrace tells
//! the modes apart: bridge mode has `br_*` and `veth_*` frames, macvlan has `macvlan_*`, ...
use serde::Serialize;

/// A component of the datapath.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Veth,
    Bridge,
    Macvlan,
    Ipvlan,
    Loopback,
    Vxlan,
    Netfilter,
}

impl Component {
    /// A virtual device driver (as opposed to a layer every path crosses).
    pub fn is_device(self) -> bool {
        !matches!(self, Component::Netfilter)
    }

    pub fn name(self) -> &'static str {
        match self {
            Component::Veth => "veth",
            Component::Bridge => "bridge",
            Component::Macvlan => "macvlan",
            Component::Ipvlan => "ipvlan",
            Component::Loopback => "loopback",
            Component::Vxlan => "vxlan",
            Component::Netfilter => "netfilter",
        }
    }
}

/// The component a kernel function belongs to, by its name.
pub fn component(function: &str) -> Option<Component> {
    const PREFIXES: &[(&str, Component)] = &[
        ("veth_", Component::Veth),
        ("br_", Component::Bridge),
        ("__br_", Component::Bridge),
        ("macvlan_", Component::Macvlan),
        ("ipvlan_", Component::Ipvlan),
        ("loopback_", Component::Loopback),
        ("vxlan_", Component::Vxlan),
        ("nf_", Component::Netfilter),
        ("nft_", Component::Netfilter),
        ("ipt_", Component::Netfilter),
        ("iptable_", Component::Netfilter),
        ("ip6t_", Component::Netfilter),
        ("ebt_", Component::Netfilter),
    ];
    PREFIXES.iter().find(|(p, _)| function.starts_with(p)).map(|&(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_mode_signatures() {
        assert_eq!(component("veth_xmit"), Some(Component::Veth));
        assert_eq!(component("br_handle_frame"), Some(Component::Bridge));
        assert_eq!(component("br_dev_xmit"), Some(Component::Bridge));
        assert_eq!(component("macvlan_start_xmit"), Some(Component::Macvlan));
        assert_eq!(component("ipvlan_queue_xmit"), Some(Component::Ipvlan));
        assert_eq!(component("loopback_xmit"), Some(Component::Loopback));
        assert_eq!(component("nf_hook_slow"), Some(Component::Netfilter));
        assert_eq!(component("tcp_sendmsg"), None);
        assert_eq!(component("brk"), None);
        assert!(!Component::Netfilter.is_device());
        assert!(Component::Veth.is_device());
    }
}
