//! Decoding of ring-buffer records into typed events, with bounds checks and typed errors.
//!
//! This is where the wire format stops: every record starts with a
//! [`RecordHeader`] (record kind, size), which [`decode`] checks against the ring entry
//! before it dispatches on the kind, and [`Decoder::event`] turns the raw [`Event`] into a
//! [`TracedEvent`] whose fields are typed (`dev: Option<Device>`, shared strings for names).
//! Sinks, the aggregate and the reports only ever see `TracedEvent`s.
//!
//! Kernel strings are untrusted: any process can name itself with terminal escape sequences,
//! and device names may hold them too. [`KernelStr`] keeps the bytes as the kernel gave them;
//! its `Display` (what every text sink and report prints) shows control characters and
//! invalid UTF-8 escaped (`\x1b`), and [`printable`] does the same for strings read back from
//! recordings.
use std::{borrow::Cow, fmt, mem::size_of, sync::Arc};

use foldhash::HashMap;

use dockertrace_common::{
    capture::{EventCap, Frame, LINK_ETHERNET, LINK_RAW, RECORD_EVENT_CAP},
    datapath::{CLONE_INDEX, RET_BASE},
    record::{Event, RecordHeader, EVENT_DEV_FROM_PAIR, EVENT_HAS_DEV, EVENT_HAS_SKB, RECORD_EVENT},
    DevKey, NAME_LEN,
};

use crate::{
    packet::{self, Headers, Hop, Return},
    stacks::Stack,
};

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {got} bytes is too short for its header (needs {need})")]
    NoHeader { got: usize, need: usize },
    #[error("record header says {size} bytes, but the ring entry has {got}")]
    BadSize { size: usize, got: usize },
    #[error("record type {0} is unknown to this dockertrace version")]
    UnknownRecord(u16),
    #[error("event record has {got} bytes, expected {need}")]
    SizeMismatch { got: usize, need: usize },
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Event(Event),
    /// An event of the capture programs, with its frame (`--pcap`, `--filter`).
    EventCap(Event, Option<Arc<CapturedFrame>>),
}

/// The first bytes of a packet's frame at one hop, as the kernel copied them (`--pcap`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedFrame {
    /// `capture::LINK_ETHERNET` or `capture::LINK_RAW`.
    pub link: u8,
    /// The frame's length on the wire.
    pub orig_len: u32,
    /// The first `--snaplen` bytes (fewer when the skb's linear part is shorter).
    pub data: Box<[u8]>,
}

impl CapturedFrame {
    /// The frame of a capture record (None: the event has none).
    pub fn from_wire(f: &Frame) -> Option<CapturedFrame> {
        if f.link != LINK_ETHERNET && f.link != LINK_RAW {
            return None;
        }
        let snap = usize::from(f.snap.min(f.len)).min(f.data.len());
        Some(CapturedFrame {
            link: f.link,
            orig_len: f.orig_len.max(snap as u32),
            data: f.data[..snap].into(),
        })
    }
}

/// Reads a `T` from the front of `bytes`, which must hold exactly `size_of::<T>()` bytes.
///
/// # Safety
/// `T` must be plain old data: `repr(C)`, integers only, any bit pattern valid.
unsafe fn read_pod<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() != need {
        return Err(DecodeError::SizeMismatch { got: bytes.len(), need });
    }
    // SAFETY: the length is checked above; the caller guarantees any bit pattern is a valid
    // `T`; read_unaligned copes with the buffer's alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring entry. Never panics on short or foreign input.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let need = size_of::<RecordHeader>();
    let Some(head) = bytes.get(..need) else {
        return Err(DecodeError::NoHeader { got: bytes.len(), need });
    };
    // SAFETY: RecordHeader is two u16s.
    let header: RecordHeader = unsafe { read_pod(head) }?;
    let size = usize::from(header.size);
    // The kernel may round a ring entry up; the header says how much of it is the record.
    let Some(record) = bytes.get(..size).filter(|_| size >= need) else {
        return Err(DecodeError::BadSize { size, got: bytes.len() });
    };
    match header.record {
        // SAFETY: `Event` is `repr(C)` integers and integer arrays (any bit pattern is valid).
        RECORD_EVENT => Ok(Record::Event(unsafe { read_pod::<Event>(record) }?)),
        RECORD_EVENT_CAP => {
            // SAFETY: `EventCap` is `repr(C)` integers and integer arrays (any bit pattern is
            // valid).
            let e = unsafe { read_pod::<EventCap>(record) }?;
            Ok(Record::EventCap(e.event, CapturedFrame::from_wire(&e.frame).map(Arc::new)))
        }
        other => Err(DecodeError::UnknownRecord(other)),
    }
}

/// The bytes of an event, as the kernel writes them (for tests and fuzzing).
pub fn encode(event: &Event) -> Vec<u8> {
    // SAFETY: `Event` is `repr(C)` without implicit padding.
    unsafe { std::slice::from_raw_parts((event as *const Event).cast::<u8>(), size_of::<Event>()) }.to_vec()
}

/// A string from the kernel (task name, device name): its bytes up to the first NUL, as given.
/// Displayed with control characters and invalid UTF-8 escaped; serialized (JSON) as text,
/// where the serializer escapes control characters itself.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelStr(Arc<[u8]>);

impl KernelStr {
    /// The bytes of a fixed-size C string up to its first NUL.
    pub fn from_c(bytes: &[u8]) -> KernelStr {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        KernelStr(Arc::from(&bytes[..end]))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text with invalid UTF-8 replaced (U+FFFD), control characters kept: for JSON and
    /// HTML, whose writers escape them, and for comparisons.
    pub fn to_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for KernelStr {
    fn from(s: &str) -> Self {
        KernelStr(Arc::from(s.as_bytes()))
    }
}

impl PartialEq<str> for KernelStr {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for KernelStr {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == other.as_bytes()
    }
}

impl fmt::Display for KernelStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            write_printable(f, chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for KernelStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl serde::Serialize for KernelStr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_lossy())
    }
}

fn is_control(c: char) -> bool {
    c.is_control()
}

fn write_printable(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    for c in s.chars() {
        if is_control(c) {
            let n = c as u32;
            if n <= 0xff {
                write!(f, "\\x{n:02x}")?;
            } else {
                write!(f, "\\u{{{n:x}}}")?;
            }
        } else {
            f.write_char(c)?;
        }
    }
    Ok(())
}

/// `s` with control characters escaped (`\x1b`), for text output of names that came from the
/// kernel (through a recording, say). Borrows when there is nothing to escape.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    let _ = write_printable(&mut out, s);
    Cow::Owned(out)
}

/// A network device, as an event names it: unique only within its namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Device {
    /// Inode of the device's network namespace.
    pub netns: u32,
    pub ifindex: u32,
    pub name: KernelStr,
}

impl Device {
    pub fn key(&self) -> DevKey {
        DevKey { netns: self.netns, ifindex: self.ifindex }
    }
}

/// One traced event, decoded and enriched with its name and symbolized stack.
#[derive(Debug, Clone)]
pub struct TracedEvent {
    /// `net:net_dev_xmit`, `kprobe:veth_xmit`, ...
    pub name: Arc<str>,
    /// Tracepoint id or `PROBE_BASE + datapath index` (see the catalog).
    pub kind: u32,
    pub cpu: u32,
    /// CLOCK_MONOTONIC, ns.
    pub ts_ns: u64,
    /// Thread id (0 in idle / softirq on an idle CPU).
    pub pid: u32,
    pub tgid: u32,
    pub comm: KernelStr,
    /// Packet length.
    pub len: u32,
    /// The skb's address, when the event has one.
    pub skb: Option<u64>,
    /// `skb->protocol` (an EtherType), 0 when unknown.
    pub protocol: u16,
    /// The skb's path class (`dockertrace_common::path_class`; adaptive stacks only, else 0).
    pub class: u8,
    /// The device the event is attributed to.
    pub dev: Option<Device>,
    /// A device name the tracepoint reported (its `name` field) for an event without a known
    /// device; shown, never counted as a device.
    pub name_only: Option<KernelStr>,
    /// The device came from the paired entry event (`net_dev_xmit` from its
    /// `net_dev_start_xmit`).
    pub dev_from_pair: bool,
    /// The kernel's stack id (negative: none, see `dockertrace_common::record::STACK_*`).
    pub stack_id: i32,
    pub stack: Option<Arc<Stack>>,
    /// The event's place in its packet's journey (journeys on, an skb).
    pub hop: Option<Hop>,
    /// The packet's headers, when the kernel could read them.
    pub headers: Option<Headers>,
    /// Exit events of a hop (`net:net_dev_xmit`, `*_exit`): how long that hop's function ran.
    pub ret: Option<Return>,
    /// Drops (`skb:kfree_skb`): why and where the kernel freed the packet.
    pub drop: Option<crate::drops::Drop>,
    /// A drop's device of its journey's previous hop (set by the pipeline when the drop is a
    /// hop of a followed journey): where the packet was last seen.
    pub last_hop: Option<Device>,
    /// The event starts the journey of a clone of this packet (`skb_clone` of a followed
    /// packet, where the kernel lets `skb_clone` be probed; set by the pipeline).
    pub parent: Option<u64>,
    /// The capture programs' copy of the packet's first bytes at this hop (`--pcap`).
    pub frame: Option<Arc<CapturedFrame>>,
}

impl TracedEvent {
    /// A `kretprobe:skb_clone` (or `fexit:`) event: `skb` is a clone made of `ret`'s packet on
    /// its hop — a link for the clone's journey, not a duration of that hop.
    pub fn is_clone_link(&self) -> bool {
        self.kind == RET_BASE + CLONE_INDEX && self.ret.is_some() && self.skb.is_some()
    }

    /// An event named `name`, without device, skb or stack: the start of test literals
    /// (`TracedEvent { len: 60, ..TracedEvent::named("net:netif_rx") }`). Its kind is derived
    /// from the name (FNV-1a), so that distinct names count apart as distinct kinds do.
    pub fn named(name: &str) -> TracedEvent {
        let kind = name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
        TracedEvent {
            name: Arc::from(name),
            kind,
            cpu: 0,
            ts_ns: 0,
            pid: 0,
            tgid: 0,
            comm: KernelStr::from(""),
            len: 0,
            skb: None,
            protocol: 0,
            class: 0,
            dev: None,
            name_only: None,
            dev_from_pair: false,
            stack_id: dockertrace_common::record::STACK_NONE,
            stack: None,
            hop: None,
            headers: None,
            ret: None,
            drop: None,
            last_hop: None,
            parent: None,
            frame: None,
        }
    }

    /// The same event on device `name` (`ifindex` in namespace `netns`).
    pub fn on(mut self, netns: u32, ifindex: u32, name: &str) -> TracedEvent {
        self.dev = Some(Device { netns, ifindex, name: KernelStr::from(name) });
        self
    }

    /// The device's (netns, ifindex), when known.
    pub fn dev_key(&self) -> Option<DevKey> {
        self.dev.as_ref().map(Device::key)
    }

    /// Whether the event's device is `ifindex` in `netns`.
    pub fn is_on(&self, netns: u32, ifindex: u32) -> bool {
        self.dev.as_ref().is_some_and(|d| d.netns == netns && d.ifindex == ifindex)
    }
}

/// Turns raw events into [`TracedEvent`]s, sharing one allocation per distinct task and device
/// name (a run sees a handful of each, millions of times).
#[derive(Default)]
pub struct Decoder {
    names: HashMap<[u8; NAME_LEN], KernelStr>,
    drops: crate::drops::DropDecoder,
}

impl Decoder {
    /// Distinct names kept before the cache starts over (a bound on memory, never reached by
    /// a normal run).
    const MAX_NAMES: usize = 4096;

    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder that names drop reasons and symbolizes drop locations with `drops`.
    pub fn with_drops(drops: crate::drops::DropDecoder) -> Self {
        Decoder { drops, ..Self::default() }
    }

    fn name(&mut self, raw: &[u8; NAME_LEN]) -> KernelStr {
        if let Some(s) = self.names.get(raw) {
            return s.clone();
        }
        if self.names.len() >= Self::MAX_NAMES {
            self.names.clear();
        }
        let s = KernelStr::from_c(raw);
        self.names.insert(*raw, s.clone());
        s
    }

    /// The typed event of a raw one; `name` and `stack` come from the catalog and the stack
    /// cache.
    pub fn event(&mut self, raw: &Event, name: Arc<str>, stack: Option<Arc<Stack>>) -> TracedEvent {
        let has_dev = raw.flags & EVENT_HAS_DEV != 0;
        let dev =
            has_dev.then(|| Device { netns: raw.netns, ifindex: raw.ifindex, name: self.name(&raw.dev) });
        let name_only = (!has_dev && raw.dev[0] != 0).then(|| self.name(&raw.dev));
        let (hop, headers) = packet::decode(&raw.packet);
        TracedEvent {
            name,
            kind: raw.kind,
            cpu: raw.cpu,
            ts_ns: raw.ts_ns,
            pid: raw.pid,
            tgid: raw.tgid,
            comm: self.name(&raw.comm),
            len: raw.len,
            skb: (raw.flags & EVENT_HAS_SKB != 0).then_some(raw.skbaddr),
            protocol: raw.protocol,
            class: raw.class,
            dev,
            name_only,
            dev_from_pair: raw.flags & EVENT_DEV_FROM_PAIR != 0,
            stack_id: raw.stack_id,
            stack,
            hop,
            headers,
            ret: packet::decode_return(&raw.packet),
            drop: self.drops.decode(raw),
            last_hop: None,
            parent: None,
            frame: None,
        }
    }

    /// A device name read from a kernel map (aggregate mode).
    pub fn device_name(&mut self, raw: &[u8; NAME_LEN]) -> KernelStr {
        self.name(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name16(s: &[u8]) -> [u8; NAME_LEN] {
        let mut out = [0u8; NAME_LEN];
        out[..s.len()].copy_from_slice(s);
        out
    }

    fn sample() -> Event {
        Event {
            header: RecordHeader::of::<Event>(RECORD_EVENT),
            flags: EVENT_HAS_DEV | EVENT_HAS_SKB,
            cpu: 1,
            ts_ns: 123,
            kind: 1500,
            pid: 7,
            tgid: 7,
            len: 108,
            skbaddr: 0xffff_8881_0000_1000,
            ifindex: 5,
            netns: 4026532290,
            stack_id: 3,
            protocol: 0x0800,
            class: 0,
            comm: name16(b"python3"),
            dev: name16(b"veth0"),
            packet: Default::default(),
            drop_location: 0,
            drop_reason: 0,
            _pad: 0,
        }
    }

    #[test]
    fn round_trip() {
        let ev = sample();
        assert_eq!(decode(&encode(&ev)), Ok(Record::Event(ev)));
    }

    #[test]
    fn short_long_and_lying_records_are_typed_errors() {
        let bytes = encode(&sample());
        assert_eq!(decode(&[]), Err(DecodeError::NoHeader { got: 0, need: 4 }));
        assert_eq!(decode(&bytes[..3]), Err(DecodeError::NoHeader { got: 3, need: 4 }));
        // The header claims 176 bytes, the entry has 40.
        assert_eq!(decode(&bytes[..40]), Err(DecodeError::BadSize { size: 176, got: 40 }));
        // A ring entry rounded up past the record is fine: the header says where it ends.
        let mut long = bytes.clone();
        long.extend_from_slice(&[0; 8]);
        assert_eq!(decode(&long), Ok(Record::Event(sample())));
        // A header whose size is not the event's.
        let mut short = bytes.clone();
        short[2..4].copy_from_slice(&40u16.to_ne_bytes());
        assert_eq!(decode(&short), Err(DecodeError::SizeMismatch { got: 40, need: 176 }));
        // A size below the header itself.
        let mut tiny = bytes.clone();
        tiny[2..4].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(decode(&tiny), Err(DecodeError::BadSize { size: 2, got: 176 }));
    }

    /// A capture record: the event, then a frame of `link` with `len` bytes copied.
    fn cap_bytes(link: u8, len: u16, snap: u16) -> Vec<u8> {
        let mut e = EventCap { event: sample(), frame: Frame::default() };
        e.event.header = EventCap::HEADER;
        e.frame = Frame { len, snap, link, orig_len: 1500, ..Frame::default() };
        e.frame.data[..4].copy_from_slice(&[1, 2, 3, 4]);
        // SAFETY: `EventCap` is `repr(C)` without implicit padding.
        unsafe { std::slice::from_raw_parts((&e as *const EventCap).cast::<u8>(), size_of::<EventCap>()) }
            .to_vec()
    }

    #[test]
    fn capture_records_carry_their_frame() {
        let Ok(Record::EventCap(e, Some(f))) = decode(&cap_bytes(LINK_ETHERNET, 100, 3)) else {
            panic!("a capture record with its frame");
        };
        assert_eq!(e.kind, sample().kind);
        assert_eq!(
            (f.link, f.orig_len, &*f.data),
            (LINK_ETHERNET, 1500, &[1u8, 2, 3][..]),
            "snap bytes kept"
        );
        // No frame (not a hop), or a snap past what was copied.
        assert_eq!(decode(&cap_bytes(0, 0, 0)), Ok(Record::EventCap(cap_event(), None)));
        let Ok(Record::EventCap(_, Some(f))) = decode(&cap_bytes(LINK_RAW, 2, 200)) else { panic!() };
        assert_eq!(f.data.len(), 2);
        // Short and lying records.
        let bytes = cap_bytes(LINK_ETHERNET, 10, 10);
        assert!(matches!(decode(&bytes[..300]), Err(DecodeError::BadSize { size: 448, got: 300 })));
        let mut lying = bytes.clone();
        lying[2..4].copy_from_slice(&176u16.to_ne_bytes());
        assert_eq!(decode(&lying), Err(DecodeError::SizeMismatch { got: 176, need: 448 }));
    }

    fn cap_event() -> Event {
        Event { header: EventCap::HEADER, ..sample() }
    }

    #[test]
    fn unknown_record_type() {
        let mut bytes = encode(&sample());
        bytes[..2].copy_from_slice(&9u16.to_ne_bytes());
        assert_eq!(decode(&bytes), Err(DecodeError::UnknownRecord(9)));
    }

    #[test]
    fn typed_events_share_names() {
        let mut d = Decoder::new();
        let raw = sample();
        let a = d.event(&raw, Arc::from("net:netif_rx"), None);
        let b = d.event(&raw, Arc::from("net:netif_rx"), None);
        let dev = a.dev.as_ref().expect("device");
        assert_eq!((dev.netns, dev.ifindex, dev.name.to_string()), (4026532290, 5, "veth0".to_owned()));
        assert_eq!(a.comm, "python3");
        assert_eq!(a.skb, Some(0xffff_8881_0000_1000));
        assert!(!a.dev_from_pair);
        assert!(Arc::ptr_eq(&a.comm.0, &b.comm.0), "one allocation per distinct name");
        let mut no_dev = raw;
        no_dev.flags = 0;
        let c = d.event(&no_dev, Arc::from("x"), None);
        assert!(c.dev.is_none() && c.skb.is_none());
        assert_eq!(c.name_only.expect("the tracepoint's name field"), "veth0");
    }

    #[test]
    fn kernel_strings_show_control_characters_escaped() {
        let evil = KernelStr::from_c(b"\x1b[31mEVIL\x1b[0m\0junk");
        assert_eq!(evil.to_string(), "\\x1b[31mEVIL\\x1b[0m");
        assert_eq!(evil.as_bytes(), b"\x1b[31mEVIL\x1b[0m", "decoding keeps the bytes");
        assert_eq!(KernelStr::from_c(&[b'a', 0xff, b'b', 0]).to_string(), "a\\xffb");
        assert_eq!(KernelStr::from_c(b"tab\there\r\n").to_string(), "tab\\x09here\\x0d\\x0a");
        assert_eq!(KernelStr::from_c("\u{9b}31m".as_bytes()).to_string(), "\\x9b31m", "C1 CSI");
        assert_eq!(KernelStr::from_c(b"eth0\0\0").to_string(), "eth0");
        assert_eq!(KernelStr::from_c(b"full-sixteen-byt"), "full-sixteen-byt");
        assert_eq!(serde_json::to_string(&evil).unwrap(), r#""\u001b[31mEVIL\u001b[0m""#);
        assert_eq!(printable("veth\x1b]0;x\x07"), "veth\\x1b]0;x\\x07");
        assert!(matches!(printable("eth0@server"), Cow::Borrowed(_)));
    }
}
