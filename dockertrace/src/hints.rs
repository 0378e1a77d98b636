//! Hints that know the modes: a rule table, as data, from what a drop looks like — the run's
//! mode, the kernel's reason, the freeing function, the device of the hop — to one line that
//! explains it and one fix. The table is documented in docs/drops.md.
//!
//! Rules are tried in order; the first whose fields all match wins. A field `"*"` matches
//! anything; `function` and `device` are globs (`nf_hook*`, `veth*`). Reasons are names as the
//! kernel spells them without the `SKB_DROP_REASON_` prefix (`NETFILTER_DROP`), or
//! `crate::drops::NOT_REPORTED` for kernels without reasons.
use crate::{drops::NOT_REPORTED, select::glob_match};

/// One rule of [`RULES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The run's mode (`bridge`, `macvlan`, ...; `trace` for `dockertrace trace`), or `*`.
    pub mode: &'static str,
    /// The drop reason (`NO_SOCKET`), or `*`.
    pub reason: &'static str,
    /// Glob over the freeing function (`tcp_v4_rcv`), or `*`.
    pub function: &'static str,
    /// Glob over the name of the hop's device (the drop's device, else the journey's last
    /// hop's), or `*`.
    pub device: &'static str,
    /// `multicast`: only drops of packets sent to a multicast group; `*`: any.
    pub dest: &'static str,
    /// What happened, in one line.
    pub why: &'static str,
    /// What to do about it, in one line.
    pub fix: &'static str,
    /// The drop is part of normal operation (a socket closed with the packet still queued):
    /// reported, but not counted as a packet that died on its way.
    pub benign: bool,
}

/// What a drop looked like, to match against the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropFacts<'a> {
    pub mode: &'a str,
    pub reason: &'a str,
    pub function: &'a str,
    /// The device name ("" unknown).
    pub device: &'a str,
    /// The packet was sent to a multicast group (IGMP/MLD reports, mDNS).
    pub multicast: bool,
}

const PURGE_WHY: &str = "the socket was closed with this packet still in its queue (the last FIN or \
                         ACK of a connection being torn down): the kernel freed it with the \
                         socket, not on the way";
const PURGE_FIX: &str = "nothing to fix: part of a normal close";
const NO_SOCKET_WHY: &str = "no socket listens on the destination port: the kernel answered with a reset";
const NO_SOCKET_FIX: &str = "start the server (or publish/expose the port it really listens on) and \
                             check the client's port: `ss -ltn` in the server's namespace";

/// The rule table. Specific rules (a mode, a function) come before general ones.
pub const RULES: &[Rule] = &[
    Rule {
        mode: "*",
        reason: "QUEUE_PURGE",
        function: "*",
        device: "*",
        dest: "*",
        why: PURGE_WHY,
        fix: PURGE_FIX,
        benign: true,
    },
    // The same purge where the kernel reports no reason (before 5.17) or a vague one (6.1:
    // NOT_SPECIFIED): the freeing function tells it.
    Rule {
        mode: "*",
        reason: "*",
        function: "sk_stream_kill_queues",
        device: "*",
        dest: "*",
        why: PURGE_WHY,
        fix: PURGE_FIX,
        benign: true,
    },
    Rule {
        mode: "*",
        reason: NOT_REPORTED,
        function: "tcp_v[46]_rcv",
        device: "*",
        dest: "*",
        why: NO_SOCKET_WHY,
        fix: NO_SOCKET_FIX,
        benign: false,
    },
    Rule {
        mode: "*",
        reason: "IPV6DISABLED",
        function: "*",
        device: "*",
        dest: "*",
        why: "IPv6 is off in this namespace (Docker's default without an IPv6 network) and the \
              other side's link-local IPv6 chatter (router solicitations, MLD) arrived: not the \
              workload's traffic",
        fix: "nothing to fix unless the workload uses IPv6: then create the network with --ipv6",
        benign: true,
    },
    // A bridge floods the host's multicast membership reports (IGMP to 224.0.0.22, sent when
    // its address comes up) to every port; a namespace that never joined the group finds no
    // multicast route for it and frees it in ip_rcv_finish_core (6.x: NOT_SPECIFIED, 5.10: no
    // reason).
    Rule {
        mode: "*",
        reason: "*",
        function: "ip_rcv_finish_core",
        device: "*",
        dest: "multicast",
        why: "multicast control traffic (an IGMP membership report, mDNS) flooded by the bridge \
              into a namespace that never joined the group: it has no route for it, so the \
              kernel frees it on arrival; not the workload's traffic",
        fix: "nothing to fix unless the workload uses multicast: then join the group in the \
              container (and add a multicast route for routed groups)",
        benign: true,
    },
    Rule {
        mode: "macvlan",
        reason: "NEIGH_FAILED",
        function: "*",
        device: "*",
        dest: "*",
        why: "macvlan isolates the parent from its children: the host side of the parent link \
              cannot reach a macvlan container (bridge mode forwards only between children)",
        fix: "give the host a macvlan interface of its own on the same parent (`ip link add mac0 \
              link PARENT type macvlan mode bridge`) and talk through it",
        benign: false,
    },
    Rule {
        mode: "bridge*",
        reason: "NETFILTER_DROP",
        function: "*",
        device: "*",
        dest: "*",
        why: "iptables dropped the bridged packet: the FORWARD chain's DROP policy, a DOCKER-USER \
              rule, or DOCKER-ISOLATION between two Docker networks",
        fix: "check `iptables -vL FORWARD`, `iptables -vL DOCKER-USER` and `iptables -vL \
              DOCKER-ISOLATION-STAGE-1`; put both containers on one network (`docker network \
              connect`) or add an ACCEPT rule to DOCKER-USER",
        benign: false,
    },
    Rule {
        mode: "*",
        reason: "NETFILTER_DROP",
        function: "br_nf_*",
        device: "*",
        dest: "*",
        why: "br_netfilter handed a bridged frame to iptables (net.bridge.bridge-nf-call-iptables=1) \
              and a rule dropped it",
        fix: "allow the bridge's traffic in iptables (DOCKER-USER / FORWARD), or set \
              net.bridge.bridge-nf-call-iptables=0 if nothing needs to filter bridged frames",
        benign: false,
    },
    Rule {
        mode: "*",
        reason: "NETFILTER_DROP",
        function: "*",
        device: "*",
        dest: "*",
        why: "a netfilter rule (iptables/nftables) dropped the packet",
        fix: "find the rule with `iptables -vL` / `nft list ruleset` (its packet counter grows) \
              and add an ACCEPT before it, or remove it",
        benign: false,
    },
    Rule {
        mode: "*",
        reason: "IP_RPFILTER",
        function: "*",
        device: "*",
        dest: "*",
        why: "reverse-path filtering (rp_filter) refused the packet: its source is not routed \
              back through the device it came in on",
        fix: "route the source back through that device, or set \
              net.ipv4.conf.DEV.rp_filter=2 (loose) on the receiving device",
        benign: false,
    },
    Rule {
        mode: "*",
        reason: "NO_SOCKET",
        function: "*",
        device: "*",
        dest: "*",
        why: NO_SOCKET_WHY,
        fix: NO_SOCKET_FIX,
        benign: false,
    },
    Rule {
        mode: "*",
        reason: "PKT_TOO_BIG",
        function: "*",
        device: "*",
        dest: "*",
        why: "the packet is bigger than the device's MTU and may not be fragmented",
        fix: "give every device on the path the same MTU (`ip link set DEV mtu N`, Docker's \
              `com.docker.network.driver.mtu`), or lower the sender's MTU",
        benign: false,
    },
    Rule {
        mode: "*",
        reason: "*",
        function: "is_skb_forwardable",
        device: "*",
        dest: "*",
        why: "the frame is bigger than the receiving device's MTU (veth/bridge forwarding refuses \
              it)",
        fix: "give both ends of the link the same MTU (`ip link set DEV mtu N`, Docker's \
              `com.docker.network.driver.mtu`)",
        benign: false,
    },
    Rule {
        mode: "*",
        reason: "*",
        function: "__dev_forward_skb*",
        device: "*",
        dest: "*",
        why: "the frame is bigger than the receiving device's MTU (veth forwarding refuses it)",
        fix: "give both ends of the veth the same MTU (`ip link set DEV mtu N`)",
        benign: false,
    },
    Rule {
        mode: "*",
        reason: "*",
        function: "veth_xmit",
        device: "*",
        dest: "*",
        why: "veth dropped the frame on its way to the peer: the peer is down, or the frame \
              exceeds the peer's MTU",
        fix: "check `ip link` in both namespaces: both ends up, with the same MTU",
        benign: false,
    },
    Rule {
        mode: "*",
        reason: "*",
        function: "br_nf_dev_queue_xmit",
        device: "*",
        dest: "*",
        why: "the bridged frame is bigger than the outgoing port's MTU and br_netfilter may not \
              fragment it (Don't Fragment set): the bridge dropped it",
        fix: "give every port of the bridge and both ends of each veth the same MTU (`ip link set \
              DEV mtu N`, Docker's `com.docker.network.driver.mtu`)",
        benign: false,
    },
    Rule {
        mode: "*",
        reason: "*",
        function: "br_dev_queue_push_xmit",
        device: "*",
        dest: "*",
        why: "the bridged frame is bigger than the outgoing port's MTU: the bridge dropped it",
        fix: "give every port of the bridge the same MTU (`ip link set DEV mtu N`, Docker's \
              `com.docker.network.driver.mtu`)",
        benign: false,
    },
    Rule {
        mode: "ipvlan*",
        reason: "*",
        function: "*",
        device: "*",
        dest: "*",
        why: "ipvlan L3 forwards by IP only: no ARP and no broadcast reach the other side, and \
              hosts off the subnet need routes",
        fix: "add routes to the ipvlan subnet via the parent's address on the other hosts, or use \
              ipvlan L2 / macvlan when neighbours must resolve each other",
        benign: false,
    },
];

/// The first rule that matches `facts` (None: no hint).
pub fn hint(facts: &DropFacts<'_>) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.matches(facts))
}

impl Rule {
    pub fn matches(&self, f: &DropFacts<'_>) -> bool {
        let field = |pat: &str, v: &str| pat == "*" || glob_match(pat, v);
        field(self.mode, f.mode)
            && (self.reason == "*" || self.reason == f.reason)
            && field(self.function, f.function)
            && field(self.device, f.device)
            && (self.dest == "*" || (self.dest == "multicast" && f.multicast))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(mode: &'a str, reason: &'a str, function: &'a str) -> DropFacts<'a> {
        DropFacts { mode, reason, function, device: "", multicast: false }
    }

    #[test]
    fn first_matching_rule_wins() {
        let bridge = hint(&facts("bridge", "NETFILTER_DROP", "nf_hook_slow")).unwrap();
        assert!(bridge.why.contains("DOCKER-ISOLATION"), "{}", bridge.why);
        let brnf = hint(&facts("normal", "NETFILTER_DROP", "br_nf_forward_ip")).unwrap();
        assert!(brnf.why.contains("br_netfilter"));
        let any_nf = hint(&facts("host", "NETFILTER_DROP", "nf_hook_slow")).unwrap();
        assert!(any_nf.why.starts_with("a netfilter rule"));
        assert!(hint(&facts("bridge", "NO_SOCKET", "tcp_v4_rcv")).unwrap().why.contains("no socket listens"));
        assert!(hint(&facts("macvlan", "NEIGH_FAILED", "neigh_invalidate")).unwrap().why.contains("parent"));
        assert!(hint(&facts("macvlan", "NO_SOCKET", "tcp_v4_rcv")).unwrap().why.contains("no socket"));
        assert!(hint(&facts("bridge", "NOT_SPECIFIED", "br_nf_dev_queue_xmit")).unwrap().why.contains("MTU"));
        assert!(hint(&facts("bridge", "NOT_SPECIFIED", "br_dev_queue_push_xmit"))
            .unwrap()
            .why
            .contains("MTU"));
        assert!(hint(&facts("ipvlan-l3", "NEIGH_FAILED", "x")).unwrap().why.contains("no ARP"));
        assert!(hint(&facts("bridge", "IP_RPFILTER", "ip_rcv_finish")).unwrap().why.contains("rp_filter"));
        assert!(hint(&facts("bridge", "PKT_TOO_BIG", "ip_forward")).unwrap().why.contains("MTU"));
        assert!(hint(&facts("bridge", "NOT_SPECIFIED", "is_skb_forwardable")).unwrap().why.contains("MTU"));
        assert!(hint(&facts("bridge", NOT_REPORTED, "__dev_forward_skb2")).unwrap().why.contains("MTU"));
        assert_eq!(hint(&facts("bridge", "TCP_OLD_DATA", "tcp_validate_incoming")), None);
    }

    #[test]
    fn a_close_is_benign_and_nothing_else_is() {
        assert!(hint(&facts("bridge", "QUEUE_PURGE", "sk_stream_kill_queues")).unwrap().benign);
        assert!(hint(&facts("bridge", "IPV6DISABLED", "ip6_rcv_core")).unwrap().benign);
        // Multicast chatter dies in ip_rcv_finish_core and is benign; a unicast packet dying
        // there is not (no route to it).
        let mcast = DropFacts { multicast: true, ..facts("bridge", "NOT_SPECIFIED", "ip_rcv_finish_core") };
        assert!(hint(&mcast).unwrap().benign && hint(&mcast).unwrap().why.contains("IGMP"));
        assert!(!hint(&facts("bridge", "NOT_SPECIFIED", "ip_rcv_finish_core")).is_some_and(|r| r.benign));
        assert!(RULES
            .iter()
            .filter(|r| r.benign)
            .all(|r| ["QUEUE_PURGE", "IPV6DISABLED", "*"].contains(&r.reason)));
    }

    #[test]
    fn kernels_without_reasons_are_told_by_the_function() {
        let purge = hint(&facts("normal", NOT_REPORTED, "sk_stream_kill_queues")).unwrap();
        assert!(purge.benign && purge.why.contains("socket was closed"));
        assert!(hint(&facts("normal", "NOT_SPECIFIED", "sk_stream_kill_queues")).unwrap().benign);
        let closed = hint(&facts("bridge", NOT_REPORTED, "tcp_v4_rcv")).unwrap();
        assert!(!closed.benign && closed.why.contains("no socket listens"));
        assert!(hint(&facts("bridge", NOT_REPORTED, "tcp_v6_rcv")).unwrap().why.contains("no socket"));
        assert_eq!(hint(&facts("bridge", NOT_REPORTED, "ip_rcv_core")), None);
    }

    #[test]
    fn table_is_well_formed() {
        for r in RULES {
            assert!(!r.why.is_empty() && !r.fix.is_empty());
            assert!(!r.why.contains('\n') && !r.fix.contains("  "), "one line each: {r:?}");
            assert!(
                r.reason == "*"
                    || r.reason == NOT_REPORTED
                    || r.reason.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            );
        }
    }
}
