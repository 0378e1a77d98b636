//! What other kernels must show (run in QEMU on Debian's 5.10, 6.1 and 6.12 by `cargo xtask
//! vm-test`, and on the host): kprobes on each datapath function attach and fire on the path
//! that uses it, ipvlan's L2 and L3 paths appear in stacks, every `net:*` tracepoint attaches,
//! the probe fallback picks kprobe where the kernel has kprobes, and every tracepoint attach
//! type (tp_btf, raw_tp, perf) sees the same events. On a kernel without kprobes or ipvlan (like
//! the dev machines') each test prints `skipping: <reason>`.
mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use dockertrace::{
    filter::Filter,
    kernel::KernelBtf,
    pipeline::{self, MemorySink},
    probes::{datapath::ProbeState, tracepoints::AttachType},
    tracer::{TraceOptions, Tracer},
};
use support::{datapath_options, options, trace_while, Topology, Traced};

const N: u64 = 100;

fn skip_unless(reasons: &[Option<String>]) -> bool {
    match reasons.iter().flatten().next() {
        Some(r) => {
            eprintln!("skipping: {r}");
            true
        }
        None => false,
    }
}

/// Traces `n` echoes from a to b (netns filter on the topology) with the datapath probes on.
fn echo_traced(t: Topology, events: &str) -> (Arc<Topology>, Traced) {
    let t = Arc::new(t);
    let filter = Filter { netns: t.netns().into_iter().collect(), ..Default::default() };
    let topo = t.clone();
    let (traced, report) = trace_while(&datapath_options(events, filter), move || topo.echo(N));
    assert_eq!(report.messages, N);
    (t, traced)
}

/// `function` was probed with a kprobe, and fired at least `min` times on (netns, ifindex).
fn assert_kprobe_fired(traced: &Traced, function: &str, on: (u32, u32), min: u64) {
    let status = traced.report.probes.iter().find(|p| p.function == function);
    assert!(
        status.is_some_and(|p| p.state == ProbeState::Kprobe),
        "{function} must be probed with a kprobe here: {status:?}"
    );
    let name = format!("kprobe:{function}");
    let fired = traced.count(&name, on.0, on.1) as u64;
    assert!(fired >= min, "{name} fired {fired} times on the device, want >= {min}");
    // Each kprobe event's own stack starts in the probed function.
    let in_stack = traced
        .events
        .iter()
        .filter(|e| *e.name == *name)
        .filter_map(|e| e.stack.as_ref())
        .any(|s| s.functions().any(|f| f == function));
    assert!(in_stack, "no {name} event has {function} in its stack");
}

fn dev(t: &Topology, a_side: bool) -> (u32, u32) {
    let (ns, name) = if a_side { (&t.a, t.a_dev) } else { (&t.b, t.b_dev) };
    (ns.inode().unwrap(), ns.ifindex(name).unwrap())
}

#[test]
fn kprobe_veth_xmit_fires_on_veth_pair() {
    if skip_unless(&[support::kprobe_skip_reason()]) {
        return;
    }
    let (t, traced) = echo_traced(Topology::veth_named("dtkva", "dtkvb"), "net:net_dev_queue");
    assert_kprobe_fired(&traced, "veth_xmit", dev(&t, true), N);
    assert_kprobe_fired(&traced, "veth_xmit", dev(&t, false), N);
    assert_returns_time_their_hops(&traced, "veth_xmit", [dev(&t, true), dev(&t, false)]);
}

/// The kretprobe of `function` returned once for every call its kprobe saw on each device, and
/// each return reports the duration of the very hop its kprobe made: same packet and hop,
/// a duration above zero and no longer than the time from that hop to the return event.
fn assert_returns_time_their_hops(traced: &Traced, function: &str, devs: [(u32, u32); 2]) {
    let status = traced.report.probes.iter().find(|p| p.function == function).expect("probed");
    if dockertrace::kernel::version().is_some_and(|v| v < (5, 15)) {
        // The kernel's unwinder stops at a kretprobe's trampoline before 5.15: no return
        // probes there, and the probe says why.
        assert!(!status.returns && status.reason.contains("5.15"), "{status:?}");
        assert_eq!(traced.report.event_count(&format!("kretprobe:{function}")), 0);
        println!("note: no {function} durations before 5.15 ({})", status.reason);
        return;
    }
    assert!(status.returns, "{function}'s kretprobe must be attached here: {status:?}");
    let (entry, ret) = (format!("kprobe:{function}"), format!("kretprobe:{function}"));
    for (netns, ifindex) in devs {
        let calls = traced.count(&entry, netns, ifindex);
        let returns = traced.count(&ret, netns, ifindex);
        assert_eq!(returns, calls, "{ret} on ({netns}, {ifindex}): {returns} returns for {calls} calls");
    }
    let hops: BTreeMap<(u64, u16), u64> = traced
        .events
        .iter()
        .filter(|e| *e.name == *entry)
        .filter_map(|e| e.hop.map(|h| ((h.packet, h.hop), e.ts_ns)))
        .collect();
    let mut timed = 0;
    for e in traced.events.iter().filter(|e| *e.name == *ret) {
        let r = e.ret.unwrap_or_else(|| panic!("{ret} without a return section: {e:?}"));
        let at = hops.get(&(r.packet, r.hop)).unwrap_or_else(|| panic!("{ret} names no {entry} hop: {r:?}"));
        assert!(r.duration_ns > 0, "{ret}: zero duration");
        assert!(
            r.duration_ns <= e.ts_ns - at,
            "{ret}: {} ns, but only {} ns after its hop",
            r.duration_ns,
            e.ts_ns - at
        );
        timed += 1;
    }
    assert_eq!(timed, hops.len(), "every {entry} hop has its return");
    println!("{function}: {timed} calls timed by their kretprobe");
}

#[test]
fn bridge_flood_clones_link_to_their_parent() {
    if skip_unless(&[support::kprobe_skip_reason()]) {
        return;
    }
    // A third port on the bridge: a broadcast (the first message's ARP request) is flooded to
    // two ports, the first of them getting a clone (br_flood → deliver_clone → skb_clone).
    let t = Topology::bridge();
    let s = &t.middle[0];
    s.ip(&["link", "add", "dtpx", "type", "veth", "peer", "name", "dtpy"]).unwrap();
    s.ip(&["link", "set", "dtpx", "master", "dtbr"]).unwrap();
    s.ip(&["link", "set", "dtpx", "up"]).unwrap();
    s.ip(&["link", "set", "dtpy", "up"]).unwrap();
    let (t, traced) = echo_traced(t, "net:net_dev_queue");
    let status = traced.report.probes.iter().find(|p| p.function == "skb_clone").expect("skb_clone listed");
    assert!(status.returns, "skb_clone must be probed with its return here: {status:?}");
    let arp = |e: &&dockertrace::decode::TracedEvent| {
        e.headers.is_some_and(|h| h.family == dockertrace::packet::Family::Arp)
    };
    // Every ARP journey of a's first hop, by id.
    let a_netns = t.a.inode().unwrap();
    let parents: BTreeSet<u64> = traced
        .events
        .iter()
        .filter(arp)
        .filter(|e| e.dev.as_ref().is_some_and(|d| d.netns == a_netns))
        .filter_map(|e| e.hop.filter(|h| h.hop == 0).map(|h| h.packet))
        .collect();
    assert!(!parents.is_empty(), "no ARP request left a");
    let links: Vec<_> = traced.events.iter().filter(|e| e.is_clone_link()).collect();
    let linked = links.iter().filter(|e| e.ret.is_some_and(|r| parents.contains(&r.packet))).count();
    assert!(linked >= 1, "no skb_clone of a's ARP request: {links:?}");
    // The clone's own journey starts in the bridge's namespace, names its parent, and carries
    // the parent's ARP headers.
    let s_netns = t.middle[0].inode().unwrap();
    let clones: Vec<_> =
        traced.events.iter().filter(|e| e.parent.is_some_and(|p| parents.contains(&p))).collect();
    assert!(!clones.is_empty(), "no journey linked to a's ARP request");
    for c in &clones {
        let hop = c.hop.expect("a clone's first event is a hop");
        assert_eq!(hop.hop, 0, "linked at its first hop: {c:?}");
        assert!(!parents.contains(&hop.packet), "a clone has a journey of its own");
        assert_eq!(c.dev.as_ref().map(|d| d.netns), Some(s_netns), "the clone leaves a bridge port: {c:?}");
        assert!(arp(c), "the clone is the ARP request: {c:?}");
    }
    println!("{} clone(s) linked to {} ARP request(s)", clones.len(), parents.len());
}

#[test]
fn kprobe_br_dev_xmit_fires_on_bridge_device() {
    if skip_unless(&[support::kprobe_skip_reason()]) {
        return;
    }
    let (t, traced) = echo_traced(Topology::bridge_host(), "net:net_dev_queue");
    // The bridge device transmits a's requests; its port forwards them through veth_xmit.
    assert_kprobe_fired(&traced, "br_dev_xmit", dev(&t, true), N);
    let port = (t.a.inode().unwrap(), t.a.ifindex("dtpc").unwrap());
    assert_kprobe_fired(&traced, "veth_xmit", port, N);
    // The replies come in through the port's rx handler.
    assert!(
        traced.count("kprobe:br_handle_frame", port.0, port.1) as u64 >= N,
        "br_handle_frame on the port"
    );
}

#[test]
fn kprobes_on_the_vxlan_tunnel_fire_at_both_ends() {
    if skip_unless(&[support::kprobe_skip_reason(), support::driver_skip_reason("vxlan")]) {
        return;
    }
    let (t, traced) = echo_traced(Topology::vxlan(), "net:net_dev_queue");
    // Encapsulation on each host's VXLAN device (requests in a, responses in b).
    assert_kprobe_fired(&traced, "vxlan_xmit", dev(&t, true), N);
    assert_kprobe_fired(&traced, "vxlan_xmit", dev(&t, false), N);
    // Decapsulation runs while the skb is still the underlay's: on each host's underlay end.
    for (ns, under) in [(&t.b, "dtub"), (&t.a, "dtua")] {
        let at = (ns.inode().unwrap(), ns.ifindex(under).unwrap());
        assert!(
            traced.count("kprobe:vxlan_rcv", at.0, at.1) as u64 >= N,
            "vxlan_rcv on {under}: {}",
            traced.count("kprobe:vxlan_rcv", at.0, at.1)
        );
    }
}

#[test]
fn kprobe_macvlan_start_xmit_fires_on_macvlan() {
    if skip_unless(&[support::kprobe_skip_reason(), support::driver_skip_reason("macvlan")]) {
        return;
    }
    let (t, traced) = echo_traced(Topology::macvlan(), "net:net_dev_queue");
    assert_kprobe_fired(&traced, "macvlan_start_xmit", dev(&t, true), N);
    assert_kprobe_fired(&traced, "macvlan_start_xmit", dev(&t, false), N);
    // Bridge-mode macvlans forward to each other through dev_forward_skb.
    assert!(traced.report.event_count("kprobe:dev_forward_skb") >= 2 * N, "dev_forward_skb");
}

#[test]
fn kprobe_loopback_xmit_fires_on_lo() {
    if skip_unless(&[support::kprobe_skip_reason()]) {
        return;
    }
    // Both ends in one namespace, over its own lo.
    let ns = support::quiet_ns("lo");
    let ns_path = ns.path();
    let filter = Filter { netns: [ns.inode().unwrap()].into_iter().collect(), ..Default::default() };
    let (traced, ()) = trace_while(&datapath_options("net:net_dev_queue", filter), move || {
        let server = support::EchoServer::start_in(Some(&ns_path), "127.0.0.1");
        let mut args = dockertrace::workload::ClientArgs::new("127.0.0.1");
        args.port = server.addr.port();
        args.count = Some(N);
        let r = dockertrace::sys::netns::run_in(&ns_path, move || dockertrace::workload::run_client(&args))
            .unwrap()
            .unwrap();
        assert_eq!(r.messages, N);
    });
    let lo = (ns.inode().unwrap(), ns.ifindex("lo").unwrap());
    // Requests and replies both go through loopback_xmit.
    assert_kprobe_fired(&traced, "loopback_xmit", lo, 2 * N);
}

/// Checks of both ipvlan modes between two ipvlans of one parent.
fn ipvlan_between_slaves(mode: &str) {
    if skip_unless(&[support::kprobe_skip_reason(), support::driver_skip_reason("ipvlan")]) {
        return;
    }
    let (t, traced) = echo_traced(Topology::ipvlan(mode), "net:*");
    assert_eq!(traced.report.counters.lost(), 0, "{:?}", traced.report.counters);
    for a_side in [true, false] {
        assert_kprobe_fired(&traced, "ipvlan_start_xmit", dev(&t, a_side), N);
        assert_kprobe_fired(&traced, "ipvlan_queue_xmit", dev(&t, a_side), N);
    }
    // The tracepoints' stacks show the ipvlan frames too (the transmit is still running when
    // the receiving side raises netif_rx).
    for f in ["ipvlan_start_xmit", "ipvlan_queue_xmit"] {
        assert!(traced.stack_has(f), "no {f} in tracepoint stacks");
    }
    // The mode's own transmit function, unless the compiler inlined it into ipvlan_queue_xmit.
    let mode_fn = format!("ipvlan_xmit_mode_{mode}");
    if support::kernel_has(&mode_fn) {
        assert!(traced.stack_has(&mode_fn), "no {mode_fn} in stacks");
    } else {
        eprintln!("note: {mode_fn} is inlined in this kernel (not in kallsyms)");
    }
    // Between ipvlans of one parent IPv4 is handed over in place, never sent on the veth parent
    // (broadcasts such as ARP are, in L2 mode).
    let crossed = traced
        .events
        .iter()
        .filter(|e| e.protocol == 0x0800)
        .any(|e| e.stack.as_ref().is_some_and(|s| s.functions().any(|f| f == "veth_xmit")));
    assert!(!crossed, "IPv4 between ipvlans must not cross the veth parent");
}

#[test]
fn ipvlan_l2_frames_in_stacks() {
    ipvlan_between_slaves("l2");
}

#[test]
fn ipvlan_l3_frames_in_stacks() {
    ipvlan_between_slaves("l3");
}

/// L3 mode to a host beyond the parent: routed in the parent's namespace (ipvlan's outbound
/// path, then IP output), which is what Docker's ipvlan-l3 does for traffic leaving the host.
#[test]
fn ipvlan_l3_routing_path_to_external_host() {
    if skip_unless(&[support::kprobe_skip_reason(), support::driver_skip_reason("ipvlan")]) {
        return;
    }
    let (t, traced) = echo_traced(Topology::ipvlan_external(), "net:*");
    assert_kprobe_fired(&traced, "ipvlan_queue_xmit", dev(&t, true), N);
    let p = &t.middle[0];
    let parent = (p.inode().unwrap(), p.ifindex("dtip0").unwrap());
    // a's requests leave on the parent, queued from inside ipvlan's transmit by IP output.
    let queued: Vec<_> = traced.on(parent.0, parent.1).filter(|e| &*e.name == "net:net_dev_queue").collect();
    assert!(queued.len() as u64 >= N, "{} net_dev_queue on the parent", queued.len());
    let ipv4: Vec<_> = queued.iter().filter(|e| e.protocol == 0x0800).collect();
    assert!(ipv4.len() as u64 >= N, "{} IPv4 net_dev_queue on the parent", ipv4.len());
    // Every request is routed in p: ipvlan's transmit hands it to IP output onto the parent.
    // (The connection's first packet waits for ARP and leaves later, from the neighbour code.)
    let routed = |frames: &[&str]| {
        let n = ipv4
            .iter()
            .filter(|e| {
                e.stack.as_ref().is_some_and(|s| frames.iter().all(|f| s.functions().any(|g| g == *f)))
            })
            .count() as u64;
        if n < N {
            let other = ipv4.iter().find(|e| {
                !e.stack.as_ref().is_some_and(|s| frames.iter().all(|f| s.functions().any(|g| g == *f)))
            });
            let stack: Vec<&str> =
                other.iter().flat_map(|e| e.stack.iter().flat_map(|s| s.functions())).collect();
            panic!("{n} of {} IPv4 net_dev_queue on the parent run under {frames:?}; one that does not: {stack:?}", ipv4.len());
        }
    };
    routed(&["ipvlan_queue_xmit", "ip_finish_output2"]);
    for f in ["ipvlan_process_v4_outbound", "ipvlan_process_outbound", "ipvlan_xmit_mode_l3"] {
        if support::kernel_has(f) {
            routed(&[f, "ip_finish_output2"]);
        } else {
            eprintln!("note: {f} is inlined in this kernel (not in kallsyms)");
        }
    }
    // The replies reach a through ipvlan's rx handler on the parent (no tracepoint fires inside
    // it): that all N echoes came back is the proof.
}

/// Every `net:*` tracepoint of the running kernel attaches (the field layouts of its formats
/// are all understood).
#[test]
fn all_net_tracepoints_attach() {
    if skip_unless(&[support::skip_reason()]) {
        return;
    }
    let tracer = Tracer::start(&options("net:*", Filter::default())).expect("tracer starts");
    assert!(tracer.tracepoint_errors.is_empty(), "tracepoints that failed: {:?}", tracer.tracepoint_errors);
    let available = std::fs::read_dir("/sys/kernel/tracing/events/net")
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("format").exists())
        .count();
    assert!(available > 10, "only {available} net:* tracepoints in tracefs");
    assert_eq!(tracer.tracepoints.len(), available, "attached: {:?}", tracer.tracepoints);
    tracer.stop();
}

/// The kprobe → fentry → unavailable fallback picks kprobe for every function present.
#[test]
fn datapath_fallback_picks_kprobe() {
    if skip_unless(&[support::kprobe_skip_reason()]) {
        return;
    }
    // The modules of every datapath are loaded (by the VM's init, or here on demand).
    for d in ["veth", "bridge", "macvlan", "ipvlan", "vxlan"] {
        let _ = support::driver_skip_reason(d);
    }
    let tracer =
        Tracer::start(&datapath_options("net:net_dev_queue", Filter::default())).expect("tracer starts");
    let probes = tracer.probes.clone();
    tracer.stop();
    assert!(!probes.is_empty());
    for p in &probes {
        match p.state {
            ProbeState::Kprobe => {}
            ProbeState::NotPresent => eprintln!("note: {p}"),
            _ => panic!("{} did not get a kprobe: {p}", p.function),
        }
    }
    for f in ["veth_xmit", "br_dev_xmit", "loopback_xmit", "dev_forward_skb"] {
        let p = probes.iter().find(|p| p.function == f).expect("probe listed");
        assert_eq!(p.state, ProbeState::Kprobe, "{p}");
    }
}

/// The running kernel's version (`uname -r`'s leading numbers: 5.10.0-46-amd64 → (5, 10)).
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut n = release.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse().ok());
    (n.next().unwrap_or(0), n.next().unwrap_or(0))
}

/// Why this kernel cannot attach tracepoints as `t` at all (what the attach ladder falls
/// through on such kernels); `None` when it must work here.
fn lacks(t: AttachType) -> Option<String> {
    let (min, what) = match t {
        AttachType::TpBtf => ((5, 5), "tp_btf programs (BPF_TRACE_RAW_TP)"),
        AttachType::RawTp => ((4, 17), "raw tracepoint programs"),
        AttachType::Perf | AttachType::Auto => return None,
    };
    let v = kernel_version();
    if v < min {
        return Some(format!("{t}: this kernel ({}.{}) predates {what} ({}.{})", v.0, v.1, min.0, min.1));
    }
    // Both read the tracepoint's arguments at the positions of its BTF prototype.
    let btf = KernelBtf::from_sys().ok()?;
    btf.tracepoint_args("net_dev_queue")
        .is_none()
        .then(|| format!("{t}: the kernel's BTF has no tracepoint prototypes (btf_trace_net_dev_queue)"))
}

/// Starts one tracer per options (all attached at once), runs `traffic` while every one of
/// them traces it, and returns what each saw: the same packets, through each tracer's own
/// programs, maps and ring buffer.
fn trace_together(opts: &[TraceOptions], traffic: impl FnOnce() + Send + 'static) -> Vec<(Traced, String)> {
    let tracers: Vec<Tracer> = opts.iter().map(|o| Tracer::start(o).expect("tracer starts")).collect();
    let attach: Vec<String> = tracers.iter().map(|t| t.attach.clone()).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let worker = std::thread::spawn(move || {
        traffic();
        let _ = done_tx.send(true);
    });
    let local = tokio::task::LocalSet::new();
    let runs: Vec<_> = tracers
        .into_iter()
        .map(|mut tracer| {
            let mut done = done_rx.clone();
            local.spawn_local(async move {
                let stop = async move {
                    let _ = done.wait_for(|&d| d).await;
                    // Let the last packets (FIN, ACK) through.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                };
                let mut mem = MemorySink::default();
                let report = pipeline::run(&mut tracer, &mut [&mut mem], stop).await.expect("pipeline");
                drop(tracer);
                Traced { report, events: mem.events }
            })
        })
        .collect();
    let traced = rt.block_on(local.run_until(async move {
        let mut out = Vec::new();
        for r in runs {
            out.push(r.await.expect("pipeline task"));
        }
        out
    }));
    worker.join().expect("traffic thread");
    traced.into_iter().zip(attach).collect()
}

/// What one attach type saw of the topology: per (event, netns, ifindex), the number of events
/// and the sum of their lengths.
fn tallies(traced: &Traced) -> BTreeMap<(String, u32, u32), (u64, u64)> {
    let mut out = BTreeMap::new();
    for e in &traced.events {
        let (netns, ifindex) = e.dev.as_ref().map_or((0, 0), |d| (d.netns, d.ifindex));
        let t = out.entry((e.name.to_string(), netns, ifindex)).or_insert((0, 0));
        t.0 += 1;
        t.1 += u64::from(e.len);
    }
    out
}

/// Per event, the innermost functions of its stacks (after the tracing machinery's own frames).
fn leaf_functions(traced: &Traced) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in &traced.events {
        if let Some(f) = e.stack.as_ref().and_then(|s| s.functions().next()) {
            out.entry(e.name.to_string()).or_default().insert(f.to_owned());
        }
    }
    out
}

/// The attach ladder on this kernel: the same veth echo traced at once by one tracer per
/// forced attach type (tp_btf, raw_tp, perf) and one on `auto`. Each reports the type it was
/// forced to, and all see the same events on the same devices with the same lengths, with
/// stacks and nothing lost; `auto` picks tp_btf (the kernel has BTF: the root tests need it).
/// Traced at once rather than one after the other so that the traffic is the same packets,
/// not a rerun (TCP's ACKs depend on timing); any difference is the attach type's.
#[test]
fn attach_ladder_sees_the_same_events() {
    if skip_unless(&[support::skip_reason()]) {
        return;
    }
    let mut types = Vec::new();
    for t in [AttachType::TpBtf, AttachType::RawTp, AttachType::Perf] {
        match lacks(t) {
            Some(why) => eprintln!("skipping: {why}"),
            None => types.push(t),
        }
    }
    let t = Arc::new(Topology::veth_named("dtlda", "dtldb"));
    let filter = Filter { netns: t.netns().into_iter().collect(), ..Default::default() };
    let opts: Vec<TraceOptions> = types
        .iter()
        .chain([AttachType::Auto].iter())
        .map(|&a| TraceOptions { attach: a, ..options("net:*", filter.clone()) })
        .collect();
    let topo = t.clone();
    let seen = trace_together(&opts, move || assert_eq!(topo.echo(N).messages, N));
    let (an, ai) = dev(&t, true);
    let (bn, bi) = dev(&t, false);
    let mut by_type = Vec::new();
    for ((traced, attach), o) in seen.iter().zip(&opts) {
        let name = o.attach.name();
        let want = if o.attach == AttachType::Auto { AttachType::TpBtf } else { o.attach };
        if o.attach == AttachType::Auto && lacks(AttachType::TpBtf).is_some() {
            eprintln!("note: auto attached as {attach} (no tp_btf here)");
        } else {
            assert_eq!(attach, want.name(), "{name}: the tracer must report how it attached");
            assert_eq!(traced.report.attach, want.name(), "{name}: the report says how it attached");
        }
        let c = &traced.report.counters;
        assert_eq!(c.lost(), 0, "{name}: lost events: {c:?}");
        assert_eq!((c.read_error, c.no_config), (0, 0), "{name}: {c:?}");
        // Stacks: every event has one, but for a (counted) bucket collision in the stack map.
        let no_stack: Vec<_> = traced.events.iter().filter(|e| e.stack.is_none()).collect();
        let collided = no_stack.iter().filter(|e| e.stack_id == -libc::EEXIST).count();
        assert_eq!(collided, no_stack.len(), "{name}: events without a stack: {:?}", no_stack.first());
        assert!(collided as u64 <= c.stack_collision && collided * 10 < traced.events.len().max(1));
        // veth_xmit hands the requests to b: netif_rx on dtldb runs inside it.
        assert!(traced.count("net:netif_rx", bn, bi) as u64 >= N, "{name}: netif_rx on dtldb");
        assert!(traced.count("net:net_dev_queue", an, ai) as u64 >= N, "{name}: net_dev_queue on dtlda");
        assert!(traced.stack_has("veth_xmit"), "{name}: no veth_xmit in stacks");
        eprintln!(
            "{name}: attached as {attach}, {} events, {} with stacks, {} stack collisions",
            traced.events.len(),
            traced.events.len() - no_stack.len(),
            collided
        );
        by_type.push((name, tallies(traced), leaf_functions(traced)));
    }
    let (first, counts, leaves) = &by_type[0];
    for (name, other, other_leaves) in &by_type[1..] {
        let keys: BTreeSet<_> = counts.keys().chain(other.keys()).collect();
        let differ: Vec<String> = keys
            .into_iter()
            .filter(|k| counts.get(*k) != other.get(*k))
            .map(|k| format!("{k:?}: {first} {:?}, {name} {:?}", counts.get(k), other.get(k)))
            .collect();
        assert!(differ.is_empty(), "(count, bytes) per event and device differ:\n{}", differ.join("\n"));
        assert_eq!(leaves, other_leaves, "innermost stack functions per event: {first} vs {name}");
    }
    eprintln!(
        "same events on {} (event, device) keys across {}",
        counts.len(),
        by_type.iter().map(|(n, ..)| *n).collect::<Vec<_>>().join(", ")
    );
}
