//! Where packets die: every `--inject` fault provoked in a `--runtime netns` run of the real
//! binary (no Docker). Each must report the drop with the reason as this kernel spells it (read
//! from its BTF here too), the freeing function, the hint of the rule table and the journey the
//! drop ends — in the JSON lines, the recording and the summary. A run without a fault has no
//! drop of the workload, except drops of packets freed with a closed socket (`QUEUE_PURGE`,
//! the benign rule of docs/drops.md), which are counted apart. A fault that does not fit the
//! mode is one line and exit 1, with nothing created.
mod support;

use std::process::{Command, Stdio};

use dockertrace::{
    drops::{DropReasons, NOT_REPORTED},
    hints::{hint, DropFacts},
    kernel::btf::KernelBtf,
    recording::{ModeRun, Recording},
};

/// Runs share machine-wide state (leftover checks): one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> Option<std::sync::MutexGuard<'static, ()>> {
    support::serial(&SERIAL)
}

/// The running kernel's reason names (empty before 5.17).
fn reasons() -> DropReasons {
    KernelBtf::from_sys().map(|b| DropReasons::from_btf(&b)).unwrap_or_default()
}

/// The reason a drop must carry on this kernel: `want` as the BTF enum spells it, or the
/// "not reported" line on kernels without reasons.
fn expected_reason(want: &str) -> String {
    let r = reasons();
    if r.is_empty() {
        return NOT_REPORTED.to_owned();
    }
    assert!(r.value_of(want).is_some(), "this kernel's enum skb_drop_reason has no {want}");
    want.to_owned()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    run: Option<ModeRun>,
    /// The JSON lines of the traced phase.
    events: Vec<serde_json::Value>,
}

impl Run {
    /// The drops of unicast packets. The host's IGMP reports (224.0.0.22), flooded by the
    /// run's bridge into namespaces that never joined the group, die there too at times the
    /// test does not control; `no_drops_without_a_fault` checks that the rule table calls
    /// them benign.
    fn drops(&self) -> Vec<&serde_json::Value> {
        self.events.iter().filter(|e| e["event"] == "skb:kfree_skb" && !is_multicast(e)).collect()
    }

    fn assert_ok(&self) -> &ModeRun {
        assert_eq!(self.code, 0, "exit {}\nstderr:\n{}\nstdout:\n{}", self.code, self.stderr, self.stdout);
        self.run.as_ref().expect("a recording")
    }
}

/// The event's packet was sent to a multicast group.
fn is_multicast(e: &serde_json::Value) -> bool {
    e["daddr"].as_str().and_then(|a| a.parse::<std::net::IpAddr>().ok()).is_some_and(|a| a.is_multicast())
}

fn run_netns(mode: &str, extra: &[&str]) -> Run {
    let tag = format!("{mode}-{}-{}", std::process::id(), extra.join("").replace(['-', '*', ':', '\''], ""));
    let rec = std::env::temp_dir().join(format!("dt-drops-{tag}.json"));
    let json = std::env::temp_dir().join(format!("dt-drops-{tag}.jsonl"));
    let _ = std::fs::remove_file(&rec);
    let _ = std::fs::remove_file(&json);
    let out = Command::new(support::runs::bin())
        .args(["--runtime", "netns", "--mode", mode, "--duration", "2", "--no-untraced", "--record"])
        .arg(&rec)
        .arg("--json")
        .arg(&json)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run dockertrace");
    let run = Recording::load(&rec).ok().map(|r| r.runs.into_iter().next().expect("one run"));
    let events = std::fs::read_to_string(&json)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let _ = std::fs::remove_file(&rec);
    let _ = std::fs::remove_file(&json);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_nothing_left(&stderr);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
        run,
        events,
    }
}

/// None of the namespaces this run named in its output (`dockertrace-<run>-host`, ...) is left.
/// Other runs on the machine (other tests, other users) may have namespaces of their own.
fn assert_nothing_left(stderr: &str) {
    let runs: std::collections::BTreeSet<&str> = stderr
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter_map(|w| w.strip_prefix("dockertrace-"))
        .filter_map(|w| w.split('-').next())
        .filter(|id| id.len() == 8 && id.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    let left: Vec<String> = support::runs::leftover_namespaces()
        .into_iter()
        .filter(|n| runs.iter().any(|id| n.starts_with(&format!("dockertrace-{id}-"))))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

/// What one fault must show: its reason, a freeing function among `functions`, a hint
/// containing `hint`, and a journey end on the workload's packet (TCP to `dport`).
fn check_fault(r: &Run, reason: &str, functions: &[&str], hint: &str, dport: u64) {
    let run = r.assert_ok();
    let reason = expected_reason(reason);
    let drops = r.drops();
    assert!(
        !drops.is_empty(),
        "no drop event in the JSON lines\nstderr:\n{}\nstdout:\n{}",
        r.stderr,
        r.stdout
    );
    let ours: Vec<&&serde_json::Value> = drops
        .iter()
        .filter(|d| d["drop_reason"] == reason.as_str())
        .filter(|d| {
            let f = d["drop_location"].as_str().unwrap_or("");
            functions.iter().any(|want| f.split('+').next() == Some(want))
        })
        .collect();
    assert!(
        !ours.is_empty(),
        "no drop with reason {reason} in {functions:?}: {:#?}\nstdout:\n{}",
        drops,
        r.stdout
    );
    for d in &ours {
        // The drop ends the journey of the workload's packet.
        assert_eq!(d["journey"], "end", "{d}");
        assert!(d["packet"].as_u64().unwrap_or(0) != 0, "{d}");
        assert_eq!(d["proto"], "TCP", "{d}");
        assert_eq!(d["dport"].as_u64(), Some(dport), "{d}");
        assert!(d["drop_location"].as_str().unwrap().contains("+0x"), "symbolized: {d}");
    }
    // The recording and the summary say where and why, with the hint.
    let recorded: u64 = run.drops.iter().filter(|d| d.reason == reason).map(|d| d.count).sum();
    assert!(recorded >= ours.len() as u64, "recording: {:?}", run.drops);
    assert!(r.stdout.contains("Drops: "), "{}", r.stdout);
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains(&format!("× {reason} in ")))
        .unwrap_or_else(|| panic!("no summary line for {reason}:\n{}", r.stdout));
    assert!(functions.iter().any(|f| line.contains(f)), "{line}");
    assert!(r.stdout.contains(hint), "hint `{hint}` missing:\n{}", r.stdout);
    assert!(r.stdout.contains("Workload failed, as the injected fault wants"), "{}", r.stdout);
}

/// A `forward-drop` run of `mode`, checked as a netfilter drop with the DOCKER-USER hint.
fn forward_drop_run(mode: &str) -> Run {
    let r = run_netns(mode, &["--inject", "forward-drop"]);
    // iptables-nft drops in nft_do_chain, the legacy backend in ipt_do_table; both via
    // nf_hook_slow.
    check_fault(
        &r,
        "NETFILTER_DROP",
        &["nft_do_chain", "ipt_do_table", "nf_hook_slow"],
        "DOCKER-USER",
        10000,
    );
    r
}

#[test]
fn forward_drop_is_a_netfilter_drop_on_the_bridge() {
    let Some(_g) = serial() else { return };
    let r = forward_drop_run("bridge");
    // Dropped on the bridge: the drop's device is a bridge port of the host namespace.
    assert!(r.drops().iter().all(|d| d["netns_name"] == "host"), "{:#?}", r.drops());
    assert!(r.stderr.contains("injected forward-drop: iptables -I DOCKER-USER"), "{}", r.stderr);
}

#[test]
fn forward_drop_also_on_a_user_bridge() {
    let Some(_g) = serial() else { return };
    forward_drop_run("bridge-user");
}

#[test]
fn closed_port_is_no_socket_in_the_server() {
    let Some(_g) = serial() else { return };
    let r = run_netns("bridge", &["--inject", "closed-port"]);
    check_fault(&r, "NO_SOCKET", &["tcp_v4_rcv"], "no socket listens on the destination port", 10001);
    assert!(r.drops().iter().any(|d| d["netns_name"] == "server" && d["dev"] == "eth0"), "{:#?}", r.drops());
}

#[test]
fn closed_port_over_loopback() {
    let Some(_g) = serial() else { return };
    let r = run_netns("normal", &["--inject", "closed-port"]);
    check_fault(&r, "NO_SOCKET", &["tcp_v4_rcv"], "no socket listens", 10001);
}

#[test]
fn macvlan_parent_cannot_reach_its_child() {
    let Some(_g) = serial() else { return };
    if let Some(r) = support::driver_skip_reason("macvlan") {
        eprintln!("skipping: {r}");
        return;
    }
    let r = run_netns("macvlan", &["--inject", "macvlan-parent"]);
    // The SYN waits for ARP, which the parent's children never answer; the neighbour entry
    // fails and the queued SYN is dropped.
    check_fault(
        &r,
        "NEIGH_FAILED",
        &["neigh_invalidate", "arp_error_report", "__neigh_event_send"],
        "macvlan isolates the parent from its children",
        10000,
    );
}

#[test]
fn mtu_below_the_message_drops_on_the_bridge_port() {
    let Some(_g) = serial() else { return };
    let r = run_netns("bridge", &["--inject", "mtu"]);
    let run = r.assert_ok();
    // The kernel gives no specific reason here (6.18: NOT_SPECIFIED in br_nf_dev_queue_xmit;
    // without br_netfilter br_dev_queue_push_xmit); the name must be this kernel's anyway.
    let names = reasons();
    let drop = r
        .drops()
        .into_iter()
        .find(|d| d["payload_len"].as_u64() == Some(1400))
        .unwrap_or_else(|| panic!("no drop of a 1400-byte segment: {:#?}\n{}", r.events.len(), r.stdout));
    let reason = drop["drop_reason"].as_str().unwrap();
    if names.is_empty() {
        assert_eq!(reason, NOT_REPORTED);
    } else {
        assert!(names.names().any(|n| n == reason), "{reason} is not one of this kernel's reasons");
    }
    let function = drop["drop_location"].as_str().unwrap().split('+').next().unwrap();
    assert!(
        ["br_nf_dev_queue_xmit", "br_dev_queue_push_xmit", "is_skb_forwardable", "__dev_forward_skb2"]
            .contains(&function),
        "{drop}"
    );
    assert_eq!(drop["journey"], "end", "{drop}");
    assert!(drop["dev"].as_str().unwrap().ends_with('s'), "the server's bridge port: {drop}");
    assert!(run.drops.iter().any(|d| d.function == function));
    assert!(r.stdout.contains("MTU"), "the hint names the MTU:\n{}", r.stdout);
}

/// Without a fault, no packet of the workload dies: the only drops allowed are those the
/// rule table calls benign (`QUEUE_PURGE`: the last segments freed with a closed socket).
fn no_drops_without_a_fault(mode: &str) {
    let r = run_netns(mode, &[]);
    let run = r.assert_ok();
    assert!(run.workload.as_ref().is_some_and(|w| w.messages > 0), "{}", r.stderr);
    // The netns runtime turns IPv6 off everywhere, so IPV6DISABLED cannot show here; what can is
    // QUEUE_PURGE and the host's IGMP reports flooded by the bridge (a multicast rule).
    // Benign as the rule table says: by reason, or, on kernels without reasons (5.10), by
    // the freeing function.
    let benign = |reason: &str, function: &str, multicast: bool| {
        let facts = DropFacts { mode, reason, function, device: "", multicast };
        hint(&facts).is_some_and(|r| r.benign)
    };
    let died: Vec<_> = r
        .events
        .iter()
        .filter(|e| e["event"] == "skb:kfree_skb")
        .filter(|d| {
            let function = d["drop_location"].as_str().unwrap_or("").split('+').next().unwrap_or("");
            !benign(d["drop_reason"].as_str().unwrap_or(""), function, is_multicast(d))
        })
        .cloned()
        .collect();
    assert!(died.is_empty(), "{mode}: drops of the workload without a fault: {died:#?}");
    assert!(run.drops.iter().all(|d| benign(&d.reason, &d.function, d.multicast)), "{:?}", run.drops);
    assert!(r.stdout.contains("Drops: 0 ") || !r.stdout.contains("Drops: "), "{}", r.stdout);
    // The fault tests run with the default events: there kfree_skb is traced and reports.
}

#[test]
fn a_bridge_run_loses_no_packet() {
    let Some(_g) = serial() else { return };
    no_drops_without_a_fault("bridge");
}

#[test]
fn a_loopback_run_loses_no_packet() {
    let Some(_g) = serial() else { return };
    no_drops_without_a_fault("normal");
}

#[test]
fn events_net_only_leaves_drops_out_but_still_ends_journeys() {
    let Some(_g) = serial() else { return };
    let r = run_netns("bridge", &["--inject", "closed-port", "--events", "net:*"]);
    // No drop is reported, so the fault cannot be shown: one clear line, exit 1.
    assert_eq!(r.code, 1, "{}\n{}", r.stderr, r.stdout);
    assert!(r.drops().is_empty());
    let run = r.run.as_ref().expect("the recording is still written");
    assert!(run.drops.is_empty());
    assert!(run.counts.iter().all(|c| c.event != "skb:kfree_skb"));
    // kfree_skb still ended the refused SYNs' journeys, unreported.
    assert!(run.counters.journey_ended > 0, "{:?}", run.counters);
    assert!(r.stderr.contains("no drop of the workload's packets was seen"), "{}", r.stderr);
}

#[test]
fn a_fault_that_does_not_fit_the_mode_is_one_line_and_creates_nothing() {
    let Some(_g) = serial() else { return };
    for (mode, fault, why) in [
        ("bridge", "macvlan-parent", "it needs --mode macvlan"),
        ("macvlan", "forward-drop", "it needs a bridge"),
        ("normal", "mtu", "it needs a bridge"),
    ] {
        let out = Command::new(support::runs::bin())
            .args(["--runtime", "netns", "--mode", mode, "--inject", fault])
            .stdin(Stdio::null())
            .output()
            .expect("run dockertrace");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(
            lines[0].contains(&format!("--inject {fault} does not fit --mode {mode}"))
                && lines[0].contains(why),
            "{stderr}"
        );
        // Refused before anything was created: no namespace was even named.
        assert!(!stderr.contains("dockertrace-"), "{stderr}");
    }
    // With Docker, the loopback modes share the machine's namespace: refused too.
    let out = Command::new(support::runs::bin())
        .args(["--mode", "normal", "--inject", "closed-port"])
        .stdin(Stdio::null())
        .output()
        .expect("run dockertrace");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use --runtime netns"));
}

#[test]
fn every_attach_type_reads_reason_and_location() {
    let Some(_g) = serial() else { return };
    // The perf path reads the record at the format's offsets, raw_tp the BTF prototype's
    // argument positions (tp_btf, the default, is what the tests above use).
    for attach in ["perf", "raw-tp"] {
        let r = run_netns("bridge", &["--inject", "closed-port", "--attach", attach]);
        assert!(r.stderr.contains(&format!("({})", attach.replace('-', "_"))), "{attach}: {}", r.stderr);
        check_fault(&r, "NO_SOCKET", &["tcp_v4_rcv"], "no socket listens", 10001);
    }
}
