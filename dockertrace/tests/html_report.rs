//! Renders an HTML report of three synthetic modes and, when Chromium is installed, loads it in
//! headless Chromium: every mode section must be in the DOM, every flame graph must have been
//! rendered (its frame marked `data-rendered` by the page's script) and the console must be
//! free of errors.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use dockertrace::{
    compare::{Comparison, ModeReport},
    counters::Counters,
    recording::{ModeRun, RunBuilder},
    render::html,
    workload::{Pattern, RttSummary, WorkloadReport},
};

const MODES: [&str; 3] = ["normal", "bridge", "macvlan"];

fn run(mode: &str, messages: u64, paths: &[(&str, &[&str], u64)]) -> ModeRun {
    let mut b = RunBuilder::default();
    for (event, frames, n) in paths {
        let s = b.stack(frames.iter().map(|f| (*f).to_owned()).collect());
        b.add(event, "eth0", 1, 2, Some(s), *n);
    }
    b.add("net:napi_gro_receive_entry", "eth0", 1, 2, None, messages / 10);
    let rtt = RttSummary { p50: 40.0, p99: 80.0, max: 120.0, mean: 45.0, samples: messages };
    let w = WorkloadReport::new(Pattern::Echo, 2, 64, messages, messages * 64, 1.0, Some(rtt));
    b.finish(mode, 1.0, Some(w), Counters::default())
}

fn runs() -> Vec<ModeRun> {
    const SEND: &[&str] = &["tcp_sendmsg", "__sys_sendto", "entry_SYSCALL_64"];
    let with = |inner: &[&'static str]| -> Vec<&'static str> { inner.iter().chain(SEND).copied().collect() };
    let normal_rx = with(&["netif_rx", "loopback_xmit", "dev_hard_start_xmit", "ip_finish_output2"]);
    let bridge_rx =
        with(&["netif_rx", "veth_xmit", "br_dev_queue_push_xmit", "br_forward", "ip_finish_output2"]);
    let bridge_q = with(&["__dev_queue_xmit", "nf_hook_slow", "ip_output"]);
    let macvlan_q =
        with(&["__dev_queue_xmit", "macvlan_start_xmit", "dev_hard_start_xmit", "ip_finish_output2"]);
    vec![
        run("normal", 1000, &[("net:netif_rx", &normal_rx, 2000)]),
        run("bridge", 800, &[("net:netif_rx", &bridge_rx, 1600), ("net:net_dev_queue", &bridge_q, 1600)]),
        run("macvlan", 900, &[("net:net_dev_queue", &macvlan_q, 1800)]),
    ]
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("dt-html-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The spawned browser, killed (by its own handle) and reaped if the test ends early.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

/// Loads `page` headless and returns (dumped DOM, stderr log).
fn dump_dom(chromium: &Path, page: &Path, profile: &Path) -> (String, String) {
    let out_dir = TempDir::new("out");
    let (stdout_path, stderr_path) = (out_dir.0.join("dom.html"), out_dir.0.join("stderr.log"));
    let child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            // Run the page's load handlers before dumping.
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("spawn chromium");
    let mut browser = Browser(child);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = browser.0.try_wait().expect("wait for chromium") {
            break status;
        }
        assert!(Instant::now() < deadline, "chromium did not finish within 120 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    let dom = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(status.success(), "chromium failed ({status}):\n{log}");
    (dom, log)
}

#[test]
fn report_renders_in_headless_chromium() {
    let mut runs = runs();
    // Two modes with an untraced phase, one without (its traced figures stand in, marked).
    for (run, rate) in runs.iter_mut().zip([2000, 1500]) {
        let rtt = RttSummary { p50: 20.0, p99: 40.0, max: 60.0, mean: 22.0, samples: rate };
        run.untraced = Some(WorkloadReport::new(Pattern::Echo, 2, 64, rate, rate * 64, 1.0, Some(rtt)));
    }
    let c = Comparison::new(
        runs.iter().map(|r| ModeReport::from_run(r, 10)).collect(),
        vec![("ipvlan".into(), "the kernel has no ipvlan module".into())],
    );
    let page = html::render(&c, &runs, "dockertrace: Docker network modes").expect("render");
    let dir = TempDir::new("page");
    let path = dir.0.join("report.html");
    std::fs::write(&path, &page).expect("write report");
    for m in MODES {
        assert!(page.contains(&format!("id=\"mode-{m}\"")), "{m}");
    }

    let Some(chromium) = find_chromium() else {
        println!("skipping: chromium is not installed (apt-get install chromium)");
        return;
    };
    let profile = TempDir::new("profile");
    let (dom, log) = dump_dom(&chromium, &path, &profile.0);
    for m in MODES {
        assert!(dom.contains(&format!("id=\"mode-{m}\"")), "mode-{m} missing from the DOM:\n{dom}");
    }
    // The comparison's untraced figures, the tracer's cost beside them, and the marked fallback.
    for s in ["<th>ns/event</th>", "<td>50%</td>", "except macvlan", r#"<span class="phase""#] {
        assert!(dom.contains(s), "{s} missing from the DOM");
    }
    // Flame graph SVG text (inside the frames' srcdoc) and the graphs rendered by Chromium.
    for f in ["veth_xmit", "macvlan_start_xmit", "loopback_xmit", "entry_SYSCALL_64"] {
        assert!(dom.contains(f), "{f} missing from the DOM");
    }
    let frames = dom.matches("<iframe class=\"flame\"").count();
    assert_eq!(frames, 3 + 2, "a flame graph per mode and a differential one per non-normal mode");
    let rendered: Vec<u32> = dom
        .split("data-rendered=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next().and_then(|n| n.parse().ok()))
        .collect();
    assert_eq!(rendered.len(), frames, "every flame graph was rendered:\n{log}");
    assert!(rendered.iter().all(|n| *n > 3), "flame graphs have frames: {rendered:?}");
    // The page logs nothing, so any console message (logged as `INFO:CONSOLE`, whatever its
    // level) is a script error or an unexpected warning.
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages:\n{}", console.join("\n"));
    println!("chromium rendered {frames} flame graphs: {rendered:?}");
}
