//! `--pcap FILE`: every hop's frame, as the capture programs copied it, in a pcapng file.
//! See docs/pcap.md.
use std::{
    borrow::Cow,
    collections::HashMap,
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use dockertrace_common::capture::LINK_RAW;
use pcap_file::{
    pcapng::{
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
        PcapNgWriter,
    },
    DataLink,
};

use crate::{decode::TracedEvent, names::Names, pipeline::Sink, sinks::live::micros, summary::TraceReport};

/// The pcapng link type of a frame (`CapturedFrame::link`).
fn datalink(link: u8) -> DataLink {
    if link == LINK_RAW {
        DataLink::RAW
    } else {
        DataLink::ETHERNET
    }
}

/// Writes every hop's frame to a pcapng file: one interface per (device, namespace, link
/// type), named as the live view names the device (`eth0@server`), with the event, the
/// function, the packet, its hop and the hop's delta as each packet's comment.
pub struct PcapSink {
    path: PathBuf,
    out: PcapNgWriter<BufWriter<File>>,
    snaplen: u32,
    names: Arc<Names>,
    /// (netns, ifindex, link) → interface id.
    interfaces: HashMap<(u32, u32, u8), u32>,
    /// Wall clock minus the programs' clock (`CLOCK_MONOTONIC`), ns: the file's timestamps are
    /// wall-clock times, as tcpdump's.
    realtime_offset: u64,
    /// Frames written.
    pub packets: u64,
}

impl PcapSink {
    /// Creates `path` (its section header goes out at once).
    pub fn create(path: &Path, snaplen: u32) -> anyhow::Result<PcapSink> {
        let file = File::create(path).map_err(|e| anyhow::anyhow!("--pcap {}: {e}", path.display()))?;
        let out = PcapNgWriter::new(BufWriter::new(file))
            .map_err(|e| anyhow::anyhow!("--pcap {}: {e}", path.display()))?;
        Ok(PcapSink {
            path: path.to_owned(),
            out,
            snaplen,
            names: Arc::default(),
            interfaces: HashMap::new(),
            realtime_offset: clock_ns(libc::CLOCK_REALTIME).saturating_sub(clock_ns(libc::CLOCK_MONOTONIC)),
            packets: 0,
        })
    }

    pub fn with_names(mut self, names: Arc<Names>) -> Self {
        self.names = names;
        self
    }

    /// The interface of `ev`'s device for frames of `link`, described on first use.
    fn interface(&mut self, ev: &TracedEvent, link: u8) -> anyhow::Result<u32> {
        let (netns, ifindex) = ev.dev.as_ref().map_or((0, 0), |d| (d.netns, d.ifindex));
        if let Some(&id) = self.interfaces.get(&(netns, ifindex, link)) {
            return Ok(id);
        }
        // A new interface (once per device): its name only now.
        let name = ev.dev.as_ref().map(|d| d.name.to_string()).unwrap_or_default();
        let label = if ev.dev.is_none() {
            "?".to_owned()
        } else if self.names.is_empty() {
            format!("{}@{netns}", if name.is_empty() { "?" } else { &name })
        } else {
            self.names.device(&name, netns, ifindex)
        };
        let idb = InterfaceDescriptionBlock {
            linktype: datalink(link),
            snaplen: self.snaplen,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(label)),
                InterfaceDescriptionOption::IfDescription(Cow::Owned(format!(
                    "netns {netns} ifindex {ifindex}, traced by dockertrace"
                ))),
                // pcap-file writes timestamps in nanoseconds.
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        self.out
            .write_pcapng_block(idb)
            .map_err(|e| anyhow::anyhow!("--pcap {}: {e}", self.path.display()))?;
        let id = self.interfaces.len() as u32;
        self.interfaces.insert((netns, ifindex, link), id);
        Ok(id)
    }
}

/// A clock's time, ns.
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a plain syscall writing into a valid timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// The comment of a packet: `event=net:netif_rx function=veth_xmit packet=#0.12 hop=2
/// delta=1.2µs` (function: the innermost datapath function of the event's stack, else its
/// innermost function; none when the stack was not walked).
pub fn comment(ev: &TracedEvent) -> String {
    let mut c = format!("event={}", ev.name);
    if let Some(f) = ev.stack.as_ref().and_then(|s| s.innermost_datapath().or_else(|| s.functions().next())) {
        c.push_str(&format!(" function={f}"));
    }
    if let Some(h) = &ev.hop {
        c.push_str(&format!(" packet={} hop={} delta={}", h.label(), h.hop, micros(h.delta_ns)));
    }
    if let Some(d) = &ev.drop {
        c.push_str(&format!(" drop={}", d.site.reason));
    }
    c
}

impl Sink for PcapSink {
    fn event(&mut self, ev: &TracedEvent) -> anyhow::Result<()> {
        let Some(frame) = &ev.frame else { return Ok(()) };
        if ev.hop.is_none() {
            return Ok(());
        }
        let id = self.interface(ev, frame.link)?;
        let epb = EnhancedPacketBlock {
            interface_id: id,
            timestamp: Duration::from_nanos(ev.ts_ns.saturating_add(self.realtime_offset)),
            original_len: frame.orig_len,
            data: Cow::Borrowed(&frame.data),
            options: vec![EnhancedPacketOption::Comment(Cow::Owned(comment(ev)))],
        };
        self.out
            .write_pcapng_block(epb)
            .map_err(|e| anyhow::anyhow!("--pcap {}: {e}", self.path.display()))?;
        self.packets += 1;
        Ok(())
    }

    fn finish(&mut self, _r: &TraceReport) -> anyhow::Result<()> {
        self.out.get_mut().flush().map_err(|e| anyhow::anyhow!("--pcap {}: {e}", self.path.display()))
    }
}
