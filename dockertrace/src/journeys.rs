//! Packet journeys in the reports: per direction of the workload, the **hop ladder** of its
//! data packets — the usual sequence of (event, device, innermost datapath function), with the
//! time from the previous hop and cumulated (p50/p99), the one-way time in the kernel, and how
//! many packets took other paths (ARP, handshake, teardown, pure ACKs, retransmits, ...).
//!
//! [`Journeys`] is fed every streamed event (with a [`Hop`]); it keeps only the journeys in
//! progress (a map keyed by packet id, bounded by [`MAX_LIVE`]) and folds each finished one
//! into per-(direction, hop signature) statistics: memory stays bounded however long the run.
//! A journey is finished when its end event arrives and none of its hops is missing, when it
//! has been idle for [`IDLE_NS`] (by the events' own clock), when memory runs short, or at the
//! end of the run. Events reach userspace per CPU in order, across CPUs nearly so: the hops of
//! a journey are put in order by their hop index.
//!
//! In aggregate mode the kernel keeps a log2 histogram of the hop latency per (previous hop,
//! hop, path class) instead; [`JourneyReport::from_hop_pairs`] chains those pairs into an
//! approximate ladder.
//!
//! This module is offline-safe: it reads [`TracedEvent`]s and kernel map keys, never the
//! loader.
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
};

use foldhash::HashMap as FastMap;
use serde::{Deserialize, Serialize};

use dockertrace_common::{
    journey::{HopKey, HOP_BUCKETS, JOURNEY_GAP_NS},
    path_class as pc,
};

use crate::{
    decode::TracedEvent,
    packet::{tcp, Family, Headers, TCP, UDP},
    packet_log::{LogStep, LoggedPacket, PacketLog},
};

/// A journey without a new hop for this long (ns, by the events' timestamps) is finished —
/// the kernel's own gap: after it, the skb's next event starts a new journey anyway.
pub const IDLE_NS: u64 = JOURNEY_GAP_NS;
/// A journey whose end event came but some of whose hops are missing waits this long for them
/// (they may come late from another CPU, or never: lost events).
pub const END_GRACE_NS: u64 = 50_000_000;
/// Journeys in progress kept at most; past it the oldest are finished early (counted as `cut`).
pub const MAX_LIVE: usize = 65_536;
/// Hops kept per journey (the rest are counted, the journey is `incomplete`).
pub const MAX_HOPS: usize = 48;
/// Distinct hop signatures kept per direction; packets on further ones are only counted.
const MAX_SIGNATURES: usize = 128;
/// Flows whose recent sequence numbers are remembered (for retransmits); cleared when full.
const MAX_FLOWS: usize = 16_384;
/// Distinct (event, device) steps kept; events on further ones are ignored (never reached by
/// a normal run).
const MAX_STEPS: usize = 4096;
/// Sequence numbers remembered per flow.
const SEQS_PER_FLOW: usize = 32;
/// How often (by the events' clock) idle journeys are looked for.
const SWEEP_EVERY_NS: u64 = 250_000_000;
/// Directions kept in a report (most data packets first).
const MAX_DIRECTIONS: usize = 4;

/// What the workload is: the server's address and port. Packets to the port are `request`s,
/// from it `response`s; without a port, TCP and UDP packets are grouped by their service port
/// (the lower of the two), `to :P` and `from :P`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Target {
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
}

/// Why a journey is not on a direction's data ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathClass {
    /// A data packet: TCP payload without SYN/FIN/RST (or a UDP datagram).
    Data,
    Arp,
    /// SYN, SYN-ACK.
    Handshake,
    /// FIN, RST.
    Teardown,
    /// TCP without payload nor SYN/FIN/RST.
    PureAck,
    /// A data packet whose sequence number was already seen in its flow.
    Retransmit,
    /// Hops are missing (lost events, or the journey was cut short to bound memory).
    Incomplete,
    /// The journey started by taking another skb's tracking slot (it or its victim is split).
    Split,
    /// TCP/UDP of another port than the workload's.
    OtherFlow,
    /// ICMP, other protocols.
    Other,
    /// The kernel could not read the packet's headers.
    NoHeaders,
    /// A clone of another packet (`skb_clone`: bridge flooding, packet sockets), linked to it.
    Clone,
}

impl PathClass {
    /// The name reports show.
    pub fn name(self) -> &'static str {
        match self {
            PathClass::Data => "data",
            PathClass::Arp => "ARP",
            PathClass::Handshake => "handshake",
            PathClass::Teardown => "teardown",
            PathClass::PureAck => "pure ACKs",
            PathClass::Retransmit => "retransmits",
            PathClass::Incomplete => "incomplete",
            PathClass::Split => "split",
            PathClass::OtherFlow => "other flows",
            PathClass::Other => "other",
            PathClass::NoHeaders => "no headers",
            PathClass::Clone => "clones",
        }
    }

    /// The classes shown on every direction's "other paths" line, even at 0.
    const ALWAYS: [PathClass; 3] = [PathClass::Arp, PathClass::Handshake, PathClass::Retransmit];
}

/// How a report's ladders were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LadderSource {
    /// Every packet's journey was followed (streaming mode).
    Journeys,
    /// Aggregate mode: chained from the kernel's per-(previous hop, hop) histograms — an
    /// approximation (see [`JourneyReport::note`]).
    HopPairs,
}

/// The hop ladders of one run, as recordings keep them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JourneyReport {
    pub source: LadderSource,
    /// Journeys followed (streaming) or estimated from the hop pairs (aggregate).
    pub journeys: u64,
    /// The workload's server (`10.213.0.2:10000`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Most data packets first.
    pub directions: Vec<DirectionLadder>,
    /// Journeys of no direction, by path (`other flows`, `no headers`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unassigned: Vec<PathTally>,
    /// Journeys finished early to keep memory bounded while perhaps still under way (quiet for
    /// less than 50 ms).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cut: u64,
    /// How far to trust the figures (aggregate mode: the ladder is an approximation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One direction's data ladder and the other paths its packets took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectionLadder {
    /// `request` / `response` (workload), `to :P` / `from :P` (by service port), `path N`
    /// (aggregate mode).
    pub direction: String,
    /// For people: `client → 10.213.0.2:10000`.
    pub label: String,
    /// Data packets in this direction.
    pub data_packets: u64,
    /// Data packets that took the ladder's exact hops.
    pub ladder_packets: u64,
    /// Distinct hop sequences of the data packets.
    pub data_paths: u32,
    pub hops: Vec<LadderHop>,
    /// First to last hop of the ladder's packets.
    pub one_way_p50_ns: u64,
    pub one_way_p99_ns: u64,
    /// Packets of this direction on other paths (ARP, handshake, retransmits, ...), by path.
    pub other: Vec<PathTally>,
}

impl DirectionLadder {
    /// Data packets that took another hop sequence than the ladder's.
    pub fn other_data_packets(&self) -> u64 {
        self.data_packets.saturating_sub(self.ladder_packets)
    }

    /// Packets of `path` (`ARP`, `handshake`, ...) in this direction.
    pub fn other_count(&self, path: &str) -> u64 {
        self.other.iter().find(|t| t.path == path).map_or(0, |t| t.packets)
    }
}

/// One hop of a ladder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LadderHop {
    /// `net:net_dev_queue`, ...
    pub event: String,
    /// Device name ("" when the event had none).
    pub dev: String,
    pub netns: u32,
    pub ifindex: u32,
    /// Where the device is, in words (`client`, `host`), when something could tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    /// The innermost datapath function of the hop's stacks (the most common one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// How long the hop's function ran (p50), where exit events tell it: on
    /// `net:net_dev_start_xmit`, the driver's `ndo_start_xmit` (`veth_xmit`, `br_dev_xmit`);
    /// on `net:netif_receive_skb_entry`, the receive path up to the socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_p50_ns: Option<u64>,
    /// Time from the previous hop (0 at the first).
    pub delta_p50_ns: u64,
    pub delta_p99_ns: u64,
    /// Time from the first hop.
    pub cum_p50_ns: u64,
    pub cum_p99_ns: u64,
}

impl LadderHop {
    /// The device as reports show it: `eth0@client` when its place is known, else
    /// `eth0@<netns inode>`; `-` without a device.
    pub fn device_label(&self) -> String {
        device_label(&self.dev, self.netns, self.place.as_deref())
    }

    /// What identifies the hop across runs, where inodes and generated names differ: the
    /// event and the device's [`stable_name`] (with its place when known): `net:netif_rx
    /// veth*`, `net:netif_rx eth0@client`.
    pub fn identity(&self) -> String {
        let dev = stable_name(&self.dev);
        match &self.place {
            Some(p) => format!("{} {dev}@{p}", self.event),
            None => format!("{} {dev}", self.event),
        }
    }
}

/// A device name without what a runtime generated for one run: every run of 6 or more hex
/// digits becomes `*` (Docker's `veth1a2b3c4`, the netns runtime's `veth6b997e40c` and
/// `dt0-6b997e40` become `veth*`, `dt0-*`); control characters are escaped.
pub fn stable_name(name: &str) -> String {
    let name = crate::decode::printable(name);
    let mut out = String::with_capacity(name.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 6 {
            out.push('*');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in name.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// A device's label: `name@place`, or `name@netns` (the one place reports name devices, so
/// that a better naming plugs in here).
pub fn device_label(name: &str, netns: u32, place: Option<&str>) -> String {
    let name = crate::decode::printable(name);
    match (name.is_empty() && netns == 0, place) {
        (true, _) => "-".to_owned(),
        (false, Some(p)) => format!("{name}@{p}"),
        (false, None) => format!("{name}@{netns}"),
    }
}

/// Packets of one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathTally {
    pub path: String,
    pub packets: u64,
}

/// A log-linear histogram: 16 buckets per power of two (≤ 3% error at the midpoint), its
/// buckets allocated up to the largest value seen (hop times of µs: ~200 buckets).
#[derive(Debug, Clone, Default)]
pub struct LogHist {
    counts: Vec<u32>,
    total: u64,
}

impl LogHist {
    fn bucket(v: u64) -> u16 {
        if v < 16 {
            return v as u16;
        }
        let msb = 63 - v.leading_zeros();
        let sub = (v >> (msb - 4)) & 15;
        ((msb - 3) * 16) as u16 + sub as u16
    }

    fn midpoint(b: u16) -> u64 {
        if b < 16 {
            return u64::from(b);
        }
        let (msb, sub) = (u32::from(b / 16) + 3, u64::from(b % 16));
        let low = (16 + sub) << (msb - 4);
        low + ((1u64 << (msb - 4)) >> 1)
    }

    pub fn record(&mut self, v: u64) {
        let b = usize::from(Self::bucket(v));
        if b >= self.counts.len() {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] = self.counts[b].saturating_add(1);
        self.total += 1;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0..=1) as its bucket's midpoint; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (b, &n) in self.counts.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return Self::midpoint(b as u16);
            }
        }
        0
    }
}

/// An (event, device) a journey passes: what a hop signature is made of.
struct Step {
    event: Arc<str>,
    netns: u32,
    ifindex: u32,
    dev: String,
    /// Innermost datapath functions of this step's stacks.
    functions: FastMap<Arc<str>, u64>,
}

#[derive(Debug, Clone, Copy)]
struct HopRec {
    hop: u16,
    step: u32,
    delta_ns: u64,
    /// How long the hop's function ran, from its exit event (0: no exit event seen).
    ret_ns: u64,
}

/// A journey in progress.
struct Live {
    hops: Vec<HopRec>,
    /// Hops beyond [`MAX_HOPS`].
    dropped: u32,
    headers: Option<Headers>,
    last_ts: u64,
    /// The hop index of its end event, once seen.
    end_hop: Option<u16>,
    /// Its first hop took another skb's slot.
    evicted: bool,
    /// It is a clone of this packet's journey.
    clone_of: Option<u64>,
}

/// Direction of a packet relative to a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct DirKey {
    port: u16,
    /// Toward the port (a request).
    toward: bool,
}

#[derive(Default)]
struct SigStats {
    packets: u64,
    deltas: Vec<LogHist>,
    cums: Vec<LogHist>,
    /// Per hop: its function's duration, where exit events told it.
    rets: Vec<LogHist>,
    total: LogHist,
}

#[derive(Default)]
struct DirStats {
    data: u64,
    other: BTreeMap<PathClass, u64>,
    sigs: FastMap<Vec<u32>, SigStats>,
}

/// Recent sequence numbers of one flow.
#[derive(Default)]
struct Seqs {
    seqs: [u32; SEQS_PER_FLOW],
    len: usize,
    next: usize,
}

impl Seqs {
    /// Whether `seq` was seen before (and remembers it).
    fn seen(&mut self, seq: u32) -> bool {
        if self.seqs[..self.len].contains(&seq) {
            return true;
        }
        self.seqs[self.next] = seq;
        self.next = (self.next + 1) % SEQS_PER_FLOW;
        self.len = (self.len + 1).min(SEQS_PER_FLOW);
        false
    }
}

type FlowKey = (IpAddr, IpAddr, u16, u16);

/// Finished journeys, folded.
#[derive(Default)]
struct Folded {
    journeys: u64,
    cut: u64,
    dirs: BTreeMap<DirKey, DirStats>,
    unassigned: BTreeMap<PathClass, u64>,
    flows: FastMap<FlowKey, Seqs>,
    /// The signature being looked up (kept to spare an allocation per journey).
    sig: Vec<u32>,
    /// TCP data packets, hop by hop, for `report --stitch` (steps filled in at the end).
    log: PacketLog,
}

/// The accumulator of a run's journeys (see the module's documentation).
pub struct Journeys {
    target: Target,
    live: FastMap<u64, Live>,
    steps: Vec<Step>,
    step_ids: FastMap<(u32, u32, u32), u32>,
    folded: Folded,
    newest_ts: u64,
    last_sweep: u64,
    /// Journeys in progress kept at most (tests lower it).
    max_live: usize,
}

impl Journeys {
    pub fn new(target: Target) -> Journeys {
        Journeys {
            target,
            live: FastMap::default(),
            steps: Vec::new(),
            step_ids: FastMap::default(),
            folded: Folded::default(),
            newest_ts: 0,
            last_sweep: 0,
            max_live: MAX_LIVE,
        }
    }

    /// The same, keeping at most `n` journeys in progress.
    pub fn with_max_live(mut self, n: usize) -> Journeys {
        self.max_live = n.max(1);
        self
    }

    /// Journeys in progress (for tests and memory checks).
    pub fn in_progress(&self) -> usize {
        self.live.len()
    }

    /// Journeys finished so far.
    pub fn finished(&self) -> u64 {
        self.folded.journeys
    }

    fn step(&mut self, ev: &TracedEvent) -> Option<u32> {
        let (netns, ifindex) = ev.dev.as_ref().map_or((0, 0), |d| (d.netns, d.ifindex));
        let key = (ev.kind, netns, ifindex);
        if let Some(&id) = self.step_ids.get(&key) {
            return Some(id);
        }
        if self.steps.len() >= MAX_STEPS {
            return None;
        }
        let id = self.steps.len() as u32;
        self.steps.push(Step {
            event: ev.name.clone(),
            netns,
            ifindex,
            dev: ev.dev.as_ref().map(|d| d.name.to_lossy().into_owned()).unwrap_or_default(),
            functions: FastMap::default(),
        });
        self.step_ids.insert(key, id);
        Some(id)
    }

    /// Takes one event (events without a hop are ignored, but for exit events: their
    /// function's duration goes to their hop).
    pub fn add(&mut self, ev: &TracedEvent) {
        // A clone's link is not a duration of its parent's hop (the pipeline links the clone).
        if ev.is_clone_link() {
            return;
        }
        if let Some(r) = ev.ret {
            if let Some(h) =
                self.live.get_mut(&r.packet).and_then(|l| l.hops.iter_mut().find(|h| h.hop == r.hop))
            {
                h.ret_ns = r.duration_ns;
            }
            return;
        }
        let Some(hop) = ev.hop else { return };
        let Some(step) = self.step(ev) else { return };
        if let Some(f) = ev.stack.as_ref().and_then(|s| s.innermost_datapath()) {
            let fs = &mut self.steps[step as usize].functions;
            match fs.get_mut(f) {
                Some(n) => *n += 1,
                None => {
                    fs.insert(Arc::from(f), 1);
                }
            }
        }
        self.newest_ts = self.newest_ts.max(ev.ts_ns);
        let live = self.live.entry(hop.packet).or_insert_with(|| Live {
            hops: Vec::with_capacity(8),
            dropped: 0,
            headers: None,
            last_ts: 0,
            end_hop: None,
            evicted: false,
            clone_of: None,
        });
        if ev.parent.is_some() {
            live.clone_of = ev.parent;
        }
        if live.hops.len() < MAX_HOPS {
            live.hops.push(HopRec { hop: hop.hop, step, delta_ns: hop.delta_ns, ret_ns: 0 });
        } else {
            live.dropped += 1;
        }
        live.last_ts = live.last_ts.max(ev.ts_ns);
        if live.headers.is_none() {
            live.headers = ev.headers;
        }
        if hop.hop == 0 && hop.evicted {
            live.evicted = true;
        }
        if hop.end {
            live.end_hop = Some(hop.hop);
        }
        let complete =
            live.end_hop.is_some_and(|e| live.hops.len() == usize::from(e) + 1 && live.dropped == 0);
        if complete {
            if let Some(j) = self.live.remove(&hop.packet) {
                self.folded.fold(j, &self.target, false);
            }
        }
        if self.newest_ts.saturating_sub(self.last_sweep) >= SWEEP_EVERY_NS {
            self.last_sweep = self.newest_ts;
            self.sweep(IDLE_NS, END_GRACE_NS, false);
        }
        if self.live.len() > self.max_live {
            self.shrink();
        }
    }

    /// Finishes the journeys idle for `idle` ns (ended ones: `grace` ns).
    fn sweep(&mut self, idle: u64, grace: u64, cut: bool) {
        let now = self.newest_ts;
        let done: Vec<u64> = self
            .live
            .iter()
            .filter(|(_, j)| {
                let quiet = now.saturating_sub(j.last_ts);
                quiet >= idle || (j.end_hop.is_some() && quiet >= grace)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in done {
            if let Some(j) = self.live.remove(&k) {
                self.folded.fold(j, &self.target, cut);
            }
        }
    }

    /// Too many journeys in progress: finishes the quietest until a quarter of the room is
    /// free again (each pass halves the idle time it takes). Journeys quiet for less than
    /// [`END_GRACE_NS`] may still be under way: those are counted as `cut`.
    fn shrink(&mut self) {
        let goal = self.max_live - self.max_live / 4;
        let mut idle = IDLE_NS / 2;
        while self.live.len() > goal {
            self.sweep(idle, idle, idle < END_GRACE_NS);
            if idle == 0 {
                break;
            }
            idle /= 2;
        }
    }

    /// Finishes every journey and makes the report (None when no event had a hop).
    pub fn finish(self) -> Option<JourneyReport> {
        self.finish_with_log().0
    }

    /// [`Journeys::finish`], and the log of the TCP data packets (None when there was none).
    pub fn finish_with_log(mut self) -> (Option<JourneyReport>, Option<PacketLog>) {
        let rest: Vec<Live> = self.live.drain().map(|(_, j)| j).collect();
        for j in rest {
            self.folded.fold(j, &self.target, false);
        }
        if self.folded.journeys == 0 {
            return (None, None);
        }
        let report = self.report();
        let mut log = std::mem::take(&mut self.folded.log);
        if log.is_empty() {
            return (Some(report), None);
        }
        log.steps = self
            .steps
            .iter()
            .map(|s| LogStep {
                event: s.event.to_string(),
                dev: s.dev.clone(),
                netns: s.netns,
                ifindex: s.ifindex,
            })
            .collect();
        (Some(report), Some(log))
    }

    fn report(&self) -> JourneyReport {
        let f = &self.folded;
        let mut directions: Vec<DirectionLadder> =
            f.dirs.iter().map(|(k, d)| self.direction(*k, d)).collect();
        directions.sort_by(|a, b| {
            b.data_packets
                .cmp(&a.data_packets)
                .then_with(|| dir_order(&a.direction).cmp(&dir_order(&b.direction)))
        });
        // With a workload the two directions come request first; else the busiest.
        if self.target.port.is_some() {
            directions.sort_by_key(|d| dir_order(&d.direction));
        }
        let mut unassigned = tallies(&f.unassigned, &[]);
        for d in directions.iter().skip(MAX_DIRECTIONS) {
            unassigned.push(PathTally { path: format!("{} (not shown)", d.direction), packets: d.total() });
        }
        directions.truncate(MAX_DIRECTIONS);
        JourneyReport {
            source: LadderSource::Journeys,
            journeys: f.journeys,
            server: self.target.port.map(|p| match self.target.ip {
                Some(IpAddr::V6(ip)) => format!("[{ip}]:{p}"),
                Some(ip) => format!("{ip}:{p}"),
                None => format!(":{p}"),
            }),
            directions,
            unassigned,
            cut: f.cut,
            note: None,
        }
    }

    fn direction(&self, k: DirKey, d: &DirStats) -> DirectionLadder {
        let (direction, label) = match (self.target.port, k.toward) {
            (Some(_), true) => ("request".to_owned(), format!("client → server :{}", k.port)),
            (Some(_), false) => ("response".to_owned(), format!("server :{} → client", k.port)),
            (None, true) => (format!("to :{}", k.port), format!("packets to port {}", k.port)),
            (None, false) => (format!("from :{}", k.port), format!("packets from port {}", k.port)),
        };
        let best = d.sigs.iter().max_by(|a, b| a.1.packets.cmp(&b.1.packets).then_with(|| b.0.cmp(a.0)));
        let hops = best
            .map(|(sig, s)| {
                sig.iter()
                    .enumerate()
                    .map(|(i, &id)| {
                        let step = &self.steps[id as usize];
                        let function = step
                            .functions
                            .iter()
                            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                            .map(|(f, _)| f.to_string());
                        LadderHop {
                            event: step.event.to_string(),
                            dev: step.dev.clone(),
                            netns: step.netns,
                            ifindex: step.ifindex,
                            place: None,
                            function,
                            return_p50_ns: (s.rets[i].total > 0).then(|| s.rets[i].quantile(0.5)),
                            delta_p50_ns: s.deltas[i].quantile(0.5),
                            delta_p99_ns: s.deltas[i].quantile(0.99),
                            cum_p50_ns: s.cums[i].quantile(0.5),
                            cum_p99_ns: s.cums[i].quantile(0.99),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        DirectionLadder {
            direction,
            label,
            data_packets: d.data,
            ladder_packets: best.map_or(0, |b| b.1.packets),
            data_paths: d.sigs.len() as u32,
            hops,
            one_way_p50_ns: best.map_or(0, |b| b.1.total.quantile(0.5)),
            one_way_p99_ns: best.map_or(0, |b| b.1.total.quantile(0.99)),
            other: tallies(&d.other, &PathClass::ALWAYS),
        }
    }
}

impl DirectionLadder {
    /// Every packet of the direction.
    fn total(&self) -> u64 {
        self.data_packets + self.other.iter().map(|t| t.packets).sum::<u64>()
    }
}

/// `request` first, then `response`, then the rest.
fn dir_order(d: &str) -> u8 {
    match d {
        "request" => 0,
        "response" => 1,
        _ => 2,
    }
}

/// The counts of `m` as tallies, with `always` present even at 0, in class order.
fn tallies(m: &BTreeMap<PathClass, u64>, always: &[PathClass]) -> Vec<PathTally> {
    let mut all = m.clone();
    for c in always {
        all.entry(*c).or_default();
    }
    all.into_iter().map(|(c, n)| PathTally { path: c.name().to_owned(), packets: n }).collect()
}

impl Folded {
    /// Folds one finished journey into the statistics.
    /// Logs a whole TCP data journey (see [`PacketLog`]), whatever its direction.
    fn log_packet(&mut self, j: &Live, h: &Headers) {
        if !self.log.has_room() {
            self.log.not_logged += 1;
            return;
        }
        let mut at = 0u64;
        let hops: Vec<(u32, u64)> = j
            .hops
            .iter()
            .enumerate()
            .map(|(i, hop)| {
                if i > 0 {
                    at += hop.delta_ns;
                }
                (hop.step, at)
            })
            .collect();
        self.log.push(LoggedPacket {
            saddr: h.saddr,
            daddr: h.daddr,
            sport: h.sport,
            dport: h.dport,
            seq: h.seq,
            ack: h.ack,
            len: h.payload_len,
            // The last hop's event is the newest of the journey's.
            t0_ns: j.last_ts.saturating_sub(at),
            hops,
        });
    }

    fn fold(&mut self, mut j: Live, target: &Target, cut: bool) {
        self.journeys += 1;
        if cut {
            self.cut += 1;
        }
        j.hops.sort_by_key(|h| h.hop);
        j.hops.dedup_by_key(|h| h.hop);
        let gapless = j.hops.first().is_some_and(|h| h.hop == 0)
            && j.hops.windows(2).all(|w| w[1].hop == w[0].hop + 1)
            && j.dropped == 0;
        let Some(h) = j.headers else {
            *self.unassigned.entry(PathClass::NoHeaders).or_default() += 1;
            return;
        };
        if gapless && j.clone_of.is_none() && !j.evicted && h.is_tcp() && classify(&h) == PathClass::Data {
            self.log_packet(&j, &h);
        }
        let Some(dir) = direction(&h, target) else {
            let class = if h.proto == TCP || h.proto == UDP { PathClass::OtherFlow } else { classify(&h) };
            *self.unassigned.entry(class).or_default() += 1;
            return;
        };
        let mut class = if j.clone_of.is_some() {
            PathClass::Clone
        } else if j.evicted {
            PathClass::Split
        } else if !gapless {
            PathClass::Incomplete
        } else {
            classify(&h)
        };
        if class == PathClass::Data && h.is_tcp() {
            if self.flows.len() >= MAX_FLOWS {
                self.flows.clear();
            }
            if self.flows.entry((h.saddr, h.daddr, h.sport, h.dport)).or_default().seen(h.seq) {
                class = PathClass::Retransmit;
            }
        }
        let d = self.dirs.entry(dir).or_default();
        if class != PathClass::Data {
            *d.other.entry(class).or_default() += 1;
            return;
        }
        d.data += 1;
        self.sig.clear();
        self.sig.extend(j.hops.iter().map(|h| h.step));
        if !d.sigs.contains_key(self.sig.as_slice()) {
            if d.sigs.len() >= MAX_SIGNATURES {
                return;
            }
            d.sigs.insert(self.sig.clone(), SigStats::default());
        }
        let Some(s) = d.sigs.get_mut(self.sig.as_slice()) else { return };
        if s.deltas.is_empty() {
            s.deltas = vec![LogHist::default(); j.hops.len()];
            s.cums = vec![LogHist::default(); j.hops.len()];
            s.rets = vec![LogHist::default(); j.hops.len()];
        }
        s.packets += 1;
        let mut cum = 0u64;
        for (i, hop) in j.hops.iter().enumerate() {
            let delta = if i == 0 { 0 } else { hop.delta_ns };
            cum += delta;
            s.deltas[i].record(delta);
            s.cums[i].record(cum);
            if hop.ret_ns > 0 {
                s.rets[i].record(hop.ret_ns);
            }
        }
        s.total.record(cum);
    }
}

/// The packet's direction relative to the workload (or its service port).
fn direction(h: &Headers, t: &Target) -> Option<DirKey> {
    let ports = h.family != Family::Arp && (h.proto == TCP || h.proto == UDP);
    if ports {
        return match t.port {
            Some(p) if h.dport == p => Some(DirKey { port: p, toward: true }),
            Some(p) if h.sport == p => Some(DirKey { port: p, toward: false }),
            Some(_) => None,
            None => {
                let service = h.sport.min(h.dport);
                Some(DirKey { port: service, toward: h.dport == service })
            }
        };
    }
    // ARP, ICMP, ...: by the server's address.
    let (ip, port) = (t.ip?, t.port.unwrap_or(0));
    if h.daddr == ip {
        Some(DirKey { port, toward: true })
    } else if h.saddr == ip {
        Some(DirKey { port, toward: false })
    } else {
        None
    }
}

/// The path class the packet's headers say.
fn classify(h: &Headers) -> PathClass {
    if h.family == Family::Arp {
        return PathClass::Arp;
    }
    match h.proto {
        TCP => {
            let f = h.tcp_flags;
            if f & tcp::SYN != 0 {
                PathClass::Handshake
            } else if f & (tcp::FIN | tcp::RST) != 0 {
                PathClass::Teardown
            } else if h.payload_len == 0 {
                PathClass::PureAck
            } else {
                PathClass::Data
            }
        }
        UDP if h.payload_len > 0 => PathClass::Data,
        _ => PathClass::Other,
    }
}

/// The value a log2 bucket of `HopHist` stands for: the middle of `[2^(i-1), 2^i)`.
fn log2_midpoint(i: usize) -> u64 {
    match i {
        0 => 0,
        1 => 1,
        i => (1u64 << (i - 1)) + (1u64 << (i - 2)),
    }
}

fn log2_quantile(buckets: &[u64; HOP_BUCKETS], q: f64) -> u64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, &n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return log2_midpoint(i);
        }
    }
    0
}

/// A hop of the aggregate graph: (event kind, netns, ifindex).
type Node = (u32, u32, u32);

impl JourneyReport {
    /// Aggregate mode: a ladder per busy starting hop of TCP segments without SYN/FIN/RST
    /// (data and ACKs: the kernel's path class cannot tell them apart, nor directions),
    /// made by chaining the most common successor from the most common first hop. The
    /// first hops are the hops that start more journeys than they continue (pairs out minus
    /// pairs in). Percentiles per hop come from the kernel's log2 buckets (a factor-2
    /// resolution, each reported at its bucket's middle); cumulated times are sums of the
    /// hops' percentiles. None when there are no pairs.
    ///
    /// `event` names an event kind; `dev` names a device by (netns, ifindex).
    pub fn from_hop_pairs(
        pairs: &[(HopKey, [u64; HOP_BUCKETS])],
        event: &dyn Fn(u32) -> String,
        dev: &dyn Fn(u32, u32) -> String,
    ) -> Option<JourneyReport> {
        if pairs.iter().all(|(_, b)| b.iter().all(|n| *n == 0)) {
            return None;
        }
        let main = pc::L4_TCP | pc::TCP_OTHER;
        // Exit events (`net_dev_xmit`, ...) do not re-read the headers: their pairs have no
        // class and belong to whichever packets pass there, mostly the main class's.
        let is_main = |class: u32| {
            let c = class as u8;
            c & 3 == pc::NET_OTHER || (matches!(c & 3, pc::NET_IPV4 | pc::NET_IPV6) && c & 0x3c == main)
        };
        // Journeys per class: what starts minus what continues, per node.
        let mut per_class: BTreeMap<PathClass, u64> = BTreeMap::new();
        let mut balance: HashMap<(u32, Node), i64> = HashMap::new();
        for (k, b) in pairs {
            let n: u64 = b.iter().sum();
            let class = if is_main(k.class) { u32::from(main | pc::NET_IPV4) } else { k.class };
            *balance.entry((class, (k.prev_kind, k.prev_netns, k.prev_ifindex))).or_default() += n as i64;
            *balance.entry((class, (k.kind, k.netns, k.ifindex))).or_default() -= n as i64;
        }
        let mut starts: Vec<(Node, u64)> = Vec::new();
        for (&(class, node), &n) in &balance {
            if n <= 0 {
                continue;
            }
            if is_main(class) {
                starts.push((node, n as u64));
            } else {
                *per_class.entry(class_of(class as u8)).or_default() += n as u64;
            }
        }
        starts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let main_pairs: Vec<&(HopKey, [u64; HOP_BUCKETS])> =
            pairs.iter().filter(|(k, _)| is_main(k.class)).collect();
        let journeys = starts.iter().map(|s| s.1).sum::<u64>() + per_class.values().sum::<u64>();
        let mut directions = Vec::new();
        let mut used: Vec<Node> = Vec::new();
        let busiest = starts.first().map_or(0, |s| s.1);
        for &(start, n) in &starts {
            // Paths that carry at least a tenth of the busiest, two at most (the directions).
            if directions.len() == 2 || n * 10 < busiest || used.contains(&start) {
                continue;
            }
            let chain = chain_from(start, &main_pairs);
            used.extend(chain.iter().map(|(node, _)| *node));
            directions.push(ladder_of(directions.len() + 1, n, &chain, event, dev));
        }
        let note = "aggregate mode: ladders chained from per-hop-pair histograms (the most common successor from the most common first hop); TCP data and ACKs together, directions not told apart; log2 buckets (factor-2 resolution); cumulated times are sums of per-hop percentiles".to_owned();
        Some(JourneyReport {
            source: LadderSource::HopPairs,
            journeys,
            server: None,
            directions,
            unassigned: tallies(&per_class, &[]),
            cut: 0,
            note: Some(note),
        })
    }
}

/// The class name of a kernel path class.
fn class_of(c: u8) -> PathClass {
    if c & 3 == pc::NET_ARP {
        return PathClass::Arp;
    }
    if c & 3 == pc::NET_OTHER {
        return PathClass::NoHeaders;
    }
    match (c & 0x0c, c & 0x30) {
        (pc::L4_TCP, pc::TCP_SYN) => PathClass::Handshake,
        (pc::L4_TCP, pc::TCP_FIN | pc::TCP_RST) => PathClass::Teardown,
        (pc::L4_TCP, _) => PathClass::Data,
        _ => PathClass::Other,
    }
}

/// The chain of most common successors from `start`: each node with the histogram of the
/// pair that led to it (None for the start).
fn chain_from<'a>(
    start: Node,
    pairs: &[&'a (HopKey, [u64; HOP_BUCKETS])],
) -> Vec<(Node, Option<&'a [u64; HOP_BUCKETS]>)> {
    let mut chain: Vec<(Node, Option<&[u64; HOP_BUCKETS]>)> = vec![(start, None)];
    let mut at = start;
    while chain.len() < MAX_HOPS {
        let next = pairs
            .iter()
            .filter(|(k, _)| (k.prev_kind, k.prev_netns, k.prev_ifindex) == at)
            .filter(|(k, _)| !chain.iter().any(|(n, _)| *n == (k.kind, k.netns, k.ifindex)))
            .max_by(|a, b| {
                let (na, nb) = (a.1.iter().sum::<u64>(), b.1.iter().sum::<u64>());
                na.cmp(&nb).then_with(|| b.0.cmp(&a.0))
            });
        let Some((k, b)) = next else { break };
        at = (k.kind, k.netns, k.ifindex);
        chain.push((at, Some(b)));
    }
    chain
}

fn ladder_of(
    n: usize,
    starting: u64,
    chain: &[(Node, Option<&[u64; HOP_BUCKETS]>)],
    event: &dyn Fn(u32) -> String,
    dev: &dyn Fn(u32, u32) -> String,
) -> DirectionLadder {
    let (mut cum50, mut cum99) = (0, 0);
    let mut ladder = u64::MAX;
    let hops: Vec<LadderHop> = chain
        .iter()
        .map(|&((kind, netns, ifindex), b)| {
            let (p50, p99) = b.map_or((0, 0), |b| (log2_quantile(b, 0.5), log2_quantile(b, 0.99)));
            if let Some(b) = b {
                ladder = ladder.min(b.iter().sum());
            }
            cum50 += p50;
            cum99 += p99;
            LadderHop {
                event: event(kind),
                dev: dev(netns, ifindex),
                netns,
                ifindex,
                place: None,
                function: None,
                return_p50_ns: None,
                delta_p50_ns: p50,
                delta_p99_ns: p99,
                cum_p50_ns: cum50,
                cum_p99_ns: cum99,
            }
        })
        .collect();
    let first = hops.first().map_or_else(String::new, LadderHop::device_label);
    DirectionLadder {
        direction: format!("path {n}"),
        label: format!("TCP from {first}"),
        data_packets: starting,
        ladder_packets: if ladder == u64::MAX { starting } else { ladder.min(starting) },
        data_paths: 0,
        one_way_p50_ns: cum50,
        one_way_p99_ns: cum99,
        hops,
        other: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        packet::Hop,
        stacks::{Frame, Stack},
    };

    const CLIENT: [u8; 4] = [10, 213, 0, 3];
    const SERVER: [u8; 4] = [10, 213, 0, 2];
    const PORT: u16 = 10000;

    fn target() -> Target {
        Target { ip: Some(IpAddr::from(SERVER)), port: Some(PORT) }
    }

    fn tcp_h(
        from: [u8; 4],
        sport: u16,
        to: [u8; 4],
        dport: u16,
        flags: u8,
        seq: u32,
        payload: u16,
    ) -> Headers {
        Headers {
            family: Family::Ipv4,
            saddr: IpAddr::from(from),
            daddr: IpAddr::from(to),
            proto: TCP,
            sport,
            dport,
            tcp_flags: flags,
            seq,
            ack: 1,
            ip_id: 7,
            payload_len: payload,
            op: 0,
            tunnel: None,
        }
    }

    fn request(seq: u32) -> Headers {
        tcp_h(CLIENT, 41000, SERVER, PORT, tcp::PSH | tcp::ACK, seq, 42)
    }

    fn response(seq: u32) -> Headers {
        tcp_h(SERVER, PORT, CLIENT, 41000, tcp::PSH | tcp::ACK, seq, 42)
    }

    fn stack(f: &str) -> Arc<Stack> {
        Arc::new(Stack {
            frames: [f, "dev_hard_start_xmit"]
                .iter()
                .map(|f| Frame { addr: 0, function: Arc::from(*f), offset: 0, module: None })
                .collect(),
        })
    }

    /// A hop of the bridge's request path: (event, netns, ifindex, device).
    type Place = (&'static str, u32, u32, &'static str);

    const REQUEST_PATH: [Place; 5] = [
        ("net:net_dev_queue", 101, 2, "eth0"),
        ("net:netif_rx", 9, 5, "dtpa"),
        ("net:net_dev_queue", 9, 6, "dtpb"),
        ("net:netif_rx", 102, 2, "eth0"),
        ("net:netif_receive_skb", 102, 2, "eth0"),
    ];

    /// The events of one packet along `path`, `step` ns apart, starting at `t0`; the exit
    /// event (`net:net_dev_xmit` on the first device) has no headers.
    fn journey(id: u64, path: &[Place], h: Headers, t0: u64, step: u64) -> Vec<TracedEvent> {
        path.iter()
            .enumerate()
            .map(|(i, (name, netns, ifindex, dev))| {
                let mut ev = TracedEvent::named(name).on(*netns, *ifindex, dev);
                ev.ts_ns = t0 + i as u64 * step;
                ev.cpu = (i % 2) as u32;
                ev.hop = Some(Hop {
                    packet: id,
                    hop: i as u16,
                    delta_ns: if i == 0 { 0 } else { step },
                    reused: false,
                    evicted: false,
                    end: false,
                });
                ev.headers = Some(h);
                if i == 1 {
                    ev.stack = Some(stack("veth_xmit"));
                }
                ev
            })
            .collect()
    }

    fn feed(j: &mut Journeys, evs: &[TracedEvent]) {
        for e in evs {
            j.add(e);
        }
    }

    fn response_path() -> Vec<Place> {
        REQUEST_PATH.iter().rev().map(|(_, ns, i, d)| ("net:net_dev_queue", *ns, *i, *d)).collect()
    }

    #[test]
    fn ladder_of_a_bridge_like_path_per_direction() {
        let mut j = Journeys::new(target());
        for n in 0..100u64 {
            let t = n * 1_000_000;
            feed(&mut j, &journey(2 * n + 1, &REQUEST_PATH, request(1 + 42 * n as u32), t, 1000 + n));
            feed(
                &mut j,
                &journey(2 * n + 2, &response_path(), response(1 + 42 * n as u32), t + 500_000, 3000),
            );
        }
        let r = j.finish().expect("a report");
        assert_eq!(r.source, LadderSource::Journeys);
        assert_eq!(r.journeys, 200);
        assert_eq!(r.server.as_deref(), Some("10.213.0.2:10000"));
        assert_eq!(r.directions.len(), 2);
        let req = &r.directions[0];
        assert_eq!(req.direction, "request");
        assert_eq!((req.data_packets, req.ladder_packets, req.data_paths), (100, 100, 1));
        let devs: Vec<String> = req.hops.iter().map(LadderHop::device_label).collect();
        assert_eq!(devs, ["eth0@101", "dtpa@9", "dtpb@9", "eth0@102", "eth0@102"]);
        assert_eq!(req.hops[1].function.as_deref(), Some("veth_xmit"));
        assert_eq!(req.hops[0].function, None);
        assert_eq!((req.hops[0].delta_p50_ns, req.hops[0].cum_p50_ns), (0, 0));
        // Deltas 1000..1099 ns: p50 ≈ 1050, p99 ≈ 1098, cumulated 4 × that at the last hop.
        let near = |v: u64, want: f64| (v as f64 - want).abs() / want < 0.04;
        assert!(near(req.hops[2].delta_p50_ns, 1050.0), "{:?}", req.hops[2]);
        assert!(near(req.hops[2].delta_p99_ns, 1098.0), "{:?}", req.hops[2]);
        assert!(near(req.hops[2].cum_p50_ns, 2100.0), "{:?}", req.hops[2]);
        assert!(near(req.one_way_p50_ns, 4200.0), "{req:?}");
        assert_eq!(req.hops.last().unwrap().cum_p50_ns, req.one_way_p50_ns);
        let resp = &r.directions[1];
        assert_eq!(resp.direction, "response");
        assert_eq!(resp.hops[0].device_label(), "eth0@102");
        assert!(near(resp.one_way_p50_ns, 12000.0), "{resp:?}");
        assert_eq!(req.other_count("ARP"), 0);
        assert_eq!(req.other_count("handshake"), 0);
        assert_eq!(req.other_count("retransmits"), 0);
        assert_eq!(r.cut, 0);
    }

    #[test]
    fn other_paths_are_named() {
        let mut j = Journeys::new(target());
        let mut id = 0;
        let mut next = || {
            id += 1;
            id
        };
        let t = |i: u64| i * 10_000_000;
        // Handshake: SYN, SYN-ACK.
        feed(
            &mut j,
            &journey(next(), &REQUEST_PATH, tcp_h(CLIENT, 41000, SERVER, PORT, tcp::SYN, 0, 0), t(0), 1000),
        );
        let synack = tcp_h(SERVER, PORT, CLIENT, 41000, tcp::SYN | tcp::ACK, 0, 0);
        feed(&mut j, &journey(next(), &REQUEST_PATH, synack, t(1), 1000));
        // ARP who-has the server, and the server's reply.
        let arp = |op: u8, from: [u8; 4], to: [u8; 4]| Headers {
            family: Family::Arp,
            saddr: IpAddr::from(from),
            daddr: IpAddr::from(to),
            proto: 0,
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            seq: 0,
            ack: 0,
            ip_id: 0,
            payload_len: 0,
            op,
            tunnel: None,
        };
        feed(&mut j, &journey(next(), &REQUEST_PATH[..2], arp(1, CLIENT, SERVER), t(2), 1000));
        feed(&mut j, &journey(next(), &REQUEST_PATH[..2], arp(2, SERVER, CLIENT), t(3), 1000));
        // Data, the same data again (a retransmit), a pure ACK, a FIN.
        feed(&mut j, &journey(next(), &REQUEST_PATH, request(100), t(4), 1000));
        feed(&mut j, &journey(next(), &REQUEST_PATH, request(100), t(5), 1000));
        feed(
            &mut j,
            &journey(next(), &REQUEST_PATH, tcp_h(CLIENT, 41000, SERVER, PORT, tcp::ACK, 142, 0), t(6), 1000),
        );
        let fin = tcp_h(CLIENT, 41000, SERVER, PORT, tcp::FIN | tcp::ACK, 142, 0);
        feed(&mut j, &journey(next(), &REQUEST_PATH, fin, t(7), 1000));
        // Another flow, and a packet without headers.
        feed(
            &mut j,
            &journey(next(), &REQUEST_PATH, tcp_h(CLIENT, 5000, SERVER, 22, tcp::ACK, 9, 10), t(8), 1000),
        );
        let mut bare = journey(next(), &REQUEST_PATH[..1], request(0), t(9), 1000);
        bare[0].headers = None;
        feed(&mut j, &bare);
        // A data packet on another path (skips the bridge's second port).
        let detour: Vec<Place> = [0, 1, 3, 4].iter().map(|&i| REQUEST_PATH[i]).collect();
        feed(&mut j, &journey(next(), &detour, request(300), t(10), 1000));
        let r = j.finish().unwrap();
        assert_eq!(r.journeys, 11);
        let req = r.directions.iter().find(|d| d.direction == "request").unwrap();
        let resp = r.directions.iter().find(|d| d.direction == "response").unwrap();
        assert_eq!(req.other_count("handshake"), 1);
        assert_eq!(resp.other_count("handshake"), 1);
        assert_eq!(req.other_count("ARP"), 1, "who-has the server: toward it");
        assert_eq!(resp.other_count("ARP"), 1);
        assert_eq!(req.other_count("retransmits"), 1);
        assert_eq!(req.other_count("pure ACKs"), 1);
        assert_eq!(req.other_count("teardown"), 1);
        assert_eq!(
            (req.data_packets, req.ladder_packets, req.other_data_packets(), req.data_paths),
            (2, 1, 1, 2)
        );
        let un = |p: &str| r.unassigned.iter().find(|t| t.path == p).map_or(0, |t| t.packets);
        assert_eq!((un("other flows"), un("no headers")), (1, 1));
        // Every journey is counted once.
        let counted: u64 = r.directions.iter().map(DirectionLadder::total).sum::<u64>()
            + r.unassigned.iter().map(|t| t.packets).sum::<u64>();
        assert_eq!(counted, r.journeys);
    }

    #[test]
    fn out_of_order_hops_and_late_ends() {
        let mut j = Journeys::new(target());
        for n in 0..20u64 {
            let mut evs = journey(n + 1, &REQUEST_PATH, request(n as u32 * 42), n * 1_000_000, 2000);
            evs.last_mut().unwrap().hop.as_mut().unwrap().end = true;
            // The other CPU's hops come late: after the end event.
            let (odd, even): (Vec<_>, Vec<_>) = evs.into_iter().partition(|e| e.cpu == 1);
            feed(&mut j, &even);
            assert_eq!(j.in_progress(), 1, "the end came, but hops are missing");
            feed(&mut j, &odd);
            assert_eq!(j.in_progress(), 0, "complete: finished at once");
        }
        let r = j.finish().unwrap();
        let req = &r.directions[0];
        assert_eq!((req.data_packets, req.ladder_packets), (20, 20));
        assert_eq!(req.hops.len(), 5);
        assert_eq!(req.hops[1].dev, "dtpa");
        let c = req.hops[4].cum_p50_ns;
        assert!((7800..=8200).contains(&c), "{c}");
    }

    #[test]
    fn idle_journeys_finish_and_memory_stays_bounded() {
        let mut j = Journeys::new(target());
        feed(&mut j, &journey(1, &REQUEST_PATH, request(0), 0, 1000));
        assert_eq!(j.in_progress(), 1, "no end event: still open");
        // An unrelated event past the idle time.
        feed(&mut j, &journey(2, &REQUEST_PATH[..1], request(42), IDLE_NS + 1_000_000, 1000));
        assert_eq!(j.finished(), 1, "idle for more than {IDLE_NS} ns: finished");
        assert_eq!(j.in_progress(), 1);

        let mut j = Journeys::new(target()).with_max_live(1000);
        for n in 0..200_000u64 {
            // 200 000 packets in 0.2 s, never ended: only the cap keeps them down.
            feed(&mut j, &journey(n + 1, &REQUEST_PATH, request(n as u32), n * 1000, 100));
            assert!(j.in_progress() <= 1000, "{} journeys kept", j.in_progress());
        }
        let r = j.finish().unwrap();
        assert_eq!(r.journeys, 200_000);
        assert!(r.cut > 0 && r.cut < 200_000, "{}", r.cut);
        let req = &r.directions[0];
        assert_eq!(req.data_packets, 200_000, "cut journeys were complete");
        assert_eq!(req.ladder_packets, 200_000);
    }

    #[test]
    fn split_and_incomplete_journeys_are_not_data() {
        let mut j = Journeys::new(target());
        let mut evs = journey(1, &REQUEST_PATH, request(0), 0, 1000);
        evs.remove(2);
        feed(&mut j, &evs);
        let mut evs = journey(2, &REQUEST_PATH, request(42), 10, 1000);
        evs[0].hop.as_mut().unwrap().evicted = true;
        feed(&mut j, &evs);
        let mut long = journey(3, &REQUEST_PATH, request(84), 20, 1000);
        let extra = long[4].clone();
        for i in 5..(MAX_HOPS + 3) {
            let mut e = extra.clone();
            e.hop.as_mut().unwrap().hop = i as u16;
            long.push(e);
        }
        feed(&mut j, &long);
        let r = j.finish().unwrap();
        let req = &r.directions[0];
        assert_eq!(req.data_packets, 0);
        assert!(req.hops.is_empty());
        assert_eq!(req.other_count("incomplete"), 2, "a gap, and too many hops");
        assert_eq!(req.other_count("split"), 1);
    }

    #[test]
    fn without_a_workload_directions_follow_the_service_port() {
        let mut j = Journeys::new(Target::default());
        feed(&mut j, &journey(1, &REQUEST_PATH, request(0), 0, 1000));
        feed(&mut j, &journey(2, &REQUEST_PATH, response(0), 10, 1000));
        let udp = Headers { proto: UDP, ..tcp_h(CLIENT, 53000, SERVER, 53, 0, 0, 30) };
        feed(&mut j, &journey(3, &REQUEST_PATH, udp, 20, 1000));
        let r = j.finish().unwrap();
        assert_eq!(r.server, None);
        let names: Vec<&str> = r.directions.iter().map(|d| d.direction.as_str()).collect();
        assert_eq!(names.len(), 3);
        for want in ["to :10000", "from :10000", "to :53"] {
            assert!(names.contains(&want), "{names:?}");
        }
    }

    #[test]
    fn no_hops_no_report() {
        let mut j = Journeys::new(target());
        j.add(&TracedEvent::named("net:netif_rx").on(1, 2, "eth0"));
        assert!(j.finish().is_none());
    }

    #[test]
    fn log_histogram_buckets() {
        for v in [0u64, 1, 15, 16, 17, 31, 32, 33, 1000, 123_456, 1 << 40] {
            let m = LogHist::midpoint(LogHist::bucket(v));
            let err = (m as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err <= 0.035, "{v} → {m}");
        }
        let mut h = LogHist::default();
        (1..=1000).for_each(|v| h.record(v));
        assert!((h.quantile(0.5) as f64 - 500.0).abs() < 20.0);
        assert_eq!(LogHist::default().quantile(0.5), 0);
    }

    fn pair(prev: Node, cur: Node, class: u8, bucket: usize, n: u64) -> (HopKey, [u64; HOP_BUCKETS]) {
        let mut b = [0; HOP_BUCKETS];
        b[bucket] = n;
        let k = HopKey {
            prev_kind: prev.0,
            prev_netns: prev.1,
            prev_ifindex: prev.2,
            kind: cur.0,
            netns: cur.1,
            ifindex: cur.2,
            class: u32::from(class),
        };
        (k, b)
    }

    #[test]
    fn ladder_from_hop_pairs() {
        let tcp = pc::NET_IPV4 | pc::L4_TCP | pc::TCP_OTHER;
        let (a, s1, s2, b) = ((1, 101, 2), (2, 9, 5), (1, 9, 6), (2, 102, 2));
        let x = (3, 101, 2);
        let pairs = vec![
            // Request: a → s1 → s2 → b, 100 packets; 10 of them go a → b directly.
            pair(a, s1, tcp, 11, 90), // [1024, 2048)
            pair(s1, x, 0, 11, 90),   // an exit event: no headers read, no class
            pair(x, s2, tcp, 11, 90),
            pair(s2, b, tcp, 11, 90),
            pair(a, b, tcp, 13, 10),
            // Response: b → s2 → a, 80 packets (other events: queued where the request
            // arrives, and the reverse).
            pair((1, 102, 2), (2, 9, 6), tcp, 10, 80),
            pair((2, 9, 6), (2, 101, 2), tcp, 10, 80),
            // Handshake and ARP.
            pair(a, s1, pc::NET_IPV4 | pc::L4_TCP | pc::TCP_SYN, 11, 3),
            pair(a, s1, pc::NET_ARP, 11, 2),
        ];
        let event = |k: u32| if k == 1 { "net:net_dev_queue".to_owned() } else { "net:netif_rx".to_owned() };
        let dev = |netns: u32, _| if netns == 9 { "dtp".to_owned() } else { "eth0".to_owned() };
        let r = JourneyReport::from_hop_pairs(&pairs, &event, &dev).unwrap();
        assert_eq!(r.source, LadderSource::HopPairs);
        assert!(r.note.as_deref().unwrap().contains("chained"));
        assert_eq!(r.directions.len(), 2);
        let p1 = &r.directions[0];
        let nodes: Vec<(u32, u32)> = p1.hops.iter().map(|h| (h.netns, h.ifindex)).collect();
        assert_eq!(nodes, [(101, 2), (9, 5), (101, 2), (9, 6), (102, 2)]);
        assert_eq!(p1.data_packets, 100);
        assert_eq!(p1.ladder_packets, 90);
        assert_eq!(p1.hops[1].delta_p50_ns, 1536);
        assert_eq!(p1.hops[2].delta_p50_ns, 1536);
        assert_eq!(p1.hops[4].cum_p50_ns, 4 * 1536);
        assert_eq!(p1.one_way_p50_ns, p1.hops[4].cum_p50_ns);
        assert_eq!(p1.hops[0].event, "net:net_dev_queue");
        let p2 = &r.directions[1];
        assert_eq!(p2.hops[0].device_label(), "eth0@102");
        assert_eq!(p2.hops.len(), 3);
        let un = |p: &str| r.unassigned.iter().find(|t| t.path == p).map_or(0, |t| t.packets);
        assert_eq!((un("handshake"), un("ARP")), (3, 2));
        assert_eq!(r.journeys, 185);
        assert!(JourneyReport::from_hop_pairs(&[], &event, &dev).is_none());
    }

    #[test]
    fn report_round_trips_through_json() {
        let mut j = Journeys::new(target());
        feed(&mut j, &journey(1, &REQUEST_PATH, request(0), 0, 1000));
        let r = j.finish().unwrap();
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"source\":\"journeys\""), "{text}");
        assert!(!text.contains("\"place\""), "absent places are left out");
        assert_eq!(serde_json::from_str::<JourneyReport>(&text).unwrap(), r);
        assert_eq!(device_label("", 0, None), "-");
        assert_eq!(device_label("eth0", 5, Some("client")), "eth0@client");
        assert_eq!(device_label("ev\x1bil", 5, None), "ev\\x1bil@5");
        for (name, stable) in [
            ("veth6b997e40c", "veth*"),
            ("veth1a2b3c4", "veth*"),
            ("dt0-6b997e40", "dt0-*"),
            ("eth0", "eth0"),
            ("dtpa", "dtpa"),
            ("br-0123456789ab", "br-*"),
        ] {
            assert_eq!(stable_name(name), stable, "{name}");
        }
    }
}
