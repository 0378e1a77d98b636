//! `report --stitch` end to end: two tracer processes, one per "host" namespace of a VXLAN
//! topology built here, record the same echo (`trace --netns HOST --vxlan --record`); one
//! recording's clock is then moved by a known offset. The stitch must find every data segment
//! on both hosts, recover that offset within its own error bound, and give one ladder per
//! direction that runs from the sending host, across the wire, through the receiving host.
//! Host only: two tracers on one emulated CPU would mostly measure the emulation.
mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use dockertrace::sys::netns::Namespace;
use support::{Child, Topology};

const N: u64 = 150;
/// Added to every time of the second recording: its host's clock is 3 s ahead.
const OFFSET_NS: i64 = 3_000_000_000;

/// `dockertrace trace` in `ns` only, recording to `file`; returns once it has attached.
fn tracer(ns: &Namespace, file: &Path) -> (Child, std::thread::JoinHandle<String>) {
    let mut child = Child::spawn(
        Command::new(support::runs::bin())
            .args(["trace", "-q", "--vxlan", "--netns"])
            .arg(ns.path())
            .arg("--record")
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let stderr = child.wait_attached();
    (child, stderr)
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dt-stitch-{}-{name}", std::process::id()))
}

/// Moves every packet time of a recording by `by` ns (the recording of a host whose clock is
/// that far ahead).
fn shift(src: &Path, dst: &Path, by: i64) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(src).unwrap()).unwrap();
    let packets = v["runs"][0]["packets"]["packets"].as_array_mut().expect("a packet log");
    for p in packets {
        let t = p["t0_ns"].as_i64().unwrap();
        p["t0_ns"] = serde_json::json!(t + by);
    }
    std::fs::write(dst, serde_json::to_vec(&v).unwrap()).unwrap();
}

fn stitch(args: &[&Path], extra: &[&str]) -> std::process::Output {
    Command::new(support::runs::bin()).args(["report", "--stitch"]).args(args).args(extra).output().unwrap()
}

#[test]
fn two_tracers_one_per_host_stitch_into_one_ladder() {
    if let Some(r) = support::skip_reason().or_else(|| support::driver_skip_reason("vxlan")) {
        eprintln!("skipping: {r}");
        return;
    }
    if let Err(r) = dockertrace::filter::vxlan_peel_supported() {
        eprintln!("skipping: {r}");
        return;
    }
    let t = Topology::vxlan();
    let (fa, fb, fb2) = (temp("a.json"), temp("b.json"), temp("b-ahead.json"));
    let (mut ta, ra) = tracer(&t.a, &fa);
    let (mut tb, rb) = tracer(&t.b, &fb);
    let report = t.echo(N);
    assert_eq!(report.messages, N);
    t.wait_quiet();
    ta.interrupt_and_wait();
    tb.interrupt_and_wait();
    let (ea, eb) = (ra.join().unwrap(), rb.join().unwrap());
    assert!(fa.exists() && fb.exists(), "no recordings:\n{ea}\n{eb}");
    shift(&fb, &fb2, OFFSET_NS);

    let out = stitch(&[&fa, &fb2], &["--format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Every request and every answer, seen leaving one host and entering the other.
    assert_eq!(r["matched"], 2 * N, "{r:#}\n{ea}\n{eb}");
    // NTP's bound: the estimate is off by at most half the round trip of the pairs it used.
    let (offset, bound) = (r["offset_ns"].as_i64().unwrap(), r["offset_bound_ns"].as_i64().unwrap());
    assert!((offset - OFFSET_NS).abs() <= bound, "offset {offset} ± {bound}, applied {OFFSET_NS}");
    // And within what issue 18 asks: 20 µs (one clock underneath: the error is the wire's
    // asymmetry, a few µs of two veth crossings).
    assert!((offset - OFFSET_NS).abs() <= 20_000, "offset {offset}, applied {OFFSET_NS}");
    let dirs = r["directions"].as_array().unwrap();
    assert_eq!(dirs.len(), 2, "{r:#}");
    let (a_name, b_name) = (fa.display().to_string(), fb2.display().to_string());
    for d in dirs {
        // From a's address: `10.201.7.1 → …:P`, or `10.201.7.1:P → …` when the server's
        // (random) port is the higher one and the label takes the client's as the service's.
        let request = d["label"].as_str().unwrap().starts_with("10.201.7.1");
        let (from, to) = if request { (&a_name, &b_name) } else { (&b_name, &a_name) };
        assert_eq!((d["from"].as_str().unwrap(), d["to"].as_str().unwrap()), (from.as_str(), to.as_str()));
        assert_eq!(d["packets"], N, "{d:#}");
        // The sender's hops (its VXLAN device, then its underlay end), the wire, then the
        // receiver's (its underlay end first).
        let hops = d["hops"].as_array().unwrap();
        let wire = hops.iter().position(|h| h["after_wire"] == true).expect("a hop after the wire");
        assert!(hops[..wire].iter().all(|h| h["host"] == from.as_str()), "{d:#}");
        assert!(hops[wire..].iter().all(|h| h["host"] == to.as_str()), "{d:#}");
        let (vx_s, under_s, under_r, vx_r) =
            if request { ("dtvxa", "dtua", "dtub", "dtvxb") } else { ("dtvxb", "dtub", "dtua", "dtvxa") };
        let dev = |h: &serde_json::Value| h["device"].as_str().unwrap().to_owned();
        assert!(dev(&hops[0]).starts_with(vx_s), "{d:#}");
        assert!(dev(&hops[wire - 1]).starts_with(under_s), "{d:#}");
        assert!(dev(&hops[wire]).starts_with(under_r), "{d:#}");
        assert!(hops[wire..].iter().any(|h| dev(h).starts_with(vx_r)), "{d:#}");
        assert!(
            d["wire_p50_ns"].as_u64().unwrap() > 0
                && d["one_way_p50_ns"].as_u64() > d["wire_p50_ns"].as_u64()
        );
    }
    // The text report says the same.
    let out = stitch(&[&fa, &fb2], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("~~ wire ~~") && text.contains("clock offset"), "{text}");

    // Errors a user can make: one line each, exit 1.
    for (args, want) in [
        (vec![fa.as_path()], "--stitch joins two recordings"),
        (vec![fa.as_path(), fa.as_path()], "no segment of"),
    ] {
        let out = stitch(&args, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.trim().lines().count() == 1 && err.contains(want), "{err}");
    }
    for f in [fa, fb, fb2] {
        let _ = std::fs::remove_file(f);
    }
}
