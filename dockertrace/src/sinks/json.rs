//! `--json FILE`: one JSON object per event (schema: docs/json-schema.md).
//!
//! Written by hand into one reused line buffer: this sink runs inside the ring buffer's reader,
//! at up to a million events a second, where a generic serializer's per-field overhead was the
//! reader's largest cost. Strings are escaped as JSON requires; each stack's array is rendered
//! once per stack id.
use std::{collections::HashMap, io::Write, sync::Arc};

use foldhash::HashMap as FastMap;

use crate::{
    decode::TracedEvent,
    names::Names,
    packet::{self, Family, Headers},
    pipeline::{Progress, Sink},
    summary::TraceReport,
};

/// Writes events as JSON lines.
pub struct JsonSink<W: Write> {
    out: W,
    /// Each stack's JSON array, rendered once per stack id (stacks repeat a lot).
    stacks: HashMap<i32, Box<[u8]>>,
    /// The line being written.
    line: Vec<u8>,
    /// What namespaces and devices are called; empty: no name fields at all.
    names: Arc<Names>,
    /// Per device, its rendered name fields (`,"netns_name":"server","peer":"…"`, or nothing).
    name_fields: FastMap<(u32, u32), Box<[u8]>>,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> Self {
        JsonSink {
            out,
            stacks: HashMap::new(),
            line: Vec::with_capacity(512),
            names: Arc::default(),
            name_fields: FastMap::default(),
        }
    }

    /// Adds `netns_name` (and `peer` for veths) to the events of the devices `names` knows.
    pub fn with_names(mut self, names: Arc<Names>) -> Self {
        self.names = names;
        self.name_fields.clear();
        self
    }
}

/// The name fields of device (`netns`, `ifindex`), rendered: empty when nothing is known.
fn name_fields(names: &Names, netns: u32, ifindex: u32) -> Box<[u8]> {
    let mut out = Vec::new();
    if let Some(n) = names.netns_name(netns) {
        out.extend_from_slice(b",\"netns_name\":");
        push_str(&mut out, n.as_bytes());
    }
    if let Some(p) = names.peer(netns, ifindex) {
        out.extend_from_slice(b",\"peer\":");
        push_str(&mut out, p.as_bytes());
    }
    out.into_boxed_slice()
}

/// Appends `s` as a JSON string: printable ASCII is copied, anything else goes through
/// serde_json's escaping (control characters as `\u001b`, invalid UTF-8 replaced).
fn push_str(line: &mut Vec<u8>, s: &[u8]) {
    if s.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        line.push(b'"');
        line.extend_from_slice(s);
        line.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *line, &String::from_utf8_lossy(s));
    }
}

/// Appends `,"key":` (without the comma for the first key).
fn push_key(line: &mut Vec<u8>, key: &str) {
    if line.len() > 1 {
        line.push(b',');
    }
    line.push(b'"');
    line.extend_from_slice(key.as_bytes());
    line.extend_from_slice(b"\":");
}

fn push_int(line: &mut Vec<u8>, key: &str, v: impl itoa::Integer) {
    push_key(line, key);
    line.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// The packet's header fields (docs/json-schema.md).
fn push_headers(l: &mut Vec<u8>, h: &Headers) {
    push_key(l, "proto");
    let proto = h.proto_name();
    push_str(l, proto.as_bytes());
    // Writing into a Vec cannot fail.
    push_key(l, "saddr");
    let _ = write!(l, "\"{}\"", h.saddr);
    push_key(l, "daddr");
    let _ = write!(l, "\"{}\"", h.daddr);
    match h.family {
        Family::Arp => push_int(l, "arp_op", h.op),
        _ => {
            if h.proto == packet::TCP || h.proto == packet::UDP {
                push_int(l, "sport", h.sport);
                push_int(l, "dport", h.dport);
            }
            if h.is_tcp() {
                push_key(l, "tcp_flags");
                push_str(l, h.tcp_flags_in(&mut [0; 8]).as_bytes());
                push_int(l, "seq", h.seq);
                push_int(l, "ack", h.ack);
            }
            if h.proto == packet::ICMP || h.proto == packet::ICMPV6 {
                push_int(l, "icmp_type", h.op);
            }
            if h.family == Family::Ipv4 {
                push_int(l, "ip_id", h.ip_id);
            }
            push_int(l, "payload_len", h.payload_len);
        }
    }
    if let Some(t) = &h.tunnel {
        push_key(l, "tunnel");
        push_str(l, b"vxlan");
        push_int(l, "vni", t.vni);
        push_key(l, "outer_saddr");
        let _ = write!(l, "\"{}\"", t.saddr);
        push_key(l, "outer_daddr");
        let _ = write!(l, "\"{}\"", t.daddr);
        push_int(l, "outer_sport", t.sport);
        push_int(l, "outer_dport", 4789u16);
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn event(&mut self, ev: &TracedEvent) -> anyhow::Result<()> {
        // One lookup per event; a stack's array is rendered the first time its id is seen.
        let stack: &[u8] = match &ev.stack {
            None => b"[]",
            Some(st) => self.stacks.entry(ev.stack_id).or_insert_with(|| {
                let names: Vec<&str> = st.functions().collect();
                // A list of strings always serializes.
                serde_json::to_vec(&names).unwrap_or_else(|_| b"[]".to_vec()).into_boxed_slice()
            }),
        };
        let dev = ev.dev.as_ref().map(|d| &d.name).or(ev.name_only.as_ref());
        let l = &mut self.line;
        l.clear();
        l.push(b'{');
        push_key(l, "event");
        push_str(l, ev.name.as_bytes());
        push_int(l, "ts_ns", ev.ts_ns);
        push_int(l, "cpu", ev.cpu);
        push_int(l, "pid", ev.pid);
        push_int(l, "tgid", ev.tgid);
        push_key(l, "comm");
        push_str(l, ev.comm.as_bytes());
        push_key(l, "dev");
        push_str(l, dev.map_or(&[][..], |d| d.as_bytes()));
        push_int(l, "ifindex", ev.dev.as_ref().map_or(0, |d| d.ifindex));
        push_int(l, "netns", ev.dev.as_ref().map_or(0, |d| d.netns));
        if let (Some(d), false) = (&ev.dev, self.names.is_empty()) {
            let names = &self.names;
            let fields = self
                .name_fields
                .entry((d.netns, d.ifindex))
                .or_insert_with(|| name_fields(names, d.netns, d.ifindex));
            l.extend_from_slice(fields);
        }
        push_int(l, "len", ev.len);
        push_key(l, "skbaddr");
        // Writing into a Vec cannot fail.
        let _ = write!(l, "\"0x{:x}\"", ev.skb.unwrap_or(0));
        push_int(l, "protocol", ev.protocol);
        push_int(l, "stack_id", ev.stack_id);
        push_key(l, "stack");
        l.extend_from_slice(stack);
        if let Some(h) = &ev.hop {
            push_int(l, "packet", h.packet);
            push_int(l, "hop", h.hop);
            push_int(l, "delta_ns", h.delta_ns);
            if h.reused || h.evicted || h.end {
                push_key(l, "journey");
                l.extend_from_slice(if h.end {
                    b"\"end\""
                } else if h.evicted {
                    b"\"evicted_another\""
                } else {
                    b"\"address_reused\""
                });
            }
        }
        if let Some(r) = &ev.ret {
            push_int(l, "packet", r.packet);
            push_int(l, "returns_hop", r.hop);
            push_int(l, "duration_ns", r.duration_ns);
        }
        if let Some(p) = ev.parent {
            push_int(l, "parent", p);
        }
        if let Some(h) = &ev.headers {
            push_headers(l, h);
        }
        if let Some(d) = &ev.drop {
            push_key(l, "drop_reason");
            push_str(l, d.site.reason.as_bytes());
            if let Some(v) = d.reason_value {
                push_int(l, "drop_reason_value", v);
            }
            push_key(l, "drop_location");
            push_str(l, d.site.location.as_bytes());
            push_key(l, "drop_address");
            let _ = write!(l, "\"0x{:x}\"", d.address);
            if let (None, Some(h)) = (&ev.dev, &ev.last_hop) {
                push_key(l, "drop_after");
                push_str(l, self.names.device(&h.name.to_string(), h.netns, h.ifindex).as_bytes());
            }
        }
        l.extend_from_slice(b"}\n");
        self.out.write_all(l)?;
        Ok(())
    }

    fn tick(&mut self, _p: &Progress) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }

    fn finish(&mut self, _r: &TraceReport) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        decode::KernelStr,
        stacks::{Frame, Stack},
    };
    use std::sync::Arc;

    #[test]
    fn writes_the_documented_fields() {
        let ev = TracedEvent {
            cpu: 1,
            ts_ns: 42,
            kind: 9,
            pid: 3,
            tgid: 3,
            comm: KernelStr::from("curl"),
            len: 100,
            skb: Some(0xffff0000),
            protocol: 0x0800,
            stack_id: 5,
            stack: Some(Arc::new(Stack {
                frames: ["dev_hard_start_xmit", "__dev_queue_xmit"]
                    .iter()
                    .map(|f| Frame { addr: 1, function: Arc::from(*f), offset: 4, module: None })
                    .collect(),
            })),
            ..TracedEvent::named("net:net_dev_xmit").on(4026531840, 2, "eth0")
        };
        let mut sink = JsonSink::new(Vec::new());
        sink.event(&ev).unwrap();
        let text = String::from_utf8(sink.out).unwrap();
        assert!(text.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        for key in ["event", "dev", "ifindex", "netns", "len", "skbaddr", "ts_ns", "cpu", "comm", "stack"] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["event"], "net:net_dev_xmit");
        assert_eq!(v["dev"], "eth0");
        assert_eq!(v["netns"], 4026531840u64);
        assert_eq!(v["skbaddr"], "0xffff0000");
        assert_eq!(v["comm"], "curl");
        assert_eq!(v["stack"][0], "dev_hard_start_xmit");
    }

    #[test]
    fn packet_fields_follow_the_stack() {
        use crate::packet::Hop;
        let ev = TracedEvent {
            hop: Some(Hop {
                packet: (2 << 48) | 7,
                hop: 3,
                delta_ns: 3200,
                reused: false,
                evicted: false,
                end: true,
            }),
            headers: Some(packet::sample_segment(100, 200)),
            ..TracedEvent::named("net:netif_rx")
        };
        let mut sink = JsonSink::new(Vec::new());
        sink.event(&ev).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&sink.out).unwrap();
        assert_eq!(v["packet"], (2u64 << 48) | 7);
        assert_eq!((v["hop"].as_u64(), v["delta_ns"].as_u64()), (Some(3), Some(3200)));
        assert_eq!(v["journey"], "end");
        assert_eq!((v["saddr"].as_str(), v["daddr"].as_str()), (Some("10.213.0.3"), Some("10.213.0.2")));
        assert_eq!((v["sport"].as_u64(), v["dport"].as_u64()), (Some(41234), Some(10000)));
        assert_eq!((v["proto"].as_str(), v["tcp_flags"].as_str()), (Some("TCP"), Some("P.")));
        assert_eq!(
            (v["seq"].as_u64(), v["ack"].as_u64(), v["payload_len"].as_u64()),
            (Some(100), Some(200), Some(42))
        );
        let plain = JsonSink::new(Vec::new());
        let mut plain = plain;
        plain.event(&TracedEvent::named("net:x")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&plain.out).unwrap();
        assert!(v.get("packet").is_none() && v.get("saddr").is_none(), "no journey, no packet fields");
    }

    #[test]
    fn names_are_added_only_when_known() {
        let mut names = Names::default();
        names.add_netns(1, "host");
        names.add_netns(7, "server\"x");
        names.add_peer(1, 5, "server\"x");
        let mut sink = JsonSink::new(Vec::new()).with_names(Arc::new(names));
        for ev in [
            TracedEvent::named("net:a").on(7, 2, "eth0"),
            TracedEvent::named("net:b").on(1, 5, "veth1a2b"),
            TracedEvent::named("net:c").on(9, 2, "eth0"),
            TracedEvent::named("net:d"),
        ] {
            sink.event(&ev).unwrap();
        }
        let text = String::from_utf8(sink.out).unwrap();
        let v: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!((v[0]["netns"].as_u64(), v[0]["netns_name"].as_str()), (Some(7), Some("server\"x")));
        assert!(v[0].get("peer").is_none());
        assert_eq!((v[1]["netns_name"].as_str(), v[1]["peer"].as_str()), (Some("host"), Some("server\"x")));
        for e in &v[2..] {
            assert!(e.get("netns_name").is_none() && e.get("peer").is_none(), "{e}");
        }
        assert!(text.lines().next().unwrap().contains(r#""netns":7,"netns_name":"#), "{text}");
    }

    #[test]
    fn kernel_strings_stay_escaped_in_json() {
        let ev = TracedEvent { comm: KernelStr::from("\x1b[31mEVIL"), ..TracedEvent::named("net:netif_rx") };
        let mut sink = JsonSink::new(Vec::new());
        sink.event(&ev).unwrap();
        let text = String::from_utf8(sink.out).unwrap();
        assert!(!text.contains('\x1b') && text.contains(r"\u001b[31mEVIL"), "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!((v["dev"].as_str(), v["ifindex"].as_u64()), (Some(""), Some(0)));
    }

    #[test]
    fn strings_that_need_escaping_and_field_order() {
        let ev = TracedEvent {
            comm: KernelStr::from("a\"b\\c"),
            skb: None,
            stack_id: -1000,
            ..TracedEvent::named("net:x").on(1, 2, "é\u{7f}")
        };
        let mut sink = JsonSink::new(Vec::new());
        sink.event(&ev).unwrap();
        let text = String::from_utf8(sink.out).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["comm"], "a\"b\\c");
        assert_eq!(v["dev"], "é\u{7f}");
        assert_eq!((v["skbaddr"].as_str(), v["stack_id"].as_i64()), (Some("0x0"), Some(-1000)));
        assert!(text.starts_with(r#"{"event":"net:x","ts_ns":0,"#), "{text}");
        assert!(text.ends_with("\"stack\":[]}\n"), "{text}");
    }
}
