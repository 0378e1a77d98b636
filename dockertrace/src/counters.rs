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
