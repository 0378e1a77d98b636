//! The live view's state: what the events taught so far ([`Model`], fed by the sink, bounded
//! whatever the event rate), what one frame shows ([`View`], made from the model at most ~10
//! times a second) and what the person at the keyboard chose ([`UiState`]: pane, selection,
//! filter, sort, pause). No terminal here: everything is unit-tested.
use std::{
    collections::{hash_map::Entry, VecDeque},
    sync::Arc,
};

use foldhash::HashMap;

use crate::{
    counters::Counters,
    decode::TracedEvent,
    journeys::{JourneyReport, LogHist},
    names::Names,
    packet::{packet_label, Headers},
    stacks::Stack,
};

/// Packets kept for the packets pane (older ones are counted, not kept).
pub const MAX_PACKETS: usize = 256;
/// Hops kept per packet (later ones are counted).
pub const MAX_HOPS: usize = 48;
/// New packets kept per [`WINDOW_NS`] of event time (the rest are counted): a frame shows
/// at most a screenful of them.
pub const NEW_PACKETS: u32 = 64;
pub const WINDOW_NS: u64 = 100_000_000;
/// Hop indexes the live ladder follows.
pub const LADDER_HOPS: u16 = 24;
/// Seconds of throughput the sparkline keeps.
pub const SPARK_SECONDS: usize = 120;
/// (event, device) cells and distinct stacks the rates and functions panes count before
/// they only count the rest as "other".
const MAX_CELLS: usize = 4096;
/// Lines of the run's own output kept for the status line.
const MAX_LOG: usize = 200;

/// What does not change during a run: the header's facts.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// The modes of the run, in order (empty for `trace`).
    pub modes: Vec<String>,
    /// Several modes: the view has a compare page.
    pub compare: bool,
    /// `docker`, `netns`, or empty for `trace`.
    pub runtime: String,
    pub kernel: String,
    pub stacks: String,
    /// How long each traced phase runs (None: until stopped).
    pub duration_s: Option<f64>,
}

/// Hop times for the live ladder: the journeys' log-linear histogram ([`LogHist`]), with
/// `None` for no value yet.
#[derive(Debug, Clone, Default)]
pub struct Hist(LogHist);

impl Hist {
    pub fn add(&mut self, v: u64) {
        self.0.record(v);
    }

    pub fn count(&self) -> u64 {
        self.0.count()
    }

    /// The `q` quantile (0..=1), None when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        (self.0.count() > 0).then(|| self.0.quantile(q))
    }
}

/// Which way a packet goes, told by the workload's port (request: to the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Request,
    Response,
    /// No workload port known (`trace` without `--port`), or a packet of another flow.
    Any,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
            Direction::Any => "packets",
        }
    }
}

/// One hop of a kept packet.
#[derive(Debug, Clone)]
pub struct HopRec {
    pub ts_ns: u64,
    pub delta_ns: u64,
    pub dev: Arc<str>,
    pub event: Arc<str>,
    /// The innermost datapath function of the event's stack.
    pub function: Option<Arc<str>>,
    pub stack: Option<Arc<Stack>>,
}

/// A packet of the packets pane, with its hops.
#[derive(Debug, Clone)]
pub struct PacketRec {
    pub id: u64,
    pub headers: Option<Headers>,
    pub hops: Vec<HopRec>,
    /// Hops beyond [`MAX_HOPS`].
    pub more_hops: u32,
    /// Why the kernel dropped it (`NETFILTER_DROP at nf_hook_slow+0x9e`).
    pub drop: Option<String>,
}

impl PacketRec {
    pub fn label(&self) -> String {
        packet_label(self.id)
    }

    pub fn first_ts(&self) -> u64 {
        self.hops.first().map_or(0, |h| h.ts_ns)
    }

    /// From its first traced hop to its last.
    pub fn one_way_ns(&self) -> u64 {
        self.hops.last().map_or(0, |h| h.ts_ns) - self.first_ts()
    }

    pub fn tuple(&self) -> String {
        match &self.headers {
            Some(h) if h.family == crate::packet::Family::Arp => h.to_string(),
            Some(h) => {
                let (s, d) = h.endpoints();
                format!("{s} → {d} {}", h.proto_name())
            }
            None => "-".to_owned(),
        }
    }

    pub fn flags(&self) -> String {
        match &self.headers {
            Some(h) if h.is_tcp() => format!("[{}] {}", h.tcp_flags_text(), h.payload_len),
            Some(h) => h.payload_len.to_string(),
            None => String::new(),
        }
    }

    /// Whether `needle` (lowercase) is in its tuple or any hop's device or event.
    fn matches(&self, needle: &str) -> bool {
        contains(&self.tuple(), needle)
            || self.hops.iter().any(|h| contains(&h.dev, needle) || contains(&h.event, needle))
    }
}

fn contains(hay: &str, needle_lower: &str) -> bool {
    needle_lower.is_empty() || hay.to_lowercase().contains(needle_lower)
}

/// Events of one (event, device) cell.
#[derive(Debug, Clone)]
struct Cell {
    event: Arc<str>,
    dev: Arc<str>,
    total: u64,
    /// Events since the last [`Model::second`].
    this_second: u64,
    /// Events in the last whole second.
    rate: u64,
}

/// One row of a hop ladder as it is being learnt.
#[derive(Debug, Clone)]
struct LadderCell {
    event: Arc<str>,
    dev: Arc<str>,
    delta: Hist,
    function: Option<Arc<str>>,
}

/// One mode's figures for the compare page, taken when the mode ends.
#[derive(Debug, Clone, Default)]
pub struct ModeFigures {
    pub mode: String,
    pub events: u64,
    /// Messages the traced phase's workload exchanged.
    pub messages: Option<u64>,
    pub msgs_per_s: Option<f64>,
    pub untraced_msgs_per_s: Option<f64>,
    pub rtt_p50_us: Option<f64>,
    pub lost: u64,
    /// The request direction's ladder: (device, event, p50 delta ns).
    pub ladder: Vec<(String, String, u64)>,
    pub note: Option<String>,
}

impl ModeFigures {
    /// The figures of a finished mode's recording entry.
    pub fn from_run(run: &crate::recording::ModeRun) -> ModeFigures {
        let events = run.counts.iter().map(|c| c.count).sum();
        ModeFigures {
            mode: run.mode.clone(),
            events,
            messages: run.workload.as_ref().map(|w| w.messages),
            msgs_per_s: run.workload.as_ref().map(|w| w.msgs_per_s),
            untraced_msgs_per_s: run.untraced.as_ref().map(|w| w.msgs_per_s),
            rtt_p50_us: run
                .untraced
                .as_ref()
                .or(run.workload.as_ref())
                .and_then(|w| w.rtt_us.as_ref())
                .map(|r| r.p50),
            lost: run.counters.lost(),
            ladder: run.journeys.as_ref().map(|j| ladder_of(j, &run.names)).unwrap_or_default(),
            note: None,
        }
    }

    /// Events per message of the traced phase.
    pub fn events_per_msg(&self) -> Option<f64> {
        let msgs = self.messages?;
        (msgs > 0).then(|| self.events as f64 / msgs as f64)
    }
}

/// The first direction's (the request's) hops, devices by the run's names where known.
fn ladder_of(j: &JourneyReport, names: &Names) -> Vec<(String, String, u64)> {
    let Some(d) = j.directions.first() else { return Vec::new() };
    let label = |h: &crate::journeys::LadderHop| match names.is_empty() || h.place.is_some() {
        true => h.device_label(),
        false => names.device(&h.dev, h.netns, h.ifindex),
    };
    d.hops.iter().map(|h| (label(h), short_event(&h.event).to_owned(), h.delta_p50_ns)).collect()
}

/// `net:net_dev_queue` → `net_dev_queue`.
pub fn short_event(e: &str) -> &str {
    e.split_once(':').map_or(e, |(_, n)| n)
}

/// Everything the events taught so far. Bounded: packets, hops, cells and log lines have caps,
/// and what is beyond them is counted.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub meta: Meta,
    /// The mode being run now (or `trace`).
    pub mode: String,
    /// What the run is doing (`deploying`, `untraced phase`, `tracing`, `tearing down`).
    pub phase: String,
    /// The tracer's attach type, once attached.
    pub attach: String,
    /// When the current traced phase began (seconds on the model's clock, see [`Model::now`]).
    pub traced_since: Option<f64>,
    /// Seconds since the view began, as the UI last said.
    pub now: f64,
    pub events: u64,
    /// Events the pipeline reported with its last progress.
    counted: u64,
    /// The first event's time (CLOCK_MONOTONIC ns): packet times count from it.
    pub t0_ns: Option<u64>,
    pub counters: Counters,
    /// The tracer's CPU seconds and resident memory, as last read.
    pub cpu_s: f64,
    pub rss_kib: u64,
    events_last_second: u64,
    pub rate: u64,
    pub spark: VecDeque<u64>,
    /// The workload's server port, to tell request from response.
    pub port: Option<u16>,
    names: Arc<Names>,
    dev_labels: HashMap<(u32, u32), Arc<str>>,
    /// By (event kind, netns, ifindex).
    cells: HashMap<(u32, u32, u32), Cell>,
    stacks: HashMap<i32, (Arc<Stack>, u64)>,
    /// Events in cells or stacks beyond the caps.
    pub other_events: u64,
    /// By (direction, hop index, event kind, netns, ifindex).
    ladder: HashMap<(Direction, u16, u32, u32, u32), LadderCell>,
    /// The current window of event time for new kept packets, and how many it started.
    window_ns: u64,
    window_new: u32,
    packets: VecDeque<PacketRec>,
    /// Packet id → its sequence number in `packets` (`first_seq` is the front's).
    index: HashMap<u64, u64>,
    first_seq: u64,
    /// Packets no longer kept (the pane shows the latest [`MAX_PACKETS`]).
    pub packets_dropped: u64,
    pub compare: Vec<ModeFigures>,
    pub log: VecDeque<String>,
    /// Every mode ran; the view stays until the person leaves.
    pub lingering: bool,
    /// The person asked to leave (`q`, Ctrl-C).
    pub quit: bool,
}

impl Model {
    pub fn new(meta: Meta) -> Model {
        Model { meta, ..Model::default() }
    }

    /// A new mode (or `trace`) begins: the per-mode state starts over; compare figures stay.
    pub fn begin(&mut self, mode: &str, port: Option<u16>, names: Arc<Names>) {
        let (meta, compare, log, now) = (
            std::mem::take(&mut self.meta),
            std::mem::take(&mut self.compare),
            std::mem::take(&mut self.log),
            self.now,
        );
        let (cpu_s, rss_kib) = (self.cpu_s, self.rss_kib);
        *self = Model {
            meta,
            compare,
            log,
            now,
            cpu_s,
            rss_kib,
            mode: mode.to_owned(),
            port,
            names,
            ..Model::default()
        };
    }

    /// The traced phase begins (the tracer is attached).
    pub fn attached(&mut self, attach: &str) {
        self.attach = attach.to_owned();
        self.traced_since = Some(self.now);
        self.phase = "tracing".to_owned();
    }

    /// Progress from the pipeline: the kernel's counters, and the events it counted (in
    /// aggregate mode the kernel counts them and no event reaches the view).
    pub fn progress(&mut self, counters: Counters, events: u64) {
        self.counters = counters;
        self.counted = events;
    }

    /// Events so far: those seen, or those the kernel counted when it sends none.
    fn total(&self) -> u64 {
        self.events.max(self.counted)
    }

    /// A line of the run's own output (progress, warnings).
    pub fn log_line(&mut self, line: &str) {
        if self.log.len() >= MAX_LOG {
            self.log.pop_front();
        }
        self.log.push_back(crate::decode::printable(line).into_owned());
    }

    /// One second passed: rates and the sparkline move on.
    pub fn second(&mut self) {
        let total = self.total();
        self.rate = total.saturating_sub(self.events_last_second);
        self.events_last_second = total;
        if self.traced_since.is_some() {
            if self.spark.len() >= SPARK_SECONDS {
                self.spark.pop_front();
            }
            self.spark.push_back(self.rate);
        }
        for c in self.cells.values_mut() {
            c.rate = c.this_second;
            c.this_second = 0;
        }
    }

    fn dev_label(&mut self, ev: &TracedEvent) -> Arc<str> {
        let Some(d) = &ev.dev else {
            return match &ev.name_only {
                Some(n) => Arc::from(n.to_string()),
                None => Arc::from("-"),
            };
        };
        if let Some(l) = self.dev_labels.get(&(d.netns, d.ifindex)) {
            return l.clone();
        }
        let label: Arc<str> = if self.names.is_empty() {
            Arc::from(format!("{}@{}", d.name, d.netns))
        } else {
            Arc::from(self.names.device(&d.name.to_string(), d.netns, d.ifindex))
        };
        if self.dev_labels.len() < MAX_CELLS {
            self.dev_labels.insert((d.netns, d.ifindex), label.clone());
        }
        label
    }

    /// One event: counted in its cell, its stack, its packet and its hop of the ladder. Keys
    /// are numbers (kind, netns, ifindex): no string is hashed or formatted per event.
    pub fn event(&mut self, ev: &TracedEvent) {
        self.events += 1;
        self.t0_ns.get_or_insert(ev.ts_ns);
        let key = ev.dev.as_ref().map_or((ev.kind, 0, 0), |d| (ev.kind, d.netns, d.ifindex));
        let dev = match self.cells.get_mut(&key) {
            Some(c) => {
                c.total += 1;
                c.this_second += 1;
                c.dev.clone()
            }
            None => {
                let dev = self.dev_label(ev);
                if self.cells.len() < MAX_CELLS {
                    let cell =
                        Cell { event: ev.name.clone(), dev: dev.clone(), total: 1, this_second: 1, rate: 0 };
                    self.cells.insert(key, cell);
                } else {
                    self.other_events += 1;
                }
                dev
            }
        };
        if let Some(s) = &ev.stack {
            let room = self.stacks.len() < MAX_CELLS;
            match self.stacks.get_mut(&ev.stack_id) {
                Some(e) => e.1 += 1,
                None if room => {
                    self.stacks.insert(ev.stack_id, (s.clone(), 1));
                }
                None => self.other_events += 1,
            }
        }
        if ev.hop.is_some() {
            self.packet_hop(ev, key, dev);
        }
    }

    fn direction(&self, h: Option<&Headers>) -> Direction {
        match (self.port, h) {
            (Some(p), Some(h)) if h.dport == p => Direction::Request,
            (Some(p), Some(h)) if h.sport == p => Direction::Response,
            _ => Direction::Any,
        }
    }

    fn packet_hop(&mut self, ev: &TracedEvent, (kind, netns, ifindex): (u32, u32, u32), dev: Arc<str>) {
        let Some(hop) = ev.hop else { return };
        let function: Option<Arc<str>> =
            ev.stack.as_ref().and_then(|s| s.innermost_datapath()).map(Arc::from);
        // The ladder: data packets only (the handshake and ACKs take other paths).
        let data = ev.headers.as_ref().is_some_and(|h| h.payload_len > 0);
        if data && hop.hop < LADDER_HOPS && ev.drop.is_none() {
            let key = (self.direction(ev.headers.as_ref()), hop.hop, kind, netns, ifindex);
            // Bounded like the cells: a ladder row past MAX_CELLS (hop, event, device) keys
            // would never be among the most taken ones a frame shows.
            let full = self.ladder.len() >= MAX_CELLS;
            if let Some(cell) = match self.ladder.entry(key) {
                Entry::Occupied(o) => Some(o.into_mut()),
                Entry::Vacant(v) if !full => Some(v.insert(LadderCell {
                    event: ev.name.clone(),
                    dev: dev.clone(),
                    delta: Hist::default(),
                    function: None,
                })),
                Entry::Vacant(_) => None,
            } {
                cell.delta.add(if hop.hop == 0 { 0 } else { hop.delta_ns });
                if cell.function.is_none() {
                    cell.function.clone_from(&function);
                }
            }
        }
        let Some(p) = self.packet_mut(hop.packet, hop.hop == 0, ev.drop.is_some(), ev.ts_ns) else { return };
        if p.headers.is_none() {
            p.headers = ev.headers;
        }
        if let Some(d) = &ev.drop {
            p.drop = Some(format!("{} at {}", d.site.reason, d.site.location));
        }
        if p.hops.len() < MAX_HOPS {
            let stack = ev.stack.clone();
            p.hops.push(HopRec {
                ts_ns: ev.ts_ns,
                delta_ns: hop.delta_ns,
                dev,
                event: ev.name.clone(),
                function,
                stack,
            });
        } else {
            p.more_hops += 1;
        }
    }

    /// The kept packet `id`. A first hop (`fresh`) starts a new one while this window's budget
    /// of new packets lasts ([`NEW_PACKETS`] per [`WINDOW_NS`] of event time: more than a
    /// frame can show); a drop (`force`) always is kept. Other packets are counted, not kept.
    fn packet_mut(&mut self, id: u64, fresh: bool, force: bool, ts: u64) -> Option<&mut PacketRec> {
        let seq = self.index.get(&id).copied().filter(|_| !fresh);
        let i = match seq {
            Some(s) => (s - self.first_seq) as usize,
            None if !fresh && !force => return None,
            None => {
                if ts >= self.window_ns + WINDOW_NS {
                    (self.window_ns, self.window_new) = (ts, 0);
                }
                if self.window_new >= NEW_PACKETS && !force {
                    self.packets_dropped += 1;
                    return None;
                }
                self.window_new += 1;
                self.push_packet(id)
            }
        };
        self.packets.get_mut(i)
    }

    /// Keeps a new packet `id` (the oldest goes when the list is full); returns its index.
    fn push_packet(&mut self, id: u64) -> usize {
        if self.packets.len() >= MAX_PACKETS {
            if let Some(old) = self.packets.pop_front() {
                if self.index.get(&old.id) == Some(&self.first_seq) {
                    self.index.remove(&old.id);
                }
            }
            self.first_seq += 1;
            self.packets_dropped += 1;
        }
        let seq = self.first_seq + self.packets.len() as u64;
        self.index.insert(id, seq);
        self.packets.push_back(PacketRec {
            id,
            headers: None,
            hops: Vec::with_capacity(12),
            more_hops: 0,
            drop: None,
        });
        self.packets.len() - 1
    }

    /// What one frame shows: the model as it is or, while `ui.paused`, as it was when the
    /// person paused (`frozen`, a copy taken then, bounded like the model), so a pane, sort or
    /// filter chosen during the pause shows the paused moment too. The header stays live: the
    /// kernel keeps counting.
    pub fn view_pausable(&self, frozen: &mut Option<Model>, ui: &UiState) -> View {
        if !ui.paused {
            *frozen = None;
            return self.view(ui);
        }
        let mut v = frozen.get_or_insert_with(|| self.clone()).view(ui);
        v.header = self.header();
        v
    }

    /// What one frame shows, with the user's filter and sort.
    /// Only the current pane's rows are made: the pipeline waits for this lock meanwhile.
    pub fn view(&self, ui: &UiState) -> View {
        let needle = ui.filter.to_lowercase();
        let shown = |p: Pane| ui.pane == p && !ui.help;
        View {
            header: self.header(),
            rates: if shown(Pane::Rates) { self.rates(&needle, ui.sort_of(Pane::Rates)) } else { Vec::new() },
            functions: if shown(Pane::Functions) {
                self.functions(&needle, ui.sort_of(Pane::Functions))
            } else {
                Vec::new()
            },
            ladder: if shown(Pane::Ladder) { self.ladder_rows(&needle) } else { Vec::new() },
            spark: self.spark.iter().copied().collect(),
            packets: if shown(Pane::Packets) && ui.open.is_none() {
                self.packets_view(&needle, ui.sort_of(Pane::Packets))
            } else {
                Vec::new()
            },
            packets_dropped: self.packets_dropped,
            t0_ns: self.t0_ns.unwrap_or(0),
            compare: self.compare.clone(),
            log: self.log.back().cloned().unwrap_or_default(),
            other_events: self.other_events,
        }
    }

    fn header(&self) -> Header {
        let elapsed = self.traced_since.map(|t| (self.now - t).max(0.0));
        Header {
            meta: self.meta.clone(),
            mode: self.mode.clone(),
            phase: self.phase.clone(),
            attach: self.attach.clone(),
            elapsed_s: elapsed,
            remaining_s: elapsed.zip(self.meta.duration_s).map(|(e, d)| (d - e).max(0.0)),
            events: self.total(),
            rate: self.rate,
            lost: self.counters.lost(),
            stack_errors: self.counters.stack_error + self.counters.stack_collision,
            cut_short: self.counters.journey_evicted,
            cpu_s: self.cpu_s,
            rss_kib: self.rss_kib,
        }
    }

    fn rates(&self, needle: &str, sort: usize) -> Vec<RateRow> {
        let mut v: Vec<RateRow> = self
            .cells
            .values()
            .filter(|c| contains(&c.event, needle) || contains(&c.dev, needle))
            .map(|c| RateRow { event: c.event.clone(), dev: c.dev.clone(), rate: c.rate, total: c.total })
            .collect();
        match sort {
            1 => v.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.event.cmp(&b.event))),
            2 => v.sort_by(|a, b| a.dev.cmp(&b.dev).then_with(|| a.event.cmp(&b.event))),
            _ => v.sort_by(|a, b| {
                (b.rate, b.total).cmp(&(a.rate, a.total)).then_with(|| a.event.cmp(&b.event))
            }),
        }
        v
    }

    fn functions(&self, needle: &str, sort: usize) -> Vec<(Arc<str>, u64)> {
        let mut by: HashMap<Arc<str>, u64> = HashMap::default();
        for (s, n) in self.stacks.values() {
            let mut seen: Vec<&Arc<str>> = Vec::new();
            for f in &s.frames {
                // A recursive function counts once per stack.
                if !seen.contains(&&f.function) {
                    seen.push(&f.function);
                    *by.entry(f.function.clone()).or_default() += n;
                }
            }
        }
        let mut v: Vec<(Arc<str>, u64)> = by.into_iter().filter(|(f, _)| contains(f, needle)).collect();
        match sort {
            1 => v.sort_by(|a, b| a.0.cmp(&b.0)),
            _ => v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0))),
        }
        v
    }

    /// Per direction and hop index, the (event, device) most packets took.
    fn ladder_rows(&self, needle: &str) -> Vec<LadderRow> {
        let mut best: HashMap<(Direction, u16), LadderRow> = HashMap::default();
        for ((dir, hop, ..), c) in &self.ladder {
            // With the workload's port known, other flows' packets are not the ladder's.
            let other_flow = *dir == Direction::Any && self.port.is_some();
            if other_flow || !(contains(&c.event, needle) || contains(&c.dev, needle)) {
                continue;
            }
            let row = LadderRow {
                direction: *dir,
                hop: *hop,
                event: c.event.clone(),
                dev: c.dev.clone(),
                function: c.function.clone(),
                packets: c.delta.count(),
                p50_ns: c.delta.quantile(0.5).unwrap_or(0),
                p99_ns: c.delta.quantile(0.99).unwrap_or(0),
            };
            let slot = best.entry((*dir, *hop)).or_insert_with(|| row.clone());
            if (row.packets, &row.event, &row.dev) > (slot.packets, &slot.event, &slot.dev) {
                *slot = row;
            }
        }
        let mut v: Vec<LadderRow> = best.into_values().collect();
        v.sort_by_key(|r| (r.direction, r.hop));
        v
    }

    fn packets_view(&self, needle: &str, sort: usize) -> Vec<PacketRec> {
        let mut v: Vec<PacketRec> = self.packets.iter().filter(|p| p.matches(needle)).cloned().collect();
        match sort {
            1 => v.sort_by(|a, b| b.one_way_ns().cmp(&a.one_way_ns()).then(a.id.cmp(&b.id))),
            2 => v.sort_by(|a, b| b.hops.len().cmp(&a.hops.len()).then(a.id.cmp(&b.id))),
            // Newest last, as a log scrolls.
            _ => v.sort_by_key(PacketRec::first_ts),
        }
        v
    }
}

/// The header line's figures.
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub meta: Meta,
    pub mode: String,
    pub phase: String,
    pub attach: String,
    pub elapsed_s: Option<f64>,
    pub remaining_s: Option<f64>,
    pub events: u64,
    pub rate: u64,
    pub lost: u64,
    pub stack_errors: u64,
    pub cut_short: u64,
    pub cpu_s: f64,
    pub rss_kib: u64,
}

/// A row of the rates pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateRow {
    pub event: Arc<str>,
    pub dev: Arc<str>,
    /// Events in the last whole second.
    pub rate: u64,
    pub total: u64,
}

/// A hop of the live ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LadderRow {
    pub direction: Direction,
    pub hop: u16,
    pub event: Arc<str>,
    pub dev: Arc<str>,
    pub function: Option<Arc<str>>,
    pub packets: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
}

/// What one frame shows.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub header: Header,
    pub rates: Vec<RateRow>,
    pub functions: Vec<(Arc<str>, u64)>,
    pub ladder: Vec<LadderRow>,
    pub spark: Vec<u64>,
    pub packets: Vec<PacketRec>,
    pub packets_dropped: u64,
    /// The first event's time: packet times count from it.
    pub t0_ns: u64,
    pub compare: Vec<ModeFigures>,
    /// The run's latest line of output.
    pub log: String,
    pub other_events: u64,
}

/// The panes, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Ladder,
    Rates,
    Functions,
    Packets,
    Compare,
}

impl Pane {
    pub const ALL: [Pane; 5] = [Pane::Ladder, Pane::Rates, Pane::Functions, Pane::Packets, Pane::Compare];

    pub fn title(self) -> &'static str {
        match self {
            Pane::Ladder => "ladder",
            Pane::Rates => "rates",
            Pane::Functions => "functions",
            Pane::Packets => "packets",
            Pane::Compare => "compare",
        }
    }

    /// The sort orders `s` cycles through.
    pub fn sorts(self) -> &'static [&'static str] {
        match self {
            Pane::Rates => &["events/s", "total", "device"],
            Pane::Functions => &["count", "name"],
            Pane::Packets => &["time", "one-way time", "hops"],
            Pane::Ladder | Pane::Compare => &["hop"],
        }
    }
}

/// A key, as the view understands it (crossterm's are mapped in `mod.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Tab,
    BackTab,
    Enter,
    Esc,
    Backspace,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    CtrlC,
}

/// What a key asks of the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    /// The UI state changed: the next frame (at most ~10 a second) shows it.
    Redraw,
    /// Stop the run: the same teardown as Ctrl-C.
    Quit,
}

/// What the person chose.
#[derive(Debug, Clone)]
pub struct UiState {
    pub pane: Pane,
    /// Whether the compare page exists (several modes).
    pub compare: bool,
    pub paused: bool,
    pub filter: String,
    /// Typing a filter after `/`.
    pub editing: bool,
    sorts: [usize; 5],
    /// The selected row of each pane.
    pub selected: [usize; 5],
    /// The packet whose journey is open, as it was when opened.
    pub open: Option<PacketRec>,
    /// The selected hop of the open journey.
    pub hop_sel: usize,
    /// The packets pane follows the newest packet (until the selection moves up).
    pub follow: bool,
    pub color: bool,
    pub help: bool,
}

impl UiState {
    pub fn new(compare: bool, color: bool) -> UiState {
        UiState {
            pane: Pane::Ladder,
            compare,
            paused: false,
            filter: String::new(),
            editing: false,
            sorts: [0; 5],
            selected: [0; 5],
            open: None,
            hop_sel: 0,
            follow: true,
            color,
            help: false,
        }
    }

    fn index(p: Pane) -> usize {
        Pane::ALL.iter().position(|&x| x == p).unwrap_or(0)
    }

    pub fn panes(&self) -> &'static [Pane] {
        if self.compare {
            &Pane::ALL
        } else {
            &Pane::ALL[..4]
        }
    }

    pub fn sort_of(&self, p: Pane) -> usize {
        self.sorts[Self::index(p)]
    }

    pub fn sort_name(&self) -> &'static str {
        self.pane.sorts()[self.sort_of(self.pane) % self.pane.sorts().len()]
    }

    /// The selected row of the current pane, among `rows`.
    pub fn selected(&self, rows: usize) -> usize {
        let last = rows.saturating_sub(1);
        if self.pane == Pane::Packets && self.follow {
            return last;
        }
        self.selected[Self::index(self.pane)].min(last)
    }

    /// Handles a key against the frame the person sees (`rows`: the current pane's rows).
    pub fn key(&mut self, key: Key, view: &View) -> Action {
        if key == Key::CtrlC {
            return Action::Quit;
        }
        if self.editing {
            return self.filter_key(key);
        }
        let panes = self.panes();
        let at = panes.iter().position(|&p| p == self.pane).unwrap_or(0);
        match key {
            Key::Char('q') => return Action::Quit,
            Key::Tab => self.switch(panes[(at + 1) % panes.len()]),
            Key::BackTab => self.switch(panes[(at + panes.len() - 1) % panes.len()]),
            Key::Char(c @ '1'..='9') => {
                if let Some(&p) = panes.get(c as usize - '1' as usize) {
                    self.switch(p);
                }
            }
            Key::Char('p') | Key::Char(' ') => self.paused = !self.paused,
            Key::Char('/') => self.editing = true,
            Key::Char('s') => {
                let i = Self::index(self.pane);
                self.sorts[i] = (self.sorts[i] + 1) % self.pane.sorts().len();
            }
            Key::Char('?') | Key::Char('h') => self.help = !self.help,
            Key::Enter if self.pane == Pane::Packets && self.open.is_none() => {
                self.open = view.packets.get(self.selected(view.packets.len())).cloned();
                self.hop_sel = 0;
            }
            Key::Esc if self.open.is_some() => self.open = None,
            Key::Esc if self.help => self.help = false,
            Key::Esc => self.filter.clear(),
            _ => return self.move_key(key, self.rows(view)),
        }
        Action::Redraw
    }

    fn switch(&mut self, p: Pane) {
        self.pane = p;
        self.open = None;
    }

    fn filter_key(&mut self, key: Key) -> Action {
        match key {
            Key::Enter => self.editing = false,
            Key::Esc => {
                self.editing = false;
                self.filter.clear();
            }
            Key::Backspace => {
                self.filter.pop();
            }
            Key::Char(c) if !c.is_control() && self.filter.len() < 64 => self.filter.push(c),
            _ => return Action::None,
        }
        self.selected = [0; 5];
        Action::Redraw
    }

    /// The current pane's row count.
    pub fn rows(&self, view: &View) -> usize {
        match self.pane {
            Pane::Ladder => view.ladder.len(),
            Pane::Rates => view.rates.len(),
            Pane::Functions => view.functions.len(),
            Pane::Packets => view.packets.len(),
            Pane::Compare => view.compare.len(),
        }
    }

    fn move_key(&mut self, key: Key, rows: usize) -> Action {
        let (rows, current) = match &self.open {
            Some(p) => (p.hops.len(), self.hop_sel),
            None => (rows, self.selected(rows)),
        };
        let last = rows.saturating_sub(1);
        let mut at = current;
        let s = &mut at;
        *s = match key {
            Key::Up | Key::Char('k') => s.saturating_sub(1),
            Key::Down | Key::Char('j') => (*s + 1).min(last),
            Key::PageUp => s.saturating_sub(10),
            Key::PageDown => (*s + 10).min(last),
            Key::Home | Key::Char('g') => 0,
            Key::End | Key::Char('G') => last,
            _ => return Action::None,
        };
        if self.open.is_some() {
            self.hop_sel = at;
        } else {
            if self.pane == Pane::Packets {
                self.follow = at == last;
            }
            self.selected[Self::index(self.pane)] = at;
        }
        Action::Redraw
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        packet::{sample_segment, Hop},
        stacks::Frame,
    };

    fn stack(functions: &[&str]) -> Arc<Stack> {
        let frames = functions
            .iter()
            .map(|f| Frame { addr: 0, function: Arc::from(*f), offset: 0, module: None })
            .collect();
        Arc::new(Stack { frames })
    }

    /// Hop `hop` of packet `packet` on `dev` (netns 7) at `ts`, `delta` after its previous one.
    pub(crate) fn hop(packet: u64, hop: u16, ts: u64, delta: u64, name: &str, dev: &str) -> TracedEvent {
        let mut ev = TracedEvent::named(name).on(7, u32::from(hop) + 1, dev);
        ev.ts_ns = ts;
        ev.hop = Some(Hop { packet, hop, delta_ns: delta, reused: false, evicted: false, end: false });
        ev.headers = Some(sample_segment(1, 1));
        ev
    }

    /// A model that saw `n` request packets of three hops each, 2 µs then `slow` µs apart.
    pub(crate) fn model_with(n: u64, slow: u64) -> Model {
        model_spaced(n, slow, 2_000_000)
    }

    /// [`model_with`], the packets `every` ns apart.
    fn model_spaced(n: u64, slow: u64, every: u64) -> Model {
        let mut m =
            Model::new(Meta { kernel: "6.18.0".into(), stacks: "adaptive".into(), ..Meta::default() });
        m.begin("bridge", Some(10000), Arc::default());
        m.attached("tp_btf");
        for p in 0..n {
            let t = p * every;
            let mut first = hop(p + 1, 0, t, 0, "net:net_dev_queue", "eth0");
            first.stack = Some(stack(&["dev_queue_xmit", "ip_finish_output2"]));
            first.stack_id = 1;
            m.event(&first);
            m.event(&hop(p + 1, 1, t + 2_000, 2_000, "net:netif_rx", "veth1"));
            m.event(&hop(p + 1, 2, t + 2_000 + slow * 1_000, slow * 1_000, "net:netif_receive_skb", "eth0"));
        }
        m
    }

    /// Every pane's rows at once (a frame has only its pane's).
    pub(crate) fn full(m: &Model, ui: &UiState) -> View {
        let part = |p: Pane| {
            let mut u = ui.clone();
            (u.pane, u.open, u.help) = (p, None, false);
            m.view(&u)
        };
        View {
            rates: part(Pane::Rates).rates,
            functions: part(Pane::Functions).functions,
            packets: part(Pane::Packets).packets,
            ..part(Pane::Ladder)
        }
    }

    #[test]
    fn a_frame_makes_only_its_panes_rows() {
        let m = model_with(3, 3);
        let v = m.view(&UiState::new(false, false));
        assert_eq!((v.ladder.len(), v.rates.len(), v.functions.len(), v.packets.len()), (3, 0, 0, 0));
    }

    fn sample_drop() -> crate::drops::Drop {
        crate::drops::Drop {
            reason_value: Some(1),
            address: 0,
            site: Arc::new(crate::drops::DropSite {
                reason: "NETFILTER_DROP".into(),
                function: "nf_hook_slow".into(),
                location: "nf_hook_slow+0x9e".into(),
            }),
        }
    }

    #[test]
    fn histogram_quantiles_are_close() {
        let mut h = Hist::default();
        for v in 1..=1000u64 {
            h.add(v * 1000);
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((470_000..=530_000).contains(&p50), "p50 {p50}");
        assert!((930_000..=1_050_000).contains(&p99), "p99 {p99}");
        assert_eq!(Hist::default().quantile(0.5), None);
        let mut small = Hist::default();
        small.add(3);
        assert_eq!(small.quantile(0.5), Some(3));
    }

    #[test]
    fn ladder_follows_each_hop_with_its_times() {
        let m = model_with(100, 30);
        let v = full(&m, &UiState::new(false, false));
        let hops: Vec<(u16, &str, &str)> = v.ladder.iter().map(|r| (r.hop, &*r.event, &*r.dev)).collect();
        assert_eq!(
            hops,
            [
                (0, "net:net_dev_queue", "eth0@7"),
                (1, "net:netif_rx", "veth1@7"),
                (2, "net:netif_receive_skb", "eth0@7")
            ]
        );
        assert!(v.ladder.iter().all(|r| r.direction == Direction::Request && r.packets == 100));
        assert!((1_900..=2_100).contains(&v.ladder[1].p50_ns), "{:?}", v.ladder[1]);
        assert!((28_000..=32_000).contains(&v.ladder[2].p99_ns), "{:?}", v.ladder[2]);
    }

    #[test]
    fn rates_count_per_event_and_device_and_sort() {
        let mut m = model_with(10, 5);
        m.second();
        m.event(&hop(99, 1, 0, 0, "net:netif_rx", "veth1"));
        let mut ui = UiState::new(false, false);
        let v = full(&m, &ui);
        assert_eq!(v.rates.len(), 3);
        assert!(v.rates.iter().all(|r| r.rate == 10), "{:?}", v.rates);
        assert_eq!(&*v.rates[0].event, "net:netif_rx", "ties sort by total: {:?}", v.rates);
        assert_eq!(v.rates[0].total, 11);
        ui.pane = Pane::Rates;
        ui.key(Key::Char('s'), &v);
        ui.key(Key::Char('s'), &v);
        assert_eq!(ui.sort_name(), "device");
        let v = full(&m, &ui);
        let by_dev: Vec<&str> = v.rates.iter().map(|r| &*r.dev).collect();
        assert_eq!(by_dev, ["eth0@7", "eth0@7", "veth1@7"]);
        assert_eq!((full(&m, &ui).header.rate, full(&m, &ui).header.events), (30, 31));
    }

    #[test]
    fn functions_are_counted_from_stacks() {
        let m = model_with(4, 5);
        let v = full(&m, &UiState::new(false, false));
        assert_eq!(v.functions, [(Arc::from("dev_queue_xmit"), 4), (Arc::from("ip_finish_output2"), 4)]);
    }

    #[test]
    fn packets_are_bounded_and_the_rest_counted() {
        let m = model_with(MAX_PACKETS as u64 + 10, 5);
        let v = full(&m, &UiState::new(false, false));
        assert_eq!(v.packets.len(), MAX_PACKETS);
        assert_eq!(v.packets_dropped, 10);
        assert_eq!(v.packets[0].id, 11, "the oldest went first");
        let p = &v.packets[MAX_PACKETS - 1];
        assert_eq!((p.hops.len(), p.one_way_ns()), (3, 7_000));
        assert_eq!(p.tuple(), "10.213.0.3:41234 → 10.213.0.2:10000 TCP");
        assert_eq!(p.flags(), "[P.] 42");
    }

    #[test]
    fn a_burst_keeps_a_budget_of_new_packets_but_every_drop() {
        // 200 packets within one window: the first NEW_PACKETS are kept.
        let mut m = model_spaced(200, 5, 10_000);
        let v = full(&m, &UiState::new(false, false));
        assert_eq!(
            (v.packets.len(), v.packets_dropped),
            (NEW_PACKETS as usize, 200 - u64::from(NEW_PACKETS))
        );
        assert_eq!(v.packets.last().map(|p| p.id), Some(u64::from(NEW_PACKETS)));
        assert_eq!(v.ladder[2].packets, 200, "the ladder counts every packet");
        // A drop of a packet that was not kept is kept all the same.
        let mut d = hop(150, 3, 2_000_000, 1_000, "skb:kfree_skb", "eth0");
        d.drop = Some(sample_drop());
        m.event(&d);
        let v = full(&m, &UiState::new(false, false));
        let last = v.packets.last().expect("kept");
        assert_eq!((last.id, last.drop.is_some()), (150, true));
    }

    #[test]
    fn filter_narrows_every_pane() {
        let mut m = model_with(3, 5);
        let mut other = hop(50, 0, 0, 0, "net:net_dev_xmit", "macvlan0").on(8, 1, "macvlan0");
        other.headers = None;
        m.event(&other);
        let mut ui = UiState::new(false, false);
        let v = full(&m, &ui);
        ui.key(Key::Char('/'), &v);
        for c in "MACVLAN".chars() {
            ui.key(Key::Char(c), &v);
        }
        ui.key(Key::Enter, &v);
        assert!(!ui.editing);
        let v = full(&m, &ui);
        assert_eq!(v.rates.len(), 1);
        assert_eq!(v.packets.iter().map(|p| p.id).collect::<Vec<_>>(), [50]);
        assert!(v.ladder.is_empty(), "no data packet on macvlan0");
        ui.key(Key::Esc, &v);
        assert_eq!(full(&m, &ui).packets.len(), 4);
    }

    #[test]
    fn keys_switch_panes_open_packets_and_quit() {
        let m = model_with(5, 5);
        let mut ui = UiState::new(true, false);
        let v = full(&m, &ui);
        assert_eq!(ui.key(Key::Tab, &v), Action::Redraw);
        assert_eq!(ui.pane, Pane::Rates);
        ui.key(Key::BackTab, &v);
        ui.key(Key::BackTab, &v);
        assert_eq!(ui.pane, Pane::Compare, "Shift-Tab wraps around");
        ui.key(Key::Char('4'), &v);
        assert_eq!(ui.pane, Pane::Packets);
        assert_eq!(ui.selected(v.packets.len()), 4, "follows the newest packet");
        ui.key(Key::Up, &v);
        ui.key(Key::Enter, &v);
        assert_eq!(ui.open.as_ref().map(|p| p.id), Some(4));
        ui.key(Key::Down, &v);
        assert_eq!(ui.hop_sel, 1);
        ui.key(Key::Esc, &v);
        assert!(ui.open.is_none());
        ui.key(Key::Char('p'), &v);
        assert!(ui.paused);
        assert_eq!(ui.key(Key::Char('q'), &v), Action::Quit);
        assert_eq!(ui.key(Key::CtrlC, &v), Action::Quit);
        let mut single = UiState::new(false, false);
        single.key(Key::Char('5'), &v);
        assert_eq!(single.pane, Pane::Ladder, "no compare page for one mode");
    }

    #[test]
    fn a_pause_freezes_every_pane_but_not_the_header() {
        let mut m = model_with(3, 5);
        let mut ui = UiState::new(false, false);
        let mut frozen = None;
        assert!(m.view_pausable(&mut frozen, &ui).packets.is_empty(), "the ladder pane first");
        ui.key(Key::Char('p'), &full(&m, &ui));
        let paused = m.view_pausable(&mut frozen, &ui);
        // Events go on; the person switches to the packets pane during the pause.
        m.event(&hop(9, 0, 10_000_000, 0, "net:net_dev_queue", "eth0"));
        ui.key(Key::Char('4'), &paused);
        assert_eq!(ui.pane, Pane::Packets);
        let v = m.view_pausable(&mut frozen, &ui);
        assert_eq!(v.packets.iter().map(|p| p.id).collect::<Vec<_>>(), [1, 2, 3], "as when paused");
        assert_eq!(v.header.events, paused.header.events + 1, "the header is live");
        ui.key(Key::Char('p'), &v);
        let v = m.view_pausable(&mut frozen, &ui);
        assert!(frozen.is_none());
        assert_eq!(v.packets.last().map(|p| p.id), Some(9), "live again");
    }

    #[test]
    fn a_new_mode_starts_over_but_keeps_the_comparison() {
        let mut m = model_with(5, 5);
        m.compare.push(ModeFigures { mode: "bridge".into(), events: 15, ..ModeFigures::default() });
        m.begin("macvlan", Some(10000), Arc::default());
        let v = full(&m, &UiState::new(true, false));
        assert_eq!((v.header.events, v.packets.len(), v.compare.len()), (0, 0, 1));
        assert_eq!(v.header.mode, "macvlan");
    }

    #[test]
    fn drops_mark_their_packet() {
        let mut m = model_with(1, 5);
        let mut d = hop(1, 3, 9_000, 2_000, "skb:kfree_skb", "eth0");
        d.drop = Some(sample_drop());
        m.event(&d);
        let v = full(&m, &UiState::new(false, false));
        assert_eq!(v.packets[0].drop.as_deref(), Some("NETFILTER_DROP at nf_hook_slow+0x9e"));
        assert_eq!(v.ladder.len(), 3, "a drop is no hop of the ladder");
    }
}
