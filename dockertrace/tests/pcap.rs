//! `--pcap` and `--filter` end to end: `dockertrace --runtime netns --mode bridge` through the
//! real binary (real programs, real traffic through the topology the run builds).
//!
//! - the pcapng file parses (pcap-file, and `tcpdump -r` / `tshark -r` when installed), has one
//!   interface per (device, namespace) named as the live view names it, the workload's TCP
//!   segments at every hop with comments naming the event, packet and hop, and the snap length
//!   respected;
//! - `--filter` is evaluated in the kernel: with `arp`, only ARP frames and events come back
//!   (the workload's TCP segments are rejected in the kernel, counted); with `tcp port 10000`
//!   no ARP comes back; a bad expression is libpcap's message on one line, exit 2, nothing
//!   created.
//!
//! Set `DOCKERTRACE_BIN` to run these against a binary at another path (e.g. inside a VM).
mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use dockertrace::recording::{ModeRun, Recording};
use pcap_file::DataLink;
use support::pcapng::{read_pcapng, Pkt};

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Run {
    code: i32,
    stderr: String,
    run: Option<ModeRun>,
    pcap: PathBuf,
}

fn run_bridge(tag: &str, extra: &[&str]) -> Run {
    let dir = std::env::temp_dir();
    let rec = dir.join(format!("dt-pcap-{tag}-{}.json", std::process::id()));
    let pcap = dir.join(format!("dt-pcap-{tag}-{}.pcapng", std::process::id()));
    let _ = std::fs::remove_file(&rec);
    let _ = std::fs::remove_file(&pcap);
    let out = Command::new(support::runs::bin())
        // 448-byte records at every hop of an unthrottled echo: a ring that a busy machine
        // (the VMs' emulation, parallel builds) does not fill before the reader drains it.
        .args([
            "--runtime",
            "netns",
            "--mode",
            "bridge",
            "--duration",
            "1",
            "-q",
            "--no-untraced",
            "--ring-mib",
            "64",
        ])
        .arg("--record")
        .arg(&rec)
        .arg("--pcap")
        .arg(&pcap)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run dockertrace");
    let run = Recording::load(&rec).ok().and_then(|r| r.runs.into_iter().next());
    let _ = std::fs::remove_file(&rec);
    Run {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        run,
        pcap,
    }
}

impl Run {
    fn ok(&self) -> &ModeRun {
        assert_eq!(self.code, 0, "exit {}\n{}", self.code, self.stderr);
        let run = self.run.as_ref().expect("a recording");
        assert_eq!(run.counters.lost(), 0, "lost events");
        run
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pcap);
    }
}

/// The EtherType of an Ethernet frame.
fn ethertype(p: &Pkt) -> u16 {
    u16::from_be_bytes([p.data[12], p.data[13]])
}

/// TCP (source port, destination port, seq) of an Ethernet/IPv4 frame.
fn tcp(p: &Pkt) -> Option<(u16, u16, u32)> {
    if p.link != DataLink::ETHERNET || ethertype(p) != 0x0800 || p.data[23] != 6 {
        return None;
    }
    let l4 = 14 + usize::from(p.data[14] & 0x0f) * 4;
    let b = p.data.get(l4..l4 + 8)?;
    Some((
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
        u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    ))
}

fn no_leftovers() {
    assert_eq!(support::runs::leftover_namespaces(), Vec::<String>::new(), "namespaces left");
    assert!(dockertrace::sys::links::tagged_links().is_empty(), "links left");
}

/// Packets per interface read back by an installed reader (`tcpdump -r`, `tshark -r`).
fn reader_count(tool: &str, path: &Path) -> Option<usize> {
    // Debian's tcpdump drops privileges when reading: -Z root keeps it working where there is
    // no `tcpdump` user (the VMs).
    let extra: &[&str] = if tool == "tcpdump" { &["-nn", "-Z", "root"] } else { &[] };
    let out = Command::new(tool).arg("-r").arg(path).args(extra).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).lines().count())
}

/// `tcpdump -i eth0` in the run's server namespace (created by the run: waited for), writing
/// the workload's segments to a file until stopped (by its pid).
struct Tcpdump {
    child: std::process::Child,
    file: PathBuf,
}

impl Tcpdump {
    /// Starts once the run's server namespace exists; None without tcpdump or the namespace.
    fn start_in_server_ns() -> Option<Tcpdump> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // The namespace, once its eth0 is up (the run moves it in after creating the namespace).
        let ns = loop {
            let found = support::runs::leftover_namespaces().into_iter().find(|n| n.ends_with("-server"));
            let up = |ns: &String| {
                Command::new("ip")
                    .args(["-n", ns, "link", "show", "eth0", "up"])
                    .output()
                    .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
            };
            if let Some(ns) = found.filter(up) {
                break ns;
            }
            if std::time::Instant::now() > deadline {
                eprintln!("skipping the tcpdump oracle: the run's server namespace did not appear");
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let file = std::env::temp_dir().join(format!("dt-pcap-oracle-{}.pcap", std::process::id()));
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{ns}"))
            .args(["tcpdump", "-i", "eth0", "-nn", "-U", "-Z", "root", "-w"])
            .arg(&file)
            .arg("tcp port 10000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| eprintln!("skipping the tcpdump oracle: {e}"))
            .ok()?;
        Some(Tcpdump { child, file })
    }

    /// Stops tcpdump and returns the frames it wrote.
    fn stop(mut self) -> Vec<Vec<u8>> {
        // SAFETY: a signal to the child we started, by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let mut out = Vec::new();
        let f = File::open(&self.file).expect("tcpdump's file");
        let mut r = pcap_file::pcap::PcapReader::new(f).expect("tcpdump's file is pcap");
        while let Some(p) = r.next_packet() {
            match p {
                Ok(p) => out.push(p.data.to_vec()),
                // The last record may be cut short by the stop.
                Err(e) => {
                    eprintln!("tcpdump's file ends early: {e}");
                    break;
                }
            }
        }
        let _ = std::fs::remove_file(&self.file);
        out
    }
}

#[test]
fn bridge_run_writes_every_hop_to_pcapng() {
    let Some(_s) = support::serial(&SERIAL) else { return };
    let oracle = std::thread::spawn(Tcpdump::start_in_server_ns);
    let r = run_bridge("hops", &["--snaplen", "60"]);
    let seen_by_tcpdump = oracle.join().unwrap().map(Tcpdump::stop);
    r.ok();
    no_leftovers();
    let pkts = read_pcapng(&r.pcap);
    assert!(!pkts.is_empty(), "no packets in the file");
    // One interface per (device, namespace), named as the live view names them.
    let names: BTreeSet<&str> = pkts.iter().map(|p| p.iface.as_str()).collect();
    for want in ["eth0@server", "eth0@client"] {
        assert!(names.contains(want), "no interface {want} in {names:?}");
    }
    assert!(names.iter().any(|n| n.ends_with("(server)@host")), "no veth of the server's in {names:?}");
    assert!(names.iter().any(|n| n.ends_with("(client)@host")), "no veth of the client's in {names:?}");
    // Snap length: at most 60 bytes kept, the length on the wire recorded.
    assert!(pkts.iter().all(|p| p.data.len() <= 60 && p.orig_len as usize >= p.data.len()));
    assert!(pkts.iter().any(|p| p.data.len() == 60 && p.orig_len > 60), "no frame was cut at 60 bytes");
    // The workload's TCP segments at every hop of the path, each with its comment.
    let mut by_seq: BTreeMap<(u16, u16, u32), BTreeSet<&str>> = BTreeMap::new();
    for p in &pkts {
        assert!(p.comment.starts_with("event="), "{}", p.comment);
        if let Some(t) = tcp(p).filter(|t| t.0 == 10000 || t.1 == 10000) {
            assert!(p.comment.contains(" packet=#") && p.comment.contains(" hop="), "{}", p.comment);
            by_seq.entry(t).or_default().insert(p.iface.as_str());
        }
    }
    assert!(!by_seq.is_empty(), "no workload segment in the file");
    // A segment from the client crosses its eth0, both veths' host ends and the server's eth0.
    let crossed = by_seq.iter().filter(|(t, ifs)| {
        t.1 == 10000
            && ifs.contains("eth0@client")
            && ifs.contains("eth0@server")
            && ifs.iter().filter(|i| i.ends_with("@host") && i.contains("veth")).count() == 2
    });
    assert!(crossed.count() > 0, "no segment seen at every hop: {by_seq:?}");
    // The oracle: every data segment tcpdump captured on the server's eth0 is in the file at
    // eth0@server, byte for byte (its first 60 bytes: Ethernet, IP and TCP headers). Whole
    // frames: pcap-file refuses records longer than their file's snap length.
    match seen_by_tcpdump {
        Some(frames) if !frames.is_empty() => {
            let ours: BTreeSet<&[u8]> =
                pkts.iter().filter(|p| p.iface == "eth0@server").map(|p| p.data.as_slice()).collect();
            let data: Vec<&Vec<u8>> = frames.iter().filter(|f| f.len() >= 60).collect();
            assert!(!data.is_empty(), "tcpdump saw no full-size segment");
            for f in &data {
                assert!(
                    ours.contains(&f[..60]),
                    "a segment tcpdump saw on eth0@server is not in the file: {f:02x?}"
                );
            }
            eprintln!("tcpdump oracle: {} segments on eth0@server, all in the file", data.len());
        }
        Some(_) => eprintln!("skipping the tcpdump oracle: tcpdump captured nothing (started too late?)"),
        None => {}
    }
    for tool in ["tcpdump", "tshark"] {
        match reader_count(tool, &r.pcap) {
            Some(n) => assert_eq!(n, pkts.len(), "{tool} -r reads another number of packets"),
            None => eprintln!("skipping the {tool} -r check: {tool} not installed here"),
        }
    }
}

/// `tcpdump -ddd arp` on an Ethernet device (`capture::tests` checks libpcap still says so).
const ARP_LISTING: &str = "4\n40 0 0 12\n21 0 1 2054\n6 0 0 262144\n6 0 0 0\n";

#[test]
fn filter_runs_in_the_kernel_and_follows_matched_packets() {
    let Some(_s) = support::serial(&SERIAL) else { return };
    let mut r = run_bridge("arp", &["--filter", "arp"]);
    let static_build = r.stderr.contains("built without libpcap");
    if static_build {
        // The static build (the VMs) has no libpcap: the same program, as `tcpdump -ddd arp`
        // prints it on an Ethernet device.
        eprintln!("no libpcap in this build: --filter gets `tcpdump -ddd arp`'s program");
        r = run_bridge("arp-listing", &["--filter", ARP_LISTING]);
    }
    let run = r.ok();
    no_leftovers();
    let pkts = read_pcapng(&r.pcap);
    assert!(!pkts.is_empty(), "the ARP exchange is in the file");
    assert!(pkts.iter().all(|p| p.link == DataLink::ETHERNET && ethertype(p) == 0x0806), "only ARP frames");
    // The request crosses the bridge: seen on the client's side and the server's.
    let names: BTreeSet<&str> = pkts.iter().map(|p| p.iface.as_str()).collect();
    assert!(names.contains("eth0@client") && names.contains("eth0@server"), "{names:?}");
    // The workload's segments were rejected in the kernel (counted), none went out.
    let c = &run.counters;
    assert!(c.cbpf_accepted > 0 && c.cbpf_rejected > 0, "{c:?}");
    assert!(c.sent < c.cbpf_rejected, "the rejected TCP events outnumber what went out: {c:?}");
    let workload = run.workload.as_ref().map_or(0, |w| w.messages);
    assert!(workload > 0, "the workload ran");

    if static_build {
        eprintln!("skipping the `tcp port 10000` run: this build has no libpcap");
        return;
    }
    let r = run_bridge("tcp", &["--filter", "tcp port 10000"]);
    r.ok();
    no_leftovers();
    let pkts = read_pcapng(&r.pcap);
    assert!(
        pkts.iter().all(|p| tcp(p).is_some_and(|t| t.0 == 10000 || t.1 == 10000)),
        "only the workload's flow"
    );
    assert!(pkts.iter().any(|p| p.iface == "eth0@server"), "its segments reach the server");
}

#[test]
fn a_bad_filter_is_libpcaps_one_line_and_exit_2() {
    let Some(_s) = support::serial(&SERIAL) else { return };
    let out = Command::new(support::runs::bin())
        .args(["--runtime", "netns", "--mode", "bridge", "--duration", "1", "--filter", "tcp prot 10000"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("built without libpcap") {
        eprintln!("skipping: this dockertrace was built without libpcap");
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("--filter `tcp prot 10000`") && err.contains("syntax error"), "{err}");
    no_leftovers();
}
