//! The tracepoint family: every selected tracepoint (`net:*`, `skb:*`, ...) gets a program slot
//! of its own (`dt_tp_<slot>`), configured in `TP_CONFIG[slot]` from its tracefs `format`;
//! entry/exit pairs (`PAIRS`) hand the entry's device to the exit on the same CPU.
use aya::{
    maps::Array,
    programs::{ProgramError, TracePoint},
    Ebpf,
};
use dockertrace_common::tracepoints::{
    TpConfig, NO_FIELD, PAIR_GET, PAIR_NONE, PAIR_POP, PAIR_PUSH, PAIR_SET, TP_SLOTS,
};

use super::{short, AttachEnv, AttachedProgram, Catalog, Family};
use crate::{
    kernel::tracefs::{TpField, TpFormat, Tracefs, TracepointId},
    select::EventSelector,
    tracer::TraceError,
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

/// A tracepoint to attach and how the program reads it.
#[derive(Debug, Clone)]
pub struct PlannedTracepoint {
    pub id: TracepointId,
    pub format_id: u32,
    pub config: TpConfig,
}

/// Builds the program configuration of one tracepoint from its format.
pub fn tp_config(format: &TpFormat, emit: bool, slot: u8, role: u8) -> TpConfig {
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
        _pad: [0; 3],
    }
}

/// Chooses the tracepoints to attach: the selected ones, plus the pairing partners they need
/// (attached with `emit = 0`). Exits come first so that no entry is pushed without its pop.
pub fn plan(
    tracefs: &Tracefs,
    available: &[TracepointId],
    selected: &[&TracepointId],
) -> Result<Vec<PlannedTracepoint>, TraceError> {
    let mut wanted: Vec<(TracepointId, bool)> = selected.iter().map(|t| ((*t).clone(), true)).collect();
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
        out.push(PlannedTracepoint { format_id: format.id, config: tp_config(&format, emit, slot, role), id });
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
    /// Tracepoints attached and emitting events.
    pub attached: Vec<TracepointId>,
    /// Tracepoints that failed to attach, with the reason.
    pub errors: Vec<(TracepointId, String)>,
}

impl Tracepoints {
    /// Plans the tracepoints `events` selects on this kernel, with their pairing partners.
    pub fn plan(tracefs: &Tracefs, events: &EventSelector) -> Result<Tracepoints, TraceError> {
        let available = tracefs.events()?;
        let selected = events.select(&available);
        if selected.is_empty() {
            return Err(TraceError::NoEvents(events.to_string()));
        }
        let planned = plan(tracefs, &available, &selected)?;
        if planned.len() > TP_SLOTS as usize {
            return Err(TraceError::TooManyEvents {
                spec: events.to_string(),
                count: planned.len(),
                max: TP_SLOTS,
            });
        }
        Ok(Tracepoints { planned, ..Default::default() })
    }

    fn slot_program(slot: usize) -> String {
        format!("dt_tp_{slot}")
    }
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
        }
        Ok(())
    }

    /// Slot i's program reads `TP_CONFIG[i]`; the plan put exits before entries.
    fn attach(&mut self, ebpf: &mut Ebpf, _env: &AttachEnv<'_>, catalog: &mut Catalog) -> Result<(), TraceError> {
        for (slot, p) in self.planned.iter().enumerate() {
            catalog.insert(p.format_id, &p.id.to_string());
            let name = Self::slot_program(slot);
            let attached = (|| -> Result<(), ProgramError> {
                let prog: &mut TracePoint =
                    ebpf.program_mut(&name).ok_or(ProgramError::UnexpectedProgramType)?.try_into()?;
                prog.load()?;
                prog.attach(&p.id.category, &p.id.name)?;
                Ok(())
            })();
            match attached {
                Ok(()) if p.config.emit != 0 => self.attached.push(p.id.clone()),
                Ok(()) => {}
                Err(e) => self.errors.push((p.id.clone(), short(&e))),
            }
        }
        if self.attached.is_empty() {
            let first = self.errors.first().map(|(t, e)| format!("{t}: {e}")).unwrap_or_default();
            return Err(TraceError::NothingAttached(first));
        }
        Ok(())
    }

    fn programs(&self) -> Vec<AttachedProgram> {
        self.planned
            .iter()
            .enumerate()
            .filter(|(_, p)| !self.errors.iter().any(|(t, _)| *t == p.id))
            .map(|(slot, p)| AttachedProgram {
                label: p.id.to_string(),
                program: Self::slot_program(slot),
                emits: p.config.emit != 0,
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
        let c = tp_config(&f, true, 1, PAIR_POP);
        assert_eq!((c.skbaddr_off, c.len_off, c.name_off), (8, 16, 24));
        assert_eq!((c.emit, c.pair_slot, c.pair_role), (1, 1, PAIR_POP));
        let f = TpFormat::parse(RX_EXIT).unwrap();
        let c = tp_config(&f, false, 0, PAIR_NONE);
        assert_eq!((c.skbaddr_off, c.len_off, c.name_off, c.emit), (NO_FIELD, NO_FIELD, NO_FIELD, 0));
    }

    #[test]
    fn pair_table_is_consistent() {
        let mut slots: Vec<u8> = PAIRS.iter().map(|p| p.3).collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), PAIRS.len(), "each pair has its own slot");
        assert!(slots.iter().all(|&s| s >= 1 && u32::from(s) < dockertrace_common::tracepoints::PAIR_SLOTS));
    }

    #[test]
    fn pair_roles() {
        let id = |c: &str, n: &str| TracepointId { category: c.into(), name: n.into() };
        assert_eq!(pair_role(&id("net", "net_dev_start_xmit")), (1, PAIR_PUSH));
        assert_eq!(pair_role(&id("net", "netif_receive_skb_list_exit")), (6, PAIR_GET));
        assert_eq!(pair_role(&id("skb", "net_dev_xmit")), (0, PAIR_NONE));
    }
}
