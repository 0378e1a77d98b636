//! `--json FILE`: one JSON object per event (schema: docs/json-schema.md).
use std::{collections::HashMap, io::Write};

use serde::Serialize;
use serde_json::value::RawValue;

use crate::{
    decode::{KernelStr, TracedEvent},
    pipeline::{Progress, Sink},
    summary::TraceReport,
};

/// One JSON line. Field names are a public interface: see docs/json-schema.md.
#[derive(Serialize)]
struct Line<'a> {
    event: &'a str,
    ts_ns: u64,
    cpu: u32,
    pid: u32,
    tgid: u32,
    comm: &'a KernelStr,
    dev: &'a KernelStr,
    ifindex: u32,
    netns: u32,
    len: u32,
    skbaddr: &'a str,
    protocol: u16,
    stack_id: i32,
    stack: &'a RawValue,
}

/// Writes events as JSON lines.
pub struct JsonSink<W: Write> {
    out: W,
    /// Each stack's JSON array, rendered once per stack id (stacks repeat a lot).
    stacks: HashMap<i32, Box<RawValue>>,
    empty: Box<RawValue>,
    no_name: KernelStr,
    /// Reused for the hex skb address: no allocation per event.
    hex: String,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> Self {
        let empty = RawValue::from_string("[]".into()).expect("valid JSON");
        JsonSink {
            out,
            stacks: HashMap::new(),
            empty,
            no_name: KernelStr::from(""),
            hex: String::with_capacity(20),
        }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn event(&mut self, ev: &TracedEvent) -> anyhow::Result<()> {
        let stack: &RawValue = match &ev.stack {
            None => &self.empty,
            Some(st) => {
                if let std::collections::hash_map::Entry::Vacant(slot) = self.stacks.entry(ev.stack_id) {
                    let names: Vec<&str> = st.functions().collect();
                    slot.insert(RawValue::from_string(serde_json::to_string(&names)?)?);
                }
                &self.stacks[&ev.stack_id]
            }
        };
        let line = Line {
            event: &ev.name,
            ts_ns: ev.ts_ns,
            cpu: ev.cpu,
            pid: ev.pid,
            tgid: ev.tgid,
            comm: &ev.comm,
            dev: ev.dev.as_ref().map(|d| &d.name).or(ev.name_only.as_ref()).unwrap_or(&self.no_name),
            ifindex: ev.dev.as_ref().map_or(0, |d| d.ifindex),
            netns: ev.dev.as_ref().map_or(0, |d| d.netns),
            len: ev.len,
            skbaddr: {
                use std::fmt::Write as _;
                self.hex.clear();
                let _ = write!(self.hex, "0x{:x}", ev.skb.unwrap_or(0));
                &self.hex
            },
            protocol: ev.protocol,
            stack_id: ev.stack_id,
            stack,
        };
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")?;
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
    use crate::stacks::{Frame, Stack};
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
    fn kernel_strings_stay_escaped_in_json() {
        let ev = TracedEvent { comm: KernelStr::from("\x1b[31mEVIL"), ..TracedEvent::named("net:netif_rx") };
        let mut sink = JsonSink::new(Vec::new());
        sink.event(&ev).unwrap();
        let text = String::from_utf8(sink.out).unwrap();
        assert!(!text.contains('\x1b') && text.contains(r"\u001b[31mEVIL"), "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!((v["dev"].as_str(), v["ifindex"].as_u64()), (Some(""), Some(0)));
    }
}
