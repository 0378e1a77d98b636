//! The datapath probe family's wire types: the functions probed with a kprobe (else fentry) and
//! how their event kinds are numbered.

/// Event kinds at or above this value are datapath function probes (`PROBE_BASE + index` into
/// [`DATAPATH_FUNCS`]); below it they are the tracefs id of a tracepoint (`common_type`).
pub const PROBE_BASE: u32 = 0x1_0000;

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
pub const DATAPATH_FUNCS: [DatapathFunc; 8] = [
    DatapathFunc { name: "veth_xmit", skb_arg: 0, skb_arg_is_pptr: false, module: "veth" },
    DatapathFunc { name: "br_dev_xmit", skb_arg: 0, skb_arg_is_pptr: false, module: "bridge" },
    DatapathFunc { name: "br_handle_frame", skb_arg: 0, skb_arg_is_pptr: true, module: "bridge" },
    DatapathFunc { name: "macvlan_start_xmit", skb_arg: 0, skb_arg_is_pptr: false, module: "macvlan" },
    DatapathFunc { name: "ipvlan_start_xmit", skb_arg: 0, skb_arg_is_pptr: false, module: "ipvlan" },
    DatapathFunc { name: "ipvlan_queue_xmit", skb_arg: 0, skb_arg_is_pptr: false, module: "ipvlan" },
    DatapathFunc { name: "loopback_xmit", skb_arg: 0, skb_arg_is_pptr: false, module: "" },
    DatapathFunc { name: "dev_forward_skb", skb_arg: 1, skb_arg_is_pptr: false, module: "" },
];
