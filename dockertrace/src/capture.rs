//! `--pcap` and `--filter`: what the capture programs need (the snap length, the compiled
//! filter). The pcapng file itself is written by [`crate::sinks::pcap::PcapSink`].
//!
//! The filter is compiled by libpcap (`pcap_compile` on a dead handle, once per link type:
//! Ethernet and raw IP), and its classic-BPF instructions are evaluated in the kernel by the
//! capture programs (`dockertrace-ebpf/src/capture.rs`). See docs/pcap.md.
use dockertrace_common::capture::{CbpfInsn, CBPF_MAX, FRAME_MAX};

/// `--snaplen`'s default: bytes of each frame kept.
pub const DEFAULT_SNAPLEN: u32 = 128;

/// What the capture programs are loaded with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureOptions {
    /// Bytes of each frame kept (1..=`FRAME_MAX`).
    pub snaplen: u32,
    /// The `--filter` program, when given.
    pub filter: Option<CompiledFilter>,
}

/// A `--filter` expression as libpcap compiled it, for Ethernet frames and for raw IP frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFilter {
    pub expr: String,
    pub eth: Vec<CbpfInsn>,
    pub raw: Vec<CbpfInsn>,
}

/// Checks `--snaplen`.
pub fn parse_snaplen(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=FRAME_MAX as u32).contains(&n) => Ok(n),
        _ => Err(format!("--snaplen must be a number of bytes from 1 to {FRAME_MAX}, not `{s}`")),
    }
}

/// One instruction as libpcap prints it (`code jt jf k`, decimal: `tcpdump -ddd`'s lines).
pub fn parse_insn(line: &str) -> Option<CbpfInsn> {
    let mut it = line.split_whitespace();
    let insn = CbpfInsn {
        code: it.next()?.parse().ok()?,
        jt: it.next()?.parse().ok()?,
        jf: it.next()?.parse().ok()?,
        k: it.next()?.parse().ok()?,
    };
    it.next().is_none().then_some(insn)
}

/// A program that fits the kernel's table (`CBPF_MAX` instructions per link type).
fn fits(expr: &str, what: &str, insns: Vec<CbpfInsn>) -> Result<Vec<CbpfInsn>, String> {
    if insns.len() > CBPF_MAX as usize {
        return Err(format!(
            "--filter `{expr}`: libpcap compiled it to {} instructions for {what} frames; the kernel side takes at most {CBPF_MAX}",
            insns.len()
        ));
    }
    Ok(insns)
}

/// A program as `tcpdump -ddd` prints it (its length, then `code jt jf k` per line), for
/// Ethernet frames: what a build without libpcap takes (docs/pcap.md). None: not such a listing.
pub fn parse_listing(expr: &str) -> Option<Result<CompiledFilter, String>> {
    let mut lines = expr.lines().map(str::trim).filter(|l| !l.is_empty());
    let n: usize = lines.next()?.parse().ok()?;
    let insns = lines.map(parse_insn).collect::<Option<Vec<_>>>()?;
    if insns.len() != n || n == 0 {
        return None;
    }
    Some(fits(expr, "Ethernet", insns).map(|eth| CompiledFilter {
        expr: expr.to_owned(),
        eth,
        raw: Vec::new(),
    }))
}

/// Compiles `expr` with libpcap for Ethernet and raw IP frames (or takes a `tcpdump -ddd`
/// listing as it is). The error is libpcap's message.
#[cfg(feature = "libpcap")]
pub fn compile(expr: &str) -> Result<CompiledFilter, String> {
    if let Some(r) = parse_listing(expr) {
        return r;
    }
    use pcap::{Capture, Linktype};
    let one = |link: Linktype, what: &str| -> Result<Vec<CbpfInsn>, String> {
        let dead = Capture::dead(link).map_err(|e| format!("--filter: libpcap: {e}"))?;
        let prog = dead.compile(expr, true).map_err(|e| format!("--filter `{expr}`: {e}"))?;
        let insns =
            prog.get_instructions().iter().map(|i| parse_insn(&i.to_string())).collect::<Option<Vec<_>>>();
        fits(expr, what, insns.ok_or_else(|| format!("--filter `{expr}`: unreadable libpcap program"))?)
    };
    let eth = one(Linktype::ETHERNET, "Ethernet")?;
    // Raw IP frames: a filter that needs a link layer (`ether host ...`) matches none of them.
    let raw = one(Linktype(12), "raw IP").unwrap_or_default();
    Ok(CompiledFilter { expr: expr.to_owned(), eth, raw })
}

/// Without libpcap (the static build of the VM tests and the image): only a `tcpdump -ddd`
/// listing is taken; an expression is refused.
#[cfg(not(feature = "libpcap"))]
pub fn compile(expr: &str) -> Result<CompiledFilter, String> {
    parse_listing(expr).unwrap_or_else(|| {
        Err(format!(
            "--filter `{expr}`: this dockertrace was built without libpcap: give the program `tcpdump -ddd` prints for it"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_and_snaplen() {
        let f = parse_listing("4\n40 0 0 12\n21 0 1 2054\n6 0 0 262144\n6 0 0 0\n").unwrap().unwrap();
        assert_eq!(f.eth.len(), 4);
        assert_eq!(f.eth[1], CbpfInsn { code: 21, jt: 0, jf: 1, k: 2054 });
        assert!(f.raw.is_empty());
        assert!(parse_listing("tcp port 80").is_none());
        assert!(parse_listing("3\n6 0 0 0\n").is_none(), "the count must match");
        assert_eq!(parse_snaplen("128"), Ok(128));
        assert!(parse_snaplen("0").is_err() && parse_snaplen("257").is_err());
    }

    #[cfg(feature = "libpcap")]
    #[test]
    fn libpcap_compiles_for_both_link_types() {
        let f = compile("tcp port 10000").unwrap();
        assert!(!f.eth.is_empty() && !f.raw.is_empty() && f.eth != f.raw);
        // The same program tcpdump prints, but for the accepting return's value (the snap
        // length of the handle: 65535 for a dead one, 262144 for tcpdump's).
        let ours = compile("arp").unwrap().eth;
        let tcpdump = parse_listing(ARP).unwrap().unwrap().eth;
        assert_eq!(ours.len(), tcpdump.len());
        for (a, b) in ours.iter().zip(&tcpdump) {
            assert_eq!((a.code, a.jt, a.jf), (b.code, b.jt, b.jf));
            assert!(a.k == b.k || (a.code == 6 && a.k != 0 && b.k != 0), "{a:?} {b:?}");
        }
        assert!(compile("tcp prot 1").unwrap_err().contains("syntax error"));
    }

    /// `tcpdump -ddd arp` on an Ethernet device.
    #[cfg(feature = "libpcap")]
    const ARP: &str = "4\n40 0 0 12\n21 0 1 2054\n6 0 0 262144\n6 0 0 0\n";
}
