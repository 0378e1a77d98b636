//! The datapath probe family's wire types: the functions probed with a kprobe (else fentry) and
//! how their event kinds are numbered.

/// Event kinds at or above this value are datapath function probes (`PROBE_BASE + index` into
/// [`DATAPATH_FUNCS`]); below it they are the tracefs id of a tracepoint (`common_type`).
pub const PROBE_BASE: u32 = 0x1_0000;

/// Event kinds at or above this value are datapath function returns (`RET_BASE + index`, from
/// a kretprobe, else an fexit): the function's duration on the hop its entry probe made.
pub const RET_BASE: u32 = 0x2_0000;

/// The pairing slot (`PAIRS`) of datapath function `index`: its entry probe pushes there, its
/// return probe pops (past the tracepoints' slots).
pub const fn pair_slot(index: u32) -> u32 {
    crate::tracepoints::DP_PAIR_BASE + index
}

/// `skb_clone`'s probe pair, past the datapath functions (`PROBE_BASE`/`RET_BASE` +
/// `CLONE_INDEX`, pairing slot `pair_slot(CLONE_INDEX)`): a clone of a followed packet starts
/// its own journey, linked to its parent's by the return event (`kretprobe:skb_clone`: the
/// clone's skb, the parent's journey and hop).
pub const CLONE_INDEX: u32 = DATAPATH_FUNCS.len() as u32;
/// The kernel function whose probe pair links clones to their parents.
pub const CLONE_FUNC: &str = "skb_clone";

/// `DP_RETURNS[index]` is 1 once the return probe of function `index` (or `CLONE_INDEX`) is
/// attached: only then does its entry probe push onto its pairing slot (a push nobody pops
/// would fill it).
pub const DP_RETURNS_LEN: u32 = CLONE_INDEX + 1;

/// A datapath function that dockertrace probes (kprobe, else fentry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatapathFunc {
    /// Kernel function name.
    pub name: &'static str,
    /// Index of the argument holding the skb.
    pub skb_arg: u8,
    /// The argument is `struct sk_buff **` rather than `struct sk_buff *`.
    pub skb_arg_is_pptr: bool,
    /// Module that provides the function when it is not built in.
    pub module: &'static str,
}

/// The datapath transmit/receive functions that identify a Docker networking mode.
/// The order is the wire encoding: kind = `PROBE_BASE + index`.
pub const DATAPATH_FUNCS: [DatapathFunc; 10] = [
    DatapathFunc { name: "veth_xmit", skb_arg: 0, skb_arg_is_pptr: false, module: "veth" },
    DatapathFunc { name: "br_dev_xmit", skb_arg: 0, skb_arg_is_pptr: false, module: "bridge" },
    DatapathFunc { name: "br_handle_frame", skb_arg: 0, skb_arg_is_pptr: true, module: "bridge" },
    DatapathFunc { name: "macvlan_start_xmit", skb_arg: 0, skb_arg_is_pptr: false, module: "macvlan" },
    DatapathFunc { name: "ipvlan_start_xmit", skb_arg: 0, skb_arg_is_pptr: false, module: "ipvlan" },
    DatapathFunc { name: "ipvlan_queue_xmit", skb_arg: 0, skb_arg_is_pptr: false, module: "ipvlan" },
    DatapathFunc { name: "loopback_xmit", skb_arg: 0, skb_arg_is_pptr: false, module: "" },
    DatapathFunc { name: "dev_forward_skb", skb_arg: 1, skb_arg_is_pptr: false, module: "" },
    // The overlay's tunnel: encapsulation (the VXLAN device's `ndo_start_xmit`) and
    // decapsulation (the UDP socket's `encap_rcv`: `vxlan_rcv(struct sock *, struct sk_buff *)`).
    DatapathFunc { name: "vxlan_xmit", skb_arg: 0, skb_arg_is_pptr: false, module: "vxlan" },
    DatapathFunc { name: "vxlan_rcv", skb_arg: 1, skb_arg_is_pptr: false, module: "vxlan" },
];
