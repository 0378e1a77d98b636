//! The kernel's per-CPU counters, summed: what the programs saw, sent, lost and failed at.
//!
//! Lives apart from the loader so that the offline half (recordings, imports, reports) can
//! carry counters without linking the eBPF object.
use dockertrace_common::counter;

/// Sums of the per-CPU kernel counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub seen: u64,
    pub filtered: u64,
    pub sent: u64,
    pub ring_full: u64,
    pub stack_error: u64,
    pub stack_collision: u64,
    pub no_config: u64,
    pub read_error: u64,
    pub pair_miss: u64,
    /// Aggregate mode: events not counted because the in-kernel aggregation map was full.
    /// (Absent from recordings made before aggregate mode existed.)
    #[serde(default)]
    pub agg_full: u64,
    /// Exit events that reused their entry event's stack instead of walking the stack again.
    /// (Absent from recordings made before stacks were shared.)
    #[serde(default)]
    pub stack_shared: u64,
    /// Adaptive stacks: keys that took over a slot another key held (a new window began).
    #[serde(default)]
    pub adapt_takeover: u64,
    /// Journeys: packets followed (journeys started). Absent from recordings before journeys,
    /// like the counters below.
    #[serde(default)]
    pub journeys: u64,
    /// Journeys cut short because another skb took their slot of the tracking array: the
    /// packet's later hops form a journey of their own (a tracking loss).
    #[serde(default)]
    pub journey_evicted: u64,
    /// An skb address came back with another packet (told apart by its headers): a new
    /// journey, as it should be.
    #[serde(default)]
    pub journey_reused: u64,
    /// Journeys ended by `skb:consume_skb` / `skb:kfree_skb`.
    #[serde(default)]
    pub journey_ended: u64,
    /// Events on an IP or ARP packet whose headers could not be read (no tuple shown).
    #[serde(default)]
    pub headers_unreadable: u64,
    /// Aggregate mode: hop pairs not counted because the hop-latency map was full.
    #[serde(default)]
    pub hop_hist_full: u64,
    /// `--filter`: events on packets the filter program rejected in the kernel (also in
    /// `filtered`).
    #[serde(default)]
    pub cbpf_rejected: u64,
    /// `--filter`: events on packets the filter program accepted.
    #[serde(default)]
    pub cbpf_accepted: u64,
    /// `--filter`: events kept because their skb continues a matched journey.
    #[serde(default)]
    pub cbpf_followed: u64,
}

impl Counters {
    /// Events that were meant for userspace and never arrived (ring buffer full, or, in
    /// aggregate mode, aggregation map full).
    pub fn lost(&self) -> u64 {
        self.ring_full + self.agg_full
    }

    /// The counters from their sums by index (`dockertrace_common::counter`); missing
    /// indices count 0.
    pub fn from_slots(v: &[u64]) -> Self {
        let g = |i: u32| v.get(i as usize).copied().unwrap_or(0);
        Counters {
            seen: g(counter::SEEN),
            filtered: g(counter::FILTERED),
            sent: g(counter::SENT),
            ring_full: g(counter::RING_FULL),
            stack_error: g(counter::STACK_ERROR),
            stack_collision: g(counter::STACK_COLLISION),
            no_config: g(counter::NO_CONFIG),
            read_error: g(counter::READ_ERROR),
            pair_miss: g(counter::PAIR_MISS),
            agg_full: g(counter::AGG_FULL),
            stack_shared: g(counter::STACK_SHARED),
            adapt_takeover: g(counter::ADAPT_TAKEOVER),
            journeys: g(counter::JOURNEY_STARTED),
            journey_evicted: g(counter::JOURNEY_EVICTED),
            journey_reused: g(counter::JOURNEY_REUSED),
            journey_ended: g(counter::JOURNEY_ENDED),
            headers_unreadable: g(counter::HEADERS_UNREADABLE),
            hop_hist_full: g(counter::HOP_HIST_FULL),
            cbpf_rejected: g(counter::CBPF_REJECTED),
            cbpf_accepted: g(counter::CBPF_ACCEPTED),
            cbpf_followed: g(counter::CBPF_FOLLOWED),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_by_index() {
        let mut v = vec![0u64; counter::COUNT as usize];
        v[counter::RING_FULL as usize] = 3;
        v[counter::SENT as usize] = 10;
        let c = Counters::from_slots(&v);
        assert_eq!((c.lost(), c.sent, c.seen), (3, 10, 0));
        assert_eq!(Counters::from_slots(&[]), Counters::default());
    }
}
