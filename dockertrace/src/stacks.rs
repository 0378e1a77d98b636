//! Kernel stacks: fetched once per stack id from the `STACKS` map (or `STACKS_SPILL`),
//! symbolized from kallsyms, cached (stack ids are stable: the maps are used without
//! BPF_F_REUSE_STACKID).
use std::{collections::HashMap, sync::Arc};

use foldhash::HashMap as FastMap;

use aya::maps::{MapData, StackTraceMap};
use dockertrace_common::record::STACK_SPILL_BASE;

use crate::kernel::kallsyms::Kallsyms;

/// One symbolized frame.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Frame {
    pub addr: u64,
    /// Function name without offset; `0x...` when the address is not in kallsyms.
    pub function: Arc<str>,
    pub offset: u64,
    pub module: Option<Arc<str>>,
}

/// A symbolized kernel stack, innermost frame first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stack {
    pub frames: Vec<Frame>,
}

impl Stack {
    /// Function names, innermost first.
    pub fn functions(&self) -> impl Iterator<Item = &str> {
        self.frames.iter().map(|f| &*f.function)
    }

    /// The innermost frame that belongs to a device datapath (veth, bridge, macvlan, ...).
    pub fn innermost_datapath(&self) -> Option<&str> {
        self.functions().find(|f| crate::datapath::component(f).is_some_and(|c| c.is_device()))
    }

    /// Symbolizes raw instruction pointers, without the tracing machinery's own innermost
    /// frames (see [`is_tracing_frame`]).
    pub fn symbolize(ips: impl IntoIterator<Item = u64>, syms: &Kallsyms, names: &mut Interner) -> Stack {
        let frames = ips
            .into_iter()
            .map(|addr| match syms.resolve(addr) {
                Some(s) => Frame {
                    addr,
                    function: names.get(s.name),
                    offset: s.offset,
                    module: s.module.map(|m| names.get(m)),
                },
                None => Frame { addr, function: Arc::from(format!("0x{addr:x}")), offset: 0, module: None },
            })
            .skip_while(|f| is_tracing_frame(&f.function))
            .collect();
        Stack { frames }
    }
}

/// Frames of the tracing machinery itself, which a stack walked from inside a raw tracepoint
/// (`tp_btf`, `raw_tp`) or fentry program starts with: the program and its subprograms
/// (`bpf_prog_<tag>_<name>`), the kernel's `bpf_trace_run<N>`, `__bpf_trace_<tp>`,
/// `__traceiter_<tp>` and BPF trampolines. A stack walked on the perf path starts at the traced
/// function instead, so without them every attach type names the same functions.
pub fn is_tracing_frame(function: &str) -> bool {
    const PREFIXES: [&str; 5] =
        ["bpf_prog_", "bpf_trace_run", "__bpf_trace_", "__traceiter_", "bpf_trampoline_"];
    PREFIXES.iter().any(|p| function.starts_with(p))
}

/// Shares one allocation per distinct symbol name across stacks.
#[derive(Debug, Default)]
pub struct Interner(HashMap<Box<str>, Arc<str>>);

impl Interner {
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(Box::from(s), a.clone());
        a
    }
}

/// The kernel's stack maps: `STACKS`, and `STACKS_SPILL` for stacks whose bucket in `STACKS`
/// was taken (ids from [`STACK_SPILL_BASE`] up).
pub struct StackMaps {
    pub main: StackTraceMap<MapData>,
    pub spill: StackTraceMap<MapData>,
}

impl StackMaps {
    fn get(&self, stack_id: i32) -> Option<aya::maps::stack_trace::StackTrace> {
        let (map, id) = match stack_id.checked_sub(STACK_SPILL_BASE) {
            Some(id) if id >= 0 => (&self.spill, id),
            _ => (&self.main, stack_id),
        };
        map.get(&u32::try_from(id).ok()?, 0).ok()
    }
}

pub struct StackCache {
    map: Option<StackMaps>,
    syms: Arc<Kallsyms>,
    names: Interner,
    cache: FastMap<u32, Option<Arc<Stack>>>,
    /// Stack ids that could not be read from the map.
    pub misses: u64,
}

impl StackCache {
    pub fn new(map: Option<StackMaps>, syms: Arc<Kallsyms>) -> Self {
        StackCache { map, syms, names: Interner::default(), cache: FastMap::default(), misses: 0 }
    }

    /// The stack for an event's `stack_id` (None for negative ids and unreadable ones).
    pub fn get(&mut self, stack_id: i32) -> Option<Arc<Stack>> {
        let id = u32::try_from(stack_id).ok()?;
        if let Some(s) = self.cache.get(&id) {
            return s.clone();
        }
        let stack = self.map.as_ref().and_then(|m| m.get(stack_id)).map(|st| {
            Arc::new(Stack::symbolize(st.frames().iter().map(|f| f.ip), &self.syms, &mut self.names))
        });
        if stack.is_none() {
            self.misses += 1;
        }
        self.cache.insert(id, stack.clone());
        stack
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracing_frames_are_only_the_machinery() {
        for f in [
            "bpf_prog_62b22a01c9408433_dt_btf_15",
            "bpf_trace_run2",
            "__traceiter_netif_rx",
            "__bpf_trace_net_dev_xmit",
            "bpf_trampoline_6442",
        ] {
            assert!(is_tracing_frame(f), "{f}");
        }
        for f in ["__dev_queue_xmit", "bpf_skb_output", "netif_rx", "trace_netif_rx"] {
            assert!(!is_tracing_frame(f), "{f}");
        }
    }
}

/// When the kernel walks an event's stack (`--stacks`). Every event is counted whatever the
/// mode; with `Adaptive` and `Sample`, the events not walked are shared out over the walked
/// stacks of their kind and device (and, adaptive, path class), so function counts, paths and
/// flame graphs are estimates of the exact totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StackMode {
    /// No stacks: no function names.
    None,
    /// A stack for every event (~4 µs per event here: the kernel's unwinder).
    Every,
    /// Per (event, device, path class): the first [`ADAPT_FIRST`] events of each
    /// [`ADAPT_WINDOW`], then 1 in [`ADAPT_TAIL`] at random; a key seen for the first time
    /// always walks, so rare paths (ARP, SYN/FIN, ICMP) keep their stacks.
    #[default]
    Adaptive,
    /// A stack for 1 in N events, at random.
    Sample(u32),
}

/// Adaptive stacks: events walked per key at the start of each window.
pub const ADAPT_FIRST: u32 = 4;
/// Adaptive stacks: the length of a key's window.
pub const ADAPT_WINDOW: std::time::Duration = std::time::Duration::from_millis(100);
/// Adaptive stacks: 1 in this many of a key's later events in its window walks.
pub const ADAPT_TAIL: u32 = 256;

impl StackMode {
    /// Whether stack-derived counts are estimates (not every event walked).
    pub fn estimates(self) -> bool {
        matches!(self, StackMode::Adaptive) || matches!(self, StackMode::Sample(n) if n > 1)
    }

    /// `sample:1` is `every`.
    pub fn normalized(self) -> StackMode {
        match self {
            StackMode::Sample(n) if n <= 1 => StackMode::Every,
            m => m,
        }
    }
}

impl std::fmt::Display for StackMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StackMode::None => f.write_str("none"),
            StackMode::Every => f.write_str("every"),
            StackMode::Adaptive => f.write_str("adaptive"),
            StackMode::Sample(n) => write!(f, "sample:{n}"),
        }
    }
}

impl std::str::FromStr for StackMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}`: --stacks takes every, adaptive, none or sample:N (N from 1 to 1000000)");
        Ok(match s {
            "none" => StackMode::None,
            "every" => StackMode::Every,
            "adaptive" => StackMode::Adaptive,
            _ => {
                let n: u32 = s.strip_prefix("sample:").ok_or_else(bad)?.parse().map_err(|_| bad())?;
                if !(1..=1_000_000).contains(&n) {
                    return Err(bad());
                }
                StackMode::Sample(n).normalized()
            }
        })
    }
}

impl serde::Serialize for StackMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for StackMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod stack_mode_tests {
    use super::*;

    #[test]
    fn stack_modes_parse_print_and_round_trip() {
        for m in [StackMode::None, StackMode::Every, StackMode::Adaptive, StackMode::Sample(16)] {
            assert_eq!(m.to_string().parse::<StackMode>(), Ok(m));
            assert_eq!(serde_json::from_str::<StackMode>(&serde_json::to_string(&m).unwrap()).unwrap(), m);
        }
        assert_eq!("sample:1".parse::<StackMode>(), Ok(StackMode::Every));
        assert!("sample:0".parse::<StackMode>().is_err());
        assert!("all".parse::<StackMode>().unwrap_err().contains("every, adaptive, none or sample:N"));
        assert!(StackMode::Adaptive.estimates() && StackMode::Sample(2).estimates());
        assert!(!StackMode::Every.estimates() && !StackMode::None.estimates());
        assert_eq!(StackMode::default(), StackMode::Adaptive);
    }
}
