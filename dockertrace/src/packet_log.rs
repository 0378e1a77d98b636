//! The packet log a recording keeps for `report --stitch`: per TCP data packet, its inner
//! tuple, sequence and acknowledgement numbers, the time of its first hop on this host's clock,
//! and each hop (where, and how long after the first). Two hosts' recordings are joined on it
//! (`stitch`): the same segment, seen leaving one host and entering the other.
//!
//! Bounded: the first [`MAX_LOGGED`] data packets of a run are kept, the rest only counted
//! (a two-second echo between containers makes ~30 000). Only whole journeys (every hop from 0
//! on, not a clone, not split) with readable headers are logged.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Data packets a run's log keeps at most (~100 bytes each in a recording).
pub const MAX_LOGGED: usize = 20_000;

/// The places a run's logged packets passed, and the packets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PacketLog {
    /// Where a hop was seen: the event on a device. Packets refer to these by index.
    pub steps: Vec<LogStep>,
    pub packets: Vec<LoggedPacket>,
    /// Data packets past [`MAX_LOGGED`], not logged.
    #[serde(default)]
    pub not_logged: u64,
}

/// One (event, device) of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStep {
    pub event: String,
    pub dev: String,
    pub netns: u32,
    pub ifindex: u32,
}

/// One TCP data segment's journey on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedPacket {
    /// The inner tuple (inside a VXLAN tunnel: the containers', not the hosts').
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    /// TCP payload bytes.
    pub len: u16,
    /// The first hop's time, ns on this host's monotonic clock (the events' `ts_ns`).
    pub t0_ns: u64,
    /// The hops in order: (index into [`PacketLog::steps`], ns since the first hop).
    pub hops: Vec<(u32, u64)>,
}

impl LoggedPacket {
    /// When the packet was last seen on this host (its last hop), ns.
    pub fn last_ns(&self) -> u64 {
        self.t0_ns + self.hops.last().map_or(0, |h| h.1)
    }

    /// The segment's identity across hosts: its tuple, sequence number and length.
    pub fn key(&self) -> SegmentKey {
        (self.saddr, self.daddr, self.sport, self.dport, self.seq, self.len)
    }
}

/// (source, destination, source port, destination port, seq, payload length).
pub type SegmentKey = (IpAddr, IpAddr, u16, u16, u32, u16);

impl PacketLog {
    /// Keeps `p` unless the log is full (then counts it).
    pub fn push(&mut self, p: LoggedPacket) {
        if self.packets.len() < MAX_LOGGED {
            self.packets.push(p);
        } else {
            self.not_logged += 1;
        }
    }

    /// Whether the log has room for another packet (spares building one that would not be kept).
    pub fn has_room(&self) -> bool {
        self.packets.len() < MAX_LOGGED
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u32) -> LoggedPacket {
        LoggedPacket {
            saddr: "10.0.0.1".parse().unwrap(),
            daddr: "10.0.0.2".parse().unwrap(),
            sport: 40000,
            dport: 10000,
            seq,
            ack: 1,
            len: 42,
            t0_ns: 1_000,
            hops: vec![(0, 0), (1, 250)],
        }
    }

    #[test]
    fn a_full_log_counts_what_it_does_not_keep() {
        let mut log = PacketLog::default();
        for i in 0..MAX_LOGGED as u32 + 3 {
            log.push(packet(i));
        }
        assert_eq!((log.packets.len(), log.not_logged, log.has_room()), (MAX_LOGGED, 3, false));
    }

    #[test]
    fn a_packet_ends_at_its_last_hop() {
        let p = packet(7);
        assert_eq!(p.last_ns(), 1_250);
        assert_eq!(p.key().4, 7);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<LoggedPacket>(&json).unwrap(), p);
    }
}
