//! End-to-end: `dockertrace --runtime netns --mode MODE` through the real binary, no Docker.
//! Each mode must exit 0 with workload figures and a recording whose devices and stack frames
//! are the mode's; ipvlan passes or skips with the kernel's reason (and then must fail with one
//! clear line, leaving nothing). Nothing may be left behind: no `dockertrace-*` namespace, no
//! tagged link, no workload process — also after Ctrl-C, and after a crash plus `cleanup`.
//!
//! Set `DOCKERTRACE_BIN` to run these against a binary at another path (e.g. inside a VM).
mod support;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use dockertrace::recording::{ModeRun, Recording};

/// Runs share machine-wide state (leftover checks, `cleanup` removes every dockertrace
/// namespace): one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> Option<std::sync::MutexGuard<'static, ()>> {
    support::serial(&SERIAL)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    run: Option<ModeRun>,
    /// The run was asked for its untraced phase (no `--no-untraced`, no `--untraced`).
    two_phases: bool,
}

fn run_netns(mode: &str, extra: &[&str]) -> Run {
    let rec = std::env::temp_dir().join(format!("dt-netns-{mode}-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&rec);
    let out = Command::new(support::runs::bin())
        .args(["--runtime", "netns", "--mode", mode, "--duration", "2", "-q", "--record"])
        .arg(&rec)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run dockertrace");
    let run = Recording::load(&rec).ok().map(|r| {
        assert_eq!(r.runs.len(), 1, "one run per mode");
        r.runs.into_iter().next().unwrap()
    });
    let _ = std::fs::remove_file(&rec);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        run,
        two_phases: !extra.iter().any(|a| *a == "--no-untraced" || *a == "--untraced"),
    }
}

impl Run {
    fn assert_ok(&self) -> &ModeRun {
        assert_eq!(self.code, 0, "exit {}\nstderr:\n{}\nstdout:\n{}", self.code, self.stderr, self.stdout);
        let run = self.run.as_ref().expect("a recording");
        assert_eq!(run.runtime.as_deref(), Some("netns"));
        let messages = run.workload.as_ref().map_or(0, |w| w.messages);
        assert!(messages > 0, "no workload messages\n{}", self.stderr);
        assert_eq!(run.counters.lost(), 0, "lost events");
        assert!(!run.counts.is_empty(), "no events");
        assert!(self.stdout.contains("(runtime netns)"), "the report names the runtime:\n{}", self.stdout);
        if self.two_phases {
            // The untraced phase ran first, on the same deployment, with the same workload.
            let u = run.untraced.as_ref().expect("the recording has the untraced phase");
            let w = run.workload.as_ref().unwrap();
            assert!(u.messages > 0, "no untraced messages\n{}", self.stderr);
            assert_eq!(
                (&u.pattern, u.connections, u.message_size),
                (&w.pattern, w.connections, w.message_size)
            );
            let (untraced, traced) = (
                self.stderr.find("running the workload untraced for").expect("the untraced phase's line"),
                self.stderr.find("phase 2 of 2, traced").expect("the traced phase's line"),
            );
            assert!(untraced < traced, "untraced first:\n{}", self.stderr);
            assert!(
                self.stdout.contains("workload untraced: "),
                "the report has both phases:\n{}",
                self.stdout
            );
        } else {
            assert_eq!(run.untraced, None, "--no-untraced: no untraced phase");
            assert!(!self.stderr.contains("running the workload untraced"), "{}", self.stderr);
        }
        run
    }

    fn stack_has(&self, f: &str) -> bool {
        self.run.as_ref().is_some_and(|r| r.stacks.iter().any(|s| s.iter().any(|x| x == f)))
    }

    /// (netns, device) of every recorded event.
    fn devices(&self) -> BTreeSet<(u32, String)> {
        self.run.as_ref().map_or_else(BTreeSet::new, |r| {
            r.counts
                .iter()
                .filter(|c| !support::device_less_by_design(&c.event, u64::from(c.netns)))
                .map(|c| (c.netns, c.dev.clone()))
                .collect()
        })
    }

    /// Namespace inodes the run reported (`... netns N ...` notes).
    fn reported_netns(&self) -> BTreeSet<u32> {
        self.stderr
            .lines()
            .filter_map(|l| l.split(" netns ").nth(1))
            .filter_map(|n| n.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .collect()
    }
}

fn host_netns() -> u32 {
    dockertrace::sys::netns::current_inode().unwrap()
}

/// No namespace, tagged link or workload process of ours remains.
fn assert_nothing_left() {
    support::runs::assert_no_netns_run_left();
    let links = dockertrace::sys::links::tagged_links();
    assert!(links.is_empty(), "links left: {links:?}");
}

/// Every event is on a device of the run's own namespaces (never the machine's), and each
/// device is one the mode's topology has.
fn assert_devices(r: &Run, prefixes: &[&str]) {
    let ours = r.reported_netns();
    assert!(ours.len() >= 3, "host, server and client namespaces expected in:\n{}", r.stderr);
    for (netns, dev) in r.devices() {
        assert_ne!(netns, host_netns(), "event in the machine's own namespace ({dev})");
        assert!(ours.contains(&netns), "event in a foreign namespace {netns} ({dev})");
        assert!(prefixes.iter().any(|p| dev.starts_with(p)), "device {dev} is not on the path");
    }
}

fn loopback_mode(mode: &str, port: &str) {
    let Some(_s) = serial() else { return };
    let r = run_netns(mode, &["--port", port]);
    r.assert_ok();
    assert_nothing_left();
    let devs = r.devices();
    assert!(devs.iter().all(|(_, d)| d == "lo"), "{devs:?}");
    assert!(devs.iter().all(|(ns, _)| *ns != host_netns()), "traffic left the run's namespace: {devs:?}");
    assert!(r.stack_has("loopback_xmit"), "no loopback_xmit in stacks");
}

#[test]
fn normal_runs_over_loopback_of_its_own_namespace() {
    loopback_mode("normal", "10041");
}

#[test]
fn host_runs_over_loopback_of_its_own_namespace() {
    loopback_mode("host", "10042");
}

#[test]
fn bridge_crosses_veth_pairs_and_a_docker0_like_bridge() {
    let Some(_s) = serial() else { return };
    let r = run_netns("bridge", &[]);
    r.assert_ok();
    assert_nothing_left();
    assert_devices(&r, &["eth0", "veth", "dt0-"]);
    let devs = r.devices();
    assert!(devs.iter().any(|(_, d)| d.starts_with("veth")), "{devs:?}");
    assert!(r.stack_has("veth_xmit"), "no veth_xmit in stacks");
    assert!(r.stack_has("br_handle_frame") || r.stack_has("br_dev_xmit"), "no bridge frames");
    assert!(r.stack_has("__br_forward"), "no __br_forward in stacks");
    // Names: the namespaces by their roles, each host end of a veth by the role it leads to.
    let names = &r.run.as_ref().unwrap().names;
    let roles: BTreeSet<&str> = names.netns.values().map(String::as_str).collect();
    assert_eq!(roles, ["client", "host", "server"].into(), "{names:?}");
    for shown in ["eth0@server", "eth0@client", "s(server)@host", "c(client)@host"] {
        assert!(r.stdout.contains(shown), "no {shown} in the summary:\n{}", r.stdout);
    }
    // Docker's br_netfilter/iptables settings: applied, or the run says why not.
    assert!(r.stderr.contains("br_netfilter"), "{}", r.stderr);
    assert!(r.stderr.contains("iptables: Docker's"), "{}", r.stderr);
    if r.stderr.contains("bridge-nf-call-iptables=1") {
        assert!(r.stack_has("br_nf_pre_routing"), "bridged frames did not traverse br_netfilter");
    } else {
        eprintln!("skipping the br_netfilter frames check: br_netfilter is not available here");
    }
}

#[test]
fn bridge_user_crosses_its_own_br_bridge() {
    let Some(_s) = serial() else { return };
    let r = run_netns("bridge-user", &[]);
    r.assert_ok();
    assert_nothing_left();
    assert_devices(&r, &["eth0", "veth", "br-"]);
    assert!(r.stack_has("veth_xmit") && r.stack_has("br_handle_frame"), "no veth/bridge frames");
}

#[test]
fn macvlan_runs_on_an_isolated_parent() {
    let Some(_s) = serial() else { return };
    let r = run_netns("macvlan", &[]);
    r.assert_ok();
    assert_nothing_left();
    assert_devices(&r, &["eth0", "dt"]);
    assert!(r.stack_has("macvlan_start_xmit"), "no macvlan_start_xmit in stacks");
    assert!(r.stderr.contains("parent link dt"), "{}", r.stderr);
}

#[test]
fn ipvlan_modes_run_or_fail_with_one_clear_line() {
    let Some(_s) = serial() else { return };
    let supported = dockertrace::sys::links::kernel_supports("ipvlan");
    for mode in ["ipvlan-l2", "ipvlan-l3"] {
        let r = run_netns(mode, &[]);
        if let Err(e) = &supported {
            // The clear failure: exit 1, one line naming the kernel option, nothing created.
            assert_eq!(r.code, 1, "{}", r.stderr);
            let last = r.stderr.lines().last().unwrap_or_default();
            assert!(last.contains("ipvlan") && last.contains("CONFIG_IPVLAN"), "{}", r.stderr);
            assert!(r.run.is_none() || r.run.as_ref().is_some_and(|x| x.counts.is_empty()));
            assert_nothing_left();
            eprintln!("skipping: {mode}: this kernel has no ipvlan ({e})");
            continue;
        }
        r.assert_ok();
        assert_nothing_left();
        assert_devices(&r, &["eth0", "dt"]);
        assert!(
            r.stack_has("ipvlan_start_xmit") || r.stack_has("ipvlan_queue_xmit"),
            "{mode}: no ipvlan frames in stacks"
        );
    }
}

/// `--no-untraced`: one phase, traced, and the reports say their figures are traced.
#[test]
fn no_untraced_skips_the_untraced_phase() {
    let Some(_s) = serial() else { return };
    let r = run_netns("normal", &["--port", "10046", "--no-untraced"]);
    r.assert_ok();
    assert_nothing_left();
    assert!(!r.stdout.contains("workload untraced"), "{}", r.stdout);
    assert!(r.stdout.contains("  workload: "), "{}", r.stdout);
}

#[test]
fn docker_only_options_fail_before_anything_is_created() {
    let Some(_s) = serial() else { return };
    let cases: &[(&[&str], &str)] = &[
        (&["--runtime", "netns", "--mode", "macvlan", "--parent", "eth0"], "--parent only applies"),
        (&["--runtime", "netns", "--mode", "bridge", "--image", "x:1"], "--image only applies"),
    ];
    for (args, needle) in cases {
        let out = Command::new(support::runs::bin()).args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.trim().lines().count() == 1 && err.contains(needle), "{args:?}: {err}");
    }
    let out =
        Command::new(support::runs::bin()).args(["--runtime", "lxc", "--mode", "bridge"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("netns"));
    assert_nothing_left();
}

/// Starts a long netns run and waits until its traced workload runs.
fn start_long_run(mode: &str) -> support::Child {
    start_long_phase(mode, "running the workload for", &["--no-untraced"])
}

/// Starts a long netns run and waits for the stderr line containing `phase`.
fn start_long_phase(mode: &str, phase: &str, extra: &[&str]) -> support::Child {
    let mut child = support::Child::spawn(
        Command::new(support::runs::bin())
            .args(["--runtime", "netns", "--mode", mode, "--duration", "60", "-q"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let stderr = child.take_stderr();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    let mut lines = BufReader::new(stderr).lines();
    while let Some(line) = lines.next() {
        let line = line.unwrap_or_default();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(phase) {
            // Keep draining stderr: a closed pipe would make the run's own messages fail.
            std::thread::spawn(move || lines.for_each(drop));
            std::thread::sleep(Duration::from_millis(1000));
            return child;
        }
        assert!(Instant::now() < deadline, "the run did not start:\n{seen}");
    }
    panic!("the run ended before its workload started:\n{seen}");
}

#[test]
fn sigint_mid_run_leaves_nothing_behind() {
    let Some(_s) = serial() else { return };
    let mut child = start_long_run("bridge");
    assert_eq!(support::runs::leftover_namespaces().len(), 3, "host, server, client");
    assert!(!support::runs::netns_workload_processes().is_empty(), "the workload runs");
    child.interrupt();
    assert_eq!(child.wait().code(), Some(130), "interrupted runs exit 130");
    assert_nothing_left();
}

/// The eBPF objects (programs, maps, links) the process `pid` holds file descriptors of.
fn bpf_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("anon_inode:bpf"))
                .count()
        })
        .unwrap_or(0)
}

/// The untraced phase is truly untraced: while it runs, dockertrace holds no eBPF program, map
/// or link (nothing is loaded yet); the traced phase holds them. Ctrl-C during the untraced
/// phase leaves nothing behind either.
#[test]
fn the_untraced_phase_loads_nothing_and_ctrl_c_during_it_leaves_nothing() {
    let Some(_s) = serial() else { return };
    let mut child = start_long_phase("bridge", "running the workload untraced", &[]);
    assert!(!support::runs::netns_workload_processes().is_empty(), "the workload runs");
    assert_eq!(bpf_fds(child.id()), 0, "eBPF objects held during the untraced phase");
    child.interrupt();
    assert_eq!(child.wait().code(), Some(130), "interrupted runs exit 130");
    assert_nothing_left();
    // The same check sees the traced phase's programs.
    let mut child = start_long_run("bridge");
    assert!(bpf_fds(child.id()) > 0, "no eBPF objects held while tracing: the check is blind");
    child.interrupt();
    assert_eq!(child.wait().code(), Some(130));
    assert_nothing_left();
}

#[test]
fn a_killed_run_leaves_no_process_and_cleanup_removes_its_namespaces() {
    let Some(_s) = serial() else { return };
    let mut child = start_long_run("macvlan");
    assert!(!support::runs::netns_workload_processes().is_empty(), "the workload runs");
    child.kill(); // SIGKILL: no chance to clean up; the workload dies with it (PR_SET_PDEATHSIG)
    let _ = child.wait();
    assert_eq!(support::runs::leftover_namespaces().len(), 3, "a crash leaves its namespaces");
    let out = Command::new(support::runs::bin()).arg("cleanup").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 namespaces"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_nothing_left();
}

#[test]
fn the_next_run_removes_what_a_killed_run_left_and_says_so() {
    let Some(_s) = serial() else { return };
    let mut child = start_long_run("bridge");
    let pid = child.id();
    let runs = support::runs::runs_of(pid);
    assert_eq!(runs.len(), 1, "the run records its owner: {runs:?}");
    let _leftovers = support::runs::RunLeftovers(runs[0].clone());
    child.kill(); // SIGKILL: no chance to clean up
    let _ = child.wait();
    let prefix = format!("dockertrace-{}-", runs[0]);
    let left = || support::runs::leftover_namespaces().into_iter().filter(|n| n.starts_with(&prefix)).count();
    assert_eq!(left(), 3, "a crash leaves its namespaces");

    let r = run_netns("normal", &["--port", "10044"]);
    r.assert_ok();
    let line = format!("dockertrace: removed what an earlier run (pid {pid}, gone) left: 3 namespaces");
    assert_eq!(r.stderr.lines().filter(|l| l.contains("removed what")).collect::<Vec<_>>(), [line.as_str()]);
    assert_eq!(left(), 0, "the dead run's namespaces are gone");
    assert!(support::runs::runs_of(pid).is_empty(), "its state file is gone");
    assert_nothing_left();
}

#[test]
fn a_run_never_touches_what_a_live_run_uses() {
    let Some(_s) = serial() else { return };
    let mut child = start_long_run("macvlan");
    let runs = support::runs::runs_of(child.id());
    assert_eq!(runs.len(), 1, "the run records its owner: {runs:?}");
    let _leftovers = support::runs::RunLeftovers(runs[0].clone());
    let before = support::runs::leftover_namespaces();
    assert_eq!(before.len(), 3, "host, server, client");

    let r = run_netns("normal", &["--port", "10045"]);
    r.assert_ok();
    assert!(!r.stderr.contains("removed what"), "{}", r.stderr);
    assert_eq!(support::runs::leftover_namespaces(), before, "the live run keeps its namespaces");
    assert!(child.running(), "the live run still runs");
    child.interrupt();
    assert_eq!(child.wait().code(), Some(130), "interrupted runs exit 130");
    assert_nothing_left();
}

/// `--mode all --runtime netns`: every mode the kernel supports runs without Docker, the rest is
/// skipped with its reason, and the comparison and the recording come out as with Docker.
#[test]
fn mode_all_compares_every_mode_without_docker() {
    let Some(_s) = serial() else { return };
    let rec = std::env::temp_dir().join(format!("dt-netns-all-{}.json", std::process::id()));
    let out = Command::new(support::runs::bin())
        .args(["--runtime", "netns", "--mode", "all", "--duration", "1", "-q", "--port", "10043", "--record"])
        .arg(&rec)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("Comparison") && stdout.contains("bridge vs normal"), "{stdout}");
    // msg/s and RTT from the untraced phase; the tracer's cost as its own table.
    assert!(stdout.contains("msg/s and RTT: the untraced phase (the workload alone"), "{stdout}");
    let cost = &stdout[stdout.find("the tracer's cost (").expect("the cost table")..];
    for m in ["normal", "bridge", "macvlan"] {
        let row = cost.lines().find(|l| l.trim_start().starts_with(&format!("{m} "))).unwrap_or_default();
        assert!(row.contains('%') && !row.trim_end().ends_with('-'), "{m}: no cost figures: {row:?}\n{cost}");
    }
    assert_nothing_left();
    let recording = Recording::load(&rec).expect("recording loads");
    let ran: Vec<&str> = recording.runs.iter().map(|r| r.mode.as_str()).collect();
    for m in ["normal", "host", "bridge", "bridge-user", "macvlan"] {
        assert!(ran.contains(&m), "{m} missing from {ran:?}");
    }
    for m in ["ipvlan-l2", "ipvlan-l3", "overlay"] {
        if !ran.contains(&m) {
            assert!(stderr.contains(&format!("{m}: skipped:")), "{m} neither ran nor was skipped: {stderr}");
            eprintln!("skipping: {m} (not supported by this kernel)");
        }
    }
    for r in &recording.runs {
        assert_eq!(r.runtime.as_deref(), Some("netns"), "{}", r.mode);
        assert!(r.workload.as_ref().is_some_and(|w| w.messages > 0), "{}: no messages", r.mode);
        assert!(r.untraced.as_ref().is_some_and(|w| w.messages > 0), "{}: no untraced phase", r.mode);
    }
    // The offline report of the recording shows the same columns.
    let out = Command::new(support::runs::bin()).arg("report").arg(&rec).output().unwrap();
    let _ = std::fs::remove_file(&rec);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && report.contains("the tracer's cost ("), "{report}");
}

/// A result that cannot be written does not lose the run: with `--record` on a full disk, the
/// HTML page is still written, the report still printed, and the command fails with one line
/// that names the write (once, its cause not repeated).
#[test]
fn a_failed_recording_keeps_the_page_and_the_report() {
    let Some(_serial) = serial() else { return };
    let page = std::env::temp_dir().join(format!("dt-netns-page-{}.html", std::process::id()));
    let _ = std::fs::remove_file(&page);
    let out = Command::new(support::runs::bin())
        .args([
            "--runtime",
            "netns",
            "--mode",
            "bridge",
            "--duration",
            "2",
            "-q",
            "--record",
            "/dev/full",
            "--html",
        ])
        .arg(&page)
        .stdin(Stdio::null())
        .output()
        .expect("run dockertrace");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&page).unwrap_or_default();
    let _ = std::fs::remove_file(&page);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(html.contains("bridge"), "the HTML page was not written:\n{stderr}");
    assert!(stdout.contains("Workload"), "no report printed:\n{stdout}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("cannot write /dev/full"), "{}", errors[0]);
    let cause = "No space left on device";
    assert_eq!(errors[0].matches(cause).count(), 1, "the cause once: {}", errors[0]);
    assert_nothing_left();
}
