//! What an event says about its packet: the journey it belongs to ([`Hop`]) and the packet's
//! headers ([`Headers`]), decoded from the event's packet section
//! (`dockertrace_common::journey::Packet`).
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use dockertrace_common::journey::{
    Packet, FAMILY_ARP, FAMILY_IPV4, FAMILY_IPV6, PKT_END, PKT_EVICTED, PKT_HEADERS, PKT_RETURN, PKT_REUSED,
    PKT_VXLAN,
};

/// An event's place in its packet's journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hop {
    /// The journey's id: unique within a run (`(cpu + 1) << 48 | n`).
    pub packet: u64,
    /// Index of this hop (0: the packet's first traced event).
    pub hop: u16,
    /// Time since the previous hop, ns (0 at the first hop).
    pub delta_ns: u64,
    /// The journey started here because the skb's address came back with another packet.
    pub reused: bool,
    /// The journey started here and took the tracking slot of another packet's journey that
    /// was still in flight (that journey may be cut in two).
    pub evicted: bool,
    /// The event ends the journey (the skb is freed).
    pub end: bool,
}

/// An exit event's report on the function its entry event (a hop) entered: the function
/// returned after `duration_ns` (`net:net_dev_xmit`: the driver's `ndo_start_xmit`, such as
/// `veth_xmit`; `net:netif_receive_skb_exit`: the receive path up to the socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Return {
    pub packet: u64,
    /// The hop whose function returned.
    pub hop: u16,
    pub duration_ns: u64,
}

impl Hop {
    /// The journey id as people read it: `#<n>` with the CPU that saw its first hop
    /// (`#3.1042`: CPU 2's 1042nd journey).
    pub fn label(&self) -> String {
        packet_label(self.packet)
    }
}

/// A journey id as people read it: `#<cpu>.<n>` (see [`Hop::label`]).
pub fn packet_label(packet: u64) -> String {
    format!("#{}.{}", (packet >> 48).saturating_sub(1), packet & ((1 << 48) - 1))
}

/// Network family of [`Headers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
    Arp,
}

/// A packet's headers, as the kernel read them from `skb->head` + the header offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Headers {
    pub family: Family,
    /// Source and destination (ARP: sender and target protocol address).
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6; 0 for ARP).
    pub proto: u8,
    /// TCP/UDP ports, 0 otherwise.
    pub sport: u16,
    pub dport: u16,
    /// TCP flags byte (CWR ECE URG ACK PSH RST SYN FIN).
    pub tcp_flags: u8,
    pub seq: u32,
    pub ack: u32,
    /// IPv4 id (0 for IPv6).
    pub ip_id: u16,
    /// L4 payload bytes.
    pub payload_len: u16,
    /// ICMP type, or the ARP operation (1 request, 2 reply).
    pub op: u8,
    /// The VXLAN tunnel the packet was inside at this hop (the underlay, between encap and
    /// decap); the fields above describe the inner packet.
    pub tunnel: Option<Tunnel>,
}

/// A VXLAN tunnel's outer headers: IPv4 UDP to port 4789.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tunnel {
    pub vni: u32,
    /// The VTEPs: the outer source and destination.
    pub saddr: Ipv4Addr,
    pub daddr: Ipv4Addr,
    /// The outer UDP source port (the flow's hash; the destination is 4789).
    pub sport: u16,
}

impl fmt::Display for Tunnel {
    /// `vxlan vni 4096 10.214.0.1 → 10.214.0.2`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vxlan vni {} {} → {}", self.vni, self.saddr, self.daddr)
    }
}

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

/// TCP flag bits.
pub mod tcp {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

impl Headers {
    /// Sent to a multicast group (IPv4 224.0.0.0/4, IPv6 ff00::/8; never ARP).
    pub fn is_multicast(&self) -> bool {
        self.family != Family::Arp && self.daddr.is_multicast()
    }

    pub fn is_tcp(&self) -> bool {
        self.family != Family::Arp && self.proto == TCP
    }

    /// The L4 protocol's name: `TCP`, `UDP`, `ICMP`, `ICMPv6`, `ARP`, else `proto N`.
    /// (Borrowed for the known ones: the JSON sink writes it for every event.)
    pub fn proto_name(&self) -> std::borrow::Cow<'static, str> {
        match (self.family, self.proto) {
            (Family::Arp, _) => "ARP".into(),
            (_, TCP) => "TCP".into(),
            (_, UDP) => "UDP".into(),
            (_, ICMP) => "ICMP".into(),
            (_, ICMPV6) => "ICMPv6".into(),
            (_, p) => format!("proto {p}").into(),
        }
    }

    /// TCP flags as tcpdump writes them: `S`, `F`, `R`, `P`, `U`, `E`, `W`, and `.` for ACK
    /// (`[P.]`, `[S.]`).
    pub fn tcp_flags_text(&self) -> String {
        self.tcp_flags_in(&mut [0; 8]).to_owned()
    }

    /// [`Headers::tcp_flags_text`] written into `buf`, without allocating (the JSON sink's
    /// per-event path).
    pub fn tcp_flags_in<'b>(&self, buf: &'b mut [u8; 8]) -> &'b str {
        let f = self.tcp_flags;
        let mut n = 0;
        for (bit, c) in
            [(0x02, b'S'), (0x01, b'F'), (0x04, b'R'), (0x08, b'P'), (0x20, b'U'), (0x40, b'E'), (0x80, b'W')]
        {
            if f & bit != 0 {
                buf[n] = c;
                n += 1;
            }
        }
        if f & tcp::ACK != 0 {
            buf[n] = b'.';
            n += 1;
        }
        if n == 0 {
            return "none";
        }
        // ASCII letters only.
        std::str::from_utf8(&buf[..n]).unwrap_or("none")
    }

    /// The source and destination as `addr:port` (IPv6 in brackets), or bare addresses
    /// without ports.
    pub fn endpoints(&self) -> (String, String) {
        let ep = |a: IpAddr, p: u16| match a {
            _ if !self.has_ports() => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]:{p}"),
            a => format!("{a}:{p}"),
        };
        (ep(self.saddr, self.sport), ep(self.daddr, self.dport))
    }

    fn has_ports(&self) -> bool {
        self.family != Family::Arp && (self.proto == TCP || self.proto == UDP)
    }
}

impl fmt::Display for Headers {
    /// `10.213.0.3:41234 → 10.213.0.2:10000 TCP [P.] seq 1:43`, `ARP who-has 10.213.0.2 tell
    /// 10.213.0.3`, `10.0.0.1 → 10.0.0.2 ICMP type 8`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.family == Family::Arp {
            return match self.op {
                1 => write!(f, "ARP who-has {} tell {}", self.daddr, self.saddr),
                2 => write!(f, "ARP reply {} is-at … to {}", self.saddr, self.daddr),
                op => write!(f, "ARP op {op} {} → {}", self.saddr, self.daddr),
            };
        }
        if let Some(t) = &self.tunnel {
            write!(f, "{t} | inner ")?;
        }
        let (s, d) = self.endpoints();
        write!(f, "{s} → {d} {}", self.proto_name())?;
        match self.proto {
            TCP => write!(f, " [{}] len {}", self.tcp_flags_text(), self.payload_len),
            UDP => write!(f, " len {}", self.payload_len),
            ICMP | ICMPV6 => write!(f, " type {}", self.op),
            _ => Ok(()),
        }
    }
}

/// A test literal: a data segment `10.213.0.3:41234 → 10.213.0.2:10000 TCP [P.]` of 42 bytes.
#[cfg(test)]
pub fn sample_segment(seq: u32, ack: u32) -> Headers {
    Headers {
        family: Family::Ipv4,
        saddr: IpAddr::V4(Ipv4Addr::new(10, 213, 0, 3)),
        daddr: IpAddr::V4(Ipv4Addr::new(10, 213, 0, 2)),
        proto: TCP,
        sport: 41234,
        dport: 10000,
        tcp_flags: tcp::PSH | tcp::ACK,
        seq,
        ack,
        ip_id: 5,
        payload_len: 42,
        op: 0,
        tunnel: None,
    }
}

/// The return an exit event reports (see [`Return`]).
pub fn decode_return(p: &Packet) -> Option<Return> {
    (p.id != 0 && p.flags & PKT_RETURN != 0).then_some(Return {
        packet: p.id,
        hop: p.hop,
        duration_ns: p.delta_ns,
    })
}

/// The typed hop and headers of an event's packet section (None, None when the event is not
/// part of a journey; no hop for an exit event's [`Return`]).
pub fn decode(p: &Packet) -> (Option<Hop>, Option<Headers>) {
    let hop = (p.id != 0 && p.flags & PKT_RETURN == 0).then_some(Hop {
        packet: p.id,
        hop: p.hop,
        delta_ns: p.delta_ns,
        reused: p.flags & PKT_REUSED != 0,
        evicted: p.flags & PKT_EVICTED != 0,
        end: p.flags & PKT_END != 0,
    });
    (hop, headers(p))
}

fn headers(p: &Packet) -> Option<Headers> {
    if p.flags & PKT_HEADERS == 0 {
        return None;
    }
    let v4 = |a: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
    let (family, saddr, daddr) = match p.family {
        FAMILY_IPV4 => (Family::Ipv4, v4(&p.saddr), v4(&p.daddr)),
        FAMILY_IPV6 => {
            (Family::Ipv6, IpAddr::V6(Ipv6Addr::from(p.saddr)), IpAddr::V6(Ipv6Addr::from(p.daddr)))
        }
        FAMILY_ARP => (Family::Arp, v4(&p.saddr), v4(&p.daddr)),
        _ => return None,
    };
    Some(Headers {
        family,
        saddr,
        daddr,
        proto: if family == Family::Arp { 0 } else { p.l4 },
        sport: p.sport,
        dport: p.dport,
        tcp_flags: p.tcp_flags,
        seq: p.seq,
        ack: p.ack,
        ip_id: p.ip_id,
        payload_len: p.payload_len,
        op: p.op,
        tunnel: (p.flags & PKT_VXLAN != 0 && family == Family::Ipv4).then(|| Tunnel {
            vni: u32::from_be_bytes([0, p.saddr[8], p.saddr[9], p.saddr[10]]),
            saddr: Ipv4Addr::new(p.saddr[4], p.saddr[5], p.saddr[6], p.saddr[7]),
            daddr: Ipv4Addr::new(p.daddr[4], p.daddr[5], p.daddr[6], p.daddr[7]),
            sport: u16::from_be_bytes([p.daddr[8], p.daddr[9]]),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_packet() -> Packet {
        let mut p = Packet {
            id: (3 << 48) | 1042,
            hop: 2,
            delta_ns: 3200,
            flags: PKT_HEADERS,
            family: FAMILY_IPV4,
            l4: TCP,
            sport: 41234,
            dport: 10000,
            tcp_flags: tcp::PSH | tcp::ACK,
            seq: 1,
            ack: 7,
            ip_id: 9,
            payload_len: 42,
            ..Packet::default()
        };
        p.saddr[..4].copy_from_slice(&[10, 213, 0, 3]);
        p.daddr[..4].copy_from_slice(&[10, 213, 0, 2]);
        p
    }

    #[test]
    fn a_vxlan_section_decodes_inner_headers_and_the_tunnel() {
        let mut p = tcp_packet();
        p.flags |= PKT_VXLAN;
        p.saddr[4..11].copy_from_slice(&[10, 214, 0, 1, 0, 0x10, 0]);
        p.daddr[4..10].copy_from_slice(&[10, 214, 0, 2, 0xc3, 0x50]);
        let h = decode(&p).1.expect("headers");
        let t = h.tunnel.expect("tunnel");
        assert_eq!((t.vni, t.sport), (4096, 50000));
        assert_eq!(
            h.to_string(),
            "vxlan vni 4096 10.214.0.1 → 10.214.0.2 | inner 10.213.0.3:41234 → 10.213.0.2:10000 TCP [P.] len 42"
        );
        assert!(decode(&tcp_packet()).1.unwrap().tunnel.is_none());
    }

    #[test]
    fn decodes_hop_and_tcp_headers() {
        let (hop, h) = decode(&tcp_packet());
        let hop = hop.expect("hop");
        assert_eq!((hop.hop, hop.delta_ns, hop.reused, hop.end), (2, 3200, false, false));
        assert_eq!(hop.label(), "#2.1042");
        let h = h.expect("headers");
        assert_eq!(h.to_string(), "10.213.0.3:41234 → 10.213.0.2:10000 TCP [P.] len 42");
        assert!(h.is_tcp());
    }

    #[test]
    fn an_exit_event_reports_its_hops_duration() {
        let p = Packet { id: 9, hop: 4, delta_ns: 1500, flags: PKT_RETURN, ..Packet::default() };
        assert_eq!(decode(&p), (None, None));
        assert_eq!(decode_return(&p), Some(Return { packet: 9, hop: 4, duration_ns: 1500 }));
        assert_eq!(decode_return(&tcp_packet()), None);
    }

    #[test]
    fn no_journey_no_headers() {
        assert_eq!(decode(&Packet::default()), (None, None));
        let mut p = tcp_packet();
        p.flags = 0;
        assert!(decode(&p).1.is_none(), "headers not read");
        p.flags = PKT_HEADERS;
        p.family = 9;
        assert!(decode(&p).1.is_none(), "unknown family");
    }

    #[test]
    fn flags_arp_icmp_and_ipv6() {
        let mut p = tcp_packet();
        p.tcp_flags = tcp::SYN;
        assert_eq!(decode(&p).1.unwrap().tcp_flags_text(), "S");
        p.tcp_flags = tcp::SYN | tcp::ACK;
        assert_eq!(decode(&p).1.unwrap().tcp_flags_text(), "S.");
        p.tcp_flags = tcp::FIN | tcp::ACK;
        assert_eq!(decode(&p).1.unwrap().tcp_flags_text(), "F.");
        let mut arp = tcp_packet();
        arp.family = FAMILY_ARP;
        arp.op = 1;
        assert_eq!(decode(&arp).1.unwrap().to_string(), "ARP who-has 10.213.0.2 tell 10.213.0.3");
        let mut icmp = tcp_packet();
        icmp.l4 = ICMP;
        icmp.op = 8;
        assert_eq!(decode(&icmp).1.unwrap().to_string(), "10.213.0.3 → 10.213.0.2 ICMP type 8");
        let mut v6 = tcp_packet();
        v6.family = FAMILY_IPV6;
        v6.saddr = Ipv6Addr::LOCALHOST.octets();
        v6.daddr = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(decode(&v6).1.unwrap().endpoints().0, "[::1]:41234");
    }
}
