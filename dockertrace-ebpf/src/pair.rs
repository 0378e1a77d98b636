//! Entry/exit pairing: per-CPU stacks (`PAIRS`, one per pairing slot) on which an entry event
//! leaves its device, stack id and journey hop for the event that closes it — a tracepoint
//! pair (`net_dev_start_xmit` → `net_dev_xmit`) or a datapath function's entry and return
//! probes (`kp_veth_xmit` → `kr_veth_xmit`).
use dockertrace_common::{
    counter,
    tracepoints::{PairEntry, PAIR_DEPTH, PAIR_GET, PAIR_PUSH, PAIR_SET, PAIR_SLOTS},
};

use crate::{
    emit::{DevInfo, Fields},
    maps::{bump, PACKET_OUT, PAIRS},
};

/// The journey hop (id, hop) of the event `emit` just sent, when it was `sent` (else none).
#[inline(always)]
pub fn sent_hop(sent: bool) -> (u64, u16) {
    match PACKET_OUT.get(0) {
        Some(p) if sent => (p.id, p.hop),
        _ => (0, 0),
    }
}

/// PUSH / SET: records the entry event's device, whether it passed the filters, the stack id it
/// went out with and its journey hop (`(0, 0)`: none; see [`sent_hop`]) on this CPU's stack
/// of `slot`.
#[inline(always)]
pub fn remember(slot: u32, role: u8, dev: &DevInfo, pass: bool, hop: (u64, u16), stack_id: i32, f: &Fields) {
    if slot >= PAIR_SLOTS {
        return;
    }
    let Some(st) = PAIRS.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: per-CPU value; programs on one CPU run one at a time for a given nesting level.
    let st = unsafe { &mut *st };
    let (packet, hop) = hop;
    let depth = if role == PAIR_SET { 0 } else { st.depth as usize };
    // Written in place, field by field (no 64-byte `PairEntry` on the stack).
    match st.entries.get_mut(depth) {
        Some(e) => {
            e.ifindex = dev.ifindex;
            e.netns = dev.netns;
            e.pass = u32::from(pass);
            e.flags = u32::from(dev.flags);
            e.dev = dev.name;
            e.stack_id = stack_id;
            e.class = u32::from(f.class);
            e.packet = packet;
            e.ts = f.ts;
            e.hop = u32::from(hop);
        }
        None => {
            bump(counter::PAIR_MISS);
        }
    }
    if role == PAIR_PUSH {
        st.depth = st.depth.saturating_add(1);
    }
}

/// POP / GET: the matching entry event (its place in this CPU's `PAIRS` value), if known. A
/// pop of an empty stack is counted as a pair miss unless `quiet_empty` (a return probe
/// attached while its function was already running).
#[inline(always)]
pub fn recall(slot: u32, role: u8, quiet_empty: bool) -> Option<*const PairEntry> {
    if slot >= PAIR_SLOTS {
        return None;
    }
    let st = PAIRS.get_ptr_mut(slot)?;
    // SAFETY: see remember.
    let st = unsafe { &mut *st };
    if role == PAIR_GET {
        return st.entries.first().map(|e| e as *const PairEntry);
    }
    if st.depth == 0 {
        if !quiet_empty {
            bump(counter::PAIR_MISS);
        }
        return None;
    }
    st.depth -= 1;
    let top = st.depth as usize;
    if top >= PAIR_DEPTH {
        bump(counter::PAIR_MISS);
        return None;
    }
    st.entries.get(top).map(|e| e as *const PairEntry)
}
