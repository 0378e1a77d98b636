//! End-to-end: `dockertrace --runtime netns --mode overlay` through the real binary. Two
//! simulated hosts joined by an underlay veth, each with Docker's overlay sandbox (br0 +
//! vxlan0): every packet between server and client crosses the VXLAN tunnel. The oracle is
//! `tcpdump -i eth0` in host1's namespace: the encapsulated packets it captures (outer and inner
//! tuple, VNI) must be the very ones dockertrace reports on that device, and the data packets'
//! journeys must run from one container through both hosts to the other.
//!
//! Set `DOCKERTRACE_BIN` to run these against a binary at another path (e.g. inside a VM).
mod support;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// Runs share machine-wide state (leftover checks): one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const PORT: &str = "10051";

/// An encapsulated packet as both sides describe it: outer source and destination, VNI, inner
/// source and destination (`addr.port`), TCP flags, sequence number (None: not printed, a pure
/// ACK), acknowledgment number (None: no ACK flag) and payload length.
type Key = (String, String, u32, String, String, String, Option<u64>, Option<u64>, u64);

/// `ip netns exec NS tcpdump -i eth0 udp port 4789`, writing to a file; returns once tcpdump
/// listens.
struct Tcpdump {
    child: support::Child,
    file: std::path::PathBuf,
    said: Arc<Mutex<String>>,
}

impl Tcpdump {
    fn start(ns: &str) -> Tcpdump {
        let file = std::env::temp_dir().join(format!("dt-overlay-{}.pcap", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let mut child = support::Child::spawn(
            Command::new("ip")
                .args(["netns", "exec", ns, "tcpdump", "-i", "eth0", "-nn", "-U", "-s", "256", "-B", "8192"])
                .args(["-Z", "root", "-w"])
                .arg(&file)
                .args(["udp", "port", "4789"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let mut lines = BufReader::new(child.take_stderr()).lines();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut head = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap_or_default();
            head.push_str(&line);
            head.push('\n');
            if line.contains("listening on") {
                break;
            }
            assert!(Instant::now() < deadline, "tcpdump did not start:\n{head}");
        }
        let said = Arc::new(Mutex::new(String::new()));
        let keep = said.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                let mut s = keep.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
        Tcpdump { child, file, said }
    }

    /// Stops tcpdump (by pid) and reads back the encapsulated TCP packets it wrote, with the
    /// number of packets its filter received (written or not: the run's teardown may take the
    /// device away before tcpdump drained its buffer), None when the kernel dropped some.
    fn stop(mut self) -> (BTreeMap<Key, u32>, Option<u64>, String) {
        support::wait_until_settled(&self.file);
        if self.child.running() {
            self.child.interrupt();
            let deadline = Instant::now() + Duration::from_secs(3);
            while self.child.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            self.child.kill();
        }
        self.child.wait();
        let out =
            Command::new("tcpdump").arg("-r").arg(&self.file).args(["-nn", "-S", "-Z", "root"]).output();
        let _ = std::fs::remove_file(&self.file);
        let out = out.expect("tcpdump -r");
        std::thread::sleep(Duration::from_millis(100));
        let said = self.said.lock().unwrap().clone();
        let stat = |what: &str| {
            said.lines().find_map(|l| l.trim().strip_suffix(what).and_then(|n| n.trim().parse::<u64>().ok()))
        };
        let received =
            stat("packets received by filter").filter(|_| stat("packets dropped by kernel") == Some(0));
        (parse(&String::from_utf8_lossy(&out.stdout)), received, said)
    }
}

/// `tcpdump -r -nn -S` of VXLAN frames: an outer line (`IP A.p > B.4789: VXLAN, flags [I]
/// (0x08), vni 4096`) followed by the inner packet's (`IP a.p > b.q: Flags [P.], seq 1:43, ack
/// 7, …, length 42`).
fn parse(text: &str) -> BTreeMap<Key, u32> {
    let mut out = BTreeMap::new();
    let mut outer: Option<(String, String, u32)> = None;
    for line in text.lines() {
        if let Some(at) = line.find(": VXLAN") {
            let ends: Vec<&str> = line[..at].split_whitespace().rev().take(3).collect();
            let vni = line.rsplit("vni ").next().and_then(|v| v.trim().parse().ok());
            let addr = |s: &str| s.rsplit_once('.').map(|(a, _)| a.to_owned()).unwrap_or_default();
            outer = vni.map(|vni| (addr(ends[2]), addr(ends[0]), vni));
            continue;
        }
        let Some((os, od, vni)) = outer.take() else { continue };
        let Some(rest) = line.trim_start().strip_prefix("IP ") else { continue };
        let Some((src, rest)) = rest.split_once(" > ") else { continue };
        let Some((dst, rest)) = rest.split_once(": Flags [") else { continue };
        let flags = rest.split(']').next().unwrap_or("").to_owned();
        let num =
            |field: &str| rest.split(field).nth(1).and_then(|s| s.split([',', ':']).next()?.parse().ok());
        let (seq, ack) = (num(", seq "), num(", ack "));
        let len = line.rsplit("length ").next().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
        *out.entry((os, od, vni, src.to_owned(), dst.to_owned(), flags, seq, ack, len)).or_insert(0) += 1;
    }
    out
}

/// The same packets from dockertrace's `--json` lines: one per journey on host1's `eth0`
/// carrying a tunnel (a journey crosses that device once).
fn traced(events: &[serde_json::Value]) -> BTreeMap<Key, u32> {
    let mut by_packet: BTreeMap<u64, &serde_json::Value> = BTreeMap::new();
    for e in events {
        if e["netns_name"] == "host1" && e["dev"] == "eth0" && e["tunnel"] == "vxlan" && e["proto"] == "TCP" {
            if let (Some(p), Some(_)) = (e["packet"].as_u64(), e["hop"].as_u64()) {
                by_packet.entry(p).or_insert(e);
            }
        }
    }
    let mut out = BTreeMap::new();
    for e in by_packet.values() {
        let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
        let n = |k: &str| e[k].as_u64().unwrap_or(0);
        let len = n("payload_len");
        // tcpdump prints a sequence number for segments with data or SYN/FIN only.
        let flags = s("tcp_flags").replace("none", "");
        let seq = (len > 0 || flags.contains(['S', 'F'])).then(|| n("seq"));
        let ack = flags.contains('.').then(|| n("ack"));
        let key = (
            s("outer_saddr"),
            s("outer_daddr"),
            n("vni") as u32,
            format!("{}.{}", s("saddr"), n("sport")),
            format!("{}.{}", s("daddr"), n("dport")),
            flags,
            seq,
            ack,
            len,
        );
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

/// Prints `skipping: <reason>` without the vxlan driver; in the kernel matrix's VMs, whose
/// initramfs carries it, its absence fails the test instead.
fn no_vxlan() -> bool {
    let Some(r) = support::driver_skip_reason("vxlan") else { return false };
    assert!(std::env::var_os("DOCKERTRACE_TEST_VM").is_none(), "{r} in the VM");
    eprintln!("skipping: {r}");
    true
}

/// The first `dockertrace-<run>-host1` in the run's stderr, and the underlay's two addresses
/// (`underlay 10.213.84.0/24: eth0 of … (10.213.84.1) ↔ eth0 of … (10.213.84.2)`).
fn underlay(line: &str) -> Option<(String, String, String)> {
    let ns = line.split_whitespace().find(|w| w.starts_with("dockertrace-") && w.ends_with("-host1"))?;
    let addrs: Vec<&str> = line.split('(').skip(1).filter_map(|p| p.split(')').next()).collect();
    Some((ns.to_owned(), addrs.first()?.to_string(), addrs.get(1)?.to_string()))
}

#[test]
fn journeys_cross_the_tunnel_and_match_tcpdump_on_the_underlay() {
    let Some(_s) = support::serial(&SERIAL) else { return };
    if no_vxlan() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("dt-overlay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, rec) = (dir.join("events.json"), dir.join("run.json"));
    let mut child = support::Child::spawn(
        Command::new(support::runs::bin())
            .args(["--runtime", "netns", "--mode", "overlay", "--duration", "2", "--no-untraced", "-q"])
            .args(["--port", PORT, "--json"])
            .arg(&json)
            .arg("--record")
            .arg(&rec)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    // The topology is up (and traffic not yet flowing: the tracer loads first) when the run
    // names its underlay: tcpdump starts on host1's end of it then.
    let mut lines = BufReader::new(child.take_stderr()).lines();
    let mut stderr = String::new();
    let mut found = None;
    for line in lines.by_ref() {
        let line = line.unwrap_or_default();
        stderr.push_str(&line);
        stderr.push('\n');
        if line.starts_with("dockertrace: underlay ") {
            found = underlay(&line);
            break;
        }
    }
    let Some((ns, vtep1, vtep2)) = found else { panic!("no underlay line:\n{stderr}") };
    let tcpdump = Tcpdump::start(&ns);
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
    let code = child.wait().code();
    stderr.push_str(&rest.join().unwrap());
    let (captured, received, said) = tcpdump.stop();
    assert_eq!(code, Some(0), "{stderr}");
    support::runs::assert_no_netns_run_left();

    let text = std::fs::read_to_string(&json).expect("the JSON lines");
    let events: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let recording = dockertrace::recording::Recording::load(&rec).expect("the recording");
    let _ = std::fs::remove_dir_all(&dir);
    let run = &recording.runs[0];
    assert!(run.workload.as_ref().is_some_and(|w| w.messages > 0), "no messages\n{stderr}");
    assert_eq!(run.counters.lost(), 0, "lost events");

    // Encapsulation and decapsulation are on the path.
    let stacks_have = |f: &str| run.stacks.iter().any(|s| s.iter().any(|x| x == f));
    assert!(stacks_have("vxlan_xmit") || stacks_have("vxlan_xmit_one"), "no vxlan_xmit in the stacks");
    assert!(stacks_have("vxlan_rcv"), "no vxlan_rcv in the stacks");

    // Kernels whose verifier cannot take the peel in time (5.10) run the mode without it, and
    // say so: the tunnel's journey checks do not apply there.
    if let Some(why) = stderr.lines().find(|l| l.contains("VXLAN peel off")) {
        eprintln!("skipping: the journey-through-the-tunnel checks: {why}");
        return;
    }
    // The tunnel as dockertrace saw it on host1's underlay end, against tcpdump's capture there.
    let ours = traced(&events);
    assert!(!captured.is_empty(), "tcpdump captured no VXLAN frame:\n{said}");
    for (k, n) in &captured {
        assert_eq!(k.2, 4096, "VNI {k:?}");
        assert!(
            (k.0 == vtep1 && k.1 == vtep2) || (k.0 == vtep2 && k.1 == vtep1),
            "outer {k:?} is not between the VTEPs {vtep1} and {vtep2}"
        );
        assert_eq!(ours.get(k), Some(n), "tcpdump's {k:?} ×{n} is not in dockertrace's trace");
    }
    // Every VXLAN frame on the device (the filter's count, also those tcpdump did not write
    // before the device went) is one dockertrace saw there.
    let mine: u32 = ours.values().sum();
    match received {
        Some(all) => assert_eq!(
            all,
            u64::from(mine),
            "tcpdump's filter received {all} VXLAN frames, dockertrace saw {mine}:\n{said}"
        ),
        None => eprintln!(
            "tcpdump's kernel buffer overflowed ({said}): only its {} frames checked",
            captured.values().sum::<u32>()
        ),
    }

    assert!(crossing_requests(&events) > 0, "no request journey crosses both hosts through the tunnel");
}

/// Request journeys (data to the workload's port) that run client → overlay2 → host2 → host1
/// → overlay1 → server under one packet id.
fn crossing_requests(events: &[serde_json::Value]) -> usize {
    let mut journeys: BTreeMap<u64, Vec<&serde_json::Value>> = BTreeMap::new();
    for e in events {
        if let (Some(p), Some(_)) = (e["packet"].as_u64(), e["hop"].as_u64()) {
            journeys.entry(p).or_default().push(e);
        }
    }
    let want = [
        ("client", "eth0"),
        ("overlay2", "vxlan0"),
        ("host2", "eth0"),
        ("host1", "eth0"),
        ("overlay1", "vxlan0"),
        ("server", "eth0"),
    ];
    for hops in journeys.values_mut() {
        hops.sort_by_key(|e| e["hop"].as_u64());
    }
    journeys
        .values()
        .filter(|hops| {
            let data = hops.iter().any(|e| {
                e["dport"].as_u64() == Some(PORT.parse().unwrap()) && e["payload_len"].as_u64() > Some(0)
            });
            let mut at = 0;
            for e in hops.iter() {
                if at < want.len() && e["netns_name"] == want[at].0 && e["dev"] == want[at].1 {
                    at += 1;
                }
            }
            data && at == want.len()
        })
        .count()
}

/// Issue 16's "followed even after encapsulation": with `--filter 'tcp port PORT'`, the kernel
/// keeps the workload's packets (matched on their first, inner headers) and follows them
/// through the tunnel, where their outer headers (UDP 4789) no longer match; nothing else
/// comes back.
#[test]
fn a_filtered_flow_is_followed_through_the_tunnel() {
    let Some(_s) = support::serial(&SERIAL) else { return };
    if no_vxlan() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("dt-overlay-filter-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, rec) = (dir.join("events.json"), dir.join("run.json"));
    let out = Command::new(support::runs::bin())
        .args(["--runtime", "netns", "--mode", "overlay", "--duration", "2", "--no-untraced", "-q"])
        .args(["--port", PORT, "--filter", &format!("tcp port {PORT}"), "--json"])
        .arg(&json)
        .arg("--record")
        .arg(&rec)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("built without libpcap") {
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!(
            "skipping: this dockertrace was built without libpcap (tests/pcap.rs covers the listing route)"
        );
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    support::runs::assert_no_netns_run_left();
    let text = std::fs::read_to_string(&json).expect("the JSON lines");
    let events: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let recording = dockertrace::recording::Recording::load(&rec).expect("the recording");
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(why) = stderr.lines().find(|l| l.contains("VXLAN peel off")) {
        eprintln!("skipping: following through the tunnel: {why}");
        return;
    }
    let c = &recording.runs[0].counters;
    assert!(
        c.cbpf_accepted > 0 && c.cbpf_followed > 0,
        "matched {} followed {}",
        c.cbpf_accepted,
        c.cbpf_followed
    );
    // The underlay's hops came back only because their journeys were followed.
    let port: u64 = PORT.parse().unwrap();
    let on_underlay = events
        .iter()
        .filter(|e| e["dev"] == "eth0" && e["netns_name"].as_str().is_some_and(|n| n.starts_with("host")));
    assert!(on_underlay.count() > 0, "no hop on the underlay");
    assert!(crossing_requests(&events) > 0, "no filtered request journey crosses both hosts");
    // Nothing outside the flow: every event with an inner tuple is the workload's.
    for e in events.iter().filter(|e| e["proto"].is_string()) {
        assert!(
            e["proto"] == "TCP" && (e["dport"].as_u64() == Some(port) || e["sport"].as_u64() == Some(port)),
            "outside the filter: {e}"
        );
    }
}

#[test]
fn ctrl_c_and_a_crash_leave_nothing_behind() {
    let Some(_s) = support::serial(&SERIAL) else { return };
    if no_vxlan() {
        return;
    }
    for signal in ["INT", "KILL"] {
        let mut child = support::Child::spawn(
            Command::new(support::runs::bin())
                .args(["--runtime", "netns", "--mode", "overlay", "--duration", "60", "--no-untraced", "-q"])
                .args(["--port", PORT])
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let mut lines = BufReader::new(child.take_stderr()).lines();
        let mut seen = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap_or_default();
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("running the workload for") {
                break;
            }
        }
        assert!(seen.contains("running the workload for"), "the run did not start:\n{seen}");
        std::thread::spawn(move || lines.for_each(drop));
        let runs = support::runs::runs_of(child.id());
        assert_eq!(runs.len(), 1, "{runs:?}");
        let _leftovers = support::runs::RunLeftovers(runs[0].clone());
        let prefix = format!("dockertrace-{}-", runs[0]);
        let mine =
            || support::runs::leftover_namespaces().into_iter().filter(|n| n.starts_with(&prefix)).count();
        assert_eq!(mine(), 6, "two hosts, two overlay sandboxes, server, client");
        if signal == "INT" {
            child.interrupt();
            assert_eq!(child.wait().code(), Some(130), "interrupted runs exit 130");
        } else {
            child.kill();
            let _ = child.wait();
            assert_eq!(mine(), 6, "a crash leaves its namespaces");
            let out = Command::new(support::runs::bin()).arg("cleanup").output().unwrap();
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && said.contains("6 namespaces"), "{said}");
        }
        support::runs::assert_no_netns_run_left();
    }
}
