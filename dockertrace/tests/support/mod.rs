//! Shared pieces of the root integration tests: skipping, topologies, traffic, tracing.
#![allow(dead_code, reason = "each test binary uses a different part of the shared support")]

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use dockertrace::{
    decode::TracedEvent,
    filter::Filter,
    pipeline::{self, MemorySink},
    probes::tracepoints::AttachType,
    select::EventSelector,
    stacks::StackMode,
    summary::TraceReport,
    sys::netns::{self, Namespace},
    tracer::{TraceOptions, Tracer},
    workload::{self, ClientArgs, ServerArgs, WorkloadReport},
};

/// Returns a reason to skip when the machine cannot run root tests.
pub fn skip_reason() -> Option<String> {
    // SAFETY: trivial libc call.
    if unsafe { libc::geteuid() } != 0 {
        return Some("root tests need root (run them with `cargo xtask test`)".into());
    }
    if !Path::new("/sys/kernel/tracing/events/net").is_dir() {
        return Some("tracefs is not mounted or has no net:* events (run `cargo xtask setup`)".into());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("kernel BTF (/sys/kernel/btf/vmlinux) is missing".into());
    }
    None
}

/// Why kprobe tests cannot run here (no root, no tracefs or BTF, or a kernel without kprobes).
pub fn kprobe_skip_reason() -> Option<String> {
    skip_reason().or_else(|| {
        (!Path::new("/sys/bus/event_source/devices/kprobe/type").exists())
            .then(|| "this kernel has no kprobes (CONFIG_KPROBES); `cargo xtask vm-test` runs these".into())
    })
}

/// Why a test needing the kernel's `driver` (`ipvlan`, `macvlan`, ...) cannot run here.
pub fn driver_skip_reason(driver: &str) -> Option<String> {
    let loaded = || Path::new("/sys/module").join(driver).exists();
    if !loaded() {
        let _ = std::process::Command::new("modprobe").arg("-q").arg(driver).status();
    }
    (!loaded()).then(|| format!("this kernel has no {driver} driver (CONFIG_{})", driver.to_uppercase()))
}

/// Whether the running kernel has `function` as a symbol of its own (not inlined away).
pub fn kernel_has(function: &str) -> bool {
    std::fs::read_to_string("/proc/kallsyms")
        .is_ok_and(|k| k.lines().any(|l| l.split_whitespace().nth(2) == Some(function)))
}

/// `if skip!() { return; }`: prints `skipping: <reason>` when the test cannot run here.
#[macro_export]
macro_rules! skip {
    () => {
        match support::skip_reason() {
            Some(r) => {
                eprintln!("skipping: {r}");
                true
            }
            None => false,
        }
    };
}

/// A test namespace without IPv6, so that no autoconfiguration packet (DAD, router
/// solicitation) races the test's exact counts.
pub fn quiet_ns(tag: &str) -> Namespace {
    let ns = Namespace::create(&ns_name(tag)).unwrap();
    ns.sysctl("ipv6/conf/all/disable_ipv6", "1").unwrap();
    ns.sysctl("ipv6/conf/default/disable_ipv6", "1").unwrap();
    ns
}

/// A namespace name unique to this test process and call.
pub fn ns_name(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("dt-t{}-{}{}", std::process::id(), tag, N.fetch_add(1, Ordering::Relaxed))
}

/// Two hosts `a` and `b` whose traffic crosses one kind of datapath.
pub struct Topology {
    pub a: Namespace,
    pub b: Namespace,
    /// Namespaces in the middle (the bridge's, the macvlan parent's).
    pub middle: Vec<Namespace>,
    pub a_dev: &'static str,
    pub b_dev: &'static str,
    pub b_ip: &'static str,
}

impl Topology {
    pub fn netns(&self) -> Vec<u32> {
        let mut v = vec![self.a.inode().unwrap(), self.b.inode().unwrap()];
        v.extend(self.middle.iter().map(|n| n.inode().unwrap()));
        v
    }

    /// a --veth-- b
    pub fn veth() -> Topology {
        Self::veth_named("dtva", "dtvb")
    }

    /// a --veth-- b with the given device names (unique names let name-based tools like perf
    /// tell this topology from those of tests running at the same time).
    pub fn veth_named(a_dev: &'static str, b_dev: &'static str) -> Topology {
        let a = quiet_ns("va");
        let b = quiet_ns("vb");
        let peer = ["link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", b.name()];
        a.ip(&peer).unwrap();
        a.ip(&["addr", "add", "10.201.1.1/24", "dev", a_dev]).unwrap();
        b.ip(&["addr", "add", "10.201.1.2/24", "dev", b_dev]).unwrap();
        a.ip(&["link", "set", a_dev, "up"]).unwrap();
        b.ip(&["link", "set", b_dev, "up"]).unwrap();
        Topology { a, b, middle: vec![], a_dev, b_dev, b_ip: "10.201.1.2" }
    }

    /// a --veth-- [bridge in s] --veth-- b, like Docker's bridge mode (container side `eth0`).
    pub fn bridge() -> Topology {
        let a = quiet_ns("ba");
        let b = quiet_ns("bb");
        let s = quiet_ns("bs");
        s.ip(&["link", "add", "dtbr", "type", "bridge"]).unwrap();
        s.ip(&["link", "set", "dtbr", "up"]).unwrap();
        for (ns, port, ip) in [(&a, "dtpa", "10.201.2.1/24"), (&b, "dtpb", "10.201.2.2/24")] {
            ns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", s.name()]).unwrap();
            ns.ip(&["addr", "add", ip, "dev", "eth0"]).unwrap();
            ns.ip(&["link", "set", "eth0", "up"]).unwrap();
            s.ip(&["link", "set", port, "master", "dtbr"]).unwrap();
            s.ip(&["link", "set", port, "up"]).unwrap();
        }
        Topology { a, b, middle: vec![s], a_dev: "eth0", b_dev: "eth0", b_ip: "10.201.2.2" }
    }

    /// Two macvlans (bridge mode) on a veth parent that lives in namespace p.
    pub fn macvlan() -> Topology {
        let a = quiet_ns("ma");
        let b = quiet_ns("mb");
        let p = quiet_ns("mp");
        p.ip(&["link", "add", "dtmp0", "type", "veth", "peer", "name", "dtmp1"]).unwrap();
        p.ip(&["link", "set", "dtmp0", "up"]).unwrap();
        p.ip(&["link", "set", "dtmp1", "up"]).unwrap();
        for (ns, dev, ip) in [(&a, "dtmva", "10.201.3.1/24"), (&b, "dtmvb", "10.201.3.2/24")] {
            p.ip(&["link", "add", "link", "dtmp0", "name", dev, "type", "macvlan", "mode", "bridge"])
                .unwrap();
            p.ip(&["link", "set", dev, "netns", ns.name()]).unwrap();
            ns.ip(&["addr", "add", ip, "dev", dev]).unwrap();
            ns.ip(&["link", "set", dev, "up"]).unwrap();
        }
        Topology { a, b, middle: vec![p], a_dev: "dtmva", b_dev: "dtmvb", b_ip: "10.201.3.2" }
    }

    /// a's side is the bridge device itself (dtbr, with an address, in a), b hangs off one of its
    /// ports: a's packets leave through `br_dev_xmit`, like a host talking to its containers.
    pub fn bridge_host() -> Topology {
        let a = quiet_ns("bh");
        let b = quiet_ns("bc");
        a.ip(&["link", "add", "dtbr", "type", "bridge"]).unwrap();
        a.ip(&["addr", "add", "10.201.5.1/24", "dev", "dtbr"]).unwrap();
        a.ip(&["link", "set", "dtbr", "up"]).unwrap();
        b.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "dtpc", "netns", a.name()]).unwrap();
        b.ip(&["addr", "add", "10.201.5.2/24", "dev", "eth0"]).unwrap();
        b.ip(&["link", "set", "eth0", "up"]).unwrap();
        a.ip(&["link", "set", "dtpc", "master", "dtbr"]).unwrap();
        a.ip(&["link", "set", "dtpc", "up"]).unwrap();
        Topology { a, b, middle: vec![], a_dev: "dtbr", b_dev: "eth0", b_ip: "10.201.5.2" }
    }

    /// Two ipvlans (`mode` l2 or l3) on a veth parent (dtip0) in namespace p, like Docker's
    /// ipvlan networks. The parent's peer (dtip1, 10.201.4.100) lives in a fourth namespace:
    /// see [`Topology::ipvlan_external`].
    pub fn ipvlan(mode: &str) -> Topology {
        let a = quiet_ns("ia");
        let b = quiet_ns("ib");
        let p = quiet_ns("ip");
        p.ip(&["link", "add", "dtip0", "type", "veth", "peer", "name", "dtip1"]).unwrap();
        p.ip(&["link", "set", "dtip0", "up"]).unwrap();
        p.ip(&["link", "set", "dtip1", "up"]).unwrap();
        for (ns, dev, ip) in [(&a, "dtiva", "10.201.4.1/24"), (&b, "dtivb", "10.201.4.2/24")] {
            p.ip(&["link", "add", "link", "dtip0", "name", dev, "type", "ipvlan", "mode", mode]).unwrap();
            p.ip(&["link", "set", dev, "netns", ns.name()]).unwrap();
            ns.ip(&["addr", "add", ip, "dev", dev]).unwrap();
            ns.ip(&["link", "set", dev, "up"]).unwrap();
        }
        Topology { a, b, middle: vec![p], a_dev: "dtiva", b_dev: "dtivb", b_ip: "10.201.4.2" }
    }

    /// An ipvlan in L3 mode (a, 10.201.4.1) talking to a host outside its parent's ipvlans
    /// (b, 10.201.4.100, on the far end of the veth parent): a's packets are routed in the
    /// parent's namespace p (ipvlan's outbound path, then IP output onto the parent).
    pub fn ipvlan_external() -> Topology {
        let a = quiet_ns("ia");
        let b = quiet_ns("ix");
        let p = quiet_ns("ip");
        p.ip(&["link", "add", "dtip0", "type", "veth", "peer", "name", "dtip1", "netns", b.name()]).unwrap();
        const PARENT_MAC: &str = "02:00:0a:c9:04:fe";
        p.ip(&["link", "set", "dtip0", "address", PARENT_MAC]).unwrap();
        p.ip(&["addr", "add", "10.201.4.254/24", "dev", "dtip0"]).unwrap();
        p.ip(&["link", "set", "dtip0", "up"]).unwrap();
        p.ip(&["link", "add", "link", "dtip0", "name", "dtiva", "type", "ipvlan", "mode", "l3"]).unwrap();
        p.ip(&["link", "set", "dtiva", "netns", a.name()]).unwrap();
        a.ip(&["addr", "add", "10.201.4.1/24", "dev", "dtiva"]).unwrap();
        a.ip(&["link", "set", "dtiva", "up"]).unwrap();
        b.ip(&["addr", "add", "10.201.4.100/24", "dev", "dtip1"]).unwrap();
        b.ip(&["link", "set", "dtip1", "up"]).unwrap();
        // Nobody answers ARP for an L3 ipvlan's address: b reaches it through the parent's MAC.
        b.ip(&["neigh", "add", "10.201.4.1", "lladdr", PARENT_MAC, "dev", "dtip1"]).unwrap();
        Topology { a, b, middle: vec![p], a_dev: "dtiva", b_dev: "dtip1", b_ip: "10.201.4.100" }
    }

    /// Two hosts a and b joined by an underlay veth (dtua/dtub, 10.201.6.0/24), each with a
    /// VXLAN device (dtvxa/dtvxb: VNI 4096, UDP 4789, the other host as its remote) holding
    /// the inner addresses (10.201.7.0/24): a's packets to b are encapsulated in a, cross the
    /// underlay, and are decapsulated in b — an overlay between two hosts, without bridges.
    pub fn vxlan() -> Topology {
        let a = quiet_ns("xa");
        let b = quiet_ns("xb");
        a.ip(&["link", "add", "dtua", "type", "veth", "peer", "name", "dtub", "netns", b.name()]).unwrap();
        for (ns, under, vx, local, remote, inner) in [
            (&a, "dtua", "dtvxa", "10.201.6.1", "10.201.6.2", "10.201.7.1/24"),
            (&b, "dtub", "dtvxb", "10.201.6.2", "10.201.6.1", "10.201.7.2/24"),
        ] {
            ns.ip(&["addr", "add", &format!("{local}/24"), "dev", under]).unwrap();
            ns.ip(&["link", "set", under, "up"]).unwrap();
            ns.ip(&[
                "link", "add", vx, "type", "vxlan", "id", "4096", "dstport", "4789", "local", local,
                "remote", remote, "dev", under,
            ])
            .unwrap();
            ns.ip(&["addr", "add", inner, "dev", vx]).unwrap();
            ns.ip(&["link", "set", vx, "up"]).unwrap();
        }
        Topology { a, b, middle: vec![], a_dev: "dtvxa", b_dev: "dtvxb", b_ip: "10.201.7.2" }
    }

    /// Sends exactly `n` echo messages from a to b.
    /// Waits until neither end's device has sent or received a packet for 300 ms (TCP's last
    /// FIN/ACKs can follow the echo's return, late under emulation), at most 10 s.
    pub fn wait_quiet(&self) {
        let packets = || {
            [(&self.a, self.a_dev), (&self.b, self.b_dev)]
                .iter()
                .map(|(ns, dev)| {
                    let out = std::process::Command::new("ip")
                        .args(["-n", ns.name(), "-s", "-j", "link", "show", "dev", dev])
                        .output()
                        .expect("ip -s link");
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                    let s = &v[0]["stats64"];
                    s["rx"]["packets"].as_u64().unwrap_or(0) + s["tx"]["packets"].as_u64().unwrap_or(0)
                })
                .collect::<Vec<_>>()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut last = packets();
        while std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(300));
            let now = packets();
            if now == last {
                return;
            }
            last = now;
        }
    }

    pub fn echo(&self, n: u64) -> WorkloadReport {
        let server = EchoServer::start_in(Some(&self.b.path()), "0.0.0.0");
        let mut args = ClientArgs::new(self.b_ip);
        args.port = server.addr.port();
        args.count = Some(n);
        let report = netns::run_in(&self.a.path(), move || workload::run_client(&args)).unwrap().unwrap();
        drop(server);
        report
    }
}

/// An echo server on a thread (optionally inside a namespace), stopped on drop.
pub struct EchoServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoServer {
    pub fn start_in(ns: Option<&Path>, listen: &str) -> EchoServer {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let ns = ns.map(Path::to_path_buf);
        let listen = listen.parse().unwrap();
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let serve = move || {
                let args = ServerArgs { listen, port: 0, duration: None, quiet: true };
                let server = workload::bind_server(&args).expect("bind echo server");
                tx.send(server.local_addr().unwrap()).unwrap();
                server.serve(Some(st)).expect("echo server");
            };
            match ns {
                Some(p) => netns::run_in(&p, serve).unwrap(),
                None => serve(),
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(10)).expect("echo server started");
        EchoServer { addr, stop, thread: Some(thread) }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Loopback echo traffic in dockertrace's own namespace, to prove filters keep it out.
pub fn background_loopback(n: u64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let server = EchoServer::start_in(None, "127.0.0.1");
        let mut args = ClientArgs::new("127.0.0.1");
        args.port = server.addr.port();
        args.count = Some(n);
        workload::run_client(&args).expect("loopback traffic");
    })
}

pub struct Traced {
    pub report: TraceReport,
    pub events: Vec<TracedEvent>,
}

/// A tracer on `events` with `filter`, a stack for every event, journeys on and the datapath
/// probes off: kernels with kprobes (the VMs) would load and verify two programs per datapath
/// function (entry and return) in every test, a third of an emulated VM's time; the tests of
/// the datapath probes (`kernel_matrix`) turn them on with [`datapath_options`].
pub fn options(events: &str, filter: Filter) -> TraceOptions {
    TraceOptions {
        events: EventSelector::parse(events).unwrap(),
        filter,
        stacks: StackMode::Every,
        datapath: false,
        ring_bytes: None,
        stack_map_entries: None,
        aggregate: false,
        attach: AttachType::Auto,
        journeys: true,
        capture: None,
    }
}

/// [`options`] with the datapath probes (kprobe/kretprobe, else fentry/fexit) on.
pub fn datapath_options(events: &str, filter: Filter) -> TraceOptions {
    TraceOptions { datapath: true, ..options(events, filter) }
}

/// Traces while `traffic` runs, then stops and returns what was seen.
pub fn trace_while<T: Send + 'static>(
    opts: &TraceOptions,
    traffic: impl FnOnce() -> T + Send + 'static,
) -> (Traced, T) {
    let mut tracer = Tracer::start(opts).expect("tracer starts");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let worker = std::thread::spawn(move || {
        let out = traffic();
        let _ = tx.send(());
        out
    });
    let mut mem = MemorySink::default();
    let stop = async move {
        let _ = rx.await;
        // Let the last packets (FIN, ACK) through.
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let report = rt.block_on(pipeline::run(&mut tracer, &mut [&mut mem], stop)).expect("pipeline");
    let out = worker.join().expect("traffic thread");
    (Traced { report, events: mem.events }, out)
}

impl Traced {
    /// Events of one device.
    pub fn on(&self, netns: u32, ifindex: u32) -> impl Iterator<Item = &TracedEvent> {
        self.events.iter().filter(move |e| e.is_on(netns, ifindex))
    }

    pub fn count(&self, name: &str, netns: u32, ifindex: u32) -> usize {
        self.on(netns, ifindex).filter(|e| &*e.name == name).count()
    }

    /// Whether some event's stack contains `function`.
    pub fn stack_has(&self, function: &str) -> bool {
        self.events.iter().any(|e| e.stack.as_ref().is_some_and(|s| s.functions().any(|f| f == function)))
    }
}

/// Waits until the file a capture writes stops growing for a second (at most 20 s): tcpdump
/// may lag behind the traffic (seconds, under QEMU's emulation while the host is busy), and
/// is stopped only once it has drained its buffer.
pub fn wait_until_settled(file: &Path) {
    let size = || std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let give_up = std::time::Instant::now() + Duration::from_secs(20);
    let (mut last, mut since) = (size(), std::time::Instant::now());
    while since.elapsed() < Duration::from_secs(1) && std::time::Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(100));
        let now = size();
        if now != last {
            (last, since) = (now, std::time::Instant::now());
        }
    }
}

/// A child process we started, interrupted and reaped on drop (never left running).
pub struct Child(Option<std::process::Child>);

impl Child {
    pub fn spawn(cmd: &mut std::process::Command) -> Child {
        Child(Some(cmd.spawn().expect("spawn child")))
    }

    /// SIGINT, by pid: only the process we started.
    pub fn interrupt(&self) {
        if let Some(c) = &self.0 {
            // SAFETY: plain syscall on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
        }
    }

    /// SIGINT, then wait for it.
    pub fn interrupt_and_wait(&mut self) {
        self.interrupt();
        if let Some(mut c) = self.0.take() {
            let _ = c.wait();
        }
    }

    /// The child's piped stderr.
    pub fn take_stderr(&mut self) -> std::process::ChildStderr {
        self.0.as_mut().and_then(|c| c.stderr.take()).expect("piped stderr")
    }

    /// Reads the child's piped stderr until dockertrace says it attached (traffic before that
    /// races the programs' attachment: 17 tracepoints take ~2 s on a busy machine); panics if
    /// it exits first. The rest of stderr is read on a thread, which returns all of it.
    pub fn wait_attached(&mut self) -> std::thread::JoinHandle<String> {
        use std::io::{BufRead, Read};
        let mut err = std::io::BufReader::new(self.take_stderr());
        let mut said = Vec::new();
        while !String::from_utf8_lossy(&said).contains("attached") {
            let n = err.read_until(b'\n', &mut said).unwrap();
            assert!(n > 0, "dockertrace exited before attaching: {}", String::from_utf8_lossy(&said));
        }
        std::thread::spawn(move || {
            let _ = err.read_to_end(&mut said);
            String::from_utf8_lossy(&said).into_owned()
        })
    }

    /// The child's piped stdout.
    pub fn take_stdout(&mut self) -> std::process::ChildStdout {
        self.0.as_mut().and_then(|c| c.stdout.take()).expect("piped stdout")
    }

    /// Still running (not exited yet).
    pub fn running(&mut self) -> bool {
        self.0.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("child").id()
    }

    /// SIGKILL (a crash, as far as the child can tell).
    pub fn kill(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
        }
    }

    /// Waits for the child to exit.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.0.take().expect("child").wait().expect("wait for child")
    }

    /// Waits for the child to exit and collects its piped output.
    pub fn wait_output(&mut self) -> std::process::Output {
        self.0.take().expect("child").wait_with_output().expect("wait for child")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub mod pcapng;
pub mod runs;

/// Whether an event has no device by design: a drop of a followed journey whose skb had
/// lost its device (docs/drops.md), or a clone link (`kretprobe:skb_clone` / `fexit:skb_clone`:
/// the clone's address on its parent's hop, docs/journeys.md). Every other event names one.
pub fn device_less_by_design(event: &str, netns: u64) -> bool {
    netns == 0 && (event == "skb:kfree_skb" || event.ends_with(":skb_clone"))
}

/// The workload's TCP data packets in `--json` lines (`port`: the echo server's), each as the
/// devices its journey crossed in order, (netns, device name), repeats folded; with the
/// number of distinct journeys seen. Events without a `packet` field are left out.
pub fn data_journeys(events: &[serde_json::Value], port: u64) -> Vec<Vec<(u64, String)>> {
    use std::collections::BTreeMap;
    let mut by_packet: BTreeMap<u64, Vec<&serde_json::Value>> = BTreeMap::new();
    for e in events {
        // Hops only: a return event (`returns_hop`) names its hop's packet but is no hop.
        if let (Some(p), Some(_)) = (e["packet"].as_u64(), e["hop"].as_u64()) {
            by_packet.entry(p).or_default().push(e);
        }
    }
    let mut out = Vec::new();
    for hops in by_packet.values_mut() {
        hops.sort_by_key(|e| e["hop"].as_u64());
        let data = hops.iter().any(|e| {
            e["proto"] == "TCP"
                && e["payload_len"].as_u64().unwrap_or(0) > 0
                && (e["sport"].as_u64() == Some(port) || e["dport"].as_u64() == Some(port))
        });
        if !data {
            continue;
        }
        let mut devs: Vec<(u64, String)> = Vec::new();
        for e in hops.iter() {
            let d = (e["netns"].as_u64().unwrap_or(0), e["dev"].as_str().unwrap_or("").to_owned());
            if d.0 != 0 && devs.last() != Some(&d) {
                devs.push(d);
            }
        }
        out.push(devs);
    }
    out
}

/// For root tests whose runs share machine-wide state: `skipping: <reason>` and None where
/// root tests cannot run, else the guard of `lock` (one run at a time within the binary).
pub fn serial(lock: &'static std::sync::Mutex<()>) -> Option<std::sync::MutexGuard<'static, ()>> {
    if let Some(r) = skip_reason() {
        eprintln!("skipping: {r}");
        return None;
    }
    Some(lock.lock().unwrap_or_else(|e| e.into_inner()))
}
