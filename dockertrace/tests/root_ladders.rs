//! Root test: the hop ladder of real traffic. N echo messages cross the bridge Topology
//! (a eth0 → s dtpa → bridge → s dtpb → b eth0) under the real tracer; the journeys' request
//! ladder must visit those four devices in that order, carried by at least N data packets,
//! and the response ladder the same devices the other way round.
mod support;

use std::{net::IpAddr, time::Duration};

use dockertrace::{
    filter::Filter,
    journeys::{DirectionLadder, Target},
    pipeline,
    sys::netns,
    tracer::Tracer,
    workload::{self, ClientArgs},
};
use support::{options, EchoServer, Topology};

const N: u64 = 200;

/// The devices of a ladder in the order of their first hop, as (netns, ifindex).
fn device_order(d: &DirectionLadder) -> Vec<(u32, u32)> {
    let mut seen = Vec::new();
    for h in &d.hops {
        if !seen.contains(&(h.netns, h.ifindex)) {
            seen.push((h.netns, h.ifindex));
        }
    }
    seen
}

#[test]
fn bridge_ladder_crosses_the_ports_in_order() {
    if skip!() {
        return;
    }
    let t = Topology::bridge();
    let s = &t.middle[0];
    let a_eth0 = (t.a.inode().unwrap(), t.a.ifindex("eth0").unwrap());
    let dtpa = (s.inode().unwrap(), s.ifindex("dtpa").unwrap());
    let dtpb = (s.inode().unwrap(), s.ifindex("dtpb").unwrap());
    let b_eth0 = (t.b.inode().unwrap(), t.b.ifindex("eth0").unwrap());
    let server = EchoServer::start_in(Some(&t.b.path()), "0.0.0.0");
    let port = server.addr.port();
    let target = Target { ip: Some(t.b_ip.parse::<IpAddr>().unwrap()), port: Some(port) };
    let opts = options("net:*", Filter { netns: t.netns().into_iter().collect(), ..Default::default() });
    let mut tracer = Tracer::start(&opts).expect("tracer starts");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (a_path, b_ip) = (t.a.path(), t.b_ip);
    let client = std::thread::spawn(move || {
        let mut args = ClientArgs::new(b_ip);
        args.port = port;
        args.count = Some(N);
        let report = netns::run_in(&a_path, move || workload::run_client(&args)).unwrap().unwrap();
        let _ = tx.send(());
        report
    });
    let stop = async move {
        let _ = rx.await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let outcome = rt.block_on(pipeline::run_following(&mut tracer, &mut [], stop, target)).expect("pipeline");
    let report = client.join().expect("client thread");
    drop(server);
    assert_eq!(report.messages, N);
    assert_eq!(outcome.report.counters.lost(), 0, "no event may be lost at this rate");

    let j = outcome.journeys.expect("journeys are on: a hop ladder");
    assert_eq!(outcome.report.summary.journeys.as_ref(), Some(&j), "the summary carries the ladders");
    let dir = |name: &str| {
        j.directions
            .iter()
            .find(|d| d.direction == name)
            .unwrap_or_else(|| panic!("no {name} ladder: {j:#?}"))
    };
    let (req, resp) = (dir("request"), dir("response"));
    for (d, order) in [(req, [a_eth0, dtpa, dtpb, b_eth0]), (resp, [b_eth0, dtpb, dtpa, a_eth0])] {
        assert!(d.data_packets >= N, "{}: {} data packets for {N} messages", d.direction, d.data_packets);
        assert!(
            d.ladder_packets >= N,
            "{}: only {} packets on the ladder: {d:#?}",
            d.direction,
            d.ladder_packets
        );
        let devices = device_order(d);
        let on_path: Vec<(u32, u32)> = devices.iter().copied().filter(|k| order.contains(k)).collect();
        assert_eq!(on_path, order, "{}: devices in the order of the ladder's hops: {d:#?}", d.direction);
        // Nothing but the path (and the bridge device itself, which may show up).
        let bridge = (s.inode().unwrap(), s.ifindex("dtbr").unwrap());
        assert!(devices.iter().all(|k| order.contains(k) || *k == bridge), "{}: {devices:?}", d.direction);
        // The time adds up: the last hop's cumulated p50 is the one-way p50 (same packets).
        let last = d.hops.last().unwrap();
        assert!(last.cum_p50_ns > 0 && d.one_way_p50_ns > 0 && d.one_way_p99_ns >= d.one_way_p50_ns);
        // veth forwards into the peer: a hop on a bridge port or the far eth0 ran in veth_xmit.
        assert!(
            d.hops.iter().any(|h| h.function.as_deref() == Some("veth_xmit")),
            "{}: no hop names veth_xmit: {d:#?}",
            d.direction
        );
    }
    // The connection's setup and teardown took other paths, named.
    assert!(req.other_count("handshake") >= 1, "{req:#?}");
    assert!(resp.other_count("handshake") >= 1, "{resp:#?}");
    assert_eq!(j.server.as_deref(), Some(format!("{}:{port}", t.b_ip).as_str()));
}
