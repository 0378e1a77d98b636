//! The capture family's wire types (`--pcap`, `--filter`): the first bytes of a packet's frame
//! at a hop, and the classic-BPF program (compiled by libpcap) the capture programs evaluate
//! on them in the kernel.
//!
//! Only the `_cap` programs (`dt_btf_cap_<slot>`, ...) copy frames and run the filter: the
//! default programs carry none of it (see docs/pcap.md on 5.10's verifier).

use crate::record::{Event, RecordHeader};

/// Bytes of a frame the kernel copies (and the largest `--snaplen`).
pub const FRAME_MAX: usize = 256;

/// `Frame::link`: the frame starts at an Ethernet header (`network_header - mac_header` is 14).
pub const LINK_ETHERNET: u8 = 1;
/// `Frame::link`: the frame starts at the network header (no MAC header: loopback's L3 paths,
/// ipvlan L3, tunnels, raw IP).
pub const LINK_RAW: u8 = 2;

/// A frame's first bytes, as the kernel copied them at one hop.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Bytes of `data` copied (at most `FRAME_MAX`; the linear part of the skb only).
    pub len: u16,
    /// Bytes kept for the pcap file: `min(len, Settings::snaplen)`.
    pub snap: u16,
    /// `LINK_*`; 0: no frame (no skb, not a hop, or unreadable).
    pub link: u8,
    pub _pad: [u8; 3],
    /// The frame's length on the wire: `skb->len` plus the link-layer bytes already pulled.
    pub orig_len: u32,
    pub data: [u8; FRAME_MAX],
    /// Keeps `EventCap` free of implicit padding (its size a multiple of 8).
    pub _pad2: u32,
}

impl Default for Frame {
    fn default() -> Self {
        Frame { len: 0, snap: 0, link: 0, _pad: [0; 3], orig_len: 0, data: [0; FRAME_MAX], _pad2: 0 }
    }
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, integers and integer arrays only, every padding byte spelled out as a
// field: any bit pattern is a valid value.
unsafe impl aya::Pod for Frame {}

/// Record kind of [`EventCap`].
pub const RECORD_EVENT_CAP: u16 = 2;

/// An event with its frame: what the `_cap` programs send (448 bytes; a plain [`Event`] stays
/// 176).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventCap {
    /// `event.header` is `{ RECORD_EVENT_CAP, size_of::<EventCap>() }`.
    pub event: Event,
    pub frame: Frame,
}

impl EventCap {
    pub const HEADER: RecordHeader = RecordHeader::of::<EventCap>(RECORD_EVENT_CAP);
}

#[cfg(feature = "user")]
// SAFETY: as for `Event` and `Frame`.
unsafe impl aya::Pod for EventCap {}

/// One classic-BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CbpfInsn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, integers only, no padding: any bit pattern is a valid value.
unsafe impl aya::Pod for CbpfInsn {}

/// Longest filter program (instructions), per link type. libpcap's `tcp port 10000 and host
/// 10.0.0.2` is 30.
pub const CBPF_MAX: u32 = 64;

/// `CBPF_PROG` holds two programs: `[0, CBPF_MAX)` compiled for Ethernet frames, `[CBPF_MAX,
/// 2 * CBPF_MAX)` for raw IP frames (`LINK_RAW`). An empty program (length 0 in `Settings`)
/// rejects every frame of its link type.
pub const CBPF_SLOTS: u32 = 2 * CBPF_MAX;

/// The interpreter's state between steps (a per-CPU map value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CbpfState {
    pub a: u32,
    pub x: u32,
    /// The next instruction (relative to the program's first).
    pub pc: u32,
    /// The program's first slot in `CBPF_PROG` and its length.
    pub base: u32,
    pub len: u32,
    pub _pad: u32,
    pub mem: [u32; 16],
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, integers only: any bit pattern is a valid value.
unsafe impl aya::Pod for CbpfState {}

/// A step's outcome: go on.
pub const CBPF_CONTINUE: u32 = 0;
/// A step's outcome: the program returned non-zero (the frame matches).
pub const CBPF_ACCEPT: u32 = 1;
/// A step's outcome: the program returned 0, read past the frame, divided by zero, ran past
/// its end or used an instruction the interpreter does not know.
pub const CBPF_REJECT: u32 = 2;
