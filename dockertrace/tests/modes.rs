//! End-to-end: `dockertrace --mode MODE` through the real binary, Docker engine included.
//! Each supported mode must exit 0 with workload figures, events only from the workload's
//! devices, and the mode's signature frames; ipvlan passes or skips with the kernel's reason.
//! Interrupted and crashed runs must leave nothing behind.
mod support;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Runs share machine-wide state (the engine, the leftover checks, `dockertrace cleanup`
/// removes every dockertrace object): one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether this is a VM of `cargo xtask vm-test`'s Docker part, whose init started the
/// engine: there a missing engine or a kernel without ipvlan fails the tests, never skips them.
fn docker_required() -> bool {
    std::env::var_os("DOCKERTRACE_TEST_VM_DOCKER").is_some()
}

/// Skips unless root tests can run and the Docker engine answers.
fn docker_skip() -> Option<String> {
    if let Some(r) = support::skip_reason() {
        return Some(r);
    }
    let ok = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output();
    match ok {
        Ok(o) if o.status.success() => None,
        _ if docker_required() => panic!("the VM's Docker engine is not reachable (see dockerd's log above)"),
        _ => Some("the Docker engine is not reachable (run `cargo xtask setup`)".into()),
    }
}

macro_rules! docker_skip {
    () => {
        match docker_skip() {
            Some(r) => {
                eprintln!("skipping: {r}");
                return;
            }
            None => serial(),
        }
    };
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    events: Vec<serde_json::Value>,
}

fn run_mode(mode: &str, extra: &[&str]) -> Run {
    let json = std::env::temp_dir().join(format!("dt-mode-{mode}-{}.jsonl", std::process::id()));
    let out = Command::new(support::runs::bin())
        // `--json` writes every event (~0.7 µs each in the reader). With the default adaptive
        // stacks on tp_btf, an echo between two containers runs at ~1M events/s on this 2-CPU
        // machine, more than one CPU can write as JSON (the loss is counted and shown; the tests
        // demand none). Walking every stack paces the echo to what the reader keeps up with, and
        // puts every event's functions in the JSON.
        .args(["--mode", mode, "--duration", "2", "-q", "--stacks", "every", "--json"])
        .arg(&json)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run dockertrace");
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let _ = std::fs::remove_file(&json);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        events: text.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect(),
    }
}

impl Run {
    fn assert_ok(&self) {
        assert_eq!(self.code, 0, "exit {}\nstderr:\n{}\nstdout:\n{}", self.code, self.stderr, self.stdout);
    }

    /// Messages the traced workload reported (from the summary's workload section: the last
    /// one, after the untraced phase's).
    fn messages(&self) -> u64 {
        self.stdout
            .lines()
            .rev()
            .find_map(|l| l.trim().split_once(" messages, ").and_then(|(n, _)| n.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no workload figures in:\n{}", self.stdout))
    }

    fn stack_has(&self, f: &str) -> bool {
        self.events.iter().any(|e| e["stack"].as_array().is_some_and(|s| s.iter().any(|x| x == f)))
    }

    /// Network namespaces the run reported for its containers.
    fn container_netns(&self) -> BTreeSet<u64> {
        self.stderr
            .lines()
            .filter_map(|l| l.split(" netns ").nth(1))
            .filter_map(|n| n.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// The names of the events on a device (for failure messages).
    fn events_on(&self, netns: u64, dev: &str) -> BTreeSet<String> {
        self.events
            .iter()
            .filter(|e| e["netns"].as_u64() == Some(netns) && e["dev"] == dev)
            .map(|e| e["event"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    fn devices(&self) -> BTreeSet<(u64, String)> {
        self.events
            .iter()
            .filter(|e| {
                !support::device_less_by_design(
                    e["event"].as_str().unwrap_or(""),
                    e["netns"].as_u64().unwrap_or(0),
                )
            })
            .map(|e| (e["netns"].as_u64().unwrap(), e["dev"].as_str().unwrap().to_owned()))
            .collect()
    }
}

fn host_netns() -> u64 {
    u64::from(dockertrace::sys::netns::current_inode().unwrap())
}

/// Every event is on a device of the workload: a container's eth0, or in the host namespace a
/// device of the mode's path.
fn assert_workload_devices(r: &Run, host_devices: &[&str]) {
    let containers = r.container_netns();
    assert_eq!(containers.len(), 2, "two container namespaces expected in:\n{}", r.stderr);
    for (netns, dev) in r.devices() {
        if containers.contains(&netns) {
            assert_eq!(dev, "eth0", "container device");
        } else {
            assert_eq!(
                netns,
                host_netns(),
                "event in a foreign namespace {netns} ({dev}): {:?}",
                r.events_on(netns, &dev)
            );
            assert!(host_devices.iter().any(|p| dev.starts_with(p)), "host device {dev} is not on the path");
        }
    }
}

/// Every data packet of the workload is one journey from one container's eth0 to the other's,
/// through `middle` devices of the host namespace (device name prefixes, in order).
/// `end_optional`: the receiving eth0 may have no event of its own (see the macvlan test).
fn assert_data_journeys(r: &Run, middle: &[&str], end_optional: bool) {
    let containers = r.container_netns();
    let journeys = support::data_journeys(&r.events, 10000);
    assert!(
        journeys.len() as u64 >= r.messages(),
        "{} data journeys for {} messages",
        journeys.len(),
        r.messages()
    );
    let in_container = |d: &(u64, String)| containers.contains(&d.0) && d.1 == "eth0";
    for devs in &journeys {
        let first = devs.first().unwrap();
        assert!(in_container(first), "starts in a container: {devs:?}");
        let last = devs.last().unwrap();
        let inner = if in_container(last) && devs.len() > 1 {
            assert_ne!(last.0, first.0, "ends in the other container: {devs:?}");
            &devs[1..devs.len() - 1]
        } else {
            assert!(end_optional, "ends in the other container: {devs:?}");
            &devs[1..]
        };
        assert_eq!(inner.len(), middle.len(), "hops through the host: {devs:?}");
        for ((ns, d), want) in inner.iter().zip(middle) {
            assert!(*ns == host_netns() && d.starts_with(want), "{d}@{ns} for {want}: {devs:?}");
        }
    }
}

fn assert_common(r: &Run) {
    r.assert_ok();
    assert!(r.messages() > 0);
    // The untraced phase ran first, in the same containers (`docker exec` twice).
    assert!(r.stdout.contains("), untraced\n") && r.stdout.contains("tracing kept "), "{}", r.stdout);
    assert!(r.stdout.contains("lost: 0 "), "{}", r.stdout);
    assert!(!r.events.is_empty(), "no events");
    assert_nothing_left();
}

/// The events name the containers' namespaces by role, the host's as `host`
/// (`eth0@server` in the live view and the reports).
fn assert_named_places(r: &Run) {
    let places: BTreeSet<(&str, &str)> = r
        .events
        .iter()
        .filter_map(|e| Some((e["dev"].as_str()?, e["netns_name"].as_str()?)))
        .map(|(d, n)| (if d.starts_with("veth") { "veth" } else { d }, n))
        .collect();
    for want in [("eth0", "server"), ("eth0", "client"), ("veth", "host")] {
        assert!(places.contains(&want), "no {}@{} among {places:?}", want.0, want.1);
    }
}

/// No container, network or link of ours remains.
fn assert_nothing_left() {
    let ps = Command::new("docker").args(["ps", "-aq", "--filter", "label=dockertrace"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(ps.trim().is_empty(), "containers left: {ps}");
    let nets = Command::new("docker")
        .args(["network", "ls", "-q", "--filter", "label=dockertrace"])
        .output()
        .unwrap();
    let nets = String::from_utf8_lossy(&nets.stdout);
    assert!(nets.trim().is_empty(), "networks left: {nets}");
    let links = dockertrace::sys::links::tagged_links();
    assert!(links.is_empty(), "links left: {links:?}");
}

#[test]
fn normal_mode_traces_the_loopback_flow() {
    if let Some(r) = support::skip_reason() {
        eprintln!("skipping: {r}");
        return;
    }
    let _serial = serial();
    let r = run_mode("normal", &["--port", "10031"]);
    assert_common(&r);
    assert!(r.devices().iter().all(|(ns, d)| *ns == host_netns() && d == "lo"), "{:?}", r.devices());
    let journeys = support::data_journeys(&r.events, 10031);
    assert!(journeys.len() as u64 >= r.messages(), "{} data journeys", journeys.len());
    assert!(journeys.iter().all(|j| j == &[(host_netns(), "lo".to_owned())]), "{:?}", journeys.first());
    assert!(r.stack_has("loopback_xmit"));
}

#[test]
fn host_mode_traces_the_loopback_flow_between_containers() {
    let _serial = docker_skip!();
    let r = run_mode("host", &["--port", "10032"]);
    assert_common(&r);
    assert!(r.devices().iter().all(|(ns, d)| *ns == host_netns() && d == "lo"), "{:?}", r.devices());
    assert!(r.stack_has("loopback_xmit"));
}

#[test]
fn bridge_mode_crosses_docker0_and_veth() {
    let _serial = docker_skip!();
    let r = run_mode("bridge", &[]);
    assert_common(&r);
    assert_workload_devices(&r, &["docker0", "veth"]);
    // client eth0 → its host veth → the server's host veth → server eth0 (docker0 forwards
    // without an event of its own).
    assert_data_journeys(&r, &["veth", "veth"], false);
    assert_named_places(&r);
    assert!(r.stack_has("br_handle_frame") || r.stack_has("br_dev_xmit"));
    assert!(r.stack_has("__br_forward") && r.stack_has("veth_xmit"));
}

#[test]
fn bridge_user_mode_crosses_its_own_bridge() {
    let _serial = docker_skip!();
    let r = run_mode("bridge-user", &[]);
    assert_common(&r);
    assert_workload_devices(&r, &["br-", "veth"]);
    assert_data_journeys(&r, &["veth", "veth"], false);
    assert_named_places(&r);
    assert!(r.stack_has("br_handle_frame") && r.stack_has("veth_xmit"));
}

#[test]
fn macvlan_mode_on_an_isolated_parent() {
    let _serial = docker_skip!();
    let r = run_mode("macvlan", &[]);
    assert_common(&r);
    assert_workload_devices(&r, &["dt"]);
    // Bridge-mode macvlans: through the parent, whose receive handler hands the frame to the
    // peer macvlan within the same receive (`RX_HANDLER_ANOTHER`): the peer's eth0 then has
    // no net:* event of its own, and the journey's last device seen is the parent.
    assert_data_journeys(&r, &["dt"], true);
    assert!(r.stack_has("macvlan_start_xmit"));
    assert!(r.stderr.contains("parent link dt"), "{}", r.stderr);
}

#[test]
fn ipvlan_modes_run_or_name_the_missing_kernel_feature() {
    let _serial = docker_skip!();
    for mode in ["ipvlan-l2", "ipvlan-l3"] {
        let r = run_mode(mode, &[]);
        if r.code != 0 && !docker_required() {
            assert_eq!(r.code, 1, "{}", r.stderr);
            let line = r.stderr.lines().last().unwrap_or_default();
            assert!(line.contains("ipvlan") && line.contains("CONFIG_IPVLAN"), "{}", r.stderr);
            assert_nothing_left();
            eprintln!("skipping: {mode}: {line}");
            continue;
        }
        assert_common(&r);
        assert_ipvlan_path(&r, mode);
    }
}

/// An ipvlan run's datapath: ipvlan's transmit in the stacks (and the mode's own transmit
/// function unless inlined); where the kernel has kprobes, the datapath probes fired on it.
fn assert_ipvlan_path(r: &Run, mode: &str) {
    assert_workload_devices(r, &["dt"]);
    for f in ["ipvlan_start_xmit", "ipvlan_queue_xmit"] {
        assert!(r.stack_has(f), "{mode}: no {f} in the stacks");
    }
    let mode_fn = format!("ipvlan_xmit_mode_{}", mode.trim_start_matches("ipvlan-"));
    if support::kernel_has(&mode_fn) {
        assert!(r.stack_has(&mode_fn), "{mode}: no {mode_fn} in the stacks");
    } else {
        eprintln!("note: {mode_fn} is inlined in this kernel (not in kallsyms)");
    }
    if support::kprobe_skip_reason().is_none() {
        for f in ["ipvlan_start_xmit", "ipvlan_queue_xmit"] {
            let n = r.events.iter().filter(|e| e["event"] == format!("kprobe:{f}")).count() as u64;
            assert!(n >= r.messages(), "{mode}: kprobe:{f} fired {n} times for {} messages", r.messages());
        }
    } else {
        eprintln!("note: {mode}: no datapath kprobes on this kernel (tracepoints and stacks only)");
    }
}

#[test]
fn bad_lan_options_fail_before_anything_is_created() {
    let cases: &[(&[&str], &str)] = &[
        (&["--mode", "macvlan", "--subnet", "10.9.0.0/40", "--gateway", "10.9.0.1"], "CIDR"),
        (&["--mode", "macvlan", "--subnet", "10.9.0.0/24", "--gateway", "10.9.1.1"], "outside"),
        (&["--mode", "macvlan", "--parent", "nosuchparent0"], "does not exist"),
        (&["--mode", "bridge", "--parent", "eth0"], "only applies"),
    ];
    for (args, needle) in cases {
        let out = Command::new(support::runs::bin()).args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.trim().lines().count() == 1 && err.contains(needle), "{args:?}: {err}");
    }
    let out = Command::new(support::runs::bin()).args(["--mode", "overlay-remote"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ipvlan-l3") && err.contains("overlay-local"), "{err}");
}

/// Starts a long run and waits until its traced workload runs.
fn start_long_run(mode: &str) -> support::Child {
    start_long_run_with(mode, &[])
}

/// [`start_long_run`] with more options.
fn start_long_run_with(mode: &str, extra: &[&str]) -> support::Child {
    let mut child = support::Child::spawn(
        Command::new(support::runs::bin())
            .args(["--mode", mode, "--duration", "60", "-q", "--no-untraced"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let stderr = child.take_stderr();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = String::new();
    let mut stderr_lines = BufReader::new(stderr).lines();
    while let Some(line) = stderr_lines.next() {
        let line = line.unwrap_or_default();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("running the workload") {
            // Keep draining stderr: a closed pipe would make the run's own messages fail.
            std::thread::spawn(move || stderr_lines.for_each(drop));
            std::thread::sleep(Duration::from_millis(1500));
            return child;
        }
        assert!(Instant::now() < deadline, "the run did not start:\n{seen}");
    }
    panic!("the run ended before its workload started:\n{seen}");
}

#[test]
fn sigint_mid_run_leaves_nothing_behind() {
    let _serial = docker_skip!();
    let mut child = start_long_run("macvlan");
    child.interrupt();
    let status = child.wait();
    assert_eq!(status.code(), Some(130), "interrupted runs exit 130");
    assert_nothing_left();
}

#[test]
fn cleanup_removes_what_a_killed_run_left() {
    let _serial = docker_skip!();
    let mut child = start_long_run("bridge-user");
    child.kill(); // SIGKILL: no chance to clean up
    let _ = child.wait();
    let out = Command::new(support::runs::bin()).arg("cleanup").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed"));
    assert_nothing_left();
}

/// The rules of the host's DOCKER-USER chain (`iptables -S`), or why there are none to see:
/// the engine runs without its iptables integration (the VMs' `--iptables=false`).
fn docker_user_rules() -> Result<String, String> {
    let out = Command::new("iptables").args(["-w", "-S", "DOCKER-USER"]).output();
    match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        _ => Err("no DOCKER-USER chain: the engine runs without its iptables integration".into()),
    }
}

/// dockertrace's rules in DOCKER-USER (their comment names the run).
fn our_rules(rules: &str) -> Vec<&str> {
    rules.lines().filter(|l| l.contains("\"dockertrace run=")).collect()
}

#[test]
fn cleanup_removes_the_rule_a_killed_forward_drop_run_left() {
    let _serial = docker_skip!();
    let before = match docker_user_rules() {
        Ok(r) => r,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    assert!(our_rules(&before).is_empty(), "a dockertrace rule before the test: {before}");
    let mut child = start_long_run_with("bridge", &["--inject", "forward-drop"]);
    let pid = child.id();
    child.kill(); // SIGKILL: the DROP rule stays in the host's DOCKER-USER
    let _ = child.wait();
    let left = docker_user_rules().unwrap();
    let ours = our_rules(&left);
    assert_eq!(ours.len(), 1, "the killed run's rule, tagged with its owner: {left}");
    assert!(ours[0].contains(&format!(" pid={pid} ")) && ours[0].contains("-j DROP"), "{}", ours[0]);
    let out = Command::new(support::runs::bin()).arg("cleanup").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("1 iptables rule"), "{said}");
    assert!(our_rules(&docker_user_rules().unwrap()).is_empty(), "the rule is gone");
    assert_nothing_left();
}

/// Issue 16's "done when", through Docker: `--mode bridge --inject forward-drop --pcap FILE`
/// shows where and why the packets die, with the hint, and the pcapng has one interface per
/// hop; the DROP rule it put in the host's DOCKER-USER goes with the run.
#[test]
fn forward_drop_on_the_docker_bridge_is_explained_and_captured() {
    let _serial = docker_skip!();
    if let Err(why) = docker_user_rules() {
        eprintln!("skipping: {why}");
        return;
    }
    let pcap = std::env::temp_dir().join(format!("dt-forward-drop-{}.pcapng", std::process::id()));
    let r =
        run_mode("bridge", &["--no-untraced", "--inject", "forward-drop", "--pcap", pcap.to_str().unwrap()]);
    let pkts = support::pcapng::read_pcapng(&pcap);
    let _ = std::fs::remove_file(&pcap);
    r.assert_ok();
    assert!(r.stdout.contains("Workload failed, as the injected fault wants"), "{}", r.stdout);
    assert!(
        r.stderr.contains("injected forward-drop: iptables -I DOCKER-USER")
            && r.stderr.contains("--comment \"dockertrace run="),
        "{}",
        r.stderr
    );
    // Where and why: netfilter dropped the client's SYNs on the bridge, in the host namespace.
    let drops: Vec<&serde_json::Value> =
        r.events.iter().filter(|e| e["drop_reason"] == "NETFILTER_DROP").collect();
    assert!(!drops.is_empty(), "no NETFILTER_DROP in the JSON lines:\n{}", r.stdout);
    for d in &drops {
        assert_eq!((d["dport"].as_u64(), &d["journey"]), (Some(10000), &serde_json::json!("end")), "{d}");
        let at = d["drop_location"].as_str().unwrap_or_default();
        assert!(["nft_do_chain", "ipt_do_table", "nf_hook_slow"].iter().any(|f| at.starts_with(f)), "{d}");
    }
    assert!(r.stdout.contains("× NETFILTER_DROP in "), "{}", r.stdout);
    assert!(r.stdout.contains("DOCKER-USER"), "the hint names DOCKER-USER:\n{}", r.stdout);
    // The pcapng: one interface per hop, both containers' and the bridge ports'.
    let ifaces: BTreeSet<&str> = pkts.iter().map(|p| p.iface.as_str()).collect();
    assert!(ifaces.contains("eth0@client"), "{ifaces:?}");
    assert!(ifaces.iter().filter(|i| i.ends_with("@host")).count() >= 1, "{ifaces:?}");
    assert!(pkts.iter().all(|p| p.comment.starts_with("event=")), "every packet is commented");
    assert!(our_rules(&docker_user_rules().unwrap()).is_empty(), "the DROP rule went with the run");
    assert_nothing_left();
}

/// `trace --container NAME` on a real Docker container (a bridge run's server, echoing): the
/// kernel keeps only that container's namespace, and its events are named after it.
#[test]
fn trace_keeps_one_containers_packets_and_names_them() {
    let _serial = docker_skip!();
    let mut run = start_long_run("bridge");
    let runs = support::runs::runs_of(run.id());
    assert_eq!(runs.len(), 1, "{runs:?}");
    let server = format!("dockertrace-{}-server", runs[0]);
    let json = std::env::temp_dir().join(format!("dt-trace-container-{}.jsonl", std::process::id()));
    let out = Command::new(support::runs::bin())
        .args(["trace", "--container", &server, "--duration", "2", "-q", "--json"])
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .expect("run dockertrace trace");
    run.interrupt();
    assert_eq!(run.wait().code(), Some(130));
    let text = std::fs::read_to_string(&json).unwrap_or_default();
    let _ = std::fs::remove_file(&json);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let named: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| {
            !support::device_less_by_design(
                e["event"].as_str().unwrap_or(""),
                e["netns"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(named.len() > 10, "the echo's events in the server: {} events", named.len());
    let places: BTreeSet<(u64, &str)> = named
        .iter()
        .map(|e| (e["netns"].as_u64().unwrap_or(0), e["netns_name"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(places.len(), 1, "one namespace, the container's: {places:?}");
    assert_eq!(places.first().map(|p| p.1), Some(server.as_str()), "named after the container: {places:?}");
    assert!(named.iter().any(|e| e["dev"] == "eth0"), "the server's eth0");
    assert_nothing_left();
}

#[test]
fn the_next_run_removes_what_a_killed_run_left_and_says_so() {
    let _serial = docker_skip!();
    let mut child = start_long_run("macvlan");
    let pid = child.id();
    let runs = support::runs::runs_of(pid);
    assert_eq!(runs.len(), 1, "the containers name their owner: {runs:?}");
    let _leftovers = support::runs::RunLeftovers(runs[0].clone());
    child.kill(); // SIGKILL: containers, network and parent link stay
    let _ = child.wait();
    let owned = format!("label=dockertrace.pid={pid}");
    let ps = Command::new("docker").args(["ps", "-q", "--filter", &owned]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ps.stdout).lines().count(),
        2,
        "the killed run's containers still run"
    );

    let r = run_mode("bridge", &[]);
    let line = format!(
        "dockertrace: removed what an earlier run (pid {pid}, gone) left: 2 containers, 1 network, 1 link"
    );
    assert_eq!(r.stderr.lines().filter(|l| l.contains("removed what")).collect::<Vec<_>>(), [line.as_str()]);
    assert_common(&r);
}

#[test]
fn docker_mistakes_get_one_clear_line_and_leave_nothing() {
    let _serial = docker_skip!();
    let out = Command::new(support::runs::bin())
        .args(["--mode", "bridge", "--duration", "1"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("/nonexistent/docker.sock") && last.contains("start it"), "{err}");
    let out = Command::new(support::runs::bin())
        .args(["--mode", "bridge", "--image", "dockertrace-no-such-image:1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.lines().last().unwrap_or_default().contains("never pulls"), "{err}");
    assert_nothing_left();
}

/// `--mode all`: every mode the kernel supports runs, the rest is skipped with its reason; the
/// comparison, the recording, the flame graphs and the HTML page come out, and the recording
/// rebuilds the report offline and guards against changes with `diff --fail-on`.
#[test]
fn mode_all_compares_records_and_diffs() {
    let _serial = docker_skip!();
    let dir = std::env::temp_dir().join(format!("dt-all-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (rec, html, svg) = (dir.join("all.json"), dir.join("all.html"), dir.join("svg"));
    let out = Command::new(support::runs::bin())
        .args(["--mode", "all", "--duration", "1", "-q", "--port", "10033", "--record"])
        .arg(&rec)
        .arg("--html")
        .arg(&html)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("Comparison") && stdout.contains("bridge vs normal"), "{stdout}");
    assert_nothing_left();
    let recording = dockertrace::recording::Recording::load(&rec).expect("recording loads");
    let ran: Vec<&str> = recording.runs.iter().map(|r| r.mode.as_str()).collect();
    for m in ["normal", "host", "bridge", "bridge-user", "macvlan"] {
        assert!(ran.contains(&m), "{m} missing from {ran:?}");
    }
    for m in ["ipvlan-l2", "ipvlan-l3"] {
        assert!(
            ran.contains(&m) || stdout.contains(&format!("{m} ")) && stdout.contains("skipped:"),
            "{m}: {stdout}"
        );
    }
    assert!(recording.runs.iter().all(|r| r.workload.as_ref().is_some_and(|w| w.messages > 0)));
    assert!(!recording.kernel.is_empty() && !recording.tool_version.is_empty());
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(ran.iter().all(|m| page.contains(&format!("id=\"mode-{m}\""))));
    // Issue 15's page: each mode's hop ladders with a waterfall, places named, the untraced
    // figures beside the traced ones.
    assert!(page.contains(r#"<section id="ladders">"#));
    let waterfalls = page.matches(r#"<svg class="waterfall""#).count();
    assert!(waterfalls >= ran.len(), "{waterfalls} waterfalls for {} modes", ran.len());
    assert!(page.contains("eth0@server") && page.contains("eth0@client"), "containers by name");
    assert!(page.contains("untraced (the workload alone, before tracing)"), "untraced figures");
    assert!(svg.join("bridge.svg").exists() && svg.join("diff-normal-vs-macvlan.svg").exists());

    // Offline report, and diffs.
    let out = Command::new(support::runs::bin()).arg("report").arg(&rec).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Comparison"));
    let same = Command::new(support::runs::bin())
        .arg("diff")
        .arg(&rec)
        .arg(&rec)
        .args(["--fail-on", "functions,events-per-msg"])
        .output();
    assert_eq!(same.unwrap().status.code(), Some(0));
    // A recording whose bridge run lost its veth frames must trip the guard.
    let mut changed = recording.clone();
    for r in &mut changed.runs {
        for s in &mut r.stacks {
            s.retain(|f| f != "veth_xmit");
        }
    }
    let changed_path = dir.join("changed.json");
    changed.save(&changed_path).unwrap();
    let out = Command::new(support::runs::bin())
        .arg("diff")
        .arg(&rec)
        .arg(&changed_path)
        .args(["--fail-on", "functions"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("functions vanished: veth_xmit"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The local engine's swarm state (`docker info`): `inactive`, `active`, ….
fn swarm_state() -> String {
    let out =
        Command::new("docker").args(["info", "--format", "{{.Swarm.LocalNodeState}}"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Why the overlay modes cannot run here (no second engine, a swarm in a state we cannot use).
fn overlay_skip(two_engines: bool) -> Option<String> {
    let has = |p: &str| {
        Command::new("sh").args(["-c", &format!("command -v {p}")]).output().is_ok_and(|o| o.status.success())
    };
    if two_engines {
        for p in ["dockerd", "nsenter"] {
            if !has(p) {
                return Some(format!("`{p}` is not installed: no second Docker engine"));
            }
        }
    }
    match swarm_state().as_str() {
        "inactive" => None,
        "active" => {
            let out = Command::new("docker")
                .args(["info", "--format", "{{.Swarm.ControlAvailable}}"])
                .output()
                .unwrap();
            (String::from_utf8_lossy(&out.stdout).trim() != "true")
                .then(|| "the Docker engine is a swarm worker (the overlay modes need a manager)".into())
        }
        other => Some(format!("the Docker engine's swarm is {other}")),
    }
}

/// A run that could not build the overlay on this machine names why in its last line:
/// returns it (the test then skips, after checking nothing was left).
fn overlay_impossible(r: &Run) -> Option<String> {
    let line = r.stderr.lines().last().unwrap_or_default().to_owned();
    (r.code == 1
        && !docker_required()
        && (line.contains("CONFIG_VXLAN") || line.contains("is not installed")))
    .then_some(line)
}

/// Nothing of an overlay run remains: no container, network or tagged link (as for every
/// mode), no second engine or its files, no namespace of ours, the swarm as before (and no
/// docker_gwbridge when there was no swarm).
fn assert_overlay_left_nothing(swarm_before: &str) {
    assert_nothing_left();
    assert_eq!(swarm_state(), swarm_before, "the swarm state changed");
    if swarm_before == "inactive" {
        let out = Command::new("docker")
            .args(["network", "ls", "-q", "--filter", "name=docker_gwbridge"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty(), "docker_gwbridge left behind");
    }
    let engines: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("/run/dockertrace/"))
        .collect();
    assert!(engines.is_empty(), "processes of a second engine left: {engines:?}");
    let dirs: Vec<_> = std::fs::read_dir("/run/dockertrace")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    assert!(dirs.is_empty(), "second engines' state left: {dirs:?}");
    let data: Vec<_> =
        std::fs::read_dir("/var/lib/dockertrace").into_iter().flatten().flatten().map(|e| e.path()).collect();
    assert!(data.is_empty(), "second engines' data left: {data:?}");
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let ns = String::from_utf8_lossy(&ns.stdout);
    assert!(!ns.lines().any(|l| l.contains("-host2")), "namespaces left: {ns}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("/dockertrace/"), "mounts left under dockertrace's directories");
}

/// Runs an overlay mode (`two_engines`: the multi-host one) and checks what every run must
/// show and leave; `None` (having printed `skipping: ...`) where this machine cannot run it.
fn run_overlay(mode: &str, two_engines: bool, port: &str) -> Option<Run> {
    if let Some(r) = overlay_skip(two_engines) {
        eprintln!("skipping: {r}");
        return None;
    }
    let before = swarm_state();
    let r = run_mode(mode, &["--port", port]);
    if let Some(line) = overlay_impossible(&r) {
        assert_overlay_left_nothing(&before);
        eprintln!("skipping: {mode}: {line}");
        return None;
    }
    assert_common(&r);
    assert_overlay_left_nothing(&before);
    Some(r)
}

#[test]
fn overlay_mode_crosses_vxlan_between_two_engines() {
    let _serial = docker_skip!();
    let Some(r) = run_overlay("overlay", true, "10034") else { return };
    assert!(r.stack_has("vxlan_xmit") || r.stack_has("vxlan_xmit_one"), "no vxlan_xmit in the stacks");
    assert!(r.stack_has("vxlan_rcv"), "no vxlan_rcv in the stacks");
    // Both hosts' sides: the underlay's ends, both engines' sandboxes, both containers.
    let devs = r.devices();
    let host = host_netns();
    assert!(devs.iter().any(|(ns, d)| *ns == host && d.starts_with("dt") && d.ends_with("u0")), "{devs:?}");
    assert!(devs.iter().any(|(ns, d)| *ns != host && d.starts_with("dt") && d.ends_with("u1")), "{devs:?}");
    let vxlans: BTreeSet<u64> = devs.iter().filter(|(_, d)| d.starts_with("vx")).map(|(ns, _)| *ns).collect();
    assert_eq!(vxlans.len(), 2, "a VXLAN device in each engine's sandbox: {devs:?}");
    assert!(r.stderr.contains("second engine: dockerd"), "{}", r.stderr);
    assert_eq!(r.container_netns().len(), 2, "{}", r.stderr);
}

#[test]
fn overlay_local_mode_bridges_in_one_sandbox() {
    let _serial = docker_skip!();
    let Some(r) = run_overlay("overlay-local", false, "10035") else { return };
    // Both containers hang off the same br0 in the engine's overlay sandbox: it forwards
    // between their veths, and the frames never reach the VXLAN device (no encapsulation on
    // one host).
    assert!(r.stack_has("__br_forward") && r.stack_has("veth_xmit"), "no bridging in the stacks");
    assert!(!r.stack_has("vxlan_xmit") && !r.stack_has("vxlan_rcv"), "VXLAN on a single host?");
    let containers = r.container_netns();
    assert_eq!(containers.len(), 2, "{}", r.stderr);
    let sandbox: BTreeSet<u64> = r
        .devices()
        .into_iter()
        .filter(|(ns, _)| !containers.contains(ns))
        .map(|(ns, d)| {
            // (Seen once, not reproduced: an event on an `eth1` in a namespace that is
            // neither container's; the run's notes name every namespace it traced.)
            assert!(d.starts_with("veth"), "{d}@{ns}: not a sandbox port\n{}", r.stderr);
            ns
        })
        .collect();
    assert_eq!(sandbox.len(), 1, "one sandbox between the containers");
    assert!(!sandbox.contains(&host_netns()));
}

#[test]
fn overlay_local_needs_docker_on_the_netns_runtime() {
    if let Some(r) = support::skip_reason() {
        eprintln!("skipping: {r}");
        return;
    }
    let _serial = serial();
    let out = Command::new(support::runs::bin())
        .args(["--mode", "overlay-local", "--runtime", "netns", "--duration", "1", "-q"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.lines().last().unwrap_or_default().contains("needs the Docker runtime"), "{err}");
}

#[test]
fn sigint_mid_overlay_run_leaves_nothing_behind() {
    let _serial = docker_skip!();
    if let Some(r) = overlay_skip(true) {
        eprintln!("skipping: {r}");
        return;
    }
    let before = swarm_state();
    let mut child = start_long_run("overlay");
    child.interrupt();
    let status = child.wait();
    assert_eq!(status.code(), Some(130), "interrupted runs exit 130");
    assert_overlay_left_nothing(&before);
}

#[test]
fn cleanup_stops_the_second_engine_a_killed_overlay_run_left() {
    let _serial = docker_skip!();
    if let Some(r) = overlay_skip(true) {
        eprintln!("skipping: {r}");
        return;
    }
    let before = swarm_state();
    let mut child = start_long_run("overlay");
    child.kill(); // SIGKILL: the second engine, the swarm, the containers stay
    let _ = child.wait();
    let out = Command::new(support::runs::bin()).arg("cleanup").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1 second Docker engine stopped"), "{stdout}");
    assert_overlay_left_nothing(&before);
}
