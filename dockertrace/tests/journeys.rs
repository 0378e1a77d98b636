//! Root tests of packet journeys: the real programs, real echo traffic through topologies
//! built here, exactly N messages; then every data packet must be one journey with the
//! topology's device sequence, exact hop deltas, the sockets' tuple and sequence numbers —
//! and, per device, the very packets `tcpdump -i DEV` captured in that namespace.
mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
};

use dockertrace::{
    decode::TracedEvent,
    filter::Filter,
    packet::{tcp, Family, Headers},
    sys::netns::{self, Namespace},
};
use support::{options, skip_reason, trace_while, Child, EchoServer, Topology};

const N: u64 = 60;
const SIZE: usize = 42;

/// A device, as the tests name it: (netns inode, ifindex).
type Dev = (u32, u32);

fn dev_of(ns: &Namespace, name: &str) -> Dev {
    (ns.inode().unwrap(), ns.ifindex(name).unwrap())
}

/// `n` echo messages of `SIZE` bytes from namespace `from` to `server`, one at a time on one
/// connection; returns the client socket's local address.
fn echo(from: PathBuf, server: SocketAddr, n: u64) -> SocketAddr {
    netns::run_in(&from, move || {
        let mut s = TcpStream::connect(server).expect("connect");
        s.set_nodelay(true).unwrap();
        let local = s.local_addr().unwrap();
        let msg = [b'j'; SIZE];
        let mut back = [0u8; SIZE];
        for _ in 0..n {
            s.write_all(&msg).unwrap();
            s.read_exact(&mut back).unwrap();
        }
        local
    })
    .unwrap()
}

/// `tcpdump -i DEV` in a namespace, writing to a file, until stopped.
struct Capture {
    child: Child,
    file: PathBuf,
    dev: Dev,
    /// What tcpdump printed after it started listening (its closing statistics).
    said: std::sync::Arc<std::sync::Mutex<String>>,
}

/// A TCP data segment as both sides report it: (source, destination, seq, payload length).
type Segment = (SocketAddr, SocketAddr, u32, u16);

impl Capture {
    /// Starts capturing on `dev` in `ns` and returns once tcpdump listens; None without
    /// tcpdump.
    fn start(ns: &Namespace, name: &str) -> Option<Capture> {
        let file =
            std::env::temp_dir().join(format!("dt-journey-{}-{}-{name}.pcap", std::process::id(), ns.name()));
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            ns.name(),
            "tcpdump",
            "-i",
            name,
            "-p",
            "-nn",
            // Headers are all the oracle reads. A short snaplen and a larger buffer give the
            // capture ring thousands of frames: with the default snaplen libpcap sizes each
            // frame for a 64 KiB GSO packet, and a few dozen segments fill the ring while
            // tcpdump waits for a CPU.
            "-s",
            "256",
            "-B",
            "8192",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-w",
        ])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = Child::spawn(&mut cmd);
        let err = child.take_stderr();
        // Wait (boundedly) for tcpdump to say it listens; keep draining its stderr afterwards
        // so that it never blocks on it.
        let (tx, rx) = std::sync::mpsc::channel();
        let later = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let said_later = later.clone();
        std::thread::spawn(move || {
            let (mut said, mut listening) = (String::new(), false);
            for line in BufReader::new(err).lines() {
                let line = line.unwrap_or_default();
                if line.contains("listening on") {
                    listening = true;
                    let _ = tx.send(Ok(()));
                } else if listening {
                    let mut l = said_later.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                } else if said.len() < 2000 {
                    said.push_str(&line);
                    said.push('\n');
                }
            }
            let _ = tx.send(Err(said));
        });
        match rx.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(Ok(())) => {}
            Ok(Err(said)) => {
                println!("tcpdump -i {name} in {} did not start: {}", ns.name(), said.trim());
                return None;
            }
            Err(_) => {
                println!("tcpdump -i {name} in {} did not start within 20 s", ns.name());
                child.kill();
                return None;
            }
        }
        Some(Capture { child, file, dev: dev_of(ns, name), said: later })
    }

    /// Stops tcpdump (by its pid) and reads back the TCP data segments it captured.
    fn stop(mut self) -> Captured {
        support::wait_until_settled(&self.file);
        // tcpdump keeps SIGINT ignored when it was ignored on entry (as under the VMs' init):
        // then, after a grace period, SIGKILL. With -U every packet is already in the file.
        self.child.interrupt();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while self.child.running() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if self.child.running() {
            self.child.kill();
        }
        self.child.wait();
        let out =
            Command::new("tcpdump").args(["-r"]).arg(&self.file).args(["-nn", "-S", "-Z", "root"]).output();
        let _ = std::fs::remove_file(&self.file);
        let out = out.expect("tcpdump -r");
        // Debian's tcpdump drops privileges when reading too: -Z root keeps it working where
        // there is no `tcpdump` user (the VMs).
        assert!(out.status.success(), "tcpdump -r failed: {}", String::from_utf8_lossy(&out.stderr));
        let said = self.said.lock().unwrap().clone();
        let dropped = said.lines().find_map(|l| {
            l.trim().strip_suffix("packets dropped by kernel").and_then(|n| n.trim().parse().ok())
        });
        Captured {
            dev: self.dev,
            segments: parse_tcpdump(&String::from_utf8_lossy(&out.stdout)),
            dropped,
            said,
        }
    }
}

/// What one tcpdump captured.
struct Captured {
    dev: Dev,
    segments: BTreeSet<Segment>,
    /// The packets tcpdump says the kernel dropped before it could read them.
    dropped: Option<u64>,
    /// tcpdump's closing statistics.
    said: String,
}

/// Data segments from `tcpdump -r FILE -nn -S` lines such as
/// `IP 10.201.1.1.45678 > 10.201.1.2.40000: Flags [P.], seq 1000:1042, ack 7, win 502, length 42`.
fn parse_tcpdump(text: &str) -> BTreeSet<Segment> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let Some(at) = line.find(" > ") else { continue };
        let Some(seq_at) = line.find(", seq ") else { continue };
        let before = &line[..at];
        let src = before.rsplit(' ').next().unwrap_or("");
        let after = &line[at + 3..];
        let dst = after.split(':').next().unwrap_or("");
        let seq = line[seq_at + 6..].split([',', ':']).next().unwrap_or("");
        let len = line.rsplit("length ").next().unwrap_or("").trim_end_matches(|c: char| !c.is_ascii_digit());
        let sock = |s: &str| {
            let (ip, port) = s.rsplit_once('.')?;
            Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
        };
        if let (Some(s), Some(d), Ok(seq), Ok(len)) = (sock(src), sock(dst), seq.parse(), len.parse::<u16>())
        {
            if len > 0 {
                out.insert((s, d, seq, len));
            }
        }
    }
    out
}

/// A run's journeys: events by packet id, in hop order.
fn journeys(events: &[TracedEvent]) -> BTreeMap<u64, Vec<&TracedEvent>> {
    let mut j: BTreeMap<u64, Vec<&TracedEvent>> = BTreeMap::new();
    for e in events {
        if let Some(h) = &e.hop {
            j.entry(h.packet).or_default().push(e);
        }
    }
    for hops in j.values_mut() {
        hops.sort_by_key(|e| e.hop.unwrap().hop);
    }
    j
}

fn headers_of(hops: &[&TracedEvent]) -> Option<Headers> {
    hops.iter().find_map(|e| e.headers)
}

/// The devices a journey crossed, in order, repeats folded.
fn devices(hops: &[&TracedEvent]) -> Vec<Dev> {
    let mut out: Vec<Dev> = Vec::new();
    for e in hops {
        if let Some(d) = &e.dev {
            if out.last() != Some(&(d.netns, d.ifindex)) {
                out.push((d.netns, d.ifindex));
            }
        }
    }
    out
}

fn segment(h: &Headers) -> Segment {
    (SocketAddr::new(h.saddr, h.sport), SocketAddr::new(h.daddr, h.dport), h.seq, h.payload_len)
}

/// What a topology's packets must show.
struct Expected<'a> {
    /// The devices a request crosses, in order (a reply: the same, reversed).
    request: Vec<Dev>,
    /// The (namespace, device) pairs whose tcpdump capture is the oracle.
    capture: Vec<(&'a Namespace, &'a str)>,
    /// The client's first message is preceded by an ARP request.
    arp: bool,
    /// The path's last device may lack an event (see its use).
    last_optional: bool,
}

/// One topology's test: `request` and `reply` are the device sequences a data packet must
/// cross each way; `capture`: the (namespace, device) pairs to check against tcpdump.
fn check_topology(
    a: &Namespace,
    netns: Vec<u32>,
    server_in: &Namespace,
    server_ip: &str,
    expected: Expected<'_>,
) {
    let Expected { request, capture, arp, last_optional } = expected;
    let filter = Filter { netns: netns.into_iter().collect(), ..Default::default() };
    let mut opts = options("net:*", filter);
    opts.stacks = dockertrace::stacks::StackMode::Adaptive;
    let server = EchoServer::start_in(Some(&server_in.path()), "0.0.0.0");
    let server_addr = SocketAddr::new(server_ip.parse().unwrap(), server.addr.port());
    let a_path = a.path();
    // The captures run from before the tracer attaches until after it stopped: the traced
    // window lies within theirs, and the traffic within both.
    let mut started: Vec<Capture> = Vec::new();
    let mut tcpdump_missing = false;
    for (ns, d) in &capture {
        match Capture::start(ns, d) {
            Some(c) => started.push(c),
            None => tcpdump_missing = true,
        }
    }
    let t0 = std::time::Instant::now();
    let (traced, client) = trace_while(&opts, move || echo(a_path, server_addr, N));
    println!(
        "traced in {:.1} s (attach {:?})",
        t0.elapsed().as_secs_f64(),
        traced.report.cost.as_ref().map(|c| c.attach_s)
    );
    let captured: Vec<Captured> = started.into_iter().map(Capture::stop).collect();
    drop(server);
    let c = &traced.report.counters;
    assert_eq!(c.lost(), 0, "no event may be lost at this rate: {c:?}");
    assert_eq!(c.journey_evicted, 0, "no journey may be cut short at this rate: {c:?}");
    let js = journeys(&traced.events);
    assert!(!js.is_empty(), "no journeys at all");
    let client_ip: IpAddr = client.ip();
    let server_ip: IpAddr = server_addr.ip();

    // Every journey: hops 0..k without gaps, deltas exact and adding up to its span, one packet.
    for (id, hops) in &js {
        for (i, e) in hops.iter().enumerate() {
            let h = e.hop.unwrap();
            assert_eq!(usize::from(h.hop), i, "journey {id:#x}: hop {} at position {i}", h.hop);
            if i > 0 {
                assert_eq!(h.delta_ns, e.ts_ns - hops[i - 1].ts_ns, "journey {id:#x}: hop {i}'s delta");
            } else {
                assert_eq!(h.delta_ns, 0);
            }
        }
        let sum: u64 = hops.iter().map(|e| e.hop.unwrap().delta_ns).sum();
        assert_eq!(
            sum,
            hops.last().unwrap().ts_ns - hops[0].ts_ns,
            "journey {id:#x}: deltas add up to its span"
        );
        let first = headers_of(hops);
        for e in hops {
            if let (Some(h), Some(f)) = (e.headers, first) {
                assert_eq!(h, f, "journey {id:#x} merged two packets: {f} and {h}");
            }
        }
    }

    // The data packets, each way: exactly N journeys each, the sockets' tuple, seq advancing by
    // the message size, the topology's devices in order.
    let data = |from: IpAddr, sport: Option<u16>| -> Vec<(Headers, Vec<Dev>)> {
        js.values()
            .filter_map(|hops| {
                let h = headers_of(hops)?;
                let ours = h.is_tcp()
                    && h.saddr == from
                    && h.payload_len > 0
                    && sport.is_none_or(|p| h.sport == p)
                    && (h.sport == server_addr.port() || h.dport == server_addr.port());
                ours.then(|| (h, devices(hops)))
            })
            .collect()
    };
    let requests = data(client_ip, Some(client.port()));
    let replies = data(server_ip, Some(server_addr.port()));
    let reply_path: Vec<Dev> = request.iter().rev().copied().collect();
    for (what, packets, path) in [("request", &requests, &request), ("reply", &replies, &reply_path)] {
        assert_eq!(packets.len() as u64, N, "{what}s: one journey per data packet");
        let mut seqs: Vec<u32> = packets.iter().map(|(h, _)| h.seq).collect();
        seqs.sort_unstable();
        for w in seqs.windows(2) {
            assert_eq!(w[1].wrapping_sub(w[0]), SIZE as u32, "{what}s: seq advances by the message size");
        }
        for (h, devs) in packets.iter() {
            assert_eq!(h.payload_len as usize, SIZE, "{what}: {h}");
            assert!(
                h.tcp_flags & tcp::PSH != 0 && h.tcp_flags & (tcp::SYN | tcp::FIN | tcp::RST) == 0,
                "{what}: {h}"
            );
            // Older kernels (5.10) hand a frame from a macvlan parent to the macvlan in another
            // round of the same receive, without an event of its own: there the last device
            // may be missing, and only there.
            let short_ok = last_optional && devs.len() + 1 == path.len() && devs[..] == path[..devs.len()];
            assert!(devs == path || short_ok, "{what} {h} crossed {devs:?}, expected {path:?}");
        }
    }
    for (h, _) in &requests {
        assert_eq!(
            (h.saddr, h.sport, h.daddr, h.dport),
            (client_ip, client.port(), server_ip, server_addr.port())
        );
    }
    // The handshake: the client's SYN is a journey of its own, and the first request's seq
    // follows it.
    let syn = js
        .values()
        .filter_map(|hops| headers_of(hops))
        .find(|h| h.is_tcp() && h.saddr == client_ip && h.sport == client.port() && h.tcp_flags == tcp::SYN)
        .expect("the client's SYN");
    assert_eq!(requests.iter().map(|(h, _)| h.seq).min(), Some(syn.seq.wrapping_add(1)));
    // The first message's ARP request is a journey of its own (none over loopback).
    let arp_expected = arp;
    let arp = js
        .values()
        .filter_map(|hops| headers_of(hops))
        .find(|h| h.family == Family::Arp && h.op == 1 && h.saddr == client_ip && h.daddr == server_ip);
    assert_eq!(arp.is_some(), arp_expected, "the client's ARP request for the server");

    // The oracle: per device, the data segments of the journeys that crossed it are exactly
    // those tcpdump captured there.
    if tcpdump_missing {
        println!("skipping: the tcpdump oracle (tcpdump is not installed or did not start)");
        return;
    }
    for Captured { dev, segments: seen, dropped, said } in captured {
        let mine: BTreeSet<Segment> = js
            .values()
            .filter(|hops| hops.iter().any(|e| e.is_on(dev.0, dev.1)))
            .filter_map(|hops| headers_of(hops))
            .filter(|h| {
                h.is_tcp()
                    && h.payload_len > 0
                    && (h.sport == server_addr.port() || h.dport == server_addr.port())
            })
            .map(|h| segment(&h))
            .collect();
        let seen: BTreeSet<Segment> = seen
            .into_iter()
            .filter(|s| s.0.port() == server_addr.port() || s.1.port() == server_addr.port())
            .collect();
        // The journeys cross the device with every request and reply, and every segment
        // tcpdump saw there is one of them.
        assert_eq!(mine.len() as u64, 2 * N, "journeys across {dev:?}: {} data segments", mine.len());
        let unseen: Vec<_> = seen.difference(&mine).collect();
        assert!(unseen.is_empty(), "device {dev:?}: tcpdump saw segments no journey has: {unseen:?}");
        // Equal sets when tcpdump kept up. When it did not — it says so, "N packets dropped
        // by kernel", which happens under QEMU's emulation (75 of 120 seen on 6.1) and on a
        // busy two-core host — the subset above is all it can vouch for.
        if seen.len() as u64 == 2 * N {
            assert_eq!(mine, seen, "device {dev:?}: journeys and tcpdump disagree");
        } else {
            let said = said.trim().replace('\n', "; ");
            println!(
                "note: tcpdump on {dev:?} captured {} of {} data segments; each is in the journeys ({said})",
                seen.len(),
                2 * N
            );
            assert!(
                in_vm() || dropped.is_some_and(|d| d > 0),
                "tcpdump on {dev:?} saw {} data segments of {} on the host and reports no loss: {said}",
                seen.len(),
                2 * N
            );
        }
    }
}

#[test]
fn veth_pair_journeys() {
    if let Some(why) = skip_reason() {
        println!("skipping: {why}");
        return;
    }
    let t = Topology::veth();
    let request = vec![dev_of(&t.a, t.a_dev), dev_of(&t.b, t.b_dev)];
    check_topology(
        &t.a,
        t.netns(),
        &t.b,
        t.b_ip,
        Expected {
            request,
            capture: vec![(&t.a, t.a_dev), (&t.b, t.b_dev)],
            arp: true,
            last_optional: false,
        },
    );
}

#[test]
fn bridge_journeys_cross_both_ports() {
    if let Some(why) = skip_reason() {
        println!("skipping: {why}");
        return;
    }
    let t = Topology::bridge();
    let s = &t.middle[0];
    // The bridge forwards without an event on the bridge device: its ports are the hops.
    let request = vec![dev_of(&t.a, "eth0"), dev_of(s, "dtpa"), dev_of(s, "dtpb"), dev_of(&t.b, "eth0")];
    let capture = vec![(&t.a, "eth0"), (s, "dtpa"), (s, "dtpb"), (&t.b, "eth0")];
    check_topology(
        &t.a,
        t.netns(),
        &t.b,
        t.b_ip,
        Expected { request, capture, arp: true, last_optional: false },
    );
}

#[test]
fn macvlan_journeys_pass_the_parent() {
    if let Some(why) = skip_reason().or_else(|| support::driver_skip_reason("macvlan")) {
        println!("skipping: {why}");
        return;
    }
    let t = Topology::macvlan();
    let p = &t.middle[0];
    // Bridge-mode macvlans on one parent: the frame is forwarded to the parent, whose
    // receive handler hands it to the destination macvlan (with an event of its own on 6.x
    // kernels; 5.10 and 6.1 go another round without one).
    let request = vec![dev_of(&t.a, t.a_dev), dev_of(p, "dtmp0"), dev_of(&t.b, t.b_dev)];
    // The oracle on the parent only: there every frame has events on every kernel, while a
    // macvlan's receive may have none on 5.10 and 6.1 (its tcpdump sees the frame all the same).
    let capture = vec![(p, "dtmp0")];
    check_topology(
        &t.a,
        t.netns(),
        &t.b,
        t.b_ip,
        Expected { request, capture, arp: true, last_optional: true },
    );
}

#[test]
fn loopback_journeys_stay_on_lo() {
    if let Some(why) = skip_reason() {
        println!("skipping: {why}");
        return;
    }
    let ns = support::quiet_ns("lo");
    ns.ip(&["addr", "add", "10.201.9.1/32", "dev", "lo"]).unwrap();
    let lo = dev_of(&ns, "lo");
    let expected =
        Expected { request: vec![lo], capture: vec![(&ns, "lo")], arp: false, last_optional: false };
    check_topology(&ns, vec![lo.0], &ns, "10.201.9.1", expected);
}

/// Whether the test runs in the QEMU matrix (`cargo xtask vm-test` sets the variable).
fn in_vm() -> bool {
    std::env::var_os("DOCKERTRACE_TEST_VM").is_some()
}
