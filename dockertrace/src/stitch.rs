//! `report --stitch A B`: one packet's journey across two hosts, from two recordings made
//! at the same time (`dockertrace trace --record`, one per host).
//!
//! 1. **Match.** A TCP data segment is the same packet on both hosts when its inner tuple,
//!    sequence number and payload length are (`PacketLog`; inside a VXLAN tunnel the peel
//!    gives the inner packet on the underlay too). Segments seen twice on one host
//!    (retransmits) are left out: they would match the wrong copy.
//! 2. **Who sends.** The two hosts' clocks are unrelated (each its own boot time), so the
//!    sender of a flow is told by consistency: if A sends flow F and B its reverse, then
//!    (B's first sight of a packet of F − A's last sight) + (A's first sight of a packet back −
//!    B's last sight) is the two wire times, positive; under the other assignment it is minus
//!    both hosts' time in the kernel, negative. Medians over each flow's packets decide.
//! 3. **Clock offset, as NTP does.** Each segment A sends (leaving A at t1, reaching B at t2)
//!    is paired with B's first segment back on that connection that acknowledges it (leaving B
//!    at t3, reaching A at t4): offset θ = ((t2 − t1) + (t3 − t4)) / 2, round-trip delay
//!    δ = (t4 − t1) − (t3 − t2). Like NTP's clock filter, the estimate is the median θ of the
//!    quarter of the pairs with the smallest δ (queueing only adds to δ, and skews θ by half of
//!    what it adds one way). It assumes the wire takes as long both ways.
//! 4. **One ladder per direction.** With B's times moved onto A's clock, each stitched packet
//!    is the sender's hops, the wire, then the receiver's hops; the most common such path is
//!    shown hop by hop with p50/p99 of the time from the previous hop (the receiver's first
//!    hop: the wire time), and the one-way time from the sender's first hop to the receiver's
//!    last.
use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    net::IpAddr,
};

use anyhow::bail;
use serde::Serialize;

use crate::{
    journeys::LogHist,
    names::Names,
    packet_log::{LoggedPacket, PacketLog, SegmentKey},
    render::ladders::ns,
};

/// One host's recording: its name (the file), packet log and names.
pub struct Side<'a> {
    pub name: String,
    pub log: &'a PacketLog,
    pub names: &'a Names,
}

/// What `report --stitch` shows (and prints as JSON with `--format json`).
#[derive(Debug, Clone, Serialize)]
pub struct StitchReport {
    pub a: String,
    pub b: String,
    /// Segments found in both recordings.
    pub matched: u64,
    /// Logged segments of each recording not found in the other (other traffic, or outside
    /// the other tracer's time or filter).
    pub unmatched_a: u64,
    pub unmatched_b: u64,
    /// B's clock minus A's, ns: B's time of an instant = A's time + offset.
    pub offset_ns: i64,
    /// Request/response pairs the offset was estimated from, and how many of them (the
    /// quickest quarter) it is the median of.
    pub offset_pairs: u64,
    pub offset_best_pairs: u64,
    /// The smallest round-trip delay δ of a pair (wire both ways), ns.
    pub min_round_trip_ns: u64,
    /// How far off the offset can be: half the largest δ of the pairs it is the median of
    /// (each pair's θ is off by at most half its δ, whatever the two ways' wire times).
    pub offset_bound_ns: u64,
    /// Most packets first.
    pub directions: Vec<StitchedDirection>,
}

/// The stitched packets of one direction.
#[derive(Debug, Clone, Serialize)]
pub struct StitchedDirection {
    /// `10.0.0.1 → 10.0.0.2:10000`
    pub label: String,
    /// The recording of the sending host, and of the receiving one.
    pub from: String,
    pub to: String,
    pub packets: u64,
    /// Packets on the ladder's path (the most common).
    pub ladder_packets: u64,
    /// From the sender's first hop to the receiver's last, on one clock (all packets).
    pub one_way_p50_ns: u64,
    pub one_way_p99_ns: u64,
    /// From the sender's last hop to the receiver's first (all packets).
    pub wire_p50_ns: u64,
    pub wire_p99_ns: u64,
    pub hops: Vec<StitchedHop>,
}

/// One hop of a stitched ladder.
#[derive(Debug, Clone, Serialize)]
pub struct StitchedHop {
    /// The recording (host) the hop was seen on.
    pub host: String,
    pub event: String,
    /// `eth0@server`, `vxlan0@4026532290`
    pub device: String,
    /// Time from the previous hop; for the receiver's first hop, across the wire.
    pub from_prev_p50_ns: u64,
    pub from_prev_p99_ns: u64,
    /// The first hop on the receiving host (its time is the wire's).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub after_wire: bool,
}

/// Which side sent a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Sender {
    A,
    B,
}

type Flow = (IpAddr, IpAddr, u16, u16);

fn flow_of(p: &LoggedPacket) -> Flow {
    (p.saddr, p.daddr, p.sport, p.dport)
}

fn reverse((s, d, sp, dp): Flow) -> Flow {
    (d, s, dp, sp)
}

/// Segments seen once: key → index (a key seen twice, a retransmit, is left out).
fn unique(log: &PacketLog) -> HashMap<SegmentKey, usize> {
    let mut seen: HashMap<SegmentKey, Option<usize>> = HashMap::new();
    for (i, p) in log.packets.iter().enumerate() {
        seen.entry(p.key()).and_modify(|v| *v = None).or_insert(Some(i));
    }
    seen.into_iter().filter_map(|(k, v)| v.map(|i| (k, i))).collect()
}

fn median(mut v: Vec<i128>) -> Option<i128> {
    if v.is_empty() {
        return None;
    }
    let mid = v.len() / 2;
    Some(*v.select_nth_unstable(mid).1)
}

/// Whether TCP sequence number `a` is at or after `b` (modulo 2^32).
fn seq_at_or_after(a: u32, b: u32) -> bool {
    a.wrapping_sub(b) as i32 >= 0
}

/// A matched segment: its index in A's log and in B's.
#[derive(Clone, Copy)]
struct Match {
    a: usize,
    b: usize,
}

/// Joins two hosts' packet logs (see the module's documentation).
pub fn stitch(a: &Side, b: &Side) -> anyhow::Result<StitchReport> {
    let (ua, ub) = (unique(a.log), unique(b.log));
    let mut by_flow: BTreeMap<Flow, Vec<Match>> = BTreeMap::new();
    for (k, &ia) in &ua {
        if let Some(&ib) = ub.get(k) {
            by_flow.entry(flow_of(&a.log.packets[ia])).or_default().push(Match { a: ia, b: ib });
        }
    }
    let matched: u64 = by_flow.values().map(|v| v.len() as u64).sum();
    if matched == 0 {
        bail!(
            "no TCP data segment of {} is in {}: record the same traffic at the same time on both hosts \
             (`dockertrace trace --record FILE`, with --vxlan on an overlay)",
            a.name,
            b.name
        );
    }
    for v in by_flow.values_mut() {
        v.sort_by_key(|m| a.log.packets[m.a].t0_ns);
    }
    let pa = &a.log.packets;
    let pb = &b.log.packets;
    // 2. Who sends each flow that has a reverse.
    let mut senders: BTreeMap<Flow, Sender> = BTreeMap::new();
    for (&f, ms) in &by_flow {
        let Some(back) = by_flow.get(&reverse(f)) else { continue };
        let out =
            median(ms.iter().map(|m| i128::from(pb[m.b].t0_ns) - i128::from(pa[m.a].last_ns())).collect());
        let ret =
            median(back.iter().map(|m| i128::from(pa[m.a].t0_ns) - i128::from(pb[m.b].last_ns())).collect());
        if let (Some(o), Some(r)) = (out, ret) {
            senders.insert(f, if o + r > 0 { Sender::A } else { Sender::B });
        }
    }
    if senders.is_empty() {
        bail!(
            "no connection of {} and {} has segments both ways: the clock offset is estimated from \
             request/response pairs (as NTP does), so trace traffic that is answered",
            a.name,
            b.name
        );
    }
    // 3. The offset, from A's segments and B's answers.
    let mut pairs: Vec<(u64, i128)> = Vec::new();
    for (&f, &s) in &senders {
        if s != Sender::A {
            continue;
        }
        let mut back: Vec<Match> = by_flow[&reverse(f)].clone();
        back.sort_by_key(|m| pb[m.b].last_ns());
        for m in &by_flow[&f] {
            let (req_a, req_b) = (&pa[m.a], &pb[m.b]);
            let (t1, t2) = (i128::from(req_a.last_ns()), i128::from(req_b.t0_ns));
            let start = back.partition_point(|q| i128::from(pb[q.b].last_ns()) < t2);
            let want = req_a.seq.wrapping_add(u32::from(req_a.len));
            let Some(q) = back[start..].iter().take(16).find(|q| seq_at_or_after(pb[q.b].ack, want)) else {
                continue;
            };
            let (t3, t4) = (i128::from(pb[q.b].last_ns()), i128::from(pa[q.a].t0_ns));
            let delay = (t4 - t1) - (t3 - t2);
            if delay >= 0 {
                pairs.push((delay as u64, ((t2 - t1) + (t3 - t4)) / 2));
            }
        }
    }
    if pairs.is_empty() {
        bail!(
            "no segment of {} was answered in {} (an acknowledging segment back): the clock offset \
             cannot be estimated",
            a.name,
            b.name
        );
    }
    pairs.sort_unstable_by_key(|p| p.0);
    let best = (pairs.len() / 4).max(1);
    let offset = median(pairs[..best].iter().map(|p| p.1).collect()).unwrap_or(0);
    // One-way flows: their sender is whoever's times come first once on one clock.
    for (&f, ms) in &by_flow {
        if senders.contains_key(&f) {
            continue;
        }
        let gap = median(
            ms.iter().map(|m| i128::from(pb[m.b].t0_ns) - offset - i128::from(pa[m.a].last_ns())).collect(),
        );
        senders.insert(f, if gap.unwrap_or(0) >= 0 { Sender::A } else { Sender::B });
    }
    let directions = ladders(a, b, &by_flow, &senders, offset);
    Ok(StitchReport {
        a: a.name.clone(),
        b: b.name.clone(),
        matched,
        unmatched_a: pa.len() as u64 - matched,
        unmatched_b: pb.len() as u64 - matched,
        offset_ns: offset as i64,
        offset_pairs: pairs.len() as u64,
        offset_best_pairs: best as u64,
        min_round_trip_ns: pairs[0].0,
        offset_bound_ns: pairs[best - 1].0.div_ceil(2),
        directions,
    })
}

/// A direction: the sender, the addresses, the service port and whether the packets go
/// toward it.
type DirKey = (Sender, IpAddr, IpAddr, u16, bool);

/// A stitched path: the sender's steps, then the receiver's.
type PathKey = (Vec<u32>, Vec<u32>);

#[derive(Default)]
struct DirAcc {
    packets: u64,
    one_way: LogHist,
    wire: LogHist,
    /// Per path (the sender's steps, then the receiver's): packets and per-hop times.
    paths: HashMap<PathKey, (u64, Vec<LogHist>)>,
}

/// 4: the ladders, times on A's clock (B's minus `offset`).
fn ladders(
    a: &Side,
    b: &Side,
    by_flow: &BTreeMap<Flow, Vec<Match>>,
    senders: &BTreeMap<Flow, Sender>,
    offset: i128,
) -> Vec<StitchedDirection> {
    let mut dirs: BTreeMap<DirKey, DirAcc> = BTreeMap::new();
    for (&f, ms) in by_flow {
        let sender = senders[&f];
        let port = f.2.min(f.3);
        let acc = dirs.entry((sender, f.0, f.1, port, f.3 == port)).or_default();
        for m in ms {
            let (pa, pb) = (&a.log.packets[m.a], &b.log.packets[m.b]);
            // Both on A's clock.
            let (s, r, s0, r0) = match sender {
                Sender::A => (pa, pb, i128::from(pa.t0_ns), i128::from(pb.t0_ns) - offset),
                Sender::B => (pb, pa, i128::from(pb.t0_ns) - offset, i128::from(pa.t0_ns)),
            };
            let s_last = s0 + i128::from(s.hops.last().map_or(0, |h| h.1));
            let r_last = r0 + i128::from(r.hops.last().map_or(0, |h| h.1));
            let wire = (r0 - s_last).max(0) as u64;
            acc.packets += 1;
            acc.wire.record(wire);
            acc.one_way.record((r_last - s0).max(0) as u64);
            let key = (s.hops.iter().map(|h| h.0).collect(), r.hops.iter().map(|h| h.0).collect());
            let (n, hists) = acc.paths.entry(key).or_insert_with(|| (0, Vec::new()));
            *n += 1;
            if hists.is_empty() {
                *hists = vec![LogHist::default(); s.hops.len() + r.hops.len()];
            }
            let mut prev = 0u64;
            for (i, h) in s.hops.iter().enumerate() {
                hists[i].record(h.1 - prev);
                prev = h.1;
            }
            prev = 0;
            for (i, h) in r.hops.iter().enumerate() {
                hists[s.hops.len() + i].record(if i == 0 { wire } else { h.1 - prev });
                prev = h.1;
            }
        }
    }
    let mut out: Vec<StitchedDirection> = dirs
        .into_iter()
        .map(|((sender, saddr, daddr, port, toward), acc)| {
            let (from, to) = match sender {
                Sender::A => (a, b),
                Sender::B => (b, a),
            };
            let label = if toward {
                format!("{saddr} → {daddr}:{port}")
            } else {
                format!("{saddr}:{port} → {daddr}")
            };
            let Some(((s_steps, r_steps), (n, hists))) = acc.paths.iter().max_by_key(|(k, (n, _))| (*n, *k))
            else {
                unreachable!("a direction has packets")
            };
            let mut hops = Vec::new();
            for (side, steps, base) in [(from, s_steps, 0), (to, r_steps, s_steps.len())] {
                for (i, &step) in steps.iter().enumerate() {
                    let st = &side.log.steps[step as usize];
                    let h = &hists[base + i];
                    hops.push(StitchedHop {
                        host: side.name.clone(),
                        event: st.event.clone(),
                        device: side.names.device(&st.dev, st.netns, st.ifindex),
                        from_prev_p50_ns: h.quantile(0.5),
                        from_prev_p99_ns: h.quantile(0.99),
                        after_wire: base > 0 && i == 0,
                    });
                }
            }
            StitchedDirection {
                label,
                from: from.name.clone(),
                to: to.name.clone(),
                packets: acc.packets,
                ladder_packets: *n,
                one_way_p50_ns: acc.one_way.quantile(0.5),
                one_way_p99_ns: acc.one_way.quantile(0.99),
                wire_p50_ns: acc.wire.quantile(0.5),
                wire_p99_ns: acc.wire.quantile(0.99),
                hops,
            }
        })
        .collect();
    out.sort_by(|x, y| y.packets.cmp(&x.packets).then_with(|| x.label.cmp(&y.label)));
    out
}

/// The report as text tables (the hosts as A and B, named on the first lines).
pub fn render(r: &StitchReport) -> String {
    let host = |name: &str| if name == r.a { "A" } else { "B" };
    let mut s = String::new();
    let _ = writeln!(s, "host A: {}\nhost B: {}", r.a, r.b);
    let _ = writeln!(
        s,
        "{} TCP data segments seen on both hosts ({} seen on A only, {} on B only)",
        r.matched, r.unmatched_a, r.unmatched_b
    );
    let _ = writeln!(
        s,
        "clock offset: B = A {:+.6} s ± {} (median of the {} quickest of {} request/response pairs; \
         quickest round trip {})",
        r.offset_ns as f64 / 1e9,
        ns(r.offset_bound_ns),
        r.offset_best_pairs,
        r.offset_pairs,
        ns(r.min_round_trip_ns)
    );
    for d in &r.directions {
        let _ = writeln!(
            s,
            "\n{} (host {} → {}): {} packets, {} on this path; one way p50 {} p99 {}, wire p50 {} p99 {}",
            d.label,
            host(&d.from),
            host(&d.to),
            d.packets,
            d.ladder_packets,
            ns(d.one_way_p50_ns),
            ns(d.one_way_p99_ns),
            ns(d.wire_p50_ns),
            ns(d.wire_p99_ns)
        );
        let host_w = 4;
        let hop_w =
            d.hops.iter().map(|h| h.event.chars().count() + h.device.chars().count() + 4).max().unwrap_or(3);
        let _ = writeln!(s, "  {:<host_w$}  {:<hop_w$}  {:>10}  {:>10}", "host", "hop", "p50", "p99");
        for h in &d.hops {
            if h.after_wire {
                let _ = writeln!(s, "  {:<host_w$}  {:<hop_w$}", "", "~~ wire ~~");
            }
            let hop = format!("{} on {}", h.event, h.device);
            let _ = writeln!(
                s,
                "  {:<host_w$}  {:<hop_w$}  {:>10}  {:>10}",
                host(&h.host),
                hop,
                ns(h.from_prev_p50_ns),
                ns(h.from_prev_p99_ns)
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet_log::LogStep;

    const WIRE: u64 = 20_000;
    const SERVE: u64 = 30_000;

    fn step(event: &str, dev: &str) -> LogStep {
        LogStep { event: event.into(), dev: dev.into(), netns: 1, ifindex: 2 }
    }

    /// An echo between a client on host A and a server on host B: `n` requests of 40 bytes,
    /// each answered; A's clock reads `true time`, B's `true time + offset`. Each host sees a
    /// packet in two hops 5 µs apart.
    fn echo(n: u32, offset: u64) -> (PacketLog, PacketLog) {
        let c: IpAddr = "10.0.0.1".parse().unwrap();
        let srv: IpAddr = "10.0.0.2".parse().unwrap();
        let steps = vec![step("net:net_dev_queue", "eth0"), step("net:netif_receive_skb", "eth0")];
        let (mut a, mut b) = (
            PacketLog { steps: steps.clone(), ..Default::default() },
            PacketLog { steps, ..Default::default() },
        );
        let seg = |src, dst, sport, dport, seq, ack, t0| LoggedPacket {
            saddr: src,
            daddr: dst,
            sport,
            dport,
            seq,
            ack,
            len: 40,
            t0_ns: t0,
            hops: vec![(0, 0), (1, 5_000)],
        };
        for i in 0..n {
            let t = 1_000_000 + u64::from(i) * 1_000_000;
            let (cseq, sseq) = (100 + i * 40, 9_000 + i * 40);
            // Request: leaves A at t, reaches B at t + 5 µs + WIRE.
            a.push(seg(c, srv, 40_000, 10_000, cseq, sseq, t));
            b.push(seg(c, srv, 40_000, 10_000, cseq, sseq, t + 5_000 + WIRE + offset));
            // Response, SERVE later on B, acknowledging the request.
            let r = t + 5_000 + WIRE + 5_000 + SERVE;
            b.push(seg(srv, c, 10_000, 40_000, sseq, cseq + 40, r + offset));
            a.push(seg(srv, c, 10_000, 40_000, sseq, cseq + 40, r + 5_000 + WIRE));
        }
        (a, b)
    }

    fn sides<'a>(a: &'a PacketLog, b: &'a PacketLog, names: &'a Names) -> (Side<'a>, Side<'a>) {
        (Side { name: "a.json".into(), log: a, names }, Side { name: "b.json".into(), log: b, names })
    }

    #[test]
    fn the_offset_and_the_wire_come_out_of_an_echo() {
        let names = Names::default();
        for offset in [0, 5_000_000_000, 123_456_789_012] {
            let (a, b) = echo(50, offset);
            let (sa, sb) = sides(&a, &b, &names);
            let r = stitch(&sa, &sb).unwrap();
            assert_eq!(r.offset_ns, offset as i64);
            assert_eq!((r.matched, r.unmatched_a, r.unmatched_b), (100, 0, 0));
            assert_eq!((r.min_round_trip_ns, r.offset_bound_ns), (2 * WIRE, WIRE));
            assert_eq!(r.directions.len(), 2);
            let req = r.directions.iter().find(|d| d.label == "10.0.0.1 → 10.0.0.2:10000").unwrap();
            assert_eq!((req.from.as_str(), req.to.as_str(), req.packets), ("a.json", "b.json", 50));
            let resp = r.directions.iter().find(|d| d.label == "10.0.0.2:10000 → 10.0.0.1").unwrap();
            assert_eq!((resp.from.as_str(), resp.to.as_str()), ("b.json", "a.json"));
            for d in [req, resp] {
                assert_eq!(d.hops.len(), 4);
                assert_eq!(d.hops.iter().filter(|h| h.after_wire).count(), 1);
                assert!(d.hops[2].after_wire && d.hops[2].host == d.to);
                // Log-linear buckets: within 3%.
                assert!(d.wire_p50_ns.abs_diff(WIRE) <= WIRE / 30, "{}", d.wire_p50_ns);
                assert!(d.one_way_p50_ns.abs_diff(WIRE + 10_000) <= (WIRE + 10_000) / 30);
            }
            let text = render(&r);
            assert!(text.contains("~~ wire ~~") && text.contains("100 TCP data segments"), "{text}");
            assert!(text.contains("10.0.0.1 → 10.0.0.2:10000 (host A → B): 50 packets"), "{text}");
        }
    }

    #[test]
    fn a_clock_behind_gives_a_negative_offset() {
        // B's clock behind A's: move A's times forward instead.
        let names = Names::default();
        let (mut a, b) = echo(20, 0);
        for p in &mut a.packets {
            p.t0_ns += 7_000_000_000;
        }
        let (sa, sb) = sides(&a, &b, &names);
        let r = stitch(&sa, &sb).unwrap();
        assert_eq!(r.offset_ns, -7_000_000_000);
        // Swapped: the same, from B's side.
        let r = stitch(&sb, &sa).unwrap();
        assert_eq!(r.offset_ns, 7_000_000_000);
        let req = r.directions.iter().find(|d| d.label.starts_with("10.0.0.1 ")).unwrap();
        assert_eq!(req.from, "a.json");
    }

    #[test]
    fn nothing_in_common_or_one_way_traffic_is_one_clear_error() {
        let names = Names::default();
        let (a, _) = echo(5, 0);
        let (_, mut b) = echo(5, 0);
        for p in &mut b.packets {
            p.seq = p.seq.wrapping_add(1_000_000);
        }
        let (sa, sb) = sides(&a, &b, &names);
        let e = stitch(&sa, &sb).unwrap_err().to_string();
        assert!(e.starts_with("no TCP data segment of a.json is in b.json"), "{e}");
        let (mut a, mut b) = echo(5, 0);
        a.packets.retain(|p| p.dport == 10_000);
        b.packets.retain(|p| p.dport == 10_000);
        let (sa, sb) = sides(&a, &b, &names);
        let e = stitch(&sa, &sb).unwrap_err().to_string();
        assert!(e.contains("has segments both ways"), "{e}");
    }

    #[test]
    fn retransmitted_segments_are_left_out_and_queueing_does_not_move_the_offset() {
        let names = Names::default();
        let (mut a, mut b) = echo(40, 1_000_000);
        // A retransmit of the first request on A: its key is seen twice there.
        let again = LoggedPacket { t0_ns: a.packets[0].t0_ns + 200_000, ..a.packets[0].clone() };
        a.push(again);
        // Queueing on the way to B for half the requests (one-way delays only add).
        for (i, p) in b.packets.iter_mut().enumerate() {
            if i % 4 == 0 && i > 0 {
                p.t0_ns += 300_000;
            }
        }
        let (sa, sb) = sides(&a, &b, &names);
        let r = stitch(&sa, &sb).unwrap();
        assert_eq!((r.matched, r.unmatched_a), (79, 2));
        assert_eq!(r.offset_ns, 1_000_000);
    }
}
