//! Drops: `skb:kfree_skb` events, where the kernel freed a packet it did not deliver.
//!
//! The kernel says why (`enum skb_drop_reason`, kernels 5.17+) and where (`location`, the
//! address of the freeing code). Reason numbers are named from the running kernel's BTF enum
//! ([`DropReasons`]) — never from a table of our own: the enum's order changes between
//! kernels — without the `SKB_DROP_REASON_` prefix, as the kernel's own tracepoint print
//! shows them. The location is symbolized from kallsyms as `func+0xoff`.
//!
//! Which drops are the workload's is decided in the kernel: a drop goes out when its skb is a
//! journey being followed (its device is often unknown by then), or when its device passes the
//! run's filter. See docs/drops.md.
use std::{collections::HashMap, sync::Arc};

use dockertrace_common::record::{Event, EVENT_DROP, EVENT_HAS_REASON};
use serde::{Deserialize, Serialize};

use crate::kernel::{btf::KernelBtf, kallsyms::Kallsyms};

/// What a drop shows when the kernel's tracepoint has no `reason` field (before 5.17).
pub const NOT_REPORTED: &str = "reason not reported by this kernel";

/// The tracepoint that reports drops.
pub const DROP_EVENT: &str = "skb:kfree_skb";

/// The BTF enum whose enumerators name the drop reasons.
const REASON_ENUM: &str = "skb_drop_reason";

/// Names of the running kernel's drop reasons (value → name without prefix).
#[derive(Debug, Clone, Default)]
pub struct DropReasons {
    names: HashMap<u32, Arc<str>>,
}

impl DropReasons {
    /// The reasons of `enum skb_drop_reason` in `btf` (empty when the kernel has none).
    pub fn from_btf(btf: &KernelBtf) -> DropReasons {
        Self::from_values(btf.enum_values(REASON_ENUM).unwrap_or_default())
    }

    /// The table of (value, enumerator) pairs as BTF lists them.
    pub fn from_values(values: impl IntoIterator<Item = (i64, String)>) -> DropReasons {
        let names = values
            .into_iter()
            .filter_map(|(v, n)| Some((u32::try_from(v).ok()?, Arc::from(short_name(&n)))))
            .collect();
        DropReasons { names }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The name of reason `value` (`NO_SOCKET`), or `reason <n>` when the enum does not list
    /// it (a subsystem's reason, whose high bits name another enum).
    pub fn name(&self, value: u32) -> Arc<str> {
        self.names.get(&value).cloned().unwrap_or_else(|| Arc::from(format!("reason {value:#x}")))
    }

    /// Every reason name of this kernel (tests, docs).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.values().map(|n| &**n)
    }

    /// Value of the reason called `name` (without prefix).
    pub fn value_of(&self, name: &str) -> Option<u32> {
        self.names.iter().find(|(_, n)| &***n == name).map(|(v, _)| *v)
    }
}

/// An enumerator without its prefix: `SKB_DROP_REASON_NO_SOCKET` → `NO_SOCKET`,
/// `SKB_CONSUMED` → `CONSUMED` (as the tracepoint's `__print_symbolic` spells them).
pub fn short_name(enumerator: &str) -> &str {
    enumerator
        .strip_prefix("SKB_DROP_REASON_")
        .or_else(|| enumerator.strip_prefix("SKB_"))
        .unwrap_or(enumerator)
}

/// What one drop says: why and where.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DropSite {
    /// The reason's name (`NETFILTER_DROP`), or [`NOT_REPORTED`].
    pub reason: String,
    /// The freeing function (`nf_hook_slow`), `0x…` when kallsyms does not know the address.
    pub function: String,
    /// `function+0xoff`.
    pub location: String,
}

impl DropSite {
    /// Whether the kernel gave a reason.
    pub fn has_reason(&self) -> bool {
        self.reason != NOT_REPORTED
    }
}

/// A decoded drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drop {
    /// The kernel's reason value (None: not reported by this kernel).
    pub reason_value: Option<u32>,
    /// The freeing code's address.
    pub address: u64,
    pub site: Arc<DropSite>,
}

/// Names the reasons and symbolizes the locations of drops, caching one [`DropSite`] per
/// (reason, address).
#[derive(Debug, Default)]
pub struct DropDecoder {
    reasons: Arc<DropReasons>,
    syms: Option<Arc<Kallsyms>>,
    cache: HashMap<(Option<u32>, u64), Arc<DropSite>>,
}

impl DropDecoder {
    pub fn new(reasons: Arc<DropReasons>, syms: Option<Arc<Kallsyms>>) -> DropDecoder {
        DropDecoder { reasons, syms, cache: HashMap::new() }
    }

    /// The drop an event reports (None: not a drop).
    pub fn decode(&mut self, raw: &Event) -> Option<Drop> {
        if raw.flags & EVENT_DROP == 0 {
            return None;
        }
        let reason_value = (raw.flags & EVENT_HAS_REASON != 0).then_some(raw.drop_reason);
        Some(self.drop(reason_value, raw.drop_location))
    }

    /// The drop of (reason, address).
    pub fn drop(&mut self, reason_value: Option<u32>, address: u64) -> Drop {
        let site = match self.cache.get(&(reason_value, address)) {
            Some(s) => s.clone(),
            None => {
                let reason = match reason_value {
                    Some(v) => self.reasons.name(v).to_string(),
                    None => NOT_REPORTED.to_owned(),
                };
                let (function, location) = match self.syms.as_ref().and_then(|s| s.resolve(address)) {
                    Some(sym) if address != 0 => {
                        (sym.name.to_owned(), format!("{}+{:#x}", sym.name, sym.offset))
                    }
                    _ => (format!("{address:#x}"), format!("{address:#x}")),
                };
                let site = Arc::new(DropSite { reason, function, location });
                if self.cache.len() < 4096 {
                    self.cache.insert((reason_value, address), site.clone());
                }
                site
            }
        };
        Drop { reason_value, address, site }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockertrace_common::record::{RecordHeader, RECORD_EVENT};

    fn raw(flags: u8, reason: u32, location: u64) -> Event {
        Event {
            header: RecordHeader::of::<Event>(RECORD_EVENT),
            cpu: 0,
            ts_ns: 0,
            kind: 1,
            pid: 0,
            tgid: 0,
            len: 0,
            skbaddr: 0,
            ifindex: 0,
            netns: 0,
            stack_id: 0,
            protocol: 0,
            flags,
            class: 0,
            comm: [0; 16],
            dev: [0; 16],
            packet: Default::default(),
            drop_location: location,
            drop_reason: reason,
            _pad: 0,
        }
    }

    fn table() -> Arc<DropReasons> {
        Arc::new(DropReasons::from_values([
            (0, "SKB_NOT_DROPPED_YET".to_owned()),
            (2, "SKB_DROP_REASON_NOT_SPECIFIED".to_owned()),
            (3, "SKB_DROP_REASON_NO_SOCKET".to_owned()),
        ]))
    }

    #[test]
    fn names_strip_the_kernel_prefix() {
        let t = table();
        assert_eq!(&*t.name(3), "NO_SOCKET");
        assert_eq!(&*t.name(0), "NOT_DROPPED_YET");
        assert_eq!(&*t.name(0x10005), "reason 0x10005");
        assert_eq!(t.value_of("NO_SOCKET"), Some(3));
    }

    #[test]
    fn decodes_reason_and_location() {
        let syms = Kallsyms::parse("ffffffff81000000 T tcp_v4_rcv\nffffffff81001000 T other\n").unwrap();
        let mut d = DropDecoder::new(table(), Some(Arc::new(syms)));
        assert_eq!(d.decode(&raw(0, 3, 0)), None, "not a drop");
        let drop = d.decode(&raw(EVENT_DROP | EVENT_HAS_REASON, 3, 0xffffffff81000042)).unwrap();
        assert_eq!(drop.reason_value, Some(3));
        assert_eq!(drop.site.reason, "NO_SOCKET");
        assert_eq!(
            (drop.site.function.as_str(), drop.site.location.as_str()),
            ("tcp_v4_rcv", "tcp_v4_rcv+0x42")
        );
        assert!(drop.site.has_reason());
    }

    #[test]
    fn kernels_without_the_reason_field_say_so() {
        // The perf path without a `reason` field (5.10–5.16) sends EVENT_DROP alone, reason 0:
        // 0 must not read as a reason (it would be NOT_DROPPED_YET).
        let mut d = DropDecoder::new(table(), None);
        let drop = d.decode(&raw(EVENT_DROP, 0, 0x1234)).unwrap();
        assert_eq!(drop.reason_value, None);
        assert_eq!(drop.site.reason, NOT_REPORTED);
        assert_eq!(drop.site.reason, "reason not reported by this kernel");
        assert!(!drop.site.has_reason());
        assert_eq!(drop.site.location, "0x1234");
        // A kernel without the enum at all names nothing either.
        let mut d = DropDecoder::new(Arc::new(DropReasons::default()), None);
        assert_eq!(d.decode(&raw(EVENT_DROP, 0, 0)).unwrap().site.reason, NOT_REPORTED);
    }
}
