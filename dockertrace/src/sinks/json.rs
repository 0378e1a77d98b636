//! `--json FILE`: one JSON object per event (schema: docs/json-schema.md).
use std::{collections::HashMap, io::Write};

use serde::Serialize;
use serde_json::value::RawValue;

use crate::{
    decode::c_str,
    pipeline::{Progress, Sink, TracedEvent},
    report::TraceReport,
};

/// One JSON line. Field names are a public interface: see docs/json-schema.md.
#[derive(Serialize)]
struct Line<'a> {
    event: &'a str,
    ts_ns: u64,
    cpu: u32,
    pid: u32,
    tgid: u32,
    comm: &'a str,
    dev: &'a str,
    ifindex: u32,
    netns: u32,
    len: u32,
    skbaddr: String,
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
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> Self {
        let empty = RawValue::from_string("[]".into()).expect("valid JSON");
        JsonSink { out, stacks: HashMap::new(), empty }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn event(&mut self, ev: &TracedEvent) -> anyhow::Result<()> {
        let r = &ev.raw;
        let stack: &RawValue = match &ev.stack {
            None => &self.empty,
            Some(st) => {
                if let std::collections::hash_map::Entry::Vacant(slot) = self.stacks.entry(r.stack_id) {
                    let names: Vec<&str> = st.functions().collect();
                    slot.insert(RawValue::from_string(serde_json::to_string(&names)?)?);
                }
                &self.stacks[&r.stack_id]
            }
        };
        let line = Line {
            event: &ev.name,
            ts_ns: r.ts_ns,
            cpu: r.cpu,
            pid: r.pid,
            tgid: r.tgid,
            comm: c_str(&r.comm),
            dev: c_str(&r.dev),
            ifindex: r.ifindex,
            netns: r.netns,
            len: r.len,
            skbaddr: format!("0x{:x}", r.skbaddr),
            protocol: r.protocol,
            stack_id: r.stack_id,
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
    use dockertrace_common::{Event, NAME_LEN, RECORD_EVENT};
    use std::sync::Arc;

    #[test]
    fn writes_the_documented_fields() {
        let mut dev = [0u8; NAME_LEN];
        dev[..4].copy_from_slice(b"eth0");
        let ev = TracedEvent {
            raw: Event {
                record: RECORD_EVENT,
                flags: 0,
                cpu: 1,
                ts_ns: 42,
                kind: 9,
                pid: 3,
                tgid: 3,
                len: 100,
                skbaddr: 0xffff0000,
                ifindex: 2,
                netns: 4026531840,
                stack_id: 5,
                protocol: 0x0800,
                _pad: 0,
                comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
                dev,
            },
            name: Arc::from("net:net_dev_xmit"),
            stack: Some(Arc::new(Stack {
                frames: ["dev_hard_start_xmit", "__dev_queue_xmit"]
                    .iter()
                    .map(|f| Frame { addr: 1, function: Arc::from(*f), offset: 4, module: None })
                    .collect(),
            })),
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
}
