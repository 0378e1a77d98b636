//! The tracepoint family: every selected tracepoint (`net:*`, `skb:*`, ...) gets a program slot
//! of its own, configured in `TP_CONFIG[slot]` from its tracefs `format` (record offsets) and
//! its BTF prototype (argument positions); entry/exit pairs (`PAIRS`) hand the entry's device to
//! the exit on the same CPU.
//!
//! Each slot has three programs, one per attach type: `dt_btf_<slot>` (`tp_btf`: the kernel
//! passes the tracepoint's arguments and writes no trace record — the cheapest), `dt_raw_<slot>`
//! (`raw_tp`: the same arguments, for kernels that cannot load `tp_btf`) and `dt_tp_<slot>` (the
//! perf path: the kernel fills a trace record for the program, ~0.8 µs more per event here).
//! `--attach auto` takes the first that attaches, per tracepoint, in that order.
use std::{fmt, str::FromStr};

use aya::{
    maps::Array,
    programs::{BtfTracePoint, ProgramError, RawTracePoint, TracePoint},
    Btf, Ebpf,
};
use dockertrace_common::{
    journey::JOURNEY_ENDS,
    tracepoints::{
        TpConfig, DROP_SLOT, NO_ARG, NO_FIELD, PAIR_GET, PAIR_NONE, PAIR_POP, PAIR_PUSH, PAIR_SET, TP_SLOTS,
    },
};

use super::{short, AttachEnv, AttachedProgram, Catalog, Family};
use crate::{
    kernel::{
        btf::{ArgKind, KernelBtf, TpArg},
        tracefs::{TpField, TpFormat, Tracefs, TracepointId},
    },
    select::EventSelector,
    trace_error::TraceError,
};

/// Entry/exit tracepoint pairs whose exit event learns its device from the entry event on the
/// same CPU: (category, entry, exit, slot, batch). Batch pairs fire the entry once per skb and
/// the exit once per batch.
pub const PAIRS: &[(&str, &str, &str, u8, bool)] = &[
    ("net", "net_dev_start_xmit", "net_dev_xmit", 1, false),
    ("net", "netif_receive_skb_entry", "netif_receive_skb_exit", 2, false),
    ("net", "netif_rx_entry", "netif_rx_exit", 3, false),
    ("net", "napi_gro_receive_entry", "napi_gro_receive_exit", 4, false),
    ("net", "napi_gro_frags_entry", "napi_gro_frags_exit", 5, false),
    ("net", "netif_receive_skb_list_entry", "netif_receive_skb_list_exit", 6, true),
    ("net", "netif_rx_ni_entry", "netif_rx_ni_exit", 7, false),
];

/// Tracepoints that end an skb's journey (the skb is freed): attached with `emit = 0` when
/// journeys are on and they are not selected.
pub const JOURNEY_ENDS_AT: &[(&str, &str)] = &[("skb", "consume_skb"), ("skb", "kfree_skb")];

/// The tracepoint whose events are drops (`crate::drops`): it reads its `reason` and
/// `location`, and is sent for the workload's skbs even when their device is unknown. One
/// tracepoint only: its programs are the drop programs (`DROP_SLOT`), of which there is one set.
pub const DROP_AT: (&str, &str) = ("skb", "kfree_skb");

fn is_drop(id: &TracepointId) -> bool {
    id.category == DROP_AT.0 && id.name == DROP_AT.1
}

fn ends_journey(id: &TracepointId) -> bool {
    JOURNEY_ENDS_AT.iter().any(|&(c, n)| id.category == c && id.name == n)
}

/// A tracepoint to attach and how the program reads it.
#[derive(Debug, Clone)]
pub struct PlannedTracepoint {
    pub id: TracepointId,
    pub format_id: u32,
    pub config: TpConfig,
    /// The kernel's BTF has the tracepoint's prototype: `tp_btf` and `raw_tp` can read it.
    pub has_args: bool,
}

/// How the tracepoint family attaches its programs (`--attach`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachType {
    /// The first of tp_btf, raw_tp, perf that attaches, per tracepoint.
    #[default]
    Auto,
    TpBtf,
    RawTp,
    Perf,
}

impl AttachType {
    pub const ALL: [AttachType; 4] =
        [AttachType::Auto, AttachType::TpBtf, AttachType::RawTp, AttachType::Perf];

    pub fn name(self) -> &'static str {
        match self {
            AttachType::Auto => "auto",
            AttachType::TpBtf => "tp_btf",
            AttachType::RawTp => "raw_tp",
            AttachType::Perf => "perf",
        }
    }

    /// The attach types to try, in order.
    fn ladder(self) -> &'static [AttachType] {
        match self {
            AttachType::Auto => &[AttachType::TpBtf, AttachType::RawTp, AttachType::Perf],
            AttachType::TpBtf => &[AttachType::TpBtf],
            AttachType::RawTp => &[AttachType::RawTp],
            AttachType::Perf => &[AttachType::Perf],
        }
    }

    /// The slot program of this attach type (`slot`: None for the drop tracepoint's program,
    /// see `DROP_SLOT`).
    /// `capture`: the capture twin (`dt_btf_cap_<slot>`: frame copy and `--filter`).
    fn program(self, slot: Option<usize>, capture: bool) -> String {
        let slot = slot.map_or_else(|| "drop".to_owned(), |s| s.to_string());
        let cap = if capture { "cap_" } else { "" };
        match self {
            AttachType::TpBtf => format!("dt_btf_{cap}{slot}"),
            AttachType::RawTp => format!("dt_raw_{cap}{slot}"),
            _ => format!("dt_tp_{cap}{slot}"),
        }
    }
}

impl fmt::Display for AttachType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AttachType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AttachType::ALL
            .into_iter()
            .find(|a| a.name() == s || a.name().replace('_', "-") == s)
            .ok_or_else(|| format!("unknown attach type `{s}` (auto, tp_btf, raw_tp or perf)"))
    }
}

/// Where the raw programs find the skb, device and length among the tracepoint's arguments.
/// A length argument is used only where the record has a `len` field and the prototype one
/// unsigned 32-bit argument (`net_dev_xmit`'s `skb_len`: its skb may be gone by then).
fn arg_positions(args: &[TpArg], format: &TpFormat) -> (u8, u8, u8) {
    let pos = |want: ArgKind| position(args, want);
    let unsigned: Vec<usize> = args
        .iter()
        .enumerate()
        .filter(|(_, a)| a.kind == ArgKind::Int { size: 4, signed: false })
        .map(|(i, _)| i)
        .collect();
    let len = match unsigned[..] {
        [i] if format.field("len").is_some() => u8::try_from(i).unwrap_or(NO_ARG),
        _ => NO_ARG,
    };
    (pos(ArgKind::Skb), pos(ArgKind::NetDevice), len)
}

/// Index of the first argument of kind `want`, or `NO_ARG`.
fn position(args: &[TpArg], want: ArgKind) -> u8 {
    args.iter().position(|a| a.kind == want).and_then(|i| u8::try_from(i).ok()).unwrap_or(NO_ARG)
}

/// A drop tracepoint's `reason` and `location`: record offsets from its format (perf path)
/// and argument positions from its BTF prototype (`tp_btf`, `raw_tp`). Found by type, never by
/// position: 6.11+ kernels added `rx_sk` to the tracepoint, and kernels before 5.17 have no
/// reason at all (then `NO_FIELD`/`NO_ARG`: the event says "reason not reported").
pub fn drop_fields(config: &mut TpConfig, format: &TpFormat, args: Option<&[TpArg]>) {
    config.drop = 1;
    config.reason_off = format
        .field("reason")
        .filter(|f| f.size == 4 && !f.is_data_loc())
        .and_then(|f| u16::try_from(f.offset).ok())
        .unwrap_or(NO_FIELD);
    config.location_off = format
        .field("location")
        .filter(|f| f.size == 8 && !f.is_data_loc())
        .and_then(|f| u16::try_from(f.offset).ok())
        .unwrap_or(NO_FIELD);
    if let Some(args) = args {
        config.reason_arg = position(args, ArgKind::DropReason);
        config.location_arg = position(args, ArgKind::VoidPointer);
    }
}

/// Builds the program configuration of one tracepoint from its format (perf path) and, when
/// the kernel's BTF has its prototype, its arguments (`tp_btf`, `raw_tp`).
pub fn tp_config(format: &TpFormat, args: Option<&[TpArg]>, emit: bool, slot: u8, role: u8) -> TpConfig {
    let (skb_arg, dev_arg, len_arg) = args.map_or((NO_ARG, NO_ARG, NO_ARG), |a| arg_positions(a, format));
    let off = |name: &str, ok: &dyn Fn(&TpField) -> bool| {
        format.field(name).filter(|f| ok(f)).and_then(|f| u16::try_from(f.offset).ok()).unwrap_or(NO_FIELD)
    };
    TpConfig {
        kind: format.id,
        skbaddr_off: off("skbaddr", &|f| f.size == 8 && !f.is_data_loc()),
        len_off: off("len", &|f| f.size == 4 && !f.is_data_loc()),
        name_off: off("name", &|f| f.is_data_loc()),
        emit: u8::from(emit),
        pair_slot: slot,
        pair_role: role,
        skb_arg,
        dev_arg,
        len_arg,
        journey: 0,
        reason_arg: NO_ARG,
        location_arg: NO_ARG,
        drop: 0,
        reason_off: NO_FIELD,
        location_off: NO_FIELD,
    }
}

/// Chooses the tracepoints to attach: the selected ones, plus the pairing partners they need
/// and, with `journeys`, the tracepoints that end a journey (both attached with `emit = 0`).
/// Exits come first so that no entry is pushed without its pop.
pub fn plan(
    tracefs: &Tracefs,
    btf: &KernelBtf,
    available: &[TracepointId],
    selected: &[&TracepointId],
    journeys: bool,
) -> Result<Vec<PlannedTracepoint>, TraceError> {
    let mut wanted: Vec<(TracepointId, bool)> = selected.iter().map(|t| ((*t).clone(), true)).collect();
    if journeys {
        for id in available.iter().filter(|t| ends_journey(t)) {
            if !wanted.iter().any(|(t, _)| t == id) {
                wanted.push((id.clone(), false));
            }
        }
    }
    for &(cat, entry, exit, _, _) in PAIRS {
        let has = |n: &str| wanted.iter().any(|(t, _)| t.category == cat && t.name == n);
        let avail = |n: &str| available.iter().find(|t| t.category == cat && t.name == n).cloned();
        let partner = if has(entry) && !has(exit) {
            avail(exit)
        } else if has(exit) && !has(entry) {
            avail(entry)
        } else {
            None
        };
        wanted.extend(partner.map(|t| (t, false)));
    }
    let mut out = Vec::with_capacity(wanted.len());
    for (id, emit) in wanted {
        let format = tracefs.format(&id)?;
        let (slot, role) = pair_role(&id);
        let args = btf.tracepoint_args(&id.name);
        let mut config = tp_config(&format, args.as_deref(), emit, slot, role);
        if journeys && ends_journey(&id) {
            config.journey = JOURNEY_ENDS;
        }
        if emit && is_drop(&id) {
            drop_fields(&mut config, &format, args.as_deref());
        }
        out.push(PlannedTracepoint { format_id: format.id, config, has_args: args.is_some(), id });
    }
    let rank = |p: &PlannedTracepoint| match p.config.pair_role {
        PAIR_POP | PAIR_GET => 0,
        PAIR_NONE => 1,
        _ => 2,
    };
    out.sort_by_key(|p| (rank(p), p.id.clone()));
    Ok(out)
}

/// A tracepoint's pairing slot and role (`(0, PAIR_NONE)` when it is not in [`PAIRS`]).
fn pair_role(id: &TracepointId) -> (u8, u8) {
    PAIRS
        .iter()
        .find_map(|&(cat, entry, exit, slot, batch)| {
            if id.category != cat {
                None
            } else if id.name == entry {
                Some((slot, if batch { PAIR_SET } else { PAIR_PUSH }))
            } else if id.name == exit {
                Some((slot, if batch { PAIR_GET } else { PAIR_POP }))
            } else {
                None
            }
        })
        .unwrap_or((0, PAIR_NONE))
}

/// The tracepoint family, from its plan to what attached.
#[derive(Debug, Default)]
pub struct Tracepoints {
    planned: Vec<PlannedTracepoint>,
    mode: AttachType,
    /// Tracepoints attached and emitting events.
    pub attached: Vec<TracepointId>,
    /// How each attached slot (emitting or pairing only) was attached, by slot.
    pub attach_types: Vec<(usize, AttachType)>,
    /// Tracepoints that failed to attach, with the reason.
    pub errors: Vec<(TracepointId, String)>,
    /// Attach the capture twins (`--pcap`, `--filter`).
    pub capture: bool,
}

impl Tracepoints {
    /// Plans the tracepoints `events` selects on this kernel, with their pairing partners,
    /// to be attached as `mode` says.
    pub fn plan(
        tracefs: &Tracefs,
        btf: &KernelBtf,
        events: &EventSelector,
        mode: AttachType,
        journeys: bool,
    ) -> Result<Tracepoints, TraceError> {
        let available = tracefs.events()?;
        let selected = events.select(&available);
        if selected.is_empty() {
            return Err(TraceError::NoEvents(events.to_string()));
        }
        let planned = plan(tracefs, btf, &available, &selected, journeys)?;
        if planned.len() > TP_SLOTS as usize {
            return Err(TraceError::TooManyEvents {
                spec: events.to_string(),
                count: planned.len(),
                max: TP_SLOTS,
            });
        }
        Ok(Tracepoints { planned, mode, ..Default::default() })
    }

    /// How the emitting tracepoints were attached: one type (`tp_btf`), or each type with its
    /// count when they differ (`tp_btf ×15, perf ×2`).
    pub fn attach_summary(&self) -> String {
        let mut counts: Vec<(AttachType, usize)> = Vec::new();
        for &(slot, t) in &self.attach_types {
            if self.planned[slot].config.emit == 0 {
                continue;
            }
            match counts.iter_mut().find(|(a, _)| *a == t) {
                Some((_, n)) => *n += 1,
                None => counts.push((t, 1)),
            }
        }
        match &counts[..] {
            [] => "none".to_owned(),
            [(t, _)] => t.to_string(),
            many => many.iter().map(|(t, n)| format!("{t} ×{n}")).collect::<Vec<_>>().join(", "),
        }
    }
}

/// Which program a planned tracepoint gets: its slot's, or the drop programs (which read
/// `TP_CONFIG[DROP_SLOT]`).
fn program_slot(slot: usize, p: &PlannedTracepoint) -> Option<usize> {
    (p.config.drop == 0).then_some(slot)
}

/// Loads and attaches slot `slot`'s program of type `t` to tracepoint `p`.
fn attach_as(
    ebpf: &mut Ebpf,
    t: AttachType,
    slot: usize,
    p: &PlannedTracepoint,
    btf: Option<&Btf>,
    capture: bool,
) -> Result<(), String> {
    let name = t.program(program_slot(slot, p), capture);
    let prog = ebpf.program_mut(&name).ok_or_else(|| format!("program {name} missing from the object"))?;
    let r = match t {
        AttachType::TpBtf => {
            let btf = btf.ok_or("tp_btf needs the kernel's BTF")?;
            let prog: &mut BtfTracePoint = prog.try_into().map_err(|e: ProgramError| short(&e))?;
            prog.load(&p.id.name, btf).and_then(|()| prog.attach().map(drop))
        }
        AttachType::RawTp => {
            let prog: &mut RawTracePoint = prog.try_into().map_err(|e: ProgramError| short(&e))?;
            prog.load().and_then(|()| prog.attach(&p.id.name).map(drop))
        }
        _ => {
            let prog: &mut TracePoint = prog.try_into().map_err(|e: ProgramError| short(&e))?;
            prog.load().and_then(|()| prog.attach(&p.id.category, &p.id.name).map(drop))
        }
    };
    r.map_err(|e| short(&e))
}

impl Family for Tracepoints {
    fn name(&self) -> &'static str {
        "tracepoints"
    }

    fn configure(&mut self, ebpf: &mut Ebpf) -> Result<(), TraceError> {
        let mut cfg: Array<_, TpConfig> =
            Array::try_from(ebpf.map_mut("TP_CONFIG").ok_or(TraceError::MissingMap("TP_CONFIG"))?)?;
        for (slot, p) in self.planned.iter().enumerate() {
            cfg.set(slot as u32, p.config, 0)?;
            if p.config.drop != 0 {
                cfg.set(DROP_SLOT, p.config, 0)?;
            }
        }
        Ok(())
    }

    /// Slot i's programs read `TP_CONFIG[i]`; the plan put exits before entries. Each
    /// tracepoint goes down the attach ladder until one type attaches.
    fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        env: &AttachEnv<'_>,
        catalog: &mut Catalog,
    ) -> Result<(), TraceError> {
        for (slot, p) in self.planned.iter().enumerate() {
            catalog.insert(p.format_id, &p.id.to_string());
            let mut why = Vec::new();
            let mut done = None;
            for &t in self.mode.ladder() {
                if t != AttachType::Perf && !p.has_args {
                    why.push(format!("{t}: the kernel's BTF has no prototype btf_trace_{}", p.id.name));
                    continue;
                }
                match attach_as(ebpf, t, slot, p, env.btf, self.capture) {
                    Ok(()) => {
                        done = Some(t);
                        break;
                    }
                    Err(e) => why.push(format!("{t}: {e}")),
                }
            }
            match done {
                Some(t) => {
                    self.attach_types.push((slot, t));
                    if !why.is_empty() {
                        log::debug!("{} attached as {t} after: {}", p.id, why.join("; "));
                    }
                    if p.config.emit != 0 {
                        self.attached.push(p.id.clone());
                    }
                }
                None => self.errors.push((p.id.clone(), why.join("; "))),
            }
        }
        if self.attached.is_empty() {
            let first = self.errors.first().map(|(t, e)| format!("{t}: {e}")).unwrap_or_default();
            return Err(TraceError::NothingAttached(first));
        }
        Ok(())
    }

    fn programs(&self) -> Vec<AttachedProgram> {
        self.attach_types
            .iter()
            .map(|&(slot, t)| {
                let p = &self.planned[slot];
                AttachedProgram {
                    label: p.id.to_string(),
                    program: t.program(program_slot(slot, p), self.capture),
                    emits: p.config.emit != 0,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real format files of this project's development kernel.
    const NET_DEV_XMIT: &str = include_str!("../../tests/fixtures/kernel/net_net_dev_xmit.format");
    const RX_EXIT: &str = include_str!("../../tests/fixtures/kernel/net_netif_receive_skb_exit.format");

    #[test]
    fn config_from_format() {
        let f = TpFormat::parse(NET_DEV_XMIT).unwrap();
        let c = tp_config(&f, None, true, 1, PAIR_POP);
        assert_eq!((c.skbaddr_off, c.len_off, c.name_off), (8, 16, 24));
        assert_eq!((c.emit, c.pair_slot, c.pair_role), (1, 1, PAIR_POP));
        let f = TpFormat::parse(RX_EXIT).unwrap();
        let c = tp_config(&f, None, false, 0, PAIR_NONE);
        assert_eq!((c.skbaddr_off, c.len_off, c.name_off, c.emit), (NO_FIELD, NO_FIELD, NO_FIELD, 0));
        assert_eq!((c.skb_arg, c.dev_arg, c.len_arg), (NO_ARG, NO_ARG, NO_ARG));
    }

    #[test]
    fn argument_positions_from_the_prototype() {
        let arg = |kind| TpArg { name: String::new(), kind };
        let u32_ = ArgKind::Int { size: 4, signed: false };
        let i32_ = ArgKind::Int { size: 4, signed: true };
        // net_dev_xmit(skb, rc, dev, skb_len), whose record has `len`.
        let xmit = [arg(ArgKind::Skb), arg(i32_), arg(ArgKind::NetDevice), arg(u32_)];
        let f = TpFormat::parse(NET_DEV_XMIT).unwrap();
        let c = tp_config(&f, Some(&xmit), true, 1, PAIR_POP);
        assert_eq!((c.skb_arg, c.dev_arg, c.len_arg), (0, 2, 3));
        // An exit event: `int ret` only.
        let f = TpFormat::parse(RX_EXIT).unwrap();
        let c = tp_config(&f, Some(&[arg(i32_)]), true, 2, PAIR_POP);
        assert_eq!((c.skb_arg, c.dev_arg, c.len_arg), (NO_ARG, NO_ARG, NO_ARG));
    }

    const KFREE_SKB: &str = include_str!("../../tests/fixtures/kernel/skb_kfree_skb.format");
    const KFREE_SKB_510: &str = include_str!("../../tests/fixtures/kernel/skb_kfree_skb_5.10.format");

    #[test]
    fn drop_fields_come_from_format_and_prototype() {
        let arg = |kind| TpArg { name: String::new(), kind };
        // 6.18: kfree_skb(skb, location, reason, rx_sk); the record puts rx_sk before reason.
        let f = TpFormat::parse(KFREE_SKB).unwrap();
        let args =
            [arg(ArgKind::Skb), arg(ArgKind::VoidPointer), arg(ArgKind::DropReason), arg(ArgKind::Pointer)];
        let mut c = tp_config(&f, Some(&args), true, 0, PAIR_NONE);
        drop_fields(&mut c, &f, Some(&args));
        assert_eq!((c.drop, c.skbaddr_off, c.location_off, c.reason_off), (1, 8, 16, 36));
        assert_eq!((c.skb_arg, c.location_arg, c.reason_arg), (0, 1, 2));
        // 5.17–6.10 put the reason right after location; found by type, the position follows.
        let old = [arg(ArgKind::Skb), arg(ArgKind::VoidPointer), arg(ArgKind::DropReason)];
        drop_fields(&mut c, &f, Some(&old));
        assert_eq!((c.location_arg, c.reason_arg), (1, 2));
        // 5.10: no reason at all.
        let f = TpFormat::parse(KFREE_SKB_510).unwrap();
        let args = [arg(ArgKind::Skb), arg(ArgKind::VoidPointer)];
        let mut c = tp_config(&f, Some(&args), true, 0, PAIR_NONE);
        drop_fields(&mut c, &f, Some(&args));
        assert_eq!((c.location_off, c.reason_off), (16, NO_FIELD));
        assert_eq!((c.location_arg, c.reason_arg), (1, NO_ARG));
    }

    #[test]
    fn attach_types_parse_and_ladder() {
        assert_eq!("tp_btf".parse::<AttachType>(), Ok(AttachType::TpBtf));
        assert_eq!("raw-tp".parse::<AttachType>(), Ok(AttachType::RawTp));
        assert!("kprobe".parse::<AttachType>().unwrap_err().contains("auto, tp_btf, raw_tp or perf"));
        assert_eq!(AttachType::Auto.ladder(), &[AttachType::TpBtf, AttachType::RawTp, AttachType::Perf]);
        assert_eq!(AttachType::RawTp.program(Some(7), false), "dt_raw_7");
        assert_eq!(AttachType::TpBtf.program(None, false), "dt_btf_drop");
        assert_eq!(AttachType::Perf.program(Some(7), true), "dt_tp_cap_7");
        assert_eq!(AttachType::TpBtf.program(None, true), "dt_btf_cap_drop");
    }

    #[test]
    fn pair_table_is_consistent() {
        let mut slots: Vec<u8> = PAIRS.iter().map(|p| p.3).collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), PAIRS.len(), "each pair has its own slot");
        assert!(slots
            .iter()
            .all(|&s| s >= 1 && u32::from(s) < dockertrace_common::tracepoints::DP_PAIR_BASE));
    }

    #[test]
    fn pair_roles() {
        let id = |c: &str, n: &str| TracepointId { category: c.into(), name: n.into() };
        assert_eq!(pair_role(&id("net", "net_dev_start_xmit")), (1, PAIR_PUSH));
        assert_eq!(pair_role(&id("net", "netif_receive_skb_list_exit")), (6, PAIR_GET));
        assert_eq!(pair_role(&id("skb", "net_dev_xmit")), (0, PAIR_NONE));
    }
}
