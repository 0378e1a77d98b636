//! The `dockertrace` binary as a user meets it: exit codes, one-line errors, JSON output,
//! Ctrl-C. Root-only cases print `skipping: <reason>` elsewhere.
mod support;

use std::{
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use dockertrace::cli::exit;

const BIN: &str = env!("CARGO_BIN_EXE_dockertrace");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("run dockertrace");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An error is exactly one line on stderr, prefixed, with exit code 1 (`exit::ERROR`).
fn assert_one_line_error(args: &[&str], needle: &str) {
    let (code, _, err) = run(args);
    assert_eq!(code, exit::ERROR, "{args:?}: exit code {code}, stderr: {err}");
    let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one line, got: {err}");
    assert!(lines[0].starts_with("dockertrace: error: "), "{err}");
    assert!(lines[0].contains(needle), "{args:?}: `{needle}` not in: {err}");
}

#[test]
fn help_lists_the_commands_and_options() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, exit::OK);
    assert!(out.contains("trace") && out.contains("workload"), "{out}");
    for opt in ["--untraced", "--no-untraced"] {
        assert!(out.split_whitespace().any(|w| w == opt), "--help lacks {opt}");
    }
    // The workload alone, or no untraced phase: not both (a usage error, before anything runs).
    let (code, _, err) = run(&["--mode", "normal", "--untraced", "--no-untraced"]);
    assert_eq!(code, exit::USAGE, "{err}");
    assert!(err.contains("--no-untraced") && err.contains("cannot be used with"), "{err}");
    let (code, out, _) = run(&["trace", "--help"]);
    assert_eq!(code, 0);
    for opt in ["--duration", "--events", "--netns", "--container", "--dev", "--pid", "--json", "--no-stacks"]
    {
        assert!(out.contains(opt), "trace --help lacks {opt}");
    }
}

#[test]
fn bad_arguments_are_rejected_before_anything_runs() {
    let (code, _, err) = run(&["trace", "--ring-mib", "3"]);
    assert_eq!(code, exit::USAGE, "{err}");
    assert!(err.contains("power of two"), "{err}");
    assert_one_line_error(&["trace", "--events", ""], "");
    assert_one_line_error(&["trace", "--duration=-1"], "--duration");
}

/// A CPU the machine lacks is a usage error (exit 2) naming it and the usable CPUs, before
/// anything is deployed (so also without root).
#[test]
fn pinning_to_a_missing_cpu_is_a_usage_error() {
    for args in [
        &["--mode", "normal", "--workload-cpus", "0,1023"][..],
        &["--mode", "bridge", "--tracer-cpus", "1023"],
        &["trace", "--tracer-cpus", "1023"],
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, exit::USAGE, "{args:?}: {err}");
        assert!(out.is_empty(), "{out}");
        let first = err.lines().next().unwrap_or_default();
        assert!(first.contains("CPU 1023 is not available here (usable CPUs: "), "{args:?}: {err}");
    }
    let (code, _, err) = run(&["--mode", "normal", "--workload-cpus", "1-0"]);
    assert_eq!(code, exit::USAGE, "{err}");
    assert!(err.contains("empty range"), "{err}");
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, exit::OK);
    assert!(out.contains("--workload-cpus") && out.contains("--tracer-cpus"), "{out}");
}

/// A scratch directory removed on drop (also when the test fails).
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("dt-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create scratch dir");
        Scratch(p)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("UTF-8 temp dir").to_owned()
    }

    fn is_empty(&self) -> bool {
        std::fs::read_dir(&self.0).expect("read scratch dir").next().is_none()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Arguments and outputs are checked before root, the eBPF object and the machine: the same
/// one line for any user on any build (without root, or with an empty eBPF object, the run
/// would otherwise stop at that check), before anything is deployed (a deployment prints its
/// steps on stderr: the error is the only line), and nothing is left behind.
#[test]
fn arguments_and_outputs_are_checked_before_anything_runs() {
    let s = Scratch::new("early");
    let json = s.path("events.jsonl");
    let no_dir = "/nonexistent-dockertrace-dir/out.json";
    let not_a_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/perf/loopback.txt/svg");
    let cases: &[(&[&str], &str)] = &[
        (&["--mode", "bridge", "--record", no_dir], "--record /nonexistent-dockertrace-dir/out.json: directory /nonexistent-dockertrace-dir does not exist"),
        (&["--mode", "all", "--html", no_dir], "--html /nonexistent-dockertrace-dir/out.json: directory"),
        (&["--mode", "bridge", "--json", no_dir], "--json /nonexistent-dockertrace-dir/out.json: directory"),
        (&["--mode", "bridge", "--svg", not_a_dir], "loopback.txt is not a directory"),
        (&["--mode", "bridge", "--html", "/tmp"], "is a directory"),
        (&["--mode", "normal", "--json", &json, "--size", "1000000000"], "--size must be between 1 and 16777216 bytes, got 1000000000"),
        (&["--mode", "normal", "--json", &json, "--connections", "5000"], "--connections must be between 1 and 1024"),
        (&["--mode", "normal", "--json", &json, "--duration", "0"], "--duration"),
        (&["--mode", "normal", "--json", &json, "--events", ""], "empty"),
        (&["--mode", "normal", "--json", &json, "--aggregate"], "--aggregate"),
        (&["--runtime", "netns", "--mode", "bridge", "--image", "x"], "--image only applies"),
        (&["trace", "-d", "1", "--record", no_dir], "--record /nonexistent-dockertrace-dir/out.json: directory"),
        (&["trace", "-d", "1", "--json", no_dir], "--json /nonexistent-dockertrace-dir/out.json: directory"),
        (&["diff", "a.json", "b.json", "--svg", not_a_dir], "loopback.txt is not a directory"),
        (&["report", "a.json", "--html", no_dir], "--html /nonexistent-dockertrace-dir/out.json: directory"),
        (&["import", "perf.txt", "-o", no_dir], "--output /nonexistent-dockertrace-dir/out.json: directory"),
    ];
    for (args, needle) in cases {
        assert_one_line_error(args, needle);
    }
    assert!(s.is_empty(), "a rejected run left files behind in {}", s.0.display());
    assert!(!std::path::Path::new("/nonexistent-dockertrace-dir").exists());
}

/// A result that cannot be written does not take the others with it: the report is printed,
/// the flame graphs are written, and the command fails with one line naming the failed file.
#[test]
fn a_failed_output_keeps_the_others() {
    let s = Scratch::new("partial");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/perf/loopback.txt");
    let rec = s.path("perf.json");
    let (code, _, err) = run(&["import", fixture, "-o", &rec]);
    assert_eq!(code, 0, "{err}");
    let svg = s.path("svg");
    // /dev/full opens for writing (so it passes the early check) and fails every write.
    let (code, out, err) = run(&["report", &rec, "--svg", &svg, "--html", "/dev/full"]);
    assert_eq!(code, exit::ERROR, "{err}");
    assert!(out.contains("Mode loopback"), "the report is printed: {out}");
    assert!(std::fs::read_dir(&svg).is_ok_and(|mut d| d.next().is_some()), "the flame graphs are written");
    let errors: Vec<_> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].starts_with("dockertrace: error: ") && errors[0].contains("/dev/full"), "{err}");
}

#[test]
fn without_root_it_says_so() {
    // As root, drop to nobody with setpriv; otherwise we already are unprivileged.
    // SAFETY: trivial libc call.
    let root = unsafe { libc::geteuid() } == 0;
    let out = if root {
        match Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN, "trace", "-d", "1"])
            .output()
        {
            Ok(o) => o,
            Err(e) => {
                eprintln!("skipping: setpriv unavailable: {e}");
                return;
            }
        }
    } else {
        Command::new(BIN).args(["trace", "-d", "1"]).output().unwrap()
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::ERROR), "{err}");
    assert!(err.trim().lines().count() == 1 && err.contains("needs root") && err.contains("sudo"), "{err}");
}

#[test]
fn user_mistakes_get_one_clear_line() {
    if skip!() {
        return;
    }
    assert_one_line_error(&["trace", "-d", "1", "--events", "nosuchcategory:*"], "no tracepoint matches");
    assert_one_line_error(&["trace", "-d", "1", "--netns", "/nonexistent/netns"], "/nonexistent/netns");
    assert_one_line_error(&["trace", "-d", "1", "--dev", "nosuchdev0"], "nosuchdev0");
    assert_one_line_error(&["trace", "-d", "1", "--pid", "4000000000"], "no process");
    // Without an engine the line says so; with one, that there is no such container.
    assert_one_line_error(&["trace", "-d", "1", "--container", "dt-no-such-container"], "--container");
}

#[test]
fn json_lines_carry_the_documented_fields() {
    if skip!() {
        return;
    }
    let t = Arc::new(support::Topology::veth());
    let file = std::env::temp_dir().join(format!("dt-cli-{}.json", std::process::id()));
    let (a, b) = (t.a.inode().unwrap().to_string(), t.b.inode().unwrap().to_string());
    let mut child = support::Child::spawn(
        Command::new(BIN)
            .args(["trace", "-q", "-d", "4", "--stacks", "every", "--netns", &a, "--netns", &b, "--json"])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    // Traffic only once every program is attached (a fixed sleep raced the attachment).
    let stderr = child.wait_attached();
    let report = t.echo(100);
    assert_eq!(report.messages, 100);
    let out = child.wait_output();
    let stderr = stderr.join().unwrap();
    assert!(out.status.success(), "{stderr}");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("lost: 0 "), "{summary}");
    // dtva leads to b's namespace: `dtva(<b>)@<a>`, by the `ip netns` names.
    let named = format!("dtva({})@{}", t.b.name(), t.a.name());
    assert!(summary.contains(&named) && summary.contains("net:net_dev_xmit"), "{summary}");
    let text = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    let mut n = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("valid JSON line");
        for key in ["event", "dev", "ifindex", "netns", "len", "skbaddr", "ts_ns", "cpu", "comm", "stack"] {
            assert!(v.get(key).is_some(), "missing `{key}` in {line}");
        }
        // The default selection: net:* and the drops (whose lines carry their reason).
        let event = v["event"].as_str().unwrap();
        let ns = v["netns"].to_string();
        // A drop without a device is kept for its followed journey (docs/drops.md).
        let followed = event == "skb:kfree_skb" && ns == "0" && v["packet"].as_u64().is_some();
        assert!(ns == a || ns == b || followed, "netns {ns} outside the filter: {line}");
        assert!(event.starts_with("net:") || event == "skb:kfree_skb", "{event}");
        if event == "skb:kfree_skb" {
            assert!(v["drop_reason"].is_string() && v["drop_location"].is_string(), "{line}");
        }
        assert!(v["stack"]
            .as_array()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|f| !f.as_str().unwrap().contains('+'))));
        n += 1;
    }
    assert!(n >= 600, "only {n} JSON lines for 100 echoes");
}

#[test]
fn ctrl_c_ends_with_the_summary() {
    if skip!() {
        return;
    }
    let mut child = support::Child::spawn(
        Command::new(BIN)
            .args(["trace", "-q", "--events", "net:netif_rx"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    // Ctrl-C once attached (before, the default handler ends the process: a busy machine took
    // more than the 2 s this test once slept).
    let stderr = child.wait_attached();
    std::thread::sleep(Duration::from_millis(300));
    child.interrupt();
    let out = child.wait_output();
    let stderr = stderr.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(stdout.contains("dockertrace: ") && stdout.contains("lost: "), "{stdout}");
}

#[test]
fn perf_captures_import_and_report_offline() {
    let dir = std::env::temp_dir().join(format!("dt-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/perf/loopback.txt");
    let rec = dir.join("perf.json");
    let out = Command::new(BIN)
        .args(["import", fixture, "--label", "perf-normal", "-o"])
        .arg(&rec)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Mode perf-normal"));
    let out = Command::new(BIN).arg("report").arg(&rec).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("loopback_xmit"));
    // Broken inputs: one line with the position, exit 1.
    let text = std::fs::read_to_string(&rec).unwrap();
    let cut = dir.join("cut.json");
    std::fs::write(&cut, &text[..text.len() / 3]).unwrap();
    assert_one_line_error(&["report", cut.to_str().unwrap()], "line 1, column");
    assert_one_line_error(&["import", "/nonexistent/perf.txt"], "/nonexistent/perf.txt");
    std::fs::remove_dir_all(&dir).unwrap();
}
