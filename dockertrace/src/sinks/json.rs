//! `--json FILE`: one JSON object per event (schema: docs/json-schema.md).
//!
//! Written by hand into one reused line buffer: this sink runs inside the ring buffer's reader,
//! at up to a million events a second, where a generic serializer's per-field overhead was the
//! reader's largest cost. Strings are escaped as JSON requires; each stack's array is rendered
//! once per stack id.
use std::{collections::HashMap, io::Write};

use crate::{
    decode::TracedEvent,
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
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> Self {
        JsonSink { out, stacks: HashMap::new(), line: Vec::with_capacity(512) }
    }
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
        push_int(l, "len", ev.len);
        push_key(l, "skbaddr");
        // Writing into a Vec cannot fail.
        let _ = write!(l, "\"0x{:x}\"", ev.skb.unwrap_or(0));
        push_int(l, "protocol", ev.protocol);
        push_int(l, "stack_id", ev.stack_id);
        push_key(l, "stack");
        l.extend_from_slice(stack);
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
