//! `--tui` through the real binary in a real terminal: tmux runs `dockertrace --runtime netns
//! --mode bridge --tui` in a detached session of its own server (`tmux -L`), the test types
//! keys (`send-keys`) and reads the screen (`capture-pane`): the panes switch, a packet's
//! journey opens, `q` stops the run through its teardown, the terminal is left as it was (no
//! alternate screen, cursor shown) with the summary printed, and nothing is left behind. And
//! without a terminal, `--tui` says so in one line and the plain stream runs.
//!
//! Waits poll the screen until what is expected shows up (or a generous deadline passes);
//! nothing asserts on how long anything took.
mod support;

use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The test's own tmux server and session; killed on drop (also when the test fails), and
/// its socket file removed.
struct Tmux {
    socket: String,
    path: Option<String>,
}

/// The tests drive the real binary with machine-wide effects (namespaces, the tracer): one
/// at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Tmux {
    const SESSION: &'static str = "dt";

    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("run tmux")
    }

    /// Starts `command` in a 100×30 session of a server of its own (`name`: the test's).
    fn start(name: &str, command: &str) -> Tmux {
        let mut t = Tmux { socket: format!("dockertrace-test-{}-{name}", std::process::id()), path: None };
        let out = t.cmd(&["new-session", "-d", "-s", Self::SESSION, "-x", "100", "-y", "30", command]);
        assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
        t.path = Some(t.format("#{socket_path}")).filter(|p| !p.is_empty());
        t
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", Self::SESSION];
        args.extend_from_slice(keys);
        let out = self.cmd(&args);
        assert!(out.status.success(), "tmux send-keys {keys:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", Self::SESSION]).stdout).into_owned()
    }

    /// The screen with its whole scrollback.
    fn history(&self) -> String {
        let out = self.cmd(&["capture-pane", "-p", "-S", "-", "-t", Self::SESSION]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The processes the session's shell started (dockertrace while it runs, then `sleep`).
    fn children(&self) -> Vec<u32> {
        let shell = self.format("#{pane_pid}");
        std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    fn format(&self, f: &str) -> String {
        let out = self.cmd(&["display-message", "-p", "-t", Self::SESSION, f]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Polls the screen until `ok` holds; panics with the screen after two minutes.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "the screen never showed {what}:\n{s}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // A dockertrace still running (the test failed) gets SIGINT, its teardown, and time
        // to finish it; then the session and this test's tmux server go.
        for pid in self.children() {
            // SAFETY: signals a process this test started (the session shell's child).
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(60);
            while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.cmd(&["kill-server"]);
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The parent of `pid`.
fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

fn tmux_skip_reason() -> Option<String> {
    support::skip_reason().or_else(|| match Command::new("tmux").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("tmux is not installed (`cargo xtask setup` installs it)".into()),
    })
}

/// Shell-quotes `s`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn tui_panes_a_journey_and_a_clean_exit() {
    if let Some(r) = tmux_skip_reason() {
        eprintln!("skipping: {r}");
        return;
    }
    let bin = support::runs::bin();
    let command = format!(
        "{} --runtime netns --mode bridge --tui --no-untraced --duration 120; echo DT-EXIT=$?; sleep 600",
        quote(&bin.to_string_lossy())
    );
    let Some(_serial) = support::serial(&SERIAL) else { return };
    let tmux = Tmux::start("journey", &command);
    let s = tmux.wait_for("the ladder of the bridge's request packets", |s| {
        s.contains("dockertrace mode bridge") && s.contains("runtime netns") && s.contains("request")
    });
    assert!(s.contains(" 1 ladder ") && s.contains("events/s") && s.contains("lost 0"), "{s}");
    assert!(tmux.format("#{alternate_on}") == "1", "the view is on the alternate screen");
    // What this run created, to check that it is gone at the end (other runs may be going on).
    let tracer = *tmux.children().first().expect("dockertrace runs in the session");
    let runs = support::runs::runs_of(tracer);
    assert!(!runs.is_empty(), "the run names its owner");
    let workload: Vec<u32> =
        support::runs::netns_workload_processes().into_iter().filter(|p| ppid(*p) == Some(tracer)).collect();
    assert!(!workload.is_empty(), "the netns workload runs");
    tmux.keys(&["Tab"]);
    tmux.wait_for("the rates pane", |s| s.contains("device@container") && s.contains("events/s"));
    tmux.keys(&["3"]);
    tmux.wait_for("the functions pane", |s| s.contains("function") && s.contains("sort: count"));
    tmux.keys(&["4"]);
    tmux.wait_for("the packets pane with a tuple", |s| s.contains("tuple") && s.contains(":10000 TCP"));
    tmux.keys(&["Enter"]);
    let s = tmux.wait_for("a packet's journey", |s| s.contains("journey #") && s.contains("stack of hop 0"));
    assert!(s.contains("device@container"), "{s}");
    tmux.keys(&["q"]);
    tmux.wait_for("the exit of dockertrace", |s| s.contains("DT-EXIT="));
    let s = tmux.history();
    assert_eq!(tmux.format("#{alternate_on}"), "0", "the terminal left the alternate screen:\n{s}");
    assert_eq!(tmux.format("#{cursor_flag}"), "1", "the cursor is shown again");
    assert!(s.contains("DT-EXIT=130"), "q stops the run as Ctrl-C does (exit 130):\n{s}");
    assert!(s.contains("Workload interrupted"), "the summary is printed after the view:\n{s}");
    assert!(!s.contains("q quit"), "nothing of the view is left on screen:\n{s}");
    drop(tmux);
    let left: Vec<String> = support::runs::leftover_namespaces()
        .into_iter()
        .filter(|n| runs.iter().any(|r| n.contains(r.as_str())))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "namespaces left behind");
    // The workload dies with dockertrace (PR_SET_PDEATHSIG); give the kernel a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let alive = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
    };
    let ours: Vec<u32> = std::iter::once(tracer).chain(workload).collect();
    while ours.iter().any(alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<u32> = ours.into_iter().filter(alive).collect();
    assert_eq!(left, Vec::<u32>::new(), "processes left behind");
}

/// `trace --tui` (no workload of its own: loopback traffic from this test): `p` freezes the
/// panes (one chosen during the pause still shows that moment's rows), Ctrl-C typed into the
/// view ends the trace normally (exit 0: `trace`'s end, not an interrupted run) with its
/// summary after the restored terminal.
#[test]
fn trace_tui_pauses_and_ctrl_c_ends_it_normally() {
    if let Some(r) = tmux_skip_reason() {
        eprintln!("skipping: {r}");
        return;
    }
    let bin = support::runs::bin();
    let command =
        format!("{} trace --tui --dev lo; echo DT-EXIT=$?; sleep 600", quote(&bin.to_string_lossy()));
    let Some(_serial) = support::serial(&SERIAL) else { return };
    let tmux = Tmux::start("trace", &command);
    tmux.wait_for("the trace's header", |s| s.contains("dockertrace trace") && s.contains("ev/s"));
    tmux.keys(&["Tab"]);
    // Loopback echoes until the rates pane shows them (the tracer may still be attaching).
    let deadline = Instant::now() + Duration::from_secs(120);
    while !tmux.screen().contains("lo@host") {
        support::background_loopback(2_000).join().expect("loopback traffic");
        assert!(Instant::now() < deadline, "lo's rates never showed:\n{}", tmux.screen());
    }
    tmux.keys(&["p"]);
    tmux.wait_for("the pause", |s| s.contains("PAUSED"));
    // A pane first opened during the pause shows the paused moment, not an empty pane.
    tmux.keys(&["4"]);
    let s =
        tmux.wait_for("the packets of the paused moment", |s| s.contains("127.0.0.1:") && s.contains("TCP"));
    assert!(s.contains("PAUSED"), "{s}");
    tmux.keys(&["C-c"]);
    tmux.wait_for("the exit of dockertrace", |s| s.contains("DT-EXIT="));
    let s = tmux.history();
    assert_eq!(tmux.format("#{alternate_on}"), "0", "the terminal left the alternate screen:\n{s}");
    assert!(s.contains("DT-EXIT=0"), "Ctrl-C is trace's normal end (exit 0):\n{s}");
    assert!(s.contains("lost: "), "the summary is printed after the view:\n{s}");
    assert!(!s.contains("q quit"), "nothing of the view is left on screen:\n{s}");
}

#[test]
fn without_a_terminal_tui_says_so_and_streams() {
    if let Some(r) = support::skip_reason() {
        eprintln!("skipping: {r}");
        return;
    }
    let out = Command::new(support::runs::bin())
        .args(["trace", "--tui", "--duration", "1", "--dev", "lo"])
        .stdin(Stdio::null())
        .output()
        .expect("run dockertrace");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("--tui")).collect();
    assert_eq!(
        lines,
        ["dockertrace: --tui needs a terminal (stdout is not a terminal): showing the plain stream"]
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Tracer cost:"), "the plain summary follows");
}

#[test]
fn several_modes_compare_and_resize() {
    if let Some(r) = tmux_skip_reason() {
        eprintln!("skipping: {r}");
        return;
    }
    let bin = support::runs::bin();
    let command = format!(
        "{} --runtime netns --mode normal,host --tui --no-untraced --duration 1; echo DT-EXIT=$?; sleep 600",
        quote(&bin.to_string_lossy())
    );
    let Some(_serial) = support::serial(&SERIAL) else { return };
    let tmux = Tmux::start("compare", &command);
    tmux.wait_for("the first of two modes", |s| s.contains("mode normal (1/2)") && s.contains(" 5 compare "));
    // When both ran, the view goes to the comparison and stays there until `q`.
    let s = tmux.wait_for("the comparison of both modes", |s| s.contains("all modes done"));
    assert!(s.contains("untraced") && s.contains("ev/msg"), "the compare page is shown:\n{s}");
    let rows: Vec<&str> = s
        .lines()
        .filter(|l| (l.starts_with("normal ") || l.starts_with("host ")) && !l.contains("request"))
        .collect();
    assert_eq!(rows.len(), 2, "a row per mode:\n{s}");
    assert!(s.contains("normal request") && s.contains("host request"), "their ladders side by side:\n{s}");
    // The view follows the terminal's size.
    let out = tmux.cmd(&["resize-window", "-t", Tmux::SESSION, "-x", "80", "-y", "24"]);
    assert!(out.status.success(), "tmux resize-window: {}", String::from_utf8_lossy(&out.stderr));
    let s = tmux.wait_for("the view redrawn at 80 columns", |s| {
        s.lines().count() <= 24 && s.lines().any(|l| l.starts_with("q quit"))
    });
    assert!(s.lines().all(|l| l.chars().count() <= 80), "{s}");
    assert!(s.contains("normal request"), "{s}");
    tmux.keys(&["q"]);
    tmux.wait_for("the exit of dockertrace", |s| s.contains("DT-EXIT="));
    let s = tmux.history();
    assert!(s.contains("DT-EXIT=0"), "a run that ended by itself exits 0 after q:\n{s}");
    assert_eq!(tmux.format("#{alternate_on}"), "0", "the terminal left the alternate screen:\n{s}");
    assert!(s.contains("Tracer cost:"), "the summaries are printed after the view:\n{s}");
}
