//! dockertrace in CI (docs/ci.md): the exit codes, `diff --fail-on … --junit`, `report
//! --format markdown|json`, and the workflow to copy (`.github/workflows/datapath.yml`)
//! validated against GitHub's published workflow schema with check-jsonschema (installed by
//! `cargo xtask setup` under `target/ci-venv`). Offline: no root, no engine.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use dockertrace::{
    cli::exit,
    counters::Counters,
    journeys::{DirectionLadder, JourneyReport, LadderHop, LadderSource, PathTally},
    recording::{ModeRun, Recording, RunBuilder},
    workload::{Pattern, WorkloadReport},
};

const BIN: &str = env!("CARGO_BIN_EXE_dockertrace");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("run dockertrace");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A scratch directory removed on drop (also when the test fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("dt-ci-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create scratch dir");
        Scratch(p)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("UTF-8 temp dir").to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A hop ladder through the given (event, device, netns) with `step` ns between hops.
fn ladder(direction: &str, hops: &[(&str, &str, u32)], step: u64) -> DirectionLadder {
    DirectionLadder {
        direction: direction.into(),
        label: "client → server :10000".into(),
        data_packets: 1000,
        ladder_packets: 990,
        data_paths: 1,
        hops: hops
            .iter()
            .enumerate()
            .map(|(i, (event, dev, netns))| LadderHop {
                event: (*event).into(),
                dev: (*dev).into(),
                netns: *netns,
                ifindex: 2,
                place: None,
                function: None,
                return_p50_ns: None,
                delta_p50_ns: if i == 0 { 0 } else { step },
                delta_p99_ns: if i == 0 { 0 } else { 2 * step },
                cum_p50_ns: i as u64 * step,
                cum_p99_ns: i as u64 * 2 * step,
            })
            .collect(),
        one_way_p50_ns: (hops.len() as u64 - 1) * step,
        one_way_p99_ns: (hops.len() as u64 - 1) * 2 * step,
        other: vec![PathTally { path: "ARP".into(), packets: 1 }],
    }
}

/// One mode's run: the events on `hops` with a stack holding `functions`, and its ladder.
fn mode_run(mode: &str, functions: &[&str], hops: &[(&str, &str, u32)]) -> ModeRun {
    let mut b = RunBuilder::default();
    let stack = b.stack(functions.iter().map(|f| (*f).to_owned()).collect());
    for (event, dev, netns) in hops {
        b.add(event, dev, *netns, 2, Some(stack), 1000);
    }
    let w = WorkloadReport::new(Pattern::Echo, 1, 42, 1000, 42_000, 1.0, None);
    let mut run = b.finish(mode, 1.0, Some(w), Counters::default());
    run.journeys = Some(JourneyReport {
        source: LadderSource::Journeys,
        journeys: 2000,
        server: None,
        directions: vec![ladder("request", hops, 2000)],
        unassigned: Vec::new(),
        cut: 0,
        note: None,
    });
    run
}

const BRIDGE: &[(&str, &str, u32)] = &[
    ("net:net_dev_queue", "eth0", 11),
    ("net:netif_rx", "veth1a2b", 1),
    ("net:net_dev_queue", "veth3c4d", 1),
    ("net:netif_rx", "eth0", 12),
];
const LOOPBACK: &[(&str, &str, u32)] = &[("net:net_dev_queue", "lo", 1), ("net:netif_rx", "lo", 1)];
const BRIDGE_FUNCTIONS: &[&str] = &["veth_xmit", "br_forward", "netif_rx"];

/// Writes a baseline (bridge, normal), the same again, and a run whose bridge mode changed:
/// one hop more (a detour through a new device) and a new function on its stacks.
fn recordings(s: &Scratch) -> (String, String, String) {
    let base = Recording::new(
        "test",
        vec![mode_run("bridge", BRIDGE_FUNCTIONS, BRIDGE), mode_run("normal", &["loopback_xmit"], LOOPBACK)],
    );
    let mut detour = BRIDGE.to_vec();
    detour.insert(3, ("net:net_dev_queue", "vxlan0", 1));
    let changed = Recording::new(
        "test",
        vec![
            mode_run("bridge", &["veth_xmit", "br_forward", "netif_rx", "vxlan_xmit"], &detour),
            mode_run("normal", &["loopback_xmit"], LOOPBACK),
        ],
    );
    let paths = (s.path("baseline.json"), s.path("same.json"), s.path("changed.json"));
    base.save(Path::new(&paths.0)).expect("save the baseline");
    base.save(Path::new(&paths.1)).expect("save the same run");
    changed.save(Path::new(&paths.2)).expect("save the changed run");
    (paths.0, paths.1, paths.2)
}

const GUARD: &str = "hops,functions,hop-latency";

#[test]
fn a_changed_mode_trips_the_guard_with_junit_and_exit_3() {
    let s = Scratch::new("junit");
    let (base, same, changed) = recordings(&s);
    let junit = s.path("junit.xml");
    let (code, out, err) =
        run(&["diff", &base, &changed, "--fail-on", GUARD, "--threshold", "50", "--junit", &junit]);
    assert_eq!(code, exit::GUARD_TRIPPED, "the guard trips: {out}\n{err}");
    assert!(err.contains("dockertrace: changed: bridge: request hop ladder changed (4 hops → 5)"), "{err}");
    assert!(err.contains("dockertrace: changed: bridge: kernel functions changed (+1 −0)"), "{err}");
    let xml = std::fs::read_to_string(&junit).expect("the JUnit file is written");
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"dockertrace diff\" tests=\"6\" failures=\"2\""), "{xml}");
    for mode in ["bridge", "normal"] {
        for property in ["hops", "functions", "hop-latency"] {
            let case = format!("<testcase classname=\"dockertrace.{mode}\" name=\"{property}\"");
            assert_eq!(xml.matches(&case).count(), 1, "one case for {mode} × {property}:\n{xml}");
        }
    }
    // The failures carry the reasons and the mode's diff; the unchanged properties pass.
    assert!(
        xml.contains("<failure type=\"hops\" message=\"bridge: request hop ladder changed (4 hops → 5)\">"),
        "{xml}"
    );
    assert!(xml.contains("+  3 net:net_dev_queue vxlan0"), "the diff is in the failure: {xml}");
    assert!(xml.contains("functions appeared: vxlan_xmit"), "{xml}");
    assert!(xml.contains("<testcase classname=\"dockertrace.normal\" name=\"hops\"/>"), "{xml}");
    assert!(xml.contains("<testcase classname=\"dockertrace.bridge\" name=\"hop-latency\"/>"), "{xml}");

    // The same run against the baseline: exit 0, every case passes.
    let (code, _, err) = run(&["diff", &base, &same, "--fail-on", GUARD, "--junit", &junit]);
    assert_eq!(code, 0, "{err}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"6\" failures=\"0\" errors=\"0\" skipped=\"0\""), "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
}

#[test]
fn a_mode_missing_from_the_new_run_is_a_skipped_case() {
    let s = Scratch::new("missing");
    let (base, _, _) = recordings(&s);
    let only_bridge = s.path("bridge.json");
    Recording::new("test", vec![mode_run("bridge", BRIDGE_FUNCTIONS, BRIDGE)])
        .save(Path::new(&only_bridge))
        .unwrap();
    let junit = s.path("junit.xml");
    let (code, out, err) = run(&["diff", &base, &only_bridge, "--fail-on", "hops", "--junit", &junit]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("normal: only in ") && out.contains("not compared"), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"2\" failures=\"0\" errors=\"0\" skipped=\"1\""), "{xml}");
    assert!(xml.contains("<skipped message=\"only in "), "{xml}");
}

/// 0 done, 1 error, 2 usage, 3 guard tripped (130, interrupted: `modes.rs` and
/// `netns_runtime.rs` interrupt real runs). The numbers themselves, as documented, here: the
/// rest of the tests name them through `exit`.
#[test]
fn exit_codes_are_the_documented_ones() {
    assert_eq!(
        (exit::OK, exit::ERROR, exit::USAGE, exit::GUARD_TRIPPED, exit::INTERRUPTED),
        (0, 1, 2, 3, 130)
    );
    let (code, help, _) = run(&["--help"]);
    assert_eq!(code, exit::OK);
    assert!(
        help.contains("Exit codes: 0 done, 1 an error") && help.contains("130 a --mode run interrupted"),
        "{help}"
    );
    let s = Scratch::new("codes");
    let (base, same, changed) = recordings(&s);
    assert_eq!(run(&["report", &base]).0, 0);
    assert_eq!(run(&["diff", &base, &same, "--fail-on", GUARD]).0, 0);
    assert_eq!(run(&["diff", &base, &changed]).0, 0, "without --fail-on nothing is guarded");
    assert_eq!(run(&["diff", &base, &changed, "--fail-on", "hops"]).0, 3);
    let (code, _, err) = run(&["report", "/nonexistent/run.json"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("dockertrace: error: ") && err.lines().count() == 1, "{err}");
    for usage in [
        &["diff", &base, &changed, "--threshold=-5"][..],
        &["diff", &base, &changed, "--threshold", "ten"],
        &["diff", &base, &changed, "--fail-on", "nosuch"],
        &["diff", &base, &changed, "--junit", "x.xml"],
        &["report", &base, "--format", "yaml"],
        &["--no-such-option"],
    ] {
        let (code, _, err) = run(usage);
        assert_eq!(code, 2, "{usage:?}: {err}");
    }
    let (_, _, err) = run(&["diff", &base, &changed, "--junit", "x.xml"]);
    assert!(err.contains("--fail-on"), "--junit says it needs --fail-on: {err}");
    // An unwritable --junit is an error before anything is compared.
    let (code, out, err) =
        run(&["diff", &base, &changed, "--fail-on", "hops", "--junit", "/nonexistent-dir/j.xml"]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("--junit /nonexistent-dir/j.xml"), "{err}");
}

#[test]
fn reports_for_ci_in_markdown_and_json() {
    let s = Scratch::new("formats");
    let (_, _, changed) = recordings(&s);
    let (code, md, err) = run(&["report", &changed, "--format", "markdown"]);
    assert_eq!(code, 0, "{err}");
    assert!(md.starts_with("## dockertrace: "), "{md}");
    assert!(md.contains("| mode | msg/s |") && md.contains("| bridge | 1000 |"), "{md}");
    assert!(md.contains("**Drops:** none of the workload's packets died"), "{md}");
    assert!(md.contains("<summary><b>bridge</b> request ladder: 5 hops"), "{md}");
    assert!(md.contains("| 3 | `net:net_dev_queue` | `vxlan0@1` |"), "{md}");
    let (code, json, err) = run(&["report", &changed, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).expect("one JSON document");
    assert_eq!(v["format"], "dockertrace-summary");
    assert_eq!(v["version"], 1);
    let bridge = &v["modes"][0];
    assert_eq!(bridge["mode"], "bridge");
    assert_eq!(bridge["ladders"][0]["hops"].as_array().map(Vec::len), Some(5));
    assert!(bridge["functions"].as_array().unwrap().iter().any(|f| f == "vxlan_xmit"), "{bridge}");
    assert_eq!(v["modes"][1]["mode"], "normal");
    // Text is the default, the terminal's report.
    let (code, text, err) = run(&["report", &changed, "--format", "text"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(text, run(&["report", &changed]).1, "--format text is the default");
    assert!(text.contains("bridge") && text.contains("normal") && text.contains("vxlan0@1"), "{text}");
    assert!(!text.starts_with('#') && !text.starts_with('{'), "{text}");
}

/// check-jsonschema from `cargo xtask setup` (target/ci-venv), or None with the reason.
fn check_jsonschema() -> Result<PathBuf, String> {
    let exe = workspace().join("target/ci-venv/bin/check-jsonschema");
    if exe.exists() {
        Ok(exe)
    } else {
        Err(format!("{} is not installed (cargo xtask setup installs it)", exe.display()))
    }
}

fn validate(exe: &Path, workflow: &Path) -> (bool, String) {
    let out = Command::new(exe)
        .args(["--builtin-schema", "vendor.github-workflows"])
        .arg(workflow)
        .output()
        .expect("run check-jsonschema");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn the_workflow_passes_githubs_schema_and_a_broken_copy_does_not() {
    let workflow = workspace().join(".github/workflows/datapath.yml");
    let text = std::fs::read_to_string(&workflow).expect("the workflow exists");
    // What the recipe promises (docs/ci.md), whatever the schema says.
    for needle in [
        "--mode all --duration 5 --record run.json",
        "GUARD: hops,functions,hop-latency",
        "--fail-on \"$GUARD\" --threshold \"$THRESHOLD\"",
        "--junit junit.xml",
        "--format markdown >> \"$GITHUB_STEP_SUMMARY\"",
        "out/report.html",
        "if-no-files-found: ignore",
        "cargo xtask image",
        // The guard's exit 3 goes through `tee`: only a named bash has pipefail.
        "\ndefaults:\n  run:\n",
        "\n    shell: bash\n",
        "--mode bridge --duration 2 --pcap bridge.pcapng",
    ] {
        assert!(text.contains(needle), "the workflow lacks `{needle}`");
    }
    let exe = match check_jsonschema() {
        Ok(exe) => exe,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    let (ok, said) = validate(&exe, &workflow);
    assert!(ok, "the workflow fails GitHub's schema:\n{said}");
    // The validation is not blind: broken copies are rejected.
    let s = Scratch::new("workflow");
    for (what, from, to) in [
        ("a job without runs-on", "runs-on: ubuntu-24.04", "runs-onn: ubuntu-24.04"),
        (
            "a step with both uses and run",
            "      - uses: actions/checkout@v4\n",
            "      - uses: actions/checkout@v4\n        run: echo\n",
        ),
        ("a timeout that is no number", "timeout-minutes: 30", "timeout-minutes: half an hour"),
    ] {
        assert!(text.contains(from), "the mutation `{what}` no longer applies");
        let broken = Path::new(&s.path("broken.yml")).to_path_buf();
        std::fs::write(&broken, text.replacen(from, to, 1)).unwrap();
        let (ok, said) = validate(&exe, &broken);
        assert!(!ok, "{what} passed the schema:\n{said}");
        assert!(said.contains("Schema validation errors"), "{what}: {said}");
    }
}
