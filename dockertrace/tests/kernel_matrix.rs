//! What other kernels must show (run in QEMU on Debian's 6.1 and 6.12 by `cargo xtask vm-test`):
//! kprobes on each datapath function attach and fire on the path that uses it, ipvlan's L2 and
//! L3 paths appear in stacks, every `net:*` tracepoint attaches, and the probe fallback picks
//! kprobe where the kernel has kprobes. On a kernel without kprobes or ipvlan (like the dev
//! machines') each test prints `skipping: <reason>`.
mod support;

use std::sync::Arc;

use dockertrace::{filter::Filter, probes::datapath::ProbeState, tracer::Tracer};
use support::{options, trace_while, Topology, Traced};

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
    let (traced, report) = trace_while(&options(events, filter), move || topo.echo(N));
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
    let (traced, ()) = trace_while(&options("net:net_dev_queue", filter), move || {
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
    for d in ["veth", "bridge", "macvlan", "ipvlan"] {
        let _ = support::driver_skip_reason(d);
    }
    let tracer = Tracer::start(&options("net:net_dev_queue", Filter::default())).expect("tracer starts");
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
